"""What recovery state was made from: identities of recordings, hubs and stores, and how they differ."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from sensorflow.windowing.resume.identity import (
    BLOCK_BYTES,
    IDENTITY_VERSION,
    IdentityUnreadable,
    RecoveryIdentity,
    decode_identity,
    differences,
    encode_identity,
    eventhub_identity,
    file_identity,
    recording_identity,
    store_identity,
)


def _recording(directory: Path, contents: dict[str, bytes]) -> dict[str, list[Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    parts = {}
    for pid, data in contents.items():
        path = directory / f"partition-{pid}.jsonl"
        path.write_bytes(data)
        parts[pid] = [path]
    return parts


def _identity(tmp_path: Path, contents: dict[str, bytes], name: str = "rec", **changes) -> RecoveryIdentity:
    root = tmp_path / name
    source = recording_identity(_recording(root, contents), root)
    identity = RecoveryIdentity(source, store_identity(f"sqlite:///{tmp_path}/a.db"), 5_000_000_000, 5_000_000_000, "ts", 1 << 20)
    return dataclasses.replace(identity, **changes)


def test_the_same_files_have_the_same_identity_and_it_round_trips_through_json_pickle_and_copy(tmp_path: Path):
    one = _identity(tmp_path, {"0": b"a\n" * 100, "1": b"b\n" * 100}, "one")
    two = _identity(tmp_path, {"0": b"a\n" * 100, "1": b"b\n" * 100}, "two")
    assert one == two and differences(one, two) == []
    assert decode_identity(encode_identity(one)) == one
    assert pickle.loads(pickle.dumps(one)) == one == copy.deepcopy(one)
    live = RecoveryIdentity(eventhub_identity("NS.servicebus.windows.net", "Readings", "$Default"), "sqlite:///x", 1, 1, "ts")
    assert decode_identity(encode_identity(live)) == live


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ({"0": b"a\n" * 200, "1": b"b\n" * 100}, "input: partition-0.jsonl is 400 bytes, was 200"),
        ({"0": b"c\n" * 100, "1": b"b\n" * 100}, "input: partition-0.jsonl has other content (same size)"),
        ({"0": b"c\n" * 100, "1": b"d\n" * 100}, "input: partition-0.jsonl has other content (same size) (and 1 more partition(s))"),
        ({"0": b"a\n" * 100}, "input: partitions [0, 1] -> [0]"),
    ],
)
def test_a_recording_that_changed_differs_by_name_size_or_content(tmp_path: Path, second, expected):
    before = _identity(tmp_path, {"0": b"a\n" * 100, "1": b"b\n" * 100}, "before")
    after = _identity(tmp_path, second, "after")
    assert differences(before, after) == [expected]


def test_a_change_in_the_middle_of_a_large_file_is_seen_by_its_size_or_not_at_all(tmp_path: Path):
    """Two blocks are hashed, not the whole file: what can be missed is documented, not hidden."""
    data = bytearray(b"x" * (4 * BLOCK_BYTES))
    (tmp_path / "f").write_bytes(data)
    before = file_identity(tmp_path / "f", "f")
    data[2 * BLOCK_BYTES] = ord("y")
    (tmp_path / "f").write_bytes(data)
    assert file_identity(tmp_path / "f", "f") == before
    (tmp_path / "f").write_bytes(data + b"z")
    assert file_identity(tmp_path / "f", "f").size == before.size + 1


def test_store_window_lateness_time_source_and_hub_each_differ(tmp_path: Path):
    base = _identity(tmp_path, {"0": b"a\n"})
    assert differences(base, dataclasses.replace(base, store=store_identity(f"sqlite:///{tmp_path}/b.db"))) == [
        f"store sqlite:///{tmp_path}/a.db -> sqlite:///{tmp_path}/b.db"
    ]
    assert differences(base, dataclasses.replace(base, window_ns=10_000_000_000, lateness_ns=0, time_source="enqueued")) == [
        "window 5 s -> 10 s", "lateness 5 s -> 0 s", "time source ts -> enqueued"
    ]
    hub = dataclasses.replace(base, input=eventhub_identity("ns", "readings", "g1"))
    assert differences(base, hub) == ["input a recording of 1 partition(s) -> event hub 'readings' on ns, consumer group 'g1'"]
    other_group = dataclasses.replace(base, input=eventhub_identity("ns", "readings", "g2"))
    assert differences(hub, other_group) == [
        "input event hub 'readings' on ns, consumer group 'g1' -> event hub 'readings' on ns, consumer group 'g2'"
    ]


def test_max_message_bytes_differs_and_an_identity_that_did_not_record_it_reads_as_the_default(tmp_path: Path):
    base = _identity(tmp_path, {"0": b"a\n"})
    assert differences(base, dataclasses.replace(base, max_message_bytes=4096)) == ["max_message_bytes 1,048,576 -> 4,096"]
    older = json.loads(encode_identity(base))
    del older["max_message_bytes"]  # as the release before wrote it
    assert differences(decode_identity(json.dumps(older).encode()), base) == []  # most runs used the default
    assert differences(decode_identity(json.dumps(older).encode()), dataclasses.replace(base, max_message_bytes=4096)) == [
        "max_message_bytes 1,048,576 -> 4,096"
    ]


def test_a_store_identity_has_no_secret_and_a_relative_sqlite_path_is_made_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_identity("sqlite:///x.db") == f"sqlite:///{tmp_path}/x.db"
    url = "postgresql+odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=d;Uid=u;Pwd=hunter2"
    identity = store_identity(url)
    assert "hunter2" not in identity and "Database=d" in identity and identity.startswith("postgresql+odbc:")


def test_an_identity_of_another_version_or_shape_is_unreadable():
    with pytest.raises(IdentityUnreadable, match=f"this release reads {IDENTITY_VERSION}"):
        decode_identity(b'{"input": {"namespace": "n", "hub": "h", "consumer_group": "g", "kind": "eventhubs"}, '
                        b'"store": "s", "window_ns": 1, "lateness_ns": 1, "time_source": "ts", "version": 99}')
    with pytest.raises(IdentityUnreadable):
        decode_identity(b'{"partitions": []}')

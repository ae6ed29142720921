"""decode_batch and ``max_message_bytes``: a body over it is ``too_large`` and is never parsed."""

from __future__ import annotations

from pathlib import Path

import fastavro
import numpy as np
import orjson
import pytest

import sensorflow.ingest.decode as decode_module
from sensorflow.assembly import decode_config
from sensorflow.ingest.decode import MAX_MESSAGE_BYTES, DecodeConfig, decode_batch
from sensorflow.ingest.replay.avro import CAPTURE_SCHEMA, AvroReader
from sensorflow.records.readings import MessageBatch, SourceProgress
from sensorflow.records.timeparse import MISSING
from tests.conftest import run_settings

NOW = 1_800_000_000 * 10**9
LIMIT = 300


def reading(i: int) -> bytes:
    return orjson.dumps({"TS": f"2026-01-01T00:00:{i % 60:02d}Z", "Device": 1, "Tag": i % 3, "Value": float(i)})


def array_of(size: int) -> bytes:
    """A valid JSON array of readings of at least ``size`` bytes."""
    items, total = [], 1
    while total < size:
        items.append(reading(len(items)))
        total += len(items[-1]) + 1
    return b"[" + b",".join(items) + b"]"


def padded(size: int) -> bytes:
    """A valid reading of exactly ``size`` bytes."""
    head = reading(7)[:-1] + b', "Note": "'
    return head + b"n" * (size - len(head) - 2) + b'"}'


def as_list(bodies, positions=None, progress=None) -> MessageBatch:
    n = len(bodies)
    positions = np.arange(1, n + 1, dtype=np.int64) if positions is None else np.array(positions, np.int64)
    return MessageBatch("p0", list(bodies), positions, np.full(n, MISSING, np.int64), progress=progress)


def as_joined(bodies) -> MessageBatch:
    n = len(bodies)
    return MessageBatch("p0", None, np.arange(1, n + 1, dtype=np.int64), np.full(n, MISSING, np.int64),
                        joined=b"\n".join(bodies))


def dead(decoded) -> list[dict]:
    return decoded.dead_letters.table.select(["position", "element", "reason", "payload"]).to_pylist()


@pytest.mark.parametrize("shape", [as_list, as_joined])
def test_a_body_at_the_limit_decodes_and_one_byte_over_is_too_large(shape):
    bodies = [reading(1), padded(LIMIT), padded(LIMIT + 1), reading(4)]
    decoded = decode_batch(shape(bodies), DecodeConfig(max_message_bytes=LIMIT), now_ns=NOW)
    assert decoded.readings.table["position"].to_pylist() == [1, 2, 4]
    assert dead(decoded) == [{"position": 3, "element": 0, "payload": padded(LIMIT + 1),
                              "reason": f"too_large: {LIMIT + 1} bytes > max_message_bytes {LIMIT}"}]
    assert decoded.elements == 4


@pytest.mark.parametrize("shape", [as_list, as_joined])
def test_a_huge_valid_array_is_refused_unparsed_with_its_first_kib(shape, monkeypatch):
    huge = array_of(3 * MAX_MESSAGE_BYTES)
    seen: list[int] = []
    parse = decode_module._parse

    def watched(batch):
        seen.extend(len(body) for body in batch.bodies)
        return parse(batch)

    monkeypatch.setattr(decode_module, "_parse", watched)
    decoded = decode_batch(shape([reading(1), huge, reading(2)]), DecodeConfig(), now_ns=NOW)
    assert max(seen) < 100  # the huge body never reached the parser
    assert decoded.readings.table["position"].to_pylist() == [1, 3]
    (letter,) = dead(decoded)
    assert letter["position"] == 2 and letter["payload"] == huge[:1024]
    assert letter["reason"] == f"too_large: {len(huge)} bytes > max_message_bytes {MAX_MESSAGE_BYTES}"


def test_live_batches_keep_their_rejects_and_progress():
    """An Event Hubs batch (bodies as received, sequence numbers, progress) with one body over the limit."""
    progress = SourceProgress(durable=40, sequence_numbers=np.array([40, 41, 42]))
    received = as_list([reading(1), padded(LIMIT * 4), reading(3)], positions=[40, 41, 42], progress=progress)
    decoded = decode_batch(received, DecodeConfig(max_message_bytes=LIMIT), now_ns=NOW)
    assert decoded.readings.progress is progress
    assert decoded.readings.table["position"].to_pylist() == [40, 42]
    assert [d["position"] for d in dead(decoded)] == [41]


def test_capture_avro_bodies_over_the_limit_are_too_large(tmp_path: Path):
    rows = [
        {"SequenceNumber": seq, "Offset": str(seq), "EnqueuedTimeUtc": "1/1/2026 12:00:01 AM",
         "SystemProperties": {}, "Properties": {}, "Body": body}
        for seq, body in [(5, reading(5)), (6, array_of(2 * MAX_MESSAGE_BYTES)), (7, reading(7))]
    ]
    path = tmp_path / "0" / "capture.avro"
    path.parent.mkdir()
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(CAPTURE_SCHEMA), rows)
    decoded = decode_batch(AvroReader([path], "0").read(), DecodeConfig(), now_ns=NOW)
    assert decoded.readings.table["position"].to_pylist() == [5, 7]
    assert [(d["position"], d["reason"].split(":")[0], len(d["payload"])) for d in dead(decoded)] == [(6, "too_large", 1024)]


def test_the_setting_reaches_the_flows_decode_config(tmp_path: Path):
    assert decode_config(run_settings(tmp_path, tmp_path / "x.db")).max_message_bytes == MAX_MESSAGE_BYTES == 1 << 20
    assert decode_config(run_settings(tmp_path, tmp_path / "x.db", max_message_bytes=4096)).max_message_bytes == 4096
    with pytest.raises(ValueError):
        DecodeConfig(max_message_bytes=0)

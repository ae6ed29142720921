"""The model store contract: the local directory and Azure Blob (Azurite) pass the same tests."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import uuid

import numpy as np
import pytest

from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR, SensorWindows, get_detector
from sensorflow.batch_jobs.model_store import (
    BlobAccess,
    ModelCatalog,
    ModelMetadata,
    ModelStoreError,
    ObjectNotFound,
    new_version,
    open_model_store,
    split_object_url,
)
from sensorflow.batch_jobs.model_store.base import ModelStore
from sensorflow.batch_jobs.model_store.catalog import model_prefix
from tests.support.models import replace_model

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


@pytest.fixture(params=["local", "azblob"])
def store_url(request, tmp_path) -> tuple[str, BlobAccess | None]:
    if request.param == "local":
        return str(tmp_path / "models"), None
    azurite = request.getfixturevalue("azurite")
    return f"azblob://c{uuid.uuid4().hex[:12]}/prefix", BlobAccess(connection_string=azurite.connection_string)


@pytest.fixture
def store(store_url):
    url, access = store_url
    with open_model_store(url, access) as s:
        yield s


def windows(device: str = "1", tag: str = "4", n: int = 120, seed: int = 0) -> SensorWindows:
    rng = np.random.default_rng(seed)
    value = 80 + rng.normal(0, 1, n)
    ts = T0 + np.arange(1, n + 1, dtype=np.int64) * 5 * S
    return SensorWindows(device, tag, ts, value, np.full(n, 5), value - 1, value + 1, T0, int(ts[-1]), 5 * S)


def fitted(device: str = "1", tag: str = "4", seed: int = 0):
    w = windows(device, tag, seed=seed)
    model = get_detector(DEFAULT_DETECTOR).fit(w)
    meta = ModelMetadata(device, tag, DEFAULT_DETECTOR, new_version(w.range_to), w.range_from, w.range_to, len(w))
    return w, meta, model


def test_put_get_replace_and_missing(store):
    store.put_bytes("a/b.bin", b"one")
    assert store.get_bytes("a/b.bin") == b"one"
    store.put_bytes("a/b.bin", b"two, longer")
    assert store.get_bytes("a/b.bin") == b"two, longer"
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a/missing.bin")


def test_list_many_and_names(store):
    store.put_many([("runs/r1/t2.json", b"2"), ("runs/r1/t1.json", b"1"), ("runs/r2/t1.json", b"3")], replace=False)
    assert store.list_names("runs/r1/") == ["runs/r1/t1.json", "runs/r1/t2.json"]
    assert store.get_many(["runs/r2/t1.json", "runs/nope", "runs/r1/t1.json"]) == [b"3", None, b"1"]
    for bad in ["", "/abs", "a/../b", "a//b", "./a"]:
        with pytest.raises(ValueError, match="bad object name"):
            store.put_bytes(bad, b"x")


def test_object_url_opens_the_parent_as_a_store(store, store_url):
    store.put_bytes("runs/r1/tasks/t1.json", b"spec")
    parent, name = split_object_url(store.object_url("runs/r1/tasks/t1.json"))
    assert name == "t1.json"
    with open_model_store(parent, store_url[1]) as beside:
        assert beside.get_bytes(name) == b"spec"
        beside.put_bytes("t1.result.json", b"result")
    assert store.get_bytes("runs/r1/tasks/t1.result.json") == b"result"


def test_readers_see_whole_objects_while_a_writer_replaces_them(store):
    payloads = [bytes([i]) * (1000 + 50_000 * i) for i in range(1, 5)]
    store.put_bytes("latest.json", payloads[0])
    stop = threading.Event()
    seen: set[int] = set()

    def read() -> None:
        while not stop.is_set():
            data = store.get_bytes("latest.json")
            assert data in payloads, f"torn read of {len(data)} bytes"
            seen.add(data[0])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(30):
            store.put_bytes("latest.json", payloads[round_ % len(payloads)])
    finally:
        stop.set()
        reader.join()
    assert len(seen) >= 2  # the reader really overlapped the writes


def test_models_round_trip_with_metadata_and_versions(store):
    w, meta, model = fitted()
    catalog = ModelCatalog(store)
    catalog.put_models([(meta, model)])
    (stored,) = catalog.load_latest(DEFAULT_DETECTOR, [("1", "4")])
    assert stored.metadata == meta
    assert stored.metadata.windows == 120 and stored.metadata.libraries["numpy"] == np.__version__
    np.testing.assert_array_equal(stored.model.score(w).score, model.score(w).score)

    _, newer, model2 = fitted(seed=1)
    catalog.put_models([(newer, model2)])
    assert catalog.versions(DEFAULT_DETECTOR, "1", "4") == sorted([meta.version, newer.version])
    (latest,) = catalog.load_latest(DEFAULT_DETECTOR, [("1", "4")])
    assert latest.metadata.version == newer.version


def test_unusual_ids_get_their_own_models(store):
    ids = [("a/b", ".."), ("ü ✓", "%2E"), ("x" * 128, "1"), ("1", "4")]
    catalog = ModelCatalog(store)
    catalog.put_models([fitted(d, t)[1:] for d, t in ids])
    loaded = catalog.load_latest(DEFAULT_DETECTOR, ids + [("never", "trained")])
    assert [(m.metadata.device, m.metadata.tag) for m in loaded[:-1]] == ids
    assert loaded[-1] is None


def test_a_broken_model_is_reported_in_its_slot(store):
    catalog = ModelCatalog(store)
    good, bad = fitted("1", "1"), fitted("1", "2")
    catalog.put_models([good[1:], bad[1:], fitted("1", "3")[1:], fitted("1", "4")[1:]])
    # Someone overwrote a model with a pickle: refused, and only for that sensor; so are pointers that are not ours.
    replace_model(store, DEFAULT_DETECTOR, ("1", "2"), b"\x80\x04\x95 pickle")
    store.put_bytes(f"models/{DEFAULT_DETECTOR}/1/3.latest.json", b"not json")
    pointer = json.loads(store.get_bytes(f"models/{DEFAULT_DETECTOR}/1/4.latest.json"))
    store.put_bytes(f"models/{DEFAULT_DETECTOR}/1/4.latest.json", json.dumps({**pointer, "model": "%%"}).encode())
    ok, broken, garbled, unreadable = catalog.load_latest(DEFAULT_DETECTOR, [("1", "1"), ("1", "2"), ("1", "3"), ("1", "4")])
    assert ok.metadata.version == good[1].version
    assert isinstance(broken, ValueError) and "model archive" in str(broken)
    assert isinstance(garbled, ValueError) and "bad model pointer" in str(garbled)
    assert isinstance(unreadable, ValueError) and "not base64" in str(unreadable)


def put_older_layout(store: ModelStore, meta: ModelMetadata, model) -> None:
    """A model as sensorflow stored it before packs: <version>.npz (codec format 1), <version>.json, latest.json."""
    buffer = io.BytesIO()
    described = json.dumps({"format": 1, "detector": model.detector, "params": model.params()}).encode()
    np.savez_compressed(buffer, **model.to_arrays(), __model__=np.frombuffer(described, dtype=np.uint8))
    prefix = model_prefix(meta.detector, meta.device, meta.tag)
    store.put_many([(f"{prefix}/{meta.version}.npz", buffer.getvalue()), (f"{prefix}/{meta.version}.json", meta.to_json())],
                   replace=False)
    store.put_bytes(f"{prefix}/latest.json", _older_pointer(meta))


def test_models_of_the_older_layout_keep_loading_until_retrained(store):
    catalog = ModelCatalog(store)
    w, old, model = fitted("1", "1")
    put_older_layout(store, old, model)
    _, fresh, fresh_model = fitted("1", "2")
    catalog.put_models([(fresh, fresh_model)])
    sensors = [("1", "1"), ("1", "2")]
    assert catalog.latest_metadata(DEFAULT_DETECTOR, sensors) == [old, fresh]
    assert catalog.with_models(DEFAULT_DETECTOR, sensors + [("1", "3")]) == set(sensors)
    loaded, loaded_fresh = catalog.load_latest(DEFAULT_DETECTOR, sensors)
    assert loaded.metadata == old and loaded_fresh.metadata == fresh
    np.testing.assert_array_equal(loaded.model.score(w).score, model.score(w).score)

    _, retrained, again = fitted("1", "1", seed=1)  # the new layout takes over; the old version stays listed
    catalog.put_models([(retrained, again)])
    assert catalog.versions(DEFAULT_DETECTOR, "1", "1") == sorted([old.version, retrained.version])
    (latest,) = catalog.load_latest(DEFAULT_DETECTOR, [("1", "1")])
    assert latest.metadata == retrained

    store.put_bytes(f"{model_prefix(DEFAULT_DETECTOR, '1', '3')}/latest.json", _older_pointer(fitted("1", "3")[1]))
    (missing,) = catalog.load_latest(DEFAULT_DETECTOR, [("1", "3")])  # an older pointer without its version
    assert isinstance(missing, LookupError) and "missing version" in str(missing)


def _older_pointer(meta: ModelMetadata) -> bytes:
    return json.dumps(dataclasses.asdict(meta), sort_keys=True).encode()


def test_one_pack_per_call_holds_every_version_and_a_sensor_reads_only_its_pointer(store):
    catalog = ModelCatalog(store)
    first = [fitted("1", str(t))[1:] for t in range(1, 4)]
    catalog.put_models(first)
    later = [fitted("1", str(t), seed=5)[1:] for t in range(1, 3)]
    catalog.put_models(later)
    packs = store.list_names(f"models/{DEFAULT_DETECTOR}/@packs/")
    assert len(packs) == 2
    assert catalog.versions(DEFAULT_DETECTOR, "1", "1") == sorted([first[0][0].version, later[0][0].version])
    assert catalog.versions(DEFAULT_DETECTOR, "1", "3") == [first[2][0].version]
    reads = []
    original = store.get_many
    store.get_many = lambda names: reads.append(list(names)) or original(names)
    loaded = catalog.load_latest(DEFAULT_DETECTOR, [("1", "1"), ("1", "3")])
    assert [m.metadata.version for m in loaded] == [later[0][0].version, first[2][0].version]
    assert reads == [[f"models/{DEFAULT_DETECTOR}/1/1.latest.json", f"models/{DEFAULT_DETECTOR}/1/3.latest.json"]]
    assert not [name for name in store.list_names("models/") if name.endswith("/latest.json")]  # no folder per sensor


class _Recording(ModelStore):
    """Delegates to a real store and records the order of puts."""

    def __init__(self, inner: ModelStore):
        self.inner, self.url, self.names = inner, inner.url, []

    def put_bytes(self, name, data, replace=True):
        self.names.append(name)
        self.inner.put_bytes(name, data, replace)

    def get_bytes(self, name):
        return self.inner.get_bytes(name)

    def list_names(self, prefix=""):
        return self.inner.list_names(prefix)


def test_latest_pointers_are_written_after_every_version(store):
    recording = _Recording(store)
    ModelCatalog(recording).put_models([fitted("1", str(t))[1:] for t in range(1, 4)])
    pointers = [i for i, name in enumerate(recording.names) if name.endswith("latest.json")]
    packs = [i for i, name in enumerate(recording.names) if not name.endswith("latest.json")]
    assert len(pointers) == 3 and len(packs) == 1 and max(packs) < min(pointers)


def test_bad_urls_and_missing_access_are_one_line_errors(tmp_path):
    with pytest.raises(ModelStoreError, match="unsupported model store URL"):
        open_model_store("s3://bucket")
    with pytest.raises(ModelStoreError, match="SENSORFLOW_BLOB_CONNECTION_STRING"):
        open_model_store("azblob://models", BlobAccess())
    with pytest.raises(ModelStoreError, match="not an object URL"):
        split_object_url("azblob://container")
    assert "secret" not in repr(BlobAccess(connection_string="AccountKey=secret"))


def test_with_models_finds_the_sensors_with_a_latest_model_in_one_listing(store):
    catalog = ModelCatalog(store)
    long_id = ("x" * 128, "1")  # hashed in names: matched by its encoded component, not read back
    catalog.put_models([fitted(d, t)[1:] for d, t in [("1", "4"), ("a/b", "ü ✓"), long_id]])
    _, orphan, model = fitted("2", "4")  # a version whose pointer was never written
    store.put_bytes(f"models/{DEFAULT_DETECTOR}/2/4/{orphan.version}.npz", b"x")
    store.put_bytes("runs/r1/tasks/t1.json", b"{}")
    asked = [("1", "4"), ("a/b", "ü ✓"), long_id, ("2", "4"), ("1", "5"), ("never", "trained")]
    listings = []
    original = store.list_names
    store.list_names = lambda prefix="": listings.append(prefix) or original(prefix)
    assert catalog.with_models(DEFAULT_DETECTOR, asked) == {("1", "4"), ("a/b", "ü ✓"), long_id}
    assert listings == [f"models/{DEFAULT_DETECTOR}/"]
    assert catalog.with_models("seed-ocsvm", asked) == set()  # another detector: no models yet

"""The model store contract: the local directory and Azure Blob (Azurite) pass the same tests."""

from __future__ import annotations

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
    catalog.put_models([good[1:], bad[1:]])
    # Someone overwrote a version with a pickle: refused, and only for that sensor.
    store.put_bytes(f"models/{DEFAULT_DETECTOR}/1/2/{bad[1].version}.npz", b"\x80\x04\x95 pickle")
    ok, broken = catalog.load_latest(DEFAULT_DETECTOR, [("1", "1"), ("1", "2")])
    assert ok.metadata.version == good[1].version
    assert isinstance(broken, ValueError) and "model archive" in str(broken)


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
    versions = [i for i, name in enumerate(recording.names) if not name.endswith("latest.json")]
    assert len(pointers) == 3 and len(versions) == 6 and max(versions) < min(pointers)


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

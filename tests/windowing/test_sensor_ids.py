import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.windowing.sensor_ids import SensorIds

_IDS = st.text(alphabet=st.sampled_from(["a", "b", "1", "\x00", "é", "3"]), max_size=3)


@pytest.mark.parametrize("hash_key", [hash, lambda key: 7, len], ids=["hash", "one hash for all", "length"])
@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(_IDS, _IDS), max_size=12), max_size=5))
def test_ids_are_dense_in_first_sight_order_and_map_back(hash_key, batches):
    """Whatever the hashes (all equal: every key collides), a sensor keeps one id and ids map back to it."""
    sensors = SensorIds(hash_key)
    expected: dict[tuple[str, str], int] = {}
    for batch in batches:
        device = pa.array([d for d, _ in batch], pa.string())
        tag = pa.array([t for _, t in batch], pa.string())
        got = sensors.ids(device, tag)
        for pair in batch:
            expected.setdefault(pair, len(expected))
        assert got.tolist() == [expected[pair] for pair in batch]
        assert len(sensors) == len(expected)
    ids = np.arange(len(expected))
    assert list(zip(sensors.devices(ids).to_pylist(), sensors.tags(ids).to_pylist())) == list(expected)


def test_device_and_tag_boundaries_cannot_make_two_sensors_one():
    sensors = SensorIds()
    got = sensors.ids(pa.array(["a\x00", "a", "ab", "a"]), pa.array(["b", "\x00b", "", "b"]))
    assert got.tolist() == [0, 1, 2, 3]


def test_chunked_columns_are_accepted():
    sensors = SensorIds()
    device = pa.chunked_array([["d1", "d2"], ["d1"]])
    tag = pa.chunked_array([["t"], ["t", "t"]])
    assert sensors.ids(device, tag).tolist() == [0, 1, 0]


def test_many_devices_and_tags_in_few_rows_take_the_sorting_path():
    """More (device, tag) combinations than rows: pairs are numbered by a sort, not densely."""
    sensors = SensorIds()
    device = pa.array([f"d{i}" for i in range(30)] + ["d3", "d0"])
    tag = pa.array([f"t{i}" for i in range(30)] + ["t3", "t0"])
    assert sensors.ids(device, tag).tolist() == [*range(30), 3, 0]
    assert sensors.ids(pa.array([], pa.string()), pa.array([], pa.string())).tolist() == []

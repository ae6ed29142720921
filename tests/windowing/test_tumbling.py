import copy
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.records.readings import READING_SCHEMA
from sensorflow.records.windows import BEFORE_TIME, END_OF_TIME
from sensorflow.windowing.shards import shard_of, split_by_shard
from sensorflow.windowing.tumbling import PartitionClock, WindowAggregator, window_ends
from tests.support import window_reference as reference

S = 1_000_000_000
L = 5 * S


@pytest.mark.parametrize(
    "ts, end",
    [(0, L), (1, L), (L - 1, L), (L, 2 * L), (3 * S + 200_000_000, L), (86_400 * S, 86_400 * S + L)],
)
def test_window_end_is_the_right_edge_aligned_to_the_epoch(ts, end):
    assert window_ends(np.array([ts]), L)[0] == end


@pytest.mark.parametrize(
    "times_s, late",
    [
        ([10, 9, 5, 4.9], [False, False, False, True]),  # 10 - 5 s lateness = 5: 4.9 is late
        ([10, 20, 14, 15], [False, False, True, False]),
        ([1, 1, 1], [False, False, False]),
        ([], []),
    ],
)
def test_partition_clock(times_s, late):
    clock = PartitionClock(5 * S)
    ts = (np.array(times_s, dtype=float) * S).astype(np.int64)
    assert clock.late_mask(ts).tolist() == late


def test_partition_clock_is_the_same_in_any_batching():
    rng = np.random.default_rng(3)
    ts = (np.cumsum(rng.integers(-4 * S, 3 * S, 500)) + 100 * S).astype(np.int64)
    whole = PartitionClock(5 * S).late_mask(ts)
    clock = PartitionClock(5 * S)
    parts = [clock.late_mask(chunk) for chunk in np.array_split(ts, 37)]
    assert np.concatenate(parts).tolist() == whole.tolist()


def readings(rows):
    """rows: (ts, device, tag, value)"""
    return pa.table(
        {
            "position": list(range(len(rows))),
            "element": [0] * len(rows),
            "ts": [r[0] for r in rows],
            "device": [r[1] for r in rows],
            "tag": [r[2] for r in rows],
            "value": [float(r[3]) for r in rows],
        },
        schema=READING_SCHEMA,
    )


def test_window_closes_only_when_every_partition_has_passed_it():
    agg = WindowAggregator(L, ["a", "b"])
    closed, _ = agg.add("a", readings([(1 * S, "d", "t", 1.0)]), 20 * S)
    assert closed is None  # b has said nothing yet
    closed, _ = agg.add("b", readings([(2 * S, "d", "t", 3.0)]), 4 * S)
    assert closed is None  # b's watermark is before the first window's end
    closed, _ = agg.add("b", readings([]), 5 * S)
    assert closed.table.to_pylist() == [
        {"window_end": L, "device": "d", "tag": "t", "value": 2.0, "count": 2, "min": 1.0, "max": 3.0}
    ]


def test_idle_partition_stops_holding_windows_and_its_old_readings_become_late():
    agg = WindowAggregator(L, ["a", "b"], idle_timeout_ns=30 * S)
    agg.add("a", readings([(1 * S, "d", "t", 1.0)]), 20 * S, wall_ns=0)
    agg.add("b", readings([]), BEFORE_TIME, wall_ns=0)
    assert agg.check_idle(10 * S) is None
    agg.add("a", readings([]), 20 * S, wall_ns=25 * S)
    closed = agg.check_idle(31 * S)  # b silent for 31 s of wall time
    assert closed is not None and closed.table["window_end"].to_pylist() == [L]
    _, late = agg.add("b", readings([(2 * S, "d", "t", 9.0)]), 0, wall_ns=40 * S)
    assert late.num_rows == 1


def test_end_of_input_flushes_everything():
    agg = WindowAggregator(L, ["a"])
    agg.add("a", readings([(1 * S, "d", "t", 1.0), (100 * S, "d", "t", 2.0)]), 0)
    closed, _ = agg.add("a", readings([]), END_OF_TIME)
    assert closed.table["window_end"].to_pylist() == [L, 105 * S]


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 60_000), st.sampled_from(["1", "2"]), st.sampled_from(["a", "b"]), st.integers(-50, 50)),
        max_size=80,
    ),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    roundtrip=st.sampled_from(["pickle", "deepcopy"]),
)
def test_aggregator_survives_snapshot_and_restore_anywhere(data, cuts, roundtrip):
    """Feeding in batches with a snapshot/restore between each equals the pandas reference."""
    rows = [(ms * 1_000_000, d, t, v) for ms, d, t, v in data]
    frame = pd.DataFrame(rows, columns=["ts", "device", "tag", "value"]).assign(partition="a")
    accepted, _ = reference.accepted_and_late(frame, L)
    expected = reference.windows(accepted, L)

    clock = PartitionClock(L)
    agg = WindowAggregator(L, ["a"])
    out = []
    bounds = sorted({0, len(rows), *[c for c in cuts if c <= len(rows)]})
    for lo, hi in zip(bounds, bounds[1:]):
        chunk = readings(rows[lo:hi])
        late = clock.late_mask(chunk["ts"].to_numpy())
        closed, _ = agg.add("a", chunk.filter(pa.array(~late)), clock.watermark)
        if closed is not None:
            out.append(closed.table)
        state = agg.snapshot()
        state = pickle.loads(pickle.dumps(state)) if roundtrip == "pickle" else copy.deepcopy(state)
        agg = WindowAggregator.restore(L, ["a"], state)
    closed, _ = agg.add("a", readings([]), END_OF_TIME)
    if closed is not None:
        out.append(closed.table)
    _assert_reference(out, expected)


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 600_000), st.integers(0, 39), st.sampled_from(["a", "b"]), st.floats(-50, 50), st.sampled_from("pq")),
        max_size=150,
    ),
    cuts=st.lists(st.integers(0, 150), max_size=8),
    merge_rows=st.sampled_from([1, 1 << 16]),
)
def test_many_sensors_over_many_windows_equal_the_reference(data, cuts, merge_rows):
    """Few readings per window next to many sensors (the merge numbers ids densely first), two partitions,
    merges on every batch or only at close: the windows equal the pandas reference, min and max exactly."""
    rows = [(ms * 1_000_000, str(d), t, v, p) for ms, d, t, v, p in data]
    frame = pd.DataFrame(rows, columns=["ts", "device", "tag", "value", "partition"])
    accepted, _ = reference.accepted_and_late(frame, L)
    expected = reference.windows(accepted, L)

    clocks = {"p": PartitionClock(L), "q": PartitionClock(L)}
    agg = WindowAggregator(L, ["p", "q"])
    agg._MERGE_ROWS = merge_rows
    out = []
    bounds = sorted({0, len(rows), *[c for c in cuts if c <= len(rows)]})
    for lo, hi in zip(bounds, bounds[1:]):
        for partition, clock in clocks.items():
            chunk = readings([r[:4] for r in rows[lo:hi] if r[4] == partition])
            late = clock.late_mask(chunk["ts"].to_numpy())
            closed, _ = agg.add(partition, chunk.filter(pa.array(~late)), clock.watermark)
            if closed is not None:
                out.append(closed.table)
    for partition in clocks:
        closed, _ = agg.add(partition, readings([]), END_OF_TIME)
        if closed is not None:
            out.append(closed.table)
    _assert_reference(out, expected)


def test_shards_are_stable_and_partition_the_readings():
    table = readings([(i * S, str(i % 7), str(i % 3), i) for i in range(100)])
    parts = split_by_shard(table, 4)
    assert sum(p.num_rows for p in parts) == 100
    for shard, part in enumerate(parts):
        for d, t in zip(part["device"].to_pylist(), part["tag"].to_pylist()):
            assert shard_of(d, t, 4) == shard
    assert shard_of("pump-1", "t", 4) == 1  # crc32: fixed across processes and releases


def _assert_reference(out: list[pa.Table], expected: pd.DataFrame) -> None:
    """The closed windows ``out`` equal the pandas reference: counts and min/max exactly, means to rounding."""
    got = pa.concat_tables(out).to_pandas() if out else pd.DataFrame(columns=["window_end"])
    assert len(got) == len(expected)
    if len(got):
        got = got.sort_values(["device", "tag", "window_end"]).reset_index(drop=True)
        assert got["count"].tolist() == expected["Count"].tolist()
        np.testing.assert_allclose(got["value"], expected["Value"], rtol=1e-9, atol=1e-12)
        assert got["min"].tolist() == expected["Min"].tolist() and got["max"].tolist() == expected["Max"].tolist()

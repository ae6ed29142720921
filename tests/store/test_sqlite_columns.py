"""The SQLite store's column paths: multi-row prediction upserts and sort-free window reads give the row-by-row results."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.records.predictions import PREDICTION_SCHEMA
from sensorflow.records.timeparse import format_ms
from sensorflow.store import open_store
from sensorflow.store.sqlite_columns import ROWS_PER_STATEMENT, PredictionStatements, ts_ns_column
from tests.support.builders import S, T0, window_table

EDGES = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
         1.7976931348623157e308, -1.7976931348623157e308, 2.0**52, 2.0**53 + 2, 123456789.123456789, math.inf, -math.inf]


def predictions(ts, device, tag, value, score, flag, detector="d", version="v1") -> pa.Table:
    n = len(ts)
    spread = lambda x: x if isinstance(x, list) else [x] * n  # noqa: E731
    return pa.table(
        {"ts": ts, "device": spread(device), "tag": spread(tag), "value": pa.array(value, pa.float64()),
         "score": pa.array(score, pa.float64()), "is_anomaly": spread(flag), "detector": spread(detector),
         "model_version": spread(version)},
        schema=PREDICTION_SCHEMA,
    )


def stored(store) -> list[tuple]:
    """Every Predictions row as SQLite holds it, with each value's storage class; WrittenAt left out."""
    return store._db.execute(
        "SELECT TS, Device, Tag, Value, typeof(Value), Score, typeof(Score), IsAnomaly, typeof(IsAnomaly), "
        "Detector, ModelVersion FROM Predictions ORDER BY Device, Tag, TS, Detector"
    ).fetchall()


@pytest.fixture
def two_stores(tmp_path):
    """A store that upserts predictions in multi-row statements and one that writes them row by row."""
    packed, by_row = (open_store(f"sqlite:///{tmp_path / name}") for name in ("packed.db", "by_row.db"))
    for store in (packed, by_row):
        store.create_schema()
    by_row.upsert_predictions = by_row._upsert_predictions_by_row
    yield packed, by_row
    packed.close()
    by_row.close()


def same_bits(a: float | None, b: float | None) -> bool:
    return a is None and b is None or (a is not None and b is not None and (a == b or a != a and b != b)
                                       and math.copysign(1, a) == math.copysign(1, b))


def test_edge_floats_round_trip_bit_for_bit_as_row_by_row(two_stores):
    packed, by_row = two_stores
    n = len(EDGES)
    table = predictions([T0 + i * S for i in range(n)], "1", "2", EDGES, EDGES[::-1], [i % 2 == 0 for i in range(n)])
    for store in two_stores:
        store.upsert_predictions(table)
    got, want = stored(packed), stored(by_row)
    assert [r[:3] + r[4:5] + r[6:] for r in got] == [r[:3] + r[4:5] + r[6:] for r in want]
    for g, w in zip(got, want):
        assert same_bits(g[3], w[3]) and same_bits(g[5], w[5])
    assert [r["score"] for r in packed.read_predictions([("1", "2")], T0 - S, T0 + n * S).to_pylist()] == EDGES[::-1]


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)
ids = st.sampled_from(["1", "2", "é", "日本", "a b", ""])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), ids, ids, st.one_of(st.none(), finite_or_not),
                          st.floats(allow_nan=False, width=64), st.booleans(), st.sampled_from(["d", "e"]),
                          st.sampled_from(["v1", "v2"])), min_size=1, max_size=40))
def test_any_table_upserts_as_row_by_row_twice_over(tmp_path_factory, rows):
    """Runs of any length, keys repeated inside one call (the later row wins), replacing upserts."""
    path = tmp_path_factory.mktemp("p")
    stores = [open_store(f"sqlite:///{path / name}") for name in ("packed.db", "by_row.db")]
    try:
        stores[1].upsert_predictions = stores[1]._upsert_predictions_by_row
        ts, device, tag, value, score, flag, detector, version = (list(c) for c in zip(*rows))
        table = predictions([T0 + t * S for t in ts], device, tag, value, score, flag, detector, version)
        for store in stores:
            store.create_schema()
            store.upsert_predictions(table)
            store.upsert_predictions(table.slice(0, len(rows) // 2))
        got, want = (stored(s) for s in stores)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g[:3] + g[4:5] + g[6:] == w[:3] + w[4:5] + w[6:]
            assert same_bits(g[3], w[3]) and same_bits(g[5], w[5])
    finally:
        for store in stores:
            store.close()


def test_the_extreme_times_of_int64_ns_pack_as_row_by_row(two_stores):
    packed, by_row = two_stores
    far = [-(2**63) + 1, -1, 2**63 - 1]  # 1677 .. 2262: always four-digit years
    table = predictions(far, "1", "2", [1.0, 2.0, 3.0], [0.5, 0.25, 0.125], False)
    for store in two_stores:
        assert store.upsert_predictions(table) == 3
    assert stored(packed) == stored(by_row)


def test_runs_are_cut_into_the_statement_sizes_and_upsert_as_row_by_row(two_stores):
    packed, by_row = two_stores
    n = 2 * ROWS_PER_STATEMENT[0] + ROWS_PER_STATEMENT[1] + 3  # every size, and a second sensor's short run
    table = predictions([T0 + i * S for i in range(n)], "1", "2", np.arange(n, dtype=float).tolist(),
                        np.linspace(0, 1, n).tolist(), [i % 3 == 0 for i in range(n)])
    table = pa.concat_tables([table, predictions([T0, T0 + S], "1", "3", [None, 2.0], [0.5, 0.25], True)])
    statements = PredictionStatements.of(table)
    assert [sql.count("), (") + 1 for sql, _ in statements.statements] == [128, 128, 16, 1, 1, 1, 1, 1]
    for store in two_stores:
        assert store.upsert_predictions(table) == n + 2
    assert stored(packed) == stored(by_row)


def test_a_null_where_the_table_allows_none_fails_as_row_by_row(two_stores):
    table = predictions([T0, T0 + S], "1", "2", [1.0, 2.0], [0.5, None], False)
    for store in two_stores:
        with pytest.raises(sqlite3.IntegrityError):
            store.upsert_predictions(table)


def test_ts_texts_parse_once_per_distinct_time():
    texts = format_ms(np.array([T0, T0 + 5 * S, T0, T0 + 5 * S, T0 + 1_000_000]))
    assert ts_ns_column(texts).tolist() == [T0, T0 + 5 * S, T0, T0 + 5 * S, T0 + 1_000_000]


def test_window_reads_come_by_sensor_then_ts_as_sqlite_orders_them(tmp_path):
    sensors = [("b", "1"), ("a", "2"), ("é", "x"), ("a", "10"), ("A", "z"), ("日本", "1")]
    ends = [T0 + k * S for k in (3, 1, 2, 9)]
    rows = [(e, d, t) for d, t in sensors for e in ends]
    with open_store(f"sqlite:///{tmp_path / 'w.db'}") as store:
        store.create_schema()
        store.upsert_windows(window_table(*zip(*rows), value=np.arange(len(rows), dtype=np.float64)))
        got = store.read_windows(sensors[::-1] + [("a", "2"), ("nope", "1")], T0 + S, T0 + 9 * S)
        ordered = store._db.execute(
            "SELECT Device, Tag, TS FROM SensorValues WHERE TS > ? AND TS <= ? ORDER BY Device, Tag, TS",
            tuple(format_ms(np.array([T0 + S, T0 + 9 * S]))),
        ).fetchall()
    assert list(zip(got["device"].to_pylist(), got["tag"].to_pylist(), format_ms(got["ts"].to_numpy()))) == ordered
    assert got.num_rows == 3 * len(sensors)  # a sensor asked for twice is read once

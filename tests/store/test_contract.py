"""The store contract: every backend passes these same tests."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch
from sensorflow.records.predictions import PREDICTION_SCHEMA
from sensorflow.records.runs import RunRecord
from sensorflow.store import StoreError, open_store
from tests.support.builders import window_table

S = 1_000_000_000
T0 = 1_535_497_200 * S  # 2018-08-28T23:00:00Z


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
    else:  # PostgreSQL over ODBC: the same code path as Azure SQL (tests/store/)
        url = f"postgresql+odbc:{request.getfixturevalue('postgres_odbc')}"
    s = open_store(url)
    s.create_schema()
    yield s
    s.close()


def windows(rows):
    """rows: (end_s, device, tag, value, count)"""
    values = [float(r[3]) for r in rows]
    return window_table(
        [T0 + e * S for e, *_ in rows], [r[1] for r in rows], [r[2] for r in rows], values, [r[4] for r in rows],
        [v - 1 for v in values], [v + 1 for v in values],
    )


def test_schema_creation_is_idempotent(store):
    store.create_schema()
    assert store.summary().windows == 0


def test_upsert_replaces_rows_with_the_same_key(store):
    store.upsert_windows(windows([(5, "1", "1", 10.0, 2), (10, "1", "1", 11.0, 1)]))
    store.upsert_windows(windows([(5, "1", "1", 99.0, 3)]))
    got = store.read_windows([("1", "1")], T0, T0 + 60 * S).to_pylist()
    assert [(r["ts"], r["value"], r["count"], r["min"]) for r in got] == [
        (T0 + 5 * S, 99.0, 3, 98.0),
        (T0 + 10 * S, 11.0, 1, 10.0),
    ]
    assert store.summary().windows == 2


def test_read_windows_for_a_chunk_of_sensors_over_a_half_open_range(store):
    store.upsert_windows(
        windows([(e, d, t, e, 1) for e in (5, 10, 15, 20) for d in ("1", "2", "x") for t in ("1", "4")])
    )
    got = store.read_windows([("1", "4"), ("x", "1"), ("nope", "1")], T0 + 5 * S, T0 + 15 * S)
    assert list(zip(got["device"].to_pylist(), got["tag"].to_pylist(), got["ts"].to_pylist())) == [
        ("1", "4", T0 + 10 * S), ("1", "4", T0 + 15 * S), ("x", "1", T0 + 10 * S), ("x", "1", T0 + 15 * S)
    ]


def test_read_many_sensors_in_one_call(store):
    # More sensors than SQL Server's 2,100 parameters: the chunk must not become an IN list.
    sensors = [(str(d), "t") for d in range(3000)]
    store.upsert_windows(windows([(5, d, t, 1.0, 1) for d, t in sensors]))
    assert store.read_windows(sensors, T0, T0 + 5 * S).num_rows == 3000


def test_sensors_written_since(store):
    store.upsert_windows(windows([(5, "1", "1", 1.0, 1)]))
    mark = _next_millisecond()  # the database clock has millisecond resolution
    _next_millisecond()
    store.upsert_windows(windows([(10, "2", "1", 1.0, 1), (10, "2", "2", 1.0, 1)]))
    assert store.sensors_written_since(mark) == [("2", "1"), ("2", "2")]
    assert store.sensors_written_since(0) == [("1", "1"), ("2", "1"), ("2", "2")]


def _next_millisecond() -> int:
    start = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= start + 1:
        pass
    return time.time_ns()


def test_dead_letters_are_keyed_so_replays_do_not_duplicate(store):
    letters = DeadLetterBatch.from_records(
        [
            DeadLetter("0", 7, 0, "bad_json", b"{"),
            DeadLetter("0", 7, 1, "late", None, T0 + S, "1", "2", 3.5),
        ]
    )
    store.upsert_dead_letters(letters.table)
    store.upsert_dead_letters(letters.table)
    assert store.summary().dead_letters == {"bad_json": 1, "late": 1}


def test_predictions_round_trip_and_replace(store):
    table = pa.table(
        {
            "ts": [T0 + 5 * S, T0 + 10 * S],
            "device": ["1", "1"],
            "tag": ["2", "2"],
            "value": [1.0, 2.0],
            "score": [0.1, -3.0],
            "is_anomaly": [False, True],
            "detector": ["seed-ocsvm", "seed-ocsvm"],
            "model_version": ["v1", "v1"],
        },
        schema=PREDICTION_SCHEMA,
    )
    store.upsert_predictions(table)
    store.upsert_predictions(table.set_column(4, "score", pa.array([0.5, -4.0])))
    got = store.read_predictions([("1", "2")], T0, T0 + 60 * S).to_pylist()
    assert [(r["score"], r["is_anomaly"]) for r in got] == [(0.5, False), (-4.0, True)]


def test_summary(store):
    store.upsert_windows(windows([(5, "1", "1", 1.0, 1), (10, "1", "1", 1.0, 1), (5, "2", "1", 1.0, 1)]))
    summary = store.summary()
    assert (summary.windows, summary.sensors) == (3, 2)
    assert (summary.first_window, summary.last_window) == ("2018-08-28 23:00:05.000", "2018-08-28 23:00:10.000")


def test_bad_urls_are_clear_errors(tmp_path: Path):
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_database_time_is_the_clock_written_at_uses(store):
    before = store.database_time()
    store.upsert_windows(windows([(5, "1", "1", 1.0, 1)]))
    assert store.sensors_written_since(before) == [("1", "1")]
    assert abs(store.database_time() - time.time_ns()) < 60 * S  # UTC, not local time


def test_runs_round_trip_replace_and_filter(store):
    now = store.database_time()
    first = RunRecord("r1", "score", "running", now, range_from=T0, range_to=T0 + 5 * S)
    store.upsert_run(first)
    done = RunRecord("r1", "score", "partial", now, now + S, T0, T0 + 5 * S, 10, 2, 1, '{"failed": [["1", "2"]]}')
    store.upsert_run(done)
    store.upsert_run(RunRecord("r2", "train", "succeeded", now + 2 * S, now + 3 * S))
    assert store.read_runs() == [RunRecord("r2", "train", "succeeded", now + 2 * S, now + 3 * S), done]
    assert store.read_runs(kind="score") == [done]
    assert store.read_runs(status="succeeded", limit=1)[0].run_id == "r2"
    assert store.read_runs(kind="score", status="succeeded") == []


def test_a_lease_has_one_holder_until_it_expires_or_is_released(store):
    assert store.try_lease("sidecar", "a", ttl_seconds=60)
    assert not store.try_lease("sidecar", "b", ttl_seconds=60)
    assert store.try_lease("sidecar", "a", ttl_seconds=60)  # renewal
    assert store.try_lease("other", "b", ttl_seconds=60)  # leases are independent
    store.release_lease("sidecar", "b")  # not b's: no effect
    assert not store.try_lease("sidecar", "b", ttl_seconds=60)
    store.release_lease("sidecar", "a")
    assert store.try_lease("sidecar", "b", ttl_seconds=0.05)
    time.sleep(0.1)
    assert store.try_lease("sidecar", "a", ttl_seconds=60)  # b's lease expired


def test_two_connections_racing_for_a_free_lease_one_wins(store):
    from concurrent.futures import ThreadPoolExecutor

    others = [open_store(store.url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(4) as pool:
            won = list(pool.map(lambda s: s[1].try_lease("race", f"owner-{s[0]}", 60), enumerate([store, *others])))
    finally:
        for other in others:
            other.close()
    assert sum(won) == 1


def test_a_prediction_for_a_missing_window_slot_has_no_value(store):
    # Dropout detectors flag window slots without readings: such a row has Value NULL.
    table = pa.table(
        {
            "ts": [T0 + 5 * S, T0 + 10 * S],
            "device": ["1", "1"],
            "tag": ["2", "2"],
            "value": pa.array([1.5, None], pa.float64()),
            "score": [0.1, 7.0],
            "is_anomaly": [False, True],
            "detector": ["robust-window"] * 2,
            "model_version": ["v1"] * 2,
        },
        schema=PREDICTION_SCHEMA,
    )
    store.upsert_predictions(table)
    got = store.read_predictions([("1", "2")], T0, T0 + 60 * S).to_pylist()
    assert [(r["value"], r["is_anomaly"]) for r in got] == [(1.5, False), (None, True)]


def test_window_bounds_are_each_sensors_first_and_newest_window(store):
    store.upsert_windows(windows([(e, "1", "1", 1.0, 1) for e in (5, 10, 40)] + [(20, "2", "1", 1.0, 1), (15, "a", "A", 1.0, 1)]))
    got = store.window_bounds([("1", "1"), ("2", "1"), ("nope", "1"), ("1", "1"), ("a", "a")])
    assert got == {("1", "1"): (T0 + 5 * S, T0 + 40 * S), ("2", "1"): (T0 + 20 * S, T0 + 20 * S)}
    assert store.window_bounds([]) == {}
    # As many sensors as a run plans: one JSON parameter, not an IN list.
    many = [(str(d), "t") for d in range(3000)]
    store.upsert_windows(windows([(5, d, t, 1.0, 1) for d, t in many]))
    assert len(store.window_bounds(many)) == 3000

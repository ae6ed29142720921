"""The store contract: every backend passes these same tests."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pytest

from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch
from sensorflow.records.predictions import INCIDENT_SCHEMA, PREDICTION_SCHEMA
from sensorflow.records.runs import RunRecord
from sensorflow.store import StoreError, open_store
from sensorflow.store.metadata import SCHEMA_VERSION, StoreSettings, StoreSettingsMismatch, check_store_settings
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


def test_a_window_transaction_commits_dead_letters_with_the_windows_and_rolls_both_back(store):
    letters = DeadLetterBatch.from_records(
        [DeadLetter("0", 8, 0, "bad_json", b"{"), DeadLetter("1", 9, 0, "late", None, T0 + S, "1", "2", 3.5)]
    )
    transaction = store.window_transaction()
    transaction.add(windows([(5, "1", "1", 10.0, 2)]))
    transaction.add_dead_letters(letters.table)
    transaction.rollback()
    assert transaction.commit() == 0
    assert (store.summary().windows, store.summary().dead_letters) == (0, {})

    transaction.add_dead_letters(letters.table)  # dead letters alone, then with windows, replayed
    assert transaction.commit() == 0
    transaction.add(windows([(5, "1", "1", 10.0, 2)]))
    transaction.add_dead_letters(letters.table)
    assert transaction.rows == 1 and transaction.commit() == 1
    summary = store.summary()
    assert (summary.windows, summary.dead_letters) == (1, {"bad_json": 1, "late": 1})


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


def incidents(rows, detector="robust-window", updated_at=T0 + 3600 * S):
    """rows: (device, tag, start_s, end_s, peak, flagged, open)"""
    return pa.table(
        {
            "device": [r[0] for r in rows],
            "tag": [r[1] for r in rows],
            "detector": [detector] * len(rows),
            "start": pa.array([T0 + r[2] * S for r in rows], pa.int64()),
            "end": pa.array([T0 + r[3] * S for r in rows], pa.int64()),
            "peak_score": pa.array([float(r[4]) for r in rows], pa.float64()),
            "flagged_windows": pa.array([r[5] for r in rows], pa.int64()),
            "open": pa.array([r[6] for r in rows], pa.bool_()),
            "updated_at": pa.array([updated_at] * len(rows), pa.int64()),
        },
        schema=INCIDENT_SCHEMA,
    )


def _brief(table: pa.Table) -> list[tuple]:
    return [
        (r["device"], r["tag"], r["detector"], (r["start"] - T0) // S, (r["end"] - T0) // S, r["peak_score"],
         r["flagged_windows"], r["open"])
        for r in table.to_pylist()
    ]


def test_incidents_round_trip_newest_and_strongest_first(store):
    written = incidents([("1", "a", 10, 30, 2.5, 3, False), ("2", "a", 40, 40, 9.0, 1, True),
                         ("1", "b", 40, 55, 4.0, 4, True)])
    assert store.replace_incidents("robust-window", {("1", "a"): 0, ("2", "a"): 0, ("1", "b"): 0}, written) == 3
    got = store.read_incidents()
    assert got.schema == INCIDENT_SCHEMA
    assert _brief(got) == [
        ("2", "a", "robust-window", 40, 40, 9.0, 1, True),
        ("1", "b", "robust-window", 40, 55, 4.0, 4, True),
        ("1", "a", "robust-window", 10, 30, 2.5, 3, False),
    ]
    assert got["updated_at"].to_pylist() == [T0 + 3600 * S] * 3


def test_replace_incidents_redoes_each_sensor_from_its_cutoff_and_is_idempotent(store):
    first = incidents([("1", "a", 10, 30, 2.5, 3, False), ("1", "a", 60, 70, 3.0, 2, True),
                       ("2", "a", 60, 65, 5.0, 2, True)])
    cutoffs = {("1", "a"): 0, ("2", "a"): 0}
    store.replace_incidents("robust-window", cutoffs, first)
    store.replace_incidents("other", {("1", "a"): 0}, incidents([("1", "a", 60, 70, 1.5, 1, True)], detector="other"))
    # A rescore from 65 s on: (1, a)'s open incident grew; (2, a)'s one ending at 65 is gone (not found again).
    redo = incidents([("1", "a", 60, 90, 6.0, 5, True)], updated_at=T0 + 7200 * S)
    for _ in range(2):  # the same call twice: the same table
        assert store.replace_incidents("robust-window", {("1", "a"): T0 + 65 * S, ("2", "a"): T0 + 65 * S}, redo) == 1
        assert _brief(store.read_incidents(detector="robust-window")) == [
            ("1", "a", "robust-window", 60, 90, 6.0, 5, True),
            ("1", "a", "robust-window", 10, 30, 2.5, 3, False),  # ended before the cutoff: kept
        ]
    assert _brief(store.read_incidents(detector="other")) == [("1", "a", "other", 60, 70, 1.5, 1, True)]


def test_replace_incidents_is_one_transaction_and_checks_its_rows_first(store):
    store.replace_incidents("robust-window", {("1", "a"): 0}, incidents([("1", "a", 10, 30, 2.5, 3, False)]))
    with pytest.raises(ValueError, match="without a cutoff"):
        store.replace_incidents("robust-window", {("1", "a"): 0}, incidents([("9", "a", 10, 30, 2.5, 3, False)]))
    with pytest.raises(ValueError, match="'other'"):
        store.replace_incidents("robust-window", {("1", "a"): 0}, incidents([("1", "a", 10, 30, 1.0, 1, False)], "other"))
    assert store.read_incidents().num_rows == 1
    # Nothing to write: the cutoffs still delete (a rescore that found no incident).
    assert store.replace_incidents("robust-window", {("1", "a"): T0}, INCIDENT_SCHEMA.empty_table()) == 0
    assert store.read_incidents().num_rows == 0


def test_read_incidents_filters(store):
    store.replace_incidents("robust-window", {("1", "a"): 0, ("2", "a"): 0, ("x", "X"): 0}, incidents(
        [("1", "a", 10, 30, 2.5, 3, False), ("2", "a", 40, 50, 9.0, 2, True), ("x", "X", 20, 45, 1.0, 6, True)]
    ))
    store.replace_incidents("other", {("1", "a"): 0}, incidents([("1", "a", 5, 60, 1.5, 9, True)], detector="other"))

    def keys(table):
        return [(r["device"], r["detector"], (r["start"] - T0) // S) for r in table.to_pylist()]

    assert keys(store.read_incidents(since_ns=T0 + 45 * S)) == [("2", "robust-window", 40), ("1", "other", 5)]  # End > since
    assert keys(store.read_incidents(open_only=True, detector="robust-window")) == [("2", "robust-window", 40), ("x", "robust-window", 20)]
    assert keys(store.read_incidents(sensors=[("1", "a"), ("x", "x")])) == [("1", "robust-window", 10), ("1", "other", 5)]
    assert keys(store.read_incidents(sensors=[("1", "a"), ("1", "a")], detector="other")) == [("1", "other", 5)]  # each once
    assert store.read_incidents(sensors=[]).num_rows == 0
    assert store.read_incidents(detector="nope").num_rows == 0


def test_many_sensors_replace_their_incidents_in_one_call(store):
    # More sensors than SQL Server's 2,100 parameters: cutoffs travel as one JSON parameter.
    sensors = [(str(d), "t") for d in range(3000)]
    rows = incidents([(d, t, 10, 20, 2.0, 2, True) for d, t in sensors])
    assert store.replace_incidents("robust-window", dict.fromkeys(sensors, 0), rows) == 3000
    assert store.replace_incidents("robust-window", dict.fromkeys(sensors, T0 + 15 * S), rows[:10]) == 10
    assert store.read_incidents().num_rows == 10


def scores(rows, detector="robust-window", score=0.5):
    """Prediction rows: (device, tag, end_s, is_anomaly)."""
    return pa.table({
        "ts": pa.array([T0 + r[2] * S for r in rows], pa.int64()), "device": [r[0] for r in rows], "tag": [r[1] for r in rows],
        "value": pa.array([1.0] * len(rows), pa.float64()), "score": pa.array([score] * len(rows), pa.float64()),
        "is_anomaly": [r[3] for r in rows], "detector": [detector] * len(rows), "model_version": ["v1"] * len(rows),
    }, schema=PREDICTION_SCHEMA)


def test_scores_write_predictions_and_incidents_in_one_transaction(store):
    store.replace_incidents("robust-window", {("1", "a"): 0}, incidents([("1", "a", 10, 30, 2.5, 3, False), ("1", "a", 60, 70, 3.0, 2, True)]))
    scored = scores([("1", "a", 65, True), ("1", "a", 70, True), ("1", "a", 75, True)], score=6.0)
    redo = incidents([("1", "a", 60, 75, 6.0, 3, True)])
    for _ in range(2):  # the same call twice: the same tables
        assert store.upsert_scores(scored, "robust-window", {("1", "a"): T0 + 65 * S}, redo) == (3, 1)
        assert store.read_predictions([("1", "a")], T0, T0 + 90 * S)["ts"].to_pylist() == [T0 + e * S for e in (65, 70, 75)]
        assert _brief(store.read_incidents()) == [
            ("1", "a", "robust-window", 60, 75, 6.0, 3, True), ("1", "a", "robust-window", 10, 30, 2.5, 3, False),
        ]
    before = _brief(store.read_incidents())
    # Checked first: a row of a sensor without a cutoff writes neither table.
    with pytest.raises(ValueError, match="without a cutoff"):
        store.upsert_scores(scores([("1", "a", 80, False)]), "robust-window", {("1", "a"): 0}, incidents([("9", "a", 10, 30, 2.5, 3, False)]))
    # A prediction the table refuses (a NULL score) undoes the incidents' delete of the same call.
    with pytest.raises((StoreError, sqlite3.IntegrityError)):
        store.upsert_scores(scores([("1", "a", 80, False)], score=None), "robust-window", {("1", "a"): 0}, INCIDENT_SCHEMA.empty_table())
    assert store.read_predictions([("1", "a")], T0, T0 + 90 * S).num_rows == 3
    assert _brief(store.read_incidents()) == before
    # Predictions alone (no sensor had or has incidents), and nothing at all.
    assert store.upsert_scores(scores([("2", "a", 5, False)]), "robust-window", {}, INCIDENT_SCHEMA.empty_table()) == (1, 0)
    assert store.read_predictions([("2", "a")], T0, T0 + 90 * S).num_rows == 1
    assert store.upsert_scores(PREDICTION_SCHEMA.empty_table(), "robust-window", {}, INCIDENT_SCHEMA.empty_table()) == (0, 0)
    assert _brief(store.read_incidents()) == before


def test_settings_are_recorded_once_unless_replaced(store):
    assert store.read_settings() == {}
    assert store.record_settings({"window_seconds": "5", "time_source": "ts"}) == {"window_seconds": "5", "time_source": "ts"}
    assert store.record_settings({"window_seconds": "10", "x": "1"}) == {"window_seconds": "5", "time_source": "ts", "x": "1"}
    assert store.record_settings({"x": "2"}, replace=True)["x"] == "2"
    assert store.read_settings() == {"window_seconds": "5", "time_source": "ts", "x": "2"}


def test_a_new_store_records_the_first_runs_settings_and_refuses_others(store):
    recorded = check_store_settings(store, StoreSettings(5 * S, "ts"), record=True)
    assert recorded == {"window_seconds": "5", "time_source": "ts", "schema_version": str(SCHEMA_VERSION)}
    check_store_settings(store, StoreSettings(5 * S, "ts"), record=True)  # the same settings again: fine
    check_store_settings(store, StoreSettings(5 * S), record=False)  # the sidecar asks the window length only
    with pytest.raises(StoreSettingsMismatch, match=r"^the store holds 5 s windows, not 10 s \(window_seconds\): use --window-seconds 5"):
        check_store_settings(store, StoreSettings(10 * S, "ts"), record=True)
    with pytest.raises(StoreSettingsMismatch, match="time source ts, not enqueued"):
        check_store_settings(store, StoreSettings(5 * S, "enqueued"), record=True)
    assert store.read_settings()["window_seconds"] == "5"


def test_a_store_made_before_the_settings_table_is_judged_by_its_rows(store):
    # Windows written with no settings recorded: what a store of the previous version holds.
    store.upsert_windows(windows([(e, d, "1", 1.0, 1) for e in (5, 10, 20, 35) for d in ("1", "2")]))
    with pytest.raises(StoreSettingsMismatch, match=r"ending on multiples of 5 s .*not 10 s"):
        check_store_settings(store, StoreSettings(10 * S, "ts"), record=True)
    with pytest.raises(StoreSettingsMismatch, match=r"multiples of 5 s .*not 2.5 s"):
        check_store_settings(store, StoreSettings(S * 5 // 2), record=False)
    assert store.read_settings() == {}  # refused: nothing recorded
    check_store_settings(store, StoreSettings(5 * S), record=False)  # the sidecar records nothing
    assert "window_seconds" not in store.read_settings()
    assert check_store_settings(store, StoreSettings(5 * S, "enqueued"), record=True)["time_source"] == "enqueued"
    assert store.read_settings()["window_seconds"] == "5"


def test_a_store_of_a_newer_schema_is_refused(store):
    store.record_settings({"schema_version": str(SCHEMA_VERSION + 1)})
    with pytest.raises(StoreSettingsMismatch, match="newer than this sensorflow"):
        check_store_settings(store, StoreSettings(5 * S, "ts"), record=True)

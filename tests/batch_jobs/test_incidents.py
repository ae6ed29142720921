"""Incidents: the pure grouping of flagged windows, and incidents kept by score tasks on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.batch_jobs.incidents import _group, find_incidents
from sensorflow.batch_jobs.tasks import TaskResult, TaskSpec, run_task
from sensorflow.store import open_store
from tests.support.builders import T0, W, window_table

DETECTOR = "mad-z"  # scores each window on its own: a range scored whole or in parts gives the same predictions
SENSORS = [("a", "1"), ("a", "2"), ("b", "1")]
N = 400  # windows per sensor, ends T0 + W .. T0 + N*W
TRAIN_TO = T0 + 100 * W
SPIKES = {  # window index (end T0 + (i+1)*W) of each +40 spike
    ("a", "1"): [150, 151, 152, 155, 200, 249, 250, 251, 252, 398, 399],
    ("a", "2"): [160, 164, 170],
    ("b", "1"): [],
}


def end(i: int) -> int:
    return T0 + (i + 1) * W


@pytest.mark.parametrize(
    ("flags", "gap", "newest", "expected"),
    [
        ([], 3, 10, []),
        ([5], 3, 5, [(5, 5, 1, True)]),
        ([5], 3, 9, [(5, 5, 1, False)]),  # 3 unflagged slots after it: still open at 8, closed at 9
        ([5], 3, 8, [(5, 5, 1, True)]),
        ([1, 2, 3], 0, 20, [(1, 3, 3, False)]),
        ([1, 3], 0, 20, [(1, 1, 1, False), (3, 3, 1, False)]),  # gap 0: only adjacent windows join
        ([1, 5], 3, 20, [(1, 5, 2, False)]),  # 3 unflagged slots between: one incident
        ([1, 6], 3, 20, [(1, 1, 1, False), (6, 6, 1, False)]),  # 4 between: two
        ([9, 1, 2], 1, 9, [(1, 2, 2, False), (9, 9, 1, True)]),  # any order in
    ],
)
def test_flags_group_into_incidents(flags, gap, newest, expected):
    ts = T0 + np.array(flags, dtype=np.int64) * W
    score = np.arange(1, len(flags) + 1, dtype=float)
    found = find_incidents(ts, score, W, gap, T0 + newest * W)
    got = [((int(s) - T0) // W, (int(e) - T0) // W, int(n), bool(o))
           for s, e, n, o in zip(found.start, found.end, found.flagged_windows, found.open)]
    assert got == expected


def test_peak_is_the_largest_score_of_the_incident():
    found = find_incidents(T0 + np.array([1, 2, 3, 10]) * W, np.array([1.5, 7.0, 2.0, 3.0]), W, 3, T0 + 10 * W)
    assert found.peak_score.tolist() == [7.0, 3.0]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.lists(st.integers(0, 60), unique=True, max_size=25), st.integers(0, 80)),
                min_size=1, max_size=6), st.integers(0, 4))
def test_many_sensors_group_as_each_sensor_alone(sensors, gap):
    """One grouping of every sensor's flags (what a task computes) gives each sensor's find_incidents."""
    sensors = list({number: (flags, newest) for number, flags, newest in sensors}.items())  # one entry per sensor
    newest = np.array([T0 + n * W for _, (_, n) in sensors], dtype=np.int64)
    owner = np.concatenate([np.full(len(flags), i, np.int64) for i, (_, (flags, _)) in enumerate(sensors)])
    ts = np.concatenate([T0 + np.array(flags, dtype=np.int64) * W for _, (flags, _) in sensors])
    score = np.sin(np.arange(ts.shape[0], dtype=float)) * 10  # any scores, some equal peaks
    got_owner, got = _group(owner, ts, score, newest, W, gap)
    for i in range(len(sensors)):
        alone = find_incidents(ts[owner == i], score[owner == i], W, gap, int(newest[i]))
        mine = got_owner == i
        for field in ("start", "end", "peak_score", "flagged_windows", "open"):
            assert np.array_equal(getattr(got, field)[mine], getattr(alone, field)), field
    assert np.all(np.diff(got_owner) >= 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_store(request, tmp_path, monkeypatch):
    """A factory of empty stores of one backend, each filled with the same windows; returns (spec store ref, URL)."""
    made = []

    def make() -> tuple[str, str]:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'sf-{len(made)}.db'}"
            ref = url
        else:
            server = request.getfixturevalue("postgres_server")
            url = f"postgresql+odbc:{server.new_database()}"
            ref = f"env:SF_TEST_INCIDENTS_{len(made)}"
            monkeypatch.setenv(ref.removeprefix("env:"), url)
        with open_store(url) as store:
            store.create_schema()
            store.upsert_windows(_windows())
        made.append(url)
        return ref, url

    return make


def _windows() -> pa.Table:
    rng = np.random.default_rng(3)
    ends, devices, tags, values = [], [], [], []
    for device, tag in SENSORS:
        value = rng.normal(50.0, 1.0, N)
        value[SPIKES[(device, tag)]] += 40.0
        keep = np.ones(N, bool)
        keep[[300, 301]] = False  # two missing slots: no rows, nothing flagged
        ends.append(end(0) + np.arange(N, dtype=np.int64)[keep] * W)
        values.append(value[keep])
        devices += [device] * int(keep.sum())
        tags += [tag] * int(keep.sum())
    return window_table(np.concatenate(ends), devices, tags, np.concatenate(values), 5)


def _run(ref: str, models: str, kind: str, ts_from: int, ts_to: int, number: int = 0, **kw) -> int:
    """Run one task on SENSORS; the incidents it opened."""
    spec = TaskSpec(f"{kind}-{number}", "run-1", kind, tuple(SENSORS), ts_from, ts_to, DETECTOR, ref, models, **kw)
    result = run_task(spec)
    assert result.error == "" and all(o.status in ("ok", "skipped") for o in result.outcomes), result
    assert TaskResult.from_json(result.to_json()) == result
    return result.incidents_opened


def _incidents(url: str) -> list[tuple]:
    """The Incidents table without UpdatedAt, by key."""
    with open_store(url) as store:
        table = store.read_incidents()
    rows = [tuple(r[c] for c in ("device", "tag", "detector", "start", "end", "peak_score", "flagged_windows", "open"))
            for r in table.to_pylist()]
    return sorted(rows)


def test_incidents_are_the_same_however_the_range_is_scored(fresh_store, tmp_path):
    """Once, twice, in two halves split inside an incident, or with an overlapping rescore: the same Incidents rows."""
    models = str(tmp_path / "models")
    whole_ref, whole = fresh_store()
    _run(whole_ref, models, "train", T0, TRAIN_TO)  # models for every variant (one model store)
    assert _run(whole_ref, models, "score", TRAIN_TO, end(N - 1)) == 6
    expected = _incidents(whole)

    peaks = {}
    with open_store(whole) as store:
        predictions = store.read_predictions(SENSORS, T0, end(N - 1))
    for row in predictions.to_pylist():
        peaks[(row["device"], row["tag"], row["ts"])] = row["score"]

    def incident(device, tag, first, last, n, is_open=False):
        peak = max(peaks[(device, tag, end(i))] for i in SPIKES[(device, tag)] if first <= i <= last)
        return (device, tag, DETECTOR, end(first), end(last), peak, n, is_open)

    assert expected == sorted([
        incident("a", "1", 150, 155, 4), incident("a", "1", 200, 200, 1), incident("a", "1", 249, 252, 4),
        incident("a", "1", 398, 399, 2, True), incident("a", "2", 160, 164, 2), incident("a", "2", 170, 170, 1),
    ])

    assert _run(whole_ref, models, "score", TRAIN_TO, end(N - 1), number=1) == 0  # a rescore of the same windows
    assert _incidents(whole) == expected

    halves_ref, halves = fresh_store()
    assert _run(halves_ref, models, "score", TRAIN_TO, end(250)) == 5  # ends inside the incident 249..252: open there
    middle = _incidents(halves)
    peak = max(peaks[("a", "1", end(249))], peaks[("a", "1", end(250))])
    assert ("a", "1", DETECTOR, end(249), end(250), peak, 2, True) in middle
    assert _run(halves_ref, models, "score", end(250), end(N - 1), number=1) == 1  # continues it; opens 398..399
    assert _incidents(halves) == expected

    overlap_ref, overlap = fresh_store()
    _run(overlap_ref, models, "score", TRAIN_TO, end(251))
    _run(overlap_ref, models, "score", end(240), end(N - 1), number=1)  # the sidecar's lookback: rescore, then go on
    assert _incidents(overlap) == expected

    backwards_ref, backwards = fresh_store()
    _run(backwards_ref, models, "score", end(250), end(N - 1))  # the later half first
    _run(backwards_ref, models, "score", TRAIN_TO, end(250), number=1)
    assert _incidents(backwards) == expected


def test_a_rescore_that_flags_less_shrinks_and_removes_incidents(fresh_store, tmp_path):
    """Windows replaced (a late correction) and rescored from inside an incident: it shrinks; one fully unflagged goes."""
    models = str(tmp_path / "models")
    ref, url = fresh_store()
    _run(ref, models, "train", T0, TRAIN_TO)
    _run(ref, models, "score", TRAIN_TO, end(N - 1))
    assert len(_incidents(url)) == 6
    with open_store(url) as store:
        store.upsert_windows(window_table([end(251), end(252), end(398), end(399)], "a", "1", 50.0, 5))
    _run(ref, models, "score", end(250), end(N - 1), number=1)  # starts inside 249..252
    a1 = [(r[3], r[4], r[6], r[7]) for r in _incidents(url) if r[:2] == ("a", "1")]
    assert a1 == [(end(150), end(155), 4, False), (end(200), end(200), 1, False), (end(249), end(250), 2, False)]


def test_the_gap_setting_joins_or_splits(fresh_store, tmp_path):
    models = str(tmp_path / "models")
    ref, url = fresh_store()
    _run(ref, models, "train", T0, TRAIN_TO)
    _run(ref, models, "score", TRAIN_TO, end(N - 1), incident_gap_windows=0)
    a2 = [(r[3], r[4], r[6]) for r in _incidents(url) if r[:2] == ("a", "2")]
    assert a2 == [(end(160), end(160), 1), (end(164), end(164), 1), (end(170), end(170), 1)]
    _run(ref, models, "score", TRAIN_TO, end(N - 1), number=1, incident_gap_windows=5)
    a2 = [(r[3], r[4], r[6]) for r in _incidents(url) if r[:2] == ("a", "2")]
    assert a2 == [(end(160), end(170), 3)]


def test_train_then_score_writes_incidents_of_the_training_range(fresh_store, tmp_path):
    ref, url = fresh_store()
    _run(ref, str(tmp_path / "models"), "train", TRAIN_TO, end(N - 1), then_score=True)
    assert [(r[0], r[1], r[3]) for r in _incidents(url)][:2] == [("a", "1", end(150)), ("a", "1", end(200))]


def test_predictions_stand_when_the_incidents_cannot_be_read(tmp_path, monkeypatch):
    """The incidents are planned before the write: if that fails, the predictions are still written and every
    sensor fails with the reason (the next scoring mends the incidents)."""
    from sensorflow.store.sqlite import SqliteStore

    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows())
    models = str(tmp_path / "models")
    _run(url, models, "train", T0, TRAIN_TO)

    def broken(self, *args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(SqliteStore, "read_incidents", broken)
    spec = TaskSpec("score-0", "run-1", "score", tuple(SENSORS), TRAIN_TO, end(N - 1), DETECTOR, url, models)
    result = run_task(spec)
    assert {o.reason for o in result.outcomes} == {"incident write failed: OSError: disk gone"}
    assert result.predictions == 3 * (N - 100 - 2)  # every window of the range but the two missing slots
    monkeypatch.undo()
    with open_store(url) as store:
        assert store.read_predictions(SENSORS, TRAIN_TO, end(N - 1)).num_rows == result.predictions
        assert store.read_incidents().num_rows == 0

"""The sidecar: planning (pure), and runs on a real SQLite store with the local process pool."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR, get_detector, iter_sensor_windows
from sensorflow.batch_jobs.executors import LocalPoolExecutor
from sensorflow.batch_jobs.model_store import ModelCatalog, ModelStoreError, open_model_store
from sensorflow.batch_jobs.executors import Executor, report
from sensorflow.batch_jobs.schedule import (
    Cron,
    Every,
    FailedSensor,
    ModelContext,
    Policy,
    Work,
    chunk_tasks,
    newest_bound,
    score_work,
    train_due,
    train_work,
    warned_json,
    without_model,
    written_since,
)
from sensorflow.batch_jobs.sidecar import Sidecar, SidecarConfig, serve
from sensorflow.batch_jobs.tasks import SensorOutcome, TaskResult, run_task
from sensorflow.records.runs import RunRecord
from sensorflow.store import open_store
from tests.conftest import REPO
from tests.support.builders import T0, S, W, add_windows
from tests.support.models import latest_name, replace_model

POLICY = Policy(safety_margin_ns=60 * S, score_lookback_ns=60 * S, train_span_ns=3600 * S,
                retrain_every_ns=3600 * S, chunk_size=2)
SENSORS = [("1", "1"), ("1", "2"), ("2", "1")]
DETECTOR = "robust-window"  # named: the tests below count windows against its min_windows (12)


def run(range_to: int | None, failed: list[FailedSensor] = (), started: int = 10**18) -> RunRecord:
    detail = json.dumps({"failed": [f.__dict__ for f in failed]})
    return RunRecord("r", "score", "succeeded", started, range_to=range_to, detail=detail)


# Planning ----------------------------------------------------------------------------------------


def test_first_score_run_reads_all_history_then_from_the_last_newest_window_minus_lookback():
    assert score_work([("a", "1")], None, [], POLICY) == [Work((("a", "1"),), None, None)]
    assert score_work([("a", "1")], run(T0), [], POLICY) == [Work((("a", "1"),), T0 - 60 * S, None)]


def test_failed_sensors_are_retried_from_their_old_start_beside_new_work():
    failed = [FailedSensor("b", "1", T0 - 3600 * S, None, "boom"), FailedSensor("a", "1", T0 - 7200 * S, None, "x")]
    work = score_work([("a", "1"), ("c", "1")], run(T0, failed), failed, POLICY)
    assert work == [
        Work((("a", "1"),), T0 - 7200 * S, None),  # its retry starts earlier than the new work
        Work((("b", "1"),), T0 - 3600 * S, None),  # no new windows, still retried
        Work((("c", "1"),), T0 - 60 * S, None),
    ]


@pytest.mark.parametrize(
    ("newest", "last_train_to", "due"),
    [
        (None, None, False),  # no data yet
        (T0, None, True),  # never trained
        (T0 + 3599 * S, T0, False),
        (T0 + 3600 * S, T0, True),  # an hour of WINDOW time later, whatever the wall clock says
    ],
)
def test_training_is_due_by_window_time(newest, last_train_to, due):
    last = None if last_train_to is None else replace(run(last_train_to), kind="train")
    assert train_due(newest, last, POLICY) is due


def test_train_work_is_the_span_before_the_newest_window_plus_retries():
    failed = [FailedSensor("z", "9", T0 - 100 * S, T0 - 50 * S, "x")]
    assert train_work([("a", "1")], T0, failed, POLICY) == [
        Work((("a", "1"),), T0 - 3600 * S, T0),
        Work((("z", "9"),), T0 - 100 * S, T0 - 50 * S),
    ]


def test_chunks_hold_at_most_chunk_size_sensors():
    work = [Work(tuple((str(i), "1") for i in range(5)), None, None), Work((("x", "1"),), T0, None)]
    specs = chunk_tasks("run-1", "score", work, POLICY, detector="d", store="sqlite:///x", model_store="/m")
    assert [len(s.sensors) for s in specs] == [2, 2, 1, 1]
    assert len({s.task_id for s in specs}) == 4 and specs[-1].ts_from == T0


def test_chunks_shrink_so_every_worker_gets_a_task():
    sensors = tuple((str(i), "1") for i in range(7))
    policy = replace(POLICY, chunk_size=500)
    fields = {"detector": "d", "store": "sqlite:///x", "model_store": "/m"}
    assert [len(s.sensors) for s in chunk_tasks("r", "train", [Work(sensors, None, None)], policy, 1, **fields)] == [7]
    assert [len(s.sensors) for s in chunk_tasks("r", "train", [Work(sensors, None, None)], policy, 2, **fields)] == [4, 3]
    assert [len(s.sensors) for s in chunk_tasks("r", "train", [Work(sensors, None, None)], policy, 16, **fields)] == [1] * 7
    # The chunk size stays the upper bound.
    assert [len(s.sensors) for s in chunk_tasks("r", "train", [Work(sensors, None, None)], POLICY, 2, **fields)] == [2, 2, 2, 1]


def test_score_work_plans_only_sensors_with_a_model():
    failed = [FailedSensor("b", "1", T0 - 3600 * S, None, "boom"), FailedSensor("z", "1", T0 - 3600 * S, None, "gone")]
    work = score_work([("a", "1"), ("c", "1")], run(T0, failed), failed, POLICY, have_model={("a", "1"), ("b", "1")})
    assert work == [Work((("a", "1"),), T0 - 60 * S, None), Work((("b", "1"),), T0 - 3600 * S, None)]
    assert score_work([("a", "1")], None, [], POLICY, have_model=set()) == []


def test_what_needs_a_model_and_where_the_windows_end():
    assert without_model([("b", "1"), ("a", "1"), ("b", "1"), ("c", "1")], {("c", "1")}) == [("a", "1"), ("b", "1")]
    assert newest_bound({("a", "1"): (T0, T0 + 5 * S), ("b", "1"): (T0 - S, T0 + 9 * S)}) == T0 + 9 * S
    assert newest_bound({}) is None


def test_a_new_detector_or_model_store_looks_at_every_sensor_once():
    context = ModelContext("robust-window", "/models")
    trained = RunRecord("t", "train", "succeeded", T0, detail=json.dumps({"due": True, **context.detail()}))
    assert context.trained_by(trained)
    assert not context.trained_by(None)
    assert not ModelContext("seed-ocsvm", "/models").trained_by(trained)
    assert not ModelContext("robust-window", "azblob://models").trained_by(trained)
    assert not context.trained_by(replace(trained, detail=json.dumps({"due": True})))  # a run from before contexts


def test_warned_sensors_are_counted_and_listed_up_to_a_cap():
    outcomes = tuple(SensorOutcome(str(i), "1", "ok", warning="flat" if i % 2 else "") for i in range(7))
    results = [TaskResult("t", "r", "train", outcomes, 1.0)]
    assert warned_json(results, listed=2) == {
        "count": 3, "sensors": [{"device": "1", "tag": "1", "warning": "flat"}, {"device": "3", "tag": "1", "warning": "flat"}],
    }
    assert warned_json([]) == {"count": 0, "sensors": []}


def test_written_since_is_the_last_start_minus_the_safety_margin():
    assert written_since(None, POLICY) == 0
    assert written_since(run(T0, started=T0 + 3600 * S), POLICY) == T0 + 3540 * S


def test_schedules():
    now = datetime(2026, 1, 1, 12, 3, tzinfo=UTC)
    assert Every(300).next_after(now) == datetime(2026, 1, 1, 12, 8, tzinfo=UTC)
    assert Cron("10 * * * *").next_after(now) == datetime(2026, 1, 1, 12, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="bad cron"):
        Cron("every hour")


# Runs against a real store and process pool ------------------------------------------------------


@pytest.fixture(scope="module")
def executor():
    with LocalPoolExecutor(2) as pool:
        yield pool


@pytest.fixture
def world(tmp_path, executor):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    store = open_store(url)
    store.create_schema()
    # No safety margin: each run sees exactly the sensors written since the previous run started.
    policy = replace(POLICY, safety_margin_ns=0)
    config = SidecarConfig(url, str(tmp_path / "models"), DEFAULT_DETECTOR, policy, lease_seconds=60)
    yield store, Sidecar(config, store, executor, progress=False), config
    store.close()


def predictions(store, sensors=SENSORS):
    return {(p["device"], p["tag"], p["ts"]) for p in store.read_predictions(sensors, 0, T0 + 10**6 * S).to_pylist()}


def test_first_run_trains_then_the_next_scores_only_what_was_written(world):
    store, sidecar, _ = world
    add_windows(store, SENSORS, T0, 120)
    first = sidecar.run_once()
    assert first.score.specs == () and first.score.run.range_to == T0 + 120 * W  # no models: nothing to score
    assert first.train.run.status == "succeeded"
    assert (first.train.run.range_from, first.train.run.range_to) == (T0 + 120 * W - 3600 * S, T0 + 120 * W)
    assert first.train.count("ok") == 3 and first.train.run.tasks == 2  # chunks of 2

    add_windows(store, SENSORS[:1], T0 + 120 * W, 24, seed=1)  # two more minutes of one sensor
    second = sidecar.run_once()
    assert second.train is None  # two minutes of window time: no retraining yet
    assert second.score.run.sensors == 1 and second.score.run.status == "succeeded"
    assert second.score.run.range_from == T0 + 120 * W - 60 * S  # the lookback
    scored = {ts for _, _, ts in predictions(store)}
    assert min(scored) == T0 + 121 * W - 60 * S and max(scored) == T0 + 144 * W

    # A window written late (its time was already covered by the last run) but inside the lookback.
    add_windows(store, [("2", "1")], T0 + 134 * W, 1, seed=2)
    third = sidecar.run_once()
    assert third.score.run.sensors == 1 and ("2", "1", T0 + 135 * W) in predictions(store)

    runs = store.read_runs(limit=10)
    assert sorted((r.kind, r.status) for r in runs) == [("score", "succeeded")] * 3 + [("train", "succeeded")]


def test_retraining_follows_window_time_not_wall_time(world):
    store, sidecar, _ = world
    add_windows(store, SENSORS, T0, 120)
    sidecar.run_once()
    add_windows(store, SENSORS, T0 + 3600 * S, 120)  # an hour of window time later (written seconds later)
    report = sidecar.run_once()
    assert report.train is not None and report.train.run.range_to == T0 + 3600 * S + 120 * W
    assert len(ModelCatalog(open_model_store(sidecar.config.model_store)).versions(DEFAULT_DETECTOR, "1", "1")) == 2


def test_a_failed_sensor_is_retried_next_run_without_holding_back_the_others(world):
    store, sidecar, config = world
    add_windows(store, SENSORS, T0, 120)
    sidecar.run_once()  # models for all
    models = open_model_store(config.model_store)
    good = replace_model(models, DEFAULT_DETECTOR, ("1", "2"), b"broken")
    add_windows(store, SENSORS, T0 + 120 * W, 12, seed=3)
    partial = sidecar.run_once().score
    assert partial.run.status == "partial" and partial.run.failures == 1
    (failed,) = json.loads(partial.run.detail)["failed"]
    assert (failed["device"], failed["tag"]) == ("1", "2") and "ModelFormatError" in failed["reason"]
    new = {(d, t, ts) for d, t, ts in predictions(store) if ts > T0 + 120 * W}
    assert {(d, t) for d, t, _ in new} == {("1", "1"), ("2", "1")}  # the others were not held back

    models.put_bytes(latest_name(DEFAULT_DETECTOR, ("1", "2")), good)
    retry = sidecar.run_once().score  # nothing new was written: only the retry runs
    assert retry.run.status == "succeeded" and retry.run.sensors == 1
    assert {ts for d, t, ts in predictions(store) if (d, t) == ("1", "2") and ts > T0 + 120 * W} == {
        T0 + (120 + i) * W for i in range(1, 13)
    }


def test_a_sidecar_without_the_lease_does_nothing(world):
    store, sidecar, config = world
    add_windows(store, SENSORS, T0, 120)
    assert store.try_lease(config.lease_name, "someone-else", 60)
    report = sidecar.run_once()
    assert not report.leased and store.read_runs() == []


def test_two_sidecars_started_together_do_not_both_run(tmp_path, processes):
    db = tmp_path / "sf.db"
    with open_store(f"sqlite:///{db}") as store:
        store.create_schema()
        add_windows(store, [(str(d), str(t)) for d in range(20) for t in range(5)], T0, 240)
    command = [sys.executable, "-m", "sensorflow", "sidecar", "--once", "--store", f"sqlite:///{db}",
               "--model-store", str(tmp_path / "models"), "--task-processes", "1"]
    sidecars = [processes.start(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in sidecars]
    assert [p.returncode for p in sidecars] == [0, 0], outputs
    said = sorted("another sidecar holds the lease" in out for out, _ in outputs)
    assert said == [False, True], outputs
    with open_store(f"sqlite:///{db}") as store:
        assert sorted(r.kind for r in store.read_runs()) == ["score", "train"]


def test_sidecar_command_reports_and_refuses_bad_settings(tmp_path):
    base = [sys.executable, "-m", "sensorflow", "sidecar", "--once", "--model-store", str(tmp_path / "m")]
    bad = subprocess.run(base + ["--store", "mysql://x"], cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "store must start with" in bad.stderr
    bad = subprocess.run(base + ["--detector", "nope"], cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "unknown detector 'nope'" in bad.stderr
    db = Path(tmp_path / "sf.db")
    ok = subprocess.run(base + ["--store", f"sqlite:///{db}"], cwd=REPO, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "score run" in ok.stdout and "0 sensors" in ok.stdout


def test_a_run_whose_tasks_all_fail_does_not_move_the_watermark(tmp_path, executor):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the model store should be")
    with open_store(url) as store:
        store.create_schema()
        add_windows(store, SENSORS, T0, 120)
        config = SidecarConfig(url, str(blocked), DEFAULT_DETECTOR, replace(POLICY, safety_margin_ns=0))
        with pytest.raises(ModelStoreError, match="cannot create model store directory"):
            Sidecar(config, store, executor, progress=False).run_once()
        (failed,) = store.read_runs()
        assert failed.status == "failed" and "cannot create model store" in json.loads(failed.detail)["error"]
        # Fixed: the next run starts from the last SUCCESSFUL run (none), so nothing written before is lost.
        fixed = Sidecar(replace(config, model_store=str(tmp_path / "models")), store, executor, progress=False)
        report = fixed.run_once()
        assert report.score.run.range_to == T0 + 120 * W and report.train.count("ok") == 3
        add_windows(store, SENSORS, T0 + 120 * W, 12, seed=4)
        assert fixed.run_once().score.count("ok") == 3


def test_serve_runs_on_its_schedule_until_stopped(world):
    store, sidecar, _ = world
    add_windows(store, SENSORS, T0, 120)
    stop, reports = threading.Event(), []

    def collect(report):
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    serve(sidecar, Every(0.05), stop, collect)
    assert [r.leased for r in reports] == [True, True]
    assert reports[0].train is not None and reports[1].train is None  # trained once, by window time
    assert len(store.read_runs(kind="score")) == 2


def test_the_sidecar_and_its_tasks_run_on_postgresql_over_odbc(postgres_odbc, tmp_path):
    """Only the Store interface is used, so a server store works as SQLite does; specs name it as env:NAME."""
    url = f"postgresql+odbc:{postgres_odbc}"
    with open_store(url) as store, LocalPoolExecutor(1, environ={"SF_TEST_PG_STORE": url}) as pool:
        store.create_schema()
        add_windows(store, SENSORS, T0, 120)
        config = SidecarConfig("env:SF_TEST_PG_STORE", str(tmp_path / "models"), DEFAULT_DETECTOR,
                               replace(POLICY, safety_margin_ns=0))
        sidecar = Sidecar(config, store, pool, progress=False)
        first = sidecar.run_once()
        assert first.train.count("ok") == 3
        add_windows(store, SENSORS, T0 + 120 * W, 12, seed=5)
        second = sidecar.run_once().score
        assert second.run.status == "succeeded" and second.count("ok") == 3
        assert {ts for _, _, ts in predictions(store)} >= {T0 + (120 + i) * W for i in range(1, 13)}
        spec = json.loads(open_model_store(config.model_store).get_bytes(second.specs[0].spec_name))
        assert spec["store"] == "env:SF_TEST_PG_STORE" and "Uid=" not in json.dumps(spec)


# What needs a model is trained at the next run (SQLite and PostgreSQL) ----------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_world(request, tmp_path, executor):
    """A store (SQLite or PostgreSQL over ODBC), a sidecar on it, and a way to make another sidecar config."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sf.db'}"
        ref, pool, own_pool = url, executor, False
    else:
        url = f"postgresql+odbc:{request.getfixturevalue('postgres_odbc')}"
        ref, pool, own_pool = "env:SF_TEST_PG_STORE", LocalPoolExecutor(1, environ={"SF_TEST_PG_STORE": url}), True
    store = open_store(url)
    store.create_schema()
    config = SidecarConfig(ref, str(tmp_path / "models"), DETECTOR, replace(POLICY, safety_margin_ns=0), lease_seconds=60)
    yield store, Sidecar(config, store, pool, progress=False)
    store.close()
    if own_pool:
        pool.close()


def scored_sensors(phase) -> set[tuple[str, str]]:
    return {sensor for spec in phase.specs for sensor in spec.sensors}


def test_a_fresh_sidecar_trains_every_sensor_at_its_first_run_and_scores_them_at_the_next(any_world):
    store, sidecar = any_world
    add_windows(store, SENSORS, T0, 120)
    add_windows(store, [("few", "1")], T0 + 115 * W, 5)  # too few windows for a model yet
    first = sidecar.run_once()
    assert first.score.specs == ()  # no sensor has a model: none is planned for scoring
    assert json.loads(first.score.run.detail)["without_model"] == 4
    assert {o.device + "/" + o.tag: o.status for r in first.train.results for o in r.outcomes} == {
        "1/1": "ok", "1/2": "ok", "2/1": "ok", "few/1": "skipped",
    }
    assert first.train.run.status == "succeeded" and first.train.run.failures == 0  # skipped is not failed
    assert first.train.run.range_to == T0 + 120 * W

    add_windows(store, SENSORS + [("few", "1")], T0 + 120 * W, 12, seed=1)  # a minute more, live
    second = sidecar.run_once()
    assert scored_sensors(second.score) == set(SENSORS) and second.score.count("ok") == 3
    assert {ts for _, _, ts in predictions(store)} == {T0 + (120 + i) * W for i in range(-11, 13)}  # the lookback on
    # "few" now has 17 windows: trained at this run, retraining of the others not due.
    assert second.train is not None and not json.loads(second.train.run.detail)["due"]
    assert [(o.device, o.status) for r in second.train.results for o in r.outcomes] == [("few", "ok")]
    assert second.train.run.range_to == T0 + 120 * W  # the retraining clock did not move

    add_windows(store, SENSORS + [("few", "1")], T0 + 132 * W, 12, seed=2)
    third = sidecar.run_once()
    assert scored_sensors(third.score) == set(SENSORS) | {("few", "1")} and third.score.count("ok") == 4
    assert third.train is None


def test_a_sidecar_started_before_enough_windows_trains_once_they_arrive(any_world):
    """Every sensor had too few windows at the first run: no model, so no score moved the watermark, and
    each later run trained on the first run's span again, skipping every sensor for ever."""
    store, sidecar = any_world
    add_windows(store, SENSORS, T0, 5)
    first = sidecar.run_once()
    assert {o.status for r in first.train.results for o in r.outcomes} == {"skipped"}
    add_windows(store, SENSORS, T0 + 5 * W, 120, seed=1)
    second = sidecar.run_once()
    assert {(o.device, o.tag): o.status for r in second.train.results for o in r.outcomes} == dict.fromkeys(SENSORS, "ok")
    assert second.train.specs[0].ts_to == T0 + 125 * W
    add_windows(store, SENSORS, T0 + 125 * W, 12, seed=2)
    third = sidecar.run_once()
    assert scored_sensors(third.score) == set(SENSORS) and third.score.count("ok") == 3


def test_a_new_sensor_gets_a_model_at_the_next_run_without_waiting_for_retraining(any_world):
    store, sidecar = any_world
    add_windows(store, SENSORS, T0, 120)
    sidecar.run_once()
    add_windows(store, SENSORS, T0 + 120 * W, 12, seed=1)
    add_windows(store, [("new", "1")], T0 + 108 * W, 24, seed=2)  # appeared two minutes ago
    second = sidecar.run_once()
    assert ("new", "1") not in scored_sensors(second.score) and second.score.count("ok") == 3
    assert second.score.count("skipped") == 0
    assert [(o.device, o.status) for r in second.train.results for o in r.outcomes] == [("new", "ok")]
    assert second.train.specs[0].ts_to == T0 + 132 * W  # the usual span before the newest window
    (meta,) = ModelCatalog(open_model_store(sidecar.config.model_store)).latest_metadata(DETECTOR, [("new", "1")])
    assert meta.trained_from == T0 + 108 * W  # from its first window, not from the span's start

    add_windows(store, SENSORS + [("new", "1")], T0 + 132 * W, 12, seed=3)
    third = sidecar.run_once()
    assert ("new", "1") in scored_sensors(third.score) and third.score.count("ok") == 4 and third.train is None


def test_switching_the_detector_trains_models_for_it_at_once(any_world):
    store, sidecar = any_world
    add_windows(store, SENSORS, T0, 120)
    sidecar.run_once()  # robust-window models
    # All data is in (a replay that finished): nothing is written before the switch.
    switched = Sidecar(replace(sidecar.config, detector="seed-ocsvm"), store, sidecar.executor, progress=False)
    first = switched.run_once()
    assert first.score.specs == ()  # no seed-ocsvm model yet
    assert first.train.count("ok") == 3 and {s.detector for s in first.train.specs} == {"seed-ocsvm"}
    assert ModelCatalog(open_model_store(sidecar.config.model_store)).with_models("seed-ocsvm", SENSORS) == set(SENSORS)
    add_windows(store, SENSORS, T0 + 120 * W, 12, seed=1)
    second = switched.run_once()
    assert second.score.count("ok") == 3 and {s.detector for s in second.score.specs} == {"seed-ocsvm"}
    assert second.train is None


class _InProcess(Executor):
    """Runs each task in this process (so a test's monkeypatch reaches the models)."""

    def run(self, specs, on_done=None):
        return report([run_task(spec) for spec in specs], on_done)


def test_the_run_detail_lists_sensors_whose_models_warned(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        sensors = [(str(d), "1") for d in range(60)]
        add_windows(store, sensors, T0, 24)
        model_class = type(get_detector(DETECTOR).fit(
            next(iter_sensor_windows(store.read_windows(sensors[:1], T0, T0 + 24 * W), T0, T0 + 24 * W, W))))
        monkeypatch.setattr(model_class, "warnings", lambda self: ["only 24 windows"], raising=False)
        config = SidecarConfig(url, str(tmp_path / "models"), DETECTOR, replace(POLICY, chunk_size=500))
        train = Sidecar(config, store, _InProcess(), progress=False).run_once().train
        warned = json.loads(train.run.detail)["warned"]
        assert warned["count"] == 60 and len(warned["sensors"]) == 50
        assert warned["sensors"][0] == {"device": "0", "tag": "1", "warning": "only 24 windows"}

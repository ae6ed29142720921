"""Train and score tasks against a real SQLite store and model directory."""

from __future__ import annotations

import dataclasses
import json
import uuid

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.batch_jobs.detectors import (
    DEFAULT_DETECTOR,
    get_detector,
    iter_sensor_windows,
    load_model,
)
from sensorflow.batch_jobs.model_store import ModelCatalog, open_model_store
from sensorflow.batch_jobs.tasks import TaskError, TaskResult, TaskSpec, run_task, run_task_at
from sensorflow.cli import main
from sensorflow.records.runs import RunKind
from sensorflow.records.windows import WINDOW_SCHEMA
from sensorflow.store import open_store
from sensorflow.store.sqlite import SqliteStore
from tests.support.builders import T0, W, add_windows
from tests.support.models import latest_model_bytes, replace_model

SENSORS = [("1", "1"), ("1", "2"), ("2", "1")]
DETECTOR = get_detector(DEFAULT_DETECTOR)


@pytest.fixture
def env(tmp_path):
    """A store with 3 sensors x 120 windows (a spike at window 100); sensor 3/1 has 1 window in the training range."""
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        add_windows(store, SENSORS, T0, 120, spike_at=100)
        add_windows(store, [("3", "1")], T0, 1)  # one window to train on
        add_windows(store, [("3", "1")], T0 + 80 * W, 10)
    return url, str(tmp_path / "models")


def spec(env, kind, sensors=SENSORS, ts_from=T0, ts_to=T0 + 80 * W, detector=DEFAULT_DETECTOR, **kw) -> TaskSpec:
    return TaskSpec(f"{kind}-1", "run-1", kind, tuple(sensors), ts_from, ts_to, detector, env[0], env[1], **kw)


def test_spec_json_round_trip_and_iso_times(env):
    s = spec(env, "score", ts_to=None, seed_csv=True)
    assert TaskSpec.from_json(s.to_json()) == s
    raw = json.loads(s.to_json())
    raw["ts_from"] = "2026-01-01T00:00:00Z"
    assert TaskSpec.from_json(json.dumps(raw)).ts_from == T0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "predict"}, "kind must be train or score"),
        ({"sensors": []}, "at least one sensor"),
        ({"store": "postgresql+odbc:Driver=x;PWD=secret"}, "environment variable"),
        ({"ts_from": "yesterday"}, "ts_from must be"),
        ({"ts_from": T0 + 10, "ts_to": T0}, "empty range"),
        ({"colour": "blue"}, "unknown task spec field"),
        ({"run_id": "a/b"}, "run_id must be"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(env, change, message):
    raw = {**json.loads(spec(env, "train").to_json()), **change}
    with pytest.raises(TaskError, match=message):
        TaskSpec.from_json(json.dumps(raw))


def test_train_then_score_matches_the_detector_in_memory(env, monkeypatch):
    reads = []
    original = SqliteStore.read_windows
    monkeypatch.setattr(SqliteStore, "read_windows", lambda self, *a: reads.append(a) or original(self, *a))
    sensors = SENSORS + [("3", "1"), ("9", "9")]
    trained = run_task(spec(env, "train", sensors))
    assert [(o.status, o.reason) for o in trained.outcomes] == [("ok", "")] * 3 + [
        ("skipped", f"too few windows (1 < {DETECTOR.min_windows})"),
        ("skipped", "no windows in range"),
    ]
    assert len(reads) == 1  # one query for the whole chunk
    scored = run_task(spec(env, "score", sensors, ts_from=T0 + 80 * W, ts_to=None))
    assert len(reads) == 2
    assert [o.status for o in scored.outcomes] == ["ok"] * 3 + ["skipped", "skipped"]
    assert scored.outcomes[3].reason == "no model yet"
    assert scored.predictions == 3 * 40 and scored.outcomes[0].last_ts == T0 + 120 * W

    with open_store(env[0]) as store:
        train_rows = store.read_windows(SENSORS, T0, T0 + 80 * W)
        score_rows = store.read_windows(SENSORS, T0 + 80 * W, T0 + 120 * W)
        predictions = store.read_predictions(SENSORS, T0, T0 + 200 * W).to_pylist()
    stored = {(p["device"], p["tag"], p["ts"]): p for p in predictions}
    assert len(stored) == 120
    catalog = ModelCatalog(open_model_store(env[1]))
    pairs = zip(iter_sensor_windows(train_rows, T0, T0 + 80 * W, W),
                iter_sensor_windows(score_rows, T0 + 80 * W, T0 + 120 * W, W))
    for train_part, score_part in pairs:
        sensor = (score_part.device, score_part.tag)
        expected = DETECTOR.fit(train_part).score(score_part)
        got = [stored[(*sensor, int(ts))] for ts in expected.ts]
        np.testing.assert_allclose([g["score"] for g in got], expected.score)
        assert [g["is_anomaly"] for g in got] == expected.is_anomaly.tolist()
        assert got[100 - 80]["is_anomaly"], "the +40 spike is flagged"
        (latest,) = catalog.load_latest(DEFAULT_DETECTOR, [sensor])
        assert latest.metadata.trained_from == T0 and latest.metadata.trained_to == T0 + 80 * W
        assert latest.metadata.windows == 80 and got[0]["model_version"] == latest.metadata.version


def test_scoring_twice_replaces_the_same_rows(env):
    run_task(spec(env, "train"))
    first = run_task(spec(env, "score", ts_from=T0 + 80 * W, ts_to=None))
    again = run_task(spec(env, "score", ts_from=T0 + 80 * W, ts_to=None))
    assert first.predictions == again.predictions == 3 * 40
    with open_store(env[0]) as store:
        assert store.read_predictions(SENSORS, T0, T0 + 200 * W).num_rows == 3 * 40


def test_one_failing_sensor_does_not_lose_the_others(env):
    with open_store(env[0]) as store:  # a window whose value is infinite: the fit of that sensor raises
        row = {"window_end": [T0 + 5 * W], "device": ["1"], "tag": ["2"], "value": [float("inf")],
               "count": [1], "min": [0.0], "max": [float("inf")]}
        store.upsert_windows(pa.table(row, schema=WINDOW_SCHEMA))
    trained = run_task(spec(env, "train", detector="seed-ocsvm"))  # scikit-learn refuses infinite input
    assert [o.status for o in trained.outcomes] == ["ok", "failed", "ok"]
    assert "infinity" in trained.outcomes[1].reason

    # A model someone broke: that sensor fails to score, the others are written.
    models = open_model_store(env[1])
    replace_model(models, "seed-ocsvm", ("2", "1"), b"not a model")
    scored = run_task(spec(env, "score", [("1", "1"), ("2", "1")], ts_from=T0 + 80 * W, ts_to=None, detector="seed-ocsvm"))
    assert [o.status for o in scored.outcomes] == ["ok", "failed"]
    assert scored.outcomes[1].reason.startswith("model: ModelFormatError")
    assert scored.predictions == 40


def test_an_unreachable_store_fails_every_sensor_with_the_reason(env, monkeypatch):
    monkeypatch.delenv("SF_TEST_STORE", raising=False)
    by_env = dataclasses.replace(spec(env, "train"), store="env:SF_TEST_STORE")
    result = run_task(by_env)
    assert {o.status for o in result.outcomes} == {"failed"}
    assert "SF_TEST_STORE" in result.error
    monkeypatch.setenv("SF_TEST_STORE", env[0])
    assert {o.status for o in run_task(by_env).outcomes} == {"ok"}


def test_task_run_command_reads_the_spec_and_writes_the_result_beside_it(env, capsys):
    models = open_model_store(env[1])
    s = spec(env, "train")
    models.put_bytes(s.spec_name, s.to_json())
    assert main(["task", "run", models.object_url(s.spec_name)]) == 0
    result = TaskResult.from_json(models.get_bytes(s.result_name))
    assert result.count("ok") == 3
    assert "3 ok, 0 skipped, 0 failed" in capsys.readouterr().out
    assert main(["task", "run", str(models.root / "runs" / "nope.json")]) == 1


def test_seed_csv_is_written_per_sensor(env):
    run_task(spec(env, "train"))
    models = open_model_store(env[1])
    s = spec(env, "score", [("1", "1")], ts_from=T0 + 80 * W, ts_to=T0 + 120 * W, seed_csv=True)
    models.put_bytes(s.spec_name, s.to_json())
    run_task_at(models.object_url(s.spec_name))
    (name,) = models.list_names("predictions/")
    assert name == "predictions/preds_1_1_20260101T000640_20260101T001000"
    lines = models.get_bytes(name).decode().splitlines()
    assert lines[0] == "TS,Device,Tag,Val,Prediction" and len(lines) == 41
    ts, device, tag, _, flag = lines[100 - 80 + 1].split(",")
    assert (ts, device, tag, flag) == ("2026-01-01 00:08:25.000", "1", "1", "1")


def test_stored_models_load_without_pickle(env):
    run_task(spec(env, "train", [("1", "1")]))
    models = open_model_store(env[1])
    data = latest_model_bytes(models, DEFAULT_DETECTOR, ("1", "1"))
    assert data[:8] == b"SFMODEL\n" and load_model(data).detector == DEFAULT_DETECTOR


def test_train_then_score_reads_once_and_scores_with_the_new_models(env, monkeypatch):
    reads = []
    original = SqliteStore.read_windows
    monkeypatch.setattr(SqliteStore, "read_windows", lambda self, *a: reads.append(a) or original(self, *a))
    # robust-window flags a spike inside its own training range; calibrated learns its limits from that range
    result = run_task(spec(env, "train", ts_to=T0 + 120 * W, then_score=True, detector="robust-window"))
    assert len(reads) == 1 and result.predictions == 3 * 120
    assert [o.status for o in result.outcomes] == ["ok"] * 3 and all(o.anomalies >= 1 for o in result.outcomes)
    with open_store(env[0]) as store:
        rows = store.read_predictions(SENSORS, T0, T0 + 120 * W).to_pylist()
    (latest,) = ModelCatalog(open_model_store(env[1])).latest_metadata("robust-window", [("1", "1")])
    assert {r["model_version"] for r in rows if r["device"] == "1" and r["tag"] == "1"} == {latest.version}
    with pytest.raises(TaskError, match="then_score is for train tasks"):
        spec(env, "score", then_score=True)


def test_tasks_keep_models_specs_and_results_in_azure_blob(env, azurite, monkeypatch, capsys):
    monkeypatch.setenv("SENSORFLOW_BLOB_CONNECTION_STRING", azurite.connection_string)
    container = f"azblob://tasks{uuid.uuid4().hex[:10]}"
    blob_env = (env[0], container)
    models = open_model_store(container)
    train = spec(blob_env, "train")
    models.put_bytes(train.spec_name, train.to_json())
    assert main(["task", "run", models.object_url(train.spec_name)]) == 0
    assert "3 ok" in capsys.readouterr().out
    assert TaskResult.from_json(models.get_bytes(train.result_name)).count("ok") == 3
    scored = run_task(spec(blob_env, "score", ts_from=T0 + 80 * W, ts_to=None))
    assert [o.status for o in scored.outcomes] == ["ok"] * 3 and scored.predictions == 3 * 40
    assert len(ModelCatalog(models).versions(DEFAULT_DETECTOR, "1", "1")) == 1


def test_kinds_read_back_from_json_are_members(env):
    train = spec(env, "train")
    assert TaskSpec.from_json(train.to_json()).kind is RunKind.TRAIN and b'"kind": "train"' in train.to_json()
    result = TaskResult.all_failed(train, "boom")
    assert TaskResult.from_json(result.to_json()).kind is RunKind.TRAIN


def test_no_missing_slot_is_scored_before_a_sensors_first_window(tmp_path):
    """A score range starting before a sensor existed: no dropouts there; a real dropout of an older sensor counts."""
    env = (f"sqlite:///{tmp_path / 'sf.db'}", str(tmp_path / "models"))
    with open_store(env[0]) as store:
        store.create_schema()
        add_windows(store, [("old", "1")], T0, 80)  # windows ending T0+W .. T0+80W
        add_windows(store, [("old", "1")], T0 + 100 * W, 20, seed=1)  # 20 empty slots (a dropout), then back
        add_windows(store, [("new", "1")], T0 + 100 * W, 20, seed=2)  # a sensor whose first window ends T0+101W
    detector = "robust-window"  # its gap feature flags runs of missing slots
    assert run_task(spec(env, "train", [("old", "1")], ts_to=T0 + 80 * W, detector=detector)).count("ok") == 1
    trained = run_task(spec(env, "train", [("new", "1")], ts_from=T0 + 100 * W, ts_to=T0 + 120 * W, detector=detector))
    assert trained.count("ok") == 1

    scored = run_task(spec(env, "score", [("old", "1"), ("new", "1")], ts_from=T0 + 85 * W, ts_to=None, detector=detector))
    assert [o.status for o in scored.outcomes] == ["ok", "ok"]
    with open_store(env[0]) as store:
        rows = store.read_predictions([("old", "1"), ("new", "1")], T0, T0 + 200 * W).to_pylist()
    new = [r for r in rows if r["device"] == "new"]
    assert min(r["ts"] for r in new) == T0 + 101 * W and all(r["value"] is not None for r in new)
    missing_old = sorted(r["ts"] for r in rows if r["device"] == "old" and r["value"] is None)
    assert missing_old == [T0 + i * W for i in range(86, 101)]  # the dropout at the range's start still counts
    assert [o.missing_flagged for o in scored.outcomes] == [15, 0]

    # Training, too, starts at the sensor's first window: no made-up leading gap in what it learns.
    run_task(spec(env, "train", [("new", "1")], ts_from=T0 + 60 * W, ts_to=T0 + 120 * W, detector=detector))
    (meta,) = ModelCatalog(open_model_store(env[1])).latest_metadata(detector, [("new", "1")])
    assert meta.trained_from == T0 + 100 * W


def test_a_models_training_warnings_go_into_its_outcome(env, monkeypatch):
    trained = run_task(spec(env, "train"))
    assert [o.warning for o in trained.outcomes] == ["", "", ""]  # a model without warnings(): none
    (stored,) = ModelCatalog(open_model_store(env[1])).load_latest(DEFAULT_DETECTOR, [("1", "1")])
    model_class = type(stored.model)
    monkeypatch.setattr(model_class, "warnings", lambda self: ["few windows", "flat"], raising=False)
    trained = run_task(spec(env, "train", then_score=True))
    assert [o.warning for o in trained.outcomes] == ["few windows; flat"] * 3
    assert TaskResult.from_json(trained.to_json()) == trained
    assert TaskResult.from_json(json.dumps({**json.loads(trained.to_json()), "outcomes": [
        {k: v for k, v in o.items() if k != "warning"} for o in json.loads(trained.to_json())["outcomes"]
    ]})).outcomes[0].warning == ""  # results written before the field read back

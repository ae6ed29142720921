"""``sensorflow evaluate`` end to end on SQLite and PostgreSQL, and its planning and time syntax (pure).

The store holds three sensors of 5 s windows, 50 +- 1, for 15 minutes. Two things are planted
in the last 5 minutes: a +1000 spike on 1/1 (one window, labelled) and a +1000 level shift of
ten windows on 2/1 (not labelled: ten false flags, one episode). A drift is labelled on 1/2
where the data has none (a miss). ``robust-window`` trained on the first 10 minutes flags exactly
the 11 planted windows, so every figure of the report can be worked out by hand.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.batch_jobs.evaluation import (
    EvaluationError,
    EvaluationRun,
    Slice,
    explicit_plan,
    parse_duration,
    parse_window_time,
    scheduled_plan,
)
from sensorflow.batch_jobs.tasks import SensorOutcome, TaskResult, TaskSpec
from sensorflow.cli import main
from sensorflow.records.predictions import PREDICTION_SCHEMA
from sensorflow.records.timeparse import format_ms
from sensorflow.store import open_store
from tests.support.builders import T0, S, W, fleet_windows, window_table

SENSORS = [("1", "1"), ("1", "2"), ("2", "1")]
N = 180  # windows per sensor: 15 minutes
SPIKE, SHIFT = 150, range(160, 170)  # window indexes; index i ends at T0 + (i + 1) W
DETECTOR = "robust-window"
DAY_S = 86_400
H = 3600 * S


def _iso(ns: int) -> str:
    return format_ms([ns])[0].replace(" ", "T") + "Z"


def _windows() -> pa.Table:
    table = fleet_windows(SENSORS, T0, N, seed=0)
    value = table["value"].to_numpy().copy()
    value[0 * N + SPIKE] += 1000.0
    value[2 * N + SHIFT.start:2 * N + SHIFT.stop] += 1000.0
    return window_table(table["window_end"], table["device"], table["tag"], value, 5, value - 1.0, value + 1.0)


def _sidecar_rows() -> pa.Table:
    """The sidecar's own predictions over the scored part: these must survive an evaluation unchanged."""
    ends = T0 + np.arange(121, N + 1, dtype=np.int64) * W
    n = len(ends)
    return pa.table({
        "ts": np.tile(ends, len(SENSORS)), "device": np.repeat([d for d, _ in SENSORS], n).tolist(),
        "tag": np.repeat([t for _, t in SENSORS], n).tolist(), "value": np.full(n * len(SENSORS), 50.0),
        "score": np.full(n * len(SENSORS), 0.125), "is_anomaly": np.zeros(n * len(SENSORS), bool),
        "detector": [DETECTOR] * (n * len(SENSORS)), "model_version": ["sidecar-v1"] * (n * len(SENSORS)),
    }, schema=PREDICTION_SCHEMA)


def _labels(path: Path) -> Path:
    spike_end = T0 + (SPIKE + 1) * W
    path.write_text(json.dumps([
        {"device": "1", "tag": "1", "kind": "spike", "start": _iso(spike_end - W), "end": _iso(spike_end)},
        {"device": "1", "tag": "2", "kind": "drift", "start": _iso(T0 + 130 * W), "end": _iso(T0 + 140 * W)},
    ]))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, monkeypatch) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sf.db'}"
    else:
        url = f"postgresql+odbc:{request.getfixturevalue('postgres_odbc')}"
    monkeypatch.setenv("SENSORFLOW_STORE", url)  # the command exports it for its tasks; restored after the test
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows())
        store.upsert_predictions(_sidecar_rows())
    return url


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Where the command's temporary model store goes, so the test can see it removed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def _evaluate(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["evaluate", "--detector", DETECTOR, "--task-processes", "1", *args])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 else {}, out


def _sensor_days(units: int, seconds: float) -> float:
    return units * seconds / DAY_S


# End to end ---------------------------------------------------------------------------------------


def test_train_then_score_finds_the_spike_and_counts_the_false_flags(store_url, tmp_path, private_tmp, capsys):
    plot = tmp_path / "out" / "worst.png"
    code, figures, out = _evaluate(capsys, "--store", store_url, "--train-to=newest-5m",
                                   "--labels", str(_labels(tmp_path / "labels.json")), "--plot", str(plot))
    assert code == 0, out
    days = _sensor_days(3, 300)
    precision, recall = 1 / 11, 1 / 2
    expected = {
        "detector": DETECTOR, "threshold_scale": 1.0, "scope": "sensor", "mode": "explicit",
        "train_from": "2025-12-31T23:10:00.000Z", "train_to": "2026-01-01T00:10:00.000Z",
        "score_to": "2026-01-01T00:15:00.000Z", "sensors": 3, "scored_windows": 3 * 60,
        "labelled": 2, "found": 1, "flagged_windows": 11, "false_flag_windows": 10, "false_flag_episodes": 1,
        "recall_by_kind": {"drift": 0.0, "spike": 1.0},
        "worst_false": [{"device": "2", "tag": "1", "false_flag_windows": 10}],
        "worst_missed": [{"device": "1", "tag": "2", "missed": 1}],
        "skipped_sensors": 0, "failed_sensors": 0, "warnings": [], "model_store": None,
    }
    assert {k: figures[k] for k in expected} == expected
    assert figures["recall"] == pytest.approx(recall) and figures["precision"] == pytest.approx(precision, abs=1e-6)
    assert figures["f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-6)
    assert figures["sensor_days"] == pytest.approx(days, abs=1e-6)
    assert figures["false_flags_per_sensor_day"] == pytest.approx(10 / days, rel=1e-6)
    assert figures["episodes_per_sensor_day"] == pytest.approx(1 / days, rel=1e-6)
    assert figures["event_precision"] == pytest.approx(1 / 2)  # one found, one false episode

    assert "recall 0.500  precision 0.091" in out and "worst by false flags: 2/1 10" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert figures["plot"] == str(plot.resolve())

    with open_store(store_url) as store:
        rows = store.read_predictions(SENSORS, 0, T0 + H)
    sidecar = rows.filter(pa.compute.equal(rows["detector"], DETECTOR))
    assert sidecar.sort_by([("device", "ascending"), ("tag", "ascending"), ("ts", "ascending")]).select(
        ["ts", "device", "tag", "score", "is_anomaly", "model_version"]
    ) == _sidecar_rows().select(["ts", "device", "tag", "score", "is_anomaly", "model_version"])
    evaluated = rows.filter(pa.compute.equal(rows["detector"], f"eval:{DETECTOR}"))
    assert evaluated.num_rows == 180 and pa.compute.sum(evaluated["is_anomaly"]).as_py() == 11
    assert list(private_tmp.iterdir()) == [] and not (tmp_path / ".sensorflow").exists()  # no models left behind


def test_device_scope_and_iso_times_and_kept_models(tmp_path, private_tmp, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows())
    kept = tmp_path / "eval-models"
    code, figures, out = _evaluate(capsys, "--store", url, "--train-from", "2026-01-01T00:00:00Z",
                                   "--train-to", "2026-01-01 00:10:00", "--score-to", "newest",
                                   "--labels", str(_labels(tmp_path / "labels.json")), "--scope", "device",
                                   "--model-store", str(kept))
    assert code == 0, out
    days = _sensor_days(2, 300)
    assert (figures["train_from"], figures["train_to"]) == ("2026-01-01T00:00:00.000Z", "2026-01-01T00:10:00.000Z")
    assert (figures["units"], figures["labelled"], figures["found"], figures["flagged_windows"]) == (2, 2, 1, 11)
    assert figures["worst_false"] == [{"device": "2", "tag": None, "false_flag_windows": 10}]
    assert figures["worst_missed"] == [{"device": "1", "tag": None, "missed": 1}]
    assert figures["false_flags_per_sensor_day"] == pytest.approx(10 / days, rel=1e-6)
    (folder,) = kept.iterdir()
    assert figures["model_store"] == str(folder) and (folder / "slice-000" / "models" / DETECTOR).is_dir()


def test_as_scheduled_replays_the_sidecars_schedule(tmp_path, private_tmp, capsys):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows())
    labels = _labels(tmp_path / "labels.json")
    unknown = {"device": "9", "tag": "9", "kind": "spike", "start": _iso(T0 + 700 * S), "end": _iso(T0 + 705 * S)}
    labels.write_text(json.dumps([*json.loads(labels.read_text()), unknown]))
    code, figures, out = _evaluate(capsys, "--store", url, "--as-scheduled", "--train-seconds", "300",
                                   "--retrain-every-seconds", "300", "--labels", str(labels))
    assert code == 0, out
    assert figures["warnings"] == ["1 labelled incident(s) in the scored range are on sensors that were not scored "
                                   "(counted as missed), e.g. 9/9"]
    # History (T0, T0 + 15 min]: trained on 0-5 min, scored 5-10; retrained on 5-10, scored 10-15.
    assert figures["slices"] == [
        {"train_from": "2026-01-01T00:00:00.000Z", "train_to": "2026-01-01T00:05:00.000Z", "score_to": "2026-01-01T00:10:00.000Z"},
        {"train_from": "2026-01-01T00:05:00.000Z", "train_to": "2026-01-01T00:10:00.000Z", "score_to": "2026-01-01T00:15:00.000Z"},
    ]
    assert (figures["mode"], figures["scored_windows"], figures["found"], figures["false_flag_windows"]) == (
        "as-scheduled", 3 * 120, 1, 10)
    assert (figures["labelled"], figures["worst_missed"][0]) == (3, {"device": "1", "tag": "2", "missed": 1})
    assert figures["sensor_days"] == pytest.approx(_sensor_days(3, 600), abs=1e-6)


def test_without_labels_it_reports_flags_and_the_most_flagged_sensors(tmp_path, private_tmp, capsys):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows())
    code, figures, out = _evaluate(capsys, "--store", url, "--train-to=-5m")
    assert code == 0, out
    assert figures["recall"] is None and figures["precision"] is None and figures["f1"] is None
    assert (figures["flagged_windows"], figures["flagged_episodes"]) == (11, 2)
    assert figures["flagged_per_sensor_day"] == pytest.approx(11 / _sensor_days(3, 300), rel=1e-6)
    assert figures["worst_flagged"] == [{"device": "2", "tag": "1", "flagged_windows": 10},
                                        {"device": "1", "tag": "1", "flagged_windows": 1}]
    assert "worst by flags: 2/1 10, 1/1 1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-to=-5m", "--labels", "missing.json"], "cannot read labels from missing.json"),
        (["--train-to", "newest"], "empty scoring range"),
        (["--train-to=-5m", "--train-from=-4m"], "empty training range"),
        (["--train-to", "yesterday"], "bad time 'yesterday'"),
        ([], "give --train-to"),
        (["--as-scheduled", "--train-to=-5m"], "--as-scheduled replays the schedule"),
        (["--as-scheduled", "--train-seconds", "3600"], "too little history"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, private_tmp, capsys, args, message):
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows())
    code = main(["evaluate", "--store", url, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_an_empty_store_exits_2(tmp_path, private_tmp, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with open_store(url) as store:
        store.create_schema()
    assert main(["evaluate", "--store", url, "--train-to=-1h"]) == 2
    assert "the store has no windows" in capsys.readouterr().err


# Planning and times (pure) -------------------------------------------------------------------------


NEWEST = T0 + 6 * H


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("newest", NEWEST),
        ("newest-30m", NEWEST - 1800 * S),
        (" newest - 90s ", NEWEST - 90 * S),
        ("-2h", NEWEST - 2 * H),
        ("-1h30m", NEWEST - 5400 * S),
        ("-1.5d", NEWEST - 36 * H),
        ("2026-01-01T06:00:00Z", T0 + 6 * H),
        ("2026-01-01 06:00:00", T0 + 6 * H),  # no zone: UTC
        ("2026-01-01T07:00:00+01:00", T0 + 6 * H),
    ],
)
def test_window_times(text, expected):
    assert parse_window_time(text, NEWEST) == expected


@pytest.mark.parametrize("text", ["yesterday", "-2x", "newest+1h", "newest-", "-h", ""])
def test_bad_window_times(text):
    with pytest.raises(EvaluationError, match="bad"):
        parse_window_time(text, NEWEST)


def test_durations():
    assert parse_duration("1h30m") == parse_duration("90m") == 5400 * S
    with pytest.raises(EvaluationError, match="bad duration"):
        parse_duration("1 hour")


@pytest.mark.parametrize(
    ("history", "train", "every", "expected"),
    [
        # Three hours, train on one, retrain every hour: score hours 2 and 3.
        ((T0, T0 + 3 * H), H, H, [(T0, T0 + H, T0 + 2 * H), (T0 + H, T0 + 2 * H, T0 + 3 * H)]),
        # The last slice stops at the end of the history.
        ((T0, T0 + 2 * H + H // 2), H, H, [(T0, T0 + H, T0 + 2 * H), (T0 + H, T0 + 2 * H, T0 + 2 * H + H // 2)]),
        # Retrain every 30 min on the trailing 2 h: the first training once 2 h exist.
        ((T0, T0 + 3 * H), 2 * H, H // 2, [(T0, T0 + 2 * H, T0 + 2 * H + H // 2),
                                           (T0 + H // 2, T0 + 2 * H + H // 2, T0 + 3 * H)]),
        # An unaligned history start: the first retrain point is the next window end after a span.
        ((T0 - 3 * S, T0 + 2 * H), H, H, [(T0, T0 + H, T0 + 2 * H)]),
        ((T0 + 2 * S, T0 + 2 * H), H, H, [(T0 + W, T0 + H + W, T0 + 2 * H)]),
    ],
)
def test_scheduled_plan(history, train, every, expected):
    plan = scheduled_plan(*history, train, every, W)
    assert [(s.train_from, s.train_to, s.score_to) for s in plan] == expected
    assert all(a.score_to == b.train_to for a, b in zip(plan, plan[1:]))  # slices tile the scored range


def test_plans_refuse_empty_ranges_and_short_histories():
    with pytest.raises(EvaluationError, match="too little history"):
        scheduled_plan(T0, T0 + H, H, H, W)
    with pytest.raises(EvaluationError, match="empty scoring range"):
        explicit_plan(T0, T0 + H, T0 + H)
    with pytest.raises(EvaluationError, match="empty training range"):
        explicit_plan(T0 + H, T0 + H, T0 + 2 * H)


def test_run_outcomes_failed_skipped_warnings_and_all_failed():
    spec = TaskSpec("train-s000-00000", "r", "train", (("a", "1"), ("b", "1")), T0, T0 + H, DETECTOR, "sqlite:///x", "/m")
    score = TaskSpec("score-s000-00000", "r", "score", (("a", "1"),), T0 + H, T0 + 2 * H, DETECTOR, "sqlite:///x", "/m")
    trained = TaskResult("train-s000-00000", "r", "train", (
        SensorOutcome("a", "1", "ok", model_version="v1", warning="training looks anomalous"),
        SensorOutcome("b", "1", "skipped", "too few windows (3 < 12)"),
    ), 0.1)
    scored = TaskResult("score-s000-00000", "r", "score", (SensorOutcome("a", "1", "ok", windows=720),), 0.1, 720)
    run = EvaluationRun("r", (Slice(T0, T0 + H, T0 + 2 * H),), (("a", "1"), ("b", "1")), (spec,), (trained,), (score,),
                        (scored,), frozenset({"v1"}))
    assert run.scored_sensors == [("a", "1")] and run.skipped_sensors == {("b", "1"): "too few windows (3 < 12)"}
    assert run.failed_sensors == {} and not run.all_failed and run.scored_windows == 720
    assert run.warnings == ["a/1: training looks anomalous"]
    failed = EvaluationRun("r", run.plan, run.sensors, (spec,), (TaskResult.all_failed(spec, "boom"),), (), ())
    assert failed.all_failed and failed.failed_sensors == {("a", "1"): "boom", ("b", "1"): "boom"}

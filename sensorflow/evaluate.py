"""``sensorflow evaluate``: a detector and a sensitivity measured on the store's own history.

Trains on one window-time range and scores the next (or replays the
sidecar's schedule over the history, ``--as-scheduled``) through the same
task specs and executor as the sidecar (``sensorflow.batch_jobs.evaluation``),
then reports against known incidents (``--labels``, ``sensorflow.batch_jobs.quality``):
a text table, an optional PNG of the worst sensors
(``sensorflow.batch_jobs.quality_plot``), and, last on stdout, one JSON line.

Exit status: 0 done; 2 bad arguments (an unreadable labels file, an empty
range, a store without windows); 1 the store, model store or executor failed,
or every task failed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sensorflow.assembly import open_executor
from sensorflow.batch_commands import task_environment
from sensorflow.batch_jobs.azure_batch_pool import BatchSetupError
from sensorflow.batch_jobs.evaluation import (
    EvaluationConfig,
    EvaluationError,
    EvaluationRun,
    Slice,
    explicit_plan,
    parse_window_time,
    read_evaluation_predictions,
    run_evaluation,
    scheduled_plan,
)
from sensorflow.batch_jobs.model_store import ModelStoreError
from sensorflow.batch_jobs.quality import LabelSpan, QualityReport, UnitCount, evaluate, read_labels
from sensorflow.batch_jobs.tasks import TaskError
from sensorflow.records.runs import RunKind
from sensorflow.records.timeparse import format_iso as _iso
from sensorflow.settings import EvaluateSettings
from sensorflow.store import Store, StoreError, open_store

__all__ = ["evaluate_command", "print_table", "summary"]

NS = 1_000_000_000
PLOTTED = 8  # panels of the PNG at most


class _BadArguments(ValueError):
    """What exits 2: the command cannot start with these arguments or this store."""


def evaluate_command(settings: EvaluateSettings, as_scheduled: bool = False) -> int:
    began = time.perf_counter()
    try:
        labels = _labels(settings)
        if as_scheduled and settings.train_to is not None:
            raise _BadArguments("--as-scheduled replays the schedule: give --train-from/--score-to to bound it, not --train-to")
        if not as_scheduled and settings.train_to is None:
            raise _BadArguments("give --train-to (and optionally --train-from, --score-to), or --as-scheduled")
    except _BadArguments as e:
        print(f"sensorflow evaluate: {e}", file=sys.stderr)
        return 2
    keep = settings.model_store is not None
    stamp = f"evaluate-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    base = f"{settings.model_store.rstrip('/')}/{stamp}" if keep else tempfile.mkdtemp(prefix="sensorflow-evaluate-")
    try:
        store_url, reference, model_store, environ = task_environment(settings.model_copy(update={"model_store": base}))
        os.environ.update(environ)  # this process writes specs to the model store too
        with open_store(store_url) as store:
            plan, sensors = _plan(settings, store, as_scheduled)
            config = EvaluationConfig(
                reference, model_store, settings.detector or _default_detector(), window_ns=settings.window_ns,
                threshold_scale=settings.threshold_scale, chunk_size=settings.chunk_size,
                incident_gap_windows=settings.incident_gap_windows,
            )
            print(f"sensorflow evaluate: {len(sensors):,} sensors, {len(plan)} slice(s), "
                  f"scoring {_iso(plan[0].train_to)} .. {_iso(plan[-1].score_to)}", file=sys.stderr, flush=True)
            with open_executor(settings, environ) as executor:
                run = run_evaluation(stamp, config, plan, sensors, executor, _progress)
            flagged = read_evaluation_predictions(store, run, config.prediction_detector, settings.chunk_size)
            report = evaluate(flagged, labels or [], settings.window_ns, run.scored_range, scope=settings.scope,
                              sensors=run.scored_sensors, top=settings.top)
            plot = _plot(settings, store, run, config, report, labels or []) if settings.plot else None
    except _BadArguments as e:
        print(f"sensorflow evaluate: {e}", file=sys.stderr)
        return 2
    except (StoreError, ModelStoreError, TaskError, BatchSetupError) as e:
        print(f"sensorflow evaluate: {e}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    figures = summary(settings, run, report, labels, plot, model_store if keep else None, time.perf_counter() - began,
                      as_scheduled)
    print_table(figures, report, run)
    print(json.dumps(figures), flush=True)
    if run.all_failed:
        print("sensorflow evaluate: every task failed (see failed_sensors; rerun with --log-level DEBUG)", file=sys.stderr)
        return 1
    return 0


def _default_detector() -> str:
    from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR

    return DEFAULT_DETECTOR


def _labels(settings: EvaluateSettings) -> list[LabelSpan] | None:
    if settings.labels is None:
        return None
    try:
        return read_labels(settings.labels)
    except ValueError as e:
        raise _BadArguments(str(e).splitlines()[0]) from e


def _plan(settings: EvaluateSettings, store: Store, as_scheduled: bool) -> tuple[list[Slice], list[tuple[str, str]]]:
    """The slices from the settings' times (relative ones against the store's newest window), and the sensors."""
    sensors = store.sensors_written_since(0)
    bounds = store.window_bounds(sensors) if sensors else {}  # two index seeks per sensor, no count of all rows
    if not bounds:
        raise _BadArguments("the store has no windows to evaluate (replay or consume readings first: sensorflow run)")
    oldest, newest = min(first for first, _ in bounds.values()), max(last for _, last in bounds.values())
    train_ns = round(settings.train_seconds * NS)
    try:
        score_to = parse_window_time(settings.score_to, newest)
        if as_scheduled:
            start = parse_window_time(settings.train_from, newest) if settings.train_from else oldest - settings.window_ns
            plan = scheduled_plan(start, score_to, train_ns, round(settings.retrain_every_seconds * NS), settings.window_ns)
        else:
            train_to = parse_window_time(settings.train_to or "", newest)
            start = parse_window_time(settings.train_from, newest) if settings.train_from else train_to - train_ns
            plan = explicit_plan(start, train_to, score_to)
    except EvaluationError as e:
        raise _BadArguments(str(e)) from e
    return plan, sensors


def _progress(kind: RunKind, done: int, total: int) -> None:
    print(f"sensorflow evaluate: {kind} {done}/{total} tasks", file=sys.stderr, flush=True)


def _units(counts: Sequence[UnitCount], key: str, scope: str) -> list[dict[str, Any]]:
    return [{"device": u.device, "tag": u.tag if scope == "sensor" else None, key: u.count} for u in counts]


def summary(settings: EvaluateSettings, run: EvaluationRun, report: QualityReport, labels: list[LabelSpan] | None,
            plot: Path | None, kept: str | None, seconds: float, as_scheduled: bool = False) -> dict[str, Any]:
    """The JSON line's figures (times as ISO text; recall, precision and F1 null without labels)."""
    labelled = labels is not None
    skipped: dict[str, int] = {}
    for reason in run.skipped_sensors.values():
        skipped[reason] = skipped.get(reason, 0) + 1
    lo, hi = run.scored_range

    def rounded(value: float) -> float | None:
        return round(value, 6) if labelled else None

    return {
        "detector": settings.detector or _default_detector(),
        "threshold_scale": settings.threshold_scale,
        "scope": report.scope,
        "mode": "as-scheduled" if as_scheduled else "explicit",
        "train_from": _iso(run.plan[0].train_from),
        "train_to": _iso(run.plan[0].train_to),
        "score_to": _iso(hi),
        "slices": [{"train_from": _iso(s.train_from), "train_to": _iso(s.train_to), "score_to": _iso(s.score_to)}
                   for s in run.plan],
        "sensors": len(run.scored_sensors),
        "units": report.units,
        "scored_windows": run.scored_windows,
        "scored_seconds": (hi - lo) / NS,
        "labelled": report.labelled,
        "found": report.found,
        "recall": rounded(report.recall),
        "precision": rounded(report.precision),
        "f1": rounded(report.f1),
        "event_precision": rounded(report.event_precision),
        "event_f1": rounded(report.event_f1),
        "flagged_windows": report.flagged_windows,
        "flagged_episodes": report.flagged_episodes,
        "flagged_per_sensor_day": round(report.flagged_windows / report.sensor_days, 6) if report.sensor_days else 0.0,
        "false_flag_windows": report.false_flag_windows,
        "false_flag_episodes": report.false_flag_episodes,
        "false_flags_per_sensor_day": round(report.false_flags_per_sensor_day, 6),
        "episodes_per_sensor_day": round(report.episodes_per_sensor_day, 6),
        "sensor_days": round(report.sensor_days, 6),
        "recall_by_kind": {k.kind: round(k.recall, 6) for k in report.kinds},
        "worst_false": _units(report.worst_false, "false_flag_windows", report.scope),
        "worst_missed": _units(report.worst_missed, "missed", report.scope),
        "worst_flagged": _units(report.worst_flagged, "flagged_windows", report.scope),
        "skipped_sensors": len(run.skipped_sensors),
        "skipped_reasons": skipped,
        "failed_sensors": len(run.failed_sensors),
        "warnings": _unscored_labels(labels or [], run, report.scope) + run.warnings,
        "model_store": kept,
        "plot": None if plot is None else str(plot),
        "seconds": round(seconds, 3),
    }


def _unscored_labels(labels: list[LabelSpan], run: EvaluationRun, scope: str) -> list[str]:
    """A warning when labels in the scored range belong to no scored sensor (they count as missed)."""
    lo, hi = run.scored_range
    scored = {(d, t if scope == "sensor" else "") for d, t in run.scored_sensors}
    missing = [s for s in labels if s.end > lo and s.start < hi and (s.device, s.tag if scope == "sensor" else "") not in scored]
    if not missing:
        return []
    return [f"{len(missing)} labelled incident(s) in the scored range are on sensors that were not scored "
            f"(counted as missed), e.g. {missing[0].device}/{missing[0].tag}"]


def print_table(figures: dict[str, Any], report: QualityReport, run: EvaluationRun) -> None:
    """The report for humans, on stdout before the JSON line."""
    f = figures
    unit = "sensor" if report.scope == "sensor" else "device"
    scale = f" x{f['threshold_scale']:g}" if f["threshold_scale"] != 1.0 else ""
    print(f"sensorflow evaluate: {f['detector']}{scale}, {f['sensors']:,} sensors scored "
          f"({f['skipped_sensors']:,} skipped, {f['failed_sensors']:,} failed), scope {report.scope}, {f['seconds']:.1f} s")
    slices = f" in {len(run.plan)} slices (retrain every {(run.plan[1].train_to - run.plan[0].train_to) / NS:g} s)" \
        if len(run.plan) > 1 else ""
    print(f"  trained  {f['train_from']} .. {f['train_to']}{slices}")
    print(f"  scored   {f['train_to']} .. {f['score_to']}: {f['scored_windows']:,} windows, "
          f"{report.sensor_days:.3g} {unit}-days")
    for kind in (RunKind.TRAIN, RunKind.SCORE):
        outcomes = run.outcomes(kind)
        counts = {status: sum(1 for o in outcomes if o.status == status) for status in ("ok", "skipped", "failed")}
        tasks = len(run.train_results if kind == RunKind.TRAIN else run.score_results)
        print(f"  {kind:<8} {tasks} task(s): {counts['ok']:,} ok, {counts['skipped']:,} skipped, {counts['failed']:,} failed")
    print(f"  flagged  {f['flagged_windows']:,} windows in {f['flagged_episodes']:,} episodes "
          f"({f['flagged_per_sensor_day']:.2f} windows per {unit}-day)")
    if f["recall"] is not None:
        print(f"  labelled {f['labelled']:,}, found {f['found']:,}: recall {f['recall']:.3f}  precision {f['precision']:.3f}  "
              f"F1 {f['f1']:.3f}  (event precision {f['event_precision']:.3f}, F1 {f['event_f1']:.3f})")
        print(f"  false    {f['false_flag_windows']:,} windows in {f['false_flag_episodes']:,} episodes: "
              f"{f['false_flags_per_sensor_day']:.2f} windows, {f['episodes_per_sensor_day']:.2f} episodes per {unit}-day")
        if report.kinds:
            print(f"  {'kind':<14}{'labelled':>9}{'found':>7}{'recall':>8}{'median delay':>14}")
            for k in report.kinds:
                delay = "-" if k.median_delay_s is None else f"{k.median_delay_s:.0f} s"
                print(f"  {k.kind:<14}{k.labelled:>9}{k.found:>7}{k.recall:>8.3f}{delay:>14}")
        _worst_line("worst by false flags", report.worst_false, unit)
        _worst_line("worst by misses", report.worst_missed, unit)
    else:
        _worst_line("worst by flags", report.worst_flagged, unit)
    for reason, n in sorted(f["skipped_reasons"].items()):
        print(f"  skipped  {n:,} sensor(s): {reason}")
    for sensor, reason in list(run.failed_sensors.items())[:5]:
        print(f"  failed   {sensor[0]}/{sensor[1]}: {reason}")
    for warning in f["warnings"][:10]:
        print(f"  warning  {warning}")
    if len(f["warnings"]) > 10:
        print(f"  warning  ... and {len(f['warnings']) - 10} more (in the JSON line)")
    if f["model_store"]:
        print(f"  models   {f['model_store']}")
    if f["plot"]:
        print(f"  plot     {f['plot']}")


def _worst_line(title: str, counts: Sequence[UnitCount], unit: str) -> None:
    names = ", ".join(f"{u.device}/{u.tag} {u.count:,}" if unit == "sensor" else f"{u.device} {u.count:,}" for u in counts)
    print(f"  {title}: {names or 'none'}")


def _plotted(report: QualityReport, run: EvaluationRun, labelled: bool) -> list[tuple[str, str]]:
    """Up to ``PLOTTED`` sensors: the worst by false flags and by misses taken in turn (devices: their sensors)."""
    lists = [report.worst_false, report.worst_missed] if labelled else [report.worst_flagged]
    units = list(dict.fromkeys(u for pair in _interleave(lists) for u in [(pair.device, pair.tag)]))
    chosen: list[tuple[str, str]] = []
    for device, tag in units:
        matches = [(device, tag)] if report.scope == "sensor" else [s for s in run.sensors if s[0] == device]
        chosen += [s for s in matches if s not in chosen]
    return chosen[:PLOTTED]


def _interleave(lists: list[Sequence[UnitCount]]) -> list[UnitCount]:
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def _plot(settings: EvaluateSettings, store: Store, run: EvaluationRun, config: EvaluationConfig,
          report: QualityReport, labels: list[LabelSpan]) -> Path:
    from sensorflow.batch_jobs.quality_plot import plot_worst

    sensors = _plotted(report, run, bool(labels))
    lo, hi = run.scored_range
    windows = store.read_windows(sensors, lo, hi)
    predictions = read_evaluation_predictions(store, run, config.prediction_detector, flagged_only=False, sensors=sensors)
    notes = {}
    for name, counts in (("false flags", report.worst_false), ("missed", report.worst_missed)):
        for u in counts:
            for sensor in sensors:
                if sensor[0] == u.device and (report.scope == "device" or sensor[1] == u.tag):
                    notes[sensor] = (notes.get(sensor, "") + f" {name}: {u.count}").strip()
    assert settings.plot is not None
    settings.plot.parent.mkdir(parents=True, exist_ok=True)
    return plot_worst(settings.plot.resolve(), sensors, windows, predictions, labels, settings.window_ns, report.scope,
                      {s: f"[{note}]" for s, note in notes.items()}, run.scored_range)

"""Evaluation runs: train on one window-time range and score the next, through the sidecar's task specs.

What ``sensorflow evaluate`` does below the command line. A plan is a list of
``Slice``s, each one training ``(train_from, train_to]`` and one scoring
``(train_to, score_to]`` with the models of that training:

- ``explicit_plan``: one slice from the user's times;
- ``scheduled_plan``: the sidecar's schedule replayed over a history, a
  retrain every ``retrain_every`` on the trailing ``train_span``; the first
  once ``train_span`` of history exists.

``run_evaluation`` turns a plan into ``TaskSpec``s and runs them on an
``Executor`` in two phases (every slice's training, then every slice's
scoring), like the sidecar's runs, so they run on the local pool or Azure
Batch. Evaluation never touches the sidecar's state: each slice's models go
to their own model store (``<model store>/slice-NNN``) and predictions are
written under the Detector name ``eval:<detector>``. Predictions are read
back by the model versions this evaluation trained, so rows an earlier
evaluation left in the same range never count.

Times are int ns since the epoch (UTC), window time (``TS`` is a window's end).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.batch_jobs.executors import Executor
from sensorflow.batch_jobs.schedule import chunk_size_for
from sensorflow.batch_jobs.tasks import SensorOutcome, TaskResult, TaskSpec
from sensorflow.records.predictions import PREDICTION_SCHEMA
from sensorflow.records.runs import RunKind
from sensorflow.records.timeparse import format_iso, parse_time
from sensorflow.records.timeparse import parse_duration as _parse_duration
from sensorflow.store import ScoringStore

__all__ = [
    "EVAL_PREFIX",
    "EvaluationConfig",
    "EvaluationError",
    "EvaluationRun",
    "Slice",
    "explicit_plan",
    "parse_window_time",
    "read_evaluation_predictions",
    "run_evaluation",
    "scheduled_plan",
    "slice_model_store",
]

EVAL_PREFIX = "eval:"
NS_PER_S = 1_000_000_000
_RELATIVE = re.compile(r"(?:newest)?\s*-\s*(?P<ago>.+)|newest")

Sensor = tuple[str, str]
Progress = Callable[[RunKind, int, int], None]
"""Called with (phase, tasks done, tasks in the phase) as tasks finish."""


class EvaluationError(ValueError):
    """An evaluation that cannot be planned: a bad time, an empty range, too little history."""


@dataclass(frozen=True)
class Slice:
    """Train on ``(train_from, train_to]``, then score ``(train_to, score_to]`` with those models."""

    train_from: int
    train_to: int
    score_to: int

    def __post_init__(self) -> None:
        if not self.train_from < self.train_to:
            raise EvaluationError(f"empty training range: {format_iso(self.train_from)} .. {format_iso(self.train_to)}")
        if not self.train_to < self.score_to:
            raise EvaluationError(f"empty scoring range: {format_iso(self.train_to)} .. {format_iso(self.score_to)}")


def parse_duration(text: str) -> int:
    """A duration as ns (``records.timeparse.parse_duration``); EvaluationError otherwise."""
    try:
        return _parse_duration(text)
    except ValueError as e:
        raise EvaluationError(str(e)) from None


def parse_window_time(text: str, newest_ns: int) -> int:
    """A window time from ISO-8601 text, or relative to the newest window: ``newest``, ``newest-30m``, ``-2h``.

    ISO times without a zone are UTC. EvaluationError names what is wrong.
    """
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        ago = relative.group("ago")
        return newest_ns - (parse_duration(ago) if ago is not None else 0)
    parsed = parse_time(text.strip())
    if parsed is None:
        raise EvaluationError(
            f"bad time {text!r}: expected ISO-8601 (2026-01-01T06:00:00Z) or relative to the newest window "
            "(newest, newest-30m, -2h)"
        )
    return parsed


def explicit_plan(train_from: int, train_to: int, score_to: int) -> list[Slice]:
    """One slice: train ``(train_from, train_to]``, score ``(train_to, score_to]``."""
    return [Slice(train_from, train_to, score_to)]


def scheduled_plan(history_from: int, history_to: int, train_span_ns: int, retrain_every_ns: int, window_ns: int) -> list[Slice]:
    """The sidecar's schedule over the history ``(history_from, history_to]``.

    The first retrain point is the first window end at least ``train_span``
    after ``history_from``; each point trains on the ``train_span`` before it
    and scores up to the next point (the last slice up to ``history_to``).
    """
    if min(train_span_ns, retrain_every_ns, window_ns) <= 0:
        raise EvaluationError("the training span, the retrain period and the window must be > 0")
    first = -(-(history_from + train_span_ns) // window_ns) * window_ns
    if first >= history_to:
        raise EvaluationError(
            f"too little history to replay the schedule: training needs {train_span_ns / NS_PER_S:g} s of windows "
            f"before the first scored one, and {format_iso(history_from)} .. {format_iso(history_to)} holds "
            f"{(history_to - history_from) / NS_PER_S:g} s"
        )
    slices, point = [], first
    while point < history_to:
        slices.append(Slice(point - train_span_ns, point, min(point + retrain_every_ns, history_to)))
        point += retrain_every_ns
    return slices


@dataclass(frozen=True)
class EvaluationConfig:
    """What every task of an evaluation shares. ``store_ref`` is the store as specs name it (no secrets)."""

    store_ref: str
    model_store: str  # the evaluation's own; slices go to <model_store>/slice-NNN
    detector: str
    window_ns: int = 5 * NS_PER_S
    threshold_scale: float = 1.0
    chunk_size: int = 500
    incident_gap_windows: int = 3  # the tasks' incidents (under prediction_detector), as the sidecar's

    @property
    def prediction_detector(self) -> str:
        """The Predictions.Detector of this evaluation's rows: never the sidecar's."""
        return EVAL_PREFIX + self.detector


def slice_model_store(model_store: str, index: int) -> str:
    """The model store of slice ``index`` under ``model_store`` (a directory or ``azblob://`` prefix)."""
    return f"{model_store.rstrip('/')}/slice-{index:03d}"


@dataclass(frozen=True, eq=False)
class EvaluationRun:
    """What ran: the plan, each phase's specs and results, and the model versions each sensor was trained to."""

    run_id: str
    plan: tuple[Slice, ...]
    sensors: tuple[Sensor, ...]
    train_specs: tuple[TaskSpec, ...]
    train_results: tuple[TaskResult, ...]
    score_specs: tuple[TaskSpec, ...]
    score_results: tuple[TaskResult, ...]
    versions: frozenset[str] = field(default_factory=frozenset)

    @property
    def scored_range(self) -> tuple[int, int]:
        return self.plan[0].train_to, self.plan[-1].score_to

    def outcomes(self, kind: RunKind) -> list[SensorOutcome]:
        results = self.train_results if kind == RunKind.TRAIN else self.score_results
        return [o for r in results for o in r.outcomes]

    @property
    def scored_sensors(self) -> list[Sensor]:
        """Sensors scored in at least one slice."""
        return sorted({(o.device, o.tag) for o in self.outcomes(RunKind.SCORE) if o.status == "ok"})

    @property
    def failed_sensors(self) -> dict[Sensor, str]:
        """Sensors that failed in some task, with the first reason."""
        failed: dict[Sensor, str] = {}
        for o in self.outcomes(RunKind.TRAIN) + self.outcomes(RunKind.SCORE):
            if o.status == "failed":
                failed.setdefault((o.device, o.tag), o.reason)
        return failed

    @property
    def skipped_sensors(self) -> dict[Sensor, str]:
        """Sensors never scored and never failed, with the reason of their (last) skip."""
        scored, failed = set(self.scored_sensors), self.failed_sensors
        skipped: dict[Sensor, str] = {}
        for o in self.outcomes(RunKind.TRAIN) + self.outcomes(RunKind.SCORE):
            sensor = (o.device, o.tag)
            if o.status == "skipped" and sensor not in scored and sensor not in failed:
                skipped[sensor] = o.reason
        return skipped

    @property
    def warnings(self) -> list[str]:
        """The training warnings task outcomes carry (``SensorOutcome.warning``), once per sensor and text."""
        outcomes = self.outcomes(RunKind.TRAIN) + self.outcomes(RunKind.SCORE)
        return list(dict.fromkeys(f"{o.device}/{o.tag}: {o.warning}" for o in outcomes if o.warning))

    @property
    def all_failed(self) -> bool:
        """True when tasks ran and every one of them failed outright (every sensor failed)."""
        results = self.train_results + self.score_results
        return bool(results) and all(r.outcomes and r.count("failed") == len(r.outcomes) for r in results)

    @property
    def scored_windows(self) -> int:
        return sum(r.predictions for r in self.score_results)


def _chunks(sensors: Sequence[Sensor], size: int) -> list[tuple[Sensor, ...]]:
    return [tuple(sensors[lo:lo + size]) for lo in range(0, len(sensors), size)]


def _specs(run_id: str, kind: RunKind, plan: Sequence[Slice], sensors_of: Sequence[Sequence[Sensor]],
           config: EvaluationConfig, parallelism: int) -> list[tuple[int, TaskSpec]]:
    """(slice index, spec) of every chunk of every slice's sensors.

    Chunks hold at most ``chunk_size`` sensors, and fewer when that leaves some of the
    executor's ``parallelism`` idle (the sidecar's rule, ``schedule.chunk_tasks``).
    """
    size = chunk_size_for(sum(len(s) for s in sensors_of), config.chunk_size, parallelism)
    specs = []
    for index, (piece, sensors) in enumerate(zip(plan, sensors_of, strict=True)):
        ts_from, ts_to = (piece.train_from, piece.train_to) if kind == RunKind.TRAIN else (piece.train_to, piece.score_to)
        for number, chunk in enumerate(_chunks(list(sensors), size)):
            specs.append((index, TaskSpec(
                f"{kind}-s{index:03d}-{number:05d}", run_id, kind, chunk, ts_from, ts_to, config.detector,
                config.store_ref, slice_model_store(config.model_store, index), window_ns=config.window_ns,
                threshold_scale=config.threshold_scale, prediction_detector=config.prediction_detector,
                incident_gap_windows=config.incident_gap_windows,
            )))
    return specs


def _execute(executor: Executor, kind: RunKind, specs: list[TaskSpec], progress: Progress | None) -> list[TaskResult]:
    if not specs:
        return []
    done = 0
    if progress:
        progress(kind, 0, len(specs))

    def finished(_: TaskResult) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(kind, done, len(specs))

    return executor.run(specs, finished)


def run_evaluation(run_id: str, config: EvaluationConfig, plan: Sequence[Slice], sensors: Sequence[Sensor],
                   executor: Executor, progress: Progress | None = None) -> EvaluationRun:
    """Train every slice, then score every slice with its own models; the tasks' outcomes in an ``EvaluationRun``.

    A slice's scoring covers the sensors its training fitted (the others have no model).
    ``run_id`` names the tasks' specs (``runs/<run_id>/tasks/...``).
    """
    if not plan:
        raise EvaluationError("nothing to evaluate: the plan has no slice")
    if not sensors:
        raise EvaluationError("nothing to evaluate: no sensors")
    sensors = sorted(set(sensors))
    train = _specs(run_id, RunKind.TRAIN, plan, [sensors] * len(plan), config, executor.parallelism)
    train_specs = [spec for _, spec in train]
    train_results = _execute(executor, RunKind.TRAIN, train_specs, progress)
    trained: list[list[Sensor]] = [[] for _ in plan]
    versions: set[str] = set()
    for (index, _), result in zip(train, train_results, strict=True):
        for o in result.outcomes:
            if o.status == "ok":
                trained[index].append((o.device, o.tag))
                versions.add(o.model_version)
    score_specs = [spec for _, spec in _specs(run_id, RunKind.SCORE, plan, trained, config, executor.parallelism)]
    score_results = _execute(executor, RunKind.SCORE, score_specs, progress)
    return EvaluationRun(run_id, tuple(plan), tuple(sensors), tuple(train_specs), tuple(train_results),
                         tuple(score_specs), tuple(score_results), frozenset(versions))


def read_evaluation_predictions(store: ScoringStore, run: EvaluationRun, detector: str, chunk_size: int = 500,
                                flagged_only: bool = True, sensors: Sequence[Sensor] | None = None) -> pa.Table:
    """This evaluation's prediction rows (``PREDICTION_SCHEMA``) over its scored range, read in chunks of sensors.

    Rows are this run's: ``detector`` (``eval:<name>``) and a model version it trained.
    ``flagged_only`` keeps the flagged rows alone (what the quality report reads).
    """
    lo, hi = run.scored_range
    versions = pa.array(sorted(run.versions), pa.string())
    wanted = list(sensors if sensors is not None else run.scored_sensors)
    parts = []
    for chunk in _chunks(wanted, max(1, chunk_size)):
        table = store.read_predictions(list(chunk), lo, hi)
        keep = pc.and_(pc.equal(table["detector"], detector), pc.is_in(table["model_version"], value_set=versions))
        if flagged_only:
            keep = pc.and_(keep, pc.fill_null(table["is_anomaly"], False))
        parts.append(table.filter(keep))
    return pa.concat_tables(parts) if parts else PREDICTION_SCHEMA.empty_table()

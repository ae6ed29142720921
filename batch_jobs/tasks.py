"""Train and score tasks: one chunk of sensors, one window read, per-sensor outcomes.

A ``TaskSpec`` (JSON, kept in the model store) says what to do; ``run_task``
does it: ONE ``ScoringStore.read_windows`` for the whole chunk (the store chunks
the fetch), the rows split per sensor with array slices, then per sensor
either fit and store a new model version (``train``) or load the latest
model and score (``score``). A score task writes all its predictions and
the incidents they make in one transaction (``ScoringStore.upsert_scores``).
Every sensor ends ``ok``, ``skipped`` (with the reason, e.g. too few
windows) or ``failed`` (with the error); one sensor's failure never loses
the others' results. ``run_task_at(spec_url)`` is what
``sensorflow task run SPEC_URL`` and the executors' workers call: it reads
the spec and writes the ``TaskResult`` beside it (``<task>.result.json``).

Specs carry no secrets: the store is ``sqlite:///PATH`` or ``env:NAME``, the
name of an environment variable holding the URL (ODBC connection strings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from sensorflow.batch_jobs.detectors import (
    Detector,
    Model,
    Scores,
    SensorWindows,
    get_detector,
    iter_sensor_windows,
)
from sensorflow.batch_jobs.incidents import DEFAULT_GAP_WINDOWS, ScoredRange, plan_incidents
from sensorflow.batch_jobs.model_store import (
    ModelCatalog,
    ModelMetadata,
    ModelStore,
    new_version,
    open_model_store,
    split_object_url,
)
from sensorflow.batch_jobs.model_store.base import id_component
from sensorflow.records.predictions import PREDICTION_SCHEMA
from sensorflow.records.runs import RunKind
from sensorflow.records.timeparse import format_ms, parse_time
from sensorflow.records.windows import END_OF_TIME
from sensorflow.store import ScoringStore, open_store

__all__ = ["SensorOutcome", "TaskError", "TaskResult", "TaskSpec", "resolve_store_url", "run_task", "run_task_at"]

ENV_PREFIX = "env:"
NS_PER_S = 1_000_000_000


class TaskError(ValueError):
    """A spec that cannot be run (bad field, store reference that does not resolve)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: a kind, a chunk of sensors and a window-time range ``(ts_from, ts_to]``.

    ``then_score`` (train only) also scores the training windows with the new
    models, from the same read: the original's train-then-predict over one hour.

    ``ts_from=None`` starts at each sensor's first window, ``ts_to=None`` ends
    at its newest; otherwise the range is the same for every sensor and
    missing window slots inside it count (dropouts), except before a
    sensor's first window ever: a sensor's range never starts before it.
    """

    task_id: str
    run_id: str
    kind: RunKind
    sensors: tuple[tuple[str, str], ...]
    ts_from: int | None
    ts_to: int | None
    detector: str
    store: str
    model_store: str
    window_ns: int = 5 * NS_PER_S
    seed_csv: bool = False
    then_score: bool = False  # train only: also score the training windows with the new models (one read for both)
    threshold_scale: float = 1.0  # the detector's sensitivity: a multiplier of each sensor's threshold (train only)
    prediction_detector: str = ""  # the Predictions.Detector of this task's rows ("": the detector's name; evaluate uses its own)
    incident_gap_windows: int = DEFAULT_GAP_WINDOWS  # flags this many unflagged slots apart are one incident (batch_jobs.incidents)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", RunKind(self.kind))  # a spec's JSON has it as text
        except ValueError:
            raise TaskError(f"task kind must be train or score, not {self.kind!r}") from None
        for name in ("task_id", "run_id"):
            value = getattr(self, name)
            if not value or "/" in value or value.startswith("."):
                raise TaskError(f"{name} must be a non-empty name without '/', got {value!r}")
        if not self.sensors:
            raise TaskError("a task needs at least one sensor")
        if any(len(s) != 2 or not all(isinstance(x, str) and x for x in s) for s in self.sensors):
            raise TaskError("sensors must be (device, tag) pairs of non-empty strings")
        if self.ts_from is not None and self.ts_to is not None and self.ts_from >= self.ts_to:
            raise TaskError(f"empty range: ts_from {self.ts_from} >= ts_to {self.ts_to}")
        if self.window_ns <= 0:
            raise TaskError("window_ns must be > 0")
        if not (isinstance(self.threshold_scale, (int, float)) and self.threshold_scale > 0):
            raise TaskError(f"threshold_scale must be a number > 0, got {self.threshold_scale!r}")
        if isinstance(self.incident_gap_windows, bool) or not (isinstance(self.incident_gap_windows, int)
                                                               and 0 <= self.incident_gap_windows <= 100_000):
            raise TaskError(f"incident_gap_windows must be a whole number >= 0, got {self.incident_gap_windows!r}")
        if self.then_score and self.kind != RunKind.TRAIN:
            raise TaskError("then_score is for train tasks")
        if not self.store.startswith(("sqlite:///", ENV_PREFIX)):
            raise TaskError(
                "a spec's store must be sqlite:///PATH or env:NAME (server URLs carry credentials: "
                "keep them in an environment variable)"
            )

    @property
    def spec_name(self) -> str:
        return f"runs/{self.run_id}/tasks/{self.task_id}.json"

    @property
    def result_name(self) -> str:
        return f"runs/{self.run_id}/tasks/{self.task_id}.result.json"

    def to_json(self) -> bytes:
        raw = dataclasses.asdict(self)
        raw["sensors"] = [list(s) for s in self.sensors]
        return json.dumps(raw, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> TaskSpec:
        """A spec from JSON; times as int ns or ISO-8601 text. ``TaskError`` names what is wrong."""
        try:
            raw = json.loads(data)
        except ValueError as e:
            raise TaskError(f"task spec is not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise TaskError("task spec must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise TaskError(f"unknown task spec field(s): {', '.join(unknown)}")
        try:
            raw["sensors"] = tuple((str(d), str(t)) for d, t in raw.get("sensors", ()))
            for name in ("ts_from", "ts_to"):
                raw[name] = _time(raw.get(name), name)
            return cls(**raw)
        except TypeError as e:
            raise TaskError(f"bad task spec: {e}") from e


def _time(value: Any, name: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and (parsed := parse_time(value)) is not None:
        return parsed
    raise TaskError(f"{name} must be ns since the epoch, an ISO-8601 time or null, not {value!r}")


@dataclass(frozen=True)
class SensorOutcome:
    """What happened to one sensor: ``ok``, ``skipped`` or ``failed``, with the reason when not ok."""

    device: str
    tag: str
    status: str
    reason: str = ""
    windows: int = 0
    anomalies: int = 0  # flagged windows written as predictions
    missing_flagged: int = 0  # of the anomalies, flagged missing window slots (dropouts): rows with Value NULL
    model_version: str = ""
    last_ts: int | None = None  # newest window end read for this sensor
    warning: str = ""  # what the model said about its training ("; "-joined ``Model.warnings()``, when it has them)


@dataclass(frozen=True)
class TaskResult:
    """A task's per-sensor outcomes, its duration and the seconds spent per stage."""

    task_id: str
    run_id: str
    kind: RunKind
    outcomes: tuple[SensorOutcome, ...]
    seconds: float
    predictions: int = 0
    cpu_seconds: float = 0.0  # CPU time of the task's process while it ran (its share of a core, under load)
    stages: dict[str, float] = field(default_factory=dict)
    error: str = ""
    incidents_opened: int = 0  # incidents this task's scores started (batch_jobs.incidents; a rescore opens none)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RunKind(self.kind))  # a result's JSON has it as text

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> TaskResult:
        raw = json.loads(data)
        raw["outcomes"] = tuple(SensorOutcome(**o) for o in raw["outcomes"])
        return cls(**raw)

    @classmethod
    def all_failed(cls, spec: TaskSpec, reason: str, seconds: float = 0.0) -> TaskResult:
        outcomes = tuple(SensorOutcome(d, t, "failed", reason) for d, t in spec.sensors)
        return cls(spec.task_id, spec.run_id, spec.kind, outcomes, seconds, error=reason)


def resolve_store_url(reference: str, environ: Mapping[str, str] = os.environ) -> str:
    """The store URL a spec refers to: ``sqlite:///...`` as is, ``env:NAME`` from the environment."""
    if not reference.startswith(ENV_PREFIX):
        return reference
    name = reference[len(ENV_PREFIX):]
    url = environ.get(name)
    if not url:
        raise TaskError(f"environment variable {name} (the store URL of this task) is not set")
    return url


def run_task_at(spec_url: str, environ: Mapping[str, str] = os.environ) -> TaskResult:
    """Read the spec at ``spec_url``, run it, write its result beside it, and return the result."""
    parent, name = split_object_url(spec_url)
    with open_model_store(parent) as beside:
        spec = TaskSpec.from_json(beside.get_bytes(name))
        result = run_task(spec, environ)
        beside.put_bytes(name.removesuffix(".json") + ".result.json", result.to_json())
    return result


def run_task(spec: TaskSpec, environ: Mapping[str, str] = os.environ) -> TaskResult:
    """Run one task; never raises for a sensor's or the store's trouble: the result says what failed."""
    started = time.perf_counter()
    try:
        detector = get_detector(spec.detector, threshold_scale=spec.threshold_scale)
        with open_store(resolve_store_url(spec.store, environ)) as store, open_model_store(spec.model_store) as models:
            return _Run(spec, detector, store, models, started).run()
    except Exception as e:  # noqa: BLE001 - a task reports every failure in its result
        return TaskResult.all_failed(spec, _reason(e), time.perf_counter() - started)


class _Run:
    """The steps of one task; ``stages`` collects seconds per step for benchmarks."""

    def __init__(self, spec: TaskSpec, detector: Detector, store: ScoringStore, models: ModelStore, started: float):
        self.spec, self.detector, self.store, self.started = spec, detector, store, started
        self.cpu_started = time.process_time()
        self.catalog = ModelCatalog(models)
        self.stages: dict[str, float] = {}
        self.outcomes: dict[tuple[str, str], SensorOutcome] = {}
        self.warnings: dict[tuple[str, str], str] = {}
        self.incidents_opened = 0

    def run(self) -> TaskResult:
        windows = self._timed("read", self._read)
        predictions = self._train(windows) if self.spec.kind == RunKind.TRAIN else self._score(windows)
        for device, tag in self.spec.sensors:
            self.outcomes.setdefault((device, tag), SensorOutcome(device, tag, "skipped", "no windows in range"))
        outcomes = tuple(self.outcomes[s] for s in self.spec.sensors)
        seconds = time.perf_counter() - self.started
        cpu = time.process_time() - self.cpu_started
        return TaskResult(self.spec.task_id, self.spec.run_id, self.spec.kind, outcomes, seconds, predictions, cpu, self.stages,
                          incidents_opened=self.incidents_opened)

    def _timed(self, stage: str, step, *args):
        t = time.perf_counter()
        try:
            return step(*args)
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - t

    def _read(self) -> list[SensorWindows]:
        spec = self.spec
        table = self.store.read_windows(list(spec.sensors), spec.ts_from or 0, spec.ts_to or END_OF_TIME)
        sensors = list(iter_sensor_windows(table, spec.ts_from or 0, spec.ts_to or END_OF_TIME, spec.window_ns))
        first = self._first_windows(sensors)
        return [self._in_range(w, first.get((w.device, w.tag))) for w in sensors]

    def _first_windows(self, sensors: list[SensorWindows]) -> dict[tuple[str, str], int]:
        """The first window ever of each sensor whose read starts after empty slots (one store call, often none).

        Those slots are dropouts only if the sensor had a window before them; a sensor
        whose read starts at the range's first slot cannot have such slots.
        """
        if self.spec.ts_from is None:
            return {}  # an open start already begins at each sensor's first window
        gapped = [(w.device, w.tag) for w in sensors if int(w.ts[0]) - self.spec.window_ns > self.spec.ts_from]
        if not gapped:
            return {}
        return {sensor: first for sensor, (first, _) in self.store.window_bounds(gapped).items()}

    def _in_range(self, windows: SensorWindows, first: int | None) -> SensorWindows:
        """The sensor's windows over its range: open ends close at its first/newest window.

        A range never starts before the sensor's first window ever (``first``), so no
        missing slot is made up for the time before the sensor existed.
        """
        start = self.spec.ts_from if self.spec.ts_from is not None else int(windows.ts[0]) - self.spec.window_ns
        if first is not None:
            start = max(start, min(first, int(windows.ts[0])) - self.spec.window_ns)
        end = self.spec.ts_to if self.spec.ts_to is not None else int(windows.ts[-1])
        return dataclasses.replace(windows, range_from=start, range_to=end)

    def _train(self, sensors: list[SensorWindows]) -> int:
        fitted: list[tuple[SensorWindows, str, Model]] = []
        models: list[tuple[ModelMetadata, Model]] = []
        for w in sensors:
            if len(w) < self.detector.min_windows:
                self._outcome(w, "skipped", f"too few windows ({len(w)} < {self.detector.min_windows})")
                continue
            try:
                model = self._timed("fit", self.detector.fit, w)
            except Exception as e:  # noqa: BLE001 - one sensor's failure must not lose the others
                self._outcome(w, "failed", _reason(e))
                continue
            if warning := _training_warning(model):
                self.warnings[(w.device, w.tag)] = warning
            meta = ModelMetadata(w.device, w.tag, self.detector.name, new_version(w.range_to), w.range_from, w.range_to, len(w))
            fitted.append((w, meta.version, model))
            models.append((meta, model))
        try:
            self._timed("models", self.catalog.put_models, models)
        except Exception as e:  # noqa: BLE001 - the store failed: every model of the chunk is lost
            for w, _, _ in fitted:
                self._outcome(w, "failed", f"model write failed: {_reason(e)}")
            return 0
        if self.spec.then_score:
            return self._predict(fitted)
        for w, version, _ in fitted:
            self._outcome(w, "ok", windows=len(w), model_version=version)
        return 0

    def _score(self, sensors: list[SensorWindows]) -> int:
        loaded = self._timed("load", self.catalog.load_latest, self.spec.detector, [(w.device, w.tag) for w in sensors])
        ready: list[tuple[SensorWindows, str, Model]] = []
        for w, stored in zip(sensors, loaded):
            if stored is None:
                self._outcome(w, "skipped", "no model yet")
            elif isinstance(stored, Exception):
                self._outcome(w, "failed", f"model: {_reason(stored)}")
            else:
                ready.append((w, stored.metadata.version, stored.model))
        return self._predict(ready)

    def _predict(self, ready: list[tuple[SensorWindows, str, Model]]) -> int:
        """Score each sensor with its model, then write all predictions and their incidents in one transaction; the number of rows.

        The incidents are planned first (``plan_incidents`` reads only outside the scored
        ranges); if that fails, the predictions are still written and the sensors fail with
        the reason (the next scoring mends their incidents).
        """
        scored: list[tuple[SensorWindows, str, Scores]] = []
        for w, version, model in ready:
            try:
                scored.append((w, version, self._timed("score", model.score, w)))
            except Exception as e:  # noqa: BLE001 - one sensor's failure must not lose the others
                self._outcome(w, "failed", _reason(e))
        detector = self.spec.prediction_detector or self.spec.detector
        table = _predictions_table(detector, scored)
        ranges = [ScoredRange(w.device, w.tag, w.range_from, w.range_to, s.ts, s.score, s.is_anomaly) for w, _, s in scored]
        plan, unplanned = None, None
        try:
            plan = self._timed("incidents", plan_incidents, self.store, detector, ranges, self.spec.window_ns,
                               self.spec.incident_gap_windows)
        except Exception as e:  # noqa: BLE001 - the predictions can still be written
            unplanned = e
        try:
            if plan is None:
                self._timed("predictions", self.store.upsert_predictions, table)
            else:
                self._timed("predictions", self.store.upsert_scores, table, plan.detector, plan.since, plan.rows)
            if self.spec.seed_csv:
                self._timed("csv", self.catalog.store.put_many, [_seed_csv(w, scores) for w, _, scores in scored])
        except Exception as e:  # noqa: BLE001 - the write failed: no sensor of the chunk has predictions
            for w, _, _ in scored:
                self._outcome(w, "failed", f"prediction write failed: {_reason(e)}")
            return 0
        if unplanned is not None:  # predictions stand; failed sensors are rescored (and their incidents mended) next run
            for w, _, _ in scored:
                self._outcome(w, "failed", f"incident write failed: {_reason(unplanned)}")
            return table.num_rows
        self.incidents_opened += plan.opened
        for w, version, scores in scored:
            flagged = scores.is_anomaly.astype(bool)
            missing = ~np.isfinite(scores.value)
            self._outcome(w, "ok", windows=len(w), anomalies=int(np.count_nonzero(flagged)),
                          missing_flagged=int(np.count_nonzero(flagged & missing)), model_version=version)
        return table.num_rows

    def _outcome(self, w: SensorWindows, status: str, reason: str = "", **counts: Any) -> None:
        last = int(w.ts[-1]) if len(w) else None
        warning = self.warnings.get((w.device, w.tag), "")
        self.outcomes[(w.device, w.tag)] = SensorOutcome(w.device, w.tag, status, reason, last_ts=last, warning=warning, **counts)


def _training_warning(model: Model) -> str:
    """The model's training warnings (``Model.warnings``) as one text, "" without any."""
    try:
        return "; ".join(str(w) for w in model.warnings())[:2000]
    except Exception as e:  # noqa: BLE001 - a broken warnings() must not lose a fitted model
        return f"warnings() failed: {_reason(e)}"


def _predictions_table(detector: str, scored: list[tuple[SensorWindows, str, Any]]) -> pa.Table:
    """One ``PREDICTION_SCHEMA`` table for the whole chunk, built from whole arrays.

    A flagged missing window slot (a dropout) has no value: its row has
    ``Value`` NULL, its score and ``IsAnomaly`` as the detector gave them.
    """
    if not scored:
        return PREDICTION_SCHEMA.empty_table()
    lengths = [len(scores.ts) for _, _, scores in scored]
    sensor_of_row = pa.array(np.repeat(np.arange(len(scored)), lengths))

    def repeated(values: list[str]) -> pa.Array:  # one string per sensor, taken for its rows by Arrow
        return pa.array(values, pa.string()).take(sensor_of_row)

    value = np.concatenate([s.value for _, _, s in scored])
    columns = {
        "ts": np.concatenate([s.ts for _, _, s in scored]),
        "device": repeated([w.device for w, _, _ in scored]),
        "tag": repeated([w.tag for w, _, _ in scored]),
        "value": pa.array(value, pa.float64(), mask=~np.isfinite(value)),
        "score": np.concatenate([s.score for _, _, s in scored]),
        "is_anomaly": np.concatenate([s.is_anomaly for _, _, s in scored]).astype(bool),
        "detector": repeated([detector] * len(scored)),
        "model_version": repeated([version for _, version, _ in scored]),
    }
    return pa.table(columns, schema=PREDICTION_SCHEMA)


def _seed_csv(w: SensorWindows, scores: Any) -> tuple[str, bytes]:
    """The original's per-sensor CSV (``TS,Device,Tag,Val,Prediction``, 1 = anomaly) and its name."""
    stamps = format_ms(np.array([w.range_from, w.range_to]))
    span = "_".join(s.replace("-", "").replace(":", "").replace(" ", "T")[:15] for s in stamps)
    name = f"predictions/preds_{id_component(w.device)}_{id_component(w.tag)}_{span}"
    keep = np.isfinite(scores.value)
    lines = ["TS,Device,Tag,Val,Prediction"]
    for ts, value, flag in zip(format_ms(scores.ts[keep]), scores.value[keep].tolist(), scores.is_anomaly[keep].tolist()):
        lines.append(f"{ts},{_csv_field(w.device)},{_csv_field(w.tag)},{value!r},{int(flag)}")
    return name, ("\n".join(lines) + "\n").encode("utf-8")


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]

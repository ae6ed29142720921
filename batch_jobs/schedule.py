"""What a sidecar run does and when the next one starts: pure planning, no I/O.

Two clocks, never mixed:
- which sensors have new windows is decided by when rows were WRITTEN
  (``WrittenAt``, the database clock): a run scans from the last successful
  score run's start minus a safety margin, so windows written late (a
  replay, a slow partition) are scored too;
- what to score and what to train on is decided in WINDOW time (``TS``):
  scoring starts ``score_lookback`` before the last run's newest window,
  training takes ``train_span`` before the newest window and is due once the
  newest window has moved ``retrain_every`` past the last training. Replayed
  history therefore schedules exactly as live data did.

Sensors that failed in the last run are planned again with their old range,
besides the new work; they never hold back the others.

What needs a model is trained at once: a sensor with windows but no model of
the configured detector (new sensor, new detector, new model store, or too
few windows so far) joins the train phase of the next run, due or not, over
the same span before the newest window; one listing of the model store
(``ModelCatalog.with_models``) tells. Skipped is not failed: a sensor with
too few windows stays without a model and is tried again when it has new
windows. The score phase plans only sensors that have a model.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sensorflow.batch_jobs.tasks import TaskResult, TaskSpec
from sensorflow.records.runs import RunKind, RunRecord, RunStatus

__all__ = [
    "SUCCESSFUL",
    "Cron",
    "Every",
    "FailedSensor",
    "ModelContext",
    "Policy",
    "Work",
    "chunk_size_for",
    "chunk_tasks",
    "failed_json",
    "failed_sensors",
    "newest_bound",
    "newest_window",
    "retries",
    "score_work",
    "train_due",
    "train_work",
    "warned_json",
    "without_model",
    "written_since",
]

Sensor = tuple[str, str]
SUCCESSFUL = (RunStatus.SUCCEEDED, RunStatus.PARTIAL)
"""Run states that move the watermark; a ``partial`` run lists its failed sensors for retry."""
WARNED_LISTED = 50
"""Warned sensors named in a run's detail (the count covers them all)."""


@dataclass(frozen=True)
class Policy:
    """The sidecar's planning knobs, all durations in ns."""

    safety_margin_ns: int
    score_lookback_ns: int
    train_span_ns: int
    retrain_every_ns: int
    chunk_size: int

    def __post_init__(self) -> None:
        if min(self.safety_margin_ns, self.score_lookback_ns) < 0 or min(self.train_span_ns, self.retrain_every_ns) <= 0:
            raise ValueError("margins must be >= 0 and the training span and period > 0")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")


@dataclass(frozen=True)
class Work:
    """Sensors that share one window-time range ``(ts_from, ts_to]`` (None: open end)."""

    sensors: tuple[Sensor, ...]
    ts_from: int | None
    ts_to: int | None


@dataclass(frozen=True)
class FailedSensor:
    """A sensor a run could not finish, with the range it was given and why (kept in the run's detail)."""

    device: str
    tag: str
    ts_from: int | None
    ts_to: int | None
    reason: str


@dataclass(frozen=True)
class ModelContext:
    """Where a train run's models went: its detector and model store, kept in the run's detail.

    A train run of another context (or none) means any sensor may lack a model:
    the next run looks at every sensor with windows, not only those written since.
    """

    detector: str
    model_store: str

    def detail(self) -> dict[str, str]:
        return {"detector": self.detector, "model_store": self.model_store}

    def trained_by(self, last_train: RunRecord | None) -> bool:
        """True if ``last_train`` trained in this context (so every older sensor had its chance at a model)."""
        if last_train is None:
            return False
        recorded = json.loads(last_train.detail or "{}")
        return (recorded.get("detector"), recorded.get("model_store")) == (self.detector, self.model_store)


def without_model(sensors: Iterable[Sensor], have_model: Collection[Sensor]) -> list[Sensor]:
    """The ``sensors`` that have no model (sorted, once each)."""
    return sorted(set(sensors) - set(have_model))


def newest_bound(bounds: Mapping[Sensor, tuple[int, int]]) -> int | None:
    """The newest window end of ``Store.window_bounds``' answer (None: no windows)."""
    return max((last for _, last in bounds.values()), default=None)


def written_since(last: RunRecord | None, policy: Policy) -> int:
    """Database time to scan ``WrittenAt`` from: the last successful run's start minus the margin (0: ever)."""
    return 0 if last is None else max(0, last.started_at - policy.safety_margin_ns)


def retries(last: RunRecord | None) -> list[FailedSensor]:
    """The failed sensors recorded in a run's detail."""
    if last is None:
        return []
    return [FailedSensor(**f) for f in json.loads(last.detail).get("failed", [])]


def score_work(
    written: Iterable[Sensor], last: RunRecord | None, failed: list[FailedSensor], policy: Policy,
    have_model: Collection[Sensor] | None = None,
) -> list[Work]:
    """New windows: from ``score_lookback`` before the last run's newest window to the newest; retries from their old start.

    With ``have_model``, only those sensors are planned: a sensor without a model has
    nothing to score with (it is trained instead, and scored from the next run on).
    """
    start = None if last is None or last.range_to is None else last.range_to - policy.score_lookback_ns
    ranges: dict[Sensor, int | None] = {sensor: start for sensor in written if have_model is None or sensor in have_model}
    for f in failed:  # a retry's earlier start wins; it reads to the newest window as well
        sensor = (f.device, f.tag)
        if have_model is not None and sensor not in have_model:
            continue
        current = ranges.get(sensor, f.ts_from)
        ranges[sensor] = None if current is None or f.ts_from is None else min(current, f.ts_from)
    return _group({sensor: (ts_from, None) for sensor, ts_from in ranges.items()})


def train_due(newest: int | None, last_train: RunRecord | None, policy: Policy) -> bool:
    """Training is due when there is data and no training yet, or the newest window moved ``retrain_every`` past it."""
    if newest is None:
        return False
    if last_train is None or last_train.range_to is None:
        return True
    return newest - last_train.range_to >= policy.retrain_every_ns


def train_work(sensors: Iterable[Sensor], newest: int | None, failed: list[FailedSensor], policy: Policy) -> list[Work]:
    """The ``train_span`` before the newest window for ``sensors``; failed ones with their old range."""
    sensors = list(sensors)
    if sensors and newest is None:
        raise ValueError("training new sensors needs the newest window")
    ranges: dict[Sensor, tuple[int | None, int | None]] = {
        s: (newest - policy.train_span_ns, newest) for s in sensors  # type: ignore[operator]
    }
    for f in failed:
        ranges.setdefault((f.device, f.tag), (f.ts_from, f.ts_to))
    return _group(ranges)


def _group(ranges: dict[Sensor, tuple[int | None, int | None]]) -> list[Work]:
    groups: dict[tuple[int | None, int | None], list[Sensor]] = {}
    for sensor in sorted(ranges):
        groups.setdefault(ranges[sensor], []).append(sensor)
    return [Work(tuple(sensors), ts_from, ts_to) for (ts_from, ts_to), sensors in groups.items()]


def chunk_size_for(total: int, chunk_size: int, parallelism: int) -> int:
    """Sensors per task: at most ``chunk_size``, fewer when ``total`` would leave some of ``parallelism`` idle."""
    return max(1, min(chunk_size, -(-total // max(1, parallelism))))


def chunk_tasks(
    run_id: str, kind: RunKind, work: list[Work], policy: Policy, parallelism: int = 1, **spec_fields
) -> list[TaskSpec]:
    """One ``TaskSpec`` per chunk of each work group's sensors (``spec_fields``: detector, store, ...).

    Chunks hold at most ``chunk_size`` sensors, and fewer when that leaves some of the
    executor's ``parallelism`` (tasks it runs at once) idle: 500 sensors on 2 workers are
    2 tasks of 250, not 1 task of 500 and an idle worker.
    """
    size = chunk_size_for(sum(len(group.sensors) for group in work), policy.chunk_size, parallelism)
    specs = []
    for group in work:
        for lo in range(0, len(group.sensors), size):
            sensors = group.sensors[lo:lo + size]
            task_id = f"{kind}-{len(specs):05d}"
            specs.append(TaskSpec(task_id, run_id, kind, sensors, group.ts_from, group.ts_to, **spec_fields))
    return specs


def failed_sensors(specs: list[TaskSpec], results: list[TaskResult]) -> list[FailedSensor]:
    """Every failed sensor of a run with the range its task had."""
    failed = []
    for spec, result in zip(specs, results):
        for o in result.outcomes:
            if o.status == "failed":
                failed.append(FailedSensor(o.device, o.tag, spec.ts_from, spec.ts_to, o.reason))
    return failed


def newest_window(results: list[TaskResult]) -> int | None:
    """The newest window end any task read."""
    ends = [o.last_ts for r in results for o in r.outcomes if o.last_ts is not None]
    return max(ends) if ends else None


def failed_json(failed: list[FailedSensor]) -> list[dict]:
    return [asdict(f) for f in failed]


def warned_json(results: list[TaskResult], listed: int = WARNED_LISTED) -> dict:
    """The sensors whose models warned (``SensorOutcome.warning``): their count and the first ``listed`` of them."""
    warned = [o for r in results for o in r.outcomes if o.warning]
    return {"count": len(warned), "sensors": [{"device": o.device, "tag": o.tag, "warning": o.warning} for o in warned[:listed]]}


@dataclass(frozen=True)
class Every:
    """Runs every ``seconds`` of wall time (when to wake up only; ranges are window time)."""

    seconds: float

    def next_after(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


@dataclass(frozen=True)
class Cron:
    """Runs at the times of a cron expression (``10 * * * *``: minute 10 of every hour, as the seed's scoring)."""

    expression: str

    def __post_init__(self) -> None:
        from croniter import croniter

        if not croniter.is_valid(self.expression):
            raise ValueError(f"bad cron expression {self.expression!r}")

    def next_after(self, now: datetime) -> datetime:
        from croniter import croniter

        return croniter(self.expression, now).get_next(datetime)

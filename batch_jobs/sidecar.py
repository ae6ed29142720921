"""The sidecar: on a schedule, score what was written since the last run and retrain when due.

Each run holds the store's lease row (``RunLedger.try_lease``) so two sidecars
started together never run the same work; the one that does not get it
does nothing. A run lists which sensors have a model of the detector (one
listing of the model store), scores those, then trains when due
(``schedule.train_due``), when sensors are left to retry, or when sensors
with windows have no model yet; each phase is one row in ``Runs`` (kind,
window-time range, sensors, tasks, failures, duration, and a JSON detail
with the failed sensors that the next run retries and the sensors whose
models warned).
Planning is ``sensorflow.batch_jobs.schedule``; the tasks run on an ``Executor``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TextIO

from tqdm import tqdm

from sensorflow.batch_jobs.executors import Executor
from sensorflow.batch_jobs.metrics import SidecarMetrics
from sensorflow.batch_jobs.model_store import ModelCatalog, ModelStoreError, open_model_store
from sensorflow.batch_jobs.schedule import (
    SUCCESSFUL,
    Cron,
    Every,
    ModelContext,
    Policy,
    Sensor,
    Work,
    chunk_tasks,
    failed_json,
    failed_sensors,
    newest_bound,
    newest_window,
    retries,
    score_work,
    train_due,
    train_work,
    warned_json,
    without_model,
    written_since,
)
from sensorflow.batch_jobs.tasks import TaskResult, TaskSpec
from sensorflow.records.runs import RunKind, RunRecord, RunStatus
from sensorflow.store import PlanningStore, ScoringStore

__all__ = ["Phase", "PhaseProgress", "Sidecar", "SidecarConfig", "SidecarReport", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SidecarConfig:
    """What the sidecar plans with. ``store_ref`` is the store as task specs name it (no secrets)."""

    store_ref: str
    model_store: str
    detector: str
    policy: Policy
    window_ns: int = 5_000_000_000
    lease_name: str = "sidecar"
    lease_seconds: float = 600.0
    seed_csv: bool = False
    threshold_scale: float = 1.0
    incident_gap_windows: int = 3  # flags this many unflagged slots apart are one incident (batch_jobs.incidents)


@dataclass(frozen=True, eq=False)
class Phase:
    """One phase of a run: its ``Runs`` row, specs and task results."""

    run: RunRecord
    specs: tuple[TaskSpec, ...]
    results: tuple[TaskResult, ...]

    def count(self, status: str) -> int:
        return sum(r.count(status) for r in self.results)


@dataclass(frozen=True, eq=False)
class SidecarReport:
    """What one ``run_once`` did; ``leased`` is False when another sidecar held the lease."""

    leased: bool
    score: Phase | None = None
    train: Phase | None = None


class PhaseProgress:
    """Tasks done / total of one phase on ``out``: a tqdm bar on a terminal; otherwise plain lines once the
    phase has run ``every_s`` seconds (a short phase adds nothing to the run's own report): what it is
    doing, then at most one line every ``every_s`` seconds as tasks finish, and one when the last has.

    ``bar``: True a bar always, None a bar on a terminal only (plain lines otherwise), False nothing.
    ``every_s`` 0: lines from the start, one per task.
    """

    def __init__(self, kind: str, tasks: int, sensors: int, bar: bool | None, out: TextIO | None = None, every_s: float = 5.0):
        self.kind, self.tasks, self.sensors = kind, tasks, sensors
        self.out = out if out is not None else sys.stderr
        self.every_s = every_s
        self.done = self.sensors_done = self.failed = 0
        self._started = self._printed = time.monotonic()
        self._lock = threading.Lock()
        self._announced = False
        self._timer: threading.Timer | None = None
        isatty = getattr(self.out, "isatty", None)
        self._silent = bar is False
        self._bar = None
        if bar or (bar is None and isatty is not None and isatty()):
            self._bar = tqdm(total=tasks, desc=f"{kind} (tasks)", unit="task", file=self.out, leave=False)
        elif not self._silent and every_s <= 0:
            self._announce()
        elif not self._silent:
            self._timer = threading.Timer(every_s, self._announce)  # a phase still running then says so
            self._timer.daemon = True
            self._timer.start()

    def task_done(self, result: TaskResult) -> None:
        with self._lock:
            self.done += 1
            self.sensors_done += len(result.outcomes)
            self.failed += result.count("failed")
            if self._bar is not None:
                self._bar.set_postfix_str(f"{self.sensors_done:,}/{self.sensors:,} sensors, {self.failed:,} failed", refresh=False)
                self._bar.update(1)
            elif self._announced and (self.done == self.tasks or time.monotonic() - self._printed >= self.every_s):
                self._line(
                    f"{self.done:,}/{self.tasks:,} tasks done ({self.sensors_done:,}/{self.sensors:,} sensors, "
                    f"{self.failed:,} failed) in {time.monotonic() - self._started:.0f} s"
                )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._silent = True  # a timer already firing says nothing after the end
        if self._bar is not None:
            self._bar.close()

    def _announce(self) -> None:
        with self._lock:
            if self._silent or self.done == self.tasks:
                return
            self._announced = True
            done = f", {self.done:,} done" if self.done else ""
            self._line(f"{self.tasks:,} task(s) of {self.sensors:,} sensors{done}")

    def _line(self, text: str) -> None:
        self._printed = time.monotonic()
        print(f"sensorflow sidecar: {self.kind}: {text}", file=self.out, flush=True)


class Sidecar:
    """Plans runs from the store's ``Runs`` and runs their tasks on ``executor``.

    ``progress``: see :class:`PhaseProgress` (None: a bar on a terminal, plain lines otherwise;
    False: nothing). ``metrics`` counts every finished phase.
    """

    def __init__(self, config: SidecarConfig, store: PlanningStore, executor: Executor, progress: bool | None = None,
                 metrics: SidecarMetrics | None = None):
        self.config, self.store, self.executor, self.progress = config, store, executor, progress
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renewed = 0.0

    def run_once(self) -> SidecarReport:
        """One run under the lease: score the sensors with models, then train what is due or has no model.

        False ``leased`` if another sidecar is running. A sensor trained here is scored from the next run on.
        """
        if not self.store.try_lease(self.config.lease_name, self.owner, self.config.lease_seconds):
            log.info("lease %r is held by another sidecar: nothing to do", self.config.lease_name)
            return SidecarReport(leased=False)
        self._renewed = time.monotonic()
        try:
            last_score, last_train = self._last(RunKind.SCORE), self._last(RunKind.TRAIN)
            since = written_since(last_score, self.config.policy)
            written = self.store.sensors_written_since(since)
            context = ModelContext(self.config.detector, self.config.model_store)
            # Sensors that may lack a model: those with new windows, or all of them where this
            # detector and model store have not trained yet (a new detector, a new model store).
            rescan = not context.trained_by(last_train)
            candidates = self.store.sensors_written_since(0) if rescan and since > 0 else written
            have_model = self._with_models(set(candidates).union((f.device, f.tag) for f in retries(last_score)))
            missing = without_model(candidates, have_model)
            # Where the windows of sensors without a model end: the store says (two index seeks a sensor).
            # Before any scoring the score watermark starts there, as when a first run read everything and
            # scored nothing; training always reaches there, or sensors that had too few windows at the
            # first runs (no model, so no scores to move the watermark) would be trained on that span for ever.
            unknown = last_score is None or last_score.range_to is None
            newest_missing = newest_bound(self.store.window_bounds(missing)) if missing else None
            score = self._score(last_score, since, written, have_model, newest_missing if unknown else None)
            reach = [t for t in (score.run.range_to, newest_missing) if t is not None]
            train = self._train(last_train, max(reach) if reach else None, missing, context, rescan)
            return SidecarReport(True, score, train)
        finally:
            self.store.release_lease(self.config.lease_name, self.owner)

    def _with_models(self, sensors: set[Sensor]) -> set[Sensor]:
        """Of ``sensors``, those with a model (one listing); a model store that cannot be listed fails the run.

        The failed score run is recorded and moves no watermark: the next run plans the same work again.
        """
        try:
            with open_model_store(self.config.model_store) as models:
                return ModelCatalog(models).with_models(self.config.detector, sensors)
        except ModelStoreError as e:
            now = self.store.database_time()
            run_id = _new_run_id(RunKind.SCORE, now)
            detail = {"owner": self.owner, "error": f"listing models: {type(e).__name__}: {e}"}
            self.store.upsert_run(RunRecord(run_id, RunKind.SCORE, RunStatus.FAILED, now, now, detail=json.dumps(detail)))
            raise

    def _last(self, kind: RunKind) -> RunRecord | None:
        return next((r for r in self.store.read_runs(kind=kind, limit=100) if r.status in SUCCESSFUL), None)

    def _score(
        self, last: RunRecord | None, since: int, written: list[Sensor], have_model: set[Sensor], newest_known: int | None
    ) -> Phase:
        """Score the sensors with a model; the run's ``range_to`` is the newest window seen so far."""
        work = score_work(written, last, retries(last), self.config.policy, have_model)
        detail = {"since": since, "written": len(written), "without_model": len(without_model(written, have_model))}
        phase = self._phase(RunKind.SCORE, work, detail)
        newest = newest_window(list(phase.results))
        carried = max((t for t in (newest, last and last.range_to, newest_known) if t is not None), default=None)
        run = replace(phase.run, range_to=carried)
        self.store.upsert_run(run)
        if self.metrics is not None and work and isinstance(self.store, ScoringStore):  # a store that keeps incidents
            opened = sum(result.incidents_opened for result in phase.results)  # each task counts the Starts it made
            self.metrics.incidents(opened, len(self.store.read_incidents(open_only=True, detector=self.config.detector)))  # type: ignore[attr-defined]
        return replace(phase, run=run)

    def _train(
        self, last: RunRecord | None, newest: int | None, missing: list[Sensor], context: ModelContext, rescan: bool
    ) -> Phase | None:
        """Train over the span before ``newest`` (the newest window seen so far): when due, the sensors
        written since the last training; always the ``missing`` ones (no model yet) and retries.

        ``rescan`` (a new detector or model store) records a run even with nothing to train, so the
        next run need not look at every sensor again.
        """
        if newest is None:
            missing = []  # no windows at all
        due = train_due(newest, last, self.config.policy)
        failed = retries(last)
        if not (due or failed or missing or rescan):
            return None
        sensors = self.store.sensors_written_since(written_since(last, self.config.policy)) if due else []
        work = train_work(sorted(set(sensors).union(missing)), newest, failed, self.config.policy)
        detail = {"due": due, "newest_window": newest, "without_model": len(missing), **context.detail()}
        phase = self._phase(RunKind.TRAIN, work, detail)
        run = replace(phase.run, range_to=newest if due else last and last.range_to)
        self.store.upsert_run(run)
        return replace(phase, run=run)

    def _phase(self, kind: RunKind, work: list[Work], detail: dict) -> Phase:
        started = self.store.database_time()
        run_id = _new_run_id(kind, started)
        specs = chunk_tasks(
            run_id, kind, work, self.config.policy, self.executor.parallelism, detector=self.config.detector, store=self.config.store_ref,
            model_store=self.config.model_store, window_ns=self.config.window_ns, seed_csv=self.config.seed_csv,
            threshold_scale=self.config.threshold_scale, incident_gap_windows=self.config.incident_gap_windows,
        )
        sensors = sum(len(s.sensors) for s in specs)
        starts = [w.ts_from for w in work if w.ts_from is not None]
        run = RunRecord(run_id, kind, RunStatus.RUNNING, started, range_from=min(starts) if starts else None,
                        sensors=sensors, tasks=len(specs))
        self.store.upsert_run(run)
        clock = time.perf_counter()
        try:
            results = self._execute(kind, specs, sensors)
        except BaseException as e:
            stopped = isinstance(e, KeyboardInterrupt)  # SIGINT, or SIGTERM raised as one (sensorflow.lifecycle)
            why = f"interrupted: {e or 'SIGINT'}" if stopped else f"{type(e).__name__}: {e}"
            error = {**detail, **(self.executor.run_detail() if specs else {}), "error": why}
            status = RunStatus.INTERRUPTED if stopped else RunStatus.FAILED
            ended = replace(run, status=status, finished_at=self.store.database_time(), detail=json.dumps(error))
            self.store.upsert_run(ended)
            if self.metrics is not None:
                self.metrics.phase_done(ended, ())
            raise
        failed = failed_sensors(specs, results)
        failed_tasks = sum(1 for r in results if r.outcomes and r.count("failed") == len(r.outcomes))
        status = RunStatus.SUCCEEDED if not failed else (RunStatus.FAILED if failed_tasks == len(results) else RunStatus.PARTIAL)
        skipped: dict[str, int] = {}
        for r in results:
            for o in r.outcomes:
                if o.status == "skipped":
                    skipped[o.reason] = skipped.get(o.reason, 0) + 1
        detail = {
            **detail, **(self.executor.run_detail() if specs else {}), "owner": self.owner, "seconds": round(time.perf_counter() - clock, 3),
            "predictions": sum(r.predictions for r in results), "skipped": skipped,
            "tasks": [{"task_id": r.task_id, "sensors": len(r.outcomes), "failed": r.count("failed"),
                       "seconds": round(r.seconds, 3), "error": r.error} for r in results],
            "failed": failed_json(failed), "warned": warned_json(results),
        }
        run = replace(run, status=status, finished_at=self.store.database_time(), failures=len(failed),
                      detail=json.dumps(detail))
        if self.metrics is not None:
            self.metrics.phase_done(run, results)
        return Phase(run, tuple(specs), tuple(results))

    def _execute(self, kind: RunKind, specs: list[TaskSpec], sensors: int) -> list[TaskResult]:
        if not specs:
            return []
        progress = PhaseProgress(str(kind), len(specs), sensors, self.progress)
        try:
            def done(result: TaskResult) -> None:
                progress.task_done(result)
                self._renew()

            return self.executor.run(specs, done)
        finally:
            progress.close()

    def _renew(self) -> None:
        """Keep the lease while tasks finish (every third of its lifetime)."""
        if time.monotonic() - self._renewed < self.config.lease_seconds / 3:
            return
        if not self.store.try_lease(self.config.lease_name, self.owner, self.config.lease_seconds):
            log.warning("lease %r was taken over while this run was in progress", self.config.lease_name)
        self._renewed = time.monotonic()


def _new_run_id(kind: RunKind, started: int) -> str:
    """A run's id: its start (database time, UTC, to the second), its kind and a random suffix."""
    return f"{datetime.fromtimestamp(started / 1e9, UTC):%Y%m%dT%H%M%S}-{kind}-{uuid.uuid4().hex[:6]}"


def serve(sidecar: Sidecar, schedule: Every | Cron, stop: threading.Event,
          on_report: Callable[[SidecarReport], None] | None = None) -> None:
    """Run on ``schedule`` until ``stop`` is set; a failed run is logged and the next one runs on time."""
    while not stop.is_set():
        try:
            report = sidecar.run_once()
            if on_report:
                on_report(report)
        except Exception:
            log.exception("sidecar run failed")
        now = datetime.now(UTC)
        stop.wait(max(0.0, (schedule.next_after(now) - now).total_seconds()))

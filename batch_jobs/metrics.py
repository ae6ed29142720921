"""The sidecar's Prometheus metrics: runs, their durations, sensors trained / scored / failed, incidents.

:class:`SidecarMetrics` is a collector (prometheus-client's own instruments, kept out of the
global registry so that two sidecars in one process, as in tests, never clash);
``sensorflow.exposition.MetricsServer`` serves it. :meth:`SidecarMetrics.phase_done` is called
once per finished phase with its ``Runs`` row and task results; :meth:`SidecarMetrics.incidents`
after each score phase with what the store's ``Incidents`` table says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import Metric

from sensorflow.batch_jobs.tasks import TaskResult
from sensorflow.records.runs import RunRecord

__all__ = ["RUN_SECONDS_BUCKETS", "SidecarMetrics"]

RUN_SECONDS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
"""Upper bounds (seconds) of the phase duration histogram: a few seconds for a small store to hours for Azure Batch."""

_NS = 1_000_000_000


class SidecarMetrics:
    """Counters of the sidecar's phases (kind ``score`` or ``train``), read when scraped."""

    def __init__(self) -> None:
        self.runs = Counter(
            "sensorflow_sidecar_runs", "Sidecar phases finished, by kind (score, train) and status (succeeded, partial, "
            "failed, interrupted)", ["kind", "status"], registry=None,
        )
        self.seconds = Histogram(
            "sensorflow_sidecar_run_seconds", "Duration of a sidecar phase from its start to its Runs row's end",
            ["kind"], buckets=RUN_SECONDS_BUCKETS, registry=None,
        )
        self.sensors = Counter(
            "sensorflow_sidecar_sensors", "Sensors handled by sidecar phases, by kind (score: scored, train: trained) "
            "and outcome (ok, skipped, failed)", ["kind", "outcome"], registry=None,
        )
        self.predictions = Counter("sensorflow_sidecar_predictions", "Prediction rows written by score phases", registry=None)
        self.flagged = Counter("sensorflow_sidecar_flagged_windows", "Windows flagged as anomalous by score phases", registry=None)
        self.last_finished = Gauge(
            "sensorflow_sidecar_last_run_finished_seconds", "When the last phase of each kind finished, Unix seconds "
            "(alert when it falls behind the schedule)", ["kind"], registry=None,
        )
        self.incidents_opened = Counter(
            "sensorflow_sidecar_incidents_opened", "Incidents (runs of flagged windows of one sensor) that began after "
            "the windows the previous score run had seen", registry=None,
        )
        self.open_incidents = Gauge(
            "sensorflow_sidecar_open_incidents", "Incidents that may still go on (their sensor's newest scored window "
            "is within the gap of their end), after the last score run", registry=None,
        )
        self._instruments = (self.runs, self.seconds, self.sensors, self.predictions, self.flagged, self.last_finished,
                             self.incidents_opened, self.open_incidents)

    def phase_done(self, run: RunRecord, results: Sequence[TaskResult]) -> None:
        """Count one finished (or failed, or interrupted) phase: its ``Runs`` row and the results of its tasks."""
        kind = str(run.kind)
        self.runs.labels(kind, str(run.status)).inc()
        if run.finished_at is not None:
            self.seconds.labels(kind).observe(max(0.0, (run.finished_at - run.started_at) / _NS))
            self.last_finished.labels(kind).set(run.finished_at / _NS)
        outcomes: dict[str, int] = {"ok": 0, "skipped": 0, "failed": 0}
        for result in results:
            for outcome in result.outcomes:
                outcomes[outcome.status] = outcomes.get(outcome.status, 0) + 1
        for outcome, count in outcomes.items():
            self.sensors.labels(kind, outcome).inc(count)
        self.predictions.inc(sum(r.predictions for r in results))
        self.flagged.inc(sum(o.anomalies for r in results for o in r.outcomes))

    def incidents(self, opened: int, open_now: int) -> None:
        """After a score phase: ``opened`` incidents began in it, ``open_now`` are open."""
        self.incidents_opened.inc(opened)
        self.open_incidents.set(open_now)

    def collect(self) -> Iterator[Metric]:
        for instrument in self._instruments:
            yield from instrument.collect()

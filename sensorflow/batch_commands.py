"""What ``sensorflow sidecar`` and ``sensorflow task run`` do once their flags are parsed.

``sensorflow/cli.py`` owns the argparse side; these functions take typed
settings, build the store, executor and sidecar, print a short report and
return the exit code. Secrets (ODBC URLs, the Blob connection string) reach
task processes through their environment, never through a spec.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from sensorflow.assembly import open_executor
from sensorflow.batch_jobs.azure_batch import RESULT_FILE_ENV
from sensorflow.batch_jobs.azure_batch_pool import BatchSetupError
from sensorflow.batch_jobs.metrics import SidecarMetrics
from sensorflow.batch_jobs.model_store import ModelStoreError
from sensorflow.batch_jobs.schedule import Cron, Every, Policy
from sensorflow.batch_jobs.sidecar import Phase, Sidecar, SidecarConfig, SidecarReport, serve
from sensorflow.batch_jobs.tasks import TaskError, run_task_at
from sensorflow.lifecycle import exit_status, raise_on_sigterm, stopped_by
from sensorflow.records.runs import RunKind
from sensorflow.records.timeparse import format_ms
from sensorflow.settings import ExecutorSettings, SidecarSettings
from sensorflow.store import StoreError, open_store

__all__ = ["describe_phase", "sidecar_command", "sidecar_from_settings", "task_environment", "task_run_command"]

log = logging.getLogger(__name__)
NS = 1_000_000_000
STORE_ENV = "SENSORFLOW_STORE"


def task_environment(settings: ExecutorSettings) -> tuple[str, str, str, dict[str, str]]:
    """(store URL, store as specs name it, model store URL, environment for task processes).

    Local paths become absolute (task processes may start elsewhere); a
    server store travels as ``env:SENSORFLOW_STORE``.
    """
    environ: dict[str, str] = {}
    store = settings.store
    if store.startswith("sqlite:///"):
        store = "sqlite:///" + str(Path(store[len("sqlite:///"):]).resolve())
        reference = store
    else:
        reference = f"env:{STORE_ENV}"
        environ[STORE_ENV] = store
    model_store = settings.model_store
    if "://" not in model_store:
        model_store = str(Path(model_store).resolve())
    if settings.blob_connection_string is not None:
        environ["SENSORFLOW_BLOB_CONNECTION_STRING"] = settings.blob_connection_string.get_secret_value()
    if settings.blob_account_url:
        environ["SENSORFLOW_BLOB_ACCOUNT_URL"] = settings.blob_account_url
    return store, reference, model_store, environ


def sidecar_from_settings(settings: SidecarSettings, store_ref: str, model_store: str) -> SidecarConfig:
    from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR

    policy = Policy(
        safety_margin_ns=round(settings.safety_margin_seconds * NS),
        score_lookback_ns=round(settings.score_lookback_seconds * NS),
        train_span_ns=round(settings.train_seconds * NS),
        retrain_every_ns=round(settings.retrain_every_seconds * NS),
        chunk_size=settings.chunk_size,
    )
    return SidecarConfig(
        store_ref, model_store, settings.detector or DEFAULT_DETECTOR, policy,
        window_ns=settings.window_ns, lease_seconds=settings.lease_seconds, seed_csv=settings.seed_csv,
        threshold_scale=settings.threshold_scale, incident_gap_windows=settings.incident_gap_windows,
    )


def sidecar_command(settings: SidecarSettings, once: bool) -> int:
    store_url, reference, model_store, environ = task_environment(settings)
    os.environ.update(environ)  # this process writes specs to the model store too
    config = sidecar_from_settings(settings, reference, model_store)
    schedule = Cron(settings.cron) if settings.cron else Every(settings.interval_seconds)
    raise_on_sigterm()  # SIGTERM stops a run in progress too, as Ctrl-C does: Kubernetes waits only 30 s
    try:
        with open_store(store_url) as store, open_executor(settings, environ) as executor, _metrics(settings) as metrics:
            store.create_schema()
            sidecar = Sidecar(config, store, executor, metrics=metrics)
            if once:
                print_report(sidecar.run_once())
                return 0
            print(f"sensorflow sidecar: running {schedule} until stopped (Ctrl-C or SIGTERM)", file=sys.stderr)
            serve(sidecar, schedule, threading.Event(), print_report)
            return 0
    except KeyboardInterrupt as e:  # the run in progress is recorded as interrupted; the next run redoes its work
        print(f"sensorflow sidecar: stopped by {stopped_by(e)}", file=sys.stderr)
        return exit_status(e)
    except (StoreError, ModelStoreError, TaskError, BatchSetupError) as e:
        print(f"sensorflow sidecar: {e}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _metrics(settings: SidecarSettings) -> Iterator[SidecarMetrics | None]:
    """The sidecar's metrics, served on ``settings.metrics_port`` while it runs (none without a port)."""
    if settings.metrics_port is None:
        yield None
        return
    from sensorflow.exposition import MetricsServer

    metrics = SidecarMetrics()
    with MetricsServer(metrics, port=settings.metrics_port) as server:
        print(f"sensorflow sidecar: metrics on http://127.0.0.1:{server.port}/metrics", file=sys.stderr, flush=True)
        yield metrics


def print_report(report: SidecarReport) -> None:
    if not report.leased:
        print("sensorflow sidecar: another sidecar holds the lease; nothing to do", flush=True)
        return
    for phase in (report.score, report.train):
        if phase is not None:
            print(f"sensorflow sidecar: {describe_phase(phase)}", flush=True)


def describe_phase(phase: Phase) -> str:
    """One line: run id, sensors and outcomes, predictions, window range, duration."""
    run = phase.run
    skipped: dict[str, int] = {}
    for result in phase.results:
        for o in result.outcomes:
            if o.status == "skipped":
                skipped[o.reason] = skipped.get(o.reason, 0) + 1
    why = f" ({', '.join(f'{reason}: {n:,}' for reason, n in sorted(skipped.items()))})" if skipped else ""
    predictions = sum(r.predictions for r in phase.results)
    anomalies = sum(o.anomalies for r in phase.results for o in r.outcomes)
    missing = sum(o.missing_flagged for r in phase.results for o in r.outcomes)
    span = ""
    if run.range_to is not None:
        end = format_ms([run.range_to])[0]
        span = f"; windows {format_ms([run.range_from])[0]} .. {end}" if run.range_from is not None else f"; windows up to {end}"
    dropouts = f" ({missing:,} of them missing slots)" if missing else ""
    scored = f"; {predictions:,} predictions, {anomalies:,} flagged{dropouts}" if run.kind == RunKind.SCORE else ""
    seconds = (run.finished_at - run.started_at) / NS if run.finished_at else 0.0
    return (
        f"{run.kind} run {run.run_id} {run.status}: {run.sensors:,} sensors in {run.tasks} task(s), "
        f"{phase.count('ok'):,} ok, {phase.count('skipped'):,} skipped{why}, {run.failures:,} failed"
        f"{scored}{span} ({seconds:.1f} s)"
    )


def task_run_command(spec_url: str) -> int:
    """Run the task at ``spec_url``; exit 1 if it could not run at all (Azure Batch then retries it).

    With ``SENSORFLOW_TASK_RESULT_FILE`` set (Azure Batch sets it), the result
    is also written to that local file, which Batch uploads as an output file.
    """
    try:
        result = run_task_at(spec_url)
    except (ModelStoreError, TaskError) as e:
        print(f"sensorflow task run: {e}", file=sys.stderr)
        return 1
    result_file = os.environ.get(RESULT_FILE_ENV)
    if result_file:
        Path(result_file).write_bytes(result.to_json())
    print(
        f"sensorflow task run: {result.kind} task {result.task_id} of run {result.run_id}: "
        f"{result.count('ok')} ok, {result.count('skipped')} skipped, {result.count('failed')} failed; "
        f"{result.predictions:,} predictions in {result.seconds:.1f} s"
    )
    if result.error:
        print(f"sensorflow task run: {result.error}", file=sys.stderr)
        return 1
    return 0

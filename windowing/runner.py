"""Runs the dataflow on a replay source with optional Bytewax recovery, reporting progress."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bytewax.dataflow import Dataflow
from pydantic import TypeAdapter

from sensorflow.ingest.replay import ReplaySource
from sensorflow.ingest.replay.source import ReadMeter
from sensorflow.store import open_store
from sensorflow.store.metadata import prepare_window_store
from sensorflow.windowing.cluster import ClusterMember, run_local_cluster
from sensorflow.windowing.dataflow import FlowOptions, build_flow
from sensorflow.windowing.execution import Execution, Output, RunReport, execute, init_recovery_dir
from sensorflow.windowing.interrupts import Interrupts
from sensorflow.windowing.progress import Progress
from sensorflow.windowing.sink import WindowSink
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.writer import WriterProcess

__all__ = ["JOBS", "ReplayInput", "ReplayJob", "prepare_flow", "replay_source", "run_replay"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayInput:
    """A recording to replay: its path, bytes per read batch, and pace (None: as fast as possible)."""

    path: Path
    block_bytes: int = 3 << 20
    replay_speed: float | None = None


@dataclass(frozen=True)
class ReplayJob:
    """Everything a replay run needs; every process of a cluster builds its flow from the same job."""

    input: ReplayInput
    output: Output
    flow: FlowOptions = field(default_factory=FlowOptions)
    execution: Execution = field(default_factory=Execution)
    metrics_port: int | None = None  # serve /metrics, /healthz, /readyz while the replay runs (0: a free port)


JOBS: TypeAdapter[ReplayJob] = TypeAdapter(ReplayJob)
"""A job as JSON and back: how a local cluster's processes get the same job."""


def run_replay(job: ReplayJob, member: ClusterMember | None = None, progress: TextIO = sys.stderr,
               writer_process: WriterProcess | None = None) -> RunReport:
    """Replay ``job.input`` into ``job.output.store``; returns when the input ends.

    ``writer_process``: a store writer's interpreter the caller started early, which a
    single-process run's writer takes over; closed at once if this run has no use for it. The
    caller closes it as well (a no-op once taken or closed).

    With ``execution.processes > 1`` and no ``member``, this process is process 0 of a local
    Bytewax cluster and starts the others itself (see ``sensorflow.windowing.cluster``). With a
    ``member`` (Bytewax's cluster variables, a pod of the StatefulSet) it is one member of that
    cluster; the recovery partitions were made by the pod's init step.

    SIGINT or SIGTERM stops the flow where it is (``sensorflow.windowing.interrupts``): the writer
    commits what it was handed if the store answers within a bound, the recovery state stays at its
    last committed epoch, and this raises ``KeyboardInterrupt`` (``lifecycle.Terminated`` for SIGTERM);
    a rerun with the same recovery directory resumes.
    """
    execution = job.execution
    if writer_process is not None and (member is not None or execution.processes > 1 or job.output.writer != "process"):
        writer_process.close()  # only a single process's own writer process takes it over
    if member is None or member.process_id == 0:  # the others write only once process 0 has joined
        with open_store(job.output.store, job.output.retry) as store:
            prepare_window_store(store, job.flow.window_ns, job.flow.decode.time_source)  # refuses other settings
    if member is None and execution.recovery_dir is not None:
        _log_start(Path(execution.recovery_dir), execution.total_workers)
    elif execution.recovery_dir is not None:
        Path(execution.recovery_dir).mkdir(parents=True, exist_ok=True)  # may hold none of the partitions
    interrupts = Interrupts()
    flow, partitions, stats, window_sink, meter = _prepare(job, interrupts)
    with _metrics(job, member, stats, progress), interrupts, Progress(stats, execution.progress_seconds, progress, meter):
        try:
            if member is not None:
                execute(flow, execution, member.process_id, list(member.addresses))
            elif execution.processes == 1:
                window_sink.start_writer(writer_process)  # the only process: it builds the window sink's partition
                try:
                    execute(flow, execution)
                finally:
                    window_sink.close_unused()
            else:
                for child in run_local_cluster(flow, execution, JOBS.dump_python(job, mode="json")):
                    stats.merge(child)
        except Exception:  # Bytewax re-raises the interrupt as the cause of its own error
            interrupts.raise_if_stopped()
            raise
        interrupts.raise_if_stopped()  # a close() may have kept it instead of raising
        window_sink.raise_failure()
    with open_store(job.output.store, job.output.retry) as store:
        summary = store.summary()
    return RunReport(partitions, stats, summary, source=str(job.input.path))


def _metrics(job: ReplayJob, member: ClusterMember | None, stats: RunStats, out: TextIO) -> contextlib.AbstractContextManager:
    """/metrics, /healthz, /readyz while the replay runs if ``job.metrics_port`` is set (process 0 of a cluster)."""
    if job.metrics_port is None or (member is not None and member.process_id != 0):
        return contextlib.nullcontext()
    from sensorflow.windowing.service import MetricsServer, RunCollector

    server = MetricsServer(RunCollector(stats, {}), lambda: (True, "replaying"), job.metrics_port)
    print(f"sensorflow: metrics on http://127.0.0.1:{server.port}/metrics", file=out, flush=True)
    return server


def prepare_flow(job: ReplayJob) -> tuple[Dataflow, int, RunStats]:
    """The dataflow for ``job``; every process of a cluster builds the same one."""
    flow, partitions, stats, _, _ = _prepare(job, None)
    return flow, partitions, stats


def replay_source(job: ReplayJob) -> ReplaySource:
    """The job's source; a paced one judges readings with the flow's own decode settings (time
    source, oldest and furthest-ahead event time), so what decoding refuses never sets the pace."""
    return ReplaySource(Path(job.input.path), job.input.block_bytes, job.input.replay_speed, job.flow.decode)


def _log_start(directory: Path, workers: int) -> None:
    """Say whether this run resumes: only a committed epoch is state to resume from. A directory the
    assembly layer has just made (partitions and identity, nothing committed) is a fresh start."""
    init_recovery_dir(directory, workers)  # a caller without the assembly layer may pass a missing one
    if _holds_committed_epoch(directory):
        log.info("resuming from the recovery state in %s", directory)
    else:
        log.info("starting fresh: no committed state in recovery directory %s", directory)


def _holds_committed_epoch(directory: Path) -> bool:
    """True if a Bytewax partition in ``directory`` holds a committed epoch (its ``commits`` table; integers only)."""
    for part in sorted(directory.glob("part-*.sqlite3")):
        with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as con:
            if con.execute("SELECT 1 FROM commits LIMIT 1").fetchone():
                return True
    return False


def _prepare(job: ReplayJob, interrupts: Interrupts | None) -> tuple[Dataflow, int, RunStats, WindowSink, ReadMeter]:
    source = replay_source(job)
    stats = RunStats()
    config = job.flow.config(tuple(source.list_parts()), job.execution.total_workers)
    interrupts = interrupts or Interrupts()  # a cluster child's own: never entered, it only answers "not stopping"
    window_sink = WindowSink(
        job.output.store, stats, job.output.writer, retry=job.output.retry,
        stopping=lambda: interrupts.stopping, interrupted=interrupts.kept,
    )
    flow = build_flow(source, config, window_sink, stats)
    return flow, len(config.partitions), stats, window_sink, source.meter

"""Runs the dataflow on a live Event Hub: checkpoints, metrics, graceful stop; one process or a cluster.

Start position of each partition, in order of precedence: Bytewax's recovery state (when
``recovery_dir`` holds a committed epoch); else the consumer group's Blob checkpoints (our
resume blobs beside the Event Hubs checkpoints, see ``sensorflow.windowing.resume.checkpoints``); else
``starting_position``. The run ends on SIGTERM/SIGINT, ``max_runtime_seconds`` or
``stop_after_idle_seconds``: the source stops, the flow finishes what it read, takes its last
snapshot, and the final checkpoint is written before this returns. A stop by SIGTERM/SIGINT is
bounded (``sensorflow.windowing.interrupts``): if the graceful stop has not finished within
:data:`GRACE_SECONDS` (an unreachable store or Blob account, a cluster peer gone), the flow is
interrupted as a replay is, every exit step waits a bounded time, and the run raises
``KeyboardInterrupt`` (``lifecycle.Terminated`` for SIGTERM) within 10 s of the signal. The
recovery state stays at its last committed epoch, the checkpoints at their last write: a restart
resumes from either. However it stops, the run's report counts the windows still open (folded,
not written) and says where the next start rebuilds them from; a signal's report rides on its
interrupt (``sensorflow.windowing.summary``), with the store read once, for at most 2 s.

With Bytewax's cluster variables set (a pod of the StatefulSet), this process is one member of
a cluster: it reads the Event Hubs partitions Bytewax gives its workers, and writes the resume
blobs and Event Hubs checkpoints of the partitions whose lateness step it runs (the source's
durable positions and offsets reach that step inside the batches) and the shard ends its window
sink commits; every member loads the same blobs at start.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions
from sensorflow.ingest.eventhubs.host import ReceiverError, ReceiverHost
from sensorflow.ingest.eventhubs.source import EventHubsSource
from sensorflow.store import RetryPolicy, StoreSummary, open_store
from sensorflow.store.metadata import prepare_window_store
from sensorflow.windowing.cluster import ClusterMember
from sensorflow.windowing.dataflow import FlowOptions, build_flow
from sensorflow.windowing.execution import Execution, Output, RunReport, execute, init_recovery_dir
from sensorflow.windowing.interrupts import Interrupts
from sensorflow.windowing.progress import Progress
from sensorflow.windowing.resume.board import ResumeBoard
from sensorflow.windowing.resume.checkpoints import BlobCheckpoints, Checkpointer, CheckpointLocation, StreamIdentity
from sensorflow.windowing.service import Figures, MetricsServer, RunCollector, StopSignal
from sensorflow.windowing.sink import WindowSink
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.summary import with_report
from sensorflow.windowing.writer import WriterProcess

__all__ = ["GRACE_SECONDS", "LiveJob", "LiveSourceError", "has_bytewax_state", "run_live"]

log = logging.getLogger(__name__)

# A run stopped by a signal exits within 10 s (Kubernetes kills it 30 s after SIGTERM): the graceful
# stop gets GRACE_SECONDS, then every exit step a bound of its own.
GRACE_SECONDS = 3.0
_CHECKPOINT_STOP_SECONDS = 1.0  # the checkpointer thread, when a write hangs on an unreachable account
_FINAL_CHECKPOINT_SECONDS = 2.0
_RECEIVERS_STOP_SECONDS = 1.5  # the receiver process closes its links; then it is killed
_SUMMARY_STOP_SECONDS = 2.0  # the store's summary for a signal's final report (a login may hang for 30 s)


class LiveSourceError(RuntimeError):
    """The Event Hub cannot be used (unreachable, unknown, refused); the message is one line."""


@dataclass(frozen=True)
class LiveJob:
    """Everything a live run needs; built from the settings by the assembly layer.

    ``checkpoints`` None: no Blob checkpoints (a restart then needs the Bytewax recovery state).
    The run stops after ``max_runtime_seconds``, or ``stop_after_idle_seconds`` without events
    (None: never), or on SIGTERM/SIGINT.
    """

    connection: EventHubsConnection
    output: Output
    receive: ReceiveOptions = field(default_factory=ReceiveOptions)
    checkpoints: CheckpointLocation | None = None
    flow: FlowOptions = field(default_factory=FlowOptions)
    execution: Execution = field(default_factory=Execution)
    metrics_port: int | None = None
    max_runtime_seconds: float | None = None
    stop_after_idle_seconds: float | None = None


def has_bytewax_state(directory: Path | None, workers: int, init: bool = True) -> bool:
    """True if ``directory`` holds a committed Bytewax epoch; a missing or empty one is initialised
    with ``workers`` partitions (``init``; a pod of a cluster gets its share from its init step).

    Reads only Bytewax's ``commits`` table (integers), never its pickled snapshots.
    """
    if directory is None or init_recovery_dir(directory, workers, partitions=init):
        return False
    for part in sorted(Path(directory).glob("*.sqlite3")):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as con:
            if con.execute("SELECT 1 FROM commits LIMIT 1").fetchone():
                return True
    return False


def _partition_ids(host: ReceiverHost, connection: EventHubsConnection) -> list[str]:
    try:
        return host.partition_ids()
    except ReceiverError as e:  # we cannot start; say which hub
        raise LiveSourceError(f"cannot read the partitions of event hub {connection.hub!r} on {connection.namespace}: {e}") from e


def _checkpoints(job: LiveJob) -> BlobCheckpoints | None:
    if job.checkpoints is None:
        return None
    connection = job.connection
    identity = StreamIdentity(
        connection.namespace, connection.hub, job.receive.consumer_group, job.flow.window_ns, job.flow.lateness_ns
    )
    return BlobCheckpoints(job.checkpoints, identity)


def run_live(
    job: LiveJob,
    member: ClusterMember | None = None,
    progress: TextIO = sys.stderr,
    stats: RunStats | None = None,
    stop_event: threading.Event | None = None,
) -> RunReport:
    """Consume the Event Hub of ``job`` into ``job.output.store`` until told to stop.

    ``stats`` lets a caller watch the run's counters; setting ``stop_event`` stops it like SIGTERM.
    With a ``member`` (Bytewax's cluster variables), this process is one member of a multi-process
    cluster (see the module docstring); the Blob checkpoints are then every member's way to the
    same start, so every member loads them (a key's Bytewax state still wins over them).
    """
    execution = job.execution
    cluster = member is not None and execution.processes > 1
    connection, options = job.connection, job.receive
    stop = StopSignal(job.max_runtime_seconds, job.stop_after_idle_seconds, stop_event, signals=False)
    interrupts = Interrupts(graceful=stop.stop, grace_seconds=GRACE_SECONDS)
    stats = stats if stats is not None else RunStats()
    partitions: list[str] = []
    finished = False
    try:
        with ExitStack() as stack:
            stack.enter_context(interrupts)  # first in, last out: a signal during any exit step is handled too
            # The receiver process starts first: its start-up overlaps ours.
            host = ReceiverHost(connection, options)
            stack.callback(lambda: host.close(_RECEIVERS_STOP_SECONDS if interrupts.stopping else 15.0))
            # Then the store writer's interpreter, so it is ready by the first closed windows. Started
            # only when Bytewax builds the window sink, it held the first batch handed to it (a pipe it
            # did not read yet) for 0.5-0.9 s, during which the flow read nothing.
            writer_process = None if cluster or job.output.writer != "process" else stack.enter_context(WriterProcess())
            if member is None or member.process_id == 0:  # the others write only once process 0 has joined
                with open_store(job.output.store, job.output.retry) as store:
                    prepare_window_store(store, job.flow.window_ns, job.flow.decode.time_source)  # refuses other settings
            partitions[:] = _partition_ids(host, connection)
            config = job.flow.config(tuple(partitions), execution.total_workers)
            resumed = has_bytewax_state(execution.recovery_dir, execution.workers, init=member is None)
            checkpoints = _checkpoints(job)
            board = None
            if checkpoints is not None:
                stack.callback(_bounded_when, interrupts, checkpoints.close, _CHECKPOINT_STOP_SECONDS, "closing the checkpoint store")
                start = checkpoints.load() if cluster or not resumed else None
                board = ResumeBoard(config.shards, start)
            starts = {p: point.position for p, point in board.start.partitions.items()} if board and board.start else {}
            if resumed:
                log.info("resuming from the Bytewax recovery state in %s", execution.recovery_dir)
            if starts and (cluster or not resumed):
                log.info("starting from Blob checkpoints: %s", {p: starts[p] for p in sorted(starts)})
            source = EventHubsSource(connection, options, partitions, starts, board is not None, stop.event, host, cluster)
            stop.attach_activity(lambda: sum(s.received_events for s in list(source.status.values())), source.connected)
            window_sink = WindowSink(
                job.output.store, stats, job.output.writer, board.windows if board else None, job.output.retry,
                stopping=lambda: interrupts.stopping, interrupted=interrupts.kept,
                # the store-commit barrier at every epoch guards the recovery state and the checkpoints: none, no wait
                barrier=board is not None or execution.recovery_dir is not None,
            )
            if writer_process is not None:
                window_sink.start_writer(writer_process)  # the only process: it builds the window sink's partition
                stack.callback(window_sink.close_unused)
            flow = build_flow(source, config, window_sink, stats, board)
            checkpointer = None
            if checkpoints is not None:
                interval = min(1.0, execution.snapshot_interval_seconds)
                checkpointer = Checkpointer(checkpoints, board, interval, shards_shared=cluster)
                stack.enter_context(_running(checkpointer, interrupts))
            if job.metrics_port is not None:
                health = _Health(source, job.output.store, checkpointer)
                collector = RunCollector(stats, source.status, partial(_board_figures, board, checkpointer))
                server = stack.enter_context(MetricsServer(collector, health.ready, job.metrics_port))
                print(f"sensorflow: metrics on http://127.0.0.1:{server.port}/metrics", file=progress, flush=True)
            with stop, Progress(stats, execution.progress_seconds, progress):
                try:
                    if member is not None:
                        execute(flow, execution, member.process_id, list(member.addresses))
                    else:
                        execute(flow, execution)
                except Exception:  # Bytewax re-raises an interrupt as the cause of its own error
                    interrupts.raise_if_stopped()
                    raise
            finished = True  # the flow returned: its last snapshot holds the windows still open
            if not interrupts.stopping:
                window_sink.raise_failure()  # the flow may end without raising a failure of its last writes
            if checkpointer is not None and window_sink.failure is None:  # the flow ended: everything read is processed and committed
                _bounded_when(interrupts, checkpointer.stop, _CHECKPOINT_STOP_SECONDS, "stopping the checkpointer")
                if not cluster:  # in a cluster, the other processes may still be finishing: the sources sent their last durable positions
                    for partition, position in source.final_positions.items():
                        if position is not None:
                            board.source_durable(partition, position)
                _bounded_when(interrupts, checkpointer.flush, _FINAL_CHECKPOINT_SECONDS, "the final checkpoint")
            log.info("stopped (%s)", stop.reason or "input ended")
            interrupts.raise_if_stopped()  # stopped by a signal: exit 130 / 143, after the final checkpoint
    except KeyboardInterrupt as interrupt:  # stopped by a signal: the summary rides on the interrupt
        store = _store_summary(job, quick=True) if finished else None  # unfinished: the store may be what hung
        with_report(interrupt, _report(job, len(partitions), stats, store, stop.reason, finished))
        raise
    return _report(job, len(partitions), stats, _store_summary(job, quick=False), stop.reason, True)


def _report(job: LiveJob, partitions: int, stats: RunStats, store: StoreSummary | None, reason: str | None,
            finished: bool) -> RunReport:
    """The run's report: counters, store, and the windows still open (counted once the flow has returned)."""
    connection = job.connection
    return RunReport(
        partitions, stats, store, source=f"event hub {connection.hub!r} on {connection.namespace}", live=True,
        open_windows=stats.open_windows() if finished else None, rebuilt_from=_rebuilt_from(job),
        stop_reason=reason or "asked to stop",
    )


def _rebuilt_from(job: LiveJob) -> str | None:
    """Where the next start gets the windows still open back from (see the module docstring); None: nowhere."""
    sources = []
    if job.execution.recovery_dir is not None:
        sources.append(f"the recovery state in {job.execution.recovery_dir} (the same --recovery-dir)")
    if job.checkpoints is not None:
        sources.append(f"the hub, re-read from the Blob checkpoints in container {job.checkpoints.container!r}")
    return ", else ".join(sources) or None


def _store_summary(job: LiveJob, quick: bool) -> StoreSummary | None:
    """What the store holds. ``quick`` (a stop by a signal, which must stay within its bound): one try on a
    daemon thread for at most :data:`_SUMMARY_STOP_SECONDS`; None if it failed or did not answer in time."""
    if not quick:
        with open_store(job.output.store, job.output.retry) as store:
            return store.summary()
    found: list[StoreSummary] = []

    def read() -> None:
        try:
            with open_store(job.output.store, _PROBE) as store:
                found.append(store.summary())
        except Exception as e:  # the summary says the store was not read; the stop goes on
            log.warning("the store's summary could not be read at the stop: %s: %s", type(e).__name__, e)

    reader = threading.Thread(target=read, name="stop-summary", daemon=True)
    reader.start()
    reader.join(_SUMMARY_STOP_SECONDS)
    return found[0] if found else None


class _running:
    """Starts a checkpointer on enter; stops it on exit (even when the flow failed; bounded once stopping)."""

    def __init__(self, checkpointer: Checkpointer, interrupts: Interrupts):
        self._checkpointer = checkpointer
        self._interrupts = interrupts

    def __enter__(self) -> Checkpointer:
        return self._checkpointer.start()

    def __exit__(self, *exc: object) -> None:
        _bounded_when(self._interrupts, self._checkpointer.stop, _CHECKPOINT_STOP_SECONDS, "stopping the checkpointer")


def _bounded_when(interrupts: Interrupts, step: Callable[[], object], seconds: float, what: str) -> None:
    """``step()``; once a signal is stopping the run, on a daemon thread for at most ``seconds`` (a Blob
    account that does not answer must not hold the stop up: the checkpoints stay at their last write,
    which a restart resumes from), and a failure is logged instead of raised."""
    if not interrupts.stopping:
        step()
        return
    done = threading.Event()
    failure: list[Exception] = []

    def run() -> None:
        try:
            step()
        except Exception as error:  # reported below; the run is stopping either way
            failure.append(error)
        finally:
            done.set()

    threading.Thread(target=run, name="stop-step", daemon=True).start()
    if not done.wait(seconds):
        log.warning("%s did not finish within %g s of the stop; left to end with the process", what, seconds)
    elif failure:
        log.warning("%s failed while stopping: %s: %s", what, type(failure[0]).__name__, failure[0])


def _board_figures(board: ResumeBoard | None, checkpointer: Checkpointer | None) -> Figures:
    if board is None or checkpointer is None:
        return {}
    return {
        "checkpoint_writes": ("Event Hubs checkpoints written to Blob Storage", checkpointer.writes),
        "checkpoint_failures": ("Event Hubs checkpoint writes that failed (retried at the next one)", checkpointer.failures),
        "committed_window_end_seconds": (
            "End of the newest window committed to the store, Unix seconds (where a restart from checkpoints resumes)",
            max(board.windows.closed_through, 0) / 1e9,
        ),
        "replayed_readings_skipped": (
            "Readings read again after a restart from checkpoints and dropped because their windows were already stored",
            board.stored_skipped,
        ),
    }


_PROBE = RetryPolicy(budget_seconds=0)


class _Health:
    """/readyz: receivers connected, store answering, checkpoints written."""

    def __init__(self, source: EventHubsSource, store_url: str, checkpointer: Checkpointer | None):
        self._source = source
        self._store_url = store_url
        self._checkpointer = checkpointer

    def ready(self) -> tuple[bool, str]:
        waiting = sorted(p for p, s in list(self._source.status.items()) if not s.connected)
        if waiting:
            return False, f"partitions not connected: {', '.join(waiting)}"
        if self._checkpointer is not None and not self._checkpointer.healthy:
            return False, f"checkpoint writes failing ({self._checkpointer.failures} in a row)"
        try:
            with open_store(self._store_url, _PROBE) as store:  # a probe answers now: no retries
                store.database_time()
        except Exception as e:  # any failure to answer means not ready; the reason is shown
            return False, f"store not answering: {type(e).__name__}"
        return True, "ready"

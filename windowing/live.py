"""Runs the dataflow on a live Event Hub: checkpoints, metrics, graceful stop; one process or a cluster.

Start position of each partition, in order of precedence: Bytewax's recovery state (when
``recovery_dir`` holds a committed epoch); else the consumer group's Blob checkpoints (our
resume blobs beside the Event Hubs checkpoints, see ``sensorflow.ingest.eventhubs.checkpoints``); else
``starting_position``. The run ends on SIGTERM/SIGINT, ``max_runtime_seconds`` or
``stop_after_idle_seconds``: the source stops, the flow finishes what it read, takes its last
snapshot, and the final checkpoint is written before this returns.

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
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TextIO

from bytewax.recovery import init_db_dir

from sensorflow.ingest.decode import DecodeConfig
from sensorflow.ingest.eventhubs.checkpoints import (
    BlobCheckpoints,
    Checkpointer,
    CheckpointLocation,
    StreamIdentity,
)
from sensorflow.ingest.eventhubs.config import (
    EventHubsConnection,
    ReceiveOptions,
    parse_starting_position,
)
from sensorflow.ingest.eventhubs.host import ReceiverError, ReceiverHost
from sensorflow.ingest.eventhubs.source import EventHubsSource
from sensorflow.ingest.timeparse import NS_PER_S
from sensorflow.settings import RunSettings
from sensorflow.windowing.dataflow import FlowConfig, build_flow
from sensorflow.windowing.resume import ResumeBoard
from sensorflow.windowing.runner import RunReport, _Progress, execute
from sensorflow.windowing.service import MetricsServer, RunCollector, StopSignal
from sensorflow.windowing.sink import DeadLetterSink, WindowSink
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.store import open_store

__all__ = ["LiveSourceError", "has_bytewax_state", "run_live"]

log = logging.getLogger(__name__)


class LiveSourceError(RuntimeError):
    """The Event Hub cannot be used (unreachable, unknown, refused); the message is one line."""


def has_bytewax_state(directory: Path | None, workers: int, init: bool = True) -> bool:
    """True if ``directory`` holds a committed Bytewax epoch; a missing or empty one is initialised
    with ``workers`` partitions (``init``; a pod of a cluster gets its share from its init step).

    Reads only Bytewax's ``commits`` table (integers), never its pickled snapshots.
    """
    if directory is None:
        return False
    directory = Path(directory)
    if not directory.exists() or not any(directory.iterdir()):
        directory.mkdir(parents=True, exist_ok=True)
        if init:
            init_db_dir(directory, max(1, workers))
        return False
    for part in sorted(directory.glob("*.sqlite3")):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as con:
            if con.execute("SELECT 1 FROM commits LIMIT 1").fetchone():
                return True
    return False


def _connection(settings: RunSettings) -> EventHubsConnection:
    return EventHubsConnection(
        eventhub_name=settings.eventhub_name,
        connection_string=settings.eventhub_connection_string,
        fully_qualified_namespace=settings.eventhub_namespace,
    )


def _options(settings: RunSettings) -> ReceiveOptions:
    return ReceiveOptions(
        consumer_group=settings.consumer_group,
        starting_position=parse_starting_position(settings.starting_position),
        batch_size=settings.receive_batch_size,
        max_wait_seconds=settings.receive_wait_seconds,
        prefetch=max(2 * settings.receive_batch_size, 300),
        owner_level=settings.owner_level,
    )


def _partition_ids(host: ReceiverHost, connection: EventHubsConnection) -> list[str]:
    try:
        return host.partition_ids()
    except ReceiverError as e:  # we cannot start; say which hub
        raise LiveSourceError(f"cannot read the partitions of event hub {connection.hub!r} on {connection.namespace}: {e}") from e


def _checkpoints(settings: RunSettings, connection: EventHubsConnection) -> BlobCheckpoints | None:
    if settings.checkpoint_container is None:
        return None
    location = CheckpointLocation(
        settings.checkpoint_container, settings.checkpoint_connection_string, settings.checkpoint_account_url
    )
    identity = StreamIdentity(
        connection.namespace, connection.hub, settings.consumer_group, settings.window_ns, settings.lateness_ns
    )
    return BlobCheckpoints(location, identity)


def run_live(
    settings: RunSettings,
    progress: TextIO = sys.stderr,
    stats: RunStats | None = None,
    stop_event: threading.Event | None = None,
) -> RunReport:
    """Consume the Event Hub in ``settings`` into ``settings.store`` until told to stop.

    ``stats`` lets a caller watch the run's counters; setting ``stop_event`` stops it like SIGTERM.
    With Bytewax's cluster variables set, this process is one member of a multi-process cluster
    (see the module docstring); the Blob checkpoints are then every member's way to the same
    start, so every member loads them (a key's Bytewax state still wins over them).
    """
    from sensorflow.windowing.cluster import member_from_env

    member = member_from_env()
    if member is not None:
        settings = member.settings_for(settings)
    cluster = member is not None and settings.processes > 1
    connection, options = _connection(settings), _options(settings)
    with ExitStack() as stack:
        # The receiver process starts first: its start-up overlaps ours.
        host = stack.enter_context(ReceiverHost(connection, options))
        if member is None or member.process_id == 0:  # the others write only once process 0 has joined
            with open_store(settings.store) as store:
                store.create_schema()
        partitions = _partition_ids(host, connection)
        shards = settings.shards or settings.workers * settings.processes
        resumed = has_bytewax_state(settings.recovery_dir, settings.workers, init=member is None)
        checkpoints = _checkpoints(settings, connection)
        board = None
        if checkpoints is not None:
            stack.callback(checkpoints.close)
            start = checkpoints.load() if cluster or not resumed else None
            board = ResumeBoard(shards, start)
        starts = {p: point.position for p, point in board.start.partitions.items()} if board and board.start else {}
        if resumed:
            log.info("resuming from the Bytewax recovery state in %s", settings.recovery_dir)
        if starts and (cluster or not resumed):
            log.info("starting from Blob checkpoints: %s", {p: starts[p] for p in sorted(starts)})
        stats = stats if stats is not None else RunStats()
        stop = StopSignal(settings.max_runtime_seconds, settings.stop_after_idle_seconds, stop_event)
        source = EventHubsSource(connection, options, partitions, starts, board is not None, stop.event, host, cluster)
        stop.attach_activity(lambda: sum(s.received_events for s in list(source.status.values())), source.connected)
        config = FlowConfig(
            partitions=tuple(partitions),
            window_ns=settings.window_ns,
            lateness_ns=settings.lateness_ns,
            shards=shards,
            idle_timeout_ns=settings.idle_timeout_ns,
            decode=DecodeConfig(
                time_source=settings.time_source,
                min_event_ns=int(settings.min_event_time.timestamp()) * NS_PER_S,
                max_clock_skew_ns=round(settings.max_clock_skew_seconds * NS_PER_S),
            ),
        )
        window_sink = WindowSink(settings.store, stats, settings.writer, board.windows if board else None)
        dead_letter_sink = DeadLetterSink(partial(open_store, settings.store), stats)
        flow = build_flow(source, config, window_sink, dead_letter_sink, stats, board)
        checkpointer = None
        if checkpoints is not None:
            interval = min(1.0, settings.snapshot_interval_seconds)
            checkpointer = Checkpointer(checkpoints, board, interval, shards_shared=cluster)
            stack.enter_context(_running(checkpointer))
        if settings.metrics_port is not None:
            health = _Health(source, settings.store, checkpointer)
            collector = RunCollector(stats, source.status, partial(_board_figures, board, checkpointer))
            server = stack.enter_context(MetricsServer(collector, health.ready, settings.metrics_port))
            print(f"sensorflow: metrics on http://127.0.0.1:{server.port}/metrics", file=progress, flush=True)
        with stop, _Progress(stats, settings.progress_seconds, progress):
            if member is not None:
                execute(flow, settings, member.process_id, list(member.addresses))
            else:
                execute(flow, settings)
        if checkpointer is not None:  # the flow ended: everything read is processed and committed
            checkpointer.stop()
            if not cluster:  # in a cluster, the other processes may still be finishing: the sources sent their last durable positions
                for partition, position in source.final_positions.items():
                    if position is not None:
                        board.source_durable(partition, position)
            checkpointer.flush()
        log.info("stopped (%s)", stop.reason or "input ended")
    with open_store(settings.store) as store:
        summary = store.summary()
    return RunReport(len(partitions), stats, summary)


class _running:
    """Starts a checkpointer on enter; stops it on exit (even when the flow failed)."""

    def __init__(self, checkpointer: Checkpointer):
        self._checkpointer = checkpointer

    def __enter__(self) -> Checkpointer:
        return self._checkpointer.start()

    def __exit__(self, *exc: object) -> None:
        self._checkpointer.stop()


def _board_figures(board: ResumeBoard | None, checkpointer: Checkpointer | None) -> dict[str, float]:
    if board is None or checkpointer is None:
        return {}
    return {
        "checkpoint_writes": checkpointer.writes,
        "checkpoint_failures": checkpointer.failures,
        "committed_window_end_seconds": max(board.windows.closed_through, 0) / 1e9,
        "replayed_readings_skipped": board.stored_skipped,
    }


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
            with open_store(self._store_url) as store:
                store.database_time()
        except Exception as e:  # any failure to answer means not ready; the reason is shown
            return False, f"store not answering: {type(e).__name__}"
        return True, "ready"

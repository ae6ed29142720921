"""Runs the dataflow on a replay source with optional Bytewax recovery, reporting progress."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TextIO

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from sensorflow.ingest.decode import DecodeConfig
from sensorflow.ingest.replay import ReplaySource
from sensorflow.ingest.timeparse import NS_PER_S
from sensorflow.settings import RunSettings
from sensorflow.windowing.dataflow import FlowConfig, build_flow
from sensorflow.windowing.sink import DeadLetterSink, WindowSink
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.store import StoreSummary, open_store

__all__ = ["RunReport", "run_replay"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    """What one run did, and what the store holds afterwards."""

    partitions: int
    stats: RunStats
    store: StoreSummary


def run_replay(settings: RunSettings, progress: TextIO = sys.stderr) -> RunReport:
    """Replay ``settings.source`` into ``settings.store``; returns when the input ends.

    With ``processes > 1`` this process is process 0 of a local Bytewax
    cluster and starts the others itself (see ``sensorflow.windowing.cluster``). With
    Bytewax's cluster variables set (a pod of the StatefulSet) it is one member
    of that cluster; the recovery partitions were made by the pod's init step.
    """
    from sensorflow.windowing.cluster import member_from_env

    member = member_from_env()
    if member is not None:
        settings = member.settings_for(settings)
    if member is None or member.process_id == 0:  # the others write only once process 0 has joined
        with open_store(settings.store) as store:
            store.create_schema()
    if member is None:
        _recovery(settings.recovery_dir, settings.workers * settings.processes, init=True)
    elif settings.recovery_dir is not None:
        Path(settings.recovery_dir).mkdir(parents=True, exist_ok=True)  # may hold none of the partitions
    flow, partitions, stats, window_sink = _prepare(settings)
    with _Progress(stats, settings.progress_seconds, progress):
        if member is not None:
            execute(flow, settings, member.process_id, list(member.addresses))
        elif settings.processes == 1:
            window_sink.start_writer()  # the only process: it builds the window sink's partition
            try:
                execute(flow, settings)
            finally:
                window_sink.close_unused()
        else:
            from sensorflow.windowing.cluster import run_local_cluster

            for child in run_local_cluster(settings, flow):
                stats.merge(child)
    with open_store(settings.store) as store:
        summary = store.summary()
    return RunReport(partitions, stats, summary)


def prepare_flow(settings: RunSettings) -> tuple[Dataflow, int, RunStats]:
    """The dataflow for ``settings``; every process of a cluster builds the same one."""
    flow, partitions, stats, _ = _prepare(settings)
    return flow, partitions, stats


def _prepare(settings: RunSettings) -> tuple[Dataflow, int, RunStats, WindowSink]:
    source = ReplaySource(Path(settings.source), settings.block_bytes, settings.replay_speed)
    stats = RunStats()
    config = FlowConfig(
        partitions=tuple(source.list_parts()),
        window_ns=settings.window_ns,
        lateness_ns=settings.lateness_ns,
        shards=settings.shards or settings.workers * settings.processes,
        decode=DecodeConfig(
            time_source=settings.time_source,
            min_event_ns=int(settings.min_event_time.timestamp()) * NS_PER_S,
            max_clock_skew_ns=round(settings.max_clock_skew_seconds * NS_PER_S),
        ),
    )
    opener = partial(open_store, settings.store)
    window_sink = WindowSink(settings.store, stats, settings.writer)
    flow = build_flow(source, config, window_sink, DeadLetterSink(opener, stats), stats)
    return flow, len(config.partitions), stats, window_sink


def execute(flow: Dataflow, settings: RunSettings, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    """Run ``flow`` to the end of its input in this process (one member of a cluster when addresses are given)."""
    cli_main(
        flow,
        workers_per_process=settings.workers,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.snapshot_interval_seconds),
        recovery_config=_recovery(settings.recovery_dir, settings.workers * settings.processes),
    )


def _recovery(directory: Path | None, workers: int, init: bool = False) -> RecoveryConfig | None:
    if directory is None:
        return None
    directory = Path(directory)
    if init:
        if not directory.exists() or not any(directory.iterdir()):
            directory.mkdir(parents=True, exist_ok=True)
            init_db_dir(directory, max(1, workers))
            log.info("initialised recovery store in %s", directory)
        else:
            log.info("resuming from recovery store in %s", directory)
    return RecoveryConfig(str(directory))


class _Progress:
    """Prints the stats line every ``interval`` seconds while the flow runs."""

    def __init__(self, stats: RunStats, interval: float, out: TextIO):
        self._stats = stats
        self._interval = interval
        self._out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> "_Progress":
        if self._interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            print(f"sensorflow: {self._stats.progress_line()}", file=self._out, flush=True)

"""How a built dataflow runs: worker threads, processes, epochs, recovery; shared by replay and live runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from sensorflow.store import RetryPolicy, StoreSummary
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.tumbling import OpenWindows

__all__ = ["Execution", "Output", "RunReport", "execute", "init_recovery_dir", "recovery_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    """Where and how the flow executes; built from the settings by the assembly layer.

    ``processes`` > 1 without a cluster from the environment is a local cluster whose process 0
    is the caller (``sensorflow.windowing.cluster``). ``progress_seconds`` 0 prints no progress.
    """

    workers: int = 1
    processes: int = 1
    snapshot_interval_seconds: float = 10.0
    recovery_dir: Path | None = None
    progress_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.processes < 1:
            raise ValueError("workers and processes must be >= 1")
        if self.snapshot_interval_seconds <= 0 or self.progress_seconds < 0:
            raise ValueError("snapshot_interval_seconds must be > 0 and progress_seconds >= 0")

    @property
    def total_workers(self) -> int:
        return self.workers * self.processes


@dataclass(frozen=True)
class Output:
    """Where windows and dead letters go: the store's URL, whether a writer process writes windows, and how long
    a server store retries transient errors."""

    store: str
    writer: Literal["process", "inline"] = "process"
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class RunReport:
    """What one run did, and what the store holds afterwards (``sensorflow.windowing.summary`` prints it).

    ``source`` names the input; ``store`` None: the store was not read (it did not answer as the
    run stopped). Live runs only: ``open_windows``, the windows still open at the stop (None: not
    counted, the stop was interrupted), ``rebuilt_from``, where the next start gets them back, and
    ``stop_reason``.
    """

    partitions: int
    stats: RunStats
    store: StoreSummary | None
    source: str = ""
    live: bool = False
    open_windows: OpenWindows | None = None
    rebuilt_from: str | None = None
    stop_reason: str | None = None


def execute(flow: Dataflow, execution: Execution, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    """Run ``flow`` to the end of its input in this process (one member of a cluster when addresses are given)."""
    cli_main(
        flow,
        workers_per_process=execution.workers,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=execution.snapshot_interval_seconds),
        recovery_config=recovery_config(execution.recovery_dir, execution.total_workers),
    )


def recovery_config(directory: Path | None, workers: int, init: bool = False) -> RecoveryConfig | None:
    """Bytewax's recovery config for ``directory`` (None: no recovery); ``init`` makes a missing or empty one."""
    if directory is None:
        return None
    if init:
        if init_recovery_dir(directory, workers):
            log.info("initialised recovery store in %s", directory)
        else:
            log.info("resuming from recovery store in %s", directory)
    return RecoveryConfig(str(directory))


def init_recovery_dir(directory: Path, workers: int, partitions: bool = True) -> bool:
    """Make ``directory`` if it is missing or empty, with ``workers`` recovery partitions (``partitions``;
    a pod of a cluster gets its share from its init step); True if it was made, False if it held something."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    if partitions:
        init_db_dir(directory, max(1, workers))
    return True

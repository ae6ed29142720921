"""The Bytewax sink that hands window rows and dead letters to the store writer.

Window rows and dead letters (late readings included) go to a writer process
(``sensorflow.windowing.writer``): ``write_batch`` hands a batch over and returns, so
decoding the next input overlaps the store's work on another core, and ``snapshot()``
returns only once every handed batch is committed. Bytewax snapshots the sink at the end of
each epoch before it records the epoch as done, so no recovery snapshot ever covers a window
or a dead letter that is not in the store; a crash in between replays them, and the upserts
(keyed, for dead letters, on Partition, Position, Element) make the replay harmless.
``writer="inline"`` commits each batch before ``write_batch`` returns instead (one core, slower).

That barrier is what recovery and checkpoints rely on; a run with neither (``barrier=False``:
a live run without ``recovery_dir`` or Blob checkpoints) records nothing from its epochs, so
its ``snapshot()`` only counts what the writer has acknowledged and returns. The barrier has a
price: the flow reads nothing while it waits, and on a busy 2-core machine, with 1 s epochs,
those waits (0.1-0.5 s each, the writer's backlog and its commit) added about 2 s to a 6-10 s
live run of ``bench/eventhubs.py`` (medians of 3 rounds: 9.6 s with them, 7.6 s without). Without it the writer still commits by itself within
``COMMIT_AFTER`` (how stale the store may get), the rows waiting for a commit stay bounded, and
``close()`` still commits everything before the run returns.

Dead letters take the windows' path, not a store connection of their own in every worker:
with the writer holding SQLite's one write lock for its window transactions, a worker that
upserted dead letters itself waited for that lock (7.4 s of a 24 s run of the bench's input
(b), 0.1% malformed messages). The flow routes them to the sink's one partition
(``sensorflow.windowing.dataflow``), from every worker of every process.

A failure (the store gave up, the writer died) is raised once, from ``write_batch`` or
``snapshot()``, and kept in :attr:`WindowSink.failure`. ``close()`` never raises: Bytewax
calls it while it unwinds from an error, and a second exception there aborts the process
(a Rust panic in a destructor: SIGABRT). A failure first met in ``close()`` is only kept,
and the runner raises it once the flow has returned.

A run stopped by SIGINT or SIGTERM (``stopping`` answers True) unwinds through ``close()`` too:
the writer then gets :data:`STOP_COMMIT_SECONDS` to commit what it was handed (closed windows:
committing them is what a rerun would write again) and is ended after that, so an unreachable
store cannot hold the stop up. An interrupt raised inside ``close()`` itself is kept for the
runner (``interrupted``), never raised there.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sensorflow.records.dead_letters import DeadLetterBatch
from sensorflow.records.windows import WindowBatch
from sensorflow.store import RetryPolicy
from sensorflow.windowing.resume.board import CommittedWindows
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.writer import InlineWriter, ProcessWriter, WriterError, WriterProcess

log = logging.getLogger(__name__)

__all__ = ["WindowSink", "STOP_COMMIT_SECONDS", "WINDOW_SINK_PARTITION"]

WINDOW_SINK_PARTITION = "windows"
STOP_COMMIT_SECONDS = 2.0  # of the 10 s a stopped run has (Kubernetes waits 30 s before SIGKILL)


def _never() -> bool:
    return False


def _ignore(interrupt: KeyboardInterrupt) -> None:
    return None


def _tables(batches: list[WindowBatch] | list[DeadLetterBatch]) -> pa.Table | None:
    tables = [b.table for b in batches if b.table.num_rows]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0] if tables else None


class _WriterPartition(StatefulSinkPartition[WindowBatch | DeadLetterBatch, None]):
    """Hands window and dead-letter batches to a writer process; ``snapshot()`` is the commit barrier.

    ``commits`` (live runs with checkpoints) learns what window rows were handed and when they are committed.
    """

    def __init__(
        self, writer: ProcessWriter | InlineWriter, stats: RunStats, commits: CommittedWindows | None,
        failed: Callable[[Exception], None] = lambda error: None, flow_failed: Callable[[], bool] = lambda: False,
        stopping: Callable[[], bool] = _never, interrupted: Callable[[KeyboardInterrupt], None] = _ignore,
        barrier: bool = True,
    ):
        self._writer = writer
        self._barrier = barrier
        self._stats = stats
        self._commits = commits
        self._failed = failed
        self._flow_failed = flow_failed
        self._stopping = stopping
        self._interrupted = interrupted
        self._failure: Exception | None = None
        self._handed_at: list[float] = []

    def write_batch(self, values: list[WindowBatch | DeadLetterBatch]) -> None:
        self._check()
        windows = _tables([v for v in values if isinstance(v, WindowBatch)])
        dead_letters = _tables([v for v in values if isinstance(v, DeadLetterBatch)])
        if windows is not None:
            self._hand(self._writer.submit, windows)
            if self._commits is not None:
                self._commits.handed(windows)
        if dead_letters is not None:
            self._hand(self._writer.submit_dead_letters, dead_letters)

    def _hand(self, submit: Callable[[pa.Table], None], table: pa.Table) -> None:
        self._handed_at.append(time.monotonic())
        try:
            submit(table)
        except Exception as e:
            raise self._fail(e)

    def snapshot(self) -> None:
        self._check()
        try:
            if self._barrier:
                self._drain()
            else:
                self._collect()
        except Exception as e:
            raise self._fail(e)
        return None

    def close(self) -> None:
        try:
            self._close()
        except KeyboardInterrupt as interrupt:  # the run is being stopped: bounded, and never raised here
            self._interrupted(interrupt)
            self._writer.finish(STOP_COMMIT_SECONDS)

    def _close(self) -> None:
        if self._failure is not None or self._flow_failed():  # unwinding from an error: end the writer, raise nothing
            # (no commit: the recovery state replays it, and a store that failed would only make the exit wait)
            self._writer.abandon()
            return
        if self._stopping():  # SIGINT/SIGTERM: commit what was handed over if the store answers in time
            self._writer.finish(STOP_COMMIT_SECONDS)
            return
        try:
            self._drain()
            self._writer.close()
        except Exception as e:  # kept for the runner: raising here could abort the process
            self._fail(e)
            self._writer.abandon()
            return
        self._stats.writer_peak_rss_kb = self._writer.peak_rss_kb

    def _check(self) -> None:
        if self._failure is not None:  # never hand more to a writer that failed
            raise self._failure

    def _fail(self, error: Exception) -> Exception:
        if self._failure is None:
            self._failure = error
            self._failed(error)
        return error

    def _drain(self) -> None:
        self._stats.add_windows(self._writer.drain())
        self._counted()
        if self._commits is not None:
            self._commits.committed()

    def _collect(self) -> None:
        """Count what the writer has acknowledged so far, without waiting for the rest."""
        self._stats.add_windows(self._writer.collect())
        self._counted()

    def _counted(self) -> None:
        for reasons in self._writer.committed_dead_letters():
            self._stats.add_dead_letters(len(reasons), reasons)
        now = time.monotonic()
        acknowledged = len(self._handed_at) - self._writer.pending
        for handed in self._handed_at[:acknowledged]:  # known committed only now: an upper bound per batch
            self._stats.observe_write(now - handed)
        del self._handed_at[:acknowledged]


class WindowSink(FixedPartitionedSink[WindowBatch | DeadLetterBatch, None]):
    """Upserts closed windows into ``SensorValues`` and dead letters into ``DeadLetters`` (one partition: one writer).

    ``barrier`` False: nothing durable is recorded from the flow's epochs (no Bytewax recovery,
    no checkpoints), so ``snapshot()`` does not wait for the store: it counts what the writer
    has acknowledged and returns (see the module docstring). Checkpoints (``commits``) need it.
    """

    def __init__(
        self, store_url: str, stats: RunStats, writer: str = "process", commits: CommittedWindows | None = None,
        retry: RetryPolicy | None = None, stopping: Callable[[], bool] = _never,
        interrupted: Callable[[KeyboardInterrupt], None] = _ignore, barrier: bool = True,
    ):
        if writer not in ("process", "inline"):
            raise ValueError(f"writer must be 'process' or 'inline', not {writer!r}")
        if commits is not None and not barrier:
            raise ValueError("checkpoints (commits) need the commit barrier")
        self._barrier = barrier
        self._store_url = store_url
        self._stats = stats
        self._writer = writer
        self._commits = commits
        self._retry = retry
        self._stopping = stopping
        self._interrupted = interrupted
        self._started: ProcessWriter | None = None
        self.failure: Exception | None = None
        """The first error of the window writes (store or writer process), if any."""

    def start_writer(self, process: WriterProcess | None = None) -> None:
        """Start the writer process now, for a process that knows it will build the one partition.

        Its start-up (an interpreter, pyarrow, the store) then overlaps the dataflow's own
        instead of delaying the first batch; ``process``: its interpreter, started earlier still
        (taken over with ``writer="process"``, else left to its owner to close). ``close_unused``
        stops the writer if no partition took it.
        """
        if self._writer == "process" and self._started is None:
            self._started = ProcessWriter(self._store_url, retry=self._retry, process=process)

    def close_unused(self) -> None:
        started, self._started = self._started, None
        if started is not None and self._stopping():
            started.finish(STOP_COMMIT_SECONDS)
        elif started is not None:
            try:
                started.close()
            except WriterError as e:  # it never had anything to write; the run's own outcome stands
                log.warning("the unused store writer did not close cleanly: %s", e)

    def list_parts(self) -> list[str]:
        return [WINDOW_SINK_PARTITION]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WriterPartition:
        if self._started is not None:
            writer, self._started = self._started, None
        else:
            writer = (
                ProcessWriter(self._store_url, retry=self._retry) if self._writer == "process"
                else InlineWriter(self._store_url, self._retry)
            )
        return _WriterPartition(
            writer, self._stats, self._commits, self.note_failure, lambda: self.failure is not None, self._stopping,
            self._interrupted, self._barrier,
        )

    def raise_failure(self) -> None:
        """Raise the window writes' error if there was one (a flow can end without raising it: see the module doc)."""
        if self.failure is not None:
            raise self.failure

    def note_failure(self, error: Exception) -> None:
        """The flow is failing: close without committing."""
        if self.failure is None:
            self.failure = error

"""Where a live run can restart WITHOUT Bytewax state, and what it must then skip (pure logic).

A restart from Blob checkpoints (docs/eventhubs.md has the full argument) must rebuild every
window not yet in the store and must never re-emit a stored window with partial values. Three
facts make that possible; none of them knows Bytewax, Event Hubs or SQL:

* :class:`ResumeLog`, one per input partition, kept in the lateness step's state: for each batch
  read, the position of its first reading, the partition watermark before and after it and its
  largest event time.
* :class:`CommittedWindows`: per window shard, the largest window end committed to the store. A
  shard closes windows in end order and each closing reaches the store whole and in order, so
  every window of that shard ending at or before that end is stored; the minimum over shards is
  ``C``, the *committed closure*.
* :meth:`ResumeLog.resume_point`: given ``C`` and a *durable* source position ``S`` (every message
  before ``S`` fully processed by every output), the first batch whose largest event time is
  ``>= C``. Every reading before it lies in a window ending ``<= C`` (stored), so a restart reads
  again from there with the watermark it had, and drops readings of windows ending ``<= C`` that
  sit before ``S`` (they are stored already; readings after ``S`` follow the normal rules).

:class:`ResumeBoard` ties them together for one process: the dataflow reports to it, the
checkpointer asks it for the current :class:`ResumeStart`. In a cluster of processes each board
holds the partitions whose lateness step runs in its process; the source's durable positions and
offsets reach it inside the batches (:class:`~sensorflow.records.readings.SourceProgress`), and ``C`` is
merged from every process's published shard ends (:meth:`CommittedWindows.closed_through_with`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.readings import SourceProgress
from sensorflow.records.windows import BEFORE_TIME
from sensorflow.windowing.resume.offsets import OffsetBook
from sensorflow.windowing.shards import split_by_shard
from sensorflow.windowing.state import SNAPSHOT_VERSION, checked

__all__ = [
    "AlreadyStored",
    "CommittedWindows",
    "PartitionTracker",
    "ResumeBoard",
    "ResumeLog",
    "ResumeLogSnapshot",
    "ResumePoint",
    "ResumeStart",
    "TrackerSnapshot",
]


@dataclass(frozen=True)
class ResumePoint:
    """Restart partition reading at ``position`` (inclusive) with the partition watermark ``watermark``.

    Accepted readings of windows ending at or before the start's ``closed_through`` that sit
    before ``drop_before`` are already in the store and are dropped, not re-emitted.
    """

    position: int
    watermark: int
    drop_before: int

    def __post_init__(self) -> None:
        if self.drop_before < self.position:
            raise ValueError("drop_before must be >= position")


@dataclass(frozen=True)
class ResumeStart:
    """What a restart from checkpoints hands the dataflow: the committed closure and one point per partition."""

    closed_through: int
    partitions: Mapping[str, ResumePoint] = field(default_factory=dict)

    def watermarks(self) -> dict[str, int]:
        return {p: point.watermark for p, point in self.partitions.items()}


@dataclass(frozen=True)
class ResumeLogSnapshot:
    """A :class:`ResumeLog`'s state for recovery (inside the lateness step's, kept by Bytewax).

    One mark per batch read since ``base_position`` (at most the log's ``max_entries``), as four
    columns of the same length: the batch's first position, the watermark before and after
    it, its largest event time.
    """

    version: int
    base_position: int | None
    base_watermark: int
    first: tuple[int, ...]
    before: tuple[int, ...]
    after: tuple[int, ...]
    largest: tuple[int, ...]


class ResumeLog:
    """Per-batch marks of one partition since its last resume point.

    Appended by the dataflow's lateness step, read and pruned by the checkpointer on another
    thread, so every method takes the lock. Past ``max_entries`` neighbouring marks are merged
    (conservative: a merged mark resumes at the earlier batch), so memory stays bounded while
    the committed closure does not move.
    """

    def __init__(self, base_position: int | None, base_watermark: int, max_entries: int = 4096):
        if max_entries < 2:
            raise ValueError("max_entries must be >= 2")
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self.base_position = base_position  # where this log starts; None: nothing read yet on a cold start
        self.base_watermark = base_watermark
        self._first: list[int] = []
        self._before: list[int] = []
        self._after: list[int] = []
        self._largest: list[int] = []

    def __len__(self) -> int:
        return len(self._first)

    def record(self, first_position: int, watermark_before: int, watermark_after: int, largest_ts: int) -> None:
        """One batch read: its first reading's position, the watermark around it, its largest event time."""
        with self._lock:
            if self.base_position is None:
                self.base_position = first_position
            self._first.append(first_position)
            self._before.append(watermark_before)
            self._after.append(watermark_after)
            self._largest.append(largest_ts)
            if len(self._first) > self._max_entries:
                self._halve()

    def resume_point(self, closed_through: int, durable: int) -> ResumePoint | None:
        """Where to restart, given committed closure ``C`` and durable source position ``S``; None if unknown."""
        with self._lock:
            if self.base_position is None:
                return None
            settled = int(np.searchsorted(np.asarray(self._first, dtype=np.int64), durable, side="left"))
            largest = np.asarray(self._largest[:settled], dtype=np.int64)
            open_marks = np.flatnonzero(largest >= closed_through)
            if len(open_marks):
                i = int(open_marks[0])
                return ResumePoint(self._first[i], self._before[i], max(durable, self._first[i]))
            watermark = self._after[settled - 1] if settled else self.base_watermark
            position = max(durable, self.base_position)
            return ResumePoint(position, watermark, position)

    def prune(self, point: ResumePoint) -> None:
        """Forget marks before ``point``: a later resume point never lies before it (``C`` and ``S`` only grow)."""
        with self._lock:
            keep = int(np.searchsorted(np.asarray(self._first, dtype=np.int64), point.position, side="left"))
            del self._first[:keep], self._before[:keep], self._after[:keep], self._largest[:keep]
            self.base_position, self.base_watermark = point.position, point.watermark

    def snapshot(self) -> ResumeLogSnapshot:
        """The log as of now; later records do not change it."""
        with self._lock:
            return ResumeLogSnapshot(
                SNAPSHOT_VERSION,
                self.base_position,
                self.base_watermark,
                tuple(self._first),
                tuple(self._before),
                tuple(self._after),
                tuple(self._largest),
            )

    @classmethod
    def restore(cls, state: ResumeLogSnapshot, max_entries: int = 4096) -> ResumeLog:
        """The log ``state`` was taken of.

        Raises :class:`~sensorflow.windowing.state.RecoveryStateError` for a state of another release.
        """
        state = checked(state, ResumeLogSnapshot)
        log = cls(state.base_position, state.base_watermark, max_entries)
        log._first, log._before = list(state.first), list(state.before)
        log._after, log._largest = list(state.after), list(state.largest)
        return log

    def _halve(self) -> None:
        first, before, after, largest = self._first, self._before, self._after, self._largest
        n = len(first) - len(first) % 2
        self._first = first[0:n:2] + first[n:]
        self._before = before[0:n:2] + before[n:]
        self._after = after[1:n:2] + after[n:]
        self._largest = [max(a, b) for a, b in zip(largest[0:n:2], largest[1:n:2])] + largest[n:]


class CommittedWindows:
    """The committed closure ``C``: every window ending at or before it is in the store.

    The window sink calls :meth:`handed` for each table it passes to the store and
    :meth:`committed` once everything handed is committed (its snapshot barrier).
    """

    def __init__(self, shards: int, floor: int = BEFORE_TIME):
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._lock = threading.Lock()
        self.shards = shards
        self._handed = [floor] * shards
        self._committed = [floor] * shards

    def handed(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        parts = split_by_shard(table, self.shards)
        with self._lock:
            for shard, part in enumerate(parts):
                if part.num_rows:
                    self._handed[shard] = max(self._handed[shard], pc.max(part["window_end"]).as_py())

    def committed(self) -> None:
        with self._lock:
            self._committed = list(self._handed)

    @property
    def closed_through(self) -> int:
        """``C`` from this process's commits alone."""
        return self.closed_through_with({})

    def committed_ends(self) -> list[int]:
        """Per shard, the largest window end this process has committed (the floor if none)."""
        with self._lock:
            return list(self._committed)

    def closed_through_with(self, published: Mapping[int, int]) -> int:
        """``C`` over a cluster: per shard the larger of this process's and the published end, then the minimum.

        ``published`` maps a shard to the end another process published for it; a shard nobody
        published counts with this process's value (the floor when it holds none of the shard's
        windows). A stale published value is smaller than the true one, so ``C`` is too: safe.
        """
        with self._lock:
            return min(max(end, published.get(shard, end)) for shard, end in enumerate(self._committed))


class ResumeBoard:
    """One process's view of where every partition could restart; thread-safe.

    The lateness step attaches each partition's :class:`ResumeLog` and hands on what the source
    carried in the partition's batches (durable positions, after an epoch every output has
    finished; event offsets); the window sink reports commits.
    """

    def __init__(self, shards: int, start: ResumeStart | None = None):
        self.start = start
        self.windows = CommittedWindows(shards, start.closed_through if start else BEFORE_TIME)
        self._lock = threading.Lock()
        self._logs: dict[str, ResumeLog] = {}
        self._durable: dict[str, int] = {}
        self._offsets: dict[str, OffsetBook] = {}
        self._points: dict[str, ResumePoint] = dict(start.partitions) if start else {}
        self.stored_skipped = 0  # readings dropped after a restart because their window was already stored

    def attach(self, partition: str, log: ResumeLog) -> None:
        with self._lock:
            self._logs[partition] = log

    def count_skipped(self, readings: int) -> None:
        with self._lock:
            self.stored_skipped += readings

    def source_durable(self, partition: str, position: int) -> None:
        """Every message of ``partition`` before ``position`` has been processed by every output."""
        with self._lock:
            self._durable[partition] = max(position, self._durable.get(partition, position))

    def source_offsets(self, partition: str, sequence_numbers: Sequence[int], offsets: Sequence[bytes]) -> None:
        """The transport offsets of events of ``partition`` (for its transport checkpoint)."""
        with self._lock:
            book = self._offsets.get(partition)
            if book is None:
                book = self._offsets[partition] = OffsetBook()
        book.add(sequence_numbers, offsets)

    def offset(self, partition: str, sequence_number: int) -> str | None:
        """The offset of event ``sequence_number`` of ``partition``, if it was handed on and not yet forgotten."""
        with self._lock:
            book = self._offsets.get(partition)
        return None if book is None else book.offset(sequence_number)

    def held(self) -> set[str]:
        """The partitions whose resume logs this board holds (its process's lateness step has them)."""
        with self._lock:
            return set(self._logs)

    def current(self, closed_through: int | None = None) -> ResumeStart:
        """The resume start as of now; partitions with nothing new keep their previous point.

        ``closed_through``: ``C`` when the caller knows better than this process's own commits
        (a cluster); it must be a committed closure.
        """
        if closed_through is None:
            closed_through = self.windows.closed_through
        with self._lock:
            for partition, log in self._logs.items():
                durable = self._durable.get(partition)
                if durable is None:
                    continue
                point = log.resume_point(closed_through, durable)
                previous = self._points.get(partition)
                if point is not None and (previous is None or point.position >= previous.position):
                    self._points[partition] = point
            return ResumeStart(closed_through, dict(self._points))

    def forget_before(self, start: ResumeStart) -> None:
        """``start`` is safely written: logs may drop marks, and offset books events, before it."""
        with self._lock:
            for partition, point in start.partitions.items():
                log = self._logs.get(partition)
                if log is not None:
                    log.prune(point)
                book = self._offsets.get(partition)
                if book is not None:
                    book.forget_before(point.position - 1)


@dataclass(frozen=True)
class AlreadyStored:
    """What a restart from checkpoints finds in the store already.

    Accepted readings before position ``drop_before`` of windows ending at or before
    ``closed_through`` are stored and are dropped, not emitted again.
    """

    closed_through: int
    drop_before: int


@dataclass(frozen=True)
class TrackerSnapshot:
    """A :class:`PartitionTracker`'s state for recovery, once bound to its partition.

    ``stored``: what the store already has, until the partition reads past ``drop_before``.
    """

    version: int
    partition: str
    log: ResumeLogSnapshot
    stored: AlreadyStored | None


class PartitionTracker:
    """The lateness step's resume duties for one input partition.

    Binds to its partition on the first batch (a Bytewax builder does not know its key): after a
    restart from checkpoints it sets the partition watermark saved with the checkpoint and drops
    accepted readings the store already has; it records every batch in the partition's
    :class:`ResumeLog`, attached to the process's :class:`ResumeBoard`.
    """

    def __init__(self, board: ResumeBoard, state: TrackerSnapshot | None = None):
        self._board = board
        self.partition: str | None = None
        self._log: ResumeLog | None = None
        self._stored: AlreadyStored | None = None
        if state is not None:
            state = checked(state, TrackerSnapshot)
            self.partition, self._stored = state.partition, state.stored
            self._log = ResumeLog.restore(state.log)
            board.attach(self.partition, self._log)

    def bind(self, partition: str, watermark: int) -> int:
        """Called before each batch; returns the watermark the partition starts from (``watermark`` if resumed)."""
        if self._log is not None:
            return watermark
        self.partition = partition
        start = self._board.start
        point = start.partitions.get(partition) if start is not None else None
        if point is None:
            self._log = ResumeLog(None, watermark)
        else:
            self._log = ResumeLog(point.position, point.watermark)
            self._stored = AlreadyStored(start.closed_through, point.drop_before)
            watermark = point.watermark
        self._board.attach(partition, self._log)
        return watermark

    def carried(self, partition: str, progress: SourceProgress) -> None:
        """What the source sent along with a batch of ``partition``: event offsets, a durable position."""
        if len(progress.offsets):
            self._board.source_offsets(partition, progress.sequence_numbers, progress.offsets)
        if progress.durable is not None:
            self._board.source_durable(partition, progress.durable)

    def observe(self, positions: np.ndarray, ts: np.ndarray, before: int, after: int, late: np.ndarray) -> np.ndarray | None:
        """Record the batch; return which accepted readings are already stored (None: none can be)."""
        if len(ts) == 0:
            return None
        self._log.record(int(positions[0]), before, after, int(ts.max()))
        if self._stored is None:
            return None
        drop_before = self._stored.drop_before
        if int(positions[0]) >= drop_before:
            self._stored = None  # past the durable position: the normal rules apply from here on
            return None
        stored = (ts < self._stored.closed_through) & (positions < drop_before) & ~late
        self._board.count_skipped(int(stored.sum()))
        return stored

    def snapshot(self) -> TrackerSnapshot | None:
        """The tracker's state for recovery; None before its first batch (nothing to keep yet)."""
        if self._log is None:
            return None
        return TrackerSnapshot(SNAPSHOT_VERSION, self.partition, self._log.snapshot(), self._stored)

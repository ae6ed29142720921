"""Bytewax glue around the pure window logic: per-partition lateness, per-shard windows."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from sensorflow.records.dead_letters import DeadLetterBatch, ReasonCode
from sensorflow.records.readings import ReadingBatch
from sensorflow.records.windows import END_OF_TIME, WindowBatch
from sensorflow.windowing.resume.board import PartitionTracker, ResumeBoard, TrackerSnapshot
from sensorflow.windowing.shards import ShardMessage, split_by_shard
from sensorflow.windowing.state import SNAPSHOT_VERSION, checked
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.tumbling import PartitionClock, WindowAggregator, WindowSnapshot

__all__ = [
    "LatenessLogic",
    "LatenessSnapshot",
    "Routed",
    "WindowLogic",
    "WriteBatchLogic",
    "WriteBatchSnapshot",
]

Routed = tuple[str, ShardMessage]
"""(shard key, message) pairs leaving the lateness step."""


@dataclass(frozen=True)
class LatenessSnapshot:
    """A :class:`LatenessLogic`'s state for recovery: the partition watermark, and its resume duties if any.

    ``tracker`` is None without a resume board, or before the partition's first batch.
    """

    version: int
    watermark: int
    tracker: TrackerSnapshot | None


class LatenessLogic(StatefulBatchLogic[ReadingBatch, "Routed | DeadLetterBatch", LatenessSnapshot]):
    """Applies one partition's lateness rule and fans its readings out to the shards.

    With a :class:`~sensorflow.windowing.resume.board.ResumeBoard` (live runs with checkpoints) it also keeps the
    partition's resume log, hands what the source carried in the batches to the board, and, after
    a restart from checkpoints, drops readings already stored. A batch that only carries source
    progress goes no further: it is no sign of life of the partition for the window shards.
    """

    def __init__(
        self, lateness_ns: int, shards: int, state: LatenessSnapshot | None, board: ResumeBoard | None = None,
        stats: RunStats | None = None,
    ):
        """``state``: what :meth:`snapshot` gave before a restart (None: a fresh start); ``stats`` is told
        each partition's newest event time and watermark (the watermark and lag gauges).

        Raises :class:`~sensorflow.windowing.state.RecoveryStateError` for a state of another release.
        """
        if state is None:
            self.clock, tracked = PartitionClock(lateness_ns), None
        else:
            state = checked(state, LatenessSnapshot)
            self.clock, tracked = PartitionClock(lateness_ns, state.watermark), state.tracker
        self.shards = shards
        self.tracker = None if board is None else PartitionTracker(board, tracked)
        self.lateness_ns = lateness_ns
        self.stats = stats

    def on_batch(self, values: list[ReadingBatch]) -> tuple[Iterable, bool]:
        out: list = []
        for batch in values:
            if batch.progress is not None:
                if self.tracker is not None:
                    self.tracker.carried(batch.partition, batch.progress)
                if batch.progress.alone and not batch.eof:
                    continue
            table = batch.table
            ts = table["ts"].to_numpy()
            if self.tracker is not None:
                self.clock.watermark = self.tracker.bind(batch.partition, self.clock.watermark)
            before = self.clock.watermark
            late = self.clock.late_mask(ts)
            if late.any():
                out.append(DeadLetterBatch.late(batch.partition, table.filter(pa.array(late))))
            stored = None
            if self.tracker is not None:
                stored = self.tracker.observe(table["position"].to_numpy(), ts, before, self.clock.watermark, late)
            drop = late if stored is None else late | stored
            if drop.any():
                table = table.filter(pa.array(~drop))
            if self.stats is not None and len(ts):  # the watermark is the newest event time read, less the lateness
                self.stats.observe_partition(batch.partition, self.clock.watermark + self.lateness_ns, self.clock.watermark)
            watermark = END_OF_TIME if batch.eof else self.clock.watermark
            if batch.eof:
                self.clock.watermark = END_OF_TIME
            for shard, part in enumerate(split_by_shard(table, self.shards)):
                out.append((str(shard), ShardMessage(batch.partition, part, watermark)))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> LatenessSnapshot:
        tracked = None if self.tracker is None else self.tracker.snapshot()
        return LatenessSnapshot(SNAPSHOT_VERSION, self.clock.watermark, tracked)


class WindowLogic(StatefulBatchLogic[ShardMessage, "WindowBatch | DeadLetterBatch", WindowSnapshot]):
    """One shard's open windows; emits closed windows and readings that came too late."""

    def __init__(self, aggregator: WindowAggregator):
        self.aggregator = aggregator
        self.live = aggregator.idle_timeout_ns is not None  # only live sources have an idle timeout

    def on_batch(self, values: list[ShardMessage]) -> tuple[Iterable, bool]:
        out: list = []
        wall = time.time_ns() if self.live else None
        for message in values:
            closed, late = self.aggregator.add(message.partition, message.readings, message.watermark, wall)
            if late is not None:
                out.append(DeadLetterBatch.late(message.partition, late, ReasonCode.LATE.detail("window already closed")))
            if closed is not None:
                out.append(closed)
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable, bool]:
        closed = self.aggregator.check_idle(time.time_ns())
        return ([closed] if closed is not None else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        at = self.aggregator.next_idle_check() if self.live else None
        return None if at is None else datetime.fromtimestamp(at / 1e9, tz=timezone.utc)

    def snapshot(self) -> WindowSnapshot:
        return self.aggregator.snapshot()


@dataclass(frozen=True)
class WriteBatchSnapshot:
    """A :class:`WriteBatchLogic`'s state for recovery: the closed windows gathered but not yet handed on."""

    version: int
    tables: tuple[pa.Table, ...]


class WriteBatchLogic(StatefulBatchLogic[WindowBatch, WindowBatch, WriteBatchSnapshot]):
    """Gathers closed windows into batches for the store writer, soon.

    A batch goes once it spans ``min_windows`` window ends (and has at least ``min_rows``
    rows), or has ``max_rows`` rows, or has waited ``max_wait`` of wall time. The first one
    goes at ``min_rows`` whatever it spans: until then the writer has nothing to do. The writer
    upserts batches into its open transaction as they come (see ``sensorflow.windowing.writer``), so a
    batch need only be big enough that handing it over costs little next to writing it,
    and the sooner it goes, the more the writer works while the dataflow reads instead of
    catching up after it (what a run waits for at its end). The row bounds, not item
    counts, keep memory flat whatever the fleet size. Wall time only decides how long a
    small batch may wait.
    """

    def __init__(self, min_rows: int, max_rows: int, min_windows: int, max_wait: timedelta, state: WriteBatchSnapshot | None):
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.min_windows = min_windows
        self.max_wait = max_wait
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.ends: set[int] = set()
        self.due: datetime | None = None
        self.handed = False  # a batch went since this process started
        self._add([] if state is None else list(checked(state, WriteBatchSnapshot).tables))

    def on_batch(self, values: list[WindowBatch]) -> tuple[Iterable, bool]:
        self._add([v.table for v in values if v.table.num_rows])
        if self.tables and self.due is None:
            self.due = datetime.now(timezone.utc) + self.max_wait
        if self.rows >= self.max_rows or (self.rows >= self.min_rows and (len(self.ends) >= self.min_windows or not self.handed)):
            return self._flush(), StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable, bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable, bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.due

    def snapshot(self) -> WriteBatchSnapshot:
        return WriteBatchSnapshot(SNAPSHOT_VERSION, tuple(self.tables))

    def _add(self, tables: list[pa.Table]) -> None:
        for table in tables:
            self.tables.append(table)
            self.rows += table.num_rows
            self.ends.update(np.unique(table["window_end"].to_numpy()).tolist())

    def _flush(self) -> list[WindowBatch]:
        tables, self.tables, self.rows, self.due = self.tables, [], 0, None
        self.ends.clear()
        self.handed = self.handed or bool(tables)
        return [WindowBatch(pa.concat_tables(tables))] if tables else []

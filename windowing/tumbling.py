"""Tumbling-window math on columnar batches; knows nothing of Bytewax or SQL.

Times are int64 ns since the Unix epoch, UTC. A window ``[end - length, end)``
is named by its END (ASA's ``System.Timestamp``); ends are multiples of the
length since the epoch.

The lateness rule (see docs/windowing.md) is deterministic by construction:
each input partition p keeps ``W_p = max event time read on p - lateness``;
a reading below ``W_p`` when read is late; a window closes once every
partition's ``W_p`` has reached its end, so no accepted reading can ever fall
into a closed window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.windows import BEFORE_TIME, END_OF_TIME, WINDOW_SCHEMA, WindowBatch
from sensorflow.windowing.state import SNAPSHOT_VERSION, checked

__all__ = [
    "window_ends",
    "PartitionClock",
    "aggregate",
    "OpenWindows",
    "WindowAggregator",
    "WindowSnapshot",
]

_PARTIAL_SCHEMA = pa.schema(
    [
        ("device", pa.string()),
        ("tag", pa.string()),
        ("window_end", pa.int64()),
        ("sum", pa.float64()),
        ("count", pa.int64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
    ]
)
_KEYS = ["device", "tag", "window_end"]


def window_ends(ts: np.ndarray, length_ns: int) -> np.ndarray:
    """The end of the window each time falls in: ``floor(ts / length) * length + length``."""
    return (np.asarray(ts, dtype=np.int64) // length_ns + 1) * length_ns


class PartitionClock:
    """``W_p`` of one input partition: the lateness rule, applied in read order."""

    def __init__(self, lateness_ns: int, watermark: int = BEFORE_TIME):
        if lateness_ns < 0:
            raise ValueError("lateness must be >= 0")
        self.lateness_ns = lateness_ns
        self.watermark = watermark

    def late_mask(self, ts: np.ndarray) -> np.ndarray:
        """Which of ``ts`` (in read order) are late; advances the watermark past them."""
        if len(ts) == 0:
            return np.zeros(0, dtype=bool)
        # A reading never makes itself late (ts - lateness <= ts), so the running
        # maximum may include the reading itself.
        running = np.maximum.accumulate(ts) - self.lateness_ns
        threshold = np.maximum(running, self.watermark)
        self.watermark = int(threshold[-1])
        return ts < threshold


def aggregate(device: pa.Array, tag: pa.Array, window_end: np.ndarray, value: np.ndarray) -> pa.Table:
    """Partial aggregates (sum, count, min, max) per (device, tag, window_end)."""
    table = pa.table({"device": device, "tag": tag, "window_end": window_end, "value": value})
    grouped = table.group_by(_KEYS, use_threads=False).aggregate(
        [("value", "sum"), ("value", "count"), ("value", "min"), ("value", "max")]
    )
    return _as_partial(grouped, "value_sum", "value_count", "value_min", "value_max")


def _merge(partials: list[pa.Table]) -> pa.Table:
    if len(partials) == 1:
        return partials[0]
    table = pa.concat_tables(partials)
    grouped = table.group_by(_KEYS, use_threads=False).aggregate(
        [("sum", "sum"), ("count", "sum"), ("min", "min"), ("max", "max")]
    )
    return _as_partial(grouped, "sum_sum", "count_sum", "min_min", "max_max")


def _as_partial(grouped: pa.Table, s: str, c: str, lo: str, hi: str) -> pa.Table:
    return pa.table(
        [grouped["device"], grouped["tag"], grouped["window_end"], grouped[s], grouped[c].cast(pa.int64()), grouped[lo], grouped[hi]],
        schema=_PARTIAL_SCHEMA,
    )


def _closed_rows(partial: pa.Table) -> WindowBatch:
    mean = pc.divide(partial["sum"], partial["count"].cast(pa.float64()))
    table = pa.table(
        [partial["window_end"], partial["device"], partial["tag"], mean, partial["count"], partial["min"], partial["max"]],
        schema=WINDOW_SCHEMA,
    )
    return WindowBatch(table)


@dataclass(frozen=True)
class WindowSnapshot:
    """A :class:`WindowAggregator`'s state for recovery (kept by Bytewax, pickled).

    ``watermarks``: each input partition's watermark; ``closed_through``: every window ending at
    or before it is emitted; ``pending``: the open windows' partial aggregates (Arrow tables of
    one schema, immutable, so a snapshot shares them with the aggregator).
    """

    version: int
    watermarks: dict[str, int]
    closed_through: int
    pending: tuple[pa.Table, ...]


@dataclass(frozen=True)
class OpenWindows:
    """Window rows folded but not emitted yet: how many, and the first and last window end (ns; None when none)."""

    rows: int = 0
    first_end: int | None = None
    last_end: int | None = None

    def __add__(self, other: "OpenWindows") -> "OpenWindows":
        ends = [e for e in (self.first_end, self.last_end, other.first_end, other.last_end) if e is not None]
        return OpenWindows(self.rows + other.rows, min(ends, default=None), max(ends, default=None))


class WindowAggregator:
    """Open windows of one shard of sensors, closed on the minimum partition watermark.

    Each input partition's watermark arrives with its readings; a partition
    at end of input sends ``END_OF_TIME``. Readings of windows that are
    already closed (possible only after an idle partition wakes in live mode)
    are returned as late, never merged.
    """

    _CONSOLIDATE_ROWS = 1 << 16

    def __init__(self, length_ns: int, partitions: Iterable[str], idle_timeout_ns: int | None = None):
        if length_ns <= 0:
            raise ValueError("window length must be > 0")
        self.length_ns = length_ns
        self.idle_timeout_ns = idle_timeout_ns
        self.watermarks: dict[str, int] = {p: BEFORE_TIME for p in partitions}
        if not self.watermarks:
            raise ValueError("at least one input partition is needed")
        self.closed_through = BEFORE_TIME  # every window ending at or before this is emitted
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._open_rows = 0
        self._min_end = END_OF_TIME
        self._last_seen: dict[str, int] = {}
        self._idle: set[str] = set()

    # -- state ---------------------------------------------------------------

    def snapshot(self) -> WindowSnapshot:
        """The state for recovery; later input does not change it."""
        self._consolidate()
        return WindowSnapshot(SNAPSHOT_VERSION, dict(self.watermarks), self.closed_through, tuple(self._pending))

    @classmethod
    def restore(
        cls, length_ns: int, partitions: Iterable[str], state: WindowSnapshot, idle_timeout_ns: int | None = None
    ) -> "WindowAggregator":
        """The aggregator ``state`` was taken of.

        Raises :class:`~sensorflow.windowing.state.RecoveryStateError` for a state of another release.
        """
        state = checked(state, WindowSnapshot)
        agg = cls(length_ns, partitions, idle_timeout_ns)
        agg.closed_through = state.closed_through
        agg.watermarks.update(state.watermarks)
        agg._pending = list(state.pending)
        agg._pending_rows = agg._open_rows = sum(t.num_rows for t in agg._pending)
        agg._min_end = min((pc.min(t["window_end"]).as_py() for t in agg._pending if t.num_rows), default=END_OF_TIME)
        return agg

    def open_windows(self) -> OpenWindows:
        """The windows folded but not emitted (one row per sensor and window end); changes nothing."""
        tables = [t for t in self._pending if t.num_rows]
        if not tables:
            return OpenWindows()
        merged = _merge(tables)  # the pending partials may hold a window more than once
        ends = merged["window_end"]
        return OpenWindows(merged.num_rows, pc.min(ends).as_py(), pc.max(ends).as_py())

    # -- input ---------------------------------------------------------------

    def add(
        self, partition: str, readings: pa.Table, watermark: int, wall_ns: int | None = None
    ) -> tuple[WindowBatch | None, pa.Table | None]:
        """Fold ``readings`` from ``partition`` in, then close what the watermarks allow.

        Returns (closed windows or None, late readings or None).
        """
        late = None
        if readings.num_rows:
            ends = window_ends(readings["ts"].to_numpy(), self.length_ns)
            too_late = ends <= self.closed_through
            if too_late.any():
                late = readings.filter(pa.array(too_late))
                keep = ~too_late
                readings, ends = readings.filter(pa.array(keep)), ends[keep]
            if readings.num_rows:
                partial = aggregate(readings["device"], readings["tag"], ends, readings["value"])
                self._pending.append(partial)
                self._pending_rows += partial.num_rows
                self._min_end = min(self._min_end, int(ends.min()))
        self.watermarks[partition] = max(self.watermarks.get(partition, BEFORE_TIME), watermark)
        if wall_ns is not None:
            self._last_seen[partition] = wall_ns
            self._idle.discard(partition)
        closed = self._close()
        if self._pending_rows > max(self._CONSOLIDATE_ROWS, 2 * self._open_rows):
            self._consolidate()
        return closed, late

    def check_idle(self, wall_ns: int) -> WindowBatch | None:
        """Live mode: stop waiting for partitions silent for ``idle_timeout``; close what that allows."""
        if self.idle_timeout_ns is None:
            return None
        for partition, seen in self._last_seen.items():
            if wall_ns - seen >= self.idle_timeout_ns and self.watermarks[partition] != END_OF_TIME:
                self._idle.add(partition)
        for partition in self.watermarks:
            self._last_seen.setdefault(partition, wall_ns)
        return self._close()

    def next_idle_check(self) -> int | None:
        """Wall time (ns) at which a partition may become idle; None when nothing to wait for."""
        if self.idle_timeout_ns is None or not self._last_seen:
            return None
        waiting = [s for p, s in self._last_seen.items() if p not in self._idle]
        return min(waiting) + self.idle_timeout_ns if waiting else None

    # -- closing ---------------------------------------------------------------

    def global_watermark(self) -> int:
        active = [w for p, w in self.watermarks.items() if p not in self._idle]
        if not active:  # every partition idle: hold at the furthest one
            return max(self.watermarks.values())
        return min(active)

    def _close(self) -> WindowBatch | None:
        watermark = self.global_watermark()
        if watermark == BEFORE_TIME:
            return None
        through = END_OF_TIME if watermark == END_OF_TIME else (watermark // self.length_ns) * self.length_ns
        if through <= self.closed_through:
            return None
        self.closed_through = through
        if not self._pending or self._min_end > through:
            return None
        # Only the closing rows are merged: open windows' partials stay as they are (merging
        # them on every close regrouped the same open rows again and again), until
        # ``_consolidate`` merges the pending tables when they grow.
        bound = pa.scalar(through, pa.int64())
        closing, still_open = [], []
        for table in self._pending:
            done = pc.less_equal(table["window_end"], bound)
            if pc.all(done).as_py():
                closing.append(table)
                continue
            part = table.filter(done)
            if part.num_rows:
                closing.append(part)
                table = table.filter(pc.invert(done))
            still_open.append(table)
        self._pending = still_open
        self._pending_rows = sum(t.num_rows for t in still_open)
        self._open_rows = min(self._open_rows, self._pending_rows)
        self._min_end = min((pc.min(t["window_end"]).as_py() for t in still_open), default=END_OF_TIME)
        closed = _merge(closing) if closing else None
        return _closed_rows(closed) if closed is not None and closed.num_rows else None

    def _consolidate(self) -> None:
        if len(self._pending) > 1:
            self._pending = [_merge(self._pending)]
        self._pending_rows = self._open_rows = sum(t.num_rows for t in self._pending)

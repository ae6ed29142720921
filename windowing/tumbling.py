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
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from sensorflow.records.windows import BEFORE_TIME, END_OF_TIME, WINDOW_SCHEMA, WindowBatch
from sensorflow.windowing.sensor_ids import SensorIds
from sensorflow.windowing.state import SNAPSHOT_VERSION, checked

__all__ = [
    "window_ends",
    "PartitionClock",
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


@dataclass(frozen=True)
class _Partial:
    """Partial aggregates of one window by sensor id: one row per id once merged, maybe several before."""

    sensor: np.ndarray  # int64 ids of a SensorIds
    sum: np.ndarray
    count: np.ndarray  # int64
    min: np.ndarray
    max: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.sensor)

    def where(self, mask: np.ndarray) -> "_Partial":
        return _Partial(self.sensor[mask], self.sum[mask], self.count[mask], self.min[mask], self.max[mask])


def _partials_by_window(table: pa.Table, sensor_ids: SensorIds) -> dict[int, _Partial]:
    """A partial table (``_PARTIAL_SCHEMA``) split by window end, its sensors as ids."""
    columns = _Partial(
        sensor_ids.ids(table["device"], table["tag"]),
        table["sum"].to_numpy(),
        table["count"].to_numpy(),
        table["min"].to_numpy(),
        table["max"].to_numpy(),
    )
    ends = table["window_end"].to_numpy()
    first, last = int(ends.min()), int(ends.max())
    if first == last:
        return {first: columns}
    return {int(end): columns.where(ends == end) for end in np.unique(ends)}


def _reduce(
    codes: np.ndarray, bound: int, sums: np.ndarray, counts: np.ndarray | None, mins: np.ndarray, maxs: np.ndarray
) -> _Partial:
    """One row per distinct code (codes in ``[0, bound)``), in code order: sum, count, min and max.

    ``counts`` None: every row counts one (rows are readings). Sums add in row order. Where the
    rows are many next to ``bound``, each code is its own slot of dense scratch arrays; else the
    codes are first numbered densely by a sort. Either way work and memory are a few arrays of
    the rows' or codes' length: no hash table per group, as Arrow's ``group_by`` builds (~300
    bytes per group, which for 100k sensors made merging open windows the dataflow's peak).
    """
    if 4 * len(codes) >= bound:
        distinct, slot, size = None, codes, bound
    else:
        distinct, slot = np.unique(codes, return_inverse=True)
        size = len(distinct)
    count = np.bincount(slot, minlength=size) if counts is None else np.bincount(slot, counts, size).astype(np.int64)
    total = np.bincount(slot, sums, size)
    low = np.full(size, np.inf)
    np.minimum.at(low, slot, mins)
    high = np.full(size, -np.inf)
    np.maximum.at(high, slot, maxs)
    if distinct is None:
        distinct = np.flatnonzero(count)
        count, total, low, high = count[distinct], total[distinct], low[distinct], high[distinct]
    return _Partial(distinct.astype(np.int64, copy=False), total, count, low, high)


def _merge(parts: list[_Partial], sensors: int) -> _Partial:
    """One row per sensor id of ``parts`` (ids below ``sensors``), in id order; sums add in the parts' order."""
    if len(parts) == 1:
        part = parts[0]
        return _reduce(part.sensor, sensors, part.sum, part.count, part.min, part.max)
    return _reduce(
        np.concatenate([p.sensor for p in parts]),
        sensors,
        np.concatenate([p.sum for p in parts]),
        np.concatenate([p.count for p in parts]),
        np.concatenate([p.min for p in parts]),
        np.concatenate([p.max for p in parts]),
    )


def _readings_by_window(
    readings: pa.Table, ends: np.ndarray, length_ns: int, sensor_ids: SensorIds
) -> Iterator[tuple[int, _Partial]]:
    """Readings aggregated by window end and sensor id: (window end, one row per sensor) for each window."""
    codes, ids = sensor_ids.encode(readings["device"], readings["tag"])
    first = int(ends.min())
    windows = (int(ends.max()) - first) // length_ns + 1
    if windows <= len(ends):  # number the windows from the first
        window, distinct_ends = (ends - first) // length_ns, None
    else:  # a few windows far apart
        distinct_ends, window = np.unique(ends, return_inverse=True)
        windows = len(distinct_ends)
    value = readings["value"].to_numpy()
    sensors = len(ids)
    grouped = _reduce(window * sensors + codes, windows * sensors, value, None, value, value)
    window, code = np.divmod(grouped.sensor, sensors)
    starts = np.flatnonzero(np.diff(window)) + 1
    for lo, hi in zip([0, *starts.tolist()], [*starts.tolist(), len(window)]):
        w = int(window[lo])
        end = first + w * length_ns if distinct_ends is None else int(distinct_ends[w])
        yield end, _Partial(ids[code[lo:hi]], grouped.sum[lo:hi], grouped.count[lo:hi], grouped.min[lo:hi], grouped.max[lo:hi])


class _OpenWindow:
    """The partials of one open window. Each partial has one row per sensor; merged lazily."""

    __slots__ = ("parts", "rows", "merged_rows")

    def __init__(self) -> None:
        self.parts: list[_Partial] = []
        self.rows = 0  # of every partial
        self.merged_rows = 0  # of the partial the last merge left

    def add(self, part: _Partial) -> None:
        self.parts.append(part)
        self.rows += part.rows

    def merged(self, sensors: int) -> _Partial:
        """One row per sensor of the window; kept as the window's only partial."""
        if len(self.parts) > 1:
            self.parts = [_merge(self.parts, sensors)]
        self.rows = self.merged_rows = self.parts[0].rows
        return self.parts[0]

    def should_merge(self, floor: int) -> bool:
        """Whether the partials outgrew the last merge (twice its rows, and at least ``floor``)."""
        return len(self.parts) > 1 and self.rows > max(floor, 2 * self.merged_rows)

    def sensors(self) -> int:
        """How many sensors the window holds; changes nothing."""
        if len(self.parts) == 1:
            return self.rows
        return len(np.unique(np.concatenate([p.sensor for p in self.parts])))


@dataclass(frozen=True)
class WindowSnapshot:
    """A :class:`WindowAggregator`'s state for recovery (kept by Bytewax, pickled).

    ``watermarks``: each input partition's watermark; ``closed_through``: every window ending at
    or before it is emitted; ``pending``: the open windows' partial aggregates by device, tag and
    window end (Arrow tables of one schema; :meth:`WindowAggregator.snapshot` writes one row per
    sensor and window end, :meth:`WindowAggregator.restore` also merges repeated ones). Sensors
    go by their strings, not by the integer ids the aggregator keys them by, so a snapshot does
    not depend on the order a process first saw its sensors in.
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

    Open windows are kept by window end, their sensors as integer ids (:class:`SensorIds`):
    each batch of readings is aggregated by window end and sensor (one partial per window it
    touches), and a window's partials are merged, one window at a time, when they grow or close.
    """

    _MERGE_ROWS = 1 << 16  # a window's partials are merged once they hold more rows than this and twice the last merge

    def __init__(self, length_ns: int, partitions: Iterable[str], idle_timeout_ns: int | None = None):
        if length_ns <= 0:
            raise ValueError("window length must be > 0")
        self.length_ns = length_ns
        self.idle_timeout_ns = idle_timeout_ns
        self.watermarks: dict[str, int] = {p: BEFORE_TIME for p in partitions}
        if not self.watermarks:
            raise ValueError("at least one input partition is needed")
        self.closed_through = BEFORE_TIME  # every window ending at or before this is emitted
        self._sensor_ids = SensorIds()
        self._open: dict[int, _OpenWindow] = {}  # by window end
        self._last_seen: dict[str, int] = {}
        self._idle: set[str] = set()

    # -- state ---------------------------------------------------------------

    def snapshot(self) -> WindowSnapshot:
        """The state for recovery; later input does not change it.

        The open windows go as one partial table by device and tag (the snapshot does not
        depend on this process's sensor ids), one row per sensor and window end.
        """
        ends = sorted(self._open)
        if not ends:
            return WindowSnapshot(SNAPSHOT_VERSION, dict(self.watermarks), self.closed_through, ())
        merged = [self._open[end].merged(len(self._sensor_ids)) for end in ends]
        ids = np.concatenate([m.sensor for m in merged])
        table = pa.table(
            [
                self._sensor_ids.devices(ids),
                self._sensor_ids.tags(ids),
                np.repeat(np.array(ends, np.int64), [m.rows for m in merged]),
                np.concatenate([m.sum for m in merged]),
                np.concatenate([m.count for m in merged]),
                np.concatenate([m.min for m in merged]),
                np.concatenate([m.max for m in merged]),
            ],
            schema=_PARTIAL_SCHEMA,
        )
        return WindowSnapshot(SNAPSHOT_VERSION, dict(self.watermarks), self.closed_through, (table,))

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
        for table in state.pending:
            if table.num_rows:
                agg._fold(_partials_by_window(table, agg._sensor_ids).items())
        for window in agg._open.values():  # a state's tables may hold a sensor and window more than once
            window.parts = [_merge(window.parts, len(agg._sensor_ids))]
            window.merged(len(agg._sensor_ids))
        return agg

    def open_windows(self) -> OpenWindows:
        """The windows folded but not emitted (one row per sensor and window end); changes nothing."""
        if not self._open:
            return OpenWindows()
        rows = sum(window.sensors() for window in self._open.values())
        return OpenWindows(rows, min(self._open), max(self._open))

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
                self._fold(_readings_by_window(readings, ends, self.length_ns, self._sensor_ids))
        self.watermarks[partition] = max(self.watermarks.get(partition, BEFORE_TIME), watermark)
        if wall_ns is not None:
            self._last_seen[partition] = wall_ns
            self._idle.discard(partition)
        return self._close(), late

    def _fold(self, parts: Iterable[tuple[int, _Partial]]) -> None:
        for end, part in parts:
            window = self._open.get(end)
            if window is None:
                window = self._open[end] = _OpenWindow()
            window.add(part)
            if window.should_merge(self._MERGE_ROWS):
                window.merged(len(self._sensor_ids))

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
        ends = sorted(end for end in self._open if end <= through)
        if not ends:
            return None
        sensors = len(self._sensor_ids)
        closing = [self._open.pop(end).merged(sensors) for end in ends]
        ids = np.concatenate([c.sensor for c in closing])
        count = np.concatenate([c.count for c in closing])
        table = pa.table(
            [
                np.repeat(np.array(ends, np.int64), [c.rows for c in closing]),
                self._sensor_ids.devices(ids),
                self._sensor_ids.tags(ids),
                np.concatenate([c.sum for c in closing]) / count,
                count,
                np.concatenate([c.min for c in closing]),
                np.concatenate([c.max for c in closing]),
            ],
            schema=WINDOW_SCHEMA,
        )
        return WindowBatch(table)

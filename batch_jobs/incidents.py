"""Incidents: a sensor's flagged windows grouped into episodes, kept up to date as scoring goes on.

An INCIDENT is a run of one sensor's flagged windows (``IsAnomaly``) of one
detector in which two consecutive flags are at most ``gap_windows`` unflagged
window slots apart (default 3: the gap the ``calibrated`` detector already
bridges inside one episode). ``Start`` is the first flagged window's end,
``End`` the last one's, ``PeakScore`` the largest score, ``FlaggedWindows``
the number of flags; ``Open`` says the incident may still grow: its ``End``
is within ``gap_windows`` of the newest scored window of the sensor, so a
flag in the next window would join it.

Incidents are a function of the Predictions rows alone: the same flagged
windows give the same incidents (``UpdatedAt``, the wall time of the write,
aside), whether a range is scored once, twice, or in two halves one after
the other. ``find_incidents`` is that function for one sensor.
``plan_incidents`` works out what a task's scores change: it recomputes only
the incidents the task's ranges can touch, from the task's own scores (the
arrays it already has) plus the stored flags of an incident it continues
(one that ends within the gap before the range) and of anything scored after
the range. It only reads, and only outside the ranges, so a task plans before
it writes and hands the plan to ``ScoringStore.upsert_scores`` with its
predictions: one transaction for both.

Tasks of the same detector that score the same sensor at the same time
(neither the sidecar nor ``evaluate``'s explicit ranges do; ``evaluate
--as-scheduled`` scores its slices in parallel) may each miss the other's
flags at their border; the next scoring of that range mends it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.predictions import INCIDENT_SCHEMA
from sensorflow.records.sensors import sensor_pairs
from sensorflow.records.windows import END_OF_TIME
from sensorflow.store import ScoringStore

__all__ = [
    "DEFAULT_GAP_WINDOWS",
    "IncidentPlan",
    "Incidents",
    "ScoredRange",
    "find_incidents",
    "plan_incidents",
]

DEFAULT_GAP_WINDOWS = 3
"""Flags at most this many unflagged window slots apart belong to one incident."""

Sensor = tuple[str, str]

_NONE = np.iinfo(np.int64).min  # "no such time" in per-sensor int64 arrays
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True, eq=False)
class Incidents:
    """One sensor's incidents as aligned arrays (ns window ends), oldest first."""

    start: np.ndarray
    end: np.ndarray
    peak_score: np.ndarray
    flagged_windows: np.ndarray
    open: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])


def find_incidents(ts: np.ndarray, score: np.ndarray, window_ns: int, gap_windows: int, newest: int) -> Incidents:
    """The incidents of one sensor's flagged windows: ``ts`` their ends (any order, no duplicates), ``score`` theirs.

    ``newest`` is the newest scored window end of the sensor: an incident ending
    within ``gap_windows`` slots of it is open. Pure: the same flags give the same arrays.
    """
    ts = np.asarray(ts, dtype=np.int64)
    _, found = _group(np.zeros(ts.shape[0], np.int64), ts, score, np.array([newest], np.int64), window_ns, gap_windows)
    return found


def _group(
    sensor: np.ndarray, ts: np.ndarray, score: np.ndarray, newest: np.ndarray, window_ns: int, gap_windows: int,
) -> tuple[np.ndarray, Incidents]:
    """``find_incidents`` of many sensors at once: each flag's sensor (an index into ``newest``), end and score.

    Returns each incident's sensor and the incidents, by sensor then Start. Per sensor the
    same arrays as ``find_incidents`` of its flags alone.
    """
    order = np.lexsort((ts, sensor))  # stable: by sensor, then ts
    sensor, ts = sensor[order], ts[order]
    score = np.asarray(score, dtype=np.float64)[order]
    n = ts.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, Incidents(empty, empty, np.zeros(0), empty, np.zeros(0, dtype=bool))
    reach = (gap_windows + 1) * window_ns  # the largest step between two flags of one incident
    begins = np.ones(n, dtype=bool)
    begins[1:] = (sensor[1:] != sensor[:-1]) | (np.diff(ts) > reach)
    first = np.flatnonzero(begins)
    last = np.append(first[1:] - 1, n - 1)
    peak = np.fmax.reduceat(score, first)  # a NaN score (never expected) does not hide the others
    owner, end = sensor[first], ts[last]
    is_open = newest[owner] - end <= gap_windows * window_ns
    return owner, Incidents(ts[first], end, peak, (last - first + 1).astype(np.int64), is_open)


@dataclass(frozen=True, eq=False)
class ScoredRange:
    """What a task scored for one sensor: the range ``(range_from, range_to]`` and every scored window in it."""

    device: str
    tag: str
    range_from: int
    range_to: int
    ts: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray


@dataclass(frozen=True, eq=False)
class IncidentPlan:
    """``detector``'s incidents redone for scored ranges, ready for ``replace_incidents`` / ``upsert_scores``.

    ``since``: each sensor that had or has incidents there, with the End from which its
    stored ones are replaced; ``rows``: its incidents from then on (``INCIDENT_SCHEMA``);
    ``opened``: how many of them have a Start the store did not hold.
    """

    detector: str
    since: dict[Sensor, int]
    rows: pa.Table
    opened: int = 0

    @classmethod
    def empty(cls, detector: str) -> IncidentPlan:
        return cls(detector, {}, INCIDENT_SCHEMA.empty_table())


def plan_incidents(
    store: ScoringStore, detector: str, scored: Sequence[ScoredRange], window_ns: int,
    gap_windows: int = DEFAULT_GAP_WINDOWS, now_ns: int | None = None,
) -> IncidentPlan:
    """The incidents of ``detector`` that the scored ranges (one per sensor) can touch, recomputed.

    Reads, all outside the ranges (so the ranges' own predictions may be written before or
    after): the incidents that end within the gap before each range or later, the stored
    flags of those that began before it, and anything scored after the ranges. Writes nothing.
    """
    if not scored:
        return IncidentPlan.empty(detector)
    now_ns = time.time_ns() if now_ns is None else now_ns
    sensors = [(r.device, r.tag) for r in scored]
    index = {sensor: i for i, sensor in enumerate(sensors)}
    if len(index) != len(sensors):
        raise ValueError("plan_incidents takes one scored range per sensor")
    range_from = np.array([r.range_from for r in scored], dtype=np.int64)
    range_to = np.array([r.range_to for r in scored], dtype=np.int64)
    since = range_from - gap_windows * window_ns
    # Incidents ending at >= since can merge with a flag in the range's first slot (or overlap the range).
    existing = store.read_incidents(since_ns=int(since.min()) - 1, detector=detector, sensors=sensors)
    old_sensor, old_start = _continued(existing, index, since)
    earliest = np.full(len(sensors), _NEVER, dtype=np.int64)
    np.minimum.at(earliest, old_sensor, old_start)
    had = earliest != _NEVER
    begin = np.where(had, np.minimum(range_from, earliest - window_ns), range_from)
    before = _stored_flags(store, detector, sensors, index, begin, range_from, begin < range_from)
    after = _stored_flags(store, detector, sensors, index, range_to, np.full(len(sensors), END_OF_TIME), None)

    flagged = [np.asarray(r.is_anomaly, dtype=bool) for r in scored]
    own_ts = [np.asarray(r.ts, dtype=np.int64)[f] for r, f in zip(scored, flagged)]
    own_score = [np.asarray(r.score, dtype=np.float64)[f] for r, f in zip(scored, flagged)]
    own_sensor = np.repeat(np.arange(len(sensors)), [t.shape[0] for t in own_ts])
    owner, found = _group(
        np.concatenate([before.sensor, own_sensor, after.sensor]),
        np.concatenate([before.ts, *own_ts, after.ts]),
        np.concatenate([before.score, *own_score, after.score]),
        np.maximum(range_to, after.newest), window_ns, gap_windows,
    )
    touched = np.flatnonzero(had | np.isin(np.arange(len(sensors)), owner))  # a sensor with nothing before or now needs no delete
    if touched.shape[0] == 0:
        return IncidentPlan.empty(detector)
    known = set(zip(old_sensor.tolist(), old_start.tolist()))
    opened = sum(1 for key in zip(owner.tolist(), found.start.tolist()) if key not in known)
    cutoffs = {sensors[i]: int(since[i]) for i in touched.tolist()}
    return IncidentPlan(detector, cutoffs, _table(sensors, owner, detector, found, now_ns), opened)


def _sensor_of_rows(table: pa.Table, index: dict[Sensor, int]) -> np.ndarray:
    """Each row's sensor as its number in ``index`` (-1 for a sensor not in it); one lookup per distinct sensor."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    pair, device_names, tag_dictionary = sensor_pairs(table["device"], table["tag"])
    tags = len(tag_dictionary)
    distinct, inverse = np.unique(pair, return_inverse=True)
    devices, tag_names = device_names.to_pylist(), tag_dictionary.to_pylist()
    number = [index.get((devices[p // tags], tag_names[p % tags]), -1) for p in distinct.tolist()]
    return np.array(number, dtype=np.int64)[inverse]


def _continued(existing: pa.Table, index: dict[Sensor, int], since: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensor number and Start of each stored incident that ends at or after its sensor's ``since``."""
    sensor = _sensor_of_rows(existing, index)
    if sensor.shape[0] == 0:
        return sensor, np.zeros(0, dtype=np.int64)
    start, end = existing["start"].to_numpy(), existing["end"].to_numpy()
    keep = sensor >= 0
    keep[keep] = end[keep] >= since[sensor[keep]]
    return sensor[keep], start[keep]


@dataclass(frozen=True, eq=False)
class _Flags:
    """Stored flags of several sensors: each flag's sensor number, end and score; per sensor its newest scored end."""

    sensor: np.ndarray
    ts: np.ndarray
    score: np.ndarray
    newest: np.ndarray  # _NONE where the sensor has no row in its range


def _stored_flags(
    store: ScoringStore, detector: str, sensors: list[Sensor], index: dict[Sensor, int],
    lo: np.ndarray, hi: np.ndarray, wanted: np.ndarray | None,
) -> _Flags:
    """The stored flags of ``detector`` in each sensor's ``(lo, hi]`` (only the ``wanted`` sensors; None: all).

    One read for all: over the widest range, cut per sensor afterwards.
    """
    newest = np.full(len(sensors), _NONE, dtype=np.int64)
    picked = np.arange(len(sensors)) if wanted is None else np.flatnonzero(wanted)
    nothing = _Flags(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), newest)
    if picked.shape[0] == 0:
        return nothing
    rows = store.read_predictions([sensors[i] for i in picked.tolist()], int(lo[picked].min()), int(hi[picked].max()))
    if rows.num_rows == 0:
        return nothing
    rows = rows.filter(pc.equal(rows["detector"], detector))
    sensor = _sensor_of_rows(rows, index)
    if sensor.shape[0] == 0:
        return nothing
    ts = rows["ts"].to_numpy()
    mine = sensor >= 0
    if wanted is not None:
        mine[mine] = wanted[sensor[mine]]
    mine[mine] = (ts[mine] > lo[sensor[mine]]) & (ts[mine] <= hi[sensor[mine]])
    np.maximum.at(newest, sensor[mine], ts[mine])
    keep = mine & rows["is_anomaly"].fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    score = rows["score"].to_numpy(zero_copy_only=False).astype(float)
    return _Flags(sensor[keep], ts[keep], score[keep], newest)


def _table(sensors: list[Sensor], owner: np.ndarray, detector: str, found: Incidents, now_ns: int) -> pa.Table:
    """The incidents as ``INCIDENT_SCHEMA`` rows; ``owner`` is each one's sensor number."""
    n = len(found)
    which = pa.array(owner, pa.int64())
    return pa.table({
        "device": pa.array([d for d, _ in sensors], pa.string()).take(which),
        "tag": pa.array([t for _, t in sensors], pa.string()).take(which),
        "detector": pa.array([detector], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64))),
        "start": pa.array(found.start, pa.int64()),
        "end": pa.array(found.end, pa.int64()),
        "peak_score": pa.array(found.peak_score, pa.float64()),
        "flagged_windows": pa.array(found.flagged_windows, pa.int64()),
        "open": pa.array(found.open, pa.bool_()),
        "updated_at": pa.array(np.full(n, now_ns, dtype=np.int64), pa.int64()),
    }, schema=INCIDENT_SCHEMA)

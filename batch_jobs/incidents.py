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
the other. ``find_incidents`` is that function for one sensor;
``update_incidents`` applies it after a task wrote its predictions: it
recomputes only the incidents the task's range can touch, from the task's
own scores plus the stored flags of an incident it continues (one that ends
within the gap before the range) and of anything scored after the range,
and replaces them in one ``Store.replace_incidents`` transaction.

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
from sensorflow.records.windows import END_OF_TIME
from sensorflow.store import ScoringStore

__all__ = ["DEFAULT_GAP_WINDOWS", "IncidentUpdate", "Incidents", "ScoredRange", "find_incidents", "update_incidents"]

DEFAULT_GAP_WINDOWS = 3
"""Flags at most this many unflagged window slots apart belong to one incident."""

Sensor = tuple[str, str]


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
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    ts, score = ts[order], score[order]
    if ts.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Incidents(empty, empty, np.zeros(0), empty, np.zeros(0, dtype=bool))
    reach = (gap_windows + 1) * window_ns  # the largest step between two flags of one incident
    first = np.concatenate([[0], np.flatnonzero(np.diff(ts) > reach) + 1])
    last = np.concatenate([first[1:] - 1, [ts.shape[0] - 1]])
    peak = np.fmax.reduceat(score, first)  # a NaN score (never expected) does not hide the others
    start, end = ts[first], ts[last]
    return Incidents(start, end, peak, (last - first + 1).astype(np.int64), newest - end <= gap_windows * window_ns)


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


@dataclass(frozen=True)
class IncidentUpdate:
    """What ``update_incidents`` wrote: ``rows`` replaced, of them ``opened`` new (a Start the store did not hold)."""

    rows: int = 0
    opened: int = 0


def update_incidents(
    store: ScoringStore, detector: str, scored: Sequence[ScoredRange], window_ns: int,
    gap_windows: int = DEFAULT_GAP_WINDOWS, now_ns: int | None = None,
) -> IncidentUpdate:
    """Recompute and replace the incidents of ``detector`` that the scored ranges can touch.

    Call it after the ranges' predictions are in the store. Reads: the incidents that
    end within the gap before each range (at most one per sensor), the stored flags
    of those that began before it, and anything scored after the ranges. Writes
    one ``replace_incidents`` for the sensors that had or have incidents there.
    """
    if not scored:
        return IncidentUpdate()
    now_ns = time.time_ns() if now_ns is None else now_ns
    sensors = [(r.device, r.tag) for r in scored]
    since = {(r.device, r.tag): r.range_from - gap_windows * window_ns for r in scored}
    # Incidents ending at >= since can merge with a flag in the range's first slot (or overlap the range).
    existing = store.read_incidents(since_ns=min(since.values()) - 1, detector=detector, sensors=sensors)
    earliest, known = _earliest_start(existing, since)
    begin = {s: min(r.range_from, earliest[s] - window_ns) if s in earliest else r.range_from
             for s, r in zip(sensors, scored)}
    before = _stored(store, detector, [(s, begin[s], r.range_from) for s, r in zip(sensors, scored) if begin[s] < r.range_from])
    after = _stored(store, detector, [(s, r.range_to, END_OF_TIME) for s, r in zip(sensors, scored)])
    parts, touched, opened = [], {}, 0
    for sensor, r in zip(sensors, scored):
        flagged = np.asarray(r.is_anomaly, dtype=bool)
        pieces = [before.get(sensor), (np.asarray(r.ts, dtype=np.int64)[flagged], np.asarray(r.score, float)[flagged]),
                  after.get(sensor)]
        ts = np.concatenate([p[0] for p in pieces if p is not None])
        score = np.concatenate([p[1] for p in pieces if p is not None])
        later = after.get(sensor)
        newest = max(r.range_to, int(later[2]) if later is not None else r.range_to)
        found = find_incidents(ts, score, window_ns, gap_windows, newest)
        if len(found) or sensor in earliest:  # a sensor with nothing before or now needs no delete
            touched[sensor] = since[sensor]
            parts.append(_table(sensor, detector, found, now_ns))
            opened += sum(1 for start in found.start.tolist() if (sensor, start) not in known)
    if not touched:
        return IncidentUpdate()
    return IncidentUpdate(store.replace_incidents(detector, touched, pa.concat_tables(parts)), opened)


def _earliest_start(existing: pa.Table, since: dict[Sensor, int]) -> tuple[dict[Sensor, int], set[tuple[Sensor, int]]]:
    """Per sensor, the earliest Start of its incidents ending at or after its ``since``; and (sensor, Start) of them all."""
    earliest: dict[Sensor, int] = {}
    known: set[tuple[Sensor, int]] = set()
    columns = (existing.column(c).to_pylist() for c in ("device", "tag", "start", "end"))
    for device, tag, start, end in zip(*columns, strict=True):
        sensor = (device, tag)
        if sensor in since and end >= since[sensor]:
            earliest[sensor] = min(start, earliest.get(sensor, start))
            known.add((sensor, start))
    return earliest, known


def _stored(
    store: ScoringStore, detector: str, wanted: list[tuple[Sensor, int, int]],
) -> dict[Sensor, tuple[np.ndarray, np.ndarray, int]]:
    """Per sensor, the stored flags (ts, score) of ``detector`` in its ``(lo, hi]`` and its newest scored ts there.

    One read for all: over the widest range, cut per sensor afterwards; sensors with no row are absent.
    """
    if not wanted:
        return {}
    lo, hi = min(w[1] for w in wanted), max(w[2] for w in wanted)
    rows = store.read_predictions([w[0] for w in wanted], lo, hi)
    rows = rows.filter(pc.equal(rows["detector"], detector)).sort_by([("device", "ascending"), ("tag", "ascending")])
    if rows.num_rows == 0:
        return {}
    ts = rows["ts"].to_numpy()
    score = rows["score"].to_numpy(zero_copy_only=False).astype(float)
    flag = rows["is_anomaly"].fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    runs = rows.select(["device", "tag"]).group_by(["device", "tag"], use_threads=False).aggregate([([], "count_all")])
    runs = runs.sort_by([("device", "ascending"), ("tag", "ascending")])
    bounds = {sensor: (a, b) for sensor, a, b in wanted}
    out, at = {}, 0
    for device, tag, n in zip(*(runs.column(c).to_pylist() for c in ("device", "tag", "count_all")), strict=True):
        a, b = bounds[(device, tag)]
        piece = slice(at, at + n)
        at += n
        mine = (ts[piece] > a) & (ts[piece] <= b)
        if mine.any():
            keep = mine & flag[piece]
            out[(device, tag)] = (ts[piece][keep], score[piece][keep], int(ts[piece][mine].max()))
    return out


def _table(sensor: Sensor, detector: str, found: Incidents, now_ns: int) -> pa.Table:
    n = len(found)
    return pa.table({
        "device": pa.array([sensor[0]] * n, pa.string()),
        "tag": pa.array([sensor[1]] * n, pa.string()),
        "detector": pa.array([detector] * n, pa.string()),
        "start": pa.array(found.start, pa.int64()),
        "end": pa.array(found.end, pa.int64()),
        "peak_score": pa.array(found.peak_score, pa.float64()),
        "flagged_windows": pa.array(found.flagged_windows, pa.int64()),
        "open": pa.array(found.open, pa.bool_()),
        "updated_at": pa.array(np.full(n, now_ns, dtype=np.int64), pa.int64()),
    }, schema=INCIDENT_SCHEMA)

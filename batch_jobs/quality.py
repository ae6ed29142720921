"""Detection quality against labelled anomalies: event-level precision, recall, F1, false alarms.

Ground truth is the simulator's ``labels.json`` (CONTRACTS.md): per sensor,
spans ``[start, end)`` of event time with a kind. A window row names its END
``TS`` and covers event time ``[TS - window, TS)``.

Rules (the demo and ``bench/quality.py`` use them as written here):

- A window LIES INSIDE a label when its time span meets the label's span:
  ``TS - window < end`` and ``TS > start``. For the simulator's labels, which
  start and end on window boundaries, that is exactly the windows whose
  readings are all anomalous (``start < TS <= end``); for unaligned labels a
  window holding some anomalous readings counts as inside too.
- A label is FOUND when at least one flagged window of its sensor lies inside
  it; its delay is the first such window's end minus the label's start.
- A flagged window inside no label of its sensor is a false-alarm window;
  runs of consecutive false-alarm windows of a sensor (ends one window
  apart) form one false-alarm EVENT.
- precision = found / (found + false-alarm events), recall = found /
  labelled, F1 their harmonic mean; false alarms per sensor-day = false-alarm
  events / (scored sensors x days of the scored range).

Only flagged windows are read, so a predictions table with or without rows
for unflagged windows gives the same report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KindQuality", "LabelSpan", "QualityReport", "evaluate", "read_labels"]

NS_PER_DAY = 86_400 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LabelSpan:
    """One labelled anomaly, times as int64 ns (start inclusive, end exclusive)."""

    device: str
    tag: str
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class KindQuality:
    """Recall of one anomaly kind (false alarms have no kind, so precision is fleet-wide only)."""

    kind: str
    labelled: int
    found: int
    recall: float
    median_delay_s: float | None


@dataclass(frozen=True)
class QualityReport:
    """Event-level figures of one detector's predictions against the labels."""

    labelled: int
    found: int
    false_alarm_events: int
    false_alarm_windows: int
    flagged_windows: int
    sensors: int
    sensor_days: float
    precision: float
    recall: float
    f1: float
    false_alarms_per_sensor_day: float
    kinds: tuple[KindQuality, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _iso_to_ns(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad label time {text!r}: expected ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _label_span(item: Any) -> LabelSpan:
    if isinstance(item, LabelSpan):
        return item
    record = item if isinstance(item, Mapping) else vars(item)
    try:
        span = LabelSpan(
            str(record["device"]), str(record["tag"]), str(record["kind"]),
            _iso_to_ns(record["start"]) if isinstance(record["start"], str) else int(record["start"]),
            _iso_to_ns(record["end"]) if isinstance(record["end"], str) else int(record["end"]),
        )
    except KeyError as e:
        raise ValueError(f"label {record!r} lacks {e.args[0]!r}") from None
    if span.end <= span.start:
        raise ValueError(f"label {record!r} ends before it starts")
    return span


def read_labels(source: str | Path | Iterable[Any]) -> list[LabelSpan]:
    """Labels from a ``labels.json`` path, or from label dicts/objects (``simulator.Label``)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read labels from {path}: {e}") from e
        if not isinstance(items, list):
            raise ValueError(f"{path}: labels.json must hold a JSON list")  # noqa: TRY004 (bad file content)
        source = items
    return [_label_span(item) for item in source]


def _normalized(predictions: Any) -> pa.Table:
    """(ts int64 ns, device, tag, is_anomaly) of a PREDICTION_SCHEMA-like table or a pandas frame.

    Column names match case-insensitively, ``IsAnomaly`` as well as ``is_anomaly``.
    """
    table = predictions if isinstance(predictions, pa.Table) else pa.Table.from_pandas(predictions, preserve_index=False)
    names = {name.lower().replace("_", ""): name for name in table.column_names}
    missing = [c for c in ("ts", "device", "tag", "is_anomaly") if c.replace("_", "") not in names]
    if missing:
        raise ValueError(f"predictions lack column(s) {', '.join(missing)}; have {', '.join(table.column_names)}")
    ts = table.column(names["ts"])
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("ns"))
    return pa.table({
        "ts": ts.cast(pa.int64()),
        "device": table.column(names["device"]).cast(pa.string()),
        "tag": table.column(names["tag"]).cast(pa.string()),
        "is_anomaly": table.column(names["isanomaly"]).cast(pa.bool_()).fill_null(False),
    })


def _sensor_spans(table: pa.Table, window_ns: int) -> tuple[int, float]:
    """Number of sensors, and their summed days from each one's first window start to its last window end."""
    grouped = table.group_by(["device", "tag"], use_threads=False).aggregate([("ts", "min"), ("ts", "max")])
    total = (grouped.column("ts_max").to_numpy() - grouped.column("ts_min").to_numpy() + window_ns).sum()
    return grouped.num_rows, float(total) / NS_PER_DAY


def _flagged_by_sensor(table: pa.Table) -> dict[tuple[str, str], np.ndarray]:
    """Sorted window ends of the flagged rows, per sensor."""
    flagged = table.filter(table.column("is_anomaly")).sort_by(
        [("device", "ascending"), ("tag", "ascending"), ("ts", "ascending")]
    )
    if flagged.num_rows == 0:
        return {}
    counts = flagged.group_by(["device", "tag"], use_threads=False).aggregate([([], "count_all")])
    counts = counts.sort_by([("device", "ascending"), ("tag", "ascending")])
    ts, out, at = flagged.column("ts").to_numpy(), {}, 0
    for device, tag, n in zip(*(counts.column(c).to_pylist() for c in ("device", "tag", "count_all")), strict=True):
        out[(device, tag)] = ts[at:at + n]
        at += n
    return out


@dataclass(frozen=True)
class _SensorMatch:
    """One sensor's flagged windows against its labels."""

    delays: tuple[tuple[str, float], ...]  # (kind, seconds) of each found label
    false_windows: int
    false_events: int


def _match(flagged: np.ndarray, spans: list[LabelSpan], window_ns: int) -> _SensorMatch:
    """Which labels the sorted flagged window ends find, and which windows are false alarms."""
    spans = sorted(spans, key=lambda s: s.start)
    starts = np.array([s.start for s in spans], dtype=np.int64)
    ends = np.array([s.end for s in spans], dtype=np.int64)
    # A window ending at t meets [start, end) iff start < t < end + window.
    first = np.searchsorted(flagged, starts, side="right")
    hit = first < flagged.shape[0]
    hit[hit] = flagged[first[hit]] < ends[hit] + window_ns
    delays = tuple(
        (span.kind, (int(flagged[i]) - span.start) / 1e9)
        for span, found, i in zip(spans, hit.tolist(), first.tolist(), strict=True)
        if found
    )
    last = np.searchsorted(starts, flagged, side="left") - 1  # the latest label starting before t
    reach = np.maximum.accumulate(ends) if ends.shape[0] else ends
    inside = last >= 0
    inside[inside] = flagged[inside] < reach[last[inside]] + window_ns
    alarms = flagged[~inside]
    events = 1 + np.count_nonzero(np.diff(alarms) != window_ns) if alarms.shape[0] else 0
    return _SensorMatch(delays, int(alarms.shape[0]), int(events))


def evaluate(
    predictions: Any,
    labels: str | Path | Iterable[Any],
    window_ns: int = 5 * 10**9,
    scored_range: tuple[int, int] | None = None,
) -> QualityReport:
    """Score ``predictions`` (table or frame with ts, device, tag, is_anomaly) against ``labels``.

    ``scored_range`` (ns, half-open on the window end like every range here)
    keeps only predicted windows in it and labels a window in it meets, and
    sets the sensor-days; without it everything counts and each sensor's days
    run from its first to its last predicted window.
    """
    if window_ns <= 0:
        raise ValueError(f"window_ns must be > 0, got {window_ns}")
    spans = read_labels(labels)
    table = _normalized(predictions)
    if scored_range is not None:
        lo, hi = scored_range
        spans = [s for s in spans if s.end > lo and s.start < hi]
        ts = table.column("ts")
        table = table.filter(pc.and_(pc.greater(ts, lo), pc.less_equal(ts, hi)))
    sensors, sensor_days = _sensor_spans(table, window_ns)
    if scored_range is not None:
        sensor_days = sensors * (scored_range[1] - scored_range[0]) / NS_PER_DAY
    flagged = _flagged_by_sensor(table)
    by_sensor: dict[tuple[str, str], list[LabelSpan]] = {}
    for span in spans:
        by_sensor.setdefault((span.device, span.tag), []).append(span)
    none = np.zeros(0, dtype=np.int64)
    matches = [_match(flagged.get(sensor, none), by_sensor.get(sensor, []), window_ns)
               for sensor in set(by_sensor) | set(flagged)]
    delays: dict[str, list[float]] = {}
    for kind, delay in (pair for m in matches for pair in m.delays):
        delays.setdefault(kind, []).append(delay)
    found = sum(len(d) for d in delays.values())
    false_events = sum(m.false_events for m in matches)
    precision = found / (found + false_events) if found + false_events else 0.0
    recall = found / len(spans) if spans else 0.0
    kinds = []
    for kind in sorted({s.kind for s in spans}):
        labelled = sum(1 for s in spans if s.kind == kind)
        kind_delays = delays.get(kind, [])
        kinds.append(KindQuality(kind, labelled, len(kind_delays), len(kind_delays) / labelled,
                                 float(np.median(kind_delays)) if kind_delays else None))
    return QualityReport(
        labelled=len(spans), found=found, false_alarm_events=false_events,
        false_alarm_windows=sum(m.false_windows for m in matches),
        flagged_windows=sum(int(ts.shape[0]) for ts in flagged.values()), sensors=sensors, sensor_days=sensor_days,
        precision=precision, recall=recall, f1=2 * precision * recall / (precision + recall) if found else 0.0,
        false_alarms_per_sensor_day=false_events / sensor_days if sensor_days else 0.0, kinds=tuple(kinds),
    )

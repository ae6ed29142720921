"""Detection quality against labelled anomalies: recall, window precision, F1, false flags and episodes.

Ground truth is the simulator's ``labels.json`` (CONTRACTS.md): per sensor,
spans ``[start, end)`` of event time with a kind. A window row names its END
``TS`` and covers event time ``[TS - window, TS)``.

Units. With ``scope="sensor"`` (the default) a unit is a sensor (device,
tag): a label matches its own sensor's flagged windows. With
``scope="device"`` a unit is a device: a label matches on its device alone
(its tag is ignored; labels of one device with the same kind and span count
once), and the device's flagged windows are the union of its tags' flagged
window ends, so a window time flagged by two tags counts once. A device's
labelled span is found when any of its tags flags inside it (how SKAB is
measured).

Rules (``sensorflow evaluate``, the demo and ``bench/quality.py`` use them as written here):

- A window LIES INSIDE a label when its time span meets the label's span:
  ``TS - window < end`` and ``TS > start``. For the simulator's labels, which
  start and end on window boundaries, that is exactly the windows whose
  readings are all anomalous (``start < TS <= end``); for unaligned labels a
  window holding some anomalous readings counts as inside too.
- A flagged window is any prediction row with ``IsAnomaly`` true, a flagged
  missing slot (``Value`` NULL) included.
- A label is FOUND when at least one flagged window of its unit lies inside
  it; its delay is the first such window's end minus the label's start.
- A flagged window inside no label of its unit is a FALSE FLAG; a run of
  consecutive false flags of a unit (ends one window apart) is one false-flag
  EPISODE, so a unit stuck in alarm shows as many windows, one episode.
- recall = found / labelled; precision = flagged windows inside a label /
  all flagged windows; F1 their harmonic mean. false flags (episodes) per
  sensor-day = false-flag windows (episodes) / (units x days of the scored
  range); in the device scope the days are device-days.
- The event-level figures of earlier releases stay: ``event_precision`` =
  found / (found + false-flag episodes) and ``event_f1``.

Only flagged windows are read, so a predictions table with or without rows
for unflagged windows gives the same report (give ``sensors`` then, so the
units that were scored without a flag still count).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SCOPES", "KindQuality", "LabelSpan", "QualityReport", "Scope", "UnitCount", "evaluate", "inside_labels", "read_labels"]

NS_PER_DAY = 86_400 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Scope = Literal["sensor", "device"]
SCOPES: tuple[Scope, ...] = ("sensor", "device")
Unit = tuple[str, str]  # (device, tag); tag "" in the device scope


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
    """Recall of one anomaly kind (false flags have no kind, so precision is fleet-wide only)."""

    kind: str
    labelled: int
    found: int
    recall: float
    median_delay_s: float | None


@dataclass(frozen=True)
class UnitCount:
    """A unit and one count of it (false-flag windows, missed labels, flagged windows); ``tag`` "" in the device scope."""

    device: str
    tag: str
    count: int


@dataclass(frozen=True)
class QualityReport:
    """One detector's predictions against the labels; the module docstring defines every figure."""

    scope: str
    labelled: int
    found: int
    recall: float
    precision: float  # flagged windows inside a label / flagged windows
    f1: float
    flagged_windows: int
    flagged_episodes: int  # runs of consecutive flagged windows, labelled or not
    false_flag_windows: int
    false_flag_episodes: int
    units: int  # sensors (scope sensor) or devices (scope device) scored
    sensor_days: float  # unit-days: device-days in the device scope
    false_flags_per_sensor_day: float
    episodes_per_sensor_day: float  # false-flag episodes per unit-day
    event_precision: float  # found / (found + false-flag episodes), the earlier headline
    event_f1: float
    kinds: tuple[KindQuality, ...]
    worst_false: tuple[UnitCount, ...]  # most false-flag windows first
    worst_missed: tuple[UnitCount, ...]  # most missed labels first
    worst_flagged: tuple[UnitCount, ...]  # most flagged windows first

    # Names of the event-level figures before window precision became the headline.
    @property
    def false_alarm_events(self) -> int:
        return self.false_flag_episodes

    @property
    def false_alarm_windows(self) -> int:
        return self.false_flag_windows

    @property
    def false_alarms_per_sensor_day(self) -> float:
        return self.episodes_per_sensor_day

    @property
    def sensors(self) -> int:
        return self.units

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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
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


def _as_units(table: pa.Table, spans: list[LabelSpan], scope: Scope) -> tuple[pa.Table, list[LabelSpan]]:
    """Rows and labels keyed by unit: unchanged for sensors; tag "" (labels deduplicated) for devices."""
    if scope == "sensor":
        return table, spans
    table = table.set_column(table.schema.get_field_index("tag"), "tag", pa.array([""] * table.num_rows, pa.string()))
    spans = list(dict.fromkeys(LabelSpan(s.device, "", s.kind, s.start, s.end) for s in spans))
    return table, spans


def _unit_spans(table: pa.Table, window_ns: int) -> tuple[int, float]:
    """Number of units, and their summed days from each one's first window start to its last window end."""
    if table.num_rows == 0:
        return 0, 0.0
    grouped = table.group_by(["device", "tag"], use_threads=False).aggregate([("ts", "min"), ("ts", "max")])
    total = (grouped.column("ts_max").to_numpy() - grouped.column("ts_min").to_numpy() + window_ns).sum()
    return grouped.num_rows, float(total) / NS_PER_DAY


def _flagged_by_unit(table: pa.Table) -> dict[Unit, np.ndarray]:
    """Sorted, distinct window ends of the flagged rows, per unit."""
    flagged = table.filter(table.column("is_anomaly")).sort_by(
        [("device", "ascending"), ("tag", "ascending"), ("ts", "ascending")]
    )
    if flagged.num_rows == 0:
        return {}
    counts = flagged.group_by(["device", "tag"], use_threads=False).aggregate([([], "count_all")])
    counts = counts.sort_by([("device", "ascending"), ("tag", "ascending")])
    ts, out, at = flagged.column("ts").to_numpy(), {}, 0
    for device, tag, n in zip(*(counts.column(c).to_pylist() for c in ("device", "tag", "count_all")), strict=True):
        out[(device, tag)] = np.unique(ts[at:at + n])  # a device's tags may flag the same window time
        at += n
    return out


def _episodes(ends: np.ndarray, window_ns: int) -> int:
    """Runs of consecutive window ends (one window apart) in sorted ``ends``."""
    return 1 + int(np.count_nonzero(np.diff(ends) != window_ns)) if ends.shape[0] else 0


def _inside(ts: np.ndarray, starts: np.ndarray, ends: np.ndarray, window_ns: int) -> np.ndarray:
    """Whether each window ending at ``ts`` meets one of the spans (``starts`` sorted, ``ends`` aligned with them)."""
    last = np.searchsorted(starts, ts, side="left") - 1  # the latest label starting before t
    reach = np.maximum.accumulate(ends) if ends.shape[0] else ends
    inside = last >= 0
    inside[inside] = ts[inside] < reach[last[inside]] + window_ns
    return inside


def inside_labels(ts: np.ndarray, spans: Iterable[LabelSpan], window_ns: int) -> np.ndarray:
    """Whether each window ending at ``ts`` lies inside one of ``spans`` (the module's rule; any unit's spans)."""
    spans = sorted(spans, key=lambda s: s.start)
    starts = np.array([s.start for s in spans], dtype=np.int64)
    ends = np.array([s.end for s in spans], dtype=np.int64)
    return _inside(np.asarray(ts, dtype=np.int64), starts, ends, window_ns)


@dataclass(frozen=True)
class _UnitMatch:
    """One unit's flagged windows against its labels."""

    delays: tuple[tuple[str, float], ...]  # (kind, seconds) of each found label
    labelled: int
    flagged: int
    episodes: int
    false_windows: int
    false_episodes: int


def _match(flagged: np.ndarray, spans: list[LabelSpan], window_ns: int) -> _UnitMatch:
    """Which labels the sorted flagged window ends find, and which windows are false flags."""
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
    false = flagged[~_inside(flagged, starts, ends, window_ns)]
    return _UnitMatch(delays, len(spans), int(flagged.shape[0]), _episodes(flagged, window_ns),
                      int(false.shape[0]), _episodes(false, window_ns))


def _worst(counts: dict[Unit, int], top: int) -> tuple[UnitCount, ...]:
    ranked = sorted(((-n, unit) for unit, n in counts.items() if n > 0))[:top]
    return tuple(UnitCount(device, tag, -n) for n, (device, tag) in ranked)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b else 0.0


def evaluate(
    predictions: Any,
    labels: str | Path | Iterable[Any],
    window_ns: int = 5 * 10**9,
    scored_range: tuple[int, int] | None = None,
    *,
    scope: Scope = "sensor",
    sensors: Iterable[tuple[str, str]] | None = None,
    top: int = 10,
) -> QualityReport:
    """Score ``predictions`` (table or frame with ts, device, tag, is_anomaly) against ``labels``.

    ``scored_range`` (ns, half-open on the window end like every range here)
    keeps only predicted windows in it and labels a window in it meets, and
    sets the unit-days; without it everything counts and each unit's days
    run from its first to its last predicted window. ``sensors`` (with a
    ``scored_range``) are the sensors that were scored, when ``predictions``
    hold only some rows (the flagged ones): the units are theirs. ``top``
    bounds the worst-unit lists.
    """
    if window_ns <= 0:
        raise ValueError(f"window_ns must be > 0, got {window_ns}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if sensors is not None and scored_range is None:
        raise ValueError("sensors need a scored_range (the days each unit was scored)")
    spans = read_labels(labels)
    table = _normalized(predictions)
    if scored_range is not None:
        lo, hi = scored_range
        spans = [s for s in spans if s.end > lo and s.start < hi]
        ts = table.column("ts")
        table = table.filter(pc.and_(pc.greater(ts, lo), pc.less_equal(ts, hi)))
    table, spans = _as_units(table, spans, scope)
    units, unit_days = _unit_spans(table, window_ns)
    if scored_range is not None:
        if sensors is not None:
            units = len({(d, t if scope == "sensor" else "") for d, t in sensors})
        unit_days = units * (scored_range[1] - scored_range[0]) / NS_PER_DAY
    flagged = _flagged_by_unit(table)
    by_unit: dict[Unit, list[LabelSpan]] = {}
    for span in spans:
        by_unit.setdefault((span.device, span.tag), []).append(span)
    none = np.zeros(0, dtype=np.int64)
    matches = {unit: _match(flagged.get(unit, none), by_unit.get(unit, []), window_ns)
               for unit in sorted(set(by_unit) | set(flagged))}
    delays: dict[str, list[float]] = {}
    for kind, delay in (pair for m in matches.values() for pair in m.delays):
        delays.setdefault(kind, []).append(delay)
    found = sum(len(d) for d in delays.values())
    flagged_windows = sum(m.flagged for m in matches.values())
    false_windows = sum(m.false_windows for m in matches.values())
    false_episodes = sum(m.false_episodes for m in matches.values())
    recall = _ratio(found, len(spans))
    precision = _ratio(flagged_windows - false_windows, flagged_windows)
    event_precision = _ratio(found, found + false_episodes)
    kinds = []
    for kind in sorted({s.kind for s in spans}):
        labelled = sum(1 for s in spans if s.kind == kind)
        kind_delays = delays.get(kind, [])
        kinds.append(KindQuality(kind, labelled, len(kind_delays), len(kind_delays) / labelled,
                                 float(np.median(kind_delays)) if kind_delays else None))
    return QualityReport(
        scope=scope, labelled=len(spans), found=found, recall=recall, precision=precision,
        f1=_harmonic(precision, recall), flagged_windows=flagged_windows,
        flagged_episodes=sum(m.episodes for m in matches.values()),
        false_flag_windows=false_windows, false_flag_episodes=false_episodes, units=units, sensor_days=unit_days,
        false_flags_per_sensor_day=_ratio(false_windows, unit_days),
        episodes_per_sensor_day=_ratio(false_episodes, unit_days),
        event_precision=event_precision, event_f1=_harmonic(event_precision, recall) if found else 0.0,
        kinds=tuple(kinds),
        worst_false=_worst({u: m.false_windows for u, m in matches.items()}, top),
        worst_missed=_worst({u: m.labelled - len(m.delays) for u, m in matches.items()}, top),
        worst_flagged=_worst({u: m.flagged for u, m in matches.items()}, top),
    )

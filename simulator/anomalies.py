"""Labelled anomalies: plan window-aligned spans, apply them to readings, write the labels.

Every span starts and ends on a window boundary (multiples of the window
length since the epoch), so a label covers whole windows: a reading is
anomalous exactly when its event time is in [start, end) of its sensor's
label. Spans of one sensor never overlap and are at least one window apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from sensorflow.simulator.config import ANOMALY_KINDS, AnomalySpec, TimingSpec
from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.profiles import CODE, ProfileParams, anomaly_sizes, stuck_values, value_grid
from sensorflow.simulator.signals import SensorParams, baseline, to_cents
from sensorflow.simulator.timefmt import format_enqueued_time

__all__ = ["AnomalyPlan", "Label", "apply_anomalies", "plan_anomalies", "write_labels"]

KIND_INDEX = {kind: i for i, kind in enumerate(ANOMALY_KINDS)}

# Span lengths in windows (min, max) per kind; a spike is one window.
_LENGTH_WINDOWS = {
    "spike": (1, 1),
    "level_shift": (12, 120),
    "stuck": (12, 120),
    "noise": (6, 60),
    "drift": (24, 240),
    "dropout": (6, 60),
}


@dataclass(frozen=True)
class Label:
    """One ground-truth span: start inclusive, end exclusive, event time."""

    device: str
    tag: str
    kind: str
    start: str
    end: str

    def to_json(self) -> dict[str, str]:
        return {"device": self.device, "tag": self.tag, "kind": self.kind, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class AnomalyPlan:
    """All anomalies of a run, sorted by (sensor, start).

    `magnitude` is in value units: the offset of a spike or level shift, the
    extra noise SD of a burst, the total ramp of a drift. `stuck_cents` is the
    value a stuck sensor repeats. `grid_cents` (0: none) is the grid the
    sensor's values lie on and anomalous values are rounded back to;
    `nonnegative` marks sensors whose values never go below 0 (counts);
    `in_training` marks the anomalies placed in the training range on
    purpose (`AnomalySpec.train_anomalies`). None means all 0 / False.
    """

    sensor: np.ndarray
    kind: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    magnitude: np.ndarray
    stuck_cents: np.ndarray
    grid_cents: np.ndarray | None = None
    nonnegative: np.ndarray | None = None
    in_training: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    def subset(self, keep: np.ndarray) -> "AnomalyPlan":
        """The anomalies where `keep` (a mask or indices) selects, in their order."""
        return AnomalyPlan(*(None if v is None else v[keep] for v in (getattr(self, f) for f in _PLAN_FIELDS)))

    def labels(self, fleet: Fleet) -> list[Label]:
        """Labels in (start, device, tag) order."""
        order = np.lexsort((self.sensor, self.start_ns))
        labels = []
        for i in order.tolist():
            device, tag = fleet.sensor_id_pair(int(self.sensor[i]))
            labels.append(
                Label(
                    device=str(device),
                    tag=str(tag),
                    kind=ANOMALY_KINDS[int(self.kind[i])],
                    start=format_enqueued_time(int(self.start_ns[i])),
                    end=format_enqueued_time(int(self.end_ns[i])),
                )
            )
        return labels


_PLAN_FIELDS = tuple(f.name for f in fields(AnomalyPlan))


def _empty_plan() -> AnomalyPlan:
    empty_int = np.zeros(0, dtype=np.int64)
    empty_bool = np.zeros(0, dtype=bool)
    return AnomalyPlan(
        empty_int, empty_int.astype(np.int8), empty_int, empty_int, np.zeros(0), empty_int, empty_int, empty_bool,
        empty_bool,
    )


def _place(
    spec: AnomalySpec,
    timing: TimingSpec,
    params: SensorParams,
    profiles: ProfileParams,
    rng: np.random.Generator,
    sensor: np.ndarray,
    kind: np.ndarray,
    length: np.ndarray,
    windows: int,
    training: bool,
) -> AnomalyPlan:
    """Anomalies of `kind`, `length` windows long, each at a random start among the run's first `windows`.

    Sized by their sensor's profile: seed signals get offsets of 1-3
    tag-range widths, other profiles 1-2 times `profiles.anomaly_sizes`,
    upwards only where values cannot go below 0.
    """
    window = spec.window_ns
    count = sensor.shape[0]
    start_window = spec.window_span(timing)[0] + (rng.random(count) * (windows - length + 1)).astype(np.int64)
    sign = np.where(rng.random(count) < 0.5, -1.0, 1.0)
    unit = rng.random(count)
    start_ns = start_window * window
    scale = params.scale[sensor]
    magnitude = np.select(
        [kind == KIND_INDEX["spike"], kind == KIND_INDEX["level_shift"], kind == KIND_INDEX["noise"],
         kind == KIND_INDEX["drift"]],
        [sign * (2 + unit) * scale, sign * (1 + unit) * scale, (0.5 + unit / 2) * scale, sign * (1 + unit) * scale],
        0.0,
    )
    code = profiles.code[sensor]
    stuck_cents = np.where(
        code == CODE["uniform"],
        to_cents(params.low[sensor] + unit * scale),
        to_cents(baseline(params, sensor, start_ns, timing.start_ns, profiles.period_ns)),
    )
    own = np.flatnonzero(code > CODE["realistic"])
    if own.shape[0]:
        s, k = sensor[own], kind[own]
        size = anomaly_sizes(profiles, window)[k, s]  # NaN for stuck and dropout: no magnitude
        upward = value_grid(profiles, s)[1] | (k == KIND_INDEX["noise"])
        magnitude[own] = np.nan_to_num(np.where(upward, 1.0, sign[own]) * (1 + unit[own]) * size)
        stuck_cents[own] = stuck_values(profiles, s, start_ns[own], timing.start_ns)
    grid, nonnegative = value_grid(profiles, sensor)
    return AnomalyPlan(
        sensor, kind, start_ns, (start_window + length) * window, magnitude, stuck_cents, grid, nonnegative,
        np.full(count, training),
    )


def plan_anomalies(
    spec: AnomalySpec,
    timing: TimingSpec,
    params: SensorParams,
    profiles: ProfileParams,
    rng: np.random.Generator,
    train_rng: np.random.Generator,
) -> AnomalyPlan:
    """Draw anomalies: a Poisson count per sensor, kinds uniform over `spec.kinds`.

    With `spec.train_anomalies`, `train_rng` places one more on that share of
    sensors inside the training range; anomalies of those sensors that would
    touch it are dropped.
    """
    sensors = params.level.shape[0]
    windows = spec.window_span(timing)[1]
    expected = spec.rate_per_sensor_hour * timing.duration_ns / 3.6e12
    plan = _empty_plan()
    if expected > 0 and windows >= 1:
        counts = rng.poisson(expected, sensors)
        sensor = np.repeat(np.arange(sensors, dtype=np.int64), counts)
        total = sensor.shape[0]
        kinds = np.array([KIND_INDEX[k] for k in spec.kinds], dtype=np.int8)
        kind = kinds[rng.integers(0, kinds.shape[0], total)]
        min_len = np.array([_LENGTH_WINDOWS[k][0] for k in ANOMALY_KINDS])[kind]
        max_len = np.array([_LENGTH_WINDOWS[k][1] for k in ANOMALY_KINDS])[kind]
        # At most half the run, so every span has normal readings around it.
        length = np.minimum(rng.integers(min_len, max_len + 1), max(1, windows // 2))
        placed = _place(spec, timing, params, profiles, rng, sensor, kind, length, windows, training=False)
        plan = _without_overlaps(placed.subset(np.lexsort((placed.start_ns, placed.sensor))), spec.window_ns)
    if spec.train_anomalies > 0 and windows >= 2:
        plan = _merge_training(plan, _training_plan(spec, timing, params, profiles, train_rng), spec.window_ns)
    return plan


# Training anomalies: relative weight of each kind, and length as a share of the training range.
_TRAIN_WEIGHT = {"spike": 1.0, "level_shift": 2.0, "stuck": 3.0, "noise": 1.0, "drift": 1.0, "dropout": 1.0}
_TRAIN_LENGTH = {
    "spike": (0.0, 0.0),
    "level_shift": (0.2, 0.5),
    "stuck": (0.3, 0.6),
    "noise": (0.1, 0.3),
    "drift": (0.2, 0.5),
    "dropout": (0.1, 0.3),
}


def _training_plan(
    spec: AnomalySpec,
    timing: TimingSpec,
    params: SensorParams,
    profiles: ProfileParams,
    rng: np.random.Generator,
) -> AnomalyPlan:
    """One anomaly on `spec.train_anomalies` of the sensors, inside the training range; the first is stuck."""
    sensors = params.level.shape[0]
    train_windows = spec.training_end_ns(timing) // spec.window_ns - spec.window_span(timing)[0]
    count = int(round(spec.train_anomalies * sensors))
    if count == 0 or train_windows < 2:
        return _empty_plan()
    sensor = np.sort(rng.choice(sensors, count, replace=False)).astype(np.int64)
    weights = np.array([_TRAIN_WEIGHT[k] for k in spec.kinds])
    kinds = np.array([KIND_INDEX[k] for k in spec.kinds], dtype=np.int8)
    kind = kinds[rng.choice(kinds.shape[0], count, p=weights / weights.sum())]
    if "stuck" in spec.kinds:
        kind[0] = KIND_INDEX["stuck"]
    low = np.array([_TRAIN_LENGTH[k][0] for k in ANOMALY_KINDS])[kind]
    high = np.array([_TRAIN_LENGTH[k][1] for k in ANOMALY_KINDS])[kind]
    share = low + rng.random(count) * (high - low)
    # Whole windows, at least one, and one window of normal readings left in the range.
    length = np.clip((share * train_windows).astype(np.int64), 1, train_windows - 1)
    return _place(spec, timing, params, profiles, rng, sensor, kind, length, train_windows, training=True)


def _merge_training(plan: AnomalyPlan, placed: AnomalyPlan, window: int) -> AnomalyPlan:
    """Both plans, sorted; an anomaly that overlaps a placed one of its sensor (or is not a window apart) goes."""
    if len(placed) == 0:
        return plan
    placed_start = np.full(int(max(plan.sensor.max(initial=0), placed.sensor.max())) + 1, -1, dtype=np.int64)
    placed_end = placed_start.copy()
    placed_start[placed.sensor] = placed.start_ns
    placed_end[placed.sensor] = placed.end_ns
    a, b = placed_start[plan.sensor], placed_end[plan.sensor]
    clear = (a < 0) | (plan.end_ns + window <= a) | (plan.start_ns >= b + window)
    kept = plan.subset(clear)
    both = AnomalyPlan(*(np.concatenate([getattr(kept, f), getattr(placed, f)]) for f in _PLAN_FIELDS))
    return both.subset(np.lexsort((both.start_ns, both.sensor)))


def _without_overlaps(plan: AnomalyPlan, window: int) -> AnomalyPlan:
    """Keep the earlier of overlapping spans; keep one free window between spans of a sensor."""
    keep = np.zeros(len(plan), dtype=bool)
    last_sensor, last_end = -1, 0
    spans = zip(plan.sensor.tolist(), plan.start_ns.tolist(), plan.end_ns.tolist(), strict=True)
    for i, (sensor, start, end) in enumerate(spans):
        if sensor != last_sensor or start >= last_end + window:
            keep[i] = True
            last_sensor, last_end = sensor, end
    return plan.subset(keep)


def locate(plan: AnomalyPlan, sensor: np.ndarray, ns: np.ndarray) -> np.ndarray:
    """Index into `plan` of the anomaly each reading falls in, or -1."""
    found = np.full(sensor.shape[0], -1, dtype=np.int64)
    if sensor.shape[0] == 0 or len(plan) == 0:
        return found
    lo, hi = int(ns.min()), int(ns.max()) + 1
    active = np.flatnonzero((plan.start_ns < hi) & (plan.end_ns > lo))
    if active.shape[0] == 0:
        return found
    span = hi - lo
    if (int(plan.sensor[active].max()) + 1) * span >= 2**62:
        raise ValueError("chunk too long to locate anomalies; use shorter chunks")
    # One sorted key line: sensor-major, then time within the chunk. Spans of a
    # sensor do not overlap, so an odd insertion point means "inside a span".
    base = plan.sensor[active] * span
    bounds = np.empty(2 * active.shape[0], dtype=np.int64)
    bounds[0::2] = base + np.maximum(plan.start_ns[active] - lo, 0)
    bounds[1::2] = base + np.minimum(plan.end_ns[active] - lo, span)
    position = np.searchsorted(bounds, sensor.astype(np.int64) * span + (ns - lo), side="right")
    inside = (position & 1) == 1
    found[inside] = active[(position[inside] - 1) // 2]
    return found


def apply_anomalies(
    plan: AnomalyPlan, sensor: np.ndarray, ns: np.ndarray, cents: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Change `cents` in place for readings inside anomalies; return the mask of readings to keep.

    Dropout readings are the ones not kept.
    """
    where = locate(plan, sensor, ns)
    rows = np.flatnonzero(where >= 0)
    keep = np.ones(sensor.shape[0], dtype=bool)
    if rows.shape[0] == 0:
        return keep
    anomaly = where[rows]
    kind = plan.kind[anomaly]
    magnitude = plan.magnitude[anomaly]
    shift = np.zeros(rows.shape[0], dtype=np.float64)
    offset_kinds = (kind == KIND_INDEX["spike"]) | (kind == KIND_INDEX["level_shift"])
    shift[offset_kinds] = magnitude[offset_kinds]
    noisy = kind == KIND_INDEX["noise"]
    shift[noisy] = rng.standard_normal(int(noisy.sum())) * magnitude[noisy]
    drifting = kind == KIND_INDEX["drift"]
    a = anomaly[drifting]
    progress = (ns[rows[drifting]] - plan.start_ns[a]) / (plan.end_ns[a] - plan.start_ns[a])
    shift[drifting] = magnitude[drifting] * progress
    cents[rows] += np.rint(shift * 100.0).astype(np.int64)
    if plan.grid_cents is not None:
        # Quantized and count sensors stay on their grid (and counts >= 0) when they fail.
        grid = plan.grid_cents[anomaly]
        gridded = np.flatnonzero(grid > 0)
        step = grid[gridded]
        cents[rows[gridded]] = np.rint(cents[rows[gridded]] / step).astype(np.int64) * step
        floored = rows[plan.nonnegative[anomaly]]
        cents[floored] = np.maximum(cents[floored], 0)
    stuck = kind == KIND_INDEX["stuck"]
    cents[rows[stuck]] = plan.stuck_cents[anomaly[stuck]]
    keep[rows[kind == KIND_INDEX["dropout"]]] = False
    return keep


def write_labels(path: Path, labels: list[Label]) -> None:
    """Write `labels.json` (a JSON list, as CONTRACTS.md says)."""
    text = json.dumps([label.to_json() for label in labels], indent=1)
    path.write_text(text + "\n", encoding="utf-8")

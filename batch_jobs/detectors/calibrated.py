"""``calibrated``: the default detector; each sensor's limits come from its own training scores.

Real series break fixed "k robust SDs" limits: a daily cycle or a drift makes
the training spread wide, a quantized or mostly-zero series has a spread of
0, a failure inside the training range inflates it. This detector instead
scores every window with a few cheap prediction errors and puts each limit
at a multiple of the LARGEST score the sensor's own training windows reached
(capped, so one gross outlier in training cannot hide everything after it).
A score of 1.0 is the limit; ``Scores.score`` is the largest evidence.

Evidence per window slot (rows of ``FEATURES``):

- trend: ``|value - prediction|``, the prediction a straight line fitted to
  the previous ``trend_windows`` windows (a one-step linear-trend forecast):
  cycles and drifts are predicted, spikes, steps and bursts are not;
- shift: how far the median of the last ``shift_windows`` windows moved
  against the same median ``shift_lag`` windows earlier: level shifts and
  ramps that are too slow for the one-step forecast;
- drift: the same over ``drift_windows`` and ``drift_lag`` (10 minutes at
  5 s windows): drifts too slow for the shift; off for a sensor whose
  training range gave fewer than ``drift_lag`` drift scores (too short to
  show how far it wanders over that span: 251 windows by default);
- spread: ``max - min`` of the window (noise bursts);
- stuck: readings repeating exactly, summed over a run of flat windows;
- gap: a run of missing slots longer than the sensor's usual gaps, between
  two windows with readings (slots after the newest window are not judged:
  their readings may not have arrived yet), flagged once, on the slot where
  the run reaches its limit (its score: the run's length / the limit);
- low_count: under half the usual count, where that was rare in training
  (evidence: half the usual count / the window's count, so a sensitivity
  of 2 asks for a quarter).

Anomalies inside the training range set no limit: a run of high training
scores (a shift, drift or burst: an episode, see ``Calibration``) is left
out of the maximum, and so is a stuck run far longer than any other.

A second look (only for a sensor with flagged windows): trend, shift and
drift are computed again against a reference series in which each run of
flagged windows is replaced by what came before it, and a window keeps the
lower evidence, so the windows after an anomaly are compared with normal,
not with the anomaly (its end does not echo as more alarms).

Limits never divide by a zero spread: a limit learned as 0 (constant or
quantized training) falls back to the sensor's value resolution, the
smallest step between its distinct training values, so an ordinary step of
one quantum stays under the limit.

Episodes (the alarm guard): windows in a gap of at most ``bridge`` windows
with readings between two flagged windows are flagged too, with score 1.0
(at the limit, by this rule), so a sensor flickering around its limit gives
one long episode, not hundreds of alarms. The guard counts windows with
readings, like every feature but the gap: a sensor read every 5 minutes
in 5 s windows is judged as if its readings were back to back, and no
empty slot is flagged by the guard (only by the gap rule).

Scoring uses the end of the training range as history when a scored range
starts right after it (no break longer than the history or the gap limit),
so the first windows of a range are judged too.
``warnings()`` says when the training range itself looked anomalous (mostly
missing, stuck). Cost: a few dozen numpy calls per fit or score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from sensorflow.batch_jobs.detectors.base import (
    Detector,
    Model,
    Scores,
    SensorWindows,
    params_from,
    scalars_from_arrays,
    scalars_to_arrays,
)
from sensorflow.batch_jobs.detectors.features import (
    gap_runs,
    median_of_medians,
    repeats,
    sliding_median,
    stuck_runs,
    true_runs,
    upper_quantiles,
)

__all__ = ["FEATURES", "Calibrated", "CalibratedModel", "Calibration", "Limits"]

FEATURES = ("trend", "shift", "drift", "spread", "stuck", "gap", "low_count")
"""Rows of ``CalibratedModel.evidence``."""
_ROW = {name: row for row, name in enumerate(FEATURES)}
_NEVER = 1e300  # a limit no evidence reaches


@dataclass(frozen=True)
class Calibration:
    """Global constants of ``calibrated`` (the same for every sensor), kept with every model.

    Window counts: ``trend_windows`` fitted for the one-step forecast,
    ``shift_windows`` per median and ``shift_lag`` between the two medians
    (steps and ramps too quick for the forecast), ``drift_windows`` and
    ``drift_lag`` the same for slow drifts. Margins (multiples of the
    training maximum): ``trend``, ``shift``, ``drift``, ``spread``, ``stuck``
    (repeats in a run), ``gap`` (missing slots in a run). ``tail_cap``: a
    training maximum counts at most up to the 99th percentile plus this many
    times its distance from the median (a gross training outlier is not
    normal). ``episode_cap`` and ``episode_windows``: a run of at least
    ``episode_windows`` training scores above the 90th percentile of the
    positive scores plus ``episode_cap`` times its distance from their median
    is an anomaly inside the training range and sets no limit. ``lone_run``: a
    training stuck run this many times longer than any other is an anomaly
    too. ``bridge``: the longest gap between two flagged windows that the
    episode guard flags too. ``threshold_scale``: the user's sensitivity,
    multiplying every limit.
    """

    trend_windows: int = 20
    shift_windows: int = 5
    shift_lag: int = 20
    drift_windows: int = 12
    drift_lag: int = 120
    trend: float = 1.5
    shift: float = 2.5
    drift: float = 6.0
    spread: float = 2.0
    stuck: float = 2.5
    gap: float = 3.0
    tail_cap: float = 6.0
    episode_cap: float = 3.0
    episode_windows: int = 3
    lone_run: float = 4.0
    bridge: int = 3
    low_count: float = 0.5
    stuck_min: float = 3.0
    gap_min: float = 2.0
    threshold_scale: float = 1.0

    def __post_init__(self) -> None:
        counts = (self.trend_windows, self.shift_windows, self.shift_lag, self.drift_windows, self.drift_lag)
        if not all(isinstance(n, int) and n >= 2 for n in counts) or not (isinstance(self.bridge, int) and self.bridge >= 0):
            raise ValueError(f"calibrated needs int window counts >= 2 and an int bridge >= 0, got {counts}, {self.bridge!r}")
        if not (isinstance(self.episode_windows, int) and self.episode_windows >= 1):
            raise ValueError(f"calibrated needs an int episode_windows >= 1, got {self.episode_windows!r}")
        ints = {"trend_windows", "shift_windows", "shift_lag", "drift_windows", "drift_lag", "episode_windows", "bridge"}
        bad = [f.name for f in fields(self) if f.name not in ints and not getattr(self, f.name) > 0]
        if bad:
            raise ValueError(f"calibrated parameters must be > 0: {', '.join(bad)}")

    @property
    def history(self) -> int:
        """Windows of history the features need before a window."""
        return max(self.trend_windows, self.shift_windows - 1 + self.shift_lag, self.drift_windows - 1 + self.drift_lag)


@dataclass(frozen=True)
class Limits:
    """One sensor's fitted limits (evidence 1.0) and what the training range looked like; all float64."""

    level: float  # the training median: moving towards it is coming back, never evidence
    trend_limit: float
    shift_limit: float
    drift_limit: float
    spread_limit: float
    stuck_limit: float
    gap_limit: float
    count_median: float
    low_count_rare: float  # 1.0: under-half counts were rare in training, so they are evidence
    train_missing_share: float  # of the training slots, the share without readings
    train_stuck_share: float  # of the training readings, the share repeating one value in its longest stuck run


def _trend_errors(v: np.ndarray, m: int, level: float, ref: np.ndarray | None = None) -> np.ndarray:
    """``|v[i] - forecast|`` of a line fitted to the previous ``m`` windows (NaN for the first ``m``); O(n).

    The line is fitted to the running median of three of those windows, so
    one anomalous window does not bend the forecasts of the windows after it.
    The line is fitted to ``ref`` when given (the series with flagged windows
    replaced, see ``_cleaned``), so what came just before is judged by what
    normal looked like. A value nearer to ``level`` (the training median)
    than its forecast is coming back to normal and has error 0: the end of an
    anomaly is not a second one.
    """
    n = v.shape[0]
    out = np.full(n, np.nan)
    if n <= m:
        return out
    offset = v[:m].mean()  # smaller sums, same errors
    centred = v - offset
    base = centred if ref is None else ref - offset
    smooth = base.copy()
    if n >= 3:
        smooth[2:] = sliding_median(base, 3)
    t = np.arange(n, dtype=np.float64)
    s0 = np.zeros(n + 1)
    s1 = np.zeros(n + 1)
    np.cumsum(smooth, out=s0[1:])
    np.cumsum(t * smooth, out=s1[1:])
    i = np.arange(m, n)
    sum_y = s0[i] - s0[i - m]
    sum_xy = s1[i] - s1[i - m] - (i - m) * sum_y  # x = 0..m-1 within each fit
    x_mean = (m - 1) / 2.0
    slope = (sum_xy - x_mean * sum_y) / (m * (m * m - 1) / 12.0)
    forecast = sum_y / m + slope * (m - x_mean)
    home = level - offset
    out[m:] = np.where(np.abs(centred[m:] - home) < np.abs(forecast - home), 0.0, np.abs(centred[m:] - forecast))
    return out


def _shifts(
    v: np.ndarray, k: int, lag: int, level: float, ref: np.ndarray | None = None, twice: bool = False
) -> np.ndarray:
    """How far the median of the last ``k`` windows moved from the median of ``k`` windows ``lag`` earlier.

    ``|median(v[i-k+1..i]) - median(ref[i-lag-k+1..i-lag])|`` (``ref`` = ``v``
    unless given; NaN where there is no such history), but never more than
    the window's own distance from that earlier median (the median of ``k``
    still holds an anomaly's windows for a while after the value came back),
    and with ``twice`` never more than the move against the median ``2 x lag``
    earlier either (a drift that ended and came back is no new drift).
    Coming back is not an anomaly: 0 where the recent median, or the window
    itself, is nearer to ``level`` than the earlier median.
    """
    n = v.shape[0]
    out = np.full(n, np.nan)
    if n < k + lag:
        return out
    level_of = median_of_medians if twice else sliding_median  # drift: long windows, where a median costs a sort
    medians = level_of(v, k)  # medians[j] ends at j + k - 1
    earlier = medians if ref is None else level_of(ref, k)
    now, then, value = medians[lag:], earlier[:-lag], v[k - 1 + lag:]
    moved = np.minimum(np.abs(now - then), np.abs(value - then))
    if twice and earlier.shape[0] > 2 * lag:
        moved[lag:] = np.minimum(moved[lag:], np.abs(now[lag:] - earlier[:-2 * lag]))
    away = np.abs(then - level)
    back = (np.abs(now - level) < away) | (np.abs(value - level) < away)
    out[k - 1 + lag:] = np.where(back, 0.0, moved)
    return out


def _cleaned(series: np.ndarray, flagged: np.ndarray, k: int) -> np.ndarray:
    """``series`` with each run of flagged windows replaced by the median of the ``k`` values before it.

    The reference for a second look (``CalibratedModel.evidence``): windows
    after an anomaly are compared with what came before it, not with the
    anomaly, so its end does not echo as more alarms. The replacement goes on
    past the run while the values stay nearer the run's own median than that
    earlier median (the unflagged rest of a level shift: its first windows
    were flagged, its plateau no longer is), up to the next run.
    """
    out = series.copy()
    starts, ends = true_runs(flagged)
    stops = np.append(starts[1:], series.shape[0]).tolist()
    for start, end, stop in zip(starts.tolist(), ends.tolist(), stops):
        if start == 0:
            continue
        before = float(np.median(out[max(0, start - k):start]))
        level = float(np.median(series[start:end + 1]))
        rest = series[end + 1:stop]
        away = np.abs(rest - level) < np.abs(rest - before)
        last = end + 1 + (int(np.argmin(away)) if not away.all() else away.shape[0])
        out[start:last] = before
    return out


def _resolution(v: np.ndarray) -> float:
    """The smallest step between distinct values (0 for a constant)."""
    distinct = np.unique(v)
    if distinct.shape[0] < 2:
        return 0.0
    return float(np.diff(distinct).min())


def _limit(scores: np.ndarray, margin: float, c: Calibration, floor: float, episodes: bool = False) -> float:
    """``margin`` x the training maximum (capped at the tail cap), never below ``margin`` x ``floor``.

    With ``episodes`` (``scores`` in window order) the maximum also leaves
    out runs of at least ``c.episode_windows`` consecutive scores above the
    episode cap (the 90th percentile of the positive scores plus
    ``c.episode_cap`` times its distance from their median): a level shift,
    drift or noise burst inside the training range is an anomaly to find
    later, not a normal swing, while isolated high scores (heavy tails) stay.
    """
    finite = scores[np.isfinite(scores)]
    if finite.shape[0] == 0:
        return margin * floor if floor > 0 else _NEVER
    top = float(finite.max())
    if finite.shape[0] >= 20:
        q50, q99 = upper_quantiles(finite, 0.5, 0.99)
        top = min(top, q99 + c.tail_cap * (q99 - q50))
        if episodes:
            top = min(top, _without_episodes(finite, c))
    return margin * max(top, floor)


def _drift_limit(scores: np.ndarray, c: Calibration, floor: float) -> float:
    """The drift limit, or none (``_NEVER``) from fewer than ``c.drift_lag`` training scores: a training range
    that short has not shown how far this sensor wanders over the drift's span, and a limit from its few
    scores flags the ordinary wander of the long range scored after it."""
    if np.count_nonzero(np.isfinite(scores)) < c.drift_lag:
        return _NEVER
    return _limit(scores, c.drift, c, floor, episodes=True)


def _without_episodes(scores: np.ndarray, c: Calibration) -> float:
    """The largest of ``scores`` outside training episodes: ``c.episode_windows`` or more scores above the
    episode cap, each within ``c.bridge`` windows of the next (a noise burst dips under the cap now and then)."""
    positive = scores[scores > 0]
    typical = positive if positive.shape[0] >= 20 else scores  # many scores are 0 ("coming back")
    q50, q90 = upper_quantiles(typical, 0.5, 0.9)
    if q90 <= q50:
        return float(scores.max())  # quantized scores: no scale to tell an episode from a normal step
    over = scores > q90 + c.episode_cap * (q90 - q50)
    if np.count_nonzero(over) < c.episode_windows:
        return float(scores.max())
    starts, ends = true_runs(_episodes(over.astype(np.float64), c.bridge) >= 1.0)
    seen = np.concatenate(([0], np.cumsum(over)))
    long = seen[ends + 1] - seen[starts] >= c.episode_windows
    if not long.any():
        return float(scores.max())
    inside = np.zeros(scores.shape[0] + 1, dtype=np.int64)
    np.add.at(inside, starts[long], 1)
    np.add.at(inside, ends[long] + 1, -1)
    outside = np.cumsum(inside[:-1]) == 0
    return float(scores[outside].max()) if outside.any() else float(scores.max())


def _stuck_limit(repeated: np.ndarray, runs: np.ndarray, c: Calibration) -> float:
    """Repeats in a run that make it stuck: past the training's longest normal runs, never for a sensor that
    repeats itself in most windows.

    A run more than ``c.lone_run`` times longer than every other training run
    is a stuck anomaly inside the training range, not normal: the limit
    comes from the next longest run (or the floor), so the same fault is
    found when it comes back.
    """
    if np.count_nonzero(repeated) * 2 >= repeated.shape[0]:
        return _NEVER  # coarse quantization: repeating is what this sensor does
    lengths = np.unique(runs[runs > 0])  # each window holds its run's repeats: one entry per length
    top = 0.0
    if lengths.shape[0]:
        second = float(lengths[-2]) if lengths.shape[0] >= 2 else 0.0
        top = min(float(lengths[-1]), c.lone_run * second)
    return c.stuck * max(top, c.stuck_min)


def _gap_evidence(count: np.ndarray, limit: float) -> np.ndarray:
    """Per slot: a run of missing slots' length / ``limit``, on ONE slot of the run: where it reaches the limit.

    A dropout is one alarm at the moment it becomes one, not one flagged
    window per missing slot: an hour-long outage of a sensor read every few
    minutes would otherwise add hundreds of flagged windows that hold no
    reading. A run shorter than the limit puts its (sub-threshold) evidence
    on its last slot.
    """
    out = np.zeros(count.shape[0])
    missing = count == 0
    if not missing.any():
        return out
    starts = true_runs(missing)[0]
    runs = gap_runs(count)[starts]
    out[starts + np.minimum(np.ceil(limit), runs).astype(np.int64) - 1] = runs / limit
    return out


def _episodes(ratio: np.ndarray, bridge: int) -> np.ndarray:
    """Scores with the alarm guard: a gap of at most ``bridge`` entries between two flags is flagged too (score 1.0)."""
    flagged = np.flatnonzero(ratio >= 1.0)
    if flagged.shape[0] < 2 or bridge < 1:
        return ratio
    gaps = np.diff(flagged) - 1
    short = np.flatnonzero((gaps > 0) & (gaps <= bridge))
    if short.shape[0] == 0:
        return ratio
    inside = np.zeros(ratio.shape[0] + 1, dtype=np.int64)
    np.add.at(inside, flagged[short] + 1, 1)
    np.add.at(inside, flagged[short + 1], -1)
    return np.where(np.cumsum(inside[:-1]) > 0, np.maximum(ratio, 1.0), ratio)


class CalibratedModel(Model):
    """Fitted ``Limits`` + ``Calibration`` + the end of the training range; scores in one vectorized pass."""

    detector: ClassVar[str] = "calibrated"

    def __init__(self, limits: Limits, calibration: Calibration, tail_ts: np.ndarray, tail_value: np.ndarray) -> None:
        bad = [f.name for f in fields(limits) if not np.isfinite(getattr(limits, f.name))]
        if bad:
            raise ValueError(f"calibrated limits must be finite: {', '.join(bad)}")
        nonpositive = [f.name for f in fields(limits) if f.name.endswith("_limit") and getattr(limits, f.name) <= 0]
        if nonpositive:
            raise ValueError(f"calibrated limits must be > 0: {', '.join(nonpositive)}")
        tail_ts, tail_value = np.asarray(tail_ts, dtype=np.int64), np.asarray(tail_value, dtype=np.float64)
        if tail_ts.shape != tail_value.shape or tail_ts.ndim != 1 or not np.isfinite(tail_value).all():
            raise ValueError("calibrated training tail: ts and values must be finite 1-D arrays of one length")
        self.limits, self.calibration = limits, calibration
        self.tail_ts, self.tail_value = tail_ts, tail_value

    def warnings(self) -> list[str]:
        """What looked anomalous in the training range (empty when nothing did)."""
        s, out = self.limits, []
        if s.train_missing_share > 0.5:
            out.append(f"training range mostly missing ({s.train_missing_share:.0%} of its window slots empty)")
        if s.train_stuck_share > 0.25:
            out.append(f"training range stuck ({s.train_stuck_share:.0%} of its windows repeat one value)")
        return out

    def _history(self, windows: SensorWindows, first_ts: int) -> np.ndarray:
        """Training values just before ``first_ts``, unless a break longer than the history or than the sensor's
        gap limit (a sparse sensor's usual gaps are long) separates them; else none."""
        need = self.calibration.history
        before = self.tail_ts < first_ts
        reach = max(need, self.limits.gap_limit) * windows.window_ns
        if not before.any() or first_ts - int(self.tail_ts[before][-1]) > reach:
            return np.zeros(0)
        return self.tail_value[before][-need:]

    def evidence(self, windows: SensorWindows) -> tuple[SensorWindows, np.ndarray]:
        """All slots of the range and each slot's evidence per feature (rows in ``FEATURES`` order); 1.0 = the limit."""
        s, c = self.limits, self.calibration
        full = windows.with_missing_slots()
        evidence = np.zeros((len(FEATURES), full.ts.shape[0]))
        present = np.flatnonzero(full.count > 0)
        if present.shape[0] == 0:
            return full, evidence
        gaps = _gap_evidence(full.count, s.gap_limit)
        gaps[present[-1] + 1:] = 0.0  # after the newest window: not arrived yet, or gone; scored once it reports again
        evidence[_ROW["gap"]] = gaps
        v, count = full.value[present], full.count[present]
        spread = full.max[present] - full.min[present]
        history = self._history(windows, int(full.ts[present[0]]))
        series = np.concatenate((history, v))
        skip = history.shape[0]
        of_present = {
            **self._moves(series, skip),
            "spread": spread / s.spread_limit,
            "stuck": stuck_runs(v, spread, count) / s.stuck_limit,
            # 1.0 at half the usual count; a window with the usual count or more is never low (any sensitivity)
            "low_count": np.where(count < s.count_median, s.low_count_rare * (c.low_count * s.count_median) / count, 0.0),
        }
        for name, values in of_present.items():
            evidence[_ROW[name], present] = values
        evidence[np.isnan(evidence)] = 0.0  # no history for the feature yet: no evidence
        flagged = evidence[:, present].max(axis=0) / c.threshold_scale >= 1.0
        if flagged.any():
            # A second look with the flagged windows replaced in the reference: a window after an
            # anomaly that is normal against what came before it is no alarm (the end of an anomaly
            # does not echo). Only lowers evidence; windows compared with a real anomaly keep theirs.
            ref = _cleaned(series, np.concatenate((np.zeros(skip, dtype=bool), flagged)), c.shift_windows)
            for name, values in self._moves(series, skip, ref).items():
                evidence[_ROW[name], present] = np.minimum(evidence[_ROW[name], present], np.nan_to_num(values))
        return full, evidence

    def _moves(self, series: np.ndarray, skip: int, ref: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Trend, shift and drift evidence of ``series[skip:]`` (``ref``: the reference series, see ``_cleaned``)."""
        s, c = self.limits, self.calibration
        return {
            "trend": _trend_errors(series, c.trend_windows, s.level, ref)[skip:] / s.trend_limit,
            "shift": _shifts(series, c.shift_windows, c.shift_lag, s.level, ref)[skip:] / s.shift_limit,
            "drift": _shifts(series, c.drift_windows, c.drift_lag, s.level, ref, twice=True)[skip:] / s.drift_limit,
        }

    def score(self, windows: SensorWindows) -> Scores:
        full, evidence = self.evidence(windows)
        ratio = evidence.max(axis=0) / self.calibration.threshold_scale
        present = full.count > 0
        ratio[present] = _episodes(ratio[present], self.calibration.bridge)
        keep = present | (ratio >= 1.0)
        return Scores(ts=full.ts[keep], value=full.value[keep], score=ratio[keep], is_anomaly=ratio[keep] >= 1.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**scalars_to_arrays(self.limits), "tail_ts": self.tail_ts, "tail_value": self.tail_value}

    def params(self) -> dict[str, Any]:
        return asdict(self.calibration)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> CalibratedModel:
        tail = [name for name in ("tail_ts", "tail_value") if name not in arrays]
        if tail:
            raise ValueError(f"{cls.detector} model is missing array(s): {', '.join(tail)}")
        if "drift_limit" not in arrays and "level" in arrays:
            # Fitted before the drift feature existed: scores as it did then, until the next training.
            arrays = {**arrays, "drift_limit": np.array([_NEVER])}
        limits = scalars_from_arrays(Limits, arrays, cls.detector, "limits")
        return cls(limits, params_from(Calibration, params, cls.detector), arrays["tail_ts"], arrays["tail_value"])


class Calibrated(Detector):
    """Fits ``Limits`` from one sensor's training windows: its own scores set its limits."""

    name: ClassVar[str] = "calibrated"
    min_windows: ClassVar[int] = 30
    scalable: ClassVar[bool] = True

    def __init__(self, calibration: Calibration | None = None, threshold_scale: float = 1.0) -> None:
        calibration = calibration or Calibration()
        self.calibration = calibration if threshold_scale == 1.0 else replace(calibration, threshold_scale=float(threshold_scale))

    def fit(self, windows: SensorWindows) -> CalibratedModel:
        c = self.calibration
        v, count, ts, spread = self._readings(windows)
        quantum = _resolution(v)
        level = float(np.median(v))
        # A constant training range has no step to learn from: one part in a million of its level, at least.
        step = quantum or max(1e-9, 1e-6 * float(np.abs(v).max()))
        repeated = repeats(v, spread, count)[0]
        runs = stuck_runs(v, spread, count)
        slots = windows.slot_ends().shape[0]
        gap_before = np.diff(ts, prepend=windows.range_from) // windows.window_ns - 1
        count_median = float(np.median(count))
        limits = Limits(
            level=level,
            trend_limit=_limit(_trend_errors(v, c.trend_windows, level), c.trend, c, step, episodes=True),
            shift_limit=_limit(_shifts(v, c.shift_windows, c.shift_lag, level), c.shift, c, step, episodes=True),
            drift_limit=_drift_limit(_shifts(v, c.drift_windows, c.drift_lag, level, twice=True), c, step),
            spread_limit=_limit(spread[count >= 2], c.spread, c, step, episodes=True),
            stuck_limit=_stuck_limit(repeated, runs, c),
            gap_limit=_limit(gap_before.astype(np.float64), c.gap, c, c.gap_min),
            count_median=count_median,
            low_count_rare=float(np.mean(count <= c.low_count * count_median) < 0.01),
            train_missing_share=1.0 - v.shape[0] / slots if slots else 0.0,
            train_stuck_share=float(runs.max(initial=0.0)) / max(float(count.sum()), 1.0),
        )
        tail = slice(max(0, v.shape[0] - c.history), None)
        return CalibratedModel(limits, c, ts[tail].copy(), v[tail].copy())

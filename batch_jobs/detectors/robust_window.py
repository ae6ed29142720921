"""``robust-window``: the default detector, robust statistics over mean, count, min and max.

Fitting learns, per sensor, where normal ends for each feature: a limit in
robust SDs (1.4826 x the median absolute deviation, a Gaussian's SD, immune
to a minority of anomalous training windows). Scoring turns every window
slot into one evidence ratio per feature (``FEATURES``), 1.0 at the limit;
the score is the largest and the slot is anomalous at >= 1:

- gap: a run of missing slots (count 0, see ``with_missing_slots``) longer
  than the sensor's normal gaps (none for a sensor that reads every window);
- level: ``|value - trained level|``; its limit widens with the distance
  from the training range (one more limit per training-range length), since
  slow cycles move the level between training and scoring;
- support: beyond the training's 1st..99th percentiles by half their span,
  only for sensors whose training values look bounded (uniform-like) and
  stationary: there a value past the support is anomalous at any distance;
- jump / trend: how much further from the trained level a value is than
  a reference, the median of the previous block of ``k`` windows (jump) or
  of the block ``lag`` windows earlier (trend, slow drifts). Leaving normal
  counts, coming back does not, so the end of an anomaly is not an alarm;
- spread: ``max - min`` beyond the usual spread (noise bursts);
- stuck: readings repeating exactly (``max == min`` over several readings,
  or equal flat values of consecutive windows) summed over the run;
- low_count: under half the usual count, where that was rare in training.

References come from the scored windows themselves (the first windows of a
range look ahead instead of back), so a score needs no history before its
range. ``Scores`` hold every window with readings plus the missing slots
that are anomalous (value NaN). A fit or score is a few dozen numpy calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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
from sensorflow.batch_jobs.detectors.features import gap_runs, repeats, stuck_runs, upper_quantile

__all__ = ["FEATURES", "FittedStats", "RobustWindow", "RobustWindowModel", "Thresholds"]

_MAD_TO_SD = 1.4826
FEATURES = ("gap", "level", "support", "jump", "trend", "spread", "stuck", "low_count")
"""Rows of ``RobustWindowModel.evidence``."""
_ROW = {name: row for row, name in enumerate(FEATURES)}
_NEVER = 1e300  # a limit no evidence reaches (finite, so the model stays JSON- and check-friendly)


@dataclass(frozen=True)
class Thresholds:
    """Hyperparameters of robust-window, kept with every model.

    ``k``: reference block length and ``lag``: the trend's look-back, in
    windows; ``level`` .. ``spread``: limits in robust SDs; ``support``: the
    margin past the 1st..99th percentiles as a fraction of their span;
    ``low_count``: a count under this fraction of the usual one is low;
    ``stuck_min``/``gap_min``: the smallest stuck and gap limits.
    """

    k: int = 12
    lag: int = 60
    level: float = 12.0
    jump: float = 9.0
    trend: float = 9.0
    spread: float = 10.0
    support: float = 0.5
    low_count: float = 0.5
    stuck_min: float = 3.0
    gap_min: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k >= 2 and isinstance(self.lag, int) and self.lag >= 0):
            raise ValueError(f"robust-window needs an int k >= 2 and an int lag >= 0, got k={self.k!r} lag={self.lag!r}")
        bad = [f.name for f in fields(self)[2:] if not getattr(self, f.name) > 0]
        if bad:
            raise ValueError(f"robust-window parameters must be > 0: {', '.join(bad)}")


@dataclass(frozen=True)
class FittedStats:
    """What one sensor's normal windows look like (all float64); a ``*_limit`` is where evidence reaches 1."""

    level: float
    level_limit: float
    low: float  # the 1st and 99th percentiles of the training values
    high: float
    support_limit: float
    trained_from_s: float  # the training range, seconds since the epoch: how far scoring extrapolates
    trained_to_s: float
    jump_limit: float
    trend_limit: float
    spread_median: float
    spread_limit: float
    count_median: float
    low_count_rare: float  # 1.0: under-half counts were rare in training, so they are evidence
    stuck_limit: float
    gap_limit: float


def _median(x: np.ndarray) -> float:
    """The median of a non-empty 1-D array (``np.median`` without its per-call overhead)."""
    n = x.shape[0]
    half = n // 2
    if n % 2:
        return float(np.partition(x, half)[half])
    parted = np.partition(x, (half - 1, half))
    return 0.5 * float(parted[half - 1] + parted[half])


def _robust_sd(deviation: np.ndarray) -> float:
    """1.4826 x the median of absolute deviations (0 for none)."""
    return _MAD_TO_SD * _median(deviation) if deviation.shape[0] else 0.0


def _references(values: np.ndarray, k: int, lags: tuple[int, ...]) -> list[np.ndarray]:
    """Per value and lag: the median of an earlier block of ``k`` values (never one holding the value itself).

    Values are cut into consecutive blocks of ``k``; a value in block ``b``
    is referred to block ``b - 1 - lag // k`` (``lag`` = 0: the block just
    before its own). Values with no such block look ahead, to block
    ``b + 1 + lag // k`` (or the last whole block), so the first windows of a
    range are judged against the ones that follow. Block medians cost one
    partition per ``k`` values, not one per value.
    """
    n = values.shape[0]
    blocks = n // k
    if blocks < 2:
        return [np.full(n, _median(values) if n else np.nan) for _ in lags]
    half = k // 2
    parted = np.partition(values[: blocks * k].reshape(blocks, k), (half - 1, half) if k % 2 == 0 else half, axis=1)
    medians = parted[:, half] if k % 2 else 0.5 * (parted[:, half - 1] + parted[:, half])
    own = np.arange(n) // k
    out = []
    for lag in lags:
        back = own - 1 - lag // k
        out.append(medians[np.where(back >= 0, back, np.minimum(own + 1 + lag // k, blocks - 1))])
    return out


def _departure(away: np.ndarray, reference: np.ndarray, level: float) -> np.ndarray:
    """How much further from ``level`` each value is than its reference (negative when coming back)."""
    return away - np.abs(reference - level)


def _stuck_limit(repeated: np.ndarray, stuck_min: float) -> float:
    """Repeats in a run that make it stuck: few unless repeats are common for the sensor.

    Learned from single windows, not runs, so one stuck stretch in the
    training range does not teach that stuck is normal; a sensor repeating
    itself in most windows (coarse quantization) is never called stuck.
    """
    if np.count_nonzero(repeated) * 2 >= repeated.shape[0]:
        return _NEVER
    return max(stuck_min, 3.0 * upper_quantile(repeated, 0.95))


class RobustWindowModel(Model):
    """Fitted statistics + thresholds; scores a sensor's windows in one vectorized pass."""

    detector: ClassVar[str] = "robust-window"

    def __init__(self, stats: FittedStats, thresholds: Thresholds) -> None:
        bad = [f.name for f in fields(stats) if not np.isfinite(getattr(stats, f.name))]
        if bad:
            raise ValueError(f"robust-window statistics must be finite: {', '.join(bad)}")
        limits = [f.name for f in fields(stats) if f.name.endswith("_limit") and getattr(stats, f.name) <= 0]
        if limits or stats.trained_to_s <= stats.trained_from_s:
            raise ValueError(f"robust-window limits and training range must be positive: {', '.join(limits) or 'range'}")
        self.stats = stats
        self.thresholds = thresholds

    def evidence(self, windows: SensorWindows) -> tuple[SensorWindows, np.ndarray]:
        """All slots of the range, and per feature (rows in ``FEATURES`` order) each slot's evidence.

        Evidence 1.0 is a feature's limit; slots without readings have only
        ``gap`` evidence (0 elsewhere).
        """
        s, t = self.stats, self.thresholds
        full = windows.with_missing_slots()
        evidence = np.zeros((len(FEATURES), full.ts.shape[0]))
        evidence[_ROW["gap"]] = gap_runs(full.count) / s.gap_limit
        present = np.flatnonzero(full.count > 0)
        if present.shape[0] == 0:
            return full, evidence
        v, count = full.value[present], full.count[present]
        spread = full.max[present] - full.min[present]
        away = np.abs(v - s.level)
        recent, earlier = _references(v, t.k, (0, t.lag))
        at_s = full.ts[present] / 1e9
        outside_s = np.maximum(np.maximum(s.trained_from_s - at_s, at_s - s.trained_to_s), 0.0)
        widen = 1.0 + outside_s / (s.trained_to_s - s.trained_from_s)
        of_present = {  # every feature but gap, for the slots with readings
            "level": away / (s.level_limit * widen),
            "support": np.maximum(s.low - v, v - s.high) / s.support_limit,
            "jump": _departure(away, recent, s.level) / s.jump_limit,
            "trend": _departure(away, earlier, s.level) / s.trend_limit,
            "spread": (spread - s.spread_median) / s.spread_limit,
            "stuck": stuck_runs(v, spread, count) / s.stuck_limit,
            "low_count": s.low_count_rare * (count <= t.low_count * s.count_median),
        }
        for name, values in of_present.items():
            evidence[_ROW[name], present] = values
        return full, evidence

    def score(self, windows: SensorWindows) -> Scores:
        full, evidence = self.evidence(windows)
        ratio = evidence.max(axis=0)
        keep = (full.count > 0) | (ratio >= 1.0)
        return Scores(ts=full.ts[keep], value=full.value[keep], score=ratio[keep], is_anomaly=ratio[keep] >= 1.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return scalars_to_arrays(self.stats)

    def params(self) -> dict[str, Any]:
        return asdict(self.thresholds)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> RobustWindowModel:
        stats = scalars_from_arrays(FittedStats, arrays, cls.detector, "statistics")
        return cls(stats, params_from(Thresholds, params, cls.detector))


class RobustWindow(Detector):
    """Fits ``FittedStats`` from one sensor's windows (count, min, max and mean)."""

    name: ClassVar[str] = "robust-window"
    min_windows: ClassVar[int] = 12

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()

    def fit(self, windows: SensorWindows) -> RobustWindowModel:
        t = self.thresholds
        v, count, ts, spread = self._readings(windows)
        level = _median(v)
        # The floor keeps a constant or quantized training set from dividing by ~0.
        floor = 1e-9 + 1e-6 * abs(level) + 0.05 * float(np.std(v))
        recent, earlier = _references(v, t.k, (0, t.lag))
        jump_sd = max(_robust_sd(np.abs(v - recent)), floor)
        multi = spread[count >= 2]
        spread_median = _median(multi) if multi.shape[0] else 0.0
        gap_before = np.diff(np.r_[windows.range_from, ts]) // windows.window_ns - 1
        count_median = _median(count)
        low, high = upper_quantile(v, 0.01), upper_quantile(v, 0.99)
        level_sd = _robust_sd(np.abs(v - level))
        third = v.shape[0] // 3
        moving = abs(_median(v[-third:]) - _median(v[:third])) > 0.25 * (high - low)
        bounded = high - low < 3.5 * level_sd  # a Gaussian's 1st..99th percentiles span 4.65 SDs, a uniform's 2.6
        support_limit = max(t.support * (high - low), floor) if bounded and not moving else _NEVER
        stats = FittedStats(
            level=level,
            level_limit=t.level * max(level_sd, jump_sd),
            low=low,
            high=high,
            support_limit=support_limit,
            trained_from_s=windows.range_from / 1e9,
            trained_to_s=windows.range_to / 1e9,
            jump_limit=t.jump * jump_sd,
            trend_limit=t.trend * max(_robust_sd(np.abs(v - earlier)), jump_sd),
            spread_median=spread_median,
            spread_limit=t.spread * max(_robust_sd(np.abs(multi - spread_median)), jump_sd),
            count_median=count_median,
            low_count_rare=float(np.mean(count <= t.low_count * count_median) < 0.01),
            stuck_limit=_stuck_limit(repeats(v, spread, count)[0], t.stuck_min),
            gap_limit=max(t.gap_min, 1.0 + 3.0 * upper_quantile(gap_before, 0.99)),
        )
        return RobustWindowModel(stats, t)

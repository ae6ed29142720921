"""Clean sensor values (before anomalies), vectorized over readings.

Two signals here (the other profiles are in `profiles.py`):
- `uniform`: the seed's draw, uniform in the tag's range (tags past 5 reuse
  the five seed ranges in turn);
- `realistic`: per-sensor level, daily cycle, slow drift and Gaussian noise.

Values are returned in cents (int64), i.e. already rounded to 2 decimals as
the seed did, so text rendering is exact integer work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sensorflow.simulator.config import NS_PER_DAY

__all__ = ["SEED_TAG_RANGES", "SensorParams", "clean_values", "sensor_params", "tag_range"]

# Per-tag uniform ranges of the original simulator (tag1..tag5).
SEED_TAG_RANGES: tuple[tuple[float, float], ...] = ((10, 15), (30, 40), (60, 65), (80, 85), (100, 110))


def tag_range(tag_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seed (low, high) of each 0-based tag index."""
    ranges = np.array(SEED_TAG_RANGES, dtype=np.float64)
    picked = ranges[np.asarray(tag_index) % len(SEED_TAG_RANGES)]
    return picked[..., 0], picked[..., 1]


@dataclass(frozen=True)
class SensorParams:
    """Per-sensor constants of the signal, arrays indexed by sensor.

    `scale` is the unit anomaly magnitudes are expressed in (the tag's
    seed range width), so a spike is large for every sensor.
    """

    low: np.ndarray
    high: np.ndarray
    level: np.ndarray
    daily_amplitude: np.ndarray
    phase: np.ndarray
    noise_sd: np.ndarray
    drift_per_day: np.ndarray

    @property
    def scale(self) -> np.ndarray:
        return self.high - self.low


def sensor_params(rng: np.random.Generator, sensors: int, tags: int) -> SensorParams:
    """Draw the per-sensor constants of the fleet."""
    low, high = tag_range(np.arange(sensors) % tags)
    width = high - low
    return SensorParams(
        low=low,
        high=high,
        level=(low + high) / 2 + rng.normal(0.0, 0.2, sensors) * width,
        daily_amplitude=rng.uniform(0.1, 0.3, sensors) * width,
        phase=rng.uniform(0.0, 2 * np.pi, sensors),
        noise_sd=rng.uniform(0.03, 0.08, sensors) * width,
        drift_per_day=rng.normal(0.0, 0.05, sensors) * width,
    )


def cycle_and_drift(
    level: np.ndarray,
    amplitude: np.ndarray,
    phase: np.ndarray,
    drift: np.ndarray,
    ns: np.ndarray,
    start_ns: int,
    period_ns: int,
    drift_unit_ns: int,
) -> np.ndarray:
    """level + a sine cycle of `period_ns` + `drift` per `drift_unit_ns` since `start_ns` (no noise)."""
    cycle_fraction = (ns % period_ns).astype(np.float64) / period_ns
    units_since_start = (ns - start_ns).astype(np.float64) / drift_unit_ns
    return level + amplitude * np.sin(2 * np.pi * cycle_fraction + phase) + drift * units_since_start


def baseline(params: SensorParams, sensor: np.ndarray, ns: np.ndarray, start_ns: int, period_ns: int) -> np.ndarray:
    """The noise-free realistic signal: level + cycle of `period_ns` + drift per day since `start_ns`."""
    return cycle_and_drift(
        params.level[sensor], params.daily_amplitude[sensor], params.phase[sensor], params.drift_per_day[sensor],
        ns, start_ns, period_ns, NS_PER_DAY,
    )


def to_cents(values: np.ndarray) -> np.ndarray:
    """Round to 2 decimals, as integer cents."""
    return np.rint(values * 100.0).astype(np.int64)


def clean_values(
    kind: str,
    rng: np.random.Generator,
    params: SensorParams,
    sensor: np.ndarray,
    ns: np.ndarray,
    start_ns: int,
    period_ns: int,
) -> np.ndarray:
    """Values in cents of readings `(sensor, ns)` without anomalies (`uniform` or `realistic`)."""
    if kind == "uniform":
        low, high = params.low[sensor], params.high[sensor]
        return to_cents(low + rng.random(sensor.shape[0]) * (high - low))
    noise = rng.standard_normal(sensor.shape[0]) * params.noise_sd[sensor]
    return to_cents(baseline(params, sensor, ns, start_ns, period_ns) + noise)

"""Signal profiles per sensor: the seed's two signals and four that imitate harder real series.

- `daily`: level + a cycle of the spec's period (amplitude 4-8 noise SDs) +
  slow drift + Gaussian noise (temperatures, traffic, load with a day rhythm);
- `quantized`: the same slow signal read on a coarse grid (noise 0.15-0.4 of
  a step, so most readings repeat one value), and one sensor in three a
  two-level on/off sensor (a pump, a compressor, a door contact);
- `counts`: event counts per reading, Poisson with a low rate, plus normal
  bursts of a few seconds at a higher rate (errors, logins, rare requests);
- `heavy`: a level plus Student-t noise with 2, 2.5 or 3 degrees of freedom,
  so large excursions are normal (latencies, network throughput).
`mixed` gives every sensor one of `realistic`, `daily`, `quantized`,
`counts`, `heavy` in equal shares, by a seeded permutation of the sensor
indices (so a profile is not tied to a tag).

Each profile also says how large an anomaly is against its own normal
variation (`anomaly_sizes`), which value a stuck sensor repeats
(`stuck_values`) and the grid anomalous values stay on. On/off switching and
count bursts follow a hash of (sensor, time block), so values are a function
of (sensor, time) and per-reading draws: chunks carry no state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sensorflow.simulator.config import ANOMALY_KINDS, NS_PER_S
from sensorflow.simulator.signals import SensorParams, clean_values, cycle_and_drift, to_cents

__all__ = [
    "MIXED_PROFILES",
    "PROFILE_NAMES",
    "ProfileParams",
    "anomaly_sizes",
    "profile_values",
    "sensor_profiles",
    "stuck_values",
    "value_grid",
]

PROFILE_NAMES: tuple[str, ...] = ("uniform", "realistic", "daily", "quantized", "counts", "heavy")
MIXED_PROFILES: tuple[str, ...] = ("realistic", "daily", "quantized", "counts", "heavy")
CODE = {name: np.int8(i) for i, name in enumerate(PROFILE_NAMES)}
_KIND = {kind: i for i, kind in enumerate(ANOMALY_KINDS)}

# Degrees of freedom of heavy sensors and the upper 1e-4 quantile of Student's t for each
# (scipy.stats.t.isf(1e-4, dof)): a spike starts there, beyond 99.99 % of normal readings.
_T_DOF = np.array([2.0, 2.5, 3.0])
_T_TAIL_1E4 = np.array([70.700, 34.868, 22.204])
# Windows a daily level shift must outlast the cycle's own movement over.
_SHIFT_WINDOWS = 6


@dataclass(frozen=True, eq=False)
class ProfileParams:
    """Per-sensor constants of the profiles, arrays indexed by sensor (value units, ns).

    `code` indexes `PROFILE_NAMES`. `level`, `amplitude`, `phase`,
    `drift_per_period` and `noise` (Gaussian SD; Student-t scale for heavy)
    shape daily, quantized and heavy sensors. `step` is the grid of quantized
    sensors (0: none). On/off sensors (`two_level`) read `level` when off and
    `high` when on; counts burst at `high` events per reading. `block_ns`,
    `duty` and `salt` drive the hashed on/off cycles and burst blocks; `rate`
    is a count sensor's normal rate, `dof` a heavy sensor's degrees of freedom.
    A fleet of one seed signal (`uniform`, `realistic`) reads only `code`
    and `period_ns`; its other arrays are read-only zero views.
    """

    code: np.ndarray
    period_ns: int
    level: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    drift_per_period: np.ndarray
    noise: np.ndarray
    step: np.ndarray
    two_level: np.ndarray
    high: np.ndarray
    block_ns: np.ndarray
    duty: np.ndarray
    salt: np.ndarray
    rate: np.ndarray
    dof: np.ndarray

    @property
    def sensors(self) -> int:
        return int(self.code.shape[0])

    @cached_property
    def present(self) -> tuple[int, ...]:
        """The profile codes the fleet uses, ascending (found once per run, not per chunk)."""
        return tuple(np.unique(self.code).tolist())

    def names(self) -> list[str]:
        """The profile name of each sensor."""
        return [PROFILE_NAMES[c] for c in self.code.tolist()]


def sensor_profiles(kind: str, rng: np.random.Generator, params: SensorParams, period_ns: int) -> ProfileParams:
    """Draw the profile of each sensor and its constants; `params` gives the tag ranges.

    Every constant is drawn for every sensor in a fixed order, so a sensor's
    constants depend only on the seed, its index and its profile. A fleet of
    one seed signal needs none of them and draws nothing.
    """
    sensors = params.level.shape[0]
    if kind in ("uniform", "realistic"):
        return _one_seed_signal(kind, sensors, period_ns)
    width = params.scale
    if kind == "mixed":
        code = np.array([CODE[p] for p in MIXED_PROFILES], dtype=np.int8)[rng.permutation(sensors) % 5]
    else:
        rng.permutation(sensors)  # same draws for every kind: constants do not depend on it
        code = np.full(sensors, CODE[kind], dtype=np.int8)
    u = rng.random((12, sensors))
    is_daily, is_quantized = code == CODE["daily"], code == CODE["quantized"]
    is_counts, is_heavy = code == CODE["counts"], code == CODE["heavy"]
    two_level = is_quantized & (u[0] < 1 / 3)
    step = np.where(is_quantized, np.maximum(1.0, np.rint(width / 5)), 0.0)
    mid = params.low + width * (0.3 + 0.4 * u[1])
    noise = np.select(
        [is_daily, is_quantized, is_heavy],
        [(0.03 + 0.05 * u[2]) * width, (0.15 + 0.25 * u[2]) * step, (0.01 + 0.02 * u[2]) * width],
        0.0,
    )
    amplitude = np.select([is_daily, is_quantized], [(4 + 4 * u[3]) * noise, 0.6 * u[3] * step], 0.0)
    drift = np.select(
        [is_daily, is_quantized | is_heavy], [(u[4] - 0.5) * noise, (u[4] - 0.5) * 0.4 * np.maximum(step, noise)], 0.0
    )
    # On/off: off at the tag's low end (on the grid), on 3-8 steps higher; cycles of 40-90 s
    # with on for 6-35 % of a cycle, so "on" never lasts 12 windows of 5 s.
    on_off_high = params.low + step * np.floor(3 + 6 * u[5])
    counts_burst = 2 + 4 * u[5]
    return ProfileParams(
        code=code,
        period_ns=period_ns,
        level=np.where(two_level, params.low, mid),
        amplitude=np.where(two_level, 0.0, amplitude),
        phase=2 * np.pi * u[6],
        drift_per_period=np.where(two_level, 0.0, drift),
        noise=np.where(two_level, 0.0, noise),
        step=step,
        two_level=two_level,
        high=np.select([two_level, is_counts], [on_off_high, counts_burst], 0.0),
        block_ns=np.select(
            [two_level, is_counts], [(40 + 50 * u[7]) * NS_PER_S, (5 + 15 * u[7]) * NS_PER_S], NS_PER_S
        ).astype(np.int64),
        duty=np.select([two_level, is_counts], [0.1 + 0.15 * u[8], 0.005 + 0.015 * u[8]], 0.0),
        salt=(u[9] * 2.0**63).astype(np.uint64),
        rate=np.where(is_counts, 0.01 + 0.11 * u[10], 0.0),
        dof=_T_DOF[np.minimum((u[11] * 3).astype(np.int64), 2)],
    )


def _one_seed_signal(kind: str, sensors: int, period_ns: int) -> ProfileParams:
    """Profiles of a fleet that is all `kind`: zero views that take no memory (~100 MB at a million sensors)."""

    def zeros(dtype: type) -> np.ndarray:
        return np.broadcast_to(np.zeros(1, dtype=dtype), (sensors,))

    none = zeros(np.float64)
    return ProfileParams(
        code=np.broadcast_to(CODE[kind], (sensors,)), period_ns=period_ns, level=none, amplitude=none, phase=none,
        drift_per_period=none, noise=none, step=none, two_level=zeros(bool), high=none, block_ns=zeros(np.int64),
        duty=none, salt=zeros(np.uint64), rate=none, dof=none,
    )


def _unit_hash(salt: np.ndarray, block: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per (salt, block): splitmix64's finalizer, wrapping uint64 math."""
    x = salt + block.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


def _slow(p: ProfileParams, sensor: np.ndarray, ns: np.ndarray, start_ns: int) -> np.ndarray:
    """Level + cycle + drift of daily, quantized and heavy sensors (no noise)."""
    return cycle_and_drift(
        p.level[sensor], p.amplitude[sensor], p.phase[sensor], p.drift_per_period[sensor], ns, start_ns, p.period_ns,
        p.period_ns,
    )


def _is_on(p: ProfileParams, sensor: np.ndarray, ns: np.ndarray) -> np.ndarray:
    """On/off sensors: on for a hashed part (0.6-1.4 x duty) at the start of each cycle."""
    block = p.block_ns[sensor]
    shifted = ns + (p.salt[sensor] % block.astype(np.uint64)).astype(np.int64)
    on_fraction = p.duty[sensor] * (0.6 + 0.8 * _unit_hash(p.salt[sensor], shifted // block))
    return (shifted % block) < on_fraction * block


def _on_grid(values: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Values rounded to multiples of `step`, in cents."""
    step_cents = to_cents(step)
    return np.rint(values * 100.0 / step_cents).astype(np.int64) * step_cents


def _daily(p: ProfileParams, params: SensorParams, rng: np.random.Generator, sensor: np.ndarray, ns: np.ndarray,
           start_ns: int) -> np.ndarray:
    return to_cents(_slow(p, sensor, ns, start_ns) + rng.standard_normal(sensor.shape[0]) * p.noise[sensor])


def _quantized(p: ProfileParams, params: SensorParams, rng: np.random.Generator, sensor: np.ndarray, ns: np.ndarray,
               start_ns: int) -> np.ndarray:
    noisy = _slow(p, sensor, ns, start_ns) + rng.standard_normal(sensor.shape[0]) * p.noise[sensor]
    on = _is_on(p, sensor, ns)
    values = np.where(p.two_level[sensor], np.where(on, p.high[sensor], p.level[sensor]), noisy)
    return _on_grid(values, p.step[sensor])


def _counts(p: ProfileParams, params: SensorParams, rng: np.random.Generator, sensor: np.ndarray, ns: np.ndarray,
            start_ns: int) -> np.ndarray:
    block = p.block_ns[sensor]
    bursting = _unit_hash(p.salt[sensor], ns // block) < p.duty[sensor]
    return rng.poisson(p.rate[sensor] + bursting * p.high[sensor]).astype(np.int64) * 100


def _heavy(p: ProfileParams, params: SensorParams, rng: np.random.Generator, sensor: np.ndarray, ns: np.ndarray,
           start_ns: int) -> np.ndarray:
    tail = rng.standard_t(p.dof[sensor]) * p.noise[sensor]
    return to_cents(_slow(p, sensor, ns, start_ns) + tail)


def _seed_signal(name: str) -> Callable[..., np.ndarray]:
    def values(p: ProfileParams, params: SensorParams, rng: np.random.Generator, sensor: np.ndarray,
               ns: np.ndarray, start_ns: int) -> np.ndarray:
        return clean_values(name, rng, params, sensor, ns, start_ns, p.period_ns)

    return values


_VALUES = (_seed_signal("uniform"), _seed_signal("realistic"), _daily, _quantized, _counts, _heavy)


def profile_values(
    p: ProfileParams,
    params: SensorParams,
    rng: np.random.Generator,
    sensor: np.ndarray,
    ns: np.ndarray,
    start_ns: int,
) -> np.ndarray:
    """Values in cents of readings `(sensor, ns)` without anomalies, each by its sensor's profile.

    One profile for the whole fleet draws exactly what `signals.clean_values`
    draws for it, so `uniform` and `realistic` runs are unchanged.
    """
    if len(p.present) == 1:
        return _VALUES[p.present[0]](p, params, rng, sensor, ns, start_ns)
    code = p.code[sensor]
    cents = np.empty(sensor.shape[0], dtype=np.int64)
    for profile in p.present:
        rows = np.flatnonzero(code == profile)
        cents[rows] = _VALUES[profile](p, params, rng, sensor[rows], ns[rows], start_ns)
    return cents


def anomaly_sizes(p: ProfileParams, window_ns: int) -> np.ndarray:
    """Per (anomaly kind, sensor): the smallest magnitude of an anomaly, value units (NaN: the seed's rule).

    A planned anomaly is 1-2 times this. Spike and level shift: the offset;
    noise: the extra SD; drift: the whole ramp. Daily: a spike is 6 noise SDs,
    a shift 4 SDs plus what the cycle moves at its steepest in 6 windows.
    Quantized: 4, 2, 1 and 3 steps; on/off sensors 1.5 times the on/off gap
    for offsets, so a shifted value is never one of the two normal levels.
    Counts (always upwards): a spike is 4 times the normal burst rate, a
    shift and the noise one burst rate, a drift two. Heavy: a spike starts at
    the 1e-4 tail of the sensor's t noise, a shift at 6 scales, noise at 8.
    """
    sizes = np.full((len(ANOMALY_KINDS), p.sensors), np.nan)
    noise, step, burst = p.noise, p.step, p.high
    slope = 2 * np.pi * p.amplitude / p.period_ns  # steepest change of the cycle, per ns
    gap = p.high - p.level
    per_profile = {
        "daily": (6 * noise, 4 * noise + slope * _SHIFT_WINDOWS * window_ns, 2 * noise, 6 * noise),
        "quantized": (
            np.where(p.two_level, 1.5 * gap, 4 * step), np.where(p.two_level, 1.5 * gap, 2 * step),
            np.where(p.two_level, 0.5 * gap, step), np.where(p.two_level, 1.5 * gap, 3 * step),
        ),
        "counts": (4 * burst, burst, burst, 2 * burst),
        "heavy": (_T_TAIL_1E4[np.searchsorted(_T_DOF, p.dof)] * noise, 6 * noise, 8 * noise, 10 * noise),
    }
    for name, (spike, shift, extra_noise, drift) in per_profile.items():
        mine = p.code == CODE[name]
        for kind, size in (("spike", spike), ("level_shift", shift), ("noise", extra_noise), ("drift", drift)):
            sizes[_KIND[kind], mine] = size[mine]
    return sizes


def stuck_values(p: ProfileParams, sensor: np.ndarray, start_ns: np.ndarray, run_start_ns: int) -> np.ndarray:
    """Cents a stuck sensor of a new profile repeats (its clean level at the start; on/off: on; counts: > 0)."""
    level = _slow(p, sensor, start_ns, run_start_ns)
    code = p.code[sensor]
    values = np.select(
        [p.two_level[sensor], code == CODE["counts"]], [p.high[sensor], np.maximum(1.0, np.rint(p.high[sensor]))], level
    )
    quantized = code == CODE["quantized"]
    cents = to_cents(values)
    cents[quantized] = _on_grid(values[quantized], p.step[sensor[quantized]])
    return cents


def value_grid(p: ProfileParams, sensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid in cents (0: none) and whether values stay >= 0, per sensor: what anomalous values keep."""
    counts = p.code[sensor] == CODE["counts"]
    return np.where(counts, 100, to_cents(p.step[sensor])), counts


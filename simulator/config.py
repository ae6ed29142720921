"""Simulator settings: small frozen dataclasses, each checked when it is built.

A `SimulatorConfig` fully determines the output: the same config (seed
included) gives byte-identical recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from sensorflow.records.timeparse import parse_duration  # the simulator's --duration, --period, ... (re-exported)

__all__ = [
    "ANOMALY_KINDS",
    "SIGNAL_KINDS",
    "AnomalySpec",
    "DeliverySpec",
    "FleetSpec",
    "MessageSpec",
    "SignalSpec",
    "SimulatorConfig",
    "TimingSpec",
    "parse_duration",
    "parse_start",
]

NS_PER_S = 1_000_000_000
# Event times are kept on the 100 ns grid of .NET ticks so the 7-digit TS
# text round-trips exactly.
TICK_NS = 100

ANOMALY_KINDS: tuple[str, ...] = ("spike", "level_shift", "stuck", "noise", "drift", "dropout")

IdKind = Literal["int", "str"]
Sampling = Literal["random_sensor", "every_sensor"]
SignalKind = Literal["uniform", "realistic", "daily", "quantized", "counts", "heavy", "mixed"]
SIGNAL_KINDS: tuple[str, ...] = ("uniform", "realistic", "daily", "quantized", "counts", "heavy", "mixed")
NS_PER_DAY = 86400 * NS_PER_S


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class FleetSpec:
    """Which sensors exist: devices 1..devices times tags 1..tags."""

    devices: int = 3
    tags: int = 5
    ids: IdKind = "int"

    def __post_init__(self) -> None:
        _check(isinstance(self.devices, int) and self.devices >= 1, "devices must be an int >= 1")
        _check(isinstance(self.tags, int) and self.tags >= 1, "tags must be an int >= 1")
        _check(self.devices * self.tags <= 1_000_000, "devices * tags must be <= 1,000,000")
        _check(self.ids in ("int", "str"), "ids must be 'int' or 'str'")

    @property
    def sensors(self) -> int:
        return self.devices * self.tags


@dataclass(frozen=True)
class TimingSpec:
    """When readings happen.

    `every_sensor`: each sensor reads once per `interval_ns`.
    `random_sensor` (the seed's behaviour): one reading per `interval_ns`
    from a sensor picked at random.
    `jitter` shifts each reading forward by up to that fraction of the
    interval, so a reading never leaves its own step.
    """

    start_ns: int
    duration_ns: int = 3600 * NS_PER_S
    interval_ns: int = 2 * NS_PER_S
    sampling: Sampling = "random_sensor"
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _check(isinstance(self.start_ns, int), "start_ns must be an int (ns since the epoch)")
        _check(self.start_ns % TICK_NS == 0, "start must be a whole number of 100 ns ticks")
        _check(isinstance(self.duration_ns, int) and self.duration_ns > 0, "duration must be > 0")
        _check(
            isinstance(self.interval_ns, int) and self.interval_ns >= 1000,
            "interval must be >= 1 microsecond (rate <= 1,000,000 per second)",
        )
        _check(self.interval_ns % TICK_NS == 0, "interval must be a whole number of 100 ns ticks")
        _check(self.sampling in ("random_sensor", "every_sensor"), "unknown sampling")
        _check(0.0 <= self.jitter < 1.0, "jitter must be in [0, 1)")

    @property
    def steps(self) -> int:
        return self.duration_ns // self.interval_ns


@dataclass(frozen=True)
class SignalSpec:
    """How values are made: a signal profile, and the period of the cycles that have one.

    `uniform` is the seed's per-tag draw; `realistic` a level with a daily
    cycle, drift and Gaussian noise; `daily`, `quantized`, `counts` and
    `heavy` imitate harder real series; `mixed` gives every sensor one of
    `realistic`, `daily`, `quantized`, `counts`, `heavy` in equal shares
    (simulator/profiles.py). `period_ns` is the cycle length of `realistic`
    and `daily` sensors (default one day; a bench compresses it to see
    cycles in a run of hours).
    """

    kind: SignalKind = "uniform"
    period_ns: int = NS_PER_DAY

    def __post_init__(self) -> None:
        _check(self.kind in SIGNAL_KINDS, f"signal must be one of {', '.join(SIGNAL_KINDS)}")
        _check(isinstance(self.period_ns, int) and self.period_ns >= NS_PER_S, "period must be >= 1 s")


@dataclass(frozen=True)
class AnomalySpec:
    """Labelled anomalies: expected count per sensor per hour, window-aligned.

    `train_anomalies` is the share of sensors that get one more anomaly
    inside the training range, the first `train_range` of the run (whole
    windows): long ones (a `stuck` span covers 30-60 % of the range, a
    `level_shift` or `drift` 20-50 %), as when a model is trained on data
    that already holds a failure. The first of them is `stuck` whenever
    that kind is allowed.
    """

    rate_per_sensor_hour: float = 0.0
    kinds: tuple[str, ...] = ANOMALY_KINDS
    window_ns: int = 5 * NS_PER_S
    train_anomalies: float = 0.0
    train_range: float = 0.25

    def __post_init__(self) -> None:
        _check(self.rate_per_sensor_hour >= 0.0, "anomaly rate must be >= 0")
        _check(len(self.kinds) > 0, "at least one anomaly kind is needed")
        unknown = [k for k in self.kinds if k not in ANOMALY_KINDS]
        _check(not unknown, f"unknown anomaly kind(s): {', '.join(unknown)}")
        _check(len(set(self.kinds)) == len(self.kinds), "anomaly kinds must not repeat")
        _check(isinstance(self.window_ns, int) and self.window_ns >= NS_PER_S // 1000, "bad window")
        _check(0.0 <= self.train_anomalies <= 1.0, "train anomalies must be a share of sensors in [0, 1]")
        _check(0.0 < self.train_range <= 1.0, "train range must be a fraction of the run in (0, 1]")

    def window_span(self, timing: TimingSpec) -> tuple[int, int]:
        """The run's first whole window (its index since the epoch) and how many whole windows the run has."""
        first_window = -(-timing.start_ns // self.window_ns)
        return first_window, max(0, (timing.start_ns + timing.duration_ns) // self.window_ns - first_window)

    def training_end_ns(self, timing: TimingSpec) -> int:
        """End of the training range: the window boundary `train_range` of the run's whole windows in."""
        first_window, windows = self.window_span(timing)
        # The tolerance keeps e.g. 2160 windows x (1/3) at 720, not 719.
        return (first_window + int(windows * self.train_range + 1e-9)) * self.window_ns


@dataclass(frozen=True)
class DeliverySpec:
    """Faults of the way to the hub: late delivery, duplicates, malformed messages."""

    out_of_order_fraction: float = 0.0
    max_delay_ns: int = 10 * NS_PER_S
    duplicate_fraction: float = 0.0
    malformed_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.out_of_order_fraction <= 1.0, "out-of-order fraction must be in [0, 1]")
        _check(isinstance(self.max_delay_ns, int) and self.max_delay_ns >= 0, "max delay must be >= 0")
        _check(0.0 <= self.duplicate_fraction <= 1.0, "duplicate fraction must be in [0, 1]")
        _check(0.0 <= self.malformed_fraction < 1.0, "malformed fraction must be in [0, 1)")


@dataclass(frozen=True)
class MessageSpec:
    """Message shape and partitioning.

    `readings_per_message == 1` sends the seed's single JSON object; more
    sends JSON arrays of up to that many readings of one device.
    """

    readings_per_message: int = 1
    partition_by_device: bool = True
    partitions: int = 4

    def __post_init__(self) -> None:
        _check(
            isinstance(self.readings_per_message, int) and 1 <= self.readings_per_message <= 100_000,
            "readings per message must be in 1..100000",
        )
        _check(isinstance(self.partitions, int) and 1 <= self.partitions <= 1024, "partitions must be in 1..1024")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines a simulated stream."""

    timing: TimingSpec
    fleet: FleetSpec = field(default_factory=FleetSpec)
    signal: SignalSpec = field(default_factory=SignalSpec)
    anomalies: AnomalySpec = field(default_factory=AnomalySpec)
    delivery: DeliverySpec = field(default_factory=DeliverySpec)
    messages: MessageSpec = field(default_factory=MessageSpec)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed must be an int >= 0")

    @classmethod
    def seed_default(cls, start_ns: int, duration_ns: int = 3600 * NS_PER_S, seed: int = 0) -> "SimulatorConfig":
        """The original simulator: 3 devices x 5 tags, one random reading every 2 s."""
        return cls(timing=TimingSpec(start_ns=start_ns, duration_ns=duration_ns), seed=seed)

    @property
    def readings_per_step(self) -> int:
        return self.fleet.sensors if self.timing.sampling == "every_sensor" else 1


def parse_start(text: str, now_ns: int) -> int:
    """Parse `now` or an ISO 8601 time (UTC unless it says otherwise) into ns, on the 100 ns grid.

    `now` is the wall clock floored to the whole minute, so that windows of up to a minute (any
    length dividing 60 s) line up with the recording: a start in mid-window made the first and
    the last window of every sensor partial, and a partial last window reads as a low count.
    """
    if text.strip().lower() == "now":
        return now_ns - now_ns % (60 * NS_PER_S)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad start time {text!r}: use 'now' or ISO 8601, e.g. 2026-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    ns = (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000
    return ns - ns % TICK_NS

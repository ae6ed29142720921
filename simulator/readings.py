"""Readings in delivery order, generated in bounded chunks.

Each chunk covers a range of sampling steps. Random numbers come from
independent streams per (purpose, chunk), so anomalies, duplicates and
delays never change the clean values of other readings, and the output
depends only on the config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sensorflow.simulator.anomalies import AnomalyPlan, apply_anomalies, plan_anomalies
from sensorflow.simulator.config import TICK_NS, SimulatorConfig
from sensorflow.simulator.profiles import ProfileParams, profile_values, sensor_profiles
from sensorflow.simulator.signals import SensorParams, sensor_params

__all__ = ["CHUNK_READINGS", "ReadingChunk", "RunModel", "Streams", "generate_readings", "run_model"]

# About this many readings per chunk: big enough for numpy to pay off,
# small enough that a chunk's buffers stay in the tens of MB.
CHUNK_READINGS = 1 << 19
NS_PER_MS = 1_000_000
DUPLICATE_DELAY_MAX_NS = 1_000_000_000


class Streams:
    """Independent random streams of one run, keyed by purpose and chunk index."""

    PARAMS, PLAN, SAMPLING, VALUES, JITTER, ANOMALY, DELAY, DUPLICATE, MALFORMED, GROUPING = range(10)
    # Added later, so the earlier streams (and the runs they made) stay as they were.
    PROFILES, TRAINING_PLAN = 10, 11

    def __init__(self, seed: int) -> None:
        self._seed = seed

    def rng(self, purpose: int, chunk: int = 0) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._seed, spawn_key=(purpose, chunk))))


@dataclass(frozen=True)
class ReadingChunk:
    """Delivered readings of one chunk, sorted by `delivery_ns` (ms-aligned enqueued time).

    `index` is the chunk number; `duplicate` marks redelivered copies.
    """

    index: int
    sensor: np.ndarray
    event_ns: np.ndarray
    cents: np.ndarray
    delivery_ns: np.ndarray
    duplicate: np.ndarray

    def __len__(self) -> int:
        return int(self.sensor.shape[0])


def _ceil_ms(ns: np.ndarray) -> np.ndarray:
    return -(-ns // NS_PER_MS) * NS_PER_MS


def steps_per_chunk(config: SimulatorConfig) -> int:
    """Sampling steps per chunk (at least 1), bounded so anomaly lookup keys fit in int64."""
    per_step = config.readings_per_step
    steps = max(1, CHUNK_READINGS // per_step)
    max_span_steps = (2**60 // config.fleet.sensors) // config.timing.interval_ns
    return max(1, min(steps, max_span_steps))


@dataclass(frozen=True)
class RunModel:
    """The per-run constants drawn once: sensor parameters, the anomaly plan and each sensor's profile."""

    params: SensorParams
    plan: AnomalyPlan
    profiles: ProfileParams


def run_model(config: SimulatorConfig) -> RunModel:
    streams = Streams(config.seed)
    params = sensor_params(streams.rng(Streams.PARAMS), config.fleet.sensors, config.fleet.tags)
    profiles = sensor_profiles(config.signal.kind, streams.rng(Streams.PROFILES), params, config.signal.period_ns)
    plan = plan_anomalies(
        config.anomalies, config.timing, params, profiles, streams.rng(Streams.PLAN),
        streams.rng(Streams.TRAINING_PLAN),
    )
    return RunModel(params, plan, profiles)


def _sample(config: SimulatorConfig, streams: Streams, chunk: int, first_step: int, steps: int):
    timing = config.timing
    sensors = config.fleet.sensors
    step_ns = timing.start_ns + (first_step + np.arange(steps, dtype=np.int64)) * timing.interval_ns
    if timing.sampling == "every_sensor":
        sensor = np.tile(np.arange(sensors, dtype=np.int64), steps)
        ns = np.repeat(step_ns, sensors)
    else:
        sensor = streams.rng(Streams.SAMPLING, chunk).integers(0, sensors, steps, dtype=np.int64)
        ns = step_ns
    if timing.jitter > 0:
        max_ticks = int(timing.jitter * timing.interval_ns) // TICK_NS
        if max_ticks > 0:
            ns = ns + streams.rng(Streams.JITTER, chunk).integers(0, max_ticks, ns.shape[0]) * TICK_NS
    return sensor, ns


def _raw_chunk(config: SimulatorConfig, model: RunModel, streams: Streams, chunk: int, first_step: int, steps: int):
    """Readings of the chunk's steps with values, anomalies, delays and duplicates (unsorted)."""
    sensor, ns = _sample(config, streams, chunk, first_step, steps)
    n = sensor.shape[0]
    cents = profile_values(
        model.profiles, model.params, streams.rng(Streams.VALUES, chunk), sensor, ns, config.timing.start_ns
    )
    delivery = config.delivery
    # Draw delays and duplicate choices for every reading before dropouts
    # remove some, so a reading's fate does not depend on the anomalies.
    delay = np.zeros(n, dtype=np.int64)
    if delivery.out_of_order_fraction > 0 and delivery.max_delay_ns > 0:
        rng = streams.rng(Streams.DELAY, chunk)
        late = rng.random(n) < delivery.out_of_order_fraction
        delay[late] = (rng.random(int(late.sum())) * delivery.max_delay_ns).astype(np.int64)
    duplicated = np.zeros(n, dtype=bool)
    duplicate_delay = np.zeros(n, dtype=np.int64)
    if delivery.duplicate_fraction > 0:
        rng = streams.rng(Streams.DUPLICATE, chunk)
        duplicated = rng.random(n) < delivery.duplicate_fraction
        duplicate_delay = (rng.random(n) * DUPLICATE_DELAY_MAX_NS).astype(np.int64)
    keep = apply_anomalies(model.plan, sensor, ns, cents, streams.rng(Streams.ANOMALY, chunk))
    delivered = _ceil_ms(ns + delay)
    copies = duplicated & keep
    sensor_all = np.concatenate([sensor[keep], sensor[copies]])
    ns_all = np.concatenate([ns[keep], ns[copies]])
    cents_all = np.concatenate([cents[keep], cents[copies]])
    delivery_all = np.concatenate([delivered[keep], _ceil_ms(delivered[copies] + duplicate_delay[copies])])
    dup_flag = np.concatenate([np.zeros(int(keep.sum()), dtype=bool), np.ones(int(copies.sum()), dtype=bool)])
    return sensor_all, ns_all, cents_all, delivery_all, dup_flag


def generate_readings(config: SimulatorConfig, model: RunModel | None = None) -> Iterator[ReadingChunk]:
    """Yield the run's readings chunk by chunk, in delivery order overall.

    A reading delivered after its chunk's time range is carried into the
    chunk in whose range it is delivered, so the concatenation of the
    chunks is sorted by `delivery_ns`.
    """
    model = model or run_model(config)
    streams = Streams(config.seed)
    timing = config.timing
    total_steps = timing.steps
    per_chunk = steps_per_chunk(config)
    carried: tuple[np.ndarray, ...] | None = None
    chunk = 0
    for first_step in range(0, total_steps, per_chunk):
        steps = min(per_chunk, total_steps - first_step)
        fresh = _raw_chunk(config, model, streams, chunk, first_step, steps)
        columns = fresh if carried is None else tuple(np.concatenate(pair) for pair in zip(carried, fresh, strict=True))
        order = np.argsort(columns[3], kind="stable")
        columns = tuple(c[order] for c in columns)
        is_last = first_step + steps >= total_steps
        # Later chunks' readings happen at or after this boundary, and delivery
        # is never before the event, so everything delivered earlier is final.
        boundary = timing.start_ns + (first_step + steps) * timing.interval_ns
        cut = columns[3].shape[0] if is_last else int(np.searchsorted(columns[3], boundary, side="left"))
        carried = tuple(c[cut:] for c in columns)
        sensor, ns, cents, delivered, dup = (c[:cut] for c in columns)
        yield ReadingChunk(chunk, sensor, ns, cents, delivered, dup)
        chunk += 1

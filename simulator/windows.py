"""A simulated fleet as window rows, for benches that measure detectors without running the dataflow.

`bench_config(...)` builds the config of a bench run (every sensor at 1 Hz
with jitter, or the seed's sparse sampling for `uniform`); `simulate_windows`
runs it and folds the readings into tumbling windows (mean, count, min,
max: what the dataflow writes; ends aligned to the epoch as CONTRACTS.md
says), with the labels and the training split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from sensorflow.records.windows import WINDOW_READ_SCHEMA
from sensorflow.simulator.anomalies import Label
from sensorflow.simulator.config import (
    NS_PER_S,
    AnomalySpec,
    FleetSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    parse_start,
)
from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.readings import RunModel, generate_readings, run_model

__all__ = ["BENCH_START", "WindowedRun", "bench_config", "simulate_windows"]

BENCH_START = "2026-03-02T06:00:00Z"
HOUR_NS = 3600 * NS_PER_S


@dataclass(frozen=True, eq=False)
class WindowedRun:
    """Window rows of a simulated run and its ground truth.

    `table`: WINDOW_READ_SCHEMA, sorted by sensor then `ts` (window end); a
    window without readings has no row. `labels`: the anomalies left in the
    run. `times`: (start, train_end, end) in ns; train on TS in
    (start, train_end], score (train_end, end]. `profiles`: the signal
    profile of each (device, tag).
    """

    table: pa.Table
    labels: list[Label]
    times: tuple[int, int, int]
    profiles: dict[tuple[str, str], str]


def bench_config(
    signal: str = "realistic",
    *,
    devices: int = 50,
    tags: int = 6,
    train_hours: float = 1.0,
    score_hours: float = 3.0,
    rate: float = 1.0,
    seed: int = 7,
    period_ns: int = HOUR_NS,
    train_anomalies: float = 0.0,
    window_ns: int = 5 * NS_PER_S,
) -> SimulatorConfig:
    """A bench run: `signal` profile, `rate` anomalies per sensor-hour, training range = the first `train_hours`.

    `uniform` samples like the seed (one random sensor every 2 s); every
    other signal reads every sensor each second, with half a second of
    jitter. The run starts at `BENCH_START`; `period_ns` is the cycle of
    realistic and daily sensors (an hour, so one training range does not see
    a whole cycle); `train_anomalies` is the share of sensors with an anomaly
    placed inside the training range.
    """
    start = parse_start(BENCH_START, 0)
    train_ns = round(train_hours * HOUR_NS) // window_ns * window_ns
    duration = train_ns + round(score_hours * HOUR_NS) // window_ns * window_ns
    seeded = signal == "uniform"
    return SimulatorConfig(
        timing=TimingSpec(
            start_ns=start, duration_ns=duration, interval_ns=NS_PER_S * (2 if seeded else 1),
            sampling="random_sensor" if seeded else "every_sensor", jitter=0.5,
        ),
        fleet=FleetSpec(devices=devices, tags=tags),
        signal=SignalSpec(signal, period_ns=period_ns),
        anomalies=AnomalySpec(
            rate_per_sensor_hour=rate, window_ns=window_ns, train_anomalies=train_anomalies,
            train_range=train_ns / duration,
        ),
        seed=seed,
    )


def simulate_windows(config: SimulatorConfig, *, train_keep: float = 1.0, magnitude: float = 1.0) -> WindowedRun:
    """Simulate `config` and fold its readings into windows of `config.anomalies.window_ns`.

    `train_keep`: the share of the Poisson-planned anomalies that end inside
    the training range and stay (the rest are not simulated); anomalies placed
    there by `train_anomalies` always stay. `magnitude` scales anomaly sizes
    (offsets, noise SD, drift ramp). Deterministic for a config.
    """
    model = run_model(config)
    plan = model.plan
    window = config.anomalies.window_ns
    start = config.timing.start_ns
    train_end = config.anomalies.training_end_ns(config.timing)
    end = start + config.timing.duration_ns
    keep = (plan.end_ns > train_end) | (np.random.default_rng(config.seed).random(len(plan)) < train_keep)
    keep |= plan.in_training
    kept = plan.subset(keep)
    kept = replace(kept, magnitude=kept.magnitude * magnitude)
    fleet = Fleet(config.fleet)
    sensors, ends, cents = [], [], []
    for chunk in generate_readings(config, RunModel(model.params, kept, model.profiles)):
        sensors.append(chunk.sensor)
        ends.append((chunk.event_ns // window + 1) * window)
        cents.append(chunk.cents)
    table = _windows(fleet, np.concatenate(sensors), np.concatenate(ends), np.concatenate(cents))
    pairs = (fleet.sensor_id_pair(s) for s in range(fleet.sensors))
    names = model.profiles.names()
    profiles = {(str(device), str(tag)): name for (device, tag), name in zip(pairs, names, strict=True)}
    return WindowedRun(table, kept.labels(fleet), (start, train_end, end), profiles)


def _windows(fleet: Fleet, sensor: np.ndarray, end: np.ndarray, cents: np.ndarray) -> pa.Table:
    """Mean, count, min, max per (sensor, window end), sorted by sensor then end."""
    if sensor.shape[0] == 0:
        return WINDOW_READ_SCHEMA.empty_table()
    order = np.lexsort((end, sensor))
    sensor, end, value = sensor[order], end[order], cents[order] / 100.0
    first = np.flatnonzero(np.r_[True, (sensor[1:] != sensor[:-1]) | (end[1:] != end[:-1])])
    count = np.diff(np.r_[first, sensor.shape[0]])
    device_ids = np.array([str(d) for d in fleet.device_ids])
    tag_ids = np.array([str(t) for t in fleet.tag_ids])
    rows = sensor[first]
    return pa.table(
        [
            pa.array(end[first]),
            pa.array(device_ids[fleet.device_of(rows)]),
            pa.array(tag_ids[fleet.tag_of(rows)]),
            pa.array(np.add.reduceat(value, first) / count),
            pa.array(count.astype(np.int64)),
            pa.array(np.minimum.reduceat(value, first)),
            pa.array(np.maximum.reduceat(value, first)),
        ],
        schema=WINDOW_READ_SCHEMA,
    )

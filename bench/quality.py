"""Detection quality: seed-ocsvm against the default detector on a simulated fleet with labelled anomalies.

Simulates a fleet (realistic signal, every sensor at 1 Hz, all six anomaly
kinds) with the simulator's library, windows it in 5 s tumbling windows
(mean, count, min, max: what the dataflow writes, computed here with numpy),
trains every detector on the first part (anomaly-light: most anomalies
planned there are removed) and scores the rest. Prints event-level precision,
recall, F1 and false alarms per sensor-day per detector (rules in
batch_jobs/quality.py), recall per anomaly kind, and ends with one JSON line.
Run:
    python bench/quality.py [--devices 50] [--tags 6] [--train-hours 1] [--score-hours 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR, get_detector, iter_sensor_windows
from sensorflow.batch_jobs.quality import QualityReport, evaluate
from sensorflow.records.predictions import PREDICTION_SCHEMA
from sensorflow.records.windows import WINDOW_READ_SCHEMA
from sensorflow.simulator import (
    AnomalySpec,
    FleetSpec,
    SignalSpec,
    Simulation,
    SimulatorConfig,
    TimingSpec,
)
from sensorflow.simulator.anomalies import AnomalyPlan
from sensorflow.simulator.config import NS_PER_S, parse_start
from sensorflow.simulator.readings import RunModel, generate_readings
from sensorflow.windowing.tumbling import window_ends

WINDOW_NS = 5 * NS_PER_S
HOUR_NS = 3600 * NS_PER_S
TRAIN_KEEP = 0.1  # fraction of the anomalies planned in the training part that stay


def simulate_fleet(
    devices: int, tags: int, train_hours: float, score_hours: float, rate: float, seed: int, profile: str = "fleet",
    magnitude: float = 1.0,
):
    """The fleet's window rows (WINDOW_READ_SCHEMA), its labels and the (start, train_end, end) times.

    ``fleet``: realistic signal, every sensor at 1 Hz. ``seed``: the original
    simulator's sampling and signal (one random sensor every 2 s, uniform
    values), so each sensor reads every ~2 s x sensors and most slots are empty.
    ``magnitude`` scales the simulator's anomaly sizes (spike and shift
    offsets, noise SD, drift ramp; 1.0: as simulated, 1-3 tag-range widths).
    """
    start = parse_start("2026-03-02T06:00:00Z", 0)
    train_end = start + round(train_hours * HOUR_NS) // WINDOW_NS * WINDOW_NS
    end = train_end + round(score_hours * HOUR_NS) // WINDOW_NS * WINDOW_NS
    if profile not in ("fleet", "seed"):
        raise ValueError(f"profile must be 'fleet' or 'seed', got {profile!r}")
    seeded = profile == "seed"
    config = SimulatorConfig(
        timing=TimingSpec(start_ns=start, duration_ns=end - start, interval_ns=NS_PER_S * (2 if seeded else 1),
                          sampling="random_sensor" if seeded else "every_sensor", jitter=0.5),
        fleet=FleetSpec(devices=devices, tags=tags),
        signal=SignalSpec("uniform" if seeded else "realistic"),
        anomalies=AnomalySpec(rate_per_sensor_hour=rate, window_ns=WINDOW_NS),
        seed=seed,
    )
    simulation = Simulation.prepare(config)
    plan = simulation.model.plan
    rng = np.random.default_rng(seed)
    keep = (plan.end_ns > train_end) | (rng.random(len(plan)) < TRAIN_KEEP)
    light = AnomalyPlan(*(getattr(plan, f)[keep] for f in AnomalyPlan.__dataclass_fields__))
    light = dataclasses.replace(light, magnitude=light.magnitude * magnitude)
    model = RunModel(simulation.model.params, light)
    sensors, ends, cents = [], [], []
    for chunk in generate_readings(config, model):
        sensors.append(chunk.sensor)
        ends.append(window_ends(chunk.event_ns, WINDOW_NS))
        cents.append(chunk.cents)
    table = _windows(simulation, np.concatenate(sensors), np.concatenate(ends), np.concatenate(cents))
    return table, light.labels(simulation.fleet), (start, train_end, end)


def _windows(simulation: Simulation, sensor: np.ndarray, end: np.ndarray, cents: np.ndarray) -> pa.Table:
    """Tumbling-window mean, count, min, max per (sensor, window end), sorted by sensor then end."""
    order = np.lexsort((end, sensor))
    sensor, end, value = sensor[order], end[order], cents[order] / 100.0
    first = np.flatnonzero(np.r_[True, (sensor[1:] != sensor[:-1]) | (end[1:] != end[:-1])])
    count = np.diff(np.r_[first, sensor.shape[0]])
    fleet = simulation.fleet
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


def run_detector(name: str, table: pa.Table, times: tuple[int, int, int]) -> tuple[pa.Table, float, int]:
    """Fit each sensor on (start, train_end], score (train_end, end].

    Returns the predictions (``PREDICTION_SCHEMA``), the seconds spent in
    ``fit`` and ``score`` alone (the split and the table building excluded),
    and the number of sensors.
    """
    start, train_end, end = times
    ts = table.column("ts").to_numpy()
    train = list(iter_sensor_windows(table.filter(pa.array(ts <= train_end)), start, train_end, WINDOW_NS))
    scored = list(iter_sensor_windows(table.filter(pa.array(ts > train_end)), train_end, end, WINDOW_NS))
    detector = get_detector(name)
    began = time.perf_counter()
    models = {(w.device, w.tag): detector.fit(w) for w in train}
    all_scores = [models[(w.device, w.tag)].score(w) for w in scored]
    seconds = time.perf_counter() - began
    lengths = [len(s) for s in all_scores]

    def repeated(texts: list[str]) -> pa.Array:
        return pa.array(np.repeat(np.array(texts, dtype=object), lengths), pa.string())

    predictions = pa.table(
        [
            np.concatenate([s.ts for s in all_scores]),
            repeated([w.device for w in scored]),
            repeated([w.tag for w in scored]),
            np.concatenate([s.value for s in all_scores]),
            np.concatenate([s.score for s in all_scores]),
            np.concatenate([s.is_anomaly for s in all_scores]),
            repeated([name] * len(scored)),
            repeated(["bench"] * len(scored)),
        ],
        schema=PREDICTION_SCHEMA,
    )
    return predictions, seconds, len(models)


def _print_report(name: str, report: QualityReport, seconds: float, sensors: int) -> None:
    print(
        f"{name:>14}: P {report.precision:.3f}  R {report.recall:.3f}  F1 {report.f1:.3f}  "
        f"found {report.found}/{report.labelled}  false alarms {report.false_alarm_events} "
        f"({report.false_alarms_per_sensor_day:.2f} per sensor-day, {report.false_alarm_windows} windows)  "
        f"fit+score {sensors / seconds:,.0f} sensors/s (one core)"
    )
    for kind in report.kinds:
        delay = "-" if kind.median_delay_s is None else f"{kind.median_delay_s:.0f} s"
        print(f"{'':>16}{kind.kind:<12} found {kind.found:>4}/{kind.labelled:<4} recall {kind.recall:.3f}  "
              f"median delay {delay}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("fleet", "seed"), default="fleet",
                        help="fleet: realistic 1 Hz sensors; seed: the original's sparse uniform sampling")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--tags", type=int, default=6)
    parser.add_argument("--train-hours", type=float, default=1.0)
    parser.add_argument("--score-hours", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=1.0, help="anomalies per sensor-hour in the scored part")
    parser.add_argument("--magnitude", type=float, default=1.0, help="scale of the simulated anomalies")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--detectors", default=f"seed-ocsvm,{DEFAULT_DETECTOR}")
    args = parser.parse_args()

    began = time.perf_counter()
    table, labels, times = simulate_fleet(args.devices, args.tags, args.train_hours, args.score_hours, args.rate,
                                          args.seed, args.profile, args.magnitude)
    start, train_end, end = times
    print(f"simulated {args.profile} (anomalies x{args.magnitude:g}): {args.devices * args.tags} sensors x {(end - start) / HOUR_NS:g} h, "
          f"{table.num_rows:,} windows, {len(labels)} labels; training on the first {args.train_hours:g} h "
          f"(anomaly-light), scoring {args.score_hours:g} h ({time.perf_counter() - began:.1f} s)")
    figures: dict[str, object] = {"profile": args.profile, "magnitude": args.magnitude,
                                  "sensors": args.devices * args.tags, "train_hours": args.train_hours,
                                  "score_hours": args.score_hours, "seed": args.seed}
    for name in dict.fromkeys(args.detectors.split(",")):
        predictions, seconds, sensors = run_detector(name, table, times)
        report = evaluate(predictions, labels, WINDOW_NS, scored_range=(train_end, end))
        _print_report(name, report, seconds, sensors)
        figures[name] = {
            "precision": round(report.precision, 4), "recall": round(report.recall, 4), "f1": round(report.f1, 4),
            "false_alarms_per_sensor_day": round(report.false_alarms_per_sensor_day, 3),
            "recall_by_kind": {k.kind: round(k.recall, 4) for k in report.kinds},
            "fit_score_sensors_per_s": round(sensors / seconds, 1),
        }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

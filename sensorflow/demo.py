"""``sensorflow demo``: the whole story on a simulated fleet, on embedded defaults.

1. simulate a fleet with labelled anomalies, as two recordings: the first
   part of the event time, then the rest;
2. replay the first part through the windowing dataflow into SQLite and run
   the sidecar: no models exist yet, so it trains one per sensor on those
   windows;
3. replay the rest and run the sidecar again: it scores the windows written
   since its last run with the models it trained;
4. report windows, models, anomalies found vs labelled (``sensorflow.batch_jobs.quality``),
   the most anomalous sensors, and plot a few sensors (``sensorflow.batch_jobs.quality_plot``).

Everything goes under ``DemoSettings.out``, which is replaced on every run.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR
from sensorflow.batch_jobs.executors import LocalPoolExecutor
from sensorflow.batch_jobs.quality import LabelSpan, QualityReport, evaluate, read_labels
from sensorflow.batch_jobs.schedule import Policy
from sensorflow.batch_jobs.sidecar import Sidecar, SidecarConfig, SidecarReport
from sensorflow.records.timeparse import format_ms
from sensorflow.records.windows import END_OF_TIME
from sensorflow.settings import DemoSettings, RunSettings, load_settings
from sensorflow.simulator import (
    AnomalySpec,
    FleetSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    write_jsonl_recording,
)
from sensorflow.store import open_store

__all__ = ["DemoResult", "demo_command", "run_demo"]

NS = 1_000_000_000
START_NS = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z: fixed, so every run of the demo is the same
STAGES = 6
# Models learn what normal looks like: the training part gets a tenth of the anomaly rate (not none).
TRAIN_ANOMALY_SHARE = 0.1


@dataclass(frozen=True, eq=False)
class DemoResult:
    """What the demo did; ``quality`` covers the scored part only."""

    sensors: int
    readings: int
    labels: list[LabelSpan]
    windows: int
    dead_letters: int
    train: SidecarReport
    score: SidecarReport
    predictions: pa.Table
    quality: QualityReport
    scored_range: tuple[int, int]
    plot: Path
    seconds: float


def demo_command(settings: DemoSettings) -> int:
    result = run_demo(settings)
    print_result(settings, result)
    return 0


def run_demo(settings: DemoSettings, progress: bool | None = None) -> DemoResult:
    """Run the four steps; ``progress`` None shows bars on a terminal only."""
    started = time.perf_counter()
    out = _fresh(settings.out)
    store_url = f"sqlite:///{out / 'sensorflow.db'}"
    window_ns = settings.window_ns
    total_ns = round(settings.minutes * 60 * NS) // window_ns * window_ns
    split_ns = round(total_ns * settings.train_fraction) // window_ns * window_ns
    quiet = None if progress is None else not progress
    with tqdm(total=STAGES, desc="demo", unit="step", disable=quiet, file=sys.stderr) as steps:
        steps.set_postfix_str("simulating the fleet")
        parts = [(out / "recording-1", START_NS, split_ns), (out / "recording-2", START_NS + split_ns, total_ns - split_ns)]
        summaries = [
            write_jsonl_recording(path, _simulation(settings, start, span, rate))
            for (path, start, span), rate in zip(parts, (settings.anomaly_rate * TRAIN_ANOMALY_SHARE, settings.anomaly_rate))
        ]
        steps.update()
        config = SidecarConfig(
            store_url, str(out / "models"), settings.detector or DEFAULT_DETECTOR,
            Policy(safety_margin_ns=60 * NS, score_lookback_ns=0, train_span_ns=split_ns,
                   retrain_every_ns=3600 * NS, chunk_size=settings.chunk_size),
            window_ns=window_ns, threshold_scale=settings.threshold_scale,
            incident_gap_windows=settings.incident_gap_windows,
        )
        reports = []
        with LocalPoolExecutor(settings.task_processes) as executor:
            for i, (path, _, _) in enumerate(parts, 1):
                steps.set_postfix_str(f"replaying part {i} through the dataflow")
                _replay(path, store_url, settings)
                steps.update()
                steps.set_postfix_str("sidecar: " + ("training" if i == 1 else "scoring"))
                with open_store(store_url) as store:
                    reports.append(Sidecar(config, store, executor, progress).run_once())
                steps.update()
        steps.set_postfix_str("report and plot")
        scored = (START_NS + split_ns, START_NS + total_ns)
        labels = read_labels(parts[1][0] / "labels.json")
        with open_store(store_url) as store:
            sensors = store.sensors_written_since(0)
            predictions = store.read_predictions(sensors, *scored)
            summary = store.summary()
            quality = evaluate(predictions, labels, window_ns, scored_range=scored)
            plotted = _plotted(predictions, labels, quality, settings.plot_sensors)
            windows = store.read_windows(list(plotted), 0, END_OF_TIME)
        plot = _plot(out / "anomalies.png", plotted, windows, predictions, labels + read_labels(parts[0][0] / "labels.json"),
                     START_NS + split_ns, window_ns)
        steps.update()
    return DemoResult(
        sensors=len(sensors), readings=sum(s.readings for s in summaries), labels=labels,
        windows=summary.windows, dead_letters=sum(summary.dead_letters.values()), train=reports[0], score=reports[1],
        predictions=predictions, quality=quality, scored_range=scored, plot=plot,
        seconds=time.perf_counter() - started,
    )


def _fresh(out: Path) -> Path:
    """The output directory, emptied of an earlier demo's outputs (nothing else is touched)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("recording-1", "recording-2", "models"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("sensorflow.db", "sensorflow.db-wal", "sensorflow.db-shm", "anomalies.png"):
        (out / name).unlink(missing_ok=True)
    return out


def _simulation(settings: DemoSettings, start_ns: int, duration_ns: int, anomaly_rate: float) -> SimulatorConfig:
    """Every sensor reads once a second; the same seed gives the same sensors in both parts."""
    return SimulatorConfig(
        timing=TimingSpec(start_ns=start_ns, duration_ns=duration_ns, interval_ns=NS, sampling="every_sensor"),
        fleet=FleetSpec(devices=settings.devices, tags=settings.tags),
        signal=SignalSpec("realistic"),
        anomalies=AnomalySpec(rate_per_sensor_hour=anomaly_rate, window_ns=settings.window_ns),
        seed=settings.seed,
    )


def _replay(source: Path, store_url: str, settings: DemoSettings):
    from sensorflow.assembly import run_replay

    flags = {"source": str(source), "store": store_url, "window_seconds": settings.window_seconds, "progress_seconds": 0}
    return run_replay(load_settings(RunSettings, flags))


def _plotted(predictions: pa.Table, labels: list[LabelSpan], quality: QualityReport, count: int) -> dict[tuple[str, str], str]:
    """Sensors worth a look, each with a note: the worst false-alarm sensor (if any), then one per anomaly kind
    where possible, those with most flagged windows first."""
    ranking = [sensor for sensor, _ in top_sensors(predictions, len(predictions))]
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for label in labels:
        by_kind.setdefault(label.kind, []).append((label.device, label.tag))
    chosen: dict[tuple[str, str], str] = {}
    for worst in quality.worst_false[:1]:
        chosen[(worst.device, worst.tag)] = f"[most false flags: {worst.count} windows]"
    for kind in sorted(by_kind):
        candidates = sorted(set(by_kind[kind]), key=lambda s: ranking.index(s) if s in ranking else len(ranking))
        for sensor in candidates:
            if sensor not in chosen:
                chosen[sensor] = ""
                break
    for sensor in ranking:
        chosen.setdefault(sensor, "")
    return dict(list(chosen.items())[:count])


def _plot(path: Path, plotted: dict[tuple[str, str], str], windows: pa.Table, predictions: pa.Table,
          labels: list[LabelSpan], split_ns: int, window_ns: int) -> Path:
    """The evaluation's picture over training and scoring: labels of both parts shaded, score against its threshold."""
    from sensorflow.batch_jobs.quality_plot import plot_worst

    return plot_worst(path, list(plotted), windows, predictions, labels, window_ns,
                      titles={s: note for s, note in plotted.items() if note}, split_ns=split_ns)


def top_sensors(predictions: pa.Table, n: int) -> list[tuple[tuple[str, str], int]]:
    """The ``n`` sensors with the most flagged windows, with their counts."""
    flagged = predictions.filter(pc.field("is_anomaly"))
    if flagged.num_rows == 0:
        return []
    counts = flagged.group_by(["device", "tag"]).aggregate([([], "count_all")]).to_pylist()
    counts.sort(key=lambda r: (-r["count_all"], r["device"], r["tag"]))
    return [((r["device"], r["tag"]), r["count_all"]) for r in counts[:n]]


def print_result(settings: DemoSettings, result: DemoResult) -> None:
    from sensorflow.batch_commands import describe_phase

    q = result.quality
    lo, hi = (format_ms(np.array(result.scored_range)))
    print(f"sensorflow demo: {result.sensors:,} sensors ({settings.devices} devices x {settings.tags} tags), "
          f"{settings.minutes:g} min of event time at 1 reading/s, done in {result.seconds:.1f} s")
    print(f"  simulated: {result.readings:,} readings with {len(result.labels)} labelled anomalies in the scored part")
    print(f"  windows:   {result.windows:,} window rows in {settings.out / 'sensorflow.db'} "
          f"({result.dead_letters:,} dead letters)")
    for part, report in enumerate((result.train, result.score), 1):
        for phase in (report.score, report.train):
            if phase is not None and phase.run.sensors:
                print(f"  sidecar, after part {part} arrived: {describe_phase(phase)}")
    flagged = int(pc.sum(result.predictions["is_anomaly"]).as_py() or 0)
    print(f"  scored:    {result.predictions.num_rows:,} windows {lo} .. {hi}, {flagged:,} flagged")
    print(f"  found:     {q.found} of {q.labelled} labelled anomalies (recall {q.recall:.2f}), "
          f"window precision {q.precision:.2f} (F1 {q.f1:.2f}); event precision {q.event_precision:.2f} "
          f"(F1 {q.event_f1:.2f})")
    print(f"  false:     {q.false_flag_windows:,} false-flag windows in {q.false_flag_episodes:,} episodes "
          f"({q.false_flags_per_sensor_day:.1f} windows, {q.episodes_per_sensor_day:.1f} episodes per sensor-day)")
    print("  by kind:   " + ", ".join(f"{k.kind} {k.found}/{k.labelled}" for k in q.kinds))
    labelled: dict[tuple[str, str], set[str]] = {}
    for label in result.labels:
        labelled.setdefault((label.device, label.tag), set()).add(label.kind)
    top = ", ".join(f"{d}/{t} {n} ({'+'.join(sorted(labelled.get((d, t), ()))) or 'no label'})"
                    for (d, t), n in top_sensors(result.predictions, 5))
    print(f"  top anomalous sensors (flagged windows, labelled kinds): {top or 'none'}")
    print(f"  plot:      {result.plot}")
    print(f"  look:      sensorflow incidents --store sqlite:///{settings.out / 'sensorflow.db'}; "
          f"sensorflow report --store sqlite:///{settings.out / 'sensorflow.db'} "
          f"--labels {settings.out / 'recording-2' / 'labels.json'} --out report.html")

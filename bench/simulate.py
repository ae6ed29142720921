"""Benchmark: write a 10 M-reading JSON Lines recording of 10k sensors into a temp dir.

Prints readings/s per run and ends with one JSON line of its figures. Run:
    python bench/simulate.py [--readings N] [--sensors S] [--runs R] [--dir PARENT] [--keep DIR]

About 2.3 GB are written per run. On a VM whose memory the host reclaims
when idle, the first write of that much new page cache is bound by page
allocation (here ~250 MB/s), so runs go back to back and the figure is the
best run; every run's figure is printed too.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorflow.simulator.config import (  # noqa: E402
    NS_PER_S,
    AnomalySpec,
    DeliverySpec,
    FleetSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    parse_start,
)
from sensorflow.simulator.recording import write_jsonl_recording  # noqa: E402


def bench_config(readings: int, sensors: int) -> SimulatorConfig:
    """10k sensors (1000 devices x 10 tags) at 1 reading/s, with a realistic mix of faults."""
    devices = max(1, sensors // 10)
    seconds = max(1, readings // (devices * 10))
    return SimulatorConfig(
        timing=TimingSpec(
            start_ns=parse_start("2026-01-01T00:00:00Z", 0),
            duration_ns=seconds * NS_PER_S,
            interval_ns=NS_PER_S,
            sampling="every_sensor",
            jitter=0.5,
        ),
        fleet=FleetSpec(devices=devices, tags=10),
        signal=SignalSpec("realistic"),
        anomalies=AnomalySpec(rate_per_sensor_hour=1.0),
        delivery=DeliverySpec(out_of_order_fraction=0.01, duplicate_fraction=0.001, malformed_fraction=0.001),
        seed=1,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2, help="back-to-back runs; the best one is reported")
    parser.add_argument("--dir", type=Path, help="parent directory of the temp dir (default: system temp)")
    parser.add_argument("--keep", type=Path, help="write here and keep the recording (one run)")
    args = parser.parse_args()
    config = bench_config(args.readings, args.sensors)
    summaries = []
    for run in range(1 if args.keep else max(1, args.runs)):
        out_dir = args.keep or Path(tempfile.mkdtemp(prefix="sensorflow-bench-", dir=args.dir))
        try:
            summary = write_jsonl_recording(out_dir, config, overwrite=True)
        finally:
            if args.keep is None:
                shutil.rmtree(out_dir, ignore_errors=True)
        summaries.append(summary)
        print(
            f"run {run + 1}: {summary.readings:,} readings, {summary.messages:,} messages, "
            f"{summary.bytes_written / 1e9:.2f} GB in {summary.seconds:.2f} s: "
            f"{summary.readings_per_s:,.0f} readings/s",
            flush=True,
        )
    best = min(summaries, key=lambda s: s.seconds)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"best: {best.readings_per_s:,.0f} readings/s (peak RSS {peak_mb:,.0f} MB)")
    figures = {
        "readings": best.readings,
        "messages": best.messages,
        "bytes": best.bytes_written,
        "seconds": round(best.seconds, 3),
        "readings_per_s": round(best.readings_per_s),
        "runs_readings_per_s": [round(s.readings_per_s) for s in summaries],
        "peak_rss_mb": round(peak_mb),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

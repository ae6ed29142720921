"""Benchmark: write a 10 M-reading JSON Lines recording of 10k sensors into a temp dir.

Prints readings/s and ends with one JSON line of its figures. Run:
    python bench/simulate.py [--readings N] [--sensors S] [--keep DIR]
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

from simulator.config import (  # noqa: E402
    NS_PER_S,
    AnomalySpec,
    DeliverySpec,
    FleetSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    parse_start,
)
from simulator.recording import write_jsonl_recording  # noqa: E402


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
    parser.add_argument("--keep", type=Path, help="write here and keep the recording")
    args = parser.parse_args()
    config = bench_config(args.readings, args.sensors)
    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="sensorflow-bench-"))
    try:
        summary = write_jsonl_recording(out_dir, config, overwrite=True)
    finally:
        if args.keep is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{summary.readings:,} readings, {summary.messages:,} messages, {summary.bytes_written / 1e9:.2f} GB "
        f"in {summary.seconds:.2f} s: {summary.readings_per_s:,.0f} readings/s (peak RSS {peak_mb:,.0f} MB)"
    )
    figures = {
        "readings": summary.readings,
        "messages": summary.messages,
        "bytes": summary.bytes_written,
        "seconds": round(summary.seconds, 3),
        "readings_per_s": round(summary.readings_per_s),
        "peak_rss_mb": round(peak_mb),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

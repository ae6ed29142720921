"""Benchmark: does ``--replay-speed N`` replay at N x real time, far-future readings and all?

Two recordings of ``--span`` seconds of event time: raw seed-format lines (``--partitions``
files, ``--rate`` readings per second per partition), and the simulator's fleet (Event Hubs
envelopes with enqueued times, 20 devices x 5 tags). Each gets one reading in 2200 and one in
1970 in the middle of every partition (decoding makes them ``future`` and ``out_of_range`` dead
letters; before issue 16 the first stalled a paced replay forever). For each speed it runs the
real dataflow in this process (``prepare_flow`` of the replay job the settings make, writer
inline, SQLite) and watches the run's reading counter every millisecond:

- achieved pace = event time between the first and the last reading / wall time between the
  moments the flow decoded them; ``ratio`` = achieved / asked (1.0 is exact, the goal is within
  10%);
- ``wall_s`` = the whole flow's wall time, start-up and the last writes included, and
  ``ideal_s`` = span / speed, for a user's view.

The last line printed is one JSON object of the figures.

    python bench/replay_pace.py [--speeds 20,60,240] [--span 240] [--rate 25] [--partitions 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensorflow.assembly import replay_job
from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.ingest.replay import ReplaySource
from sensorflow.settings import RunSettings, load_settings
from sensorflow.store import open_store
from sensorflow.windowing.execution import execute
from sensorflow.windowing.runner import prepare_flow

START = datetime(2026, 1, 1, tzinfo=UTC)
ABSURD = ("2200-01-01T00:00:00Z", "1970-01-01T00:00:00Z")


def write_recording(directory: Path, partitions: int, span_s: float, rate: float) -> None:
    """Raw seed-format lines with the absurd ones in the middle of each partition."""
    directory.mkdir(parents=True)
    per_partition = int(span_s * rate)
    for p in range(partitions):
        with open(directory / f"partition-{p}.jsonl", "wb") as f:
            for i in range(per_partition):
                ts = START + timedelta(seconds=i / rate)
                line = {"TS": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "Device": p * 100 + i % 20, "Tag": 1, "Value": float(i % 97)}
                f.write(orjson.dumps(line) + b"\n")
                if i == per_partition // 2:
                    for absurd in ABSURD:
                        f.write(orjson.dumps({"TS": absurd, "Device": 1, "Tag": 1, "Value": 1.0}) + b"\n")


def simulated_recording(directory: Path, span_s: float) -> None:
    """The simulator's fleet with the absurd lines in the middle of each file."""
    subprocess.run(
        [sys.executable, "-m", "sensorflow", "simulate", "--out", str(directory), "--profile", "fleet", "--devices", "20",
         "--tags", "5", "--duration", f"{span_s:g}s", "--seed", "1", "--start", START.strftime("%Y-%m-%dT%H:%M:%SZ")],
        check=True, capture_output=True,
    )
    for path in sorted(directory.glob("*.jsonl")):
        lines = path.read_bytes().splitlines(keepends=True)
        absurd = [orjson.dumps({"TS": ts, "Device": 1, "Tag": 1, "Value": 1.0}) + b"\n" for ts in ABSURD]
        path.write_bytes(b"".join(lines[: len(lines) // 2] + absurd + lines[len(lines) // 2 :]))


def accepted(source: Path) -> tuple[int, float]:
    """Readings decoding accepts in the recording, and the event time from the first to the last (s)."""
    replay, config = ReplaySource(source), DecodeConfig()
    count, low, high = 0, None, None
    for pid in replay.list_parts():
        part = replay.build_part("bench", pid, None)
        try:
            while True:
                for batch in part.next_batch():
                    ts = decode_batch(batch, config).readings.table.column("ts").to_numpy()
                    if len(ts):
                        count += len(ts)
                        low = ts.min() if low is None else min(low, ts.min())
                        high = ts.max() if high is None else max(high, ts.max())
        except StopIteration:
            part.close()
    return count, (int(high) - int(low)) / 1e9


def measure(source: Path, work: Path, speed: float) -> dict:
    expected, span_s = accepted(source)
    settings = load_settings(RunSettings, {
        "source": str(source), "store": f"sqlite:///{work}/pace-{source.name}-{speed:g}.db", "replay_speed": speed,
        "writer": "inline", "progress_seconds": 0,
    })
    job = replay_job(settings)
    with open_store(settings.store) as store:
        store.create_schema()
    flow, _, stats = prepare_flow(job)
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            readings = stats.readings
            now = time.monotonic()
            if readings > 0 and "first" not in seen:
                seen["first"] = now
            if readings >= expected and "last" not in seen:
                seen["last"] = now
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    execute(flow, job.execution)
    wall = time.monotonic() - started
    done.set()
    watcher.join()
    paced = seen["last"] - seen["first"]
    achieved = span_s / paced if paced > 0 else float("inf")
    return {
        "speed": speed, "achieved": round(achieved, 2), "ratio": round(achieved / speed, 3),
        "paced_s": round(paced, 3), "ideal_s": round(span_s / speed, 3), "wall_s": round(wall, 3),
        "readings": stats.readings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", default="20,60,240", help="comma-separated replay speeds")
    parser.add_argument("--span", type=float, default=240.0, help="seconds of event time")
    parser.add_argument("--rate", type=float, default=25.0, help="raw recording: readings per second of event time per partition")
    parser.add_argument("--partitions", type=int, default=4, help="raw recording: partitions")
    args = parser.parse_args()
    speeds = [float(s) for s in args.speeds.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_recording(work / "raw", args.partitions, args.span, args.rate)
        simulated_recording(work / "simulated", args.span)
        for name in ("raw", "simulated"):
            readings, span = accepted(work / name)
            print(f"{name}: {readings:,} readings over {span:g} s of event time, and 2 absurd timestamps per partition")
            for speed in speeds:
                result = {"recording": name, **measure(work / name, work, speed)}
                results.append(result)
                print(f"  speed {speed:>6g}: achieved {result['achieved']:>8.2f}x (ratio {result['ratio']:.3f}), "
                      f"paced {result['paced_s']:.2f} s for ideal {result['ideal_s']:.2f} s, whole flow {result['wall_s']:.2f} s")
    worst = max(abs(r["ratio"] - 1) for r in results)
    print(json.dumps({"bench": "replay_pace", "span_s": args.span, "worst_ratio_error": round(worst, 3), "results": results}))


if __name__ == "__main__":
    main()

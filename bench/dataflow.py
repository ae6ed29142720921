"""Benchmark: our columnar dataflow vs the parse-only limit vs a naive per-item Bytewax pipeline.

All three run on the same seed-format recording (one reading per message,
>= 5 M readings over >= 10 k sensors) in one run, so the ratios compare like
with like. A second, separate process measures peak RSS with 100 k sensors.
The last line printed is one JSON object of the figures.

    python bench/dataflow.py [--readings 5000000] [--sensors 10000] [--partitions 4] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the sensorflow command does

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TAGS = 10  # tags per device: sensor s is (Device s // TAGS, Tag s % TAGS)


def make_recording(directory: Path, readings: int, sensors: int, partitions: int, rate_hz: float = 1.0) -> Path:
    """Seed-format raw lines: every sensor reports ``rate_hz`` times a second, split by device."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".complete-{readings}-{sensors}-{partitions}-{rate_hz}"
    if marker.exists():
        return directory
    for old in [*directory.glob("*.jsonl"), *directory.glob(".complete-*")]:  # another size's files and marker
        old.unlink()
    rng = np.random.default_rng(42)
    files = [open(directory / f"partition-{p}.jsonl", "wb") for p in range(partitions)]  # noqa: SIM115
    offsets = rng.uniform(0, 1 / rate_hz, sensors)  # each sensor's phase within a tick
    level = rng.uniform(10, 110, sensors)
    ticks = readings // sensors
    base = int(START.timestamp())
    for tick in range(ticks):
        t = tick / rate_hz + offsets
        order = np.argsort(t, kind="stable")
        values = np.round(level + rng.normal(0, 1, sensors), 2)
        seconds = np.floor(t).astype(np.int64)
        frac = ((t - seconds) * 1e7).astype(np.int64)
        stamps = {}
        out = [[] for _ in range(partitions)]
        for s in order.tolist():
            sec = int(seconds[s])
            prefix = stamps.get(sec)
            if prefix is None:
                prefix = stamps[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + sec))
            device = s // TAGS
            out[device % partitions].append(
                b'{"TS": "%s.%07dZ", "Device": %d, "Tag": %d, "Value": %.2f}\n'
                % (prefix.encode(), frac[s], device, s % TAGS, values[s])
            )
        for f, lines in zip(files, out):
            f.write(b"".join(lines))
    for f in files:
        f.close()
    marker.touch()
    return directory


def parse_only(directory: Path) -> dict[str, float]:
    """Read + parse every line: orjson line by line, and Arrow's JSON reader (fastest options we know)."""
    files = sorted(directory.glob("*.jsonl"))
    start = time.perf_counter()
    lines = 0
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                orjson.loads(line)
                lines += 1
    orjson_rate = lines / (time.perf_counter() - start)

    options = pa_json.ReadOptions(block_size=1 << 16, use_threads=True)
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    rows = 0
    for path in files:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(4 << 20)
                if not chunk:
                    break
                tail = f.readline()  # finish the last line
                rows += pa_json.read_json(io.BytesIO(chunk + tail), read_options=options).num_rows
    arrow_rate = rows / (time.perf_counter() - start)
    arrow_cpu = _cpu(resource.RUSAGE_SELF) - cpu  # Arrow's threads included
    return {"orjson_lines_per_s": orjson_rate, "arrow_lines_per_s": arrow_rate, "lines": lines,
            "arrow_cpu_us_per_line": arrow_cpu / rows * 1e6}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _import_lazily_imported() -> None:
    """Arrow imports its pandas shim at its first array where pandas is installed (this bench's
    test environment; the product's install has no pandas): an import, so outside the clock like
    every other import of the pipelines timed here."""
    pa.array([0.0])


def ours(directory: Path, db: Path, workers: int = 1) -> dict[str, float]:
    from sensorflow.assembly import run_replay
    from sensorflow.settings import RunSettings, load_settings

    _import_lazily_imported()

    settings = load_settings(
        RunSettings, {"source": str(directory), "store": f"sqlite:///{db}", "progress_seconds": 0, "workers": workers}
    )
    start, cpu, children = time.perf_counter(), _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    report = run_replay(settings)
    seconds = time.perf_counter() - start
    readings = report.stats.readings
    return {"seconds": seconds, "readings": readings, "rows": report.store.windows,
            "dataflow_cpu_us_per_reading": (_cpu(resource.RUSAGE_SELF) - cpu) / readings * 1e6,
            # the writer process, waited for when the run closed it
            "writer_cpu_us_per_reading": (_cpu(resource.RUSAGE_CHILDREN) - children) / readings * 1e6}


def store_only(db: Path, sensors: int, windows: int, batch_windows: int = 4) -> dict[str, float]:
    """The store writer's SQLite work alone, one process, nothing else running: the window rows
    of the recording (same ids), in batches of ``batch_windows`` window ends, committed every
    ``COMMIT_ROWS`` rows through the writer's own window transaction."""
    from sensorflow.records.windows import WINDOW_SCHEMA
    from sensorflow.store import open_store
    from sensorflow.windowing.writer import COMMIT_ROWS

    rng = np.random.default_rng(7)
    device = pa.array((np.arange(sensors) // TAGS).astype(str))  # make_recording's ids
    tag = pa.array((np.arange(sensors) % TAGS).astype(str))
    base = int(START.timestamp()) * 10**9
    with open_store(f"sqlite:///{db}") as store:
        store.create_schema()
        transaction = store.window_transaction()
        cpu = 0.0
        for first in range(0, windows, batch_windows):
            ends = np.arange(first, min(first + batch_windows, windows)) + 1
            n = sensors * len(ends)
            table = pa.table(
                [pa.array(np.repeat(base + ends * 5 * 10**9, sensors)), pa.concat_arrays([device] * len(ends)),
                 pa.concat_arrays([tag] * len(ends)), pa.array(rng.uniform(10, 110, n)), pa.array(np.full(n, 5)),
                 pa.array(rng.uniform(10, 110, n)), pa.array(rng.uniform(10, 110, n))],
                schema=WINDOW_SCHEMA,
            )
            begin = time.process_time()
            transaction.add(table)
            if transaction.rows >= COMMIT_ROWS:
                transaction.commit()
            cpu += time.process_time() - begin
        begin = time.process_time()
        transaction.commit()
        cpu += time.process_time() - begin
    return {"rows": sensors * windows, "cpu_us_per_row": cpu / (sensors * windows) * 1e6}


def naive(directory: Path, db: Path) -> dict[str, float]:
    """Per-item Bytewax: orjson per line, key_on sensor, stock EventClock + TumblingWindower fold_window."""
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.connectors.files import DirSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from sensorflow.records.windows import WINDOW_SCHEMA, WindowBatch
    from sensorflow.store import open_store
    from sensorflow.windowing.sink import WindowSink
    from sensorflow.windowing.stats import RunStats

    with open_store(f"sqlite:///{db}") as store:
        store.create_schema()
    _import_lazily_imported()
    length = timedelta(seconds=5)

    def parse(line: str) -> dict:
        return orjson.loads(line)

    def event_time(reading: dict) -> datetime:
        return datetime.fromisoformat(reading["TS"])

    def fold(acc: tuple, reading: dict) -> tuple:
        v = reading["Value"]
        return (acc[0] + v, acc[1] + 1, min(acc[2], v), max(acc[3], v))

    def merge(a: tuple, b: tuple) -> tuple:
        return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]))

    def to_row(item: tuple) -> tuple:
        key, (window_id, acc) = item
        device, tag = key.split("\x1f")
        end_ns = (window_id + 1) * int(length.total_seconds()) * 1_000_000_000
        return ("rows", (end_ns, device, tag, acc[0] / acc[1], acc[1], acc[2], acc[3]))

    def to_batch(rows: list) -> WindowBatch:
        columns = list(zip(*rows))
        return WindowBatch(pa.table([pa.array(c, t) for c, t in zip(columns, WINDOW_SCHEMA.types)], schema=WINDOW_SCHEMA))

    flow = Dataflow("naive")
    lines = op.input("read", flow, DirSource(directory, glob_pat="*.jsonl"))
    readings = op.map("parse", lines, parse)
    keyed = op.key_on("key", readings, lambda r: f"{r['Device']}\x1f{r['Tag']}")
    clock = win.EventClock(event_time, wait_for_system_duration=timedelta(seconds=5))
    windower = win.TumblingWindower(length=length, align_to=datetime(1970, 1, 1, tzinfo=timezone.utc))
    out = win.fold_window("window", keyed, clock, windower, lambda: (0.0, 0, float("inf"), float("-inf")), fold, merge)
    rows = op.map("rows", out.down, to_row)
    batches = op.map_value("batch", op.collect("collect", rows, timedelta(seconds=1), 10_000), to_batch)
    op.output("write", batches, WindowSink(f"sqlite:///{db}", RunStats()))
    start = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - start
    with open_store(f"sqlite:///{db}") as store:
        rows_written = store.summary().windows
    return {"seconds": seconds, "rows": rows_written}


def peak_rss_mb(directory: Path, db: Path) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh process running our pipeline, and of its writer process.

    Each process's own VmHWM: a child's ``ru_maxrss`` starts from its parent's RSS at the
    fork (this bench process, big after the runs before), whatever the child uses after exec.
    """
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from sensorflow.settings import RunSettings, load_settings\n"
        "from sensorflow.assembly import run_replay\n"
        "from sensorflow.windowing.writer import own_peak_rss_kb\n"
        "report = run_replay(load_settings(RunSettings, {'source': %r, 'store': 'sqlite:///%s', 'progress_seconds': 0}))\n"
        "print(own_peak_rss_kb(), report.stats.writer_peak_rss_kb)\n"
    ) % (str(REPO), str(directory), str(db))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    main_kb, writer_kb = out.stdout.strip().splitlines()[-1].split()
    return int(main_kb) / 1024, (int(writer_kb) / 1024 if writer_kb != "None" else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=5_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate-hz", type=float, default=1.0, help="readings per sensor per second (window rows = readings / (5 x rate))")
    parser.add_argument("--rss-sensors", type=int, default=100_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sensorflow-bench")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow naive pipeline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of parse-only + ours; the median round is reported")
    args = parser.parse_args()

    print(f"recording: {args.readings:,} readings, {args.sensors:,} sensors at {args.rate_hz:g} Hz, "
          f"{args.partitions} partitions", flush=True)
    recording = make_recording(args.cache / f"main-{args.rate_hz:g}hz", args.readings, args.sensors, args.partitions, args.rate_hz)
    size = sum(p.stat().st_size for p in recording.glob("*.jsonl"))
    print(f"  {recording} ({size / 1e6:,.0f} MB)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Rounds of parse-only then ours, side by side: this VM's speed drifts by +-20% from one
        # minute to the next, so each round's ratio compares runs seconds apart; the median is reported.
        rounds = []
        for k in range(args.rounds):
            parsed = parse_only(recording)
            limit = max(parsed["orjson_lines_per_s"], parsed["arrow_lines_per_s"])
            result = ours(recording, tmp / f"ours-{k}.db")
            rate = result["readings"] / result["seconds"]
            rounds.append((rate / limit, rate, limit, parsed, result))
            for leftover in tmp.glob(f"ours-{k}.db*"):  # keep the page cache for the recording
                leftover.unlink()
            print(f"round {k + 1}/{args.rounds}: parse-only orjson {parsed['orjson_lines_per_s']:,.0f} lines/s, "
                  f"Arrow {parsed['arrow_lines_per_s']:,.0f} lines/s -> limit {limit:,.0f}/s; "
                  f"ours (1 worker) {result['readings']:,} readings in {result['seconds']:.1f} s = {rate:,.0f} readings/s, "
                  f"{result['rows']:,} window rows; ratio {rate / limit:.3f}", flush=True)
            print(f"  CPU per reading: dataflow process {result['dataflow_cpu_us_per_reading']:.2f} us, "
                  f"store writer {result['writer_cpu_us_per_reading']:.2f} us; "
                  f"Arrow parse-only {parsed['arrow_cpu_us_per_line']:.2f} us per line", flush=True)
        ratio, rate, limit, parsed, result = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
        print(f"median round: ours {rate:,.0f} readings/s, parse-only limit {limit:,.0f} lines/s, ratio {ratio:.3f} "
              f"(rounds: {', '.join(f'{r[0]:.3f}' for r in rounds)})", flush=True)

        # Where the time goes: ours is CPU-bound on two cores, so its CPU per reading bounds it.
        per_reading = (result["dataflow_cpu_us_per_reading"] + result["writer_cpu_us_per_reading"]) / 1e6
        bound = 2 / per_reading
        windows = result["rows"] // args.sensors
        alone = store_only(tmp / "store-only.db", args.sensors, windows)
        rows_per_reading = result["rows"] / result["readings"]
        print(f"CPU per reading (median round): {per_reading * 1e6:.2f} us in all -> two cores, fully used, allow at most "
              f"{bound:,.0f} readings/s = {bound / limit:.3f} of the limit", flush=True)
        print(f"store writer's SQLite work alone (one process, nothing else running): {alone['cpu_us_per_row']:.2f} us per "
              f"window row = {alone['cpu_us_per_row'] * rows_per_reading:.2f} us per reading "
              f"({alone['rows']:,} rows)", flush=True)

        figures = {
            "readings": result["readings"],
            "sensors": args.sensors,
            "rate_hz": args.rate_hz,
            "rounds": args.rounds,
            "end_to_end_readings_per_s": round(rate),
            "parse_only_limit_lines_per_s": round(limit),
            "parse_orjson_lines_per_s": round(parsed["orjson_lines_per_s"]),
            "parse_arrow_lines_per_s": round(parsed["arrow_lines_per_s"]),
            "ratio_vs_parse_limit": round(ratio, 3),
            "ratio_per_round": [round(r[0], 3) for r in rounds],
            "window_rows": result["rows"],
            "dataflow_cpu_us_per_reading": round(result["dataflow_cpu_us_per_reading"], 3),
            "writer_cpu_us_per_reading": round(result["writer_cpu_us_per_reading"], 3),
            "arrow_parse_cpu_us_per_line": round(parsed["arrow_cpu_us_per_line"], 3),
            "two_core_cpu_bound_ratio": round(bound / limit, 3),
            "store_only_us_per_window_row": round(alone["cpu_us_per_row"], 3),
        }
        if not args.skip_naive:
            slow = naive(recording, tmp / "naive.db")
            naive_rate = parsed["lines"] / slow["seconds"]
            print(f"naive per-item Bytewax: {slow['seconds']:.1f} s = {naive_rate:,.0f} readings/s, "
                  f"{slow['rows']:,} window rows (stock EventClock drops readings it deems late)", flush=True)
            figures.update(naive_readings_per_s=round(naive_rate), ratio_vs_naive=round(rate / naive_rate, 2),
                           naive_window_rows=slow["rows"])

        rss_recording = make_recording(args.cache / "rss", args.rss_sensors * 20, args.rss_sensors, args.partitions)
        rss, writer_rss = peak_rss_mb(rss_recording, tmp / "rss.db")
        print(f"peak RSS with {args.rss_sensors:,} sensors ({args.rss_sensors * 20:,} readings): dataflow process "
              f"{rss:,.0f} MB, store writer process {writer_rss:,.0f} MB", flush=True)
        figures.update(rss_sensors=args.rss_sensors, peak_rss_mb=round(rss), writer_peak_rss_mb=round(writer_rss))

    ok = figures["ratio_vs_parse_limit"] >= 0.4 and figures.get("ratio_vs_naive", 8) >= 8 and figures["peak_rss_mb"] < 300
    print(f"targets (>= 8x naive, >= 40% of parse-only, dataflow process < 300 MB at {args.rss_sensors:,} sensors): "
          f"{'met' if ok else 'NOT met'}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

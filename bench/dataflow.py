"""Benchmark: our dataflow end to end vs a pipeline limit that counts parse AND store, on three inputs.

Inputs, the same readings each (>= 5 M readings over >= 10 k sensors at 1 Hz):
  (a) raw seed-format lines, one reading per message;
  (b) the simulator's default recording of those readings (envelopes), with 0.1% malformed
      messages and 1% out-of-order delivery, and (b clean) the same recording without them;
  (c) raw JSON array messages of 50 readings.
For each, in rounds side by side: end-to-end readings/s of our run (1 dataflow process + store
writer), the parse-only CPU per reading of the same input (read and fully parse it, envelope and
body, with the fastest parser we have), and the store-only CPU per reading of the same window
rows. The pipeline limit is 2 cores / (parse CPU + store CPU per reading): what two cores could
do with nothing but the unavoidable work, perfectly overlapped. Once: a naive per-item Bytewax
pipeline on (a), the peak RSS of a fresh run with 100 k sensors, and the fixed cost of one
`sensorflow run` command (interpreter, imports, writer process, Bytewax) on the 408 KB sample.
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


def make_recording(
    directory: Path, readings: int, sensors: int, partitions: int, rate_hz: float = 1.0, per_message: int = 1
) -> Path:
    """Seed-format raw lines: every sensor reports ``rate_hz`` times a second, split by device;
    ``per_message`` > 1: JSON arrays of that many readings (in time order within a partition)."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".complete-{readings}-{sensors}-{partitions}-{rate_hz}-{per_message}"
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
            if per_message > 1:
                lines = [b"[" + b", ".join(line[:-1] for line in lines[i : i + per_message]) + b"]\n"
                         for i in range(0, len(lines), per_message)]
            f.write(b"".join(lines))
    for f in files:
        f.close()
    marker.touch()
    return directory


def simulated_recording(directory: Path, readings: int, sensors: int, partitions: int, faults: bool) -> Path:
    """The simulator's default recording (envelope lines) of ``sensors`` at 1 Hz for readings / sensors
    seconds; ``faults``: 0.1% malformed messages and 1% out-of-order delivery on top of its defaults."""
    options = ["--profile", "fleet", "--devices", str(sensors // TAGS), "--tags", str(TAGS), "--rate", "1",
               "--duration", f"{readings // sensors}s", "--start", "2026-01-01T00:00:00Z", "--partitions", str(partitions)]
    if faults:
        options += ["--malformed", "0.001", "--out-of-order", "0.01"]
    marker = directory / (".complete-" + "-".join(options).replace(":", "").replace("/", ""))
    if marker.exists():
        return directory
    subprocess.run([str(Path(sys.executable).with_name("sensorflow")), "simulate", "--out", str(directory), "--force",
                    *options], check=True, capture_output=True)
    marker.touch()
    return directory


def _blocks(directory: Path, size: int = 4 << 20):
    """Every partition file in blocks of whole lines (no trailing newline)."""
    for path in sorted(directory.glob("*.jsonl")):
        with open(path, "rb") as f:
            while True:
                chunk = f.read(size)
                if not chunk:
                    break
                chunk += f.readline()
                yield chunk.rstrip(b"\n")


_ARROW_READ = pa_json.ReadOptions(block_size=1 << 16, use_threads=True)
_ENVELOPE = pa_json.ParseOptions(
    explicit_schema=pa.schema([("sequence_number", pa.int64()), ("enqueued_time", pa.string()), ("body", pa.string())]),
    unexpected_field_behavior="ignore",
)


def _arrow(block: bytes, parse: pa_json.ParseOptions | None = None) -> pa.Table:
    options = {"parse_options": parse} if parse is not None else {}
    return pa_json.read_json(io.BytesIO(block), read_options=_ARROW_READ, **options)


def _orjson_objects(block: bytes) -> int:
    return sum(1 for line in block.split(b"\n") if orjson.loads(line) is not None)


def _orjson_arrays(block: bytes) -> int:
    return sum(len(orjson.loads(line)) for line in block.split(b"\n"))


def _orjson_envelopes(block: bytes) -> int:
    readings = 0
    for line in block.split(b"\n"):
        body = orjson.loads(line)["body"]
        try:
            readings += 1 if isinstance(body, str) and orjson.loads(body) is not None else 0
        except orjson.JSONDecodeError:
            pass
    return readings


def _arrow_objects(block: bytes) -> int:
    return _arrow(block).num_rows


def _arrow_arrays(block: bytes) -> int:
    # Arrow reads objects per line: each array wrapped as {"r": [...]} (as our decoder does).
    table = _arrow(b'{"r":' + block.replace(b"\n", b'}\n{"r":') + b"}")
    return len(table.column("r").combine_chunks().flatten())


def _arrow_envelopes(block: bytes) -> int:
    """Both levels: the envelopes, then their bodies joined by newlines (a body Arrow refuses:
    the block's good lines only, so the limit never counts our own isolation work)."""
    from sensorflow.ingest.jsonblock import join_binary

    body = _arrow(block, _ENVELOPE).column("body").combine_chunks()
    return _arrow(join_binary(body.drop_null())).num_rows


PARSERS = {
    "objects": {"arrow": _arrow_objects, "orjson": _orjson_objects},
    "envelopes": {"arrow": _arrow_envelopes, "orjson": _orjson_envelopes},
    "arrays": {"arrow": _arrow_arrays, "orjson": _orjson_arrays},
}


def parse_only(directory: Path, shape: str) -> dict[str, dict[str, float]]:
    """Read + fully parse every message (envelope and body) with each parser: CPU (Arrow's threads
    included) and wall per reading. Clean inputs only: a malformed input's limit is its clean
    twin's (the limit of parsing the readings, not of handling faults)."""
    figures = {}
    for name, parse in PARSERS[shape].items():
        start, cpu, readings = time.perf_counter(), _cpu(resource.RUSAGE_SELF), 0
        for block in _blocks(directory):
            readings += parse(block)
        figures[name] = {"readings": readings, "cpu_us": (_cpu(resource.RUSAGE_SELF) - cpu) / readings * 1e6,
                         "wall_us": (time.perf_counter() - start) / readings * 1e6}
    return figures


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


def fixed_cost(sample: Path, db: Path, runs: int = 3) -> dict[str, float]:
    """Wall seconds of one `sensorflow run` command on a tiny recording (all fixed cost), and of
    importing the CLI alone; medians of ``runs``."""
    command = [str(Path(sys.executable).with_name("sensorflow")), "run", "--source", str(sample),
               "--store", f"sqlite:///{db}", "--progress-seconds", "0"]
    walls, imports = [], []
    for _ in range(runs):
        for leftover in db.parent.glob(db.name + "*"):
            leftover.unlink()
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sensorflow.cli"], check=True, capture_output=True)
        imports.append(time.perf_counter() - start)
    return {"run_s": float(np.median(walls)), "import_cli_s": float(np.median(imports))}


INPUTS = (
    # key, label, shape of its messages, whose parse-only limit it shares
    ("a", "(a) raw seed lines", "objects", "a"),
    ("b", "(b) simulator recording, 0.1% malformed, 1% out of order", "envelopes", "b_clean"),
    ("b_clean", "(b clean) simulator recording, no faults", "envelopes", "b_clean"),
    ("c", "(c) JSON arrays of 50 readings", "arrays", "c"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=5_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rss-sensors", type=int, default=100_000)
    parser.add_argument("--naive-readings", type=int, default=1_000_000, help="the naive pipeline's share of (a)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sensorflow-bench")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow naive pipeline")
    parser.add_argument("--inputs", default="a,b,b_clean,c", help="comma-separated subset of a,b,b_clean,c")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every input; medians are reported")
    args = parser.parse_args()
    chosen = [spec for spec in INPUTS if spec[0] in args.inputs.split(",")]

    print(f"recordings: {args.readings:,} readings of {args.sensors:,} sensors at 1 Hz, {args.partitions} partitions", flush=True)
    recordings = {
        "a": lambda: make_recording(args.cache / "a-raw", args.readings, args.sensors, args.partitions),
        "b": lambda: simulated_recording(args.cache / "b-faults", args.readings, args.sensors, args.partitions, True),
        "b_clean": lambda: simulated_recording(args.cache / "b-clean", args.readings, args.sensors, args.partitions, False),
        "c": lambda: make_recording(args.cache / "c-arrays", args.readings, args.sensors, args.partitions, per_message=50),
    }
    paths = {key: recordings[key]() for key in {spec[0] for spec in chosen} | {spec[3] for spec in chosen}}
    for key, path in sorted(paths.items()):
        size = sum(p.stat().st_size for p in path.glob("*.jsonl"))
        print(f"  {key}: {path} ({size / 1e6:,.0f} MB)", flush=True)

    figures: dict[str, object] = {"readings": args.readings, "sensors": args.sensors, "rounds": args.rounds,
                                  "load_average_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Rounds of every input side by side: this VM's speed drifts by +-20% from one minute to the
        # next, so each figure is a median over rounds taken minutes apart for every input alike.
        runs: dict[str, list[dict]] = {key: [] for key, *_ in chosen}
        parses: dict[str, list[dict]] = {key: [] for key in {spec[3] for spec in chosen}}
        for k in range(args.rounds):
            for key, label, shape, parse_key in chosen:
                if key == parse_key:
                    parsed = parse_only(paths[key], shape)
                    parses[key].append(parsed)
                    print(f"round {k + 1}: {key} parse-only " + ", ".join(
                        f"{name} {p['cpu_us']:.2f} us CPU ({p['wall_us']:.2f} wall)" for name, p in parsed.items())
                        + " per reading", flush=True)
                result = ours(paths[key], tmp / f"ours-{key}-{k}.db")
                runs[key].append(result)
                for leftover in tmp.glob(f"ours-{key}-{k}.db*"):  # keep the page cache for the recordings
                    leftover.unlink()
                print(f"round {k + 1}: {key} ours {result['readings']:,} readings in {result['seconds']:.2f} s = "
                      f"{result['readings'] / result['seconds']:,.0f}/s; CPU per reading: dataflow "
                      f"{result['dataflow_cpu_us_per_reading']:.2f} us, writer {result['writer_cpu_us_per_reading']:.2f} us",
                      flush=True)

        print()
        table = {}
        for key, label, shape, parse_key in chosen:
            rate = float(np.median([r["readings"] / r["seconds"] for r in runs[key]]))
            parse_cpu = float(np.median([min(p["cpu_us"] for p in parsed.values()) for parsed in parses[parse_key]]))
            fastest = min(parses[parse_key][0], key=lambda name: parses[parse_key][0][name]["cpu_us"])
            result = runs[key][0]
            windows = max(1, result["rows"] // args.sensors)
            alone = store_only(tmp / f"store-only-{key}.db", args.sensors, windows)
            for leftover in tmp.glob(f"store-only-{key}.db*"):
                leftover.unlink()
            store_cpu = alone["cpu_us_per_row"] * result["rows"] / result["readings"]
            limit = 2 / ((parse_cpu + store_cpu) / 1e6)
            dataflow_cpu = float(np.median([r["dataflow_cpu_us_per_reading"] for r in runs[key]]))
            writer_cpu = float(np.median([r["writer_cpu_us_per_reading"] for r in runs[key]]))
            table[key] = rate
            print(f"{label}:\n  end to end {rate:,.0f} readings/s (median of {args.rounds}; rounds "
                  f"{', '.join(format(r['readings'] / r['seconds'], ',.0f') for r in runs[key])}); {result['readings']:,} readings, "
                  f"{result['rows']:,} window rows\n"
                  f"  parse-only {parse_cpu:.2f} us CPU per reading ({fastest}); store-only {alone['cpu_us_per_row']:.2f} us "
                  f"per window row = {store_cpu:.2f} us per reading\n"
                  f"  pipeline limit 2 cores / {parse_cpu + store_cpu:.2f} us = {limit:,.0f} readings/s; "
                  f"end to end / limit = {rate / limit:.3f} (target >= 0.75)\n"
                  f"  ours used {dataflow_cpu:.2f} us (dataflow process) + {writer_cpu:.2f} us (writer) CPU per reading: "
                  f"the limit's CPU / ours = {(parse_cpu + store_cpu) / (dataflow_cpu + writer_cpu):.3f} (the ratio two "
                  f"otherwise idle cores, both kept busy, would give)", flush=True)
            figures[key] = {
                "end_to_end_readings_per_s": round(rate),
                "end_to_end_per_round": [round(r["readings"] / r["seconds"]) for r in runs[key]],
                "readings": result["readings"],
                "window_rows": result["rows"],
                "parse_cpu_us_per_reading": round(parse_cpu, 3),
                "parser": fastest,
                "store_cpu_us_per_reading": round(store_cpu, 3),
                "store_cpu_us_per_window_row": round(alone["cpu_us_per_row"], 3),
                "pipeline_limit_readings_per_s": round(limit),
                "ratio_vs_pipeline_limit": round(rate / limit, 3),
                "dataflow_cpu_us_per_reading": round(dataflow_cpu, 3),
                "writer_cpu_us_per_reading": round(writer_cpu, 3),
                "cpu_ratio_limit_vs_ours": round((parse_cpu + store_cpu) / (dataflow_cpu + writer_cpu), 3),
            }
        if "b" in table and "b_clean" in table:
            figures["b_faults_vs_clean"] = round(table["b"] / table["b_clean"], 3)
            print(f"(b) with faults / (b clean): {figures['b_faults_vs_clean']:.3f} (target >= 0.9)")
        if "b_clean" in table and "a" in table:
            figures["b_clean_vs_a"] = round(table["b_clean"] / table["a"], 3)
            print(f"(b clean) / (a): {figures['b_clean_vs_a']:.3f} (target >= 0.8)")

        if not args.skip_naive and "a" in table:
            naive_input = make_recording(args.cache / "naive-raw", args.naive_readings, args.sensors, args.partitions)
            slow = naive(naive_input, tmp / "naive.db")
            naive_rate = args.naive_readings / slow["seconds"]
            print(f"naive per-item Bytewax on {args.naive_readings:,} readings of (a): {slow['seconds']:.1f} s = "
                  f"{naive_rate:,.0f} readings/s, {slow['rows']:,} window rows (stock EventClock drops readings it "
                  f"deems late); ours on (a) / naive = {table['a'] / naive_rate:.1f}x (target >= 8x)", flush=True)
            figures.update(naive_readings_per_s=round(naive_rate), ratio_vs_naive=round(table["a"] / naive_rate, 2),
                           naive_window_rows=slow["rows"])

        rss_recording = make_recording(args.cache / "rss", args.rss_sensors * 20, args.rss_sensors, args.partitions)
        rss, writer_rss = peak_rss_mb(rss_recording, tmp / "rss.db")
        print(f"peak RSS with {args.rss_sensors:,} sensors ({args.rss_sensors * 20:,} readings): dataflow process "
              f"{rss:,.0f} MB (target < 300), store writer process {writer_rss:,.0f} MB", flush=True)
        figures.update(rss_sensors=args.rss_sensors, peak_rss_mb=round(rss), writer_peak_rss_mb=round(writer_rss))

        sample = REPO / "samples" / "seed"
        fixed = fixed_cost(sample, tmp / "fixed.db")
        size = sum(p.stat().st_size for p in sample.glob("*.jsonl"))
        print(f"fixed cost: `sensorflow run` on samples/seed ({size / 1e3:,.0f} KB) {fixed['run_s']:.2f} s wall; "
              f"importing the CLI module alone {fixed['import_cli_s']:.2f} s (medians of 3)", flush=True)
        figures.update(fixed_run_s=round(fixed["run_s"], 3), fixed_import_cli_s=round(fixed["import_cli_s"], 3))

    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) at start {figures['load_average_at_start']}, at end {figures['load_average_at_end']} "
          f"(the pipeline limit assumes two otherwise idle cores)")
    ratios = [figures[key]["ratio_vs_pipeline_limit"] for key in ("a", "b", "c") if key in figures]
    met = (all(r >= 0.75 for r in ratios) and figures.get("b_faults_vs_clean", 1) >= 0.9
           and figures.get("b_clean_vs_a", 1) >= 0.8 and figures.get("ratio_vs_naive", 8) >= 8 and figures["peak_rss_mb"] < 300)
    print(f"targets (end to end / pipeline limit >= 0.75 on a, b, c; b faults / b clean >= 0.9; b clean / a >= 0.8; "
          f">= 8x naive; < 300 MB at {args.rss_sensors:,} sensors): {'met' if met else 'NOT met'}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

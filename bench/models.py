"""Benchmark: per-sensor models trained and scored through our chunked tasks, the original way, and in memory.

From one run on one windows table (>= 10k sensors x 1 h of 5 s windows in
SQLite, written with ``Store.upsert_windows``):

- chunked: train tasks that then score the same hour (``then_score``), of
  ``--chunk`` sensors on the local process pool: one SQL read per task, fit,
  model writes, scoring, one prediction upsert per task;
- per-process: the original way on a sample: one fresh Python process per
  sensor, each with its own query, fit, model write, scoring and prediction
  write (this script with ``--one-sensor``);
- in-memory: fit + score of every sensor from arrays already in memory,
  one process: the compute-only limit.

- the store floor: what SQLite alone costs per sensor for the task's I/O, the
  store's own read (every column of every row counted inside SQLite) and its
  prediction upsert from rows already staged, with no Python per row;
- store I/O side by side: per sensor, CPU of the store's ``read_windows`` and
  ``upsert_predictions`` against the row-at-a-time versions they replaced
  (kept below as ``_row_at_a_time_*``), same data, same run.

Rates are models trained+scored per second per core. Targets: chunked >= 50x
the per-process rate, and chunked / store-bound ceiling >= 0.6, where the
ceiling is 1 / (store floor + in-memory fit+score per sensor): what one core
could do with no Python around the store's work. Chunked, in-memory and the
floor are measured ``--rounds`` times and the medians reported (the machine
may be shared: rates per CPU-second in brackets, and the load average
printed). The last line printed is one JSON object of the figures.

    python bench/models.py [--devices 1000] [--tags 10] [--detectors robust-window,seed-ocsvm] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the sensorflow command does

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensorflow.batch_jobs.detectors import (
    DEFAULT_DETECTOR,
    get_detector,
    iter_sensor_windows,
    save_model,
)
from sensorflow.batch_jobs.executors import LocalPoolExecutor
from sensorflow.batch_jobs.schedule import Policy, Work, chunk_tasks
from sensorflow.batch_jobs.tasks import TaskResult, _predictions_table
from sensorflow.records.runs import RunKind
from sensorflow.records.windows import WINDOW_SCHEMA
from sensorflow.store import open_store

NS = 1_000_000_000
W = 5 * NS
START = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z
WINDOWS = 720  # one hour


def sensors_of(devices: int, tags: int) -> list[tuple[str, str]]:
    return [(str(d), str(t)) for d in range(1, devices + 1) for t in range(1, tags + 1)]


def build_store(url: str, sensors: list[tuple[str, str]], seed: int = 1) -> float:
    """An hour of windows per sensor (level + noise, the odd spike); seconds spent writing."""
    rng = np.random.default_rng(seed)
    ends = START + np.arange(1, WINDOWS + 1, dtype=np.int64) * W
    took = 0.0
    with open_store(url) as store:
        store.create_schema()
        for lo in range(0, len(sensors), 1000):
            part = sensors[lo:lo + 1000]
            level = rng.uniform(10, 110, (len(part), 1))
            value = level + rng.normal(0, 0.5, (len(part), WINDOWS))
            value[rng.random(value.shape) < 0.002] += 20.0
            flat = value.ravel()
            table = pa.table({
                "window_end": np.tile(ends, len(part)), "device": np.repeat([d for d, _ in part], WINDOWS),
                "tag": np.repeat([t for _, t in part], WINDOWS), "value": flat,
                "count": np.full(flat.shape[0], 5, dtype=np.int64), "min": flat - 0.8, "max": flat + 0.8,
            }, schema=WINDOW_SCHEMA)
            began = time.perf_counter()
            store.upsert_windows(table)
            took += time.perf_counter() - began
    return took


def chunked(url: str, models: Path, sensors: list[tuple[str, str]], detector: str, chunk: int, workers: int) -> dict:
    """Train tasks that then score the same hour (one read per chunk), on a warm pool."""
    policy = Policy(0, 0, 3600 * NS, 3600 * NS, chunk)
    fields = {"detector": detector, "store": url, "model_store": str(models), "then_score": True}
    hour = [Work(tuple(sensors), START, START + WINDOWS * W)]
    with LocalPoolExecutor(workers) as pool:
        pool.run(chunk_tasks("warm-up", RunKind.TRAIN, [Work(tuple(sensors[:1]), START, START + WINDOWS * W)], policy, **fields))
        began = time.perf_counter()
        results = pool.run(chunk_tasks("bench", RunKind.TRAIN, hour, policy, pool.parallelism, **fields))
        seconds = time.perf_counter() - began
    ok = sum(r.count("ok") for r in results)
    if ok != len(sensors):
        raise SystemExit(f"chunked run lost sensors: {ok} of {len(sensors)} ok: {results[0].outcomes[:3]}")
    return {
        "seconds": round(seconds, 2), "per_s_per_core": len(sensors) / seconds / workers,
        "per_cpu_s": len(sensors) / sum(r.cpu_seconds for r in results),
        "predictions": sum(r.predictions for r in results), "stages": _stages(results),
    }


def _stages(results: list[TaskResult]) -> dict[str, float]:
    """Seconds per task stage, summed over tasks (all workers); "write" is model writes + the prediction upsert."""
    totals: dict[str, float] = {}
    for result in results:
        for stage, seconds in result.stages.items():
            totals[stage] = round(totals.get(stage, 0.0) + seconds, 2)
    return totals


def per_process(url: str, models: Path, sample: list[tuple[str, str]], detector: str) -> dict:
    """One fresh interpreter per sensor, one after the other (one core)."""
    began, cpu = time.perf_counter(), _children_cpu()
    for device, tag in sample:
        subprocess.run(
            [sys.executable, __file__, "--one-sensor", device, tag, "--store", url, "--models", str(models),
             "--detectors", detector], check=True,
        )
    seconds = time.perf_counter() - began
    return {"sensors": len(sample), "seconds": round(seconds, 2), "per_s_per_core": len(sample) / seconds,
            "per_cpu_s": len(sample) / (_children_cpu() - cpu)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_sensor(device: str, tag: str, url: str, models: Path, detector_name: str) -> None:
    """The original job: query one sensor, fit, write its model, score, write its predictions."""
    detector = get_detector(detector_name)
    with open_store(url) as store:
        table = store.read_windows([(device, tag)], START, START + WINDOWS * W)
        (windows,) = iter_sensor_windows(table, START, START + WINDOWS * W, W)
        model = detector.fit(windows)
        models.mkdir(parents=True, exist_ok=True)
        (models / f"model_{device}_{tag}").write_bytes(save_model(model))
        scores = model.score(windows)
        store.upsert_predictions(_predictions_table(detector_name, [(windows, "per-process", scores)]))


def load_windows(url: str, sensors: list[tuple[str, str]]) -> list:
    """Every sensor's windows as arrays, for the in-memory loop."""
    windows = []
    with open_store(url) as store:  # in slices: a chunk's rows at a time
        for lo in range(0, len(sensors), 1000):
            table = store.read_windows(sensors[lo:lo + 1000], START, START + WINDOWS * W)
            windows += iter_sensor_windows(table, START, START + WINDOWS * W, W)
    return windows


def in_memory(windows: list, detector_name: str) -> dict:
    """Fit + score of every sensor whose windows are already arrays in memory; one process."""
    detector = get_detector(detector_name)
    began, cpu = time.perf_counter(), time.process_time()
    for w in windows:
        detector.fit(w).score(w)
    seconds = time.perf_counter() - began
    return {"sensors": len(windows), "seconds": round(seconds, 2), "per_s_per_core": len(windows) / seconds,
            "per_cpu_s": len(windows) / (time.process_time() - cpu)}


def sqlite_floor(db: Path, sensors: list[tuple[str, str]]) -> dict:
    """What SQLite alone costs per sensor for a task's I/O, with no Python per row: the chunked
    read (the store's own query, every column of every row counted inside SQLite, so that no
    plan can skip reading them) and the prediction upsert (the store's ON CONFLICT rule, from
    rows already staged in a temporary table). On a copy."""
    import sqlite3

    from sensorflow.store.sqlite import _READ_WINDOWS, _sensor_json, _ts_text

    copy = db.with_name("floor.db")
    shutil.copy(db, copy)
    con = sqlite3.connect(copy, isolation_level=None)
    try:
        args = (_sensor_json(sorted(sensors)), _ts_text(START), _ts_text(START + WINDOWS * W))
        began = time.process_time()
        # Constant SQL around the store's own query; every value is a bound parameter.
        counted = con.execute(
            "SELECT COUNT(Sensor), COUNT(TS), COUNT(Value), COUNT(Count), COUNT(Min), COUNT(Max) FROM (" + _READ_WINDOWS + ")",
            args,
        ).fetchone()
        read_s = time.process_time() - began
        con.execute("CREATE TEMP TABLE staged AS SELECT * FROM Predictions WHERE 0")
        con.execute(
            "INSERT INTO temp.staged SELECT x.TS, s.value ->> 0, s.value ->> 1, x.Value, x.Value, 0, 'floor', 'v1', 'now' "
            "FROM (" + _READ_WINDOWS + ") x JOIN json_each(?) s ON s.key = x.Sensor", (*args, args[0]),
        )
        began = time.process_time()
        con.execute("BEGIN IMMEDIATE")
        con.execute(
            "INSERT INTO Predictions SELECT * FROM temp.staged WHERE true ON CONFLICT (Device, Tag, TS, Detector) DO UPDATE SET "
            "Value = excluded.Value, Score = excluded.Score, IsAnomaly = excluded.IsAnomaly, "
            "ModelVersion = excluded.ModelVersion, WrittenAt = excluded.WrittenAt"
        )
        con.execute("COMMIT")
        write_s = time.process_time() - began
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return {"rows": counted[0], "read_ms_per_sensor": 1e3 * read_s / len(sensors), "write_ms_per_sensor": 1e3 * write_s / len(sensors)}


# The store's read and prediction upsert as they were before they went columnar (a Python tuple
# per row fetched or bound, the whole result sorted by SQLite), kept to measure side by side.
_ROW_AT_A_TIME_READ = (
    "WITH s(Sensor, Device, Tag) AS (SELECT key, value ->> 0, value ->> 1 FROM json_each(?)) "
    "SELECT s.Sensor, v.TS, v.Value, v.Count, v.Min, v.Max FROM SensorValues v "
    "JOIN s ON v.Device = s.Device AND v.Tag = s.Tag WHERE v.TS > ? AND v.TS <= ? "
    "ORDER BY v.Device, v.Tag, v.TS"
)


def _row_at_a_time_read(store, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
    from sensorflow.records.windows import WINDOW_READ_SCHEMA
    from sensorflow.store.sqlite import _sensor_json, _ts_ns, _ts_text

    rows = store._db.execute(_ROW_AT_A_TIME_READ, (_sensor_json(sensors), _ts_text(ts_from), _ts_text(ts_to))).fetchall()
    sensor, ts, value, count, low, high = zip(*rows)
    index = pa.array(sensor, pa.int64())
    return pa.table(
        [_ts_ns(ts), pa.array([d for d, _ in sensors], pa.string()).take(index),
         pa.array([t for _, t in sensors], pa.string()).take(index), pa.array(value, pa.float64()),
         pa.array(count, pa.int64()), pa.array(low, pa.float64()), pa.array(high, pa.float64())],
        schema=WINDOW_READ_SCHEMA,
    )


def store_io(url: str, sensors: list[tuple[str, str]], detector_name: str) -> dict:
    """CPU ms per sensor of the store's read and prediction upsert, columnar (now) and row at a time (before)."""
    detector = get_detector(detector_name)
    span = (START, START + WINDOWS * W)
    figures: dict[str, float] = {}
    with open_store(url) as store:
        table = store.read_windows(sensors, *span)
        windows = list(iter_sensor_windows(table, *span, W))
        scored = [(w, "io", m.score(w)) for w in windows for m in [detector.fit(w)]]
        predictions = _predictions_table(f"io:{detector_name}", scored)
        store.upsert_predictions(predictions)  # the rows exist: both ways then replace them
        steps = {
            "read": lambda: store.read_windows(sensors, *span),
            "read_row_at_a_time": lambda: _row_at_a_time_read(store, sensors, *span),
            "upsert": lambda: store.upsert_predictions(predictions),
            "upsert_row_at_a_time": lambda: store._upsert_predictions_by_row(predictions),
        }
        for name, step in steps.items():
            began = time.process_time()
            step()
            figures[f"{name}_ms_per_sensor"] = 1e3 * (time.process_time() - began) / len(sensors)
    return figures


def _median(values: list[dict], key: str) -> float:
    return statistics.median(v[key] for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--detectors", default=f"{DEFAULT_DETECTOR},seed-ocsvm")
    parser.add_argument("--ocsvm-sensors", type=int, default=2000, help="sensors for seed-ocsvm (slow: a subset)")
    parser.add_argument("--sample", type=int, default=20, help="sensors run the original way")
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="chunked, in-memory and floor measured this many times (medians)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--one-sensor", nargs=2, metavar=("DEVICE", "TAG"), help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_sensor:
        one_sensor(*args.one_sensor, args.store, args.models, args.detectors)
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sensorflow-bench-models-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'bench.db'}"
    for name in ("bench.db", "bench.db-wal", "bench.db-shm"):
        (workdir / name).unlink(missing_ok=True)
    sensors = sensors_of(args.devices, args.tags)
    write_s = build_store(url, sensors)
    print(f"windows: {len(sensors):,} sensors x {WINDOWS} windows = {len(sensors) * WINDOWS:,} rows written in "
          f"{write_s:.1f} s ({len(sensors) * WINDOWS / write_s:,.0f} rows/s) to {workdir / 'bench.db'}", flush=True)
    figures: dict[str, object] = {"sensors": len(sensors), "windows_per_sensor": WINDOWS, "workers": args.workers,
                                  "chunk": args.chunk, "window_rows_per_s": round(len(sensors) * WINDOWS / write_s)}
    step = max(1, len(sensors) // args.sample)
    sample = sensors[::step][:args.sample]
    for detector in args.detectors.split(","):
        subset = sensors if detector == DEFAULT_DETECTOR else sensors[:args.ocsvm_sensors]
        load = [os.getloadavg()[0]]
        windows = load_windows(url, subset)
        rounds = []
        for _ in range(args.rounds):
            shutil.rmtree(workdir / "models", ignore_errors=True)
            ours = chunked(url, workdir / "models", subset, detector, args.chunk, args.workers)
            memory = in_memory(windows, detector)
            floor = sqlite_floor(workdir / "bench.db", subset[:1000])
            floor_ms = floor["read_ms_per_sensor"] + floor["write_ms_per_sensor"]
            compute_ms = 1e3 / memory["per_cpu_s"]
            rounds.append({
                "chunked": ours["per_s_per_core"], "chunked_cpu": ours["per_cpu_s"], "seconds": ours["seconds"],
                "memory": memory["per_s_per_core"], "memory_cpu": memory["per_cpu_s"],
                "floor_read": floor["read_ms_per_sensor"], "floor_write": floor["write_ms_per_sensor"],
                "floor": floor_ms, "compute": compute_ms,
                # The target: chunked rate / (1 / (store floor + in-memory fit+score per sensor)).
                "vs_ceiling": ours["per_s_per_core"] * (floor_ms + compute_ms) / 1e3,
                "cpu_vs_ceiling": ours["per_cpu_s"] * (floor_ms + compute_ms) / 1e3,
                "stages": ours["stages"], "predictions": ours["predictions"],
            })
            load.append(os.getloadavg()[0])
        del windows
        original = per_process(url, workdir / "per-process-models", sample, detector) if sample else None
        io = store_io(url, subset[:args.chunk], detector)
        med = {key: _median(rounds, key) for key in rounds[0] if key not in ("stages", "predictions")}
        chunked_rounds = ", ".join(f"{r['chunked']:.1f} [{r['chunked_cpu']:.1f}]" for r in rounds)
        ratio_rounds = ", ".join(f"{r['vs_ceiling']:.2f} [{r['cpu_vs_ceiling']:.2f}]" for r in rounds)
        print(f"{detector}: {len(subset):,} sensors, {args.rounds} round(s), medians (rates: models trained+scored per "
              "second per core, wall clock; [per CPU-second: less affected by other load on the machine]); "
              f"load average {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores")
        print(f"  chunked tasks:  {med['chunked']:8.1f} [{med['chunked_cpu']:7.1f}] "
              f"({med['seconds']} s on {args.workers} workers; {rounds[0]['predictions']:,} predictions; "
              f"rounds {chunked_rounds})")
        print(f"    task stages of the last round (s, all workers): {rounds[-1]['stages']}")
        if original:
            print(f"  per process:    {original['per_s_per_core']:8.2f} [{original['per_cpu_s']:7.2f}] "
                  f"({original['sensors']} sensors in {original['seconds']} s, one interpreter each)")
        print(f"  in memory:      {med['memory']:8.1f} [{med['memory_cpu']:7.1f}] (fit+score {med['compute']:.2f} ms CPU per sensor)")
        print(f"  store floor, SQLite alone, no Python per row: read {med['floor_read']:.2f} ms + prediction upsert "
              f"{med['floor_write']:.2f} ms per sensor: ceiling 1 / ({med['floor']:.2f} + {med['compute']:.2f} ms) = "
              f"{1e3 / (med['floor'] + med['compute']):.0f} models/s per core")
        print(f"  store I/O CPU per sensor, columnar now vs row at a time before (same data, this run): "
              f"read {io['read_ms_per_sensor']:.2f} vs {io['read_row_at_a_time_ms_per_sensor']:.2f} ms, "
              f"prediction upsert {io['upsert_ms_per_sensor']:.2f} vs {io['upsert_row_at_a_time_ms_per_sensor']:.2f} ms")
        vs_original = med["chunked"] / original["per_s_per_core"] if original else None
        print(f"  chunked / store-bound ceiling: {med['vs_ceiling']:.2f} [{med['cpu_vs_ceiling']:.2f}] (target >= 0.6; rounds "
              f"{ratio_rounds})"
              + (f"; chunked / per-process: {vs_original:.0f}x (target >= 50x)" if original else ""), flush=True)
        figures[detector] = {
            "sensors": len(subset), "rounds": args.rounds, "load_average": [round(x, 1) for x in load],
            "chunked_per_s_per_core": round(med["chunked"], 1), "chunked_per_cpu_s": round(med["chunked_cpu"], 1),
            "chunked_seconds": med["seconds"], "chunked_rounds": [round(r["chunked"], 1) for r in rounds],
            "chunked_cpu_rounds": [round(r["chunked_cpu"], 1) for r in rounds],
            "in_memory_per_s_per_core": round(med["memory"], 1), "in_memory_per_cpu_s": round(med["memory_cpu"], 1),
            "sqlite_floor_read_ms_per_sensor": round(med["floor_read"], 3),
            "sqlite_floor_write_ms_per_sensor": round(med["floor_write"], 3),
            "sqlite_floor_ms_per_sensor": round(med["floor"], 3), "in_memory_ms_per_sensor": round(med["compute"], 3),
            "store_bound_ceiling_per_s": round(1e3 / (med["floor"] + med["compute"]), 1),
            "chunked_vs_store_bound_ceiling": round(med["vs_ceiling"], 3),
            "cpu_chunked_vs_store_bound_ceiling": round(med["cpu_vs_ceiling"], 3),
            "chunked_vs_in_memory": round(med["chunked"] / med["memory"], 3),
            "store_io_ms_per_sensor": {k.removesuffix("_ms_per_sensor"): round(v, 3) for k, v in io.items()},
            "stages_last_round": rounds[-1]["stages"],
        }
        if original:
            figures[detector].update({
                "per_process_per_s_per_core": round(original["per_s_per_core"], 3),
                "per_process_per_cpu_s": round(original["per_cpu_s"], 3), "chunked_vs_per_process": round(vs_original, 1),
            })
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

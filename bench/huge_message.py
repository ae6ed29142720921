"""Benchmark: peak memory of ``sensorflow run`` on a recording holding one huge message.

For each size in ``--sizes-mb`` it writes a recording of two raw partitions of seed-format lines
(``--lines`` each, 10 readings per second of event time) and puts, in the middle of partition 0,
one line of that many MB holding a valid JSON array of readings (about 81 bytes each: 200 MB is
2.46 M readings). Then it runs ``python -m sensorflow run`` on it in a subprocess (SQLite store,
writer process) and reports:

- ``peak_rss_mb``: the largest sum of RSS over the run's process and its children, polled every
  20 ms with psutil (what a container's memory limit sees, near enough);
- ``max_rss_mb``: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the run, the largest single
  process (not the sum; it catches a peak shorter than the polling interval);
- the exit code, wall time, the window rows and ``too_large`` dead letters it wrote.

``--repo`` runs another checkout's code (a ``git worktree`` of an older commit, say) through a
symlinked import tree, to measure "before". ``--kill-above-mb`` ends a run whose polled RSS goes
past it (the old code reached 12 GB on the 200 MB line): it is reported as killed, with the RSS
it had reached.

The last line printed is one JSON object of the figures.

    python bench/huge_message.py [--sizes-mb 200,20] [--lines 2000] [--repo PATH] [--kill-above-mb 6000]
                                 [--max-message-bytes N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
START_S = 1_767_225_600  # 2026-01-01T00:00:00Z
_PACKAGES = {"sensorflow": "sensorflow", "ingest": "ingest", "windowing": "windowing", "batch_jobs": "batch_jobs",
             "simulator": "simulator"}


def _ts(seconds: float) -> str:
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{round((seconds - whole) * 1000):03d}Z"


def reading(i: int, device: int) -> bytes:
    return orjson.dumps({"TS": _ts(START_S + i / 10), "Device": device, "Tag": i % 5, "Value": float(i % 97)})


def huge_array(size_bytes: int) -> tuple[bytes, int]:
    """A valid JSON array of readings of about ``size_bytes``, and its number of readings."""
    one = [reading(i, 900 + i % 7) for i in range(10_000)]
    piece = b",".join(one)
    copies = max(1, size_bytes // (len(piece) + 1))
    return b"[" + b",".join([piece] * copies) + b"]", copies * len(one)


def write_recording(directory: Path, size_mb: float, lines: int) -> dict:
    """Two partitions; partition 0's middle line is the huge array. Returns where it is."""
    directory.mkdir(parents=True)
    array, readings = huge_array(int(size_mb * 1_000_000))
    huge_line = lines // 2 + 1
    for p in range(2):
        with open(directory / f"partition-{p}.jsonl", "wb") as f:
            for i in range(lines):
                if p == 0 and i == huge_line - 1:
                    f.write(array + b"\n")
                f.write(reading(i, p * 100 + i % 20) + b"\n")
    return {"line": huge_line, "bytes": len(array), "readings": readings}


def _import_tree(repo: Path, into: Path) -> Path:
    """A directory whose ``sensorflow`` package is ``repo``'s, laid out as setuptools maps it."""
    package = into / "sensorflow"
    package.mkdir(parents=True)
    for entry in (repo / "sensorflow").iterdir():
        (package / entry.name).symlink_to(entry)
    for name, folder in _PACKAGES.items():
        if name != "sensorflow":
            (package / name).symlink_to(repo / folder)
    return into


def measure(source: Path, db: Path, repo: Path | None, work: Path, kill_above_mb: float | None,
            max_message_bytes: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORFLOW_")}
    if repo is not None:
        env["PYTHONPATH"] = str(_import_tree(repo, work / "import-tree"))
    command = [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{db}",
               "--progress-seconds", "0"]
    if max_message_bytes is not None:
        command += ["--max-message-bytes", str(max_message_bytes)]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    root = psutil.Process(process.pid)
    peak, killed = 0, False
    while process.poll() is None:
        rss = 0
        try:
            for member in [root, *root.children(recursive=True)]:
                try:
                    rss += member.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, rss)
        if kill_above_mb is not None and peak > kill_above_mb * 2**20 and not killed:
            killed = True
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.02)
    err = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    wall = time.monotonic() - started
    rows = dead = 0
    too_large: list[tuple] = []
    if db.exists() and not killed:
        with sqlite3.connect(db) as con:
            rows = con.execute('SELECT COUNT(*) FROM "SensorValues"').fetchone()[0]
            dead = con.execute('SELECT COUNT(*) FROM "DeadLetters"').fetchone()[0]
            too_large = con.execute(
                'SELECT "Partition", "Position", "Reason", LENGTH("Payload") FROM "DeadLetters" WHERE "Reason" LIKE ?',
                ("too_large%",),
            ).fetchall()
    return {
        "exit": process.returncode,
        "killed_above_mb": kill_above_mb if killed else None,
        "peak_rss_mb": round(peak / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "wall_s": round(wall, 2),
        "window_rows": rows,
        "dead_letters": dead,
        "too_large": [list(t) for t in too_large],
        "stderr_tail": err[-300:] if process.returncode else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="200,20", help="comma-separated sizes of the huge line, in MB")
    parser.add_argument("--lines", type=int, default=2000, help="normal lines per partition")
    parser.add_argument("--repo", type=Path, default=None, help="run this checkout's code (default: this one)")
    parser.add_argument("--kill-above-mb", type=float, default=None, help="end a run whose polled RSS passes this")
    parser.add_argument("--max-message-bytes", type=int, default=None, help="the run's limit (default: its default)")
    args = parser.parse_args()
    results = []
    for size in (float(s) for s in args.sizes_mb.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            huge = write_recording(work / "rec", size, args.lines)
            # ru_maxrss of children is a high-water mark over all of them: one run per process
            child = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps({"source": str(work / "rec"), "db": str(work / "out.db"),
                                                                 "repo": str(args.repo) if args.repo else None,
                                                                 "kill": args.kill_above_mb,
                                                                 "max_message_bytes": args.max_message_bytes})],
                capture_output=True, check=True,
            )
            result = {"size_mb": size, "huge_line": huge, **json.loads(child.stdout)}
        results.append(result)
        print(f"{size:g} MB line ({huge['readings']:,} readings, line {huge['line']}): exit {result['exit']}"
              f"{' (killed)' if result['killed_above_mb'] else ''}, peak RSS {result['peak_rss_mb']:,.0f} MB "
              f"(tree, polled), largest process {result['max_rss_mb']:,.0f} MB, {result['wall_s']:.1f} s, "
              f"{result['window_rows']:,} window rows, too_large: {result['too_large']}")
    print(json.dumps({"bench": "huge_message", "repo": str(args.repo or REPO), "max_message_bytes": args.max_message_bytes,
                      "results": results}))


def _one(spec: str) -> None:
    given = json.loads(spec)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(given["source"]), Path(given["db"]), Path(given["repo"]) if given["repo"] else None,
                         Path(tmp), given["kill"], given["max_message_bytes"])
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        _one(sys.argv[2])
    else:
        main()

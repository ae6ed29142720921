"""Detection quality through the pipeline: recording -> `sensorflow run` -> SQLite -> `sensorflow evaluate`.

Every figure comes from the product's own commands, run as subprocesses
with timeouts: a recording is replayed by `sensorflow run` into a fresh
SQLite store, then `sensorflow evaluate` trains each detector on one
window-time range and scores the next through task specs (train tasks ->
models -> score tasks -> predictions) and reports against the labels; its
last stdout line (one JSON object) is what this bench tabulates. Rules:
batch_jobs/quality.py.

Data sets

(a) The simulator, two cases, each written by `sensorflow simulate --out`
    (5 s windows, 1 h training + 3 h scored, 1 anomaly per sensor-hour of all
    six kinds, `--scope sensor`, labels.json from the simulator):
    - ``fleet``: today's fleet profile (realistic signal, every sensor at 1 Hz).
      The simulate command has no "anomaly-light training" option, so its
      training hour holds anomalies at the same rate as the scored part.
    - ``mixed``: the failure-mode fleet, `--signal mixed` (realistic, daily,
      quantized and on/off, mostly-zero counts, heavy tails in equal shares)
      with `--period 2h` (the 1 h training range covers half a cycle) and
      `--train-anomalies 0.2` (a fifth of the sensors get one more, long
      anomaly inside the training range, the first of them stuck).
    Targets (default detector): recall >= 0.95 and <= 1 false flagged window
    per sensor-day.

(b) SKAB (GPL data, never copied into the repository), read from
    ``../shared/data/skab`` beside the repository or `--skab PATH`, converted
    by bench/skab.py into the work directory: each file a device
    ("valve1/3"), each column a tag, one reading per row, 1 s windows. Each
    file is shifted by a whole number of seconds so that it starts at the
    same instant T0 (a shift of whole seconds changes no window's content),
    because evaluate takes one global training range; training = the first
    400 windows of every file, (T0, T0 + 400 s] (a window's TS is its end),
    scoring to the newest window. One label per run of anomaly=1 rows;
    `--scope device`: a device's label is found when any of its tags flags
    inside it, precision counts the device's flagged windows.
    anomaly-free.csv is left out (no labels; not in SKAB's outlier benchmark).
    Target (default detector): F1 >= 0.85 with precision >= 0.80. The F1 is
    event recall x window precision (batch_jobs/quality.py), not SKAB's
    per-point F1 of its leaderboard.
    One more row: the default detector trained on SKAB's first 15% (of the
    mean file, ~165 windows), the share the held-out protocol trains on
    (issue 14): how the default holds when training is short.
    The files have different lengths and evaluate scores every sensor up to
    the one global newest window, so a detector that judges every missing
    slot after a sensor's newest window as a gap sees a short file's end as a
    dropout (robust-window does; calibrated does not since 641db88): the
    column "after end" counts the device flagged windows after that device's
    last reading (read from the store), and "P w/o" / "F1 w/o" are precision
    and F1 without them (shown for diagnosis; targets use evaluate's own
    figures).

Detectors: the default (calibrated), seed-ocsvm, mad-z and robust-window
(the old default). One table per data set and, last, one JSON line:
{"simulator": {case: {detector: {...}}}, "skab": {detector: {...}}, "targets": {...}}.

    python bench/quality.py [--fast] [--detectors calibrated,mad-z] [--keep DIR] [--skab PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import skab  # noqa: E402  (bench/skab.py)

from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR  # noqa: E402
from sensorflow.records.timeparse import NS_PER_S  # noqa: E402
from sensorflow.simulator.timefmt import format_enqueued_time  # noqa: E402

SENSORFLOW = [sys.executable, "-m", "sensorflow"]
DETECTORS = ("calibrated", "seed-ocsvm", "mad-z", "robust-window")
START_NS = 1_772_431_200 * NS_PER_S  # 2026-03-02T06:00:00Z
SIM_TARGET = {"recall": 0.95, "false_flags_per_sensor_day": 1.0}
SKAB_TARGET = {"f1": 0.85, "precision": 0.80}
SHORT_TRAIN_SHARE = 0.15  # the held-out protocol trains on each series' first 15%
FIGURES = ("recall", "precision", "f1", "event_precision", "false_flags_per_sensor_day", "episodes_per_sensor_day",
           "flagged_windows", "false_flag_windows", "false_flag_episodes", "labelled", "found", "sensors", "units",
           "scored_windows", "skipped_sensors", "failed_sensors", "recall_by_kind")


class StepFailed(RuntimeError):
    pass


def step(name: str, argv: list[str], log_dir: Path, timeout: float) -> tuple[str, float]:
    """Run one command; its stdout and the seconds. Output kept in log_dir; stderr printed when it fails."""
    began = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    except subprocess.TimeoutExpired as e:
        raise StepFailed(f"{name}: timed out after {timeout:g} s: {' '.join(argv)}\n{_text(e.stderr)[-3000:]}") from e
    seconds = time.perf_counter() - began
    (log_dir / f"{name}.out").write_text(done.stdout, encoding="utf-8")
    (log_dir / f"{name}.err").write_text(done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise StepFailed(f"{name}: exit {done.returncode} after {seconds:.1f} s: {' '.join(argv)}\n"
                         f"--- stderr (last 3000 characters) ---\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _at_hours(hours: float) -> str:
    """START + ``hours``, as ISO 8601 text."""
    return format_enqueued_time(START_NS + round(hours * 3600 * NS_PER_S))


def evaluate_detector(name: str, detector: str, store: Path, labels: Path, scope: str, window_s: float,
                      train: tuple[str, str], score_to: str | None, log_dir: Path, timeout: float) -> dict[str, Any]:
    argv = [*SENSORFLOW, "evaluate", "--store", f"sqlite:///{store}", "--window-seconds", f"{window_s:g}",
            "--detector", detector, "--train-from", train[0], "--train-to", train[1], "--labels", str(labels),
            "--scope", scope]
    if score_to:
        argv += ["--score-to", score_to]
    out, seconds = step(f"evaluate-{name}-{detector}", argv, log_dir, timeout)
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as e:
        raise StepFailed(f"evaluate-{name}-{detector}: last stdout line is not JSON: {lines[-1:]!r}") from e
    figures = {k: report.get(k) for k in FIGURES}
    figures["run_seconds"] = round(seconds, 2)
    figures["warnings"] = len(report.get("warnings") or [])
    return figures


def simulate_case(case: str, args: argparse.Namespace, work: Path, detectors: list[str]) -> dict[str, Any]:
    """One simulated fleet through simulate -> run -> evaluate per detector."""
    directory = work / case
    directory.mkdir(parents=True, exist_ok=True)
    rec, store = directory / "recording", directory / "store.db"
    hours = args.train_hours + args.score_hours
    argv = [*SENSORFLOW, "simulate", "--out", str(rec), "--force", "--profile", "fleet",
            "--devices", str(args.devices), "--tags", str(args.tags), "--duration", f"{round(hours * 3600)}s",
            "--start", _at_hours(0), "--seed", str(args.seed), "--anomaly-rate", f"{args.rate:g}",
            "--window", "5s", "--train-range", f"{args.train_hours / hours:.6f}"]
    if case == "mixed":
        argv += ["--signal", "mixed", "--period", args.period, "--train-anomalies", f"{args.train_anomalies:g}"]
    out, sim_s = step(f"simulate-{case}", argv, directory, args.timeout)
    summary = json.loads(out.strip().splitlines()[-1])
    labels = directory / "labels.json"
    shutil.copy(rec / "labels.json", labels)
    _, run_s = step(f"run-{case}", [*SENSORFLOW, "run", "--source", str(rec), "--store", f"sqlite:///{store}",
                                    "--progress-seconds", "0"], directory, args.timeout)
    if not args.keep:
        shutil.rmtree(rec)  # ~1 GB of JSON lines per case; the store holds what evaluate needs
    sensors = args.devices * args.tags
    train = (_at_hours(0), _at_hours(args.train_hours))
    score_to = _at_hours(hours)
    print(f"\n== simulator: {case} ({sensors} sensors x {hours:g} h, {summary['readings']:,} readings, "
          f"{summary['labels']:,} labels; train {args.train_hours:g} h, score {args.score_hours:g} h; "
          f"simulate {sim_s:.1f} s, sensorflow run {run_s:.1f} s) ==", flush=True)
    results = {"_data": {"sensors": sensors, "readings": summary["readings"], "labels": summary["labels"],
                         "simulate_seconds": round(sim_s, 2), "run_seconds": round(run_s, 2)}}
    _header(False)
    for detector in detectors:
        try:
            results[detector] = evaluate_detector(case, detector, store, labels, "sensor", 5, train, score_to,
                                                  directory, args.timeout)
        except StepFailed as e:
            print(str(e), file=sys.stderr, flush=True)
            results[detector] = {"error": str(e).splitlines()[0]}
        _row(detector, results[detector], False)
    _kinds(results, detectors)
    return results


def skab_part(args: argparse.Namespace, work: Path, detectors: list[str]) -> dict[str, Any] | None:
    root = args.skab
    if not root.is_dir() or not skab.skab_files(root):
        print(f"\n== SKAB: SKIPPED, no SKAB data at {root} ==\n{skab.HOW_TO_GET}", flush=True)
        return None
    directory = work / "skab"
    directory.mkdir(parents=True, exist_ok=True)
    rec, store = directory / "recording", directory / "store.db"
    began = time.perf_counter()
    done = skab.convert(root, rec)
    convert_s = time.perf_counter() - began
    _, run_s = step("run-skab", [*SENSORFLOW, "run", "--source", str(rec), "--store", f"sqlite:///{store}",
                                 "--window-seconds", "1", "--progress-seconds", "0"], directory, args.timeout)
    print(f"\n== SKAB ({root}): {len(done.devices)} devices, {done.tags} sensors, {done.readings:,} readings, "
          f"{done.labels} labels, 1 s windows; train ({skab.TRAIN_FROM}, {skab.TRAIN_TO}], score to the newest "
          f"window; scope device; convert {convert_s:.1f} s, sensorflow run {run_s:.1f} s ==", flush=True)
    for label in done.labels_in_training:
        print(f"   note: label starts inside the training range: {label}")
    results: dict[str, Any] = {"_data": {"devices": len(done.devices), "sensors": done.tags, "readings": done.readings,
                                         "labels": done.labels, "run_seconds": round(run_s, 2)}}
    _header(True)
    for detector in detectors:
        try:
            figures = evaluate_detector("skab", detector, store, done.labels_path, "device", 1,
                                        (skab.TRAIN_FROM, skab.TRAIN_TO), None, directory, args.timeout)
            figures.update(_after_end(store, detector))
            results[detector] = figures
        except (StepFailed, sqlite3.Error) as e:
            print(str(e), file=sys.stderr, flush=True)
            results[detector] = {"error": str(e).splitlines()[0]}
        _row(detector, results[detector], True)
    if DEFAULT_DETECTOR in detectors:
        results["short_training"] = _skab_short(store, done, directory, args.timeout)
    return results


def _skab_short(store: Path, done: skab.Converted, directory: Path, timeout: float) -> dict[str, Any]:
    """The default detector trained on SKAB's first 15% (of the mean file), the held-out protocol's share."""
    windows = round(SHORT_TRAIN_SHARE * done.readings / done.tags)
    train_to = format_enqueued_time(skab.T0_NS + windows * NS_PER_S)
    print(f"  the same, trained on the first {windows} windows (15% of the mean file, the held-out protocol's "
          f"share; the drift needs 251):", flush=True)
    try:
        figures = evaluate_detector("skab-short", DEFAULT_DETECTOR, store, done.labels_path, "device", 1,
                                    (skab.TRAIN_FROM, train_to), None, directory, timeout)
        figures.update(_after_end(store, DEFAULT_DETECTOR))
    except (StepFailed, sqlite3.Error) as e:
        print(str(e), file=sys.stderr, flush=True)
        figures = {"error": str(e).splitlines()[0]}
    _row(f"{DEFAULT_DETECTOR} 15%", figures, True)
    return {"train_windows": windows, DEFAULT_DETECTOR: figures}


def _after_end(store: Path, detector: str) -> dict[str, Any]:
    """Device flagged windows after the device's last reading (predictions cover the scored range only)."""
    with sqlite3.connect(store) as db:
        (after,) = db.execute(
            """WITH last AS (SELECT Device, max(TS) AS t FROM SensorValues GROUP BY Device)
               SELECT count(*) FROM (SELECT DISTINCT p.Device, p.TS FROM Predictions p JOIN last l ON p.Device = l.Device
                                      WHERE p.Detector = ? AND p.IsAnomaly AND p.TS > l.t)""",
            (f"eval:{detector}",),
        ).fetchone()
    return {"flagged_after_end": after}


def _adjusted(f: dict[str, Any]) -> tuple[float | None, float | None]:
    if "flagged_after_end" not in f or f.get("precision") is None:
        return None, None
    flagged = f["flagged_windows"] - f["flagged_after_end"]
    true = f["flagged_windows"] - f["false_flag_windows"]
    precision = true / flagged if flagged else 0.0
    recall = f["recall"]
    return precision, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def _header(device: bool) -> None:
    unit = "dev" if device else "sensor"
    extra = f"{'after end':>10}{'P w/o':>7}{'F1 w/o':>7}" if device else ""
    print(f"{'detector':<14}{'recall':>7}{'prec.':>7}{'F1':>7}{f'FF/{unit}-d':>14}{f'eps/{unit}-d':>14}"
          f"{'flagged':>9}{'run s':>8}{extra}")


def _row(detector: str, f: dict[str, Any], device: bool) -> None:
    if "error" in f:
        print(f"{detector:<14} FAILED: {f['error']}", flush=True)
        return
    line = (f"{detector:<14}{f['recall']:>7.3f}{f['precision']:>7.3f}{f['f1']:>7.3f}"
            f"{f['false_flags_per_sensor_day']:>14.2f}{f['episodes_per_sensor_day']:>14.2f}"
            f"{f['flagged_windows']:>9,}{f['run_seconds']:>8.1f}")
    if device:
        p, f1 = _adjusted(f)
        line += f"{f['flagged_after_end']:>10,}{p:>7.3f}{f1:>7.3f}"
    print(line, flush=True)


def _kinds(results: dict[str, Any], detectors: list[str]) -> None:
    kinds = sorted({k for d in detectors for k in (results[d].get("recall_by_kind") or {})})
    if not kinds:
        return
    print(f"  recall by kind {'':<1}" + "".join(f"{k:>12}" for k in kinds))
    for d in detectors:
        by = results[d].get("recall_by_kind") or {}
        print(f"  {d:<16}" + "".join(f"{by[k]:>12.3f}" if k in by else f"{'-':>12}" for k in kinds))


def targets(sim: dict[str, Any], skab_results: dict[str, Any] | None, default: str) -> dict[str, Any]:
    out: dict[str, Any] = {"detector": default, "simulator": {}, "skab": None}
    print(f"\n== targets ({default}) ==")
    for case, results in sim.items():
        f = results.get(default)
        if not f or "error" in f:
            out["simulator"][case] = {"met": None}
            print(f"simulator {case}: not measured")
            continue
        recall_ok = f["recall"] >= SIM_TARGET["recall"]
        ff_ok = f["false_flags_per_sensor_day"] <= SIM_TARGET["false_flags_per_sensor_day"]
        out["simulator"][case] = {"recall>=0.95": recall_ok, "false_flags_per_sensor_day<=1": ff_ok,
                                  "met": recall_ok and ff_ok}
        print(f"simulator {case}: recall {f['recall']:.3f} (>= 0.95: {_yes(recall_ok)}), "
              f"false flags {f['false_flags_per_sensor_day']:.2f} per sensor-day (<= 1: {_yes(ff_ok)}) "
              f"-> {'met' if recall_ok and ff_ok else 'NOT MET'}")
    if skab_results is None:
        print("SKAB: skipped (no data)")
    else:
        f = skab_results.get(default)
        if not f or "error" in f:
            out["skab"] = {"met": None}
            print("SKAB: not measured")
        else:
            f1_ok, p_ok = f["f1"] >= SKAB_TARGET["f1"], f["precision"] >= SKAB_TARGET["precision"]
            out["skab"] = {"f1>=0.85": f1_ok, "precision>=0.80": p_ok, "met": f1_ok and p_ok}
            print(f"SKAB: F1 {f['f1']:.3f} (>= 0.85: {_yes(f1_ok)}), precision {f['precision']:.3f} "
                  f"(>= 0.80: {_yes(p_ok)}) -> {'met' if f1_ok and p_ok else 'NOT MET'}")
    return out


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="smaller fleets (10 devices x 6 tags, 1 h + 1 h)")
    parser.add_argument("--detectors", default=None,
                        help=f"comma-separated (default: the default detector, then {', '.join(DETECTORS[1:])})")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it (recordings, "
                        "stores, every command's output); default: a temporary directory, removed")
    parser.add_argument("--skab", type=Path, default=skab.DEFAULT_SKAB, help="SKAB's data/ folder (default: %(default)s)")
    parser.add_argument("--cases", default="fleet,mixed", help="simulator cases: fleet, mixed (empty: none)")
    parser.add_argument("--no-skab", action="store_true", help="skip SKAB")
    parser.add_argument("--devices", type=int, default=None, help="simulated devices (default 50; --fast 10)")
    parser.add_argument("--tags", type=int, default=6)
    parser.add_argument("--train-hours", type=float, default=1.0)
    parser.add_argument("--score-hours", type=float, default=None, help="default 3 (--fast 1)")
    parser.add_argument("--rate", type=float, default=1.0, help="anomalies per sensor-hour")
    parser.add_argument("--period", default="2h", help="mixed: cycle of the daily signals")
    parser.add_argument("--train-anomalies", type=float, default=0.2, help="mixed: share of sensors with an anomaly "
                        "inside the training range")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per step")
    args = parser.parse_args()
    args.devices = args.devices or (10 if args.fast else 50)
    args.score_hours = args.score_hours or (1.0 if args.fast else 3.0)
    default = DEFAULT_DETECTOR
    detectors = list(dict.fromkeys(args.detectors.split(","))) if args.detectors else \
        list(dict.fromkeys([default, *DETECTORS]))
    cases = [c for c in args.cases.split(",") if c]
    if unknown := [c for c in cases if c not in ("fleet", "mixed")]:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    if args.keep:
        if args.keep.resolve().is_relative_to(REPO):
            parser.error("--keep must be outside the repository (SKAB is GPL data)")
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep
    else:
        work = Path(tempfile.mkdtemp(prefix="sensorflow-quality-"))
    began = time.perf_counter()
    failed = False
    sim: dict[str, Any] = {}
    skab_results: dict[str, Any] | None = None
    try:
        for case in cases:
            try:
                sim[case] = simulate_case(case, args, work, detectors)
            except StepFailed as e:
                print(str(e), file=sys.stderr, flush=True)
                sim[case] = {"error": str(e).splitlines()[0]}
        if args.no_skab:
            print("\n== SKAB: SKIPPED (--no-skab) ==")
        else:
            try:
                skab_results = skab_part(args, work, detectors)
            except StepFailed as e:
                print(str(e), file=sys.stderr, flush=True)
                skab_results = {"error": str(e).splitlines()[0]}
        met = targets(sim, skab_results, default)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for results in [*sim.values(), *([skab_results] if skab_results else [])]:
        failed |= "error" in results or any("error" in v for k, v in results.items() if k != "_data" and isinstance(v, dict))
    print(f"total {time.perf_counter() - began:.0f} s")
    print(json.dumps({"simulator": sim, "skab": skab_results, "targets": met,
                      "settings": {"devices": args.devices, "tags": args.tags, "train_hours": args.train_hours,
                                   "score_hours": args.score_hours, "rate": args.rate, "period": args.period,
                                   "train_anomalies": args.train_anomalies, "seed": args.seed, "fast": args.fast}}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

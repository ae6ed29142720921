"""SKAB (the Skoltech Anomaly Benchmark) as a sensorflow recording with labels.json.

SKAB is GPL-3.0 data and is never copied into this repository: this script
reads it from ``../shared/data/skab`` relative to the repository (or
``--skab PATH``) and converts it into a directory you name, normally a
temporary one (``bench/quality.py`` does that itself).

The protocol, as a fleet:

- each CSV file is one Device, id ``"<folder>/<stem>"`` (``"valve1/3"``);
  each of its 8 sensor columns is one Tag (the column name); one reading per
  row at the row's timestamp, the value as written (an empty or non-finite
  cell is no reading);
- every file is moved in time by a whole number of seconds so that its
  first row is at the same instant ``T0`` (2026-01-01T00:00:00Z). The files
  come from different days and ``sensorflow evaluate`` takes one global
  training range; a shift by whole seconds keeps every row in a window of
  the same content (1 s windows align to whole seconds), so it changes no
  window, only its name;
- contiguous runs of ``anomaly = 1`` rows are one label each:
  ``{"device", "tag": "*", "kind": "skab-<folder>", "start": first anomalous
  row, "end": the row after the last anomalous one}`` (the last row + 1 s when
  the run reaches the end of the file), times after the shift, written by
  the simulator's ``write_labels``;
- raw JSON lines in the seed's reading format,
  ``{"TS": "2026-01-01T00:00:07.0000000Z", "Device": "valve1/3", "Tag": "Current", "Value": 1.35}``,
  one partition file per CSV, each in time order (the watermark of a
  partition is its own: files of different lengths do not make each other's
  readings late).

``anomaly-free/anomaly-free.csv`` has no labels and is not part of SKAB's
outlier benchmark (it is its long normal run); it is left out unless
``--include-free``.

Window time: a window's TS is its END, so the file's row k (at T0 + k s when
no second is skipped) is in the window ending T0 + k + 1 s, and the first
400 windows are ``(T0, T0 + 400 s]``: ``--train-from T0 --train-to T0+400s``.

    python bench/skab.py --out /tmp/skab-rec [--skab PATH] [--include-free]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sensorflow.records.timeparse import NS_PER_S, parse_time
from sensorflow.simulator.anomalies import Label, write_labels
from sensorflow.simulator.timefmt import format_enqueued_time, format_ts

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SKAB = REPO.parent / "shared" / "data" / "skab"
T0_NS = 1_767_225_600 * NS_PER_S  # 2026-01-01T00:00:00Z
TRAIN_WINDOWS = 400
TRAIN_FROM = format_enqueued_time(T0_NS)
TRAIN_TO = format_enqueued_time(T0_NS + TRAIN_WINDOWS * NS_PER_S)
FOLDERS = ("valve1", "valve2", "other")
FREE = "anomaly-free"
HOW_TO_GET = (
    "SKAB is not here. Get it with\n"
    "    git clone https://github.com/waico/SKAB\n"
    "and pass its data/ folder as --skab PATH (or put it at ../shared/data/skab beside the repository).\n"
    "It is GPL-3.0 data: keep it outside this repository."
)


@dataclass
class Converted:
    """What ``convert`` wrote."""

    directory: Path
    labels_path: Path
    devices: list[str] = field(default_factory=list)
    tags: int = 0  # sensors
    readings: int = 0
    labels: int = 0
    labels_in_training: list[str] = field(default_factory=list)  # labels starting inside the training range


def skab_files(root: Path, include_free: bool = False) -> list[Path]:
    """The CSV files, folder by folder, numerically within a folder."""
    folders = [*FOLDERS, FREE] if include_free else list(FOLDERS)
    files: list[Path] = []
    for folder in folders:
        files += sorted((root / folder).glob("*.csv"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem))
    return files


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def convert(root: Path, out: Path, include_free: bool = False) -> Converted:
    """Write ``out/partition-<n>.jsonl`` (one per file) and ``out/labels.json``."""
    files = skab_files(root, include_free)
    if not files:
        raise FileNotFoundError(f"no SKAB CSV files under {root}")
    out.mkdir(parents=True, exist_ok=True)
    result = Converted(out, out / "labels.json")
    labels: list[Label] = []
    train_end = T0_NS + TRAIN_WINDOWS * NS_PER_S
    for n, path in enumerate(files):
        device = f"{path.parent.name}/{path.stem}"
        result.devices.append(device)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter=";"))
        header, body = rows[0], [r for r in rows[1:] if r]
        time_col = header.index("datetime")
        label_col = header.index("anomaly") if "anomaly" in header else None
        skip = {"datetime", "anomaly", "changepoint"}
        tags = [(i, name) for i, name in enumerate(header) if name not in skip]
        result.tags += len(tags)
        timed = sorted(((parse_time(r[time_col]), r) for r in body), key=lambda t: t[0])  # SKAB's files already are
        first = timed[0][0]
        assert first % NS_PER_S == 0, f"{path}: first timestamp not on a whole second"
        stamps = [ns - first + T0_NS for ns, _ in timed]  # shifted to start at T0
        body = [r for _, r in timed]
        lines = []
        for row, ns in zip(body, stamps):
            ts = json.dumps(format_ts(ns))
            for col, tag in tags:
                value = _number(row[col])
                if value is not None:
                    lines.append(f'{{"TS": {ts}, "Device": {json.dumps(device)}, "Tag": {json.dumps(tag)}, "Value": {value!r}}}\n')
        result.readings += len(lines)
        (out / f"partition-{n}.jsonl").write_text("".join(lines), encoding="utf-8")
        if label_col is None:
            continue
        flags = [(_number(row[label_col]) or 0.0) >= 0.5 for row in body]
        start = None
        for k, flag in enumerate([*flags, False]):
            if flag and start is None:
                start = k
            elif not flag and start is not None:
                end = stamps[k] if k < len(stamps) else stamps[-1] + NS_PER_S
                labels.append(Label(device, "*", f"skab-{path.parent.name}",
                                    format_enqueued_time(stamps[start]), format_enqueued_time(end)))
                if stamps[start] < train_end:
                    result.labels_in_training.append(f"{device} {labels[-1].start}")
                start = None
    result.labels = len(labels)
    write_labels(result.labels_path, labels)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skab", type=Path, default=DEFAULT_SKAB, help="SKAB's data/ folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="recording directory to write (outside the repository)")
    parser.add_argument("--include-free", action="store_true", help="also anomaly-free/anomaly-free.csv (no labels)")
    args = parser.parse_args()
    if not args.skab.is_dir():
        print(f"{args.skab}: not found. {HOW_TO_GET}", file=sys.stderr)
        return 2
    if args.out.resolve().is_relative_to(REPO):
        print(f"{args.out}: inside the repository; SKAB is GPL data, write it elsewhere", file=sys.stderr)
        return 2
    done = convert(args.skab, args.out, args.include_free)
    print(f"{len(done.devices)} devices, {done.tags} sensors, {done.readings:,} readings, {done.labels} labels "
          f"-> {done.directory}; train (T0, T0+{TRAIN_WINDOWS} s] = ({TRAIN_FROM}, {TRAIN_TO}]")
    for label in done.labels_in_training:
        print(f"  label starting inside the training range: {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

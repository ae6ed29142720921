"""Shared helpers: recordings on disk, running the real dataflow, reading the store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pandas as pd
import pytest

from sensorflow.settings import RunSettings, load_settings

pytest_plugins = ["tests.support.azurite", "tests.support.postgres", "tests.support.eventhubs_broker"]

REPO = Path(__file__).resolve().parents[1]
SEED_CSV = REPO / "tests" / "data" / "seed_sensor_windows.csv"  # source and license: tests/data/README.md


def seed_message(ts: str, device, tag, value, pad: int = 0) -> bytes:
    message = {"TS": ts, "Device": device, "Tag": tag, "Value": value}
    if pad:
        message["Note"] = "x" * pad  # unknown fields are ignored
    return orjson.dumps(message)


def write_recording(directory: Path, partitions: dict[str, list[bytes]], envelope: bool = False) -> Path:
    """One ``partition-<id>.jsonl`` per partition; raw lines, or envelopes with sequence numbers."""
    directory.mkdir(parents=True, exist_ok=True)
    for pid, bodies in partitions.items():
        with open(directory / f"partition-{pid}.jsonl", "wb") as f:
            for seq, body in enumerate(bodies):
                if envelope:
                    line = orjson.dumps({"partition": pid, "sequence_number": seq, "body": body.decode()})
                else:
                    line = body
                f.write(line + b"\n")
    return directory


def run_settings(source: Path, db: Path, **extra) -> RunSettings:
    flags = {"source": str(source), "store": f"sqlite:///{db}", "progress_seconds": 0, **extra}
    return load_settings(RunSettings, flags)


def run_flow(source: Path, db: Path, **extra):
    from sensorflow.assembly import run_replay

    return run_replay(run_settings(source, db, **extra))


def windows_frame(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        frame = pd.read_sql_query(
            "SELECT TS, Device, Tag, Value, Count, Min, Max FROM SensorValues ORDER BY Device, Tag, TS", con
        )
    return frame


def dead_letters_frame(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        return pd.read_sql_query(
            "SELECT Partition, Position, Element, Reason, TS, Device, Tag, Value FROM DeadLetters "
            "ORDER BY Partition, Position, Element",
            con,
        )


@pytest.fixture
def seed_csv() -> Path:
    if not SEED_CSV.exists():
        pytest.fail(f"seed reference sample missing: {SEED_CSV} (it is part of the repository)")
    return SEED_CSV


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a failure: every server and package the tests need is installed there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run everything: {report.longrepr}"

"""Shared helpers: recordings on disk, running the real dataflow, reading the store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import psutil
import pytest

from sensorflow.settings import RunSettings, load_settings

pytest_plugins = [
    "tests.support.azurite",
    "tests.support.postgres",
    "tests.support.eventhubs_broker",
    "tests.support.processes",
]

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


def assert_uninterrupted(db: Path, reference: Path, more_than: int = 0) -> None:
    """The windows and dead letters of ``db`` (an interrupted run, resumed) are those of ``reference``
    (the same input, uninterrupted), with more than ``more_than`` window rows."""
    clean, resumed = windows_frame(reference), windows_frame(db)
    assert len(resumed) == len(clean) > more_than
    keys = ["TS", "Device", "Tag", "Count", "Min", "Max"]
    assert resumed[keys].equals(clean[keys])
    np.testing.assert_allclose(resumed["Value"], clean["Value"], rtol=1e-9)
    assert dead_letters_frame(db).equals(dead_letters_frame(reference))


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


_FIRST_SEEN: dict[int, str] = {}  # pid of a process the tests started -> the test after which it was first seen


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """The suite ends with no process it started still running; any that is, is reported, killed, and fails the run.

    Set up before every other fixture, so torn down after them all (the servers of session
    fixtures are ended by their own teardown first). Catches pytest's descendants and, through
    ``SESSION_MARK`` in the environment, processes orphaned to init by a killed parent.
    """
    from tests.support.processes import SESSION_MARK, leftover_processes, new_session_mark  # a plugin: pytest imports it first

    mark = new_session_mark()
    os.environ[SESSION_MARK] = mark
    baseline = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = leftover_processes(mark, baseline)
    if not left:
        return
    lines = []
    for process in left:
        try:
            command = " ".join(process.cmdline())[:300]
        except psutil.Error:
            command = "?"
        lines.append(f"  pid {process.pid} (alive after {_FIRST_SEEN.get(process.pid, 'the last test')}): {command}")
    _kill(left)
    pytest.fail(f"{len(left)} process(es) started by the tests were still running at the end; killed them:\n"
                + "\n".join(lines), pytrace=False)


def _kill(left: list[psutil.Process]) -> None:
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=5)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(autouse=True)
def _note_new_processes(request):
    """Remembers which test a process was first seen alive after, for the session-end report."""
    yield
    for process in psutil.Process().children(recursive=True):
        _FIRST_SEEN.setdefault(process.pid, request.node.nodeid)

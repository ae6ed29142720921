"""A store down for longer than the retry budget: the run ends with exit 1 and one line, and a rerun
from the same recovery directory writes the uninterrupted table (issue 16, defects 2 and 9).

The PostgreSQL database is made unreachable the way an outage looks to a client: new connections
are refused (``ALLOW_CONNECTIONS false``) and every open one is terminated, until the run gives up.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, dead_letters_frame, run_flow, seed_message, windows_frame, write_recording
from tests.store.pg import assert_same_windows, pg_windows

pyodbc = pytest.importorskip("pyodbc", reason="pyodbc not installed: pip install 'sensorflow[odbc]'")

BUDGET_SECONDS = 3.0


def _recording(directory: Path, malformed: bool = True) -> Path:
    """Five minutes of 60 sensors at 1 Hz on 2 partitions, a few malformed messages (dead letters) if asked."""
    rng = random.Random(3)
    partitions: dict[str, list[bytes]] = {"0": [], "1": []}
    for second in range(300):
        for device in range(15):
            for tag in range(4):
                ts = f"2018-08-28T23:{second // 60:02d}:{second % 60:02d}.{rng.randrange(1000):03d}Z"
                partitions[str(device % 2)].append(seed_message(ts, device, tag, round(rng.gauss(50, 10), 2)))
        if malformed and second % 61 == 0:
            partitions["1"].append(b"{not json")
    return write_recording(directory, partitions)


def _database(odbc_string: str) -> str:
    return next(part.split("=", 1)[1] for part in odbc_string.split(";") if part.startswith("Database="))


def _rows(odbc_string: str) -> int:
    try:
        with pyodbc.connect(odbc_string, timeout=3) as connection:
            return connection.execute('SELECT count(*) FROM "SensorValues"').fetchone()[0]
    except pyodbc.Error:  # not created yet
        return 0


def _wait_for(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s")


def _run(source: Path, url: str, recovery: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", url,
            "--recovery-dir", str(recovery), "--snapshot-interval-seconds", "0.5", "--progress-seconds", "0",
            "--store-retry-seconds", str(BUDGET_SECONDS), *extra]


def _assert_one_clean_line(stderr: str) -> str:
    assert "panicked" not in stderr and "Box<dyn Any>" not in stderr and "stack backtrace" not in stderr, stderr
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("malformed", [False, True], ids=["windows", "windows-and-dead-letters"])
def test_a_store_down_longer_than_the_budget_ends_with_exit_1_and_a_rerun_writes_the_reference(
    tmp_path: Path, postgres_odbc, postgres_server, malformed, processes
):
    # Only the writer process writes, dead letters too (with the windows): the outage meets it there either way.
    source = _recording(tmp_path / "rec", malformed)
    reference = tmp_path / "reference.db"
    run_flow(source, reference)
    expected = windows_frame(reference)
    url = f"postgresql+odbc:{postgres_odbc}"
    database = _database(postgres_odbc)
    recovery = tmp_path / "recovery"
    admin = pyodbc.connect(postgres_server.odbc("postgres"), autocommit=True)
    run = processes.start(_run(source, url, recovery, "--replay-speed", "30"), cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: run.poll() is not None or _rows(postgres_odbc) > 0, 120, "the first committed windows")
        assert run.poll() is None, "the run ended before the outage"
        started = time.monotonic()
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')  # an identifier: not a parameter
        # The outage lasts until the run gives up: terminate every connection it opens meanwhile.
        while run.poll() is None and time.monotonic() - started < 120:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()",
                          database).fetchall()
            time.sleep(0.05)
        stdout, stderr = run.communicate(timeout=60)
        gave_up_after = time.monotonic() - started
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
    print(f"gave up {gave_up_after:.1f} s into the outage; stderr:\n{stderr}")
    assert run.returncode == 1, stderr  # not 134 (SIGABRT)
    last = _assert_one_clean_line(stderr)
    assert last.startswith("sensorflow run: StoreError: "), last
    assert "[08001]" in last or "[57P01]" in last, last
    assert any(what in last for what in ("upsert windows", "upsert dead letters")), last
    assert f"store_retry_seconds {BUDGET_SECONDS:g}" in last, last
    assert gave_up_after < BUDGET_SECONDS + 30

    rerun = subprocess.run(_run(source, url, recovery), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_windows(pg_windows(postgres_odbc), expected)
    with pyodbc.connect(postgres_odbc, timeout=3) as connection:  # none lost, none twice
        stored = connection.execute('SELECT count(*) FROM "DeadLetters"').fetchone()[0]
    assert stored == len(dead_letters_frame(reference)) == (5 if malformed else 0)


def test_a_database_that_does_not_exist_is_not_retried(tmp_path: Path, postgres_server):
    url = f"postgresql+odbc:{postgres_server.odbc('sf_test_no_such_database')}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(_recording(tmp_path / "rec")), "--store", url,
         "--progress-seconds", "0", "--store-retry-seconds", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    last = _assert_one_clean_line(done.stderr)
    assert last.startswith("sensorflow run: StoreError: connect failed") and "SQLSTATE 3D000: a permanent error, not retried" in last, last
    assert "transient error" not in done.stderr
    assert took < 30  # not the 60 s budget


@pytest.mark.slow
def test_an_outage_of_25_s_is_outlasted_by_the_default_budget(tmp_path: Path, postgres_odbc, postgres_server, processes):
    """Defect 9: the old budget (8 attempts, ~16 s) gave up during a failover-length outage; 120 s does not."""
    source = _recording(tmp_path / "rec")
    reference = tmp_path / "reference.db"
    run_flow(source, reference)
    url = f"postgresql+odbc:{postgres_odbc}"
    database = _database(postgres_odbc)
    admin = pyodbc.connect(postgres_server.odbc("postgres"), autocommit=True)
    command = [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", url,
               "--progress-seconds", "0", "--replay-speed", "20"]  # the default store_retry_seconds
    run = processes.start(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: run.poll() is not None or _rows(postgres_odbc) > 0, 120, "the first committed windows")
        assert run.poll() is None, "the run ended before the outage"
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        outage_ends = time.monotonic() + 25
        while time.monotonic() < outage_ends:  # the outage: every connection is cut, none can be opened
            assert run.poll() is None, run.communicate()[1]
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()",
                          database).fetchall()
            time.sleep(0.05)
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        _, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
    assert run.returncode == 0, stderr
    assert "transient error" in stderr  # the outage did meet the store
    assert_same_windows(pg_windows(postgres_odbc), windows_frame(reference))


@pytest.mark.slow
def test_a_live_run_whose_store_goes_down_ends_with_exit_1_and_one_line(tmp_path: Path, postgres_odbc, postgres_server,
                                                                        eventhubs_broker, processes):
    import os

    import orjson

    def publish(second: int) -> None:
        ts = f"2026-01-01T00:{second // 60 % 60:02d}:{second % 60:02d}Z"
        for partition in eventhubs_broker.partition_ids:
            eventhubs_broker.publish(partition, [orjson.dumps({"TS": ts, "Device": d, "Tag": 1, "Value": 1.0}) for d in range(5)])

    for second in range(60):
        publish(second)
    url = f"postgresql+odbc:{postgres_odbc}"
    database = _database(postgres_odbc)
    admin = pyodbc.connect(postgres_server.odbc("postgres"), autocommit=True)
    env = {**os.environ, "SENSORFLOW_EVENTHUB_CONNECTION_STRING": eventhubs_broker.connection_string}
    run = processes.start(
        [sys.executable, "-m", "sensorflow", "run", "--source", "eventhubs", "--store", url, "--progress-seconds", "0",
         "--store-retry-seconds", str(BUDGET_SECONDS), "--recovery-dir", str(tmp_path / "recovery")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: run.poll() is not None or _rows(postgres_odbc) > 0, 120, "the first committed windows")
        assert run.poll() is None, run.communicate()[1]
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        started, second = time.monotonic(), 60
        while run.poll() is None and time.monotonic() - started < 120:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()",
                          database).fetchall()
            publish(second)  # events go on: windows close and must be written
            second += 1
            time.sleep(0.1)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
    assert run.returncode == 1, stderr
    last = _assert_one_clean_line(stderr)
    assert last.startswith("sensorflow run: StoreError: ") and ("[08001]" in last or "[57P01]" in last), last

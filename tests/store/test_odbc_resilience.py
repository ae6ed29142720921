"""Transient errors: classified by SQLSTATE / native number, retried whole, survived on a real server.

The PostgreSQL tests cut the store's connection the way a failover or an
administrator does (``pg_terminate_backend`` from a second connection): between
calls, inside a transaction, and throughout a real ``sensorflow run``.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest

from sensorflow.store import odbc, open_store
from sensorflow.store.dialects import POSTGRES, TSQL
from sensorflow.backoff import Backoff
from sensorflow.store.odbc_retry import Diagnostic, RetryPolicy, diagnostics, is_permanent, is_transient, retry
from tests.conftest import (
    REPO,
    dead_letters_frame,
    run_flow,
    seed_message,
    windows_frame,
    write_recording,
)
from tests.store.pg import assert_same_windows, pg_dead_letters, pg_windows
from tests.support.builders import window_table

pyodbc = pytest.importorskip("pyodbc", reason="pyodbc not installed: pip install 'sensorflow[odbc]'")

S = 1_000_000_000
T0 = 1_535_497_200 * S


def error(cls, state: str, text: str):
    return cls(state, text)


# Messages as pyodbc renders them; the first three are verbatim from psqlODBC 13 here.
CASES = [
    (pyodbc.Error, "57P01", "[57P01] FATAL: terminating connection due to administrator command;\nThe connection has been lost (35) (SQLExecDirectW)", True),
    (pyodbc.OperationalError, "08S01", "[08S01] SQLExecDirectW unable due to the connection lost (35) (SQLExecDirectW)", True),
    (pyodbc.OperationalError, "08001", '[08001] connection to server at "127.0.0.1", port 5999 failed: Connection refused (101) (SQLDriverConnect)', True),
    (pyodbc.ProgrammingError, "42P01", '[42P01] ERROR: relation "nosuch" does not exist;\nError while executing the query (1) (SQLExecDirectW)', False),
    (pyodbc.IntegrityError, "23505", "[23505] ERROR: duplicate key value violates unique constraint (1) (SQLExecDirectW)", False),
    (pyodbc.Error, "40P01", "[40P01] ERROR: deadlock detected (1) (SQLExecDirectW)", True),
    (pyodbc.OperationalError, "HYT00", "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Query timeout expired (0) (SQLExecDirectW)", True),
    # SQL Server: the native number decides where the SQLSTATE is generic.
    (pyodbc.ProgrammingError, "42000", "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Database 'x' on server 'y' is not currently available. (40613) (SQLDriverConnect)", True),
    (pyodbc.Error, "HY000", "[HY000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Resource ID : 1. The request limit for the database is 200 and has been reached. (10928) (SQLExecDirectW)", True),
    (pyodbc.Error, "40001", "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 52) was deadlocked on lock resources with another process (1205) (SQLExecDirectW)", True),
    (pyodbc.ProgrammingError, "42000", "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot open database \"x\" requested by the login. (4060) (SQLDriverConnect); [01S00] [Microsoft][ODBC Driver 18 for SQL Server]Invalid connection string attribute (0)", True),
    # Words do not count: a syntax error that talks about deadlocks and timeouts is still a syntax error.
    (pyodbc.ProgrammingError, "42000", "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Incorrect syntax near 'deadlock timeout connection lost (1205)'. (102) (SQLExecDirectW)", False),
    (pyodbc.IntegrityError, "23000", "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of PRIMARY KEY constraint (2627) (SQLExecDirectW)", False),
]


@pytest.mark.parametrize(("cls", "state", "text", "transient"), CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_errors_are_classified_by_state_and_number(cls, state, text, transient):
    assert is_transient(error(cls, state, text), TSQL.transient_natives) is transient


def test_native_numbers_come_from_pyodbcs_record_format():
    two = error(pyodbc.Error, "42000", "[42000] text (4060) (SQLDriverConnect); [01S00] more (0)")
    assert diagnostics(two) == (Diagnostic("42000", 4060), Diagnostic("01S00", 0))
    assert diagnostics(pyodbc.Error("HY000", "no record format here")) == (Diagnostic("HY000", None),)
    # psqlODBC's own numbers mean nothing to SQL Server's list.
    cut = error(pyodbc.Error, "HY000", "[HY000] something (10054) (SQLExecDirectW)")
    assert is_transient(cut, TSQL.transient_natives) and not is_transient(cut, POSTGRES.transient_natives)


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    backoff = Backoff(first=0.1, cap=2.0)
    delays = [backoff.delay(n) for n in range(1, 9)]
    for n, d in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    assert len({round(d / min(2.0, 0.1 * 2**n), 6) for n, d in enumerate(delays)}) > 1  # jittered
    assert delays[4] > delays[0] * 4


def test_retry_recovers_between_attempts_and_stops_at_the_first_permanent_error():
    outcomes = [error(pyodbc.OperationalError, "08S01", "[08S01] lost (35) (X)")] * 2 + ["done"]
    recovered = []

    def action():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    quick = RetryPolicy(budget_seconds=0.5, backoff=Backoff(first=0.001, cap=0.001))
    transient = lambda e: is_transient(e, frozenset())
    assert retry(action, quick, transient, lambda: recovered.append(1), "test") == "done"
    assert recovered == [1, 1]
    permanent = error(pyodbc.ProgrammingError, "42P01", "[42P01] no table (1) (X)")
    outcomes[:] = [permanent, "never"]
    with pytest.raises(pyodbc.ProgrammingError):
        retry(action, quick, transient, lambda: recovered.append(2), "test")
    assert recovered == [1, 1] and outcomes == ["never"]


def test_transient_errors_are_retried_for_the_budget_not_a_count():
    lost = error(pyodbc.OperationalError, "08S01", "[08S01] lost (35) (X)")
    calls = []

    def action():
        calls.append(time.monotonic())
        raise lost

    policy = RetryPolicy(budget_seconds=0.6, backoff=Backoff(first=0.05, cap=0.1))
    with pytest.raises(pyodbc.OperationalError):
        retry(action, policy, lambda e: is_transient(e, frozenset()), lambda: None, "test")
    assert calls[-1] - calls[0] <= 0.6  # no wait ends past the budget
    assert calls[-1] - calls[0] >= 0.6 - 0.1 - 0.05  # ... and the budget is used: the last wait would have crossed it
    assert len(calls) >= 6


PERMANENT = [
    ("3D000", "[3D000] FATAL: database \"nosuch\" does not exist (1) (SQLExecDirectW)"),
    ("28P01", "[28P01] FATAL: password authentication failed for user \"u\" (1) (SQLDriverConnect)"),
    ("28000", "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'u'. (18456) (SQLDriverConnect)"),
    ("42501", "[42501] ERROR: permission denied for table SensorValues (1) (SQLExecDirectW)"),
    ("42000", "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The INSERT permission was denied on the object 'SensorValues'. (229) (SQLExecDirectW)"),
    # Permanent wins over a transient-looking state in another record of the same error.
    ("08001", "[08001] could not connect (4060) (SQLDriverConnect); [28000] Login failed for user 'u'. (18456)"),
]


@pytest.mark.parametrize(("state", "text"), PERMANENT, ids=[f"{p[0]}-{i}" for i, p in enumerate(PERMANENT)])
def test_permanent_errors_are_never_retried(state, text):
    failure = error(pyodbc.Error, state, text)
    assert is_permanent(failure)
    assert not is_transient(failure, TSQL.transient_natives)
    assert not is_transient(failure, POSTGRES.transient_natives)


# -- a real server cutting connections ----------------------------------------


def _windows(n: int, value: float, start: int = 0) -> pa.Table:
    return window_table([T0 + (start + i) * S for i in range(n)], "d", "t", value, 1, value, value)


def _terminate(admin, database: str, states: tuple[str, ...] = ("active", "idle", "idle in transaction")) -> int:
    """Terminate the other backends connected to ``database`` in one of ``states``; how many."""
    marks = ", ".join("?" for _ in states)
    rows = admin.execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid() AND state IN ({marks})",
        database, *states,
    ).fetchall()
    return sum(1 for (done,) in rows if done)


def _database(odbc_string: str) -> str:
    return next(part.split("=", 1)[1] for part in odbc_string.split(";") if part.startswith("Database="))


@pytest.fixture
def admin(postgres_server):
    with pyodbc.connect(postgres_server.odbc("postgres"), autocommit=True) as connection:
        yield connection


def test_a_dropped_connection_is_reopened(postgres_odbc, admin, caplog):
    with open_store(f"postgresql+odbc:{postgres_odbc}") as store:
        store.create_schema()
        store.upsert_windows(_windows(10, 1.0))
        assert _terminate(admin, _database(postgres_odbc)) == 1
        with caplog.at_level(logging.WARNING, logger="sensorflow.store.odbc_retry"):
            store.upsert_windows(_windows(10, 2.0, start=5))
        assert any("transient error" in r.getMessage() for r in caplog.records)
        got = store.read_windows([("d", "t")], T0 - S, T0 + 60 * S)
        assert got["value"].to_pylist() == [1.0] * 5 + [2.0] * 10


def test_a_lost_connection_reported_with_a_generic_state_is_still_transient(postgres_odbc, admin):
    """psqlODBC reports a connection lost inside a transaction as HY000; the store asks the connection."""
    generic = pyodbc.Error("HY000", "[HY000] internal SAVEPOINT failed (8) (SQLExecDirectW)")  # verbatim from psqlODBC
    with open_store(f"postgresql+odbc:{postgres_odbc}") as store:
        assert not store._transient(generic)  # the connection is fine: a real HY000 is not retried
        assert _terminate(admin, _database(postgres_odbc)) == 1
        assert store._transient(generic)


def test_a_batch_cut_off_mid_transaction_is_retried_whole(postgres_odbc, admin, monkeypatch, caplog):
    """The store's transaction waits on a row lock after writing some chunks; its backend is terminated there."""
    monkeypatch.setattr(odbc, "ROWS_PER_PARAMETER", 100)
    url = f"postgresql+odbc:{postgres_odbc}"
    database = _database(postgres_odbc)
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(_windows(1, 0.0, start=250))  # the row the blocker will lock: in the third chunk
    blocker = pyodbc.connect(postgres_odbc, autocommit=False)
    blocker.execute('SELECT 1 FROM "SensorValues" FOR UPDATE').fetchall()
    store = open_store(url)
    with caplog.at_level(logging.WARNING, logger="sensorflow.store.odbc_retry"), ThreadPoolExecutor(1) as pool:
        writing = pool.submit(store.upsert_windows, _windows(300, 7.0))
        waiting = _wait_for(lambda: _terminate(admin, database, ("active",)) if _lock_waiters(admin, database) else 0)
        blocker.rollback()
        blocker.close()
        assert writing.result(timeout=60) == 300  # raises here if the write failed
    store.close()
    assert waiting == 1
    assert any("57P01" in r.getMessage() or "08S01" in r.getMessage() for r in caplog.records)
    with open_store(url) as check:
        got = check.read_windows([("d", "t")], T0 - S, T0 + 400 * S)
    assert got["value"].to_pylist() == [7.0] * 300
    assert got["ts"].to_pylist() == [T0 + i * S for i in range(300)]


def _lock_waiters(admin, database: str) -> int:
    (n,) = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = ? AND wait_event_type = 'Lock'", database
    ).fetchone()
    return n


def _wait_for(probe, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def _recording(directory: Path) -> Path:
    """Ten minutes of 200 sensors at 1 Hz on 3 partitions, with some late and malformed messages."""
    rng = random.Random(11)
    partitions: dict[str, list[bytes]] = {"0": [], "1": [], "2": []}
    for second in range(600):
        for device in range(50):
            for tag in range(4):
                ts = f"2018-08-28T23:{second // 60:02d}:{second % 60:02d}.{rng.randrange(1000):03d}Z"
                partitions[str(device % 3)].append(seed_message(ts, device, tag, round(rng.gauss(50, 10), 2)))
        if second % 97 == 0:
            partitions["1"].append(b"{not json")
            partitions["2"].append(seed_message("2018-08-28T22:00:00Z", 1, 1, 1.0))  # late
    return write_recording(directory, partitions)


@pytest.mark.slow
def test_a_run_whose_connections_are_cut_writes_the_same_tables(tmp_path: Path, postgres_odbc, admin):
    source = _recording(tmp_path / "rec")
    reference = tmp_path / "reference.db"
    run_flow(source, reference)
    expected = windows_frame(reference)
    assert len(expected) == 200 * 120

    database = _database(postgres_odbc)
    run = subprocess.Popen(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"postgresql+odbc:{postgres_odbc}",
         "--replay-speed", "60", "--progress-seconds", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    cut = 0
    # Cut connections mid-transaction (a statement running or a transaction open), a few times.
    while run.poll() is None and cut < 4:
        killed = _terminate(admin, database, ("active", "idle in transaction"))
        cut += killed
        time.sleep(1.0 if killed else 0.01)
    stdout, stderr = run.communicate(timeout=240)
    print(f"cut {cut} connections mid-transaction; the run's stderr:\n{stderr}")
    assert run.returncode == 0, stderr
    assert cut >= 2, "the run ended before its connections could be cut"
    assert "transient error" in stderr  # the store's retry log: the cuts hit a store call
    assert_same_windows(pg_windows(postgres_odbc), expected)
    assert len(pg_dead_letters(postgres_odbc)) == len(dead_letters_frame(reference)) > 0
    assert f"{len(expected):,} window rows, 200 sensors" in stdout

"""A wrong password is a permanent error, not retried for the whole budget (issue 16, defect 9).

psqlODBC reports every failed login as SQLSTATE 08001, the state of an unreachable server; the
store's pre-login probe proves the password with SCRAM-SHA-256 (PostgreSQL's default) and learns
the server's own 28P01. The test starts its own PostgreSQL with password authentication (the
shared server trusts every login), on a free port, and stops it at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sensorflow.store import StoreError, open_store
from sensorflow.store.odbc_connect import parse_store_url, postgres_login_state
from sensorflow.store.odbc_retry import RetryPolicy
from tests.support.azurite import free_port

PASSWORD = "right-horse-battery"


def _odbc(port: int, password: str, database: str = "postgres") -> str:
    return (f"postgresql+odbc:Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={port};Database={database};"
            f"Uid=postgres;Pwd={password}")


@pytest.fixture(scope="module")
def scram_server():
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        pytest.fail("no PostgreSQL server binaries (apt-get install postgresql) to start a password-checking server")
    bin_dir = binaries[-1]
    data = Path(tempfile.mkdtemp(prefix="sensorflow-pgscram-"))  # in /tmp: the postgres user cannot enter pytest's root-only dirs
    secret = data / "pw"
    secret.write_text(PASSWORD + "\n")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        shutil.chown(secret, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, f"{bin_dir}/initdb", "-D", str(data / "db"), "-U", "postgres", "--auth-host=scram-sha-256",
                    "--auth-local=trust", f"--pwfile={secret}"], check=True, capture_output=True, timeout=120)
    port = free_port()
    server = subprocess.Popen([*run_as, f"{bin_dir}/postgres", "-D", str(data / "db"), "-p", str(port), "-h", "127.0.0.1",
                               "-k", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = parse_store_url(_odbc(port, PASSWORD))
        deadline = time.monotonic() + 60
        while postgres_login_state(target, timeout=1.0) == "57P03" or not _accepting(port):
            assert server.poll() is None and time.monotonic() < deadline, "the password-checking PostgreSQL did not start"
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def _accepting(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def test_the_probe_proves_the_password_with_scram(scram_server):
    assert postgres_login_state(parse_store_url(_odbc(scram_server, "wrong"))) == "28P01"
    assert postgres_login_state(parse_store_url(_odbc(scram_server, PASSWORD))) is None  # let in
    assert postgres_login_state(parse_store_url(_odbc(scram_server, PASSWORD, "nosuch_db"))) == "3D000"


def test_a_wrong_password_is_refused_at_once_and_the_right_one_works(scram_server):
    started = time.monotonic()
    with pytest.raises(StoreError, match="28P01") as refused:
        with open_store(_odbc(scram_server, "wrong"), RetryPolicy(budget_seconds=60)) as store:
            store.create_schema()
    assert time.monotonic() - started < 30, "retried as if transient"  # not the 60 s budget
    assert "wrong" not in str(refused.value) and PASSWORD not in str(refused.value)  # no secret in the message
    with open_store(_odbc(scram_server, PASSWORD), RetryPolicy(budget_seconds=60)) as store:
        store.create_schema()
        assert store.summary().windows == 0

"""A real PostgreSQL server reached over ODBC (psqlODBC), one fresh database per use.

Uses the server on 127.0.0.1:5432 (trust auth) when there is one; otherwise
starts a throwaway cluster from the installed binaries on a free port. Skips
with the reason when neither pyodbc/psqlODBC nor a server can be had (CI,
where a skip fails, installs them first: .ci/test-deps.sh).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import pytest

from tests.support.azurite import free_port

__all__ = ["PostgresServer", "postgres_odbc", "postgres_server"]

_DRIVER = "PostgreSQL Unicode"


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    databases: list[str] = field(default_factory=list)

    def odbc(self, database: str) -> str:
        """An ODBC connection string for ``database`` (no password: trust auth)."""
        return f"Driver={{{_DRIVER}}};Server={self.host};Port={self.port};Database={database};Uid={self.user};"

    def new_database(self) -> str:
        """Create an empty database; returns its ODBC connection string."""
        name = f"sf_test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')  # an identifier: cannot be a bound parameter
        self.databases.append(name)
        return self.odbc(name)

    def drop_all(self) -> None:
        for name in self.databases:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.clear()

    def _admin(self, statement: str) -> None:
        import pyodbc

        with pyodbc.connect(self.odbc("postgres"), autocommit=True, timeout=10) as connection:
            connection.execute(statement)


def _reachable(server: PostgresServer) -> bool:
    import pyodbc

    try:
        with pyodbc.connect(server.odbc("postgres"), autocommit=True, timeout=3) as connection:
            connection.execute("SELECT 1").fetchone()
        return True
    except pyodbc.Error:
        return False


def _start_cluster(tmp_path_factory) -> tuple[PostgresServer, subprocess.Popen] | None:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        return None
    bin_dir = binaries[-1]
    data = tmp_path_factory.mktemp("pgdata")
    user = "postgres"
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, f"{bin_dir}/initdb", "-D", str(data), "-U", user, "-A", "trust"],
                   check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(
        [*run_as, f"{bin_dir}/postgres", "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = PostgresServer("127.0.0.1", port, user)
    deadline = time.monotonic() + 30
    while not _reachable(server):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            return None
        time.sleep(0.2)
    return server, process


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    try:
        import pyodbc
    except ImportError:
        pytest.skip("pyodbc not installed: pip install 'sensorflow[odbc]'")
    if _DRIVER not in pyodbc.drivers():
        pytest.skip(f"ODBC driver {_DRIVER!r} not installed: apt-get install unixodbc odbc-postgresql")
    server = PostgresServer("127.0.0.1", 5432, "postgres")
    process = None
    if not _reachable(server):
        started = _start_cluster(tmp_path_factory)
        if started is None:
            pytest.skip("no PostgreSQL on 127.0.0.1:5432 and no server binaries to start one (apt-get install postgresql)")
        server, process = started
    yield server
    server.drop_all()
    if process is not None:
        process.terminate()
        process.wait(30)


@pytest.fixture
def postgres_odbc(postgres_server) -> str:
    """A fresh, empty database on the test server: its ODBC connection string."""
    return postgres_server.new_database()

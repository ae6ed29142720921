"""The server store over ODBC: Azure SQL / SQL Server (T-SQL) and PostgreSQL.

One Python code path for both; the statements differ only where the
dialects do (sensorflow/store/dialects.py, odbc_sql.py; tables in schema.py, docs/store.md). Each call is one
transaction on one connection: a write sends its rows as JSON parameters
(several for a large batch, all in the same transaction) that the server
expands into one upsert statement each. A transient error (lost
connection, timeout, deadlock, Azure SQL throttling or failover; see
odbc_retry.py) rolls the transaction back, drops the connection, and
retries the whole call with backoff, for at most the retry policy's budget
(``store_retry_seconds``); a permanent one (no such database, bad
credentials, no permission) is not retried. A batch is committed whole or retried
whole. That is safe even when the commit itself was cut off, because every
write is an idempotent upsert.

Not thread-safe: one store per thread (each holds its own connection).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
import pyarrow as pa

from sensorflow.records.predictions import PREDICTION_SCHEMA, incidents_from_rows
from sensorflow.records.runs import RunRecord
from sensorflow.records.windows import WINDOW_READ_SCHEMA
from sensorflow.store.base import Store, StoreError, StoreSummary, WindowTransaction, incidents_to_write, last_per_key
from sensorflow.store.dialects import POSTGRES, Statement
from sensorflow.store.odbc_connect import connect, default_credential, import_pyodbc, parse_store_url, postgres_login_state
from sensorflow.store.odbc_retry import RetryPolicy, diagnostics, is_permanent, is_permanent_state, is_transient, retry
from sensorflow.store.odbc_rows import from_ns, json_rows, ms_text, rows_to_table, to_ns
from sensorflow.store.odbc_sql import statements
from sensorflow.store.schema import (
    DEAD_LETTERS,
    INCIDENT_CUTOFFS,
    INCIDENTS,
    LEASES,
    PREDICTIONS,
    RUNS,
    SENSOR_VALUES,
    SENSOR_WRITES,
    STORE_SETTINGS,
)

__all__ = ["OdbcStore"]

T = TypeVar("T")

ROWS_PER_PARAMETER = 20_000
"""Rows per JSON parameter: big enough to amortize a round trip, small enough to keep the text ~2 MB."""
FETCH_ROWS = 50_000
DEFAULT_RETRY = RetryPolicy()

_WINDOW_COLUMNS = {"TS": "window_end", "Device": "device", "Tag": "tag", "Value": "value", "Count": "count", "Min": "min", "Max": "max"}
_DEAD_LETTER_COLUMNS = {
    "Partition": "partition", "Position": "position", "Element": "element", "Reason": "reason", "Payload": "payload",
    "TS": "ts", "Device": "device", "Tag": "tag", "Value": "value",
}
_INCIDENT_COLUMNS = {
    "Device": "device", "Tag": "tag", "Detector": "detector", "Start": "start", "End": "end", "PeakScore": "peak_score",
    "FlaggedWindows": "flagged_windows", "Open": "open", "UpdatedAt": "updated_at",
}
_PREDICTION_COLUMNS = {
    "TS": "ts", "Device": "device", "Tag": "tag", "Value": "value", "Score": "score", "IsAnomaly": "is_anomaly",
    "Detector": "detector", "ModelVersion": "model_version",
}


_Write = tuple[Statement, Any, pa.Table, dict[str, str]]  # statement, table spec, rows, SQL column -> Arrow column


class OdbcStore(Store):
    """``mssql+odbc:...`` or ``postgresql+odbc:...`` (see odbc_connect for the URL forms).

    Connects at construction, so a bad URL, a missing driver or refused
    credentials fail here with a StoreError.
    """

    def __init__(self, url: str, retry_policy: RetryPolicy | None = None, login_timeout: int = 30):
        self.url = url
        self._target = parse_store_url(url)
        self._dialect = self._target.dialect
        self._sql = statements(self._dialect)
        self._pyodbc = import_pyodbc()
        self._credential = default_credential() if self._target.azure_ad_token else None
        self._policy = retry_policy or DEFAULT_RETRY
        self._login_timeout = login_timeout
        self._connection: Any = None
        self._refused: str | None = None  # the SQLSTATE the server refused the last login with, if known
        self._transaction("connect", lambda cursor: None)

    # -- writes ----------------------------------------------------------------

    def create_schema(self) -> None:
        def work(cursor: Any) -> None:
            for statement in self._sql.schema:
                self._execute(cursor, statement)

        self._transaction("create schema", work)

    def upsert_windows(self, windows: pa.Table) -> int:
        if windows.num_rows == 0:
            return 0
        self._upsert("upsert windows", self._window_writes(windows))
        return windows.num_rows

    def upsert_dead_letters(self, dead_letters: pa.Table) -> int:
        if dead_letters.num_rows == 0:
            return 0
        self._upsert("upsert dead letters", self._dead_letter_writes(dead_letters))
        return dead_letters.num_rows

    def window_transaction(self) -> WindowTransaction:
        return _OdbcWindowTransaction(self)

    def _window_writes(self, windows: pa.Table) -> list[_Write]:
        rows = last_per_key(windows, ["device", "tag", "window_end"])  # key order also keeps index writes local
        sensors = rows.select(["device", "tag"]).group_by(["device", "tag"]).aggregate([])
        return [
            (self._sql.upsert_windows, SENSOR_VALUES, rows, _WINDOW_COLUMNS),
            (self._sql.upsert_sensor_writes, SENSOR_WRITES, sensors, {"Device": "device", "Tag": "tag"}),
        ]

    def _dead_letter_writes(self, dead_letters: pa.Table) -> list[_Write]:
        rows = last_per_key(dead_letters, ["partition", "position", "element"])
        return [(self._sql.upsert_dead_letters, DEAD_LETTERS, rows, _DEAD_LETTER_COLUMNS)]

    def upsert_predictions(self, predictions: pa.Table) -> int:
        if predictions.num_rows == 0:
            return 0
        self._upsert("upsert predictions", self._prediction_writes(predictions))
        return predictions.num_rows

    def _prediction_writes(self, predictions: pa.Table) -> list[_Write]:
        if predictions.num_rows == 0:
            return []
        rows = last_per_key(predictions, ["device", "tag", "ts", "detector"])
        return [(self._sql.upsert_predictions, PREDICTIONS, rows, _PREDICTION_COLUMNS)]

    def replace_incidents(self, detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table) -> int:
        rows = incidents_to_write(detector, since_ns, incidents)
        self._transaction("replace incidents", self._incident_work(detector, since_ns, rows))
        return rows.num_rows

    def upsert_scores(
        self, predictions: pa.Table, detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table,
    ) -> tuple[int, int]:
        rows = incidents_to_write(detector, since_ns, incidents)
        writes = self._prediction_writes(predictions)
        replace = self._incident_work(detector, since_ns, rows)
        if not (writes or since_ns or rows.num_rows):
            return 0, 0

        def work(cursor: Any) -> None:
            replace(cursor)
            if writes:
                self._write_rows(cursor, writes, self._clock(cursor))

        self._transaction("upsert predictions and incidents", work)
        return predictions.num_rows, rows.num_rows

    def _incident_work(self, detector: str, since_ns: dict[tuple[str, str], int], rows: pa.Table) -> Callable[[Any], None]:
        """``replace_incidents``' statements for an open transaction: the cutoffs' deletes, then the rows' upserts."""
        sensors = list(since_ns.items())
        cutoffs = pa.table({
            "Device": pa.array([d for (d, _), _ in sensors], pa.string()),
            "Tag": pa.array([t for (_, t), _ in sensors], pa.string()),
            "Since": pa.array([ns for _, ns in sensors], pa.int64()),
        })

        def work(cursor: Any) -> None:
            for chunk in cutoffs.to_batches(max_chunksize=ROWS_PER_PARAMETER):
                columns = {name: chunk.column(name) for name in chunk.schema.names}
                self._execute(cursor, self._sql.delete_incidents_since, detector=detector,
                              cutoffs=json_rows(INCIDENT_CUTOFFS, columns, self._dialect))
            for chunk in rows.to_batches(max_chunksize=ROWS_PER_PARAMETER):
                columns = {sql_name: chunk.column(arrow_name) for sql_name, arrow_name in _INCIDENT_COLUMNS.items()}
                self._execute(cursor, self._sql.upsert_incidents, rows=json_rows(INCIDENTS, columns, self._dialect))

        return work

    def record_settings(self, values: dict[str, str], replace: bool = False) -> dict[str, str]:
        rows = {"Name": pa.array(list(values), pa.string()), "Value": pa.array(list(values.values()), pa.string())}

        def work(cursor: Any) -> dict[str, str]:
            statement = self._sql.replace_settings if replace else self._sql.record_settings
            self._execute(cursor, statement, rows=json_rows(STORE_SETTINGS, rows, self._dialect))
            return dict(self._execute(cursor, self._sql.read_settings).fetchall())

        return self._transaction("record store settings", work)

    def upsert_run(self, run: RunRecord) -> None:
        columns = {
            "RunId": [run.run_id], "Kind": [run.kind], "Status": [run.status], "StartedAt": [run.started_at],
            "FinishedAt": [run.finished_at], "RangeFrom": [run.range_from], "RangeTo": [run.range_to],
            "Sensors": [run.sensors], "Tasks": [run.tasks], "Failures": [run.failures], "Detail": [run.detail],
        }
        row = pa.table({name: pa.array(values, pa.int64() if RUNS.column(name).kind == "ts" else None) for name, values in columns.items()})
        self._upsert("upsert run", [(self._sql.upsert_run, RUNS, row, {name: name for name in columns})])

    def try_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        def work(cursor: Any) -> bool:
            now = self._clock(cursor)
            expires = to_ns(now + timedelta(seconds=ttl_seconds))
            lease = {"Name": pa.array([name]), "Owner": pa.array([owner]), "ExpiresAt": pa.array([expires], pa.int64())}
            self._execute(cursor, self._sql.take_lease, rows=json_rows(LEASES, lease, self._dialect), now=now)
            holder = self._execute(cursor, self._sql.lease_holder, name=name).fetchone()
            return holder is not None and holder[0] == owner

        return self._transaction("take lease", work)

    def release_lease(self, name: str, owner: str) -> None:
        self._transaction("release lease", lambda cursor: self._execute(cursor, self._sql.release_lease, name=name, owner=owner))

    # -- reads -----------------------------------------------------------------

    def read_windows(self, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
        return self._read_for_sensors("read windows", self._sql.read_windows, WINDOW_READ_SCHEMA, sensors, ts_from, ts_to)

    def read_predictions(self, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
        return self._read_for_sensors(
            "read predictions", self._sql.read_predictions, PREDICTION_SCHEMA, sensors, ts_from, ts_to
        )

    def sensors_written_since(self, since_ns: int) -> list[tuple[str, str]]:
        def work(cursor: Any) -> list[tuple[str, str]]:
            self._execute(cursor, self._sql.sensors_written_since, since=from_ns(since_ns))
            return [(device, tag) for rows in _fetch(cursor) for device, tag in rows]

        return self._transaction("read sensors written since", work)

    def window_bounds(self, sensors: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        wanted = orjson.dumps([{"Device": d, "Tag": t} for d, t in dict.fromkeys(sensors)]).decode()

        def work(cursor: Any) -> dict[tuple[str, str], tuple[int, int]]:
            self._execute(cursor, self._sql.window_bounds, sensors=wanted)
            return {
                (device, tag): (to_ns(first), to_ns(last))
                for rows in _fetch(cursor) for device, tag, first, last in rows if first is not None
            }

        return self._transaction("read window bounds", work)

    def read_incidents(
        self,
        since_ns: int | None = None,
        open_only: bool = False,
        detector: str | None = None,
        sensors: list[tuple[str, str]] | None = None,
    ) -> pa.Table:
        wanted = orjson.dumps([{"Device": d, "Tag": t} for d, t in dict.fromkeys(sensors or [])]).decode()

        def work(cursor: Any) -> list[tuple]:
            self._execute(
                cursor, self._sql.read_incidents, since=None if since_ns is None else from_ns(since_ns),
                open_only=int(open_only), detector=detector, any_sensor=int(sensors is None), sensors=wanted,
            )
            return [row for rows in _fetch(cursor) for row in rows]

        rows = self._transaction("read incidents", work)
        return incidents_from_rows(rows, _ns_array)

    def read_settings(self) -> dict[str, str]:
        return self._transaction(
            "read store settings", lambda cursor: dict(self._execute(cursor, self._sql.read_settings).fetchall())
        )

    def database_time(self) -> int:
        return to_ns(self._transaction("read the database clock", self._clock))

    def read_runs(self, kind: str | None = None, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        def work(cursor: Any) -> list[tuple]:
            self._execute(cursor, self._sql.read_runs, kind=kind, status=status, limit=limit)
            return cursor.fetchall()

        return [
            RunRecord(
                run_id, kind_, status_, to_ns(started), _opt_ns(finished), _opt_ns(range_from), _opt_ns(range_to),
                sensors, tasks, failures, detail,
            )
            for run_id, kind_, status_, started, finished, range_from, range_to, sensors, tasks, failures, detail
            in self._transaction("read runs", work)
        ]

    def summary(self) -> StoreSummary:
        def work(cursor: Any) -> StoreSummary:
            windows, first, last = self._execute(cursor, self._sql.window_span).fetchone()
            (sensors,) = self._execute(cursor, self._sql.sensor_count).fetchone()
            dead = self._execute(cursor, self._sql.dead_letter_reasons).fetchall()
            first_text = None if first is None else ms_text(first)
            last_text = None if last is None else ms_text(last)
            return StoreSummary(int(windows), int(sensors), first_text, last_text, {code: int(n) for code, n in dead})

        return self._transaction("summarize the store", work)

    def close(self) -> None:
        self._drop_connection()

    # -- machinery -------------------------------------------------------------

    def _read_for_sensors(
        self, what: str, statement: Statement, schema: pa.Schema, sensors: list[tuple[str, str]], ts_from: int, ts_to: int
    ) -> pa.Table:
        wanted = orjson.dumps([{"Device": d, "Tag": t} for d, t in dict.fromkeys(sensors)]).decode()

        def work(cursor: Any) -> pa.Table:
            self._execute(cursor, statement, sensors=wanted, ts_from=from_ns(ts_from), ts_to=from_ns(ts_to))
            return rows_to_table(_fetch(cursor), schema)

        return self._transaction(what, work)

    def _upsert(self, what: str, writes: list[_Write]) -> None:
        """Each (statement, table spec, rows, SQL column -> Arrow column) in one transaction, in chunks."""

        self._transaction(what, lambda cursor: self._write_rows(cursor, writes, self._clock(cursor)))

    def _write_rows(self, cursor: Any, writes: list[_Write], now: datetime) -> None:
        """Each write's rows in chunks of JSON parameters, in the open transaction; ``now`` their WrittenAt."""
        for statement, spec, rows, names in writes:
            for chunk in rows.to_batches(max_chunksize=ROWS_PER_PARAMETER):
                columns = {sql_name: chunk.column(arrow_name) for sql_name, arrow_name in names.items()}
                self._execute(cursor, statement, rows=json_rows(spec, columns, self._dialect), now=now)

    def _clock(self, cursor: Any) -> datetime:
        return self._execute(cursor, self._sql.clock).fetchone()[0]

    def _execute(self, cursor: Any, statement: Statement, **values: object) -> Any:
        return cursor.execute(statement.sql, statement.bind(values))

    def _transaction(self, what: str, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` in one transaction, committed; the whole of it retried on transient errors."""

        def attempt() -> T:
            if self._connection is None:
                self._connection = connect(self._target, self._credential, self._login_timeout)
            cursor = self._connection.cursor()
            try:
                result = work(cursor)
                self._connection.commit()
                return result
            except BaseException:
                with contextlib.suppress(self._pyodbc.Error):
                    self._connection.rollback()
                raise
            finally:
                with contextlib.suppress(self._pyodbc.Error):
                    cursor.close()

        started, attempts = time.monotonic(), 0
        self._refused = None

        def counted() -> T:
            nonlocal attempts
            attempts += 1
            return attempt()

        try:
            return retry(counted, self._policy, self._transient, self._drop_connection, f"{self._dialect.name} store: {what}")
        except self._pyodbc.Error as e:
            if self._refused is not None:
                tried = f"the server refused the login with SQLSTATE {self._refused}: a permanent error, not retried"
            elif attempts > 1:
                tried = f"gave up after {attempts} attempts in {time.monotonic() - started:.0f} s, store_retry_seconds {self._policy.budget_seconds:g}"
            else:
                tried = "a permanent error, not retried" if is_permanent(e) else "not retried"
            raise StoreError(
                f"{what} failed ({self._dialect.name} store at {self._target.describe()}; {tried}): {_first_line(e)}"
            ) from e

    def _transient(self, error: BaseException) -> bool:
        """A transient error by its codes, or any error that left the connection dead."""
        if not isinstance(error, self._pyodbc.Error):
            return False
        if is_transient(error, self._dialect.transient_natives):
            return not self._login_refused(error)
        # A driver may report a lost connection with a generic state (psqlODBC with per-statement
        # rollback: HY000 "SAVEPOINT failed"). Ask the connection itself: a probe that fails
        # with a connection error means this error was a lost connection too.
        return self._connection is not None and not self._alive()

    def _login_refused(self, error: BaseException) -> bool:
        """psqlODBC reports any failed login as 08001: ask the server whether it refused this one for good."""
        if self._connection is not None or self._dialect is not POSTGRES:
            return False
        if not any(record.sqlstate == "08001" for record in diagnostics(error)):
            return False
        state = postgres_login_state(self._target)
        if state is not None and is_permanent_state(state):
            self._refused = state
            return True
        return False

    def _alive(self) -> bool:
        try:
            cursor = self._connection.cursor()
            try:
                self._execute(cursor, self._sql.clock).fetchone()
            finally:
                with contextlib.suppress(self._pyodbc.Error):
                    self._connection.rollback()
                with contextlib.suppress(self._pyodbc.Error):
                    cursor.close()
        except self._pyodbc.Error as probe:
            return not is_transient(probe, self._dialect.transient_natives)
        return True

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(self._pyodbc.Error):
                connection.close()


def _fetch(cursor: Any) -> Iterator[list[tuple]]:
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield rows


def _ns_array(values: list[datetime]) -> pa.Array:
    return pa.array(values, pa.timestamp("us")).cast(pa.timestamp("ns")).cast(pa.int64())


def _opt_ns(value: datetime | None) -> int | None:
    return None if value is None else to_ns(value)


def _first_line(error: BaseException) -> str:
    """The driver's first line, which pyodbc starts with ``[SQLSTATE]``."""
    if len(error.args) > 1 and str(error.args[1]).strip():
        return str(error.args[1]).strip().splitlines()[0]
    return f"[{diagnostics(error)[0].sqlstate}] {type(error).__name__}"


class _OdbcWindowTransaction(WindowTransaction):
    """Gathers like the default and commits the windows and the dead letters in one server transaction."""

    def __init__(self, store: OdbcStore):
        super().__init__(store)
        self._odbc = store

    def _write(self, windows: pa.Table | None, dead_letters: pa.Table | None) -> None:
        writes = self._odbc._window_writes(windows) if windows is not None else []
        if dead_letters is not None:
            writes += self._odbc._dead_letter_writes(dead_letters)
        what = " and ".join(name for name, table in (("windows", windows), ("dead letters", dead_letters)) if table is not None)
        if writes:
            self._odbc._upsert(f"upsert {what}", writes)

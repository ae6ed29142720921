"""The embedded default store: one SQLite file in WAL mode (tables: schema.py, docs/store.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.predictions import PREDICTION_SCHEMA, incidents_from_rows
from sensorflow.records.runs import RunRecord
from sensorflow.records.timeparse import format_ms, parse_time_array
from sensorflow.records.windows import WINDOW_READ_SCHEMA
from sensorflow.store.base import (
    Store,
    StoreError,
    StoreSummary,
    WindowTransaction,
    incidents_to_write,
    last_of_runs,
    last_per_key,
)
from sensorflow.store.dialects import SQLITE
from sensorflow.store.schema import TABLES
from sensorflow.store.sqlite_columns import PredictionStatements, ts_ns_column

__all__ = ["SqliteStore"]

# The tables' DDL is rendered from the one schema (schema.py says why SQLite's layout and
# indexes differ from the servers'); the statements below are hand-tuned for SQLite.
_SCHEMA = SQLITE.schema(TABLES)

_ROWS_PER_CHUNK = 16_384
_NOW = "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"

_UPSERT_WINDOWS = """
INSERT INTO SensorValues (TS, Device, Tag, Value, Count, Min, Max, WrittenAt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (Device, Tag, TS) DO UPDATE SET
    Value = excluded.Value, Count = excluded.Count, Min = excluded.Min,
    Max = excluded.Max, WrittenAt = excluded.WrittenAt"""

_UPSERT_SENSOR_WRITES = """
INSERT INTO SensorWrites (Device, Tag, WrittenAt) VALUES (?, ?, ?)
ON CONFLICT (Device, Tag) DO UPDATE SET WrittenAt = excluded.WrittenAt"""

_UPSERT_DEAD = """
INSERT INTO DeadLetters (Partition, Position, Element, Reason, Payload, TS, Device, Tag, Value, WrittenAt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (Partition, Position, Element) DO UPDATE SET
    Reason = excluded.Reason, Payload = excluded.Payload, TS = excluded.TS, Device = excluded.Device,
    Tag = excluded.Tag, Value = excluded.Value, WrittenAt = excluded.WrittenAt"""

_UPSERT_PREDICTIONS = """
INSERT INTO Predictions (TS, Device, Tag, Value, Score, IsAnomaly, Detector, ModelVersion, WrittenAt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (Device, Tag, TS, Detector) DO UPDATE SET
    Value = excluded.Value, Score = excluded.Score, IsAnomaly = excluded.IsAnomaly,
    ModelVersion = excluded.ModelVersion, WrittenAt = excluded.WrittenAt"""

_UPSERT_RUN = """
INSERT INTO Runs (RunId, Kind, Status, StartedAt, FinishedAt, RangeFrom, RangeTo, Sensors, Tasks, Failures, Detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (RunId) DO UPDATE SET
    Kind = excluded.Kind, Status = excluded.Status, StartedAt = excluded.StartedAt,
    FinishedAt = excluded.FinishedAt, RangeFrom = excluded.RangeFrom, RangeTo = excluded.RangeTo,
    Sensors = excluded.Sensors, Tasks = excluded.Tasks, Failures = excluded.Failures, Detail = excluded.Detail"""

_READ_RUNS = """
SELECT RunId, Kind, Status, StartedAt, FinishedAt, RangeFrom, RangeTo, Sensors, Tasks, Failures, Detail
FROM Runs WHERE (? IS NULL OR Kind = ?) AND (? IS NULL OR Status = ?)
ORDER BY StartedAt DESC, RunId DESC LIMIT ?"""

# Take the lease if it is free, expired, or ours; the WHERE leaves a live lease of another owner alone.
_TAKE_LEASE = """
INSERT INTO Leases (Name, Owner, ExpiresAt) VALUES (?, ?, ?)
ON CONFLICT (Name) DO UPDATE SET Owner = excluded.Owner, ExpiresAt = excluded.ExpiresAt
WHERE Leases.Owner = excluded.Owner OR Leases.ExpiresAt < ?"""

# One sensor's incidents of one detector from its cutoff on: a seek on the key's (Device, Tag, Detector) prefix.
_DELETE_INCIDENTS_SINCE = 'DELETE FROM Incidents WHERE Device = ? AND Tag = ? AND Detector = ? AND "End" >= ?'

_UPSERT_INCIDENTS = """
INSERT INTO Incidents (Device, Tag, Detector, Start, "End", PeakScore, FlaggedWindows, "Open", UpdatedAt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (Device, Tag, Detector, Start) DO UPDATE SET
    "End" = excluded."End", PeakScore = excluded.PeakScore, FlaggedWindows = excluded.FlaggedWindows,
    "Open" = excluded."Open", UpdatedAt = excluded.UpdatedAt"""

# A NULL parameter means "any". With a list of sensors, the list drives (CROSS JOIN: each sensor
# is one seek on the key's (Device, Tag) prefix), not a scan of every incident probing the list.
_INCIDENT_FILTER = """(?1 IS NULL OR i."End" > ?1) AND (?2 = 0 OR i."Open" = 1) AND (?3 IS NULL OR i.Detector = ?3)"""
_INCIDENT_COLUMNS = 'i.Device, i.Tag, i.Detector, i.Start, i."End", i.PeakScore, i.FlaggedWindows, i."Open", i.UpdatedAt'
_INCIDENT_ORDER = "ORDER BY i.Start DESC, i.PeakScore DESC, i.Device, i.Tag, i.Detector"
_READ_INCIDENTS = f"SELECT {_INCIDENT_COLUMNS} FROM Incidents i WHERE {_INCIDENT_FILTER} {_INCIDENT_ORDER}"
_READ_INCIDENTS_OF_SENSORS = (
    f"SELECT {_INCIDENT_COLUMNS} FROM json_each(?4) s CROSS JOIN Incidents i "
    f"ON i.Device = s.value ->> 0 AND i.Tag = s.value ->> 1 WHERE {_INCIDENT_FILTER} {_INCIDENT_ORDER}"
)

_RECORD_SETTING = "INSERT INTO StoreSettings (Name, Value) VALUES (?, ?) ON CONFLICT (Name) DO NOTHING"
_REPLACE_SETTING = "INSERT INTO StoreSettings (Name, Value) VALUES (?, ?) ON CONFLICT (Name) DO UPDATE SET Value = excluded.Value"

_SENSORS = "WITH s(Device, Tag) AS (SELECT value ->> 0, value ->> 1 FROM json_each(?)) "

# The sensor comes back as its index in the bound list, not as two strings per row: fewer
# Python objects per fetched row (about a third of the read's time for a chunk of sensors).
# The bound list is sorted and the sensors are the outer loop (CROSS JOIN), each read along
# the key index: rows come ordered by sensor then TS without a sort of the whole result
# (a temporary B-tree of every row); read_windows checks that order and sorts only if not.
_READ_WINDOWS = (
    "WITH s(Sensor, Device, Tag) AS (SELECT key, value ->> 0, value ->> 1 FROM json_each(?)) "
    "SELECT s.Sensor, v.TS, v.Value, v.Count, v.Min, v.Max FROM s CROSS JOIN SensorValues v "
    "ON v.Device = s.Device AND v.Tag = s.Tag WHERE v.TS > ? AND v.TS <= ?"
)
_READ_PREDICTIONS = (
    _SENSORS + "SELECT p.TS, p.Device, p.Tag, p.Value, p.Score, p.IsAnomaly, p.Detector, p.ModelVersion "
    "FROM Predictions p JOIN s ON p.Device = s.Device AND p.Tag = s.Tag WHERE p.TS > ? AND p.TS <= ? "
    "ORDER BY p.Device, p.Tag, p.TS, p.Detector"
)
# Per sensor, MIN and MAX of a key prefix are one index seek each (SQLite's min/max optimization).
_WINDOW_BOUNDS = (
    "WITH s(Sensor, Device, Tag) AS (SELECT key, value ->> 0, value ->> 1 FROM json_each(?)) "
    "SELECT s.Sensor, "
    "(SELECT MIN(v.TS) FROM SensorValues v WHERE v.Device = s.Device AND v.Tag = s.Tag), "
    "(SELECT MAX(v.TS) FROM SensorValues v WHERE v.Device = s.Device AND v.Tag = s.Tag) FROM s"
)
_SPAN_BY_SENSOR = """
SELECT COUNT(*),
    MIN((SELECT MIN(v.TS) FROM SensorValues v WHERE v.Device = w.Device AND v.Tag = w.Tag)),
    MAX((SELECT MAX(v.TS) FROM SensorValues v WHERE v.Device = w.Device AND v.Tag = w.Tag))
FROM SensorWrites w"""

_DEAD_BY_REASON = (
    "SELECT CASE WHEN instr(Reason, ':') > 0 THEN substr(Reason, 1, instr(Reason, ':') - 1) ELSE Reason END AS Code,"
    " COUNT(*) FROM DeadLetters GROUP BY Code"
)


def _dead_letter_rows(dead_letters: pa.Table) -> list[tuple]:
    """``_UPSERT_DEAD``'s parameters but ``WrittenAt``, one tuple per row.

    TS (late readings only) is formatted for the whole column at once: ``format_ms`` per row
    cost ~0.3 ms, which made a recording's late readings a visible part of its run.
    """
    ts = dead_letters["ts"].combine_chunks()
    ts_text = [None] * len(ts)
    if ts.null_count < len(ts):
        text = np.array(format_ms(ts.fill_null(0).to_numpy()), dtype=object)
        text[ts.is_null().to_numpy(zero_copy_only=False)] = None
        ts_text = text.tolist()
    head = [dead_letters[name].to_pylist() for name in ("partition", "position", "element", "reason", "payload")]
    tail = [dead_letters[name].to_pylist() for name in ("device", "tag", "value")]
    return list(zip(*head, ts_text, *tail))


def _prediction_rows(predictions: pa.Table) -> list[tuple]:
    """``_UPSERT_PREDICTIONS``'s parameters but ``WrittenAt``, one tuple per row."""
    ts = format_ms(predictions["ts"].to_numpy())
    names = ("device", "tag", "value", "score", "is_anomaly", "detector", "model_version")
    return list(zip(ts, *(predictions[name].to_pylist() for name in names)))


def _incident_write(detector: str, since_ns: dict[tuple[str, str], int], rows: pa.Table) -> Callable[[sqlite3.Connection], None]:
    """``replace_incidents``' statements, their parameters made before the write lock: a call that runs them."""
    sensors = list(since_ns)
    cutoffs = format_ms(np.array(list(since_ns.values()), dtype=np.int64)) if sensors else []
    deletes = [(d, t, detector, since) for (d, t), since in zip(sensors, cutoffs)]
    starts, ends, updated = (
        format_ms(rows[name].to_numpy()) if rows.num_rows else [] for name in ("start", "end", "updated_at")
    )
    ids = [rows[name].to_pylist() for name in ("device", "tag", "detector")]
    numbers = [rows[name].to_pylist() for name in ("peak_score", "flagged_windows")]
    upserts = list(zip(*ids, starts, ends, *numbers, map(int, rows["open"].to_pylist()), updated))

    def write(db: sqlite3.Connection) -> None:
        db.executemany(_DELETE_INCIDENTS_SINCE, deletes)
        db.executemany(_UPSERT_INCIDENTS, upserts)

    return write


def _ts_text(ns: int) -> str:
    return format_ms([ns])[0]


def _ts_ns(texts: list[str]) -> pa.Array:
    ns, _ = parse_time_array(pa.array(texts, pa.string()))  # the store's own text: always valid
    return pa.array(ns, pa.int64())


def _ts_ns_one(text: str) -> int:
    return _ts_ns([text])[0].as_py()


def _opt_ts_text(ns: int | None) -> str | None:
    return None if ns is None else _ts_text(ns)


def _opt_ts_ns(text: str | None) -> int | None:
    return None if text is None else _ts_ns_one(text)


class SqliteStore(Store):
    """``sqlite:///PATH``: WAL journal, one transaction per upsert call."""

    def __init__(self, url: str):
        if not url.startswith("sqlite:///"):
            raise StoreError(f"not a SQLite URL: {url!r}")
        self.url = url
        self.path = Path(url[len("sqlite:///") :])
        if not self.path.parent.exists():
            raise StoreError(f"directory for the SQLite store does not exist: {self.path.parent.absolute()}{_slashes(url)}")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
            # Larger pages and a longer WAL between checkpoints: window upserts touch one
            # page per sensor, so fewer, bigger pages and checkpoints write less.
            self._db.execute("PRAGMA page_size=16384")  # takes effect only on a new file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            self._db.execute("PRAGMA cache_size=-32768")
            self._db.execute("PRAGMA wal_autocheckpoint=4000")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e

    def create_schema(self) -> None:
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)

    def upsert_windows(self, windows: pa.Table) -> int:
        transaction = self.window_transaction()
        transaction.add(windows)
        return transaction.commit()

    def window_transaction(self) -> "_SqliteWindowTransaction":
        return _SqliteWindowTransaction(self._db)

    def upsert_dead_letters(self, dead_letters: pa.Table) -> int:
        if dead_letters.num_rows == 0:
            return 0
        rows = _dead_letter_rows(dead_letters)  # before the write lock: it is held only for SQLite's work
        with self._transaction() as now:
            self._db.executemany(_UPSERT_DEAD, (row + (now,) for row in rows))
        return len(rows)

    def read_windows(self, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
        # Each sensor once, sorted as SQLite compares (UTF-8 byte order is code point order): the rows' order.
        wanted = sorted({(device, tag) for device, tag in sensors})
        rows = self._db.execute(_READ_WINDOWS, (_sensor_json(wanted), _ts_text(ts_from), _ts_text(ts_to))).fetchall()
        if not rows:
            return WINDOW_READ_SCHEMA.empty_table()
        n = len(rows)
        # One column at a time straight into numpy: no transposed tuples, no per-row conversion.
        sensor = np.fromiter(map(itemgetter(0), rows), np.int64, n)
        ts = ts_ns_column(list(map(itemgetter(1), rows)))
        value, count, low, high = (np.fromiter(map(itemgetter(i), rows), kind, n) for i, kind in _WINDOW_NUMBERS)
        del rows
        if n > 1 and not bool(((sensor[1:] > sensor[:-1]) | ((sensor[1:] == sensor[:-1]) & (ts[1:] > ts[:-1]))).all()):
            order = np.lexsort((ts, sensor))  # SQLite chose another plan: sort here
            sensor, ts, value, count, low, high = (a[order] for a in (sensor, ts, value, count, low, high))
        index = pa.array(sensor)
        return pa.table(
            [
                pa.array(ts),
                pa.array([d for d, _ in wanted], pa.string()).take(index),
                pa.array([t for _, t in wanted], pa.string()).take(index),
                pa.array(value),
                pa.array(count),
                pa.array(low),
                pa.array(high),
            ],
            schema=WINDOW_READ_SCHEMA,
        )

    def sensors_written_since(self, since_ns: int) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT Device, Tag FROM SensorWrites WHERE WrittenAt >= ? ORDER BY Device, Tag",
            (_ts_text(since_ns),),
        ).fetchall()
        return [(d, t) for d, t in rows]

    def window_bounds(self, sensors: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        wanted = list(dict.fromkeys(sensors))
        rows = [r for r in self._db.execute(_WINDOW_BOUNDS, (_sensor_json(wanted),)).fetchall() if r[1] is not None]
        if not rows:
            return {}
        first = _ts_ns([r[1] for r in rows]).to_pylist()
        last = _ts_ns([r[2] for r in rows]).to_pylist()
        return {wanted[r[0]]: (f, n) for r, f, n in zip(rows, first, last)}

    def upsert_predictions(self, predictions: pa.Table) -> int:
        write = self._prediction_write(predictions)  # packed before: the write lock is held only for SQLite's work
        if write is not None:
            with self._transaction() as now:
                write(now)
        return predictions.num_rows

    def upsert_scores(
        self, predictions: pa.Table, detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table,
    ) -> tuple[int, int]:
        rows = incidents_to_write(detector, since_ns, incidents)
        write_predictions = self._prediction_write(predictions)
        write_incidents = _incident_write(detector, since_ns, rows)
        if write_predictions is not None or since_ns or rows.num_rows:
            with self._transaction() as now:
                write_incidents(self._db)
                if write_predictions is not None:
                    write_predictions(now)
        return predictions.num_rows, rows.num_rows

    def _prediction_write(self, predictions: pa.Table) -> Callable[[str], object] | None:
        """The upsert of ``predictions``, packed: a call that runs it in the open transaction with WrittenAt ``now``."""
        if predictions.num_rows == 0:
            return None
        statements = PredictionStatements.of(predictions)
        if statements is not None:
            return lambda now: statements.execute(self._db, now)
        rows = _prediction_rows(predictions)
        return lambda now: self._db.executemany(_UPSERT_PREDICTIONS, (row + (now,) for row in rows))

    def _upsert_predictions_by_row(self, predictions: pa.Table) -> int:
        """Row by row: a table with a null in a NOT NULL column (SQLite names the column), and bench/models.py's reference."""
        if predictions.num_rows == 0:
            return 0
        rows = _prediction_rows(predictions)
        with self._transaction() as now:
            self._db.executemany(_UPSERT_PREDICTIONS, (row + (now,) for row in rows))
        return predictions.num_rows

    def read_predictions(self, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
        rows = self._db.execute(_READ_PREDICTIONS, (_sensor_json(sensors), _ts_text(ts_from), _ts_text(ts_to))).fetchall()
        return _as_table(rows, PREDICTION_SCHEMA)

    def replace_incidents(self, detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table) -> int:
        rows = incidents_to_write(detector, since_ns, incidents)
        write = _incident_write(detector, since_ns, rows)
        with self._transaction():
            write(self._db)
        return rows.num_rows

    def read_incidents(
        self,
        since_ns: int | None = None,
        open_only: bool = False,
        detector: str | None = None,
        sensors: list[tuple[str, str]] | None = None,
    ) -> pa.Table:
        filters = (_opt_ts_text(since_ns), int(open_only), detector)
        if sensors is None:
            rows = self._db.execute(_READ_INCIDENTS, filters).fetchall()
        else:  # each sensor once: the list drives the join
            rows = self._db.execute(_READ_INCIDENTS_OF_SENSORS, (*filters, _sensor_json(list(dict.fromkeys(sensors))))).fetchall()
        return incidents_from_rows(rows, _ts_ns)

    def read_settings(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT Name, Value FROM StoreSettings").fetchall())

    def record_settings(self, values: dict[str, str], replace: bool = False) -> dict[str, str]:
        with self._transaction():
            self._db.executemany(_REPLACE_SETTING if replace else _RECORD_SETTING, values.items())
            return dict(self._db.execute("SELECT Name, Value FROM StoreSettings").fetchall())

    def database_time(self) -> int:
        return _ts_ns_one(self._db.execute(_NOW).fetchone()[0])

    def upsert_run(self, run: RunRecord) -> None:
        with self._transaction():
            self._db.execute(
                _UPSERT_RUN,
                (
                    run.run_id, run.kind, run.status, _ts_text(run.started_at), _opt_ts_text(run.finished_at),
                    _opt_ts_text(run.range_from), _opt_ts_text(run.range_to),
                    run.sensors, run.tasks, run.failures, run.detail,
                ),
            )

    def read_runs(self, kind: str | None = None, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        rows = self._db.execute(_READ_RUNS, (kind, kind, status, status, limit)).fetchall()
        return [
            RunRecord(
                run_id, kind_, status_, _ts_ns_one(started), _opt_ts_ns(finished),
                _opt_ts_ns(range_from), _opt_ts_ns(range_to), sensors, tasks, failures, detail,
            )
            for run_id, kind_, status_, started, finished, range_from, range_to, sensors, tasks, failures, detail in rows
        ]

    def try_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        with self._transaction() as now:
            expires = _ts_text(_ts_ns_one(now) + int(ttl_seconds * 1e9))
            self._db.execute(_TAKE_LEASE, (name, owner, expires, now))
            (holder,) = self._db.execute("SELECT Owner FROM Leases WHERE Name = ?", (name,)).fetchone()
        return holder == owner

    def release_lease(self, name: str, owner: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM Leases WHERE Name = ? AND Owner = ?", (name, owner))

    def summary(self) -> StoreSummary:
        (windows,) = self._db.execute("SELECT COUNT(*) FROM SensorValues").fetchone()
        # SensorWrites has a row for each sensor with windows (written in the same transactions):
        # per sensor, one index seek finds its first and last window instead of a scan of them all.
        sensors, first, last = self._db.execute(_SPAN_BY_SENSOR).fetchone()
        if windows and not sensors:  # a store written before SensorWrites existed
            first, last = self._db.execute("SELECT MIN(TS), MAX(TS) FROM SensorValues").fetchone()
            (sensors,) = self._db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT Device, Tag FROM SensorValues)").fetchone()
        dead = self._db.execute(_DEAD_BY_REASON).fetchall()
        return StoreSummary(windows, sensors, first, last, {code: n for code, n in dead})

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _SqliteWindowTransaction(WindowTransaction):
    """Each added table (windows or dead letters) is upserted at once into a transaction held open until ``commit``.

    Pages a transaction touches are written (to the WAL) once at its commit, so tables that
    commit together share those writes: with one insertion point per sensor in the key
    index, that is most of a window upsert's cost. SensorWrites gets one row per sensor at
    commit. ``WrittenAt`` is the database clock when the transaction began.
    """

    def __init__(self, db: sqlite3.Connection):
        self._db = db
        # The key index's pages a transaction touches stay cached until it commits (one per
        # sensor: ~4k pages at 10k sensors x 100 windows); the connection's default cache is for
        # readers. Measured on the bench: ratio to the parse limit 0.363 -> 0.382 (medians of 4).
        self._db.execute("PRAGMA cache_size=-131072")  # KiB: 128 MB
        # Checkpoint the WAL every 16 MB rather than 64: the last checkpoint, at the writer's
        # close, is what a finished run still waits for (ratio medians 0.352 -> 0.372 over 9 rounds).
        self._db.execute("PRAGMA wal_autocheckpoint=1000")  # pages of 16 KB
        self._now: str | None = None
        self._sensors: list[pa.Table] = []
        self.rows = 0

    def add(self, windows: pa.Table) -> None:
        if windows.num_rows == 0:
            return
        windows, device, tag = _in_key_order(windows)  # key order keeps B-tree page writes local
        if self._now is None:
            self._now = _begin(self._db)
        try:
            # Python objects for a slice at a time keep memory flat on big batches.
            for start in range(0, windows.num_rows, _ROWS_PER_CHUNK):
                chunk = windows.slice(start, _ROWS_PER_CHUNK)
                ts = format_ms(chunk.column("window_end").to_numpy())
                ids = [column[start : start + _ROWS_PER_CHUNK].tolist() for column in (device, tag)]
                values = [chunk.column(name).to_pylist() for name in ("value", "count", "min", "max")]
                self._db.executemany(_UPSERT_WINDOWS, zip(ts, *ids, *values, repeat(self._now)))
        except BaseException:
            self.rollback()
            raise
        self._sensors.append(last_of_runs(windows.select(["device", "tag"]), ["device", "tag"]))
        self.rows += windows.num_rows

    def add_dead_letters(self, dead_letters: pa.Table) -> None:
        if dead_letters.num_rows == 0:
            return
        rows = _dead_letter_rows(dead_letters)
        if self._now is None:
            self._now = _begin(self._db)
        try:
            self._db.executemany(_UPSERT_DEAD, (row + (self._now,) for row in rows))
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> int:
        if self._now is None:
            return 0
        try:
            if self._sensors:  # none when the transaction holds only dead letters
                sensors = last_per_key(pa.concat_tables(self._sensors), ["device", "tag"]) if len(self._sensors) > 1 else self._sensors[0]
                self._db.executemany(
                    _UPSERT_SENSOR_WRITES, zip(sensors["device"].to_pylist(), sensors["tag"].to_pylist(), repeat(self._now))
                )
            self._db.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        rows, self.rows, self._now, self._sensors = self.rows, 0, None, []
        return rows

    def rollback(self) -> None:
        if self._now is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self.rows, self._now, self._sensors = 0, None, []


_MAX_KEY = 2**62  # the int64 sort key's bound


def _in_key_order(windows: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``windows`` sorted by (device, tag, window_end), and its device and tag columns as object arrays.

    Ids repeat (a sensor has a row per window): each is ranked once among its distinct values
    and the rows sorted on one int64 key, ~2.5x faster than Arrow's sort on two string
    columns; the id objects are shared between the rows of a sensor, not made per row.
    """
    keys, names = [], []
    for name in ("device", "tag"):
        codes = pc.dictionary_encode(windows[name].combine_chunks())
        distinct = codes.dictionary
        rank = pc.rank(distinct, sort_keys="ascending").to_numpy().astype(np.int64) - 1  # by UTF-8 bytes, as SQLite compares
        index = codes.indices.to_numpy()
        keys.append((rank[index], len(distinct)))
        names.append(np.array(distinct.to_pylist(), dtype=object)[index])
    ends, end_rank = np.unique(windows["window_end"].to_numpy(), return_inverse=True)
    (device_rank, devices), (tag_rank, tags) = keys
    if devices * tags * len(ends) <= _MAX_KEY:
        order = np.argsort((device_rank * tags + tag_rank) * len(ends) + end_rank, kind="stable")
    else:  # a key that would not fit in int64
        order = pc.sort_indices(windows, [("device", "ascending"), ("tag", "ascending"), ("window_end", "ascending")]).to_numpy()
    return windows.take(order), names[0][order], names[1][order]


def _as_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """Fetched rows (first column TS text) as a table of ``schema`` (first column ns)."""
    columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in schema]
    arrays = [_ts_ns(columns[0])]
    for column, kind in zip(columns[1:], schema.types[1:]):
        arrays.append(pa.array([bool(x) for x in column] if kind == pa.bool_() else column, kind))
    return pa.table(arrays, schema=schema)


_WINDOW_NUMBERS = ((2, np.float64), (3, np.int64), (4, np.float64), (5, np.float64))  # Value, Count, Min, Max


def _slashes(url: str) -> str:
    """For a relative path, how the URL was read and how an absolute one is written (README: SQLite URLs)."""
    path = url[len("sqlite:///") :]
    if Path(path).is_absolute():
        return ""
    return f" ({url} is relative to the current directory; an absolute path takes four slashes: sqlite:////{path})"


def _sensor_json(sensors: list[tuple[str, str]]) -> str:
    return orjson.dumps([[d, t] for d, t in sensors]).decode()


def _begin(db: sqlite3.Connection) -> str:
    """BEGIN IMMEDIATE; the database clock then, which is what WrittenAt records."""
    db.execute("BEGIN IMMEDIATE")
    return db.execute(_NOW).fetchone()[0]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error; yields the database clock."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> str:
        return _begin(self._db)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")

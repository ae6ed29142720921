"""Whole columns to SQLite and back with few Python objects per row (the SQLite store's batch-task paths).

Python's ``sqlite3`` binds and fetches one row at a time, a Python object per
value; for the 720 windows a scoring task reads and the 720 predictions it
writes per sensor, that costs more than SQLite's own work. Two helpers cut it:

- ``PredictionStatements`` turns a predictions table into multi-row upserts:
  ONE statement per up to 128 rows of one run of rows with the same sensor,
  detector and model version (a chunk's sensors), which binds the run's ids
  once and four values per row (TS text, Value, Score, IsAnomaly), floats as
  floats (exact; NaN binds as NULL). Against ``executemany`` of one row per
  statement it saves the per-row statement step and tuple; against the packed
  text records it replaced (each float as mantissa and power of two, unpacked
  by ``substr``/``CAST``/``pow`` in SQL) it saves SQLite's per-row expression
  work: 0.72 ms of SQLite per 720 rows against 0.98, the store's own floor 0.67
  (tests/store/test_sqlite_columns.py holds it to the row-by-row results).
- ``ts_ns_column`` turns the TS texts of a read into int64 ns, parsing each
  distinct time once (a chunk's sensors share their window ends).

All SQL is constant text (one per statement size); every value is a bound parameter.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cache
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.timeparse import format_ms, parse_time_array

__all__ = ["ROWS_PER_STATEMENT", "PredictionStatements", "ts_ns_column", "upsert_predictions_sql"]

ROWS_PER_STATEMENT = (128, 16, 1)
"""Statement sizes, largest first: a run is cut greedily. 128 rows x 4 + 5 = 517 parameters, under the
999 of SQLite builds older than 3.32; larger statements measured no faster."""

_IDS = 5  # ?1 Device, ?2 Tag, ?3 Detector, ?4 ModelVersion, ?5 WrittenAt
_PER_ROW = 4  # TS, Value, Score, IsAnomaly
_WRITTEN_AT = 4  # index of WrittenAt in a statement's parameters


@cache
def upsert_predictions_sql(rows: int) -> str:
    """The upsert of ``rows`` predictions of one sensor, detector and model version, with the store's ON CONFLICT rule.

    Parameters: ?1 Device, ?2 Tag, ?3 Detector, ?4 ModelVersion, ?5 WrittenAt, then TS, Value,
    Score, IsAnomaly of each row. Rows are upserted in order: of two with the same key, the later wins.
    """
    values = ", ".join(
        f"(?{at}, ?1, ?2, ?{at + 1}, ?{at + 2}, ?{at + 3}, ?3, ?4, ?5)"
        for at in range(_IDS + 1, _IDS + 1 + rows * _PER_ROW, _PER_ROW)
    )
    return (
        "INSERT INTO Predictions (TS, Device, Tag, Value, Score, IsAnomaly, Detector, ModelVersion, WrittenAt) "
        f"VALUES {values} ON CONFLICT (Device, Tag, TS, Detector) DO UPDATE SET "
        "Value = excluded.Value, Score = excluded.Score, IsAnomaly = excluded.IsAnomaly, "
        "ModelVersion = excluded.ModelVersion, WrittenAt = excluded.WrittenAt"
    )


@dataclass(frozen=True)
class PredictionStatements:
    """A predictions table as ``upsert_predictions_sql`` statements and their parameters, made before the write lock."""

    statements: list[tuple[str, list]]
    rows: int

    @classmethod
    def of(cls, predictions: pa.Table) -> PredictionStatements | None:
        """``predictions`` as statements; None if it has a null where the table allows none (the row-by-row
        path says which NOT NULL column it is)."""
        n = predictions.num_rows
        if n == 0 or any(predictions[k].null_count for k in predictions.column_names if k != "value"):
            return None
        ts = format_ms(predictions["ts"].to_numpy())  # one str object per distinct time
        value = predictions["value"].to_numpy(zero_copy_only=False).tolist()  # null -> NaN, which binds as NULL
        score = predictions["score"].to_numpy(zero_copy_only=False).tolist()
        flag = predictions["is_anomaly"].to_numpy(zero_copy_only=False).astype(np.int64).tolist()
        flat = list(chain.from_iterable(zip(ts, value, score, flag)))
        keys = ("device", "tag", "detector", "model_version")
        starts = _run_starts(predictions, keys)
        heads = [predictions[k].take(pa.array(starts)).to_pylist() for k in keys]
        statements = []
        for a, b, device, tag, detector, version in zip(starts.tolist(), np.r_[starts[1:], n].tolist(), *heads):
            while a < b:
                size = next(size for size in ROWS_PER_STATEMENT if size <= b - a)
                statements.append((upsert_predictions_sql(size), [device, tag, detector, version, None,
                                                                  *flat[a * _PER_ROW:(a + size) * _PER_ROW]]))
                a += size
        return cls(statements, n)

    def execute(self, db: sqlite3.Connection, written_at: str) -> None:
        """Run the statements in ``db``'s open transaction, ``written_at`` the rows' WrittenAt."""
        for sql, parameters in self.statements:
            parameters[_WRITTEN_AT] = written_at
            db.execute(sql, parameters)


def _run_starts(table: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """Row numbers where any of ``keys`` differs from the row before (0 first)."""
    n = table.num_rows
    changed = np.zeros(n, dtype=bool)
    changed[0] = True
    for k in keys:
        column = table[k].combine_chunks()
        changed[1:] |= pc.not_equal(column.slice(1), column.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.flatnonzero(changed)


def ts_ns_column(texts: list[str]) -> np.ndarray:
    """The store's TS texts as int64 ns, each distinct text parsed once."""
    distinct = list(dict.fromkeys(texts))
    ns, _ = parse_time_array(pa.array(distinct, pa.string()))  # the store's own text: always valid
    lookup = dict(zip(distinct, ns.tolist()))
    return np.fromiter(map(lookup.__getitem__, texts), np.int64, len(texts))

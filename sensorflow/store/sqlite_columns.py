"""Whole columns to SQLite and back with few Python objects per row (the SQLite store's batch-task paths).

Python's ``sqlite3`` binds and fetches one row at a time, a Python object per
value; for the 720 windows a scoring task reads and the 720 predictions it
writes per sensor, that costs more than SQLite's own work. Two helpers cut it:

- ``PredictionRecords`` packs a predictions table into one fixed-width ASCII
  blob (TS text, each float as an integer mantissa and a power of two, the
  flag), which ONE statement per run of rows with the same sensor, detector
  and model version unpacks inside SQLite (``substr`` of a blob is O(1)) and
  upserts. Floats cross exactly: ``m * pow(2.0, e)`` is the float itself
  (an integer below 2**53 times a power of two), never a decimal rendering.
- ``ts_ns_column`` turns the TS texts of a read into int64 ns, parsing each
  distinct time once (a chunk's sensors share their window ends).

All SQL is constant text; every value is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.timeparse import parse_time_array

__all__ = ["PredictionRecords", "exact_parts", "ts_ns_column", "ts_text_bytes"]

_TS = 23  # "YYYY-MM-DD HH:MM:SS.fff", the store's text form
_MANTISSA = 16  # digits of |m| < 2**53 < 10**16
_EXPONENT = 4  # digits of -1074..1024 and of the NULL marker
NULL_EXPONENT = 9999
"""The exponent that stands for NULL (a missing value: NaN or null in the table)."""

# Field offsets (1-based, as substr counts) inside one record.
_VALUE_M = _TS + 1
_VALUE_E = _VALUE_M + _MANTISSA + 1
_SCORE_M = _VALUE_E + _EXPONENT + 1
_SCORE_E = _SCORE_M + _MANTISSA + 1
_FLAG = _SCORE_E + _EXPONENT + 1
WIDTH = _FLAG
"""Bytes per record."""

_FOUR_DIGITS = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), np.uint8).reshape(10_000, 4)


def _real(mantissa_at: int, exponent_at: int) -> str:
    m = f"CAST(substr(?1, o + {mantissa_at - 1}, {_MANTISSA + 1}) AS INTEGER)"
    e = f"CAST(substr(?1, o + {exponent_at - 1}, {_EXPONENT + 1}) AS INTEGER)"
    return f"CASE {e} WHEN {NULL_EXPONENT} THEN NULL ELSE {m} * pow(2.0, {e}) END"


# ?1 the records (a blob), ?2 device, ?3 tag, ?4 detector, ?5 model version, ?6 WrittenAt,
# ?7 a JSON array with one element per record: json_each numbers the records.
UPSERT_PREDICTION_RECORDS = (
    f"WITH r(o) AS (SELECT key * {WIDTH} + 1 FROM json_each(?7)) "
    "INSERT INTO Predictions (TS, Device, Tag, Value, Score, IsAnomaly, Detector, ModelVersion, WrittenAt) "
    f"SELECT CAST(substr(?1, o, {_TS}) AS TEXT), ?2, ?3, {_real(_VALUE_M, _VALUE_E)}, {_real(_SCORE_M, _SCORE_E)}, "
    f"CAST(substr(?1, o + {_FLAG - 1}, 1) AS INTEGER), ?4, ?5, ?6 FROM r WHERE true "
    "ON CONFLICT (Device, Tag, TS, Detector) DO UPDATE SET "
    "Value = excluded.Value, Score = excluded.Score, IsAnomaly = excluded.IsAnomaly, "
    "ModelVersion = excluded.ModelVersion, WrittenAt = excluded.WrittenAt"
)
"""One run of prediction records upserted, with the store's own ON CONFLICT rule."""


def exact_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each float as ``m * 2**e`` exactly: int64 ``m`` (|m| < 2**53) and ``e`` (-1074..1024).

    NaN gets ``NULL_EXPONENT``; +-inf is ``+-1 * 2**1024`` (``pow`` overflows to inf).
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    safe = np.where(finite, x, 0.0)
    _, exponent = np.frexp(safe)  # safe = f * 2**exponent, 0.5 <= |f| < 1
    e = np.maximum(exponent.astype(np.int64) - 53, -1074)  # a subnormal is an integer times 2**-1074
    m = np.ldexp(safe, -e).astype(np.int64)  # an integer in float64: exact
    infinite = np.isinf(x)
    m = np.where(infinite, np.sign(np.where(infinite, x, 0.0)).astype(np.int64), m)
    e = np.where(infinite, 1024, np.where(np.isnan(x), NULL_EXPONENT, e))
    return m, e


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Rows of a sign and ``width`` (a multiple of 4) decimal digits, ASCII, for each int64 of ``values``."""
    out = np.empty((values.shape[0], width + 1), np.uint8)
    out[:, 0] = np.where(values < 0, ord("-"), ord("+"))
    rest = np.abs(values)
    for at in range(width - 3, 0, -4):  # four digits at a time, from a table: one division each
        rest, group = np.divmod(rest, 10_000)
        out[:, at : at + 4] = _FOUR_DIGITS[group]
    return out


def ts_text_bytes(ns: np.ndarray) -> np.ndarray | None:
    """Rows of the store's TS text (``format_ms``: truncated to ms) as (n, 23) ASCII; None if a time is not 23 wide.

    int64 ns are always within 1677..2262; the check guards the fixed width the packed records rely on.
    """
    ms = np.asarray(ns, dtype=np.int64) // 1_000_000
    distinct, inverse = np.unique(ms, return_inverse=True)
    text = np.datetime_as_string(distinct.astype("datetime64[ms]"), unit="ms")
    if bool((np.char.str_len(text) != _TS).any()):
        return None
    chars = np.frombuffer(text.astype(f"S{_TS}").tobytes(), np.uint8).reshape(-1, _TS).copy()
    chars[:, 10] = ord(" ")  # "T" -> " "
    return chars[inverse]


@dataclass(frozen=True)
class PredictionRecords:
    """A predictions table packed for ``UPSERT_PREDICTION_RECORDS``: one blob slice per run of rows with
    the same device, tag, detector and model version (a chunk's sensors), and those four ids."""

    runs: list[tuple]
    rows: int

    @classmethod
    def of(cls, predictions: pa.Table) -> PredictionRecords | None:
        """``predictions`` packed; None if it has a null where the table allows none or a time that does not pack."""
        n = predictions.num_rows
        if n == 0 or any(predictions[k].null_count for k in predictions.column_names if k != "value"):
            return None  # the row-by-row path says which NOT NULL column it is
        ts = ts_text_bytes(predictions["ts"].to_numpy())
        if ts is None:
            return None
        value_m, value_e = exact_parts(predictions["value"].to_numpy(zero_copy_only=False))  # null -> NaN -> NULL
        score_m, score_e = exact_parts(predictions["score"].to_numpy(zero_copy_only=False))
        flag = predictions["is_anomaly"].to_numpy(zero_copy_only=False).astype(np.uint8) + ord("0")
        records = np.concatenate(
            [ts, _digits(value_m, _MANTISSA), _digits(value_e, _EXPONENT), _digits(score_m, _MANTISSA),
             _digits(score_e, _EXPONENT), flag[:, None]],
            axis=1,
        )
        blob = memoryview(records.tobytes())
        keys = ("device", "tag", "detector", "model_version")
        starts = _run_starts(predictions, keys)
        heads = [predictions[k].take(pa.array(starts)).to_pylist() for k in keys]
        ends = np.r_[starts[1:], n].tolist()
        runs = [
            (blob[a * WIDTH : b * WIDTH], device, tag, detector, version, _counter(b - a))
            for a, b, device, tag, detector, version in zip(starts.tolist(), ends, *heads)
        ]
        return cls(runs, n)

    def parameters(self, written_at: str) -> list[tuple]:
        """One parameter tuple per run, ``written_at`` the rows' WrittenAt."""
        return [(blob, device, tag, detector, version, written_at, counter) for blob, device, tag, detector, version, counter in self.runs]


def _run_starts(table: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """Row numbers where any of ``keys`` differs from the row before (0 first)."""
    n = table.num_rows
    changed = np.zeros(n, dtype=bool)
    changed[0] = True
    for k in keys:
        column = table[k].combine_chunks()
        changed[1:] |= pc.not_equal(column.slice(1), column.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.flatnonzero(changed)


@lru_cache(maxsize=64)
def _counter(n: int) -> str:
    """A JSON array of ``n`` elements: json_each turns it into the record numbers 0..n-1."""
    return "[" + ",".join("0" * n) + "]"


def ts_ns_column(texts: list[str]) -> np.ndarray:
    """The store's TS texts as int64 ns, each distinct text parsed once."""
    distinct = list(dict.fromkeys(texts))
    ns, _ = parse_time_array(pa.array(distinct, pa.string()))  # the store's own text: always valid
    lookup = dict(zip(distinct, ns.tolist()))
    return np.fromiter(map(lookup.__getitem__, texts), np.int64, len(texts))

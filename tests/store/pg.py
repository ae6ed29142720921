"""Reading a PostgreSQL store's tables in the shape tests/conftest.py reads SQLite's, and comparing them."""

from __future__ import annotations

import pandas as pd

from sensorflow.store.odbc_rows import ms_text

WINDOW_COLUMNS = ["TS", "Device", "Tag", "Value", "Count", "Min", "Max"]
DEAD_LETTER_COLUMNS = ["Partition", "Position", "Element", "Reason", "TS", "Device", "Tag", "Value"]


def pg_frame(odbc: str, table: str, columns: list[str], order: list[str]) -> pd.DataFrame:
    """``columns`` of ``table`` (times as the store's ``YYYY-MM-DD HH:MM:SS.fff`` text), ordered by ``order``."""
    import pyodbc

    names = ", ".join(f'"{c}"' for c in columns)  # fixed test identifiers, not values
    by = ", ".join(f'"{c}"' for c in order)
    with pyodbc.connect(odbc) as connection:
        rows = connection.execute(f'SELECT {names} FROM "{table}" ORDER BY {by}').fetchall()
    ts = columns.index("TS")
    return pd.DataFrame(
        [(*r[:ts], None if r[ts] is None else ms_text(r[ts]), *r[ts + 1:]) for r in rows], columns=columns
    )


def pg_windows(odbc: str) -> pd.DataFrame:
    return pg_frame(odbc, "SensorValues", WINDOW_COLUMNS, ["Device", "Tag", "TS"])


def pg_dead_letters(odbc: str) -> pd.DataFrame:
    return pg_frame(odbc, "DeadLetters", DEAD_LETTER_COLUMNS, ["Partition", "Position", "Element"])


def assert_same_windows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows by key; Value to 1e-9 relative (float summation order), the rest exact."""
    key = ["Device", "Tag", "TS"]
    got = got.sort_values(key, ignore_index=True)
    expected = expected.sort_values(key, ignore_index=True)
    assert len(got) == len(expected) and not got.duplicated(key).any()
    pd.testing.assert_frame_equal(got.drop(columns="Value"), expected.drop(columns="Value"), check_dtype=False)
    pd.testing.assert_series_equal(got["Value"], expected["Value"], rtol=1e-9, atol=0, check_dtype=False)

"""Benchmark: window upserts into PostgreSQL over ODBC, our bulk path vs a naive row-at-a-time loop.

Both write the same kind of rows (a 20k-row sample of the 1 M) into a fresh
scratch database on the server, over the same driver (psqlODBC), in one run:

- ours: ``OdbcStore.upsert_windows`` in writer-sized batches (65,536 rows, each
  one transaction of JSON-parameter upserts), first into an empty table
  (inserts), then the same rows again (every row replaced);
- naive: one ``cursor.execute`` of a single-row ``INSERT ... ON CONFLICT`` per
  row, committed once at the end (the ratio's baseline); and, for scale, the
  same loop committing every row (autocommit) on a smaller sample.

The last line printed is one JSON object of the figures.

    python bench/sink.py [--rows 1000000] [--naive-rows 20000] [--autocommit-rows 1000] [--server 127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensorflow.records.windows import WINDOW_SCHEMA
from sensorflow.store.odbc import OdbcStore

BATCH_ROWS = 65_536  # what the dataflow hands the store writer per transaction (FlowConfig.write_rows)
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
WINDOW_NS = 5 * 10**9

# The naive loop's statement: the same upsert, one row per execute.
_NAIVE_UPSERT = """
INSERT INTO "SensorValues" ("TS", "Device", "Tag", "Value", "Count", "Min", "Max", "WrittenAt")
VALUES (?, ?, ?, ?, ?, ?, ?, (clock_timestamp() AT TIME ZONE 'UTC')::timestamp(3))
ON CONFLICT ("Device", "Tag", "TS") DO UPDATE SET
    "Value" = excluded."Value", "Count" = excluded."Count", "Min" = excluded."Min",
    "Max" = excluded."Max", "WrittenAt" = excluded."WrittenAt"
"""


def window_rows(rows: int, sensors: int, seed: int = 42) -> pa.Table:
    """``rows`` windows of ``sensors`` sensors (1,000 devices x tags), in the order a run emits them: by window end."""
    rng = np.random.default_rng(seed)
    index = np.arange(rows)
    sensor = index % sensors
    mean = rng.uniform(10, 110, rows)
    spread = rng.uniform(0, 2, rows)
    return pa.table(
        {
            "window_end": START_NS + (index // sensors + 1) * WINDOW_NS,
            "device": pa.array((sensor // 10).astype(str)),
            "tag": pa.array((sensor % 10).astype(str)),
            "value": mean,
            "count": rng.integers(1, 10, rows),
            "min": mean - spread,
            "max": mean + spread,
        },
        schema=WINDOW_SCHEMA,
    )


def bulk(store: OdbcStore, table: pa.Table) -> float:
    started = time.perf_counter()
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        store.upsert_windows(pa.Table.from_batches([batch]))
    return time.perf_counter() - started


def naive(odbc: str, table: pa.Table, autocommit: bool = False) -> float:
    import pyodbc

    from sensorflow.store.odbc_rows import from_ns

    columns = [table[name].to_pylist() for name in ("device", "tag", "value", "count", "min", "max")]
    stamps = [from_ns(ns) for ns in table["window_end"].to_pylist()]
    with pyodbc.connect(odbc, autocommit=autocommit) as connection:
        cursor = connection.cursor()
        started = time.perf_counter()
        for ts, device, tag, value, count, low, high in zip(stamps, *columns):
            cursor.execute(_NAIVE_UPSERT, ts, device, tag, value, count, low, high)
        if not autocommit:
            connection.commit()
        return time.perf_counter() - started


def count_rows(odbc: str) -> int:
    import pyodbc

    with pyodbc.connect(odbc) as connection:
        return connection.execute('SELECT COUNT(*) FROM "SensorValues"').fetchone()[0]


def empty_tables(odbc: str) -> None:
    import pyodbc

    with pyodbc.connect(odbc, autocommit=True) as connection:
        connection.execute('TRUNCATE "SensorValues", "SensorWrites"')


class ScratchDatabase:
    """A fresh database on the server for the run; dropped afterwards."""

    def __init__(self, host: str, port: int, user: str):
        self._server = f"Driver={{PostgreSQL Unicode}};Server={host};Port={port};Uid={user};"
        self.name = f"sf_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        self._admin(f'CREATE DATABASE "{self.name}"')  # an identifier: cannot be a bound parameter
        return f"{self._server}Database={self.name};"

    def __exit__(self, *exc: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import pyodbc

        with pyodbc.connect(f"{self._server}Database=postgres;", autocommit=True) as connection:
            connection.execute(statement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--autocommit-rows", type=int, default=1_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--server", default="127.0.0.1:5432")
    parser.add_argument("--user", default="postgres")
    args = parser.parse_args()
    host, _, port = args.server.partition(":")

    table = window_rows(args.rows, args.sensors)
    sample = table.take(np.random.default_rng(7).choice(args.rows, size=min(args.naive_rows, args.rows), replace=False))
    print(f"{args.rows:,} window rows of {args.sensors:,} sensors; naive loop on a {sample.num_rows:,}-row sample", flush=True)

    database = ScratchDatabase(host, int(port or 5432), args.user)
    with database as odbc, OdbcStore(f"postgresql+odbc:{odbc}") as store:
        store.create_schema()
        naive_s = naive(odbc, sample)
        assert count_rows(odbc) == sample.num_rows
        empty_tables(odbc)
        small = sample.slice(0, args.autocommit_rows)
        autocommit_s = naive(odbc, small, autocommit=True)
        empty_tables(odbc)
        insert_s = bulk(store, table)
        replace_s = bulk(store, table)
        assert count_rows(odbc) == args.rows and store.summary().sensors == args.sensors


    naive_rate = sample.num_rows / naive_s
    autocommit_rate = small.num_rows / autocommit_s
    insert_rate = args.rows / insert_s
    replace_rate = args.rows / replace_s
    print(f"naive row-at-a-time execute: {sample.num_rows:,} rows in {naive_s:.1f} s = {naive_rate:,.0f} rows/s (one commit)")
    print(f"  committing every row:      {small.num_rows:,} rows in {autocommit_s:.1f} s = {autocommit_rate:,.0f} rows/s")
    print(f"ours, into an empty table:   {args.rows:,} rows in {insert_s:.1f} s = {insert_rate:,.0f} rows/s")
    print(f"ours, replacing every row:   {args.rows:,} rows in {replace_s:.1f} s = {replace_rate:,.0f} rows/s")
    ratio = insert_rate / naive_rate
    print(f"ours / naive: {ratio:.1f}x into an empty table, {replace_rate / naive_rate:.1f}x replacing (target >= 10x)")
    print(json.dumps({
        "rows": args.rows,
        "naive_rows": sample.num_rows,
        "naive_rows_per_s": round(naive_rate),
        "naive_autocommit_rows_per_s": round(autocommit_rate),
        "bulk_insert_rows_per_s": round(insert_rate),
        "bulk_replace_rows_per_s": round(replace_rate),
        "ratio_vs_naive": round(ratio, 1),
        "replace_ratio_vs_naive": round(replace_rate / naive_rate, 1),
        "target_met": ratio >= 10,
    }))


if __name__ == "__main__":
    main()

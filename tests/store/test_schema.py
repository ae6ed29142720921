"""The one schema, rendered as SQLite DDL: what a new store gets is what the spec says and what existing stores have.

A database made by ``SQLITE.schema(TABLES)`` is read back through PRAGMA and
compared with the spec (columns, kinds, nullability, key, layout, indexes),
and with a database made by the hand-written DDL SQLite stores were created
with before the schema module: both must read back the same, so existing
stores keep working with the same write speed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from sensorflow.store import open_store
from sensorflow.store.dialects import POSTGRES, SQLITE, TSQL
from sensorflow.store.schema import SENSOR_WRITES, TABLES, TableSpec

# The SQLite DDL as sqlite.py wrote it by hand before the schema module (commit 012ce31).
HAND_WRITTEN_DDL = [
    """CREATE TABLE IF NOT EXISTS SensorValues (
        TS TEXT NOT NULL, Device TEXT NOT NULL, Tag TEXT NOT NULL, Value REAL NOT NULL,
        Count INTEGER NOT NULL, Min REAL NOT NULL, Max REAL NOT NULL, WrittenAt TEXT NOT NULL,
        UNIQUE (Device, Tag, TS))""",
    """CREATE TABLE IF NOT EXISTS SensorWrites (
        Device TEXT NOT NULL, Tag TEXT NOT NULL, WrittenAt TEXT NOT NULL,
        PRIMARY KEY (Device, Tag)) WITHOUT ROWID""",
    "DROP INDEX IF EXISTS SensorWrites_WrittenAt",
    """CREATE TABLE IF NOT EXISTS DeadLetters (
        Partition TEXT NOT NULL, Position INTEGER NOT NULL, Element INTEGER NOT NULL,
        Reason TEXT NOT NULL, Payload BLOB, TS TEXT, Device TEXT, Tag TEXT, Value REAL,
        WrittenAt TEXT NOT NULL, PRIMARY KEY (Partition, Position, Element))""",
    """CREATE TABLE IF NOT EXISTS Predictions (
        TS TEXT NOT NULL, Device TEXT NOT NULL, Tag TEXT NOT NULL, Value REAL,
        Score REAL NOT NULL, IsAnomaly INTEGER NOT NULL, Detector TEXT NOT NULL,
        ModelVersion TEXT NOT NULL, WrittenAt TEXT NOT NULL,
        PRIMARY KEY (Device, Tag, TS, Detector)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS Runs (
        RunId TEXT PRIMARY KEY, Kind TEXT NOT NULL, Status TEXT NOT NULL,
        StartedAt TEXT NOT NULL, FinishedAt TEXT, RangeFrom TEXT, RangeTo TEXT,
        Sensors INTEGER NOT NULL, Tasks INTEGER NOT NULL, Failures INTEGER NOT NULL,
        Detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS Runs_StartedAt ON Runs (StartedAt)",
    """CREATE TABLE IF NOT EXISTS Leases (
        Name TEXT PRIMARY KEY, Owner TEXT NOT NULL, ExpiresAt TEXT NOT NULL)""",
]


def _database(path: Path, ddl) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    for statement in ddl:
        db.execute(statement)
    db.commit()
    return db


def _read_back(db: sqlite3.Connection) -> dict[str, dict]:
    """Per table what SQLite itself reports: columns, layout, every index with its columns and origin."""
    tables = {}
    for name, without_rowid in db.execute(
        "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite_%'"
    ):
        indexes = {
            index: (unique, origin, [c for (c,) in db.execute("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,))])
            for index, unique, origin in db.execute("SELECT name, \"unique\", origin FROM pragma_index_list(?)", (name,))
        }
        tables[name] = {
            "columns": db.execute("SELECT * FROM pragma_table_xinfo(?) ORDER BY cid", (name,)).fetchall(),
            "without_rowid": bool(without_rowid),
            "indexes": indexes,
        }
    return tables


@pytest.fixture
def rendered(tmp_path) -> sqlite3.Connection:
    db = _database(tmp_path / "rendered.db", SQLITE.schema(TABLES))
    yield db
    db.close()


def test_a_new_store_reads_back_the_same_as_one_made_by_the_hand_written_ddl(rendered, tmp_path):
    old = _database(tmp_path / "old.db", HAND_WRITTEN_DDL)
    try:
        before = _read_back(old)
        # Tables added since (Incidents, StoreSettings) come after the old ones: compare those.
        assert {name: t for name, t in _read_back(rendered).items() if name in before} == before
        # Objects made in the same order sit on the same pages: the statements compile the same.
        pages = "SELECT type, name, tbl_name, rootpage FROM sqlite_master ORDER BY rootpage"
        old_pages = old.execute(pages).fetchall()
        assert rendered.execute(pages).fetchall()[: len(old_pages)] == old_pages
    finally:
        old.close()


@pytest.mark.parametrize("spec", TABLES, ids=lambda t: t.name)
def test_sqlite_tables_are_the_spec(rendered, spec: TableSpec):
    table = _read_back(rendered)[spec.name]
    columns = [(name, kind, bool(notnull)) for _, name, kind, notnull, _, _, _ in table["columns"]]
    key_null = spec.sqlite.key_allows_null
    assert columns == [
        (c.name, SQLITE.type_name(c.kind), not (c.nullable or (key_null and c.name in spec.key))) for c in spec.columns
    ]
    assert table["without_rowid"] == spec.sqlite.without_rowid
    # SQLite names a table's key index so, whether it is a PRIMARY KEY or UNIQUE, rowid or not.
    (unique, origin, key) = table["indexes"].pop(f"sqlite_autoindex_{spec.name}_1")
    assert (unique, key) == (1, list(spec.key))  # key order is the B-tree's: (Device, Tag, TS) keeps a sensor's rows together
    assert origin == ("u" if spec.sqlite.unique_key else "pk")
    assert table["indexes"] == {
        i.name(spec.name): (0, "c", list(i.columns)) for i in spec.indexes if SQLITE.name not in i.not_in
    }


def test_create_schema_drops_an_index_sqlite_leaves_out(tmp_path):
    path = tmp_path / "made-with-the-index.db"
    db = _database(path, [*HAND_WRITTEN_DDL, 'CREATE INDEX "SensorWrites_WrittenAt" ON "SensorWrites" ("WrittenAt")'])
    db.close()
    with open_store(f"sqlite:///{path}") as store:
        store.create_schema()
    db = sqlite3.connect(path)
    try:
        assert "SensorWrites_WrittenAt" not in _read_back(db)["SensorWrites"]["indexes"]
    finally:
        db.close()


@pytest.mark.parametrize("dialect, read", [(SQLITE, "sqlite"), (POSTGRES, "postgres"), (TSQL, "tsql")], ids=lambda d: getattr(d, "name", d))
def test_every_dialect_spells_dropping_an_index(dialect, read):
    (index,) = SENSOR_WRITES.indexes
    tree = sqlglot.parse_one(dialect.drop_index(SENSOR_WRITES, index), read=read, error_level=sqlglot.ErrorLevel.RAISE)
    assert isinstance(tree, exp.Drop) and tree.args["kind"] == "INDEX" and tree.args["exists"]


def test_only_sqlite_leaves_the_written_at_index_out():
    (index,) = SENSOR_WRITES.indexes
    assert index.not_in == {SQLITE.name}
    for dialect in (POSTGRES, TSQL):
        assert dialect.create_index(SENSOR_WRITES, index) in dialect.schema(TABLES)

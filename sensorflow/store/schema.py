"""The store's tables, described once: every backend's DDL is rendered from these specs.

Each table has columns of a logical kind, a primary key and secondary indexes;
``sensorflow.store.dialects`` renders them as SQLite, PostgreSQL or T-SQL DDL
(``SchemaDialect.schema(TABLES)``). Names and keys are those of docs/store.md
(and CONTRACTS' "Store" seam). Where a dialect's DDL differs from
the others beyond its type names, the reason is written here, with the spec
that says so (``SqliteLayout``, ``Index.not_in``).

``SensorWrites`` keeps one row per sensor and its last write, so "sensors
written since T" reads a small table instead of an index on every window
row's ``WrittenAt`` (on SQLite that index halved window upsert speed, 0afc748).

``StoreSettings`` records what the store was made with (window length, time
source, schema version); ``sensorflow.store.metadata`` checks a run against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEAD_LETTERS",
    "ID_LENGTH",
    "INCIDENTS",
    "INCIDENT_CUTOFFS",
    "LEASES",
    "PREDICTIONS",
    "RUNS",
    "SENSOR",
    "SENSOR_VALUES",
    "SENSOR_WRITES",
    "STORE_SETTINGS",
    "TABLES",
    "Column",
    "Index",
    "Kind",
    "SqliteLayout",
    "TableSpec",
]

Kind = Literal["ts", "id", "text", "float", "bigint", "int", "bool", "bytes"]
"""Column kinds: ``ts`` a UTC time to the millisecond, ``id`` a key string of at most 128 characters."""

ID_LENGTH = 128


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False


@dataclass(frozen=True)
class Index:
    """A secondary index on ``columns``, named ``<table>_<columns...>``.

    ``not_in`` names the dialects (``Dialect.name``) that leave it out; their
    schema drops it, so a database made while they had it converges.
    """

    columns: tuple[str, ...]
    not_in: frozenset[str] = frozenset()

    def name(self, table: str) -> str:
        return "_".join((table, *self.columns))


@dataclass(frozen=True)
class SqliteLayout:
    """How SQLite stores a table; the server dialects ignore it.

    ``without_rowid``: the rows live in the key's B-tree (no separate rowid
    table). ``unique_key``: a rowid table whose key is declared ``UNIQUE``
    rather than ``PRIMARY KEY`` (the same index). ``key_allows_null``: the key
    columns are declared without ``NOT NULL``, which a rowid table's primary
    key then admits (a SQLite quirk; the store never writes a NULL key). The
    last two only keep new stores the same as the existing ones, which were
    made so: PRAGMA table_info and index_list tell them apart.
    """

    without_rowid: bool = False
    unique_key: bool = False
    key_allows_null: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A table: columns, primary key, secondary indexes; ``WrittenAt`` (if any) is set by the upsert."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[Index, ...] = ()
    sqlite: SqliteLayout = SqliteLayout()

    @property
    def written_at(self) -> bool:
        return any(c.name == "WrittenAt" for c in self.columns)

    @property
    def payload(self) -> tuple[Column, ...]:
        """The columns a written row carries: all but ``WrittenAt``."""
        return tuple(c for c in self.columns if c.name != "WrittenAt")

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _c(name: str, kind: Kind, nullable: bool = False) -> Column:
    return Column(name, kind, nullable)


SENSOR_VALUES = TableSpec(
    "SensorValues",
    (_c("TS", "ts"), _c("Device", "id"), _c("Tag", "id"), _c("Value", "float"), _c("Count", "bigint"),
     _c("Min", "float"), _c("Max", "float"), _c("WrittenAt", "ts")),
    key=("Device", "Tag", "TS"),
    # A rowid table + unique key: SQLite window upserts ~25% faster than WITHOUT ROWID.
    sqlite=SqliteLayout(unique_key=True),
)
SENSOR_WRITES = TableSpec(
    "SensorWrites", (_c("Device", "id"), _c("Tag", "id"), _c("WrittenAt", "ts")),
    key=("Device", "Tag"),
    # Not on SQLite, for write speed (measured when SQLite dropped it, commit 733dfdd): every
    # window write updates the row of every sensor it touches, which the index would double,
    # while the batch jobs ask "written since" once per run and a scan reads one row per
    # sensor. The servers keep it: there the window rows' own upsert dwarfs it. Measured on
    # PostgreSQL 15, upsert_windows of 10 k sensors x 4 windows per call, 3 rounds each:
    # 35-56 us per window row with the index, 35-57 without (no difference above the noise).
    # Not measured on SQL Server (none here).
    indexes=(Index(("WrittenAt",), not_in=frozenset({"sqlite"})),),
    sqlite=SqliteLayout(without_rowid=True),
)
DEAD_LETTERS = TableSpec(
    "DeadLetters",
    # Device/Tag are whatever the message held: a bad id may be longer than an id column allows.
    (_c("Partition", "id"), _c("Position", "bigint"), _c("Element", "int"), _c("Reason", "text"),
     _c("Payload", "bytes", True), _c("TS", "ts", True), _c("Device", "text", True), _c("Tag", "text", True),
     _c("Value", "float", True), _c("WrittenAt", "ts")),
    key=("Partition", "Position", "Element"),
)
PREDICTIONS = TableSpec(
    "Predictions",
    # Value NULL: a missing slot (a dropout), scored as Count 0.
    (_c("TS", "ts"), _c("Device", "id"), _c("Tag", "id"), _c("Value", "float", True), _c("Score", "float"),
     _c("IsAnomaly", "bool"), _c("Detector", "id"), _c("ModelVersion", "id"), _c("WrittenAt", "ts")),
    key=("Device", "Tag", "TS", "Detector"),
    sqlite=SqliteLayout(without_rowid=True),
)
RUNS = TableSpec(
    "Runs",
    (_c("RunId", "id"), _c("Kind", "id"), _c("Status", "id"), _c("StartedAt", "ts"), _c("FinishedAt", "ts", True),
     _c("RangeFrom", "ts", True), _c("RangeTo", "ts", True), _c("Sensors", "bigint"), _c("Tasks", "bigint"),
     _c("Failures", "bigint"), _c("Detail", "text")),
    key=("RunId",), indexes=(Index(("StartedAt",)),),
    sqlite=SqliteLayout(key_allows_null=True),
)
LEASES = TableSpec(
    "Leases", (_c("Name", "id"), _c("Owner", "id"), _c("ExpiresAt", "ts")), key=("Name",),
    sqlite=SqliteLayout(key_allows_null=True),
)
INCIDENTS = TableSpec(
    "Incidents",
    # Start and End are window ends (as SensorValues.TS); UpdatedAt is the writer's clock, not the
    # database's, so rewriting the same incidents gives the same rows.
    (_c("Device", "id"), _c("Tag", "id"), _c("Detector", "id"), _c("Start", "ts"), _c("End", "ts"),
     _c("PeakScore", "float"), _c("FlaggedWindows", "bigint"), _c("Open", "bool"), _c("UpdatedAt", "ts")),
    key=("Device", "Tag", "Detector", "Start"),
    # "Incidents since T" reads by End; a rescore's delete seeks by the key's (Device, Tag, Detector).
    indexes=(Index(("End",)),),
    sqlite=SqliteLayout(without_rowid=True),
)

STORE_SETTINGS = TableSpec(
    # What the store was made with (window length, time source, schema version: store/metadata.py),
    # one row per setting, so a later version can add one without changing the table.
    "StoreSettings", (_c("Name", "id"), _c("Value", "text")), key=("Name",),
    sqlite=SqliteLayout(without_rowid=True),
)

TABLES = (SENSOR_VALUES, SENSOR_WRITES, DEAD_LETTERS, PREDICTIONS, RUNS, LEASES, INCIDENTS, STORE_SETTINGS)
SENSOR = (_c("Device", "id"), _c("Tag", "id"))
"""A sensor's key columns, as a rowset of sensors to read carries them."""
INCIDENT_CUTOFFS = TableSpec("IncidentCutoffs", (*SENSOR, _c("Since", "ts")), key=("Device", "Tag"))
"""Not a table: the rowset ``replace_incidents`` sends, each sensor with the End from which its incidents are redone."""

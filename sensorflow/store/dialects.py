"""How each database family spells the store's SQL: SQLite's DDL; T-SQL's and PostgreSQL's statements.

Tables are described once (``sensorflow.store.schema``, see docs/store.md).
A ``SchemaDialect`` renders them into DDL (``schema``); SQLite's ends there,
its hand-tuned statements are the SQLite store's own. A ``Dialect`` (the
ODBC store's: T-SQL for Azure SQL and SQL Server, PostgreSQL) also renders a
rowset over one JSON parameter and an upsert from that rowset. The server
dialects differ only where the servers do:

- types: ``DATETIME2(3)``/``timestamp(3)``, ``NVARCHAR(128)``/``varchar(128)``
  for ids, ``FLOAT``/``double precision``; ids compare bytewise (a binary
  collation), so ``"a"`` and ``"A"`` are two sensors, as in SQLite;
- the JSON rowset: ``OPENJSON(?) WITH (...)`` / ``json_to_recordset(?)``;
- the upsert: ``MERGE ... WITH (HOLDLOCK)`` (the lock makes MERGE atomic
  against concurrent inserts of the same key) / ``INSERT ... ON CONFLICT``
  (PostgreSQL 15's MERGE is not: it raises a unique violation instead).

Templates name their parameters ``:name``; ``Statement`` turns them into
``?`` markers and remembers the order, so the Python side binds by name
whatever order a dialect needs. Only identifiers from the schema's specs are
ever formatted into SQL; values always travel as parameters.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sensorflow.store.schema import ID_LENGTH, Column, Index, Kind, TableSpec

__all__ = ["POSTGRES", "SQLITE", "TSQL", "Dialect", "SchemaDialect", "Statement"]


_PARAM = re.compile(r"(?<![:\w]):([a-z_]+)\b")


@dataclass(frozen=True)
class Statement:
    """One SQL statement with ``?`` markers; ``params`` names them in order."""

    sql: str
    params: tuple[str, ...]

    @classmethod
    def of(cls, template: str) -> Statement:
        return cls(_PARAM.sub("?", template).strip(), tuple(_PARAM.findall(template)))

    def bind(self, values: Mapping[str, object]) -> tuple[object, ...]:
        missing = set(self.params) - set(values)
        if missing:
            raise KeyError(f"statement parameters not given: {sorted(missing)}")
        return tuple(values[name] for name in self.params)


class SchemaDialect(ABC):
    """How one database family spells the tables' DDL."""

    name: str
    """The dialect's name, as ``Index.not_in`` names it."""

    _TYPES: Mapping[str, str]

    @abstractmethod
    def q(self, identifier: str) -> str:
        """A quoted identifier, keeping its case."""

    def type_name(self, kind: Kind) -> str:
        """The type of a ``kind`` value (for CAST and JSON rowsets)."""
        return self._TYPES[kind]

    def column_type(self, kind: Kind) -> str:
        """The column type in DDL."""
        return self.type_name(kind)

    def schema(self, tables: tuple[TableSpec, ...]) -> tuple[str, ...]:
        """DDL that brings a database to ``tables``: each statement safe to run on every start.

        Each missing table in order, each followed by the indexes this dialect
        has (created if missing) and those ``Index.not_in`` leaves out of it
        (dropped if there). The order is SQLite's page order in a new file.
        """
        return tuple(
            statement
            for t in tables
            for statement in (
                self.create_table(t),
                *(self.drop_index(t, i) if self.name in i.not_in else self.create_index(t, i) for i in t.indexes),
            )
        )

    def create_table(self, spec: TableSpec) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.q(spec.name)} ({self.columns_ddl(spec)}, {self.key_ddl(spec)})"

    def create_index(self, spec: TableSpec, index: Index) -> str:
        return f"CREATE INDEX IF NOT EXISTS {self.q(index.name(spec.name))} ON {self.q(spec.name)} ({self.names(index.columns)})"

    def drop_index(self, spec: TableSpec, index: Index) -> str:
        return f"DROP INDEX IF EXISTS {self.q(index.name(spec.name))}"

    def columns_ddl(self, spec: TableSpec) -> str:
        return ", ".join(f"{self.q(c.name)} {self.column_type(c.kind)}{self.nulls(spec, c)}" for c in spec.columns)

    def nulls(self, spec: TableSpec, column: Column) -> str:
        """The column's null constraint, with its leading space."""
        return " NULL" if column.nullable else " NOT NULL"

    def key_ddl(self, spec: TableSpec) -> str:
        return f"CONSTRAINT {self.q(spec.name + '_PK')} PRIMARY KEY ({self.names(spec.key)})"

    def names(self, names: tuple[str, ...], alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + self.q(n) for n in names)


class _Sqlite(SchemaDialect):
    """SQLite: type names with the affinity each kind needs (times are ``YYYY-MM-DD HH:MM:SS.fff`` text)."""

    name = "sqlite"
    _TYPES: Mapping[str, str] = {
        "ts": "TEXT",
        "id": "TEXT",  # compared bytewise (BINARY), as the servers' collations do
        "text": "TEXT",
        "float": "REAL",
        "bigint": "INTEGER",
        "int": "INTEGER",
        "bool": "INTEGER",
        "bytes": "BLOB",
    }

    def q(self, identifier: str) -> str:
        return f'"{identifier}"'

    def create_table(self, spec: TableSpec) -> str:
        return super().create_table(spec) + (" WITHOUT ROWID" if spec.sqlite.without_rowid else "")

    def key_ddl(self, spec: TableSpec) -> str:
        return f"{'UNIQUE' if spec.sqlite.unique_key else 'PRIMARY KEY'} ({self.names(spec.key)})"

    def nulls(self, spec: TableSpec, column: Column) -> str:
        # Nullable is SQLite's default; a key that allows NULL is declared without NOT NULL too.
        allowed = column.nullable or (spec.sqlite.key_allows_null and column.name in spec.key)
        return "" if allowed else " NOT NULL"


Condition = Callable[["Dialect", str, str], str]
"""Renders an extra upsert condition from (dialect, target alias, source alias)."""


class Dialect(SchemaDialect):
    """How one server family spells the ODBC store's statements."""

    transient_natives: frozenset[int] = frozenset()
    """Native error numbers that mean "try again" (SQL Server's; psqlODBC's are its own internals)."""

    @abstractmethod
    def column_type(self, kind: Kind) -> str:
        """The column type in DDL: ``type_name`` plus, for ids, a bytewise collation."""

    @abstractmethod
    def json_table(self, columns: tuple[Column, ...], param: str, alias: str) -> str:
        """A table expression ``alias`` with ``columns`` read from the JSON array of objects ``:param``."""

    @abstractmethod
    def upsert(self, spec: TableSpec, only_if: Condition | None = None) -> str:
        """Insert or replace every JSON row of ``:rows`` by key; ``WrittenAt`` = ``:now``.

        ``only_if`` limits replacing an existing row (a new key is always inserted).
        """

    clock: str
    """A query for the database clock now, UTC, at the table's precision (ms)."""

    count_big: str
    """``COUNT(*)`` without a 32-bit overflow."""

    @abstractmethod
    def ids_equal(self, left: str, right: str) -> str:
        """``left = right`` for id columns, compared bytewise."""

    @abstractmethod
    def reason_code(self, column: str) -> str:
        """The reason code: the text before the first ``:`` (all of it if none)."""

    id_length_unit = "characters"

    def id_length(self, value: str) -> int:
        """How long ``value`` is as an id column counts it."""
        return len(value)

    def from_json(self, column: Column, alias: str) -> str:
        """The value of ``column`` as the rowset ``alias`` delivers it, in the column's type."""
        return f"{alias}.{self.q(column.name)}"

    def now(self) -> str:
        """The ``:now`` parameter (the transaction's clock reading) as a ``ts`` value."""
        return f"CAST(:now AS {self.type_name('ts')})"


class _TSql(Dialect):
    name = "mssql"
    # Azure SQL's documented transient errors, the connection-level socket errors, and 1205 (deadlock victim).
    transient_natives = frozenset({40613, 40197, 40501, 49918, 49919, 49920, 10928, 10929, 4060, 233, 10053, 10054, 10060, 64, 1205})
    _COLLATION = "Latin1_General_100_BIN2"
    _TYPES: Mapping[str, str] = {
        "ts": "DATETIME2(3)",
        "id": f"NVARCHAR({ID_LENGTH})",
        "text": "NVARCHAR(MAX)",
        "float": "FLOAT",
        "bigint": "BIGINT",
        "int": "INT",
        "bool": "BIT",
        "bytes": "VARBINARY(MAX)",
    }
    clock = "SELECT CAST(SYSUTCDATETIME() AS DATETIME2(3))"
    id_length_unit = "UTF-16 code units"
    count_big = "COUNT_BIG(*)"

    def q(self, identifier: str) -> str:
        return f"[{identifier}]"

    def column_type(self, kind: Kind) -> str:
        return self._TYPES[kind] + (f" COLLATE {self._COLLATION}" if kind == "id" else "")

    def json_table(self, columns: tuple[Column, ...], param: str, alias: str) -> str:
        # OPENJSON decodes a base64 string into VARBINARY itself.
        fields = ", ".join(f"{self.q(c.name)} {self._TYPES[c.kind]} '$.{c.name}'" for c in columns)
        return f"OPENJSON(:{param}) WITH ({fields}) AS {alias}"

    def create_table(self, spec: TableSpec) -> str:
        return (
            f"IF OBJECT_ID(N'{spec.name}', N'U') IS NULL "
            f"CREATE TABLE {self.q(spec.name)} ({self.columns_ddl(spec)}, {self.key_ddl(spec)})"
        )

    def create_index(self, spec: TableSpec, index: Index) -> str:
        name = index.name(spec.name)
        return (
            f"IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'{name}' AND object_id = OBJECT_ID(N'{spec.name}')) "
            f"CREATE INDEX {self.q(name)} ON {self.q(spec.name)} ({self.names(index.columns)})"
        )

    def drop_index(self, spec: TableSpec, index: Index) -> str:
        return f"DROP INDEX IF EXISTS {self.q(index.name(spec.name))} ON {self.q(spec.name)}"

    def upsert(self, spec: TableSpec, only_if: Condition | None = None) -> str:
        payload = spec.payload
        on = " AND ".join(self._equal(spec.column(k), f"t.{self.q(k)}", f"s.{self.q(k)}") for k in spec.key)
        updates = [f"{self.q(c.name)} = s.{self.q(c.name)}" for c in payload if c.name not in spec.key]
        inserted = [self.from_json(c, "s") for c in payload]
        if spec.written_at:
            updates.append(f"{self.q('WrittenAt')} = {self.now()}")
            inserted.append(self.now())
        names = tuple(c.name for c in spec.columns if c.name != "WrittenAt") + (("WrittenAt",) if spec.written_at else ())
        matched = f"WHEN MATCHED AND ({only_if(self, 't', 's')})" if only_if else "WHEN MATCHED"
        return (
            f"MERGE INTO {self.q(spec.name)} WITH (HOLDLOCK) AS t "
            f"USING {self.json_table(payload, 'rows', 's')} ON {on} "
            f"{matched} THEN UPDATE SET {', '.join(updates)} "
            f"WHEN NOT MATCHED THEN INSERT ({self.names(names)}) VALUES ({', '.join(inserted)});"
        )

    def id_length(self, value: str) -> int:
        return len(value.encode("utf-16-le")) // 2  # NVARCHAR(n) counts UTF-16 code units

    def ids_equal(self, left: str, right: str) -> str:
        # The explicit collation settles the JSON side's (the database default, maybe case-insensitive).
        return f"{left} = {right} COLLATE {self._COLLATION}"

    def reason_code(self, column: str) -> str:
        return f"CASE WHEN CHARINDEX(':', {column}) > 0 THEN LEFT({column}, CHARINDEX(':', {column}) - 1) ELSE {column} END"

    def _equal(self, column: Column, left: str, right: str) -> str:
        return self.ids_equal(left, right) if column.kind == "id" else f"{left} = {right}"


class _Postgres(Dialect):
    name = "postgresql"
    _TYPES: Mapping[str, str] = {
        "ts": "timestamp(3)",
        "id": f"varchar({ID_LENGTH})",
        "text": "text",
        "float": "double precision",
        "bigint": "bigint",
        "int": "integer",
        "bool": "boolean",
        "bytes": "bytea",
    }
    clock = "SELECT CAST(clock_timestamp() AT TIME ZONE 'UTC' AS timestamp(3))"
    count_big = "COUNT(*)"

    def q(self, identifier: str) -> str:
        return f'"{identifier}"'

    def column_type(self, kind: Kind) -> str:
        return self._TYPES[kind] + (' COLLATE "C"' if kind == "id" else "")

    def json_table(self, columns: tuple[Column, ...], param: str, alias: str) -> str:
        # bytea arrives as base64 text; from_json decodes it.
        fields = ", ".join(f"{self.q(c.name)} {'text' if c.kind == 'bytes' else self._TYPES[c.kind]}" for c in columns)
        return f"json_to_recordset(CAST(:{param} AS json)) AS {alias}({fields})"

    def from_json(self, column: Column, alias: str) -> str:
        value = super().from_json(column, alias)
        return f"decode({value}, 'base64')" if column.kind == "bytes" else value

    def upsert(self, spec: TableSpec, only_if: Condition | None = None) -> str:
        payload = spec.payload
        names = tuple(c.name for c in payload) + (("WrittenAt",) if spec.written_at else ())
        selected = [self.from_json(c, "s") for c in payload] + ([self.now()] if spec.written_at else [])
        updates = ", ".join(f"{self.q(n)} = excluded.{self.q(n)}" for n in names if n not in spec.key)
        where = f" WHERE {only_if(self, 't', 'excluded')}" if only_if else ""
        return (
            f"INSERT INTO {self.q(spec.name)} AS t ({self.names(names)}) "
            f"SELECT {', '.join(selected)} FROM {self.json_table(payload, 'rows', 's')} "
            f"ON CONFLICT ({self.names(spec.key)}) DO UPDATE SET {updates}{where}"
        )

    def ids_equal(self, left: str, right: str) -> str:
        return f"{left} = {right}"  # the column's "C" collation wins over the JSON side's default

    def reason_code(self, column: str) -> str:
        return f"split_part({column}, ':', 1)"


TSQL: Dialect = _TSql()
POSTGRES: Dialect = _Postgres()
SQLITE: SchemaDialect = _Sqlite()

"""The ODBC store's tables and every statement it issues, for one dialect.

``statements(dialect)`` is the complete list: the store executes nothing
else (tests/store/test_tsql.py parses all of ``statements(TSQL)``
with sqlglot's T-SQL dialect). Tables and columns are the README's ("The
store"; types per dialect in docs/azure-sql.md). ``SensorWrites`` keeps one
row per sensor and its last write, so "sensors written since T" reads a small
indexed table instead of an index on every window row's ``WrittenAt`` (which
would slow every upsert).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

from sensorflow.store.dialects import Column, Dialect, Statement, TableSpec

__all__ = ["TABLES", "Statements", "statements"]


def _c(name: str, kind: str, nullable: bool = False) -> Column:
    return Column(name, kind, nullable)  # type: ignore[arg-type]


SENSOR_VALUES = TableSpec(
    "SensorValues",
    (_c("TS", "ts"), _c("Device", "id"), _c("Tag", "id"), _c("Value", "float"), _c("Count", "bigint"),
     _c("Min", "float"), _c("Max", "float"), _c("WrittenAt", "ts")),
    key=("Device", "Tag", "TS"),
)
SENSOR_WRITES = TableSpec(
    "SensorWrites", (_c("Device", "id"), _c("Tag", "id"), _c("WrittenAt", "ts")),
    key=("Device", "Tag"), indexes=(("WrittenAt",),),
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
    (_c("TS", "ts"), _c("Device", "id"), _c("Tag", "id"), _c("Value", "float", True), _c("Score", "float"),
     _c("IsAnomaly", "bool"), _c("Detector", "id"), _c("ModelVersion", "id"), _c("WrittenAt", "ts")),
    key=("Device", "Tag", "TS", "Detector"),
)
RUNS = TableSpec(
    "Runs",
    (_c("RunId", "id"), _c("Kind", "id"), _c("Status", "id"), _c("StartedAt", "ts"), _c("FinishedAt", "ts", True),
     _c("RangeFrom", "ts", True), _c("RangeTo", "ts", True), _c("Sensors", "bigint"), _c("Tasks", "bigint"),
     _c("Failures", "bigint"), _c("Detail", "text")),
    key=("RunId",), indexes=(("StartedAt",),),
)
LEASES = TableSpec("Leases", (_c("Name", "id"), _c("Owner", "id"), _c("ExpiresAt", "ts")), key=("Name",))

TABLES = (SENSOR_VALUES, SENSOR_WRITES, DEAD_LETTERS, PREDICTIONS, RUNS, LEASES)
SENSOR = (_c("Device", "id"), _c("Tag", "id"))


@dataclass(frozen=True)
class Statements:
    """Every statement of the store in one dialect; ``all()`` lists them."""

    schema: tuple[Statement, ...]
    clock: Statement
    upsert_windows: Statement
    upsert_sensor_writes: Statement
    upsert_dead_letters: Statement
    upsert_predictions: Statement
    upsert_run: Statement
    take_lease: Statement
    lease_holder: Statement
    release_lease: Statement
    read_windows: Statement
    read_predictions: Statement
    sensors_written_since: Statement
    read_runs: Statement
    window_span: Statement
    sensor_count: Statement
    dead_letter_reasons: Statement

    def all(self) -> tuple[Statement, ...]:
        return (*self.schema, *(getattr(self, f.name) for f in fields(self) if f.name != "schema"))


def _lease_free_or_ours(d: Dialect, target: str, source: str) -> str:
    owner, expires = d.q("Owner"), d.q("ExpiresAt")
    return f"{d.ids_equal(f'{target}.{owner}', f'{source}.{owner}')} OR {target}.{expires} < {d.now()}"


def _read_for_sensors(d: Dialect, spec: TableSpec, columns: tuple[str, ...], order: tuple[str, ...]) -> str:
    """``columns`` of ``spec`` for the sensors in JSON ``:sensors`` with ``:ts_from < TS <= :ts_to``."""
    selected = ", ".join(
        f"CAST(r.{d.q(n)} AS {d.type_name('int')})" if spec.column(n).kind == "bool" else f"r.{d.q(n)}" for n in columns
    )
    on = " AND ".join(d.ids_equal(f"r.{d.q(n)}", f"s.{d.q(n)}") for n in ("Device", "Tag"))
    return (
        f"SELECT {selected} FROM {d.q(spec.name)} AS r JOIN {d.json_table(SENSOR, 'sensors', 's')} ON {on} "
        f"WHERE r.{d.q('TS')} > :ts_from AND r.{d.q('TS')} <= :ts_to ORDER BY {d.names(order, 'r')}"
    )


@cache
def statements(d: Dialect) -> Statements:
    """The store's statements in dialect ``d``."""
    schema = [d.create_table(t) for t in TABLES] + [d.create_index(t, i) for t in TABLES for i in t.indexes]
    runs = RUNS.columns
    id_type = d.type_name("id")
    sql = {
        "schema": tuple(Statement.of(s) for s in schema),
        "clock": d.clock,
        "upsert_windows": d.upsert(SENSOR_VALUES),
        "upsert_sensor_writes": d.upsert(SENSOR_WRITES),
        "upsert_dead_letters": d.upsert(DEAD_LETTERS),
        "upsert_predictions": d.upsert(PREDICTIONS),
        "upsert_run": d.upsert(RUNS),
        "take_lease": d.upsert(LEASES, only_if=_lease_free_or_ours),
        "lease_holder": f"SELECT {d.q('Owner')} FROM {d.q('Leases')} WHERE {d.q('Name')} = :name",
        "release_lease": (
            f"DELETE FROM {d.q('Leases')} WHERE {d.q('Name')} = :name AND {d.q('Owner')} = :owner"
        ),
        "read_windows": _read_for_sensors(
            d, SENSOR_VALUES, ("TS", "Device", "Tag", "Value", "Count", "Min", "Max"), ("Device", "Tag", "TS")
        ),
        "read_predictions": _read_for_sensors(
            d, PREDICTIONS, tuple(c.name for c in PREDICTIONS.payload), ("Device", "Tag", "TS", "Detector")
        ),
        "sensors_written_since": (
            f"SELECT {d.names(('Device', 'Tag'))} FROM {d.q('SensorWrites')} WHERE {d.q('WrittenAt')} >= :since "
            f"ORDER BY {d.names(('Device', 'Tag'))}"
        ),
        # A NULL filter means "any"; the CAST gives the NULL parameter a type.
        "read_runs": (
            f"SELECT {d.names(tuple(c.name for c in runs))} FROM {d.q('Runs')} "
            f"WHERE (CAST(:kind AS {id_type}) IS NULL OR {d.q('Kind')} = :kind) "
            f"AND (CAST(:status AS {id_type}) IS NULL OR {d.q('Status')} = :status) "
            f"ORDER BY {d.q('StartedAt')} DESC, {d.q('RunId')} DESC OFFSET 0 ROWS FETCH NEXT :limit ROWS ONLY"
        ),
        "window_span": f"SELECT {d.count_big}, MIN({d.q('TS')}), MAX({d.q('TS')}) FROM {d.q('SensorValues')}",
        "sensor_count": (
            f"SELECT {d.count_big} FROM (SELECT DISTINCT {d.names(('Device', 'Tag'))} FROM {d.q('SensorValues')}) AS s"
        ),
        "dead_letter_reasons": (
            f"SELECT c.Code, {d.count_big} FROM (SELECT {d.reason_code(d.q('Reason'))} AS Code "
            f"FROM {d.q('DeadLetters')}) AS c GROUP BY c.Code"
        ),
    }
    return Statements(**{name: value if name == "schema" else Statement.of(value) for name, value in sql.items()})

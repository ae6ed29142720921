"""Every statement the ODBC store issues, for one dialect.

``statements(dialect)`` is the complete list: the store executes nothing
else (tests/store/test_tsql.py parses all of ``statements(TSQL)``
with sqlglot's T-SQL dialect). The tables are ``sensorflow.store.schema``'s
(docs/store.md; types per dialect in docs/azure-sql.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

from sensorflow.store.dialects import Dialect, Statement
from sensorflow.store.schema import (
    DEAD_LETTERS,
    INCIDENT_CUTOFFS,
    INCIDENTS,
    LEASES,
    PREDICTIONS,
    RUNS,
    SENSOR,
    SENSOR_VALUES,
    SENSOR_WRITES,
    STORE_SETTINGS,
    TABLES,
    TableSpec,
)

__all__ = ["Statements", "statements"]


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
    delete_incidents_since: Statement
    upsert_incidents: Statement
    read_incidents: Statement
    read_settings: Statement
    record_settings: Statement
    replace_settings: Statement
    take_lease: Statement
    lease_holder: Statement
    release_lease: Statement
    read_windows: Statement
    read_predictions: Statement
    sensors_written_since: Statement
    window_bounds: Statement
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


def _delete_incidents_since(d: Dialect) -> str:
    """Delete ``:detector``'s incidents of each sensor in JSON ``:cutoffs`` whose End is at or after its Since."""
    table = d.q(INCIDENTS.name)
    on = " AND ".join(d.ids_equal(f"c.{d.q(n)}", f"{table}.{d.q(n)}") for n in ("Device", "Tag"))
    return (
        f"DELETE FROM {table} WHERE {d.q('Detector')} = :detector AND EXISTS (SELECT 1 FROM "
        f"{d.json_table(INCIDENT_CUTOFFS.columns, 'cutoffs', 'c')} WHERE {on} AND {table}.{d.q('End')} >= c.{d.q('Since')})"
    )


def _read_incidents(d: Dialect) -> str:
    """Incidents with End after ``:since``, optionally only open ones, one detector's, the JSON ``:sensors``' (NULL: any)."""
    selected = ", ".join(
        f"CAST(i.{d.q(c.name)} AS {d.type_name('int')})" if c.kind == "bool" else f"i.{d.q(c.name)}" for c in INCIDENTS.columns
    )
    on = " AND ".join(d.ids_equal(f"i.{d.q(n)}", f"s.{d.q(n)}") for n in ("Device", "Tag"))
    return (
        f"SELECT {selected} FROM {d.q(INCIDENTS.name)} AS i "
        f"WHERE (CAST(:since AS {d.type_name('ts')}) IS NULL OR i.{d.q('End')} > :since) "
        f"AND (:open_only = 0 OR i.{d.q('Open')} = CAST(1 AS {d.type_name('bool')})) "
        f"AND (CAST(:detector AS {d.type_name('id')}) IS NULL OR i.{d.q('Detector')} = :detector) "
        f"AND (:any_sensor = 1 OR EXISTS (SELECT 1 FROM {d.json_table(SENSOR, 'sensors', 's')} WHERE {on})) "
        f"ORDER BY i.{d.q('Start')} DESC, i.{d.q('PeakScore')} DESC, {d.names(('Device', 'Tag', 'Detector'), 'i')}"
    )


def _never(d: Dialect, target: str, source: str) -> str:
    """An upsert condition that keeps every existing row: insert new keys only."""
    return "1 = 0"


def _window_bounds(d: Dialect) -> str:
    """Each sensor of JSON ``:sensors`` with its first and newest ``TS`` (NULL without windows): two key seeks."""
    on = " AND ".join(d.ids_equal(f"v.{d.q(n)}", f"s.{d.q(n)}") for n in ("Device", "Tag"))
    bound = {
        fn: f"(SELECT {fn}(v.{d.q('TS')}) FROM {d.q('SensorValues')} AS v WHERE {on})" for fn in ("MIN", "MAX")
    }
    return f"SELECT {d.names(('Device', 'Tag'), 's')}, {bound['MIN']}, {bound['MAX']} FROM {d.json_table(SENSOR, 'sensors', 's')}"


@cache
def statements(d: Dialect) -> Statements:
    """The store's statements in dialect ``d``."""
    runs = RUNS.columns
    id_type = d.type_name("id")
    sql = {
        "schema": tuple(Statement.of(s) for s in d.schema(TABLES)),
        "clock": d.clock,
        "upsert_windows": d.upsert(SENSOR_VALUES),
        "upsert_sensor_writes": d.upsert(SENSOR_WRITES),
        "upsert_dead_letters": d.upsert(DEAD_LETTERS),
        "upsert_predictions": d.upsert(PREDICTIONS),
        "upsert_run": d.upsert(RUNS),
        "delete_incidents_since": _delete_incidents_since(d),
        "upsert_incidents": d.upsert(INCIDENTS),
        "read_incidents": _read_incidents(d),
        "read_settings": f"SELECT {d.names(('Name', 'Value'))} FROM {d.q(STORE_SETTINGS.name)}",
        "record_settings": d.upsert(STORE_SETTINGS, only_if=_never),
        "replace_settings": d.upsert(STORE_SETTINGS),
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
        "window_bounds": _window_bounds(d),
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

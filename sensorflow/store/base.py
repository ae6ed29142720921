"""The store interface every backend implements, split by role (``open_store`` in the package picks a backend).

Tables (see docs/store.md): ``SensorValues`` keyed by (Device, Tag, TS),
``DeadLetters`` keyed by (Partition, Position, Element), ``Predictions``
keyed by (Device, Tag, TS, Detector). Every write is an upsert that replaces
the row with the same key, in one transaction per call, so replays converge
to the same tables. Times cross this interface as int64 ns since the epoch
(UTC); window ``TS`` is the window end.

Roles, each a small ABC a caller can ask for instead of the whole ``Store``:
``WindowWriter`` (the dataflow), ``WindowReader``, ``PredictionWriter``,
``RunLedger`` (the sidecar's runs and leases), ``SettingsRecord`` (what
the store was made with), ``IncidentStore`` (the
``Incidents`` table, keyed by (Device, Tag, Detector, Start)), and the two
groups callers need, ``ScoringStore`` (a scoring task: windows in,
predictions and incidents out) and ``PlanningStore`` (the sidecar).
``Store`` is all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Self

import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.dead_letters import ReasonCode
from sensorflow.records.predictions import INCIDENT_SCHEMA
from sensorflow.records.runs import RunRecord

__all__ = [
    "IncidentStore",
    "PlanningStore",
    "PredictionWriter",
    "RunLedger",
    "ScoringStore",
    "SettingsRecord",
    "Store",
    "StoreConnection",
    "StoreError",
    "StoreSummary",
    "WindowReader",
    "WindowTransaction",
    "WindowWriter",
    "incidents_to_write",
    "last_of_runs",
    "last_per_key",
]




class StoreError(RuntimeError):
    """The store cannot be opened or used (bad URL, missing driver, schema mismatch)."""


@dataclass(frozen=True)
class StoreSummary:
    """What the tables hold now."""

    windows: int
    sensors: int
    first_window: str | None
    last_window: str | None
    dead_letters: dict[str, int] = field(default_factory=dict)

    @property
    def late(self) -> int:
        return self.dead_letters.get(ReasonCode.LATE, 0)

    @property
    def malformed(self) -> int:
        return sum(n for reason, n in self.dead_letters.items() if reason != ReasonCode.LATE)




def last_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table`` sorted by ``keys``, keeping only the last row of each key (a later write replaces an earlier)."""
    return last_of_runs(table.sort_by([(k, "ascending") for k in keys]), keys)  # a stable sort


def last_of_runs(table: pa.Table, keys: list[str]) -> pa.Table:
    """Of a table already sorted by ``keys``, the last row of each run of equal keys."""
    n = table.num_rows
    if n < 2:
        return table
    same = None
    for k in keys:
        column = table[k].combine_chunks()
        equal = pc.fill_null(pc.equal(column.slice(1), column.slice(0, n - 1)), False)
        same = equal if same is None else pc.and_(same, equal)
    if not pc.any(same).as_py():
        return table
    superseded = pa.concat_arrays([same, pa.array([False])])  # row i is replaced by row i + 1
    return table.filter(pc.invert(superseded))


def incidents_to_write(detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table) -> pa.Table:
    """``incidents`` checked for ``replace_incidents`` (ValueError if a row is not ``detector``'s or its sensor has no
    cutoff), the last row of each key kept, in key order."""
    incidents = incidents.select(INCIDENT_SCHEMA.names).cast(INCIDENT_SCHEMA)
    if incidents.num_rows == 0:
        return incidents
    others = pc.unique(incidents["detector"].filter(pc.not_equal(incidents["detector"], detector))).to_pylist()
    if others or incidents["detector"].null_count:
        raise ValueError(f"replace_incidents for detector {detector!r} got rows of {others or [None]}")
    sensors = set(zip(incidents["device"].to_pylist(), incidents["tag"].to_pylist()))
    missing = sorted(sensors - since_ns.keys(), key=str)
    if missing:
        raise ValueError(f"replace_incidents got rows of sensors without a cutoff in since_ns: {missing[:5]}")
    return last_per_key(incidents, ["device", "tag", "detector", "start"])


class WindowTransaction:
    """Window tables, and the dead letters of the same batches, upserted as they come and committed together
    (one writer at a time).

    This default gathers the tables and upserts them at ``commit``, the windows in one
    ``upsert_windows``, then the dead letters in one ``upsert_dead_letters``; a store that can
    hold a transaction open (SQLite) writes each table as it is added, so the work is done by
    the time the commit is asked for. ``rows`` counts window rows only.
    """

    def __init__(self, store: WindowWriter):
        self._store = store
        self._tables: list[pa.Table] = []
        self._dead_letters: list[pa.Table] = []
        self.rows = 0

    def add(self, windows: pa.Table) -> None:
        self._tables.append(windows)
        self.rows += windows.num_rows

    def add_dead_letters(self, dead_letters: pa.Table) -> None:
        """Rows of ``records.dead_letters.DEAD_LETTER_SCHEMA``, committed by the next ``commit``."""
        if dead_letters.num_rows:
            self._dead_letters.append(dead_letters)

    def commit(self) -> int:
        """Commit what was added (nothing to do when nothing was); returns its window rows."""
        tables, letters, rows = self._tables, self._dead_letters, self.rows
        self._tables, self._dead_letters, self.rows = [], [], 0
        if tables or letters:
            self._write(_concat(tables), _concat(letters))
        return rows

    def _write(self, windows: pa.Table | None, dead_letters: pa.Table | None) -> None:
        """Upsert what ``commit`` gathered (a store that writes both in one transaction overrides this)."""
        if windows is not None:
            self._store.upsert_windows(windows)
        if dead_letters is not None:
            self._store.upsert_dead_letters(dead_letters)

    def rollback(self) -> None:
        self._tables, self._dead_letters, self.rows = [], [], 0


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    """The tables as one, or None if they hold no rows."""
    tables = [t for t in tables if t.num_rows]
    return (pa.concat_tables(tables) if len(tables) > 1 else tables[0]) if tables else None


class StoreConnection(ABC):
    """An open store, whatever its role: its URL, and connections to release (also by ``with``)."""

    url: str

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SettingsRecord(StoreConnection):
    """What the store was made with (``StoreSettings``: name -> value text); ``sensorflow.store.metadata`` reads it."""

    @abstractmethod
    def read_settings(self) -> dict[str, str]:
        """The recorded settings (empty if none); the table must exist (``create_schema``)."""

    @abstractmethod
    def record_settings(self, values: dict[str, str], replace: bool = False) -> dict[str, str]:
        """Record ``values`` in one transaction and return all recorded settings after it.

        Without ``replace`` a setting already recorded keeps its value (of two callers
        recording the same new setting, the first wins), so a caller compares what it gets back.
        """


class WindowWriter(StoreConnection):
    """What the dataflow writes: windows and dead letters."""

    def window_transaction(self) -> WindowTransaction:
        """Upserts of window tables that commit together (see :class:`WindowTransaction`)."""
        return WindowTransaction(self)

    @abstractmethod
    def create_schema(self) -> None:
        """Create missing tables and indexes; safe to call on every start."""

    @abstractmethod
    def upsert_windows(self, windows: pa.Table) -> int:
        """Write rows of ``records.windows.WINDOW_SCHEMA``, replacing same-key rows; one transaction."""

    @abstractmethod
    def upsert_dead_letters(self, dead_letters: pa.Table) -> int:
        """Write rows of ``records.dead_letters.DEAD_LETTER_SCHEMA``, replacing same-key rows; one transaction."""


class WindowReader(StoreConnection):
    """What the batch jobs and humans read of the windows."""

    @abstractmethod
    def read_windows(self, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
        """Windows of ``sensors`` with ``ts_from < TS <= ts_to``, ordered by sensor then TS."""

    @abstractmethod
    def sensors_written_since(self, since_ns: int) -> list[tuple[str, str]]:
        """Sensors with a window row written (``WrittenAt``) at or after ``since_ns``."""

    @abstractmethod
    def window_bounds(self, sensors: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        """Each sensor's first and newest window end ever (ns); sensors without windows are absent.

        Two index seeks per sensor on the (Device, Tag, TS) key, whatever the history's length.
        """

    @abstractmethod
    def summary(self) -> StoreSummary:
        """Counts for humans: window rows, sensors, dead letters per reason code."""


class PredictionWriter(StoreConnection):
    """The scores the batch jobs write, and read back."""

    @abstractmethod
    def upsert_predictions(self, predictions: pa.Table) -> int:
        """Write rows of ``records.predictions.PREDICTION_SCHEMA``, replacing same-key rows; one transaction."""

    @abstractmethod
    def read_predictions(self, sensors: list[tuple[str, str]], ts_from: int, ts_to: int) -> pa.Table:
        """Predictions of ``sensors`` with ``ts_from < TS <= ts_to``."""


class IncidentStore(StoreConnection):
    """The incidents scoring adds up to: runs of flagged windows per sensor and detector."""

    @abstractmethod
    def replace_incidents(self, detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table) -> int:
        """Redo ``detector``'s incidents of the sensors in ``since_ns`` from their cutoffs on; one transaction.

        Deletes each sensor's incidents of ``detector`` with ``End >= since_ns[sensor]``, then
        upserts the rows of ``incidents`` (``records.predictions.INCIDENT_SCHEMA``, all of
        ``detector`` and of sensors in ``since_ns``; a later row replaces an earlier one with
        the same key). Returns the rows written. Idempotent: the same call twice leaves the
        same table. Rows of another detector or sensor are a ValueError, before any write.
        """

    @abstractmethod
    def read_incidents(
        self,
        since_ns: int | None = None,
        open_only: bool = False,
        detector: str | None = None,
        sensors: list[tuple[str, str]] | None = None,
    ) -> pa.Table:
        """Incidents (``INCIDENT_SCHEMA``) with ``End > since_ns`` (all if None), newest Start first, then PeakScore descending.

        ``open_only``: only those that may go on; ``detector``, ``sensors``: only theirs (None: all).
        """


class RunLedger(StoreConnection):
    """The sidecar's runs and leases, on the database clock."""

    @abstractmethod
    def database_time(self) -> int:
        """The database clock now (ns): the clock ``WrittenAt``, runs and leases use."""

    @abstractmethod
    def upsert_run(self, run: RunRecord) -> None:
        """Insert or replace the run with ``run.run_id``; one transaction."""

    @abstractmethod
    def read_runs(self, kind: str | None = None, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Runs newest first (by ``started_at``), optionally only one kind and/or status."""

    @abstractmethod
    def try_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``owner`` until database time + ttl.

        True if ``owner`` holds it afterwards: it was free, expired, or already
        ``owner``'s. Atomic: of two callers racing for a free lease exactly one wins.
        """

    @abstractmethod
    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it (no-op otherwise)."""


class ScoringStore(WindowReader, PredictionWriter, IncidentStore):
    """What a scoring task uses: it reads windows and writes their predictions and incidents."""

    @abstractmethod
    def upsert_scores(
        self, predictions: pa.Table, detector: str, since_ns: dict[tuple[str, str], int], incidents: pa.Table,
    ) -> tuple[int, int]:
        """``upsert_predictions(predictions)`` and ``replace_incidents(detector, since_ns, incidents)`` in ONE transaction.

        Both or neither: a scoring task's predictions and the incidents they make are
        committed together. The incidents are checked as ``replace_incidents`` checks them
        (ValueError before any write); empty ``since_ns`` and ``incidents`` touch no incident.
        Returns (prediction rows, incident rows written).
        """


class PlanningStore(WindowReader, RunLedger):
    """What the sidecar plans runs with: which sensors got windows since, and its runs and leases."""


class Store(WindowWriter, ScoringStore, PlanningStore, SettingsRecord):
    """One SQL database in every role: what each backend implements and ``open_store`` returns."""

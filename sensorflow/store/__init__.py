"""The SQL store shared by the dataflow (writes windows) and the batch jobs (reads them, writes
predictions, incidents, runs and leases): one interface split by role (``base``), the tables described once
(``schema``), one factory for its backends (here).

docs/store.md has the tables.
"""

from sensorflow.records.runs import RunRecord
from sensorflow.store.base import (
    IncidentStore,
    PlanningStore,
    PredictionWriter,
    RunLedger,
    ScoringStore,
    SettingsRecord,
    Store,
    StoreConnection,
    StoreError,
    StoreSummary,
    WindowReader,
    WindowTransaction,
    WindowWriter,
)
from sensorflow.store.odbc_retry import RetryPolicy

__all__ = [
    "IncidentStore",
    "PlanningStore",
    "PredictionWriter",
    "RetryPolicy",
    "RunLedger",
    "RunRecord",
    "ScoringStore",
    "SettingsRecord",
    "Store",
    "StoreConnection",
    "StoreError",
    "StoreSummary",
    "WindowReader",
    "WindowTransaction",
    "WindowWriter",
    "open_store",
]


def open_store(url: str, retry: RetryPolicy | None = None) -> Store:
    """A store for ``url``: ``sqlite:///PATH``, ``postgresql+odbc:...`` or ``mssql+odbc:...`` (docs/azure-sql.md).

    ``retry``: how long a server store retries transient errors (None: the default budget).
    """
    if url.startswith("sqlite:///"):
        from sensorflow.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql+odbc:", "mssql+odbc:")):
        from sensorflow.store.odbc import OdbcStore

        return OdbcStore(url, retry_policy=retry)
    raise StoreError(f"unsupported store URL {url!r}: expected sqlite:///PATH, postgresql+odbc:... or mssql+odbc:...")

"""Where data leaves: the SQL store behind one small interface."""

from sensorflow.windowing.store.base import RunRecord, Store, StoreError, StoreSummary, WindowTransaction, open_store

__all__ = ["RunRecord", "Store", "StoreError", "StoreSummary", "WindowTransaction", "open_store"]

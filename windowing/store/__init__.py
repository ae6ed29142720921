"""Where data leaves: the SQL store behind one small interface."""

from windowing.store.base import Store, StoreError, StoreSummary, open_store

__all__ = ["Store", "StoreError", "StoreSummary", "open_store"]

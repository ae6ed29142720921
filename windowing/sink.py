"""Bytewax sinks that hand batches to a store; each write is one transaction."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from ingest.batches import DeadLetterBatch
from windowing.stats import RunStats
from windowing.store import Store
from windowing.tumbling import WindowBatch

__all__ = ["WindowSink", "DeadLetterSink"]


class _StorePartition(StatelessSinkPartition):
    def __init__(self, store: Store, write: Callable[[Store, pa.Table], int], count: Callable[[int], None]):
        self._store = store
        self._write = write
        self._count = count

    def write_batch(self, items: list) -> None:
        tables = [item.table for item in items if item.table.num_rows]
        if tables:
            # Committed before returning: Bytewax may snapshot as soon as we return.
            self._count(self._write(self._store, pa.concat_tables(tables)))

    def close(self) -> None:
        self._store.close()


class WindowSink(DynamicSink[WindowBatch]):
    """Upserts closed windows into ``SensorValues``."""

    def __init__(self, open_store: Callable[[], Store], stats: RunStats):
        self._open_store = open_store
        self._stats = stats

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self._open_store(), lambda s, t: s.upsert_windows(t), self._stats.add_windows)


class DeadLetterSink(DynamicSink[DeadLetterBatch]):
    """Upserts dead letters (late readings included) into ``DeadLetters``."""

    def __init__(self, open_store: Callable[[], Store], stats: RunStats):
        self._open_store = open_store
        self._stats = stats

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self._open_store(), lambda s, t: s.upsert_dead_letters(t), self._stats.add_dead_letters)

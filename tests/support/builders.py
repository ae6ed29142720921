"""Window tables for tests: the one place a test builds rows of ``WINDOW_SCHEMA``.

``window_table`` takes columns; each argument is a sequence (one item per row) or a scalar (the
same for every row). ``min`` and ``max`` default to ``value``. ``fleet_windows`` makes a few
sensors of 5 s windows with a known spike; ``add_windows`` upserts them into a store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from sensorflow.records.windows import WINDOW_READ_SCHEMA, WINDOW_SCHEMA
from sensorflow.store import Store

__all__ = ["S", "T0", "W", "add_windows", "fleet_windows", "window_table"]

S = 1_000_000_000
W = 5 * S
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z

Column = Sequence | np.ndarray | pa.Array | float | int | str


def window_table(
    window_end: Column,
    device: Column,
    tag: Column,
    value: Column = 1.0,
    count: Column = 1,
    min: Column | None = None,
    max: Column | None = None,
    *,
    read: bool = False,
) -> pa.Table:
    """Window rows; ``read`` names the first column ``ts`` (``WINDOW_READ_SCHEMA``, as a store reads them back)."""
    columns = {"window_end": window_end, "device": device, "tag": tag, "value": value, "count": count}
    columns["min"] = value if min is None else min
    columns["max"] = value if max is None else max
    rows = next((len(c) for c in columns.values() if not _scalar(c)), 1)
    schema = WINDOW_READ_SCHEMA if read else WINDOW_SCHEMA
    arrays = [_column(c, rows, field.type) for c, field in zip(columns.values(), schema)]
    return pa.table(arrays, schema=schema)


def fleet_windows(sensors: list[tuple[str, str]], first: int, n: int, seed: int = 0, spike_at: int | None = None) -> pa.Table:
    """``n`` windows per sensor ending at ``first + W .. first + n*W``; value 50 +- 1, a +40 spike at index ``spike_at``."""
    rng = np.random.default_rng(seed)
    ends = first + np.arange(1, n + 1, dtype=np.int64) * W
    value = rng.normal(50.0, 1.0, (len(sensors), n))
    if spike_at is not None:
        value[:, spike_at] += 40.0
    value = value.ravel()
    return window_table(
        np.tile(ends, len(sensors)),
        np.repeat([d for d, _ in sensors], n),
        np.repeat([t for _, t in sensors], n),
        value,
        5,
        value - 1.0,
        value + 1.0,
    )


def add_windows(store: Store, sensors: list[tuple[str, str]], first: int, n: int, **kw) -> None:
    store.upsert_windows(fleet_windows(sensors, first, n, **kw))


def _scalar(column: Column) -> bool:
    return isinstance(column, (int, float, str, np.generic))


def _column(column: Column, rows: int, type_: pa.DataType) -> pa.Array:
    if _scalar(column):
        return pa.array([column] * rows, type_)
    if isinstance(column, np.ndarray) and column.dtype.kind == "U":
        column = column.tolist()
    return pa.array(column, type_) if not isinstance(column, pa.Array) else column.cast(type_)

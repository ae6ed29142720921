"""Window tables for batch-job tests: a few sensors of 5 s windows with known anomalies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sensorflow.store import Store
from sensorflow.records.windows import WINDOW_SCHEMA

S = 1_000_000_000
W = 5 * S
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def window_table(sensors: list[tuple[str, str]], first: int, n: int, seed: int = 0, spike_at: int | None = None) -> pa.Table:
    """``n`` windows per sensor ending at ``first + W .. first + n*W``; value 50 +- 1, a +40 spike at index ``spike_at``."""
    rng = np.random.default_rng(seed)
    ends = first + np.arange(1, n + 1, dtype=np.int64) * W
    value = rng.normal(50.0, 1.0, (len(sensors), n))
    if spike_at is not None:
        value[:, spike_at] += 40.0
    return pa.table(
        {
            "window_end": np.tile(ends, len(sensors)),
            "device": np.repeat([d for d, _ in sensors], n),
            "tag": np.repeat([t for _, t in sensors], n),
            "value": value.ravel(),
            "count": np.full(len(sensors) * n, 5, dtype=np.int64),
            "min": value.ravel() - 1.0,
            "max": value.ravel() + 1.0,
        },
        schema=WINDOW_SCHEMA,
    )


def add_windows(store: Store, sensors: list[tuple[str, str]], first: int, n: int, **kw) -> None:
    store.upsert_windows(window_table(sensors, first, n, **kw))

"""Closed windows as they flow from the window step to the store, and the watermark bounds.

Times are int64 ns since the Unix epoch, UTC. A window is named by its END
(ASA's ``System.Timestamp``); ends are multiples of the window length since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["BEFORE_TIME", "END_OF_TIME", "WINDOW_SCHEMA", "WINDOW_READ_SCHEMA", "WindowBatch"]

BEFORE_TIME = int(np.iinfo(np.int64).min)
"""Watermark of a partition that has read nothing yet."""
END_OF_TIME = int(np.iinfo(np.int64).max)
"""Watermark of a partition at end of input."""

WINDOW_SCHEMA = pa.schema(
    [
        ("window_end", pa.int64()),
        ("device", pa.string()),
        ("tag", pa.string()),
        ("value", pa.float64()),  # mean
        ("count", pa.int64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
    ]
)

WINDOW_READ_SCHEMA = WINDOW_SCHEMA.set(0, WINDOW_SCHEMA.field("window_end").with_name("ts"))
"""Windows as read back: the written schema with ``window_end`` named ``ts`` (the table's TS)."""


@dataclass(frozen=True, eq=False)
class WindowBatch:
    """Closed windows, one row per (device, tag, window), schema ``WINDOW_SCHEMA``."""

    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

"""Predictions: one score per sensor and window, and the incidents they add up to, as the batch jobs write them to the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

__all__ = ["INCIDENT_SCHEMA", "PREDICTION_SCHEMA", "incidents_from_rows"]

PREDICTION_SCHEMA = pa.schema(
    [
        ("ts", pa.int64()),
        ("device", pa.string()),
        ("tag", pa.string()),
        ("value", pa.float64()),
        ("score", pa.float64()),
        ("is_anomaly", pa.bool_()),
        ("detector", pa.string()),
        ("model_version", pa.string()),
    ]
)

INCIDENT_SCHEMA = pa.schema(
    [
        ("device", pa.string()),
        ("tag", pa.string()),
        ("detector", pa.string()),
        ("start", pa.int64()),  # the first flagged window's end, ns
        ("end", pa.int64()),  # the last flagged window's end, ns
        ("peak_score", pa.float64()),
        ("flagged_windows", pa.int64()),
        ("open", pa.bool_()),  # it may go on: the newest scored window is within the gap of its end
        ("updated_at", pa.int64()),  # when it was written, ns
    ]
)
"""Incidents: consecutive flagged windows of one sensor and detector, as the store's ``Incidents`` table holds them."""


def incidents_from_rows(rows: Sequence[Sequence[Any]], to_ns: Callable[[list[Any]], pa.Array]) -> pa.Table:
    """An ``INCIDENT_SCHEMA`` table of a store's rows (Device, Tag, Detector, Start, End, PeakScore,
    FlaggedWindows, Open, UpdatedAt); ``to_ns`` turns one column of the backend's timestamps into int64 ns."""
    if not rows:
        return INCIDENT_SCHEMA.empty_table()
    device, tag, detector, start, end, peak, flagged, open_, updated = (list(c) for c in zip(*rows))
    return pa.table(
        [
            pa.array(device, pa.string()), pa.array(tag, pa.string()), pa.array(detector, pa.string()),
            to_ns(start), to_ns(end), pa.array(peak, pa.float64()), pa.array(flagged, pa.int64()),
            pa.array([bool(x) for x in open_], pa.bool_()), to_ns(updated),
        ],
        schema=INCIDENT_SCHEMA,
    )

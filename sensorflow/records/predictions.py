"""Predictions: one score per sensor and window, and the incidents they add up to, as the batch jobs write them to the store."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["INCIDENT_SCHEMA", "PREDICTION_SCHEMA"]

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

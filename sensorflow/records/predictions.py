"""Predictions: one score per sensor and window, as the batch jobs write them to the store."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["PREDICTION_SCHEMA"]

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

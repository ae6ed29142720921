"""Batch references the streaming code is checked against (pandas, plain loops)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def accepted_and_late(readings: pd.DataFrame, lateness_ns: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The contract's lateness rule, one reading at a time, per partition in read order."""
    late = np.zeros(len(readings), dtype=bool)
    for _, rows in readings.groupby("partition", sort=False):
        watermark = None
        for i, ts in zip(rows.index, rows["ts"]):
            if watermark is not None and ts < watermark:
                late[i] = True
                continue
            candidate = ts - lateness_ns
            watermark = candidate if watermark is None else max(watermark, candidate)
    return readings[~late], readings[late]


def windows(readings: pd.DataFrame, length_ns: int) -> pd.DataFrame:
    """Tumbling windows labelled by their right edge: mean, count, min, max per sensor."""
    if readings.empty:
        return pd.DataFrame(columns=["TS", "Device", "Tag", "Value", "Count", "Min", "Max"])
    frame = readings.assign(end=(readings["ts"] // length_ns + 1) * length_ns)
    grouped = frame.groupby(["device", "tag", "end"])["value"].agg(["mean", "count", "min", "max"]).reset_index()
    grouped["TS"] = pd.to_datetime(grouped["end"], unit="ns").dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    out = grouped.rename(
        columns={"device": "Device", "tag": "Tag", "mean": "Value", "count": "Count", "min": "Min", "max": "Max"}
    )[["TS", "Device", "Tag", "Value", "Count", "Min", "Max"]]
    return out.sort_values(["Device", "Tag", "TS"]).reset_index(drop=True)

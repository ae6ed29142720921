"""Window features both detectors read: order statistics, repeated readings, runs of missing slots.

Pure numpy over one sensor's window columns; nothing here knows a detector's limits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gap_runs", "repeats", "stuck_runs", "upper_quantile"]


def upper_quantile(x: np.ndarray, q: float) -> float:
    """The ``q`` quantile (lower order statistic) of a non-empty 1-D array."""
    at = int(q * (x.shape[0] - 1))
    return float(np.partition(x, at)[at])


def repeats(values: np.ndarray, spread: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window: readings repeating the previous one exactly, and whether it continues a flat run.

    A flat window (``max == min``) of ``count`` readings holds ``count - 1``
    repeats, plus one if the previous window was flat at the same value.
    """
    flat = spread == 0
    link = np.zeros(values.shape[0], dtype=bool)
    link[1:] = flat[1:] & flat[:-1] & (values[1:] == values[:-1])
    return np.where(flat, count - 1, 0).astype(np.float64) + link, link


def stuck_runs(values: np.ndarray, spread: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per window: the repeats of the whole run of flat windows it belongs to (0 if the window is not flat)."""
    per_window, link = repeats(values, spread, count)
    run = np.cumsum(~link) - 1
    return np.where(spread == 0, np.bincount(run, weights=per_window)[run], 0.0)


def gap_runs(count: np.ndarray) -> np.ndarray:
    """Per slot: the length of the run of missing slots it belongs to (0 for slots with readings)."""
    missing = count == 0
    if not missing.any():
        return np.zeros(count.shape[0])
    run = np.cumsum(np.r_[True, missing[1:] != missing[:-1]]) - 1
    return np.where(missing, np.bincount(run)[run], 0).astype(np.float64)

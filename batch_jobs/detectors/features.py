"""Window features both detectors read: order statistics, repeated readings, runs of missing slots.

Pure numpy over one sensor's window columns; nothing here knows a detector's limits.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["gap_runs", "repeats", "median_of_medians", "sliding_median", "stuck_runs", "true_runs", "upper_quantile", "upper_quantiles"]


def upper_quantile(x: np.ndarray, q: float) -> float:
    """The ``q`` quantile (lower order statistic) of a non-empty 1-D array."""
    at = int(q * (x.shape[0] - 1))
    return float(np.partition(x, at)[at])


def upper_quantiles(x: np.ndarray, *qs: float) -> tuple[float, ...]:
    """``upper_quantile`` of each of ``qs``, with one partition."""
    at = [int(q * (x.shape[0] - 1)) for q in qs]
    part = np.partition(x, at)
    return tuple(float(part[i]) for i in at)


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def sliding_median(v: np.ndarray, k: int) -> np.ndarray:
    """Medians of every ``k`` consecutive values (``len(v) - k + 1`` of them; none when ``v`` is shorter).

    ``k`` 3 and 5 take min/max networks (exact, ~7x faster than ``np.median``
    over a sliding view, which sorts every row); any other ``k`` the view.
    """
    n = v.shape[0]
    if n < k:
        return np.zeros(0)
    if k == 3:
        return _median3(v[:-2], v[1:-1], v[2:])
    if k == 5:
        # The median of 5: drop the smallest and the largest of the first four, then the median of 3 with the fifth.
        a, b, c, d = v[:-4], v[1:-3], v[2:-2], v[3:-1]
        low, high = np.maximum(np.minimum(a, b), np.minimum(c, d)), np.minimum(np.maximum(a, b), np.maximum(c, d))
        return _median3(low, high, v[4:])
    return np.median(sliding_window_view(v, k), axis=1)


def median_of_medians(v: np.ndarray, k: int) -> np.ndarray:
    """A stand-in for the sliding median of ``k`` >= 9: the median of three medians of 5 spread over each ``k`` values.

    ``len(v) - k + 1`` values, as ``sliding_median``; min/max networks only, so
    its cost does not grow with ``k`` (``np.median`` over a sliding view sorts
    every row). Like the median it ignores up to two outlying values anywhere
    in the ``k``, and more when they fall in one group of 5.
    """
    n = v.shape[0]
    if k < 9:
        raise ValueError(f"median_of_medians needs k >= 9, got {k}")
    if n < k:
        return np.zeros(0)
    fives = sliding_median(v, 5)  # fives[j] covers v[j..j+4]
    m = n - k + 1
    middle = (k - 5) // 2
    return _median3(fives[:m], fives[middle:middle + m], fives[k - 5:k - 5 + m])


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
    change = np.ones(count.shape[0], dtype=bool)
    np.not_equal(missing[1:], missing[:-1], out=change[1:])
    run = np.cumsum(change) - 1
    return np.where(missing, np.bincount(run)[run], 0).astype(np.float64)


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index (inclusive) of each run of True in ``mask``, in order."""
    at = np.flatnonzero(mask)
    if at.shape[0] == 0:
        return at, at
    breaks = np.flatnonzero(np.diff(at) > 1)
    return at[np.concatenate(([0], breaks + 1))], at[np.concatenate((breaks, [at.shape[0] - 1]))]

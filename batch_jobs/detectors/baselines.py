"""``mad-z``: the one-line baseline, ``|value - median| / (1.4826 x MAD) > 6`` over the training windows.

Kept for comparisons (``sensorflow evaluate``, ``bench/quality.py``): it is
what most people try first, and it shows why per-sensor calibration matters
(a training MAD of 0 flags every value that differs from the median).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from sensorflow.batch_jobs.detectors.base import Detector, Model, Scores, SensorWindows

__all__ = ["MadZ", "MadZModel"]

_MAD_TO_SD = 1.4826
Z_LIMIT = 6.0


class MadZModel(Model):
    """A training median and robust SD; score = z / 6."""

    detector: ClassVar[str] = "mad-z"

    def __init__(self, median: float, robust_sd: float) -> None:
        if not (np.isfinite(median) and np.isfinite(robust_sd) and robust_sd >= 0):
            raise ValueError(f"mad-z: bad median {median} or robust SD {robust_sd}")
        self.median, self.robust_sd = float(median), float(robust_sd)

    def score(self, windows: SensorWindows) -> Scores:
        away = np.abs(windows.value - self.median)
        if self.robust_sd > 0:
            z = away / self.robust_sd
        else:  # MAD 0: any departure from the median is infinitely many SDs
            z = np.where(away > 0, np.inf, 0.0)
        score = np.minimum(z / Z_LIMIT, 1e300)
        return Scores(ts=windows.ts, value=windows.value, score=score, is_anomaly=score >= 1.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"median": np.array([self.median]), "robust_sd": np.array([self.robust_sd])}

    def params(self) -> dict[str, Any]:
        return {"z_limit": Z_LIMIT}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> MadZModel:
        try:
            return cls(float(arrays["median"][0]), float(arrays["robust_sd"][0]))
        except (KeyError, IndexError) as e:
            raise ValueError(f"mad-z model is missing {e}") from None


class MadZ(Detector):
    """Fits the median and 1.4826 x MAD of a sensor's training window means."""

    name: ClassVar[str] = "mad-z"
    min_windows: ClassVar[int] = 12

    def fit(self, windows: SensorWindows) -> MadZModel:
        self._check_enough(windows)
        v = windows.value[windows.count > 0] if windows.count.shape[0] else windows.value
        median = float(np.median(v))
        return MadZModel(median, _MAD_TO_SD * float(np.median(np.abs(v - median))))

"""``seed-ocsvm``: the original's model, StandardScaler + OneClassSVM on the window means.

Fitting is exactly the seed's ``Pipeline([StandardScaler(), OneClassSVM(nu=0.0001,
kernel='rbf', gamma=0.01)])`` on the 1-D column of ``Value`` (the rows the
query returned: missing slots are not rows). The fitted pipeline is fully
described by the scaler's mean and scale and the SVM's support vectors, dual
coefficients and intercept, so the model keeps only those arrays and scores
with its own numpy RBF decision function::

    decision(v) = sum_i dual_coef[i] * exp(-gamma * (x - sv[i])**2) + intercept,  x = (v - mean) / scale

The seed stored ``predict() == -1`` as Prediction 1; libsvm predicts -1
exactly when the decision value is <= 0, so ``is_anomaly = decision <= 0`` and
``score = -decision`` (higher = more anomalous).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from sensorflow.batch_jobs.detectors.base import Detector, Model, Scores, SensorWindows

__all__ = ["GAMMA", "NU", "SeedOcsvm", "SeedOcsvmModel"]

NU = 0.0001
GAMMA = 0.01
# Rows of values per block when evaluating the kernel, to bound memory.
_BLOCK = 65_536


class SeedOcsvmModel(Model):
    """A fitted scaler + one-class SVM, as arrays."""

    detector: ClassVar[str] = "seed-ocsvm"

    def __init__(
        self, mean: float, scale: float, support_vectors: np.ndarray, dual_coef: np.ndarray,
        intercept: float, gamma: float = GAMMA, nu: float = NU,
    ) -> None:
        support_vectors = np.asarray(support_vectors, dtype=np.float64).reshape(-1)
        dual_coef = np.asarray(dual_coef, dtype=np.float64).reshape(-1)
        if support_vectors.shape != dual_coef.shape or support_vectors.shape[0] == 0:
            raise ValueError(
                f"seed-ocsvm needs as many dual coefficients as support vectors (>= 1), "
                f"got {dual_coef.shape[0]} and {support_vectors.shape[0]}"
            )
        if not (np.isfinite(mean) and np.isfinite(scale) and scale > 0 and np.isfinite(intercept) and gamma > 0):
            raise ValueError(f"seed-ocsvm: bad scaler/SVM constants mean={mean} scale={scale} gamma={gamma}")
        self.mean = float(mean)
        self.scale = float(scale)
        self.support_vectors = support_vectors
        self.dual_coef = dual_coef
        self.intercept = float(intercept)
        self.gamma = float(gamma)
        self.nu = float(nu)

    def decision_function(self, values: np.ndarray) -> np.ndarray:
        """The SVM's decision value of each raw (unscaled) window mean; > 0 is normal."""
        x = (np.asarray(values, dtype=np.float64) - self.mean) / self.scale
        out = np.empty(x.shape[0], dtype=np.float64)
        for lo in range(0, x.shape[0], _BLOCK):
            block = x[lo:lo + _BLOCK]
            kernel = np.exp(-self.gamma * np.square(block[:, None] - self.support_vectors[None, :]))
            out[lo:lo + _BLOCK] = kernel @ self.dual_coef + self.intercept
        return out

    def score(self, windows: SensorWindows) -> Scores:
        decision = self.decision_function(windows.value)
        return Scores(ts=windows.ts, value=windows.value, score=-decision, is_anomaly=decision <= 0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "scaler_mean": np.array([self.mean]),
            "scaler_scale": np.array([self.scale]),
            "support_vectors": self.support_vectors.copy(),
            "dual_coef": self.dual_coef.copy(),
            "intercept": np.array([self.intercept]),
        }

    def params(self) -> dict[str, Any]:
        return {"kernel": "rbf", "gamma": self.gamma, "nu": self.nu}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> SeedOcsvmModel:
        missing = {"scaler_mean", "scaler_scale", "support_vectors", "dual_coef", "intercept"} - set(arrays)
        if missing:
            raise ValueError(f"seed-ocsvm model is missing array(s): {', '.join(sorted(missing))}")
        if params.get("kernel", "rbf") != "rbf":
            raise ValueError(f"seed-ocsvm supports only the rbf kernel, got {params.get('kernel')!r}")
        return cls(
            mean=_scalar(arrays, "scaler_mean"),
            scale=_scalar(arrays, "scaler_scale"),
            support_vectors=arrays["support_vectors"],
            dual_coef=arrays["dual_coef"],
            intercept=_scalar(arrays, "intercept"),
            gamma=float(params.get("gamma", GAMMA)),
            nu=float(params.get("nu", NU)),
        )


def _scalar(arrays: dict[str, np.ndarray], name: str) -> float:
    array = np.asarray(arrays[name], dtype=np.float64).reshape(-1)
    if array.shape != (1,):
        raise ValueError(f"seed-ocsvm array {name!r} must hold one number, has {array.shape[0]}")
    return float(array[0])


class SeedOcsvm(Detector):
    """The original's detector: fit the seed pipeline with scikit-learn, keep its arrays."""

    name: ClassVar[str] = "seed-ocsvm"
    min_windows: ClassVar[int] = 2

    def fit(self, windows: SensorWindows) -> SeedOcsvmModel:
        self._check_enough(windows)
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import OneClassSVM

        pipeline = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu=NU, kernel="rbf", gamma=GAMMA))])
        pipeline.fit(windows.value.reshape(-1, 1))
        return model_of_pipeline(pipeline)


def model_of_pipeline(pipeline: Any) -> SeedOcsvmModel:
    """The arrays of a fitted seed pipeline (``StandardScaler`` then rbf ``OneClassSVM``)."""
    scaler, svm = pipeline.steps[0][1], pipeline.steps[-1][1]
    if svm.kernel != "rbf" or scaler.mean_.shape != (1,):
        raise ValueError("expected the seed pipeline: StandardScaler + rbf OneClassSVM on one column")
    return SeedOcsvmModel(
        mean=float(scaler.mean_[0]),
        scale=float(scaler.scale_[0]),
        support_vectors=svm.support_vectors_[:, 0],
        dual_coef=svm.dual_coef_[0],
        intercept=float(svm.intercept_[0]),
        gamma=float(svm._gamma),
        nu=float(svm.nu),
    )

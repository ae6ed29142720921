"""The detectors by name: which class detects, which class loads its models, and the default."""

from __future__ import annotations

from sensorflow.batch_jobs.detectors.base import Detector, Model
from sensorflow.batch_jobs.detectors.baselines import MadZ, MadZModel
from sensorflow.batch_jobs.detectors.calibrated import Calibrated, CalibratedModel
from sensorflow.batch_jobs.detectors.robust_window import RobustWindow, RobustWindowModel
from sensorflow.batch_jobs.detectors.seed_ocsvm import SeedOcsvm, SeedOcsvmModel

__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "UnknownDetectorError", "get_detector", "model_class"]

DETECTORS: dict[str, tuple[type[Detector], type[Model]]] = {
    SeedOcsvm.name: (SeedOcsvm, SeedOcsvmModel),
    RobustWindow.name: (RobustWindow, RobustWindowModel),
    Calibrated.name: (Calibrated, CalibratedModel),
    MadZ.name: (MadZ, MadZModel),
}

DEFAULT_DETECTOR: str = Calibrated.name


class UnknownDetectorError(LookupError):
    """A detector name that is not registered."""


def _entry(name: str) -> tuple[type[Detector], type[Model]]:
    try:
        return DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise UnknownDetectorError(f"unknown detector {name!r}: known detectors are {known}") from None


def get_detector(name: str, threshold_scale: float = 1.0) -> Detector:
    """A detector by name; UnknownDetectorError naming the known detectors otherwise.

    ``threshold_scale`` multiplies the detector's per-sensor threshold (the
    one sensitivity setting users have): 2.0 flags only what scores twice as
    far past normal, 0.5 flags more. Detectors without a threshold (the
    seed's) accept only 1.0 and raise ValueError otherwise.
    """
    if not threshold_scale > 0:
        raise ValueError(f"threshold_scale must be > 0, got {threshold_scale!r}")
    cls = _entry(name)[0]
    if threshold_scale == 1.0:
        return cls()
    if not cls.scalable:
        raise ValueError(f"{name} has a fixed threshold: threshold_scale must be 1.0, got {threshold_scale:g}")
    return cls(threshold_scale=threshold_scale)  # type: ignore[call-arg]


def model_class(detector_name: str) -> type[Model]:
    """The model class of a detector (what ``from_arrays`` loads); UnknownDetectorError naming the known ones otherwise."""
    return _entry(detector_name)[1]

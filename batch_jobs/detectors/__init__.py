"""Per-sensor anomaly detectors by name, and their models as bytes without pickle.

``get_detector(name)`` gives a detector, ``model_class(name)`` the class that
loads its models, ``DEFAULT_DETECTOR`` the one tasks use unless told
otherwise. ``save_model``/``load_model`` turn any model into bytes (a JSON
header and raw numeric arrays, no pickle) and back (``codec``).
"""

from __future__ import annotations

from sensorflow.batch_jobs.detectors.base import (
    Detector,
    Model,
    Scores,
    SensorWindows,
    iter_sensor_windows,
)
from sensorflow.batch_jobs.detectors.codec import ModelFormatError, load_model, save_model
from sensorflow.batch_jobs.detectors.registry import (
    DEFAULT_DETECTOR,
    DETECTORS,
    UnknownDetectorError,
    get_detector,
    model_class,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "Detector",
    "Model",
    "ModelFormatError",
    "Scores",
    "SensorWindows",
    "UnknownDetectorError",
    "get_detector",
    "iter_sensor_windows",
    "load_model",
    "model_class",
    "save_model",
]

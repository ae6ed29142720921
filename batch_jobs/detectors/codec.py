"""Models as bytes without pickle: a NumPy ``.npz`` of the model's arrays plus a JSON member.

``save_model`` (format 2) writes the model's one-number float arrays of
``Model.to_arrays()`` packed into one ``__scalars__`` float64 member, every
other array under its own name, and one ``__model__`` member, a uint8 array
holding UTF-8 JSON ``{"format": 2, "detector": ..., "params": {...},
"scalars": [names in __scalars__ order]}``, uncompressed: a model is a few
KB, and a zip member per scalar (format 1: a member per array, compressed)
cost more than the model's fit. ``load_model`` reads formats 1 and 2 with
``allow_pickle=False`` and accepts only bool, integer and float arrays, so
loading never runs code from the stored bytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from sensorflow.batch_jobs.detectors.base import Model
from sensorflow.batch_jobs.detectors.registry import UnknownDetectorError, model_class

__all__ = ["FORMAT_VERSION", "ModelFormatError", "load_model", "save_model"]

FORMAT_VERSION = 2
_READABLE = frozenset({1, 2})  # 1: one compressed member per array, no "scalars"
_META = "__model__"
_SCALARS = "__scalars__"
_NUMERIC_KINDS = frozenset("biuf")


class ModelFormatError(ValueError):
    """Bytes that are not a model this build can load."""


def save_model(model: Model) -> bytes:
    """The model as ``.npz`` bytes (arrays + JSON metadata); no pickle anywhere."""
    arrays = model.to_arrays()
    for name, array in arrays.items():
        if name == _META or not name.isidentifier():
            raise ValueError(f"bad model array name {name!r}")
        if np.asarray(array).dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"model array {name!r} has dtype {np.asarray(array).dtype}: only numbers are stored")
    packed = [name for name, array in arrays.items() if np.shape(array) == (1,) and np.asarray(array).dtype == np.float64]
    meta = {"format": FORMAT_VERSION, "detector": model.detector, "params": model.params(), "scalars": packed}
    text = json.dumps(meta, sort_keys=True, allow_nan=False).encode("utf-8")
    members = {name: array for name, array in arrays.items() if name not in set(packed)}
    members[_SCALARS] = np.array([float(arrays[name][0]) for name in packed], dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **members, **{_META: np.frombuffer(text, dtype=np.uint8)})
    return buffer.getvalue()


def load_model(data: bytes) -> Model:
    """The model ``save_model`` wrote; ``ModelFormatError`` for anything else (incl. object arrays)."""
    arrays = _read_arrays(data)
    meta_bytes = arrays.pop(_META, None)
    if meta_bytes is None or meta_bytes.dtype != np.uint8:
        raise ModelFormatError(f"not a sensorflow model: no {_META} member")
    try:
        meta: dict[str, Any] = json.loads(meta_bytes.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"model metadata is not JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") not in _READABLE:
        raise ModelFormatError(f"unsupported model format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta["format"] >= 2:
        arrays = _unpacked(arrays, meta.get("scalars"))
    detector, params = meta.get("detector"), meta.get("params")
    if not isinstance(detector, str) or not isinstance(params, dict):
        raise ModelFormatError("model metadata needs a detector name and a params object")
    try:
        cls = model_class(detector)
    except UnknownDetectorError as e:
        raise ModelFormatError(str(e)) from e
    try:
        return cls.from_arrays(arrays, params)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFormatError(f"bad {detector} model: {e}") from e


def _unpacked(arrays: dict[str, np.ndarray], names: Any) -> dict[str, np.ndarray]:
    """Format 2's ``__scalars__`` member back into one one-number array per name."""
    packed = arrays.pop(_SCALARS, None)
    if packed is None or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(f"format 2 model needs a {_SCALARS} member and its names")
    if packed.dtype != np.float64 or packed.shape != (len(names),) or set(names) & set(arrays):
        raise ModelFormatError(f"{_SCALARS} does not match its {len(names)} names")
    return {**arrays, **{name: packed[i:i + 1] for i, name in enumerate(names)}}


def _read_arrays(data: bytes) -> dict[str, np.ndarray]:
    if not bytes(data[:4]) == b"PK\x03\x04":  # np.load would otherwise try other formats, pickle among them
        raise ModelFormatError("not a model archive: expected .npz (zip) bytes")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = list(npz.files)
            arrays = {name: npz[name] for name in names}
    except ValueError as e:  # numpy's refusal of object arrays without pickle
        raise ModelFormatError(f"model holds a non-numeric array: {e}") from e
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelFormatError(f"not a model archive: {e}") from e
    for name, array in arrays.items():
        if array.dtype.kind not in _NUMERIC_KINDS and name != _META:
            raise ModelFormatError(f"model array {name!r} has dtype {array.dtype}: only numbers are accepted")
    return arrays

"""Models as bytes without pickle: a JSON header and the model's numeric arrays as raw little-endian bytes.

``save_model`` writes format 3::

    b"SFMODEL\\n"  uint32 LE header length  header (UTF-8 JSON)  arrays

The header is ``{"format": 3, "detector": ..., "params": {...}, "arrays":
[[name, dtype, shape], ...]}``; each array's bytes follow in that order,
C-ordered, each starting at a multiple of 8 bytes from the start. dtypes
are only little-endian bool, integer and float (``<f8``, ``|b1``, ...), so
loading is ``np.frombuffer`` per array: no archive, no code run from the
stored bytes. A model is a few KB; the zip archive of formats 1 and 2 (a
``.npz``: format 1 one compressed member per array, format 2 the
one-number float arrays packed into one ``__scalars__`` member) cost more
CPU than the fit of the fastest detectors. ``load_model`` reads all three,
the ``.npz`` ones with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from typing import Any

import numpy as np

from sensorflow.batch_jobs.detectors.base import Model
from sensorflow.batch_jobs.detectors.registry import UnknownDetectorError, model_class

__all__ = ["FORMAT_VERSION", "ModelFormatError", "load_model", "save_model"]

FORMAT_VERSION = 3
_MAGIC = b"SFMODEL\n"
_HEADER_LENGTH = struct.Struct("<I")
_ALIGN = 8
_NPZ_MAGIC = b"PK\x03\x04"
_NPZ_READABLE = frozenset({1, 2})  # 1: one compressed member per array, no "scalars"
_META = "__model__"
_SCALARS = "__scalars__"
_NUMERIC_KINDS = frozenset("biuf")
# Every dtype format 3 stores and accepts, by its little-endian ``dtype.str``.
_DTYPES = {np.dtype(t).newbyteorder("<").str: np.dtype(t).newbyteorder("<") for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64,
)}


class ModelFormatError(ValueError):
    """Bytes that are not a model this build can load."""


def save_model(model: Model) -> bytes:
    """The model as format 3 bytes (JSON header + raw arrays); no pickle anywhere."""
    described: list[list[Any]] = []
    chunks: list[bytes] = []
    for name, array in model.to_arrays().items():
        if name in (_META, _SCALARS) or not name.isidentifier():
            raise ValueError(f"bad model array name {name!r}")
        array = np.asarray(array)
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"model array {name!r} has dtype {array.dtype}: only numbers are stored")
        little = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
        described.append([name, little.dtype.str, list(little.shape)])
        chunks.append(little.tobytes())
    header = {"format": FORMAT_VERSION, "detector": model.detector, "params": model.params(), "arrays": described}
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    out = bytearray(_MAGIC)
    out += _HEADER_LENGTH.pack(len(text))
    out += text
    for chunk in chunks:
        out += bytes(-len(out) % _ALIGN)
        out += chunk
    return bytes(out)


def load_model(data: bytes) -> Model:
    """The model ``save_model`` wrote (any format); ``ModelFormatError`` for anything else (incl. object arrays)."""
    head = bytes(data[:len(_MAGIC)])
    if head == _MAGIC:
        meta, arrays = _read_format_3(data)
    elif head[:4] == _NPZ_MAGIC:  # np.load would otherwise try other formats, pickle among them
        meta, arrays = _read_npz(data)
    else:
        raise ModelFormatError("not a model archive: expected sensorflow model bytes or an .npz (zip)")
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


def _read_format_3(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    start = len(_MAGIC) + _HEADER_LENGTH.size
    if len(data) < start:
        raise ModelFormatError("model bytes end inside the header")
    (length,) = _HEADER_LENGTH.unpack_from(data, len(_MAGIC))
    meta = _json_object(bytes(data[start:start + length]))
    if meta.get("format") != FORMAT_VERSION:
        raise ModelFormatError(f"unsupported model format {meta.get('format')!r}")
    described = meta.get("arrays")
    if not isinstance(described, list):
        raise ModelFormatError("format 3 model needs a list of arrays")
    arrays: dict[str, np.ndarray] = {}
    offset = start + length
    for entry in described:
        name, dtype, shape = _array_entry(entry)
        if name in arrays:
            raise ModelFormatError(f"model array {name!r} appears twice")
        offset += -offset % _ALIGN
        count = math.prod(shape)
        size = count * dtype.itemsize
        if offset + size > len(data):
            raise ModelFormatError(f"model bytes end inside array {name!r}")
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        offset += size
    if offset != len(data):
        raise ModelFormatError(f"{len(data) - offset} bytes after the model's last array")
    return meta, arrays


def _array_entry(entry: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    """One ``[name, dtype, shape]`` of a format 3 header, checked: numeric little-endian dtypes only."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[1], str)
            and isinstance(entry[2], list)):
        raise ModelFormatError(f"bad array entry {entry!r}: expected [name, dtype, shape]")
    name, dtype, shape = entry
    if dtype not in _DTYPES:
        raise ModelFormatError(f"model array {name!r} has dtype {dtype}: only numbers are accepted")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape):
        raise ModelFormatError(f"model array {name!r} has a bad shape {shape!r}")
    return name, _DTYPES[dtype], tuple(shape)


def _json_object(text: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"model metadata is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ModelFormatError(f"unsupported model format {meta!r}")
    return meta


def _read_npz(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Formats 1 and 2: a zip of ``.npy`` members, one ``__model__`` member holding the JSON metadata."""
    arrays = _npz_arrays(data)
    meta_bytes = arrays.pop(_META, None)
    if meta_bytes is None or meta_bytes.dtype != np.uint8:
        raise ModelFormatError(f"not a sensorflow model: no {_META} member")
    meta = _json_object(meta_bytes.tobytes())
    if meta.get("format") not in _NPZ_READABLE:
        raise ModelFormatError(f"unsupported model format {meta.get('format')!r}")
    if meta["format"] == 2:
        arrays = _unpacked(arrays, meta.get("scalars"))
    return meta, arrays


def _unpacked(arrays: dict[str, np.ndarray], names: Any) -> dict[str, np.ndarray]:
    """Format 2's ``__scalars__`` member back into one one-number array per name."""
    packed = arrays.pop(_SCALARS, None)
    if packed is None or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(f"format 2 model needs a {_SCALARS} member and its names")
    if packed.dtype != np.float64 or packed.shape != (len(names),) or set(names) & set(arrays):
        raise ModelFormatError(f"{_SCALARS} does not match its {len(names)} names")
    return {**arrays, **{name: packed[i:i + 1] for i, name in enumerate(names)}}


def _npz_arrays(data: bytes) -> dict[str, np.ndarray]:
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

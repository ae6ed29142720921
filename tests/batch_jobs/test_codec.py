"""The model codec: format 3 round trips every array exactly, refuses what is not a model, and formats 1-2 still load."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np
import pytest

from sensorflow.batch_jobs.detectors import ModelFormatError, SensorWindows, get_detector, load_model, save_model
from sensorflow.batch_jobs.detectors.seed_ocsvm import SeedOcsvmModel

S = 1_000_000_000
T0 = 1_767_225_600 * S


def windows(n: int = 720, seed: int = 0) -> SensorWindows:
    rng = np.random.default_rng(seed)
    value = 50 + rng.normal(0, 1, n)
    value[n // 2] += 30
    ts = T0 + np.arange(1, n + 1, dtype=np.int64) * 5 * S
    return SensorWindows("1", "1", ts, value, np.full(n, 5), value - 1, value + 1, T0, int(ts[-1]), 5 * S)


class _Shapes(SeedOcsvmModel):
    """A model whose arrays have every dtype and shape the format stores."""

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            **super().to_arrays(),
            "flags": np.array([True, False, True]),
            "counts": np.arange(6, dtype=np.int32).reshape(2, 3),
            "wide": np.array([2**60, -1], dtype=">i8"),  # big-endian in memory: stored little-endian
            "small": np.array([1.5, -2.25], dtype=np.float32),
            "empty": np.zeros((0, 4)),
            "one": np.array(7.0),
        }


@pytest.mark.parametrize("detector", ["calibrated", "robust-window", "seed-ocsvm"])
def test_format_3_round_trips_each_detector_exactly(detector):
    model = get_detector(detector).fit(windows())
    data = save_model(model)
    assert data[:8] == b"SFMODEL\n"
    loaded = load_model(data)
    assert type(loaded) is type(model) and loaded.params() == model.params()
    for name, array in model.to_arrays().items():
        again = loaded.to_arrays()[name]
        assert again.dtype == array.dtype and again.shape == array.shape and np.array_equal(again, array)
    scored = windows(seed=1)
    np.testing.assert_array_equal(loaded.score(scored).score, model.score(scored).score)


def test_every_stored_dtype_and_shape_comes_back():
    model = _Shapes(0.5, 2.0, np.array([[0.1], [0.2]]), np.array([0.5, 0.5]), -0.25)
    arrays = model.to_arrays()
    header, stored = _split(save_model(model))
    assert [entry[0] for entry in header["arrays"]] == list(arrays)
    assert {name: dtype for name, dtype, _ in header["arrays"]}["wide"] == "<i8"
    for name, array in arrays.items():
        assert np.array_equal(stored[name], array) and stored[name].shape == array.shape
        assert stored[name].dtype.kind == array.dtype.kind and stored[name].flags.writeable


def _split(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of format 3 bytes, read by hand (the layout the codec's docstring states)."""
    (length,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12:12 + length])
    offset, arrays = 12 + length, {}
    for name, dtype, shape in header["arrays"]:
        offset += -offset % 8
        array = np.frombuffer(data, np.dtype(dtype), int(np.prod(shape)), offset).reshape(tuple(shape)).copy()
        arrays[name] = array
        offset += array.nbytes
    assert offset == len(data)
    return header, arrays


def _format_3(header: dict[str, Any], payload: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    head = b"SFMODEL\n" + struct.pack("<I", len(text)) + text
    return head + bytes(-len(head) % 8 if payload else 0) + payload


_OCSVM = {"format": 3, "detector": "seed-ocsvm", "params": {}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SFMODEL\n\x01", "end inside the header"),
        (b"SFMODEL\n" + struct.pack("<I", 3) + b"{x}", "not JSON"),
        (_format_3({**_OCSVM, "format": 4, "arrays": []}), "unsupported model format 4"),
        (_format_3({**_OCSVM, "arrays": {}}), "list of arrays"),
        (_format_3({**_OCSVM, "arrays": [["x", "|O", [1]]]}, bytes(8)), "dtype |O"),
        (_format_3({**_OCSVM, "arrays": [["x", "<U1", [1]]]}, bytes(8)), "dtype <U1"),
        (_format_3({**_OCSVM, "arrays": [["x", ">f8", [1]]]}, bytes(8)), "dtype >f8"),
        (_format_3({**_OCSVM, "arrays": [["x", "<f8", [-1]]]}), "bad shape"),
        (_format_3({**_OCSVM, "arrays": [["x", "<f8", [2]]]}, bytes(8)), "end inside array 'x'"),
        (_format_3({**_OCSVM, "arrays": [["x", "<f8", [1]]]}, bytes(16)), "8 bytes after"),
        (_format_3({**_OCSVM, "arrays": [["x", "<f8", [1]], ["x", "<f8", [1]]]}, bytes(16)), "appears twice"),
        (_format_3({**_OCSVM, "arrays": [["x", "<f8"]]}), "expected \\[name, dtype, shape\\]"),
        (_format_3({**_OCSVM, "detector": "nope", "arrays": []}), "unknown detector 'nope'"),
        (_format_3({**_OCSVM, "arrays": []}), "missing array"),
    ],
)
def test_format_3_refuses(data, message):
    with pytest.raises(ModelFormatError, match=message):
        load_model(data)


def test_format_2_models_still_load_and_score_the_same():
    """What the codec wrote before format 3: an uncompressed .npz, the one-number float arrays in __scalars__."""
    model = get_detector("robust-window").fit(windows())
    arrays = model.to_arrays()
    scalars = [name for name, a in arrays.items() if a.shape == (1,) and a.dtype == np.float64]
    meta = json.dumps({"format": 2, "detector": model.detector, "params": model.params(), "scalars": scalars}).encode()
    buffer = io.BytesIO()
    np.savez(buffer, **{k: a for k, a in arrays.items() if k not in scalars},
             __scalars__=np.array([arrays[k][0] for k in scalars]), __model__=np.frombuffer(meta, dtype=np.uint8))
    scored = windows(seed=2)
    np.testing.assert_array_equal(load_model(buffer.getvalue()).score(scored).score, model.score(scored).score)

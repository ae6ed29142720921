"""Reaching into a model store the way a person (or a bad disk) would: what tests break stored models with."""

from __future__ import annotations

import base64
import json

from sensorflow.batch_jobs.model_store import ModelStore
from sensorflow.batch_jobs.model_store.catalog import pointer_name


def latest_name(detector: str, sensor: tuple[str, str]) -> str:
    """The object holding the sensor's latest model (``ModelCatalog``'s pointer)."""
    return pointer_name(detector, *sensor)


def replace_model(store: ModelStore, detector: str, sensor: tuple[str, str], data: bytes) -> bytes:
    """Put ``data`` where the sensor's latest model is, its metadata kept; the pointer as it was before."""
    name = latest_name(detector, sensor)
    before = store.get_bytes(name)
    store.put_bytes(name, json.dumps({**json.loads(before), "model": base64.b64encode(data).decode()}).encode())
    return before


def latest_model_bytes(store: ModelStore, detector: str, sensor: tuple[str, str]) -> bytes:
    """The codec's bytes of the sensor's latest model, as stored."""
    return base64.b64decode(json.loads(store.get_bytes(latest_name(detector, sensor)))["model"])

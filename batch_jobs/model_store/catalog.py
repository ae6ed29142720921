"""Per-sensor models in a ``ModelStore``: versions kept by chunk, and one ``latest`` object per sensor written last.

Layout under ``models/<detector>/`` (ids percent-encoded: no component holds a ``.`` or is ``@packs``)::

    @packs/<pack>.json          every model one ``put_models`` call stored: its versions, never rewritten
    <device>/<tag>.latest.json  the sensor's newest model: its metadata and the model itself

Both hold models as entries ``{"metadata": <ModelMetadata>, "model": <base64 of
save_model's bytes>}`` (the codec's bytes: arrays + JSON, no pickle); a pack is
``{"format": 1, "detector": ..., "models": [entry, ...]}``, a pointer
``{"format": 2, "pack": <pack>, **entry}``. A chunk of sensors costs one pack
object plus one small object per sensor (and no directory per sensor), and
loading a sensor's latest model is one read. The pointer is replaced only
after its pack is complete, and replacing it is atomic
(``ModelStore.put_bytes``), so a reader always finds a whole model.

Models stored before packs keep loading until their sensor is retrained: there
the pointer is ``<device>/<tag>/latest.json`` holding the bare
``ModelMetadata`` (format 1), the model ``<device>/<tag>/<version>.npz`` beside
it (with ``<version>.json``). A sensor without a pointer of this layout is
looked up there, one more read.

A version name is ``<trained_to as YYYYMMDDTHHMMSSZ>-<8 hex>``: sortable by
the window time it was trained up to, unique across retrains of one range.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata as package_metadata
from typing import Any

from sensorflow.batch_jobs.detectors import Model, load_model, save_model
from sensorflow.batch_jobs.model_store.base import ModelStore, id_component

__all__ = ["ModelCatalog", "ModelMetadata", "StoredModel", "library_versions", "model_prefix", "new_version", "pointer_name"]

METADATA_FORMAT = 1
POINTER_FORMAT = 2  # 1: the bare ModelMetadata (its own "format" 1), the model in <version>.npz
POINTER_SUFFIX = ".latest.json"
OLDER_POINTER = "latest.json"  # <device>/<tag>/latest.json, pointer format 1
PACK_FORMAT = 1
PACKS = "@packs"  # '@' is percent-encoded in ids: never a device's component


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of what produced a model (recorded with it, for audits and reloads)."""
    versions = {}
    for package in ("sensorflow", "numpy", "scikit-learn"):
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


@dataclass(frozen=True)
class ModelMetadata:
    """What a stored model is: its sensor, detector, version and the window range it was fitted on."""

    device: str
    tag: str
    detector: str
    version: str
    trained_from: int  # ns, window time; the range is (trained_from, trained_to]
    trained_to: int
    windows: int
    libraries: dict[str, str] = field(default_factory=library_versions)
    format: int = METADATA_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "libraries": dict(self.libraries)}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, raw: Any) -> ModelMetadata:
        try:
            if raw.get("format") != METADATA_FORMAT:
                raise ValueError(f"unsupported metadata format {raw.get('format')!r}")
            return cls(**raw)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"bad model metadata: {e}") from e

    @classmethod
    def from_json(cls, data: bytes) -> ModelMetadata:
        try:
            raw = json.loads(data)
        except ValueError as e:
            raise ValueError(f"bad model metadata: {e}") from e
        return cls.from_dict(raw)


@dataclass(frozen=True, eq=False)
class StoredModel:
    metadata: ModelMetadata
    model: Model


def model_prefix(detector: str, device: str, tag: str) -> str:
    """The older layout's folder of one sensor's versions and pointer."""
    return f"models/{id_component(detector)}/{id_component(device)}/{id_component(tag)}"


def pointer_name(detector: str, device: str, tag: str) -> str:
    """The object holding the sensor's latest model."""
    return f"models/{id_component(detector)}/{id_component(device)}/{id_component(tag)}{POINTER_SUFFIX}"


def new_version(trained_to: int) -> str:
    stamp = datetime.fromtimestamp(trained_to // 1_000_000_000, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class ModelCatalog:
    """Reads and writes per-sensor models of one ``ModelStore``."""

    def __init__(self, store: ModelStore):
        self.store = store

    def put_models(self, models: list[tuple[ModelMetadata, Model]]) -> None:
        """Store the models as one pack, then (only then) replace each sensor's ``latest`` object."""
        if not models:
            return
        detector = models[0][0].detector
        entries: list[dict[str, Any]] = []
        for meta, model in models:
            if model.detector != meta.detector:
                raise ValueError(f"model is {model.detector}, metadata says {meta.detector}")
            if meta.detector != detector:
                raise ValueError(f"one put_models call stores one detector's models: {meta.detector} and {detector}")
            entries.append({"metadata": meta.to_dict(), "model": base64.b64encode(save_model(model)).decode("ascii")})
        pack = new_version(max(meta.trained_to for meta, _ in models))
        document = {"format": PACK_FORMAT, "detector": detector, "models": entries}
        self.store.put_bytes(_pack_name(detector, pack), json.dumps(document).encode("utf-8"), replace=False)
        self.store.put_many(
            (pointer_name(detector, meta.device, meta.tag),
             json.dumps({"format": POINTER_FORMAT, "pack": pack, **entry}).encode("utf-8"))
            for (meta, _), entry in zip(models, entries)
        )

    def latest_metadata(self, detector: str, sensors: list[tuple[str, str]]) -> list[ModelMetadata | None]:
        """Each sensor's latest metadata, None where it has no model yet."""
        return [None if data is None else _read_pointer(data)[0] for data in self._pointers(detector, sensors)]

    def load_latest(self, detector: str, sensors: list[tuple[str, str]]) -> list[StoredModel | None | Exception]:
        """Each sensor's latest model; None where there is none, the exception where it cannot be loaded.

        One bad model does not stop the others: its slot holds the error.
        """
        found: list[tuple[ModelMetadata, bytes | None] | None | Exception] = []
        for data in self._pointers(detector, sensors):
            try:
                found.append(None if data is None else _read_pointer(data))
            except ValueError as e:
                found.append(e)
        # Pointers of format 1 name a <version>.npz beside them: one more read each.
        older = [slot[0] for slot in found if isinstance(slot, tuple) and slot[1] is None]
        names = [f"{model_prefix(detector, m.device, m.tag)}/{m.version}.npz" for m in older]
        blobs = iter(self.store.get_many(names) if names else [])
        out: list[StoredModel | None | Exception] = []
        for slot in found:
            if not isinstance(slot, tuple):
                out.append(slot)
                continue
            meta, data = slot
            try:
                if data is None and (data := next(blobs)) is None:
                    raise LookupError(f"latest points to missing version {meta.version}")
                model = load_model(data)
                if model.detector != detector:
                    raise ValueError(f"stored model is {model.detector}, not {detector}")
                out.append(StoredModel(meta, model))
            except (ValueError, LookupError) as e:
                out.append(e)
        return out

    def with_models(self, detector: str, sensors: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of ``sensors``, those with a latest model of ``detector``: ONE listing of the detector's models.

        A sensor has a model once its pointer exists (a pack, or a version of the
        older layout, without one is a write cut short). Sensors are matched by their
        encoded name components, so hashed long ids are found too. The listing holds
        the packs (and the older layout's versions) as well, so it grows with retrains.
        """
        prefix = f"models/{id_component(detector)}/"
        pointers = set()
        for name in self.store.list_names(prefix):
            parts = name[len(prefix):].split("/")
            if len(parts) == 2 and parts[0] != PACKS and parts[1].endswith(POINTER_SUFFIX):
                pointers.add((parts[0], parts[1][:-len(POINTER_SUFFIX)]))
            elif len(parts) == 3 and parts[2] == OLDER_POINTER:
                pointers.add((parts[0], parts[1]))
        return {(d, t) for d, t in sensors if (id_component(d), id_component(t)) in pointers}

    def versions(self, detector: str, device: str, tag: str) -> list[str]:
        """Every stored version of one sensor's model, oldest first.

        Reads every pack of the detector (the versions are kept by chunk, not by
        sensor): for audits, not for tasks.
        """
        prefix = model_prefix(detector, device, tag) + "/"
        found = {name[len(prefix):-len(".npz")] for name in self.store.list_names(prefix) if name.endswith(".npz")}
        packs = f"models/{id_component(detector)}/{PACKS}/"
        for name in self.store.list_names(packs):
            for entry in _read_pack(self.store.get_bytes(name))["models"]:
                meta = entry.get("metadata") if isinstance(entry, dict) else None
                if isinstance(meta, dict) and meta.get("device") == device and meta.get("tag") == tag:
                    found.add(str(meta.get("version")))
        return sorted(found)

    def _pointers(self, detector: str, sensors: list[tuple[str, str]]) -> list[bytes | None]:
        """Each sensor's pointer bytes (this layout's, else the older layout's), None where it has neither."""
        found = self.store.get_many([pointer_name(detector, d, t) for d, t in sensors])
        lacking = [i for i, data in enumerate(found) if data is None]
        if lacking:
            older = self.store.get_many([f"{model_prefix(detector, *sensors[i])}/{OLDER_POINTER}" for i in lacking])
            for i, data in zip(lacking, older):
                found[i] = data
        return found


def _pack_name(detector: str, pack: str) -> str:
    return f"models/{id_component(detector)}/{PACKS}/{pack}.json"


def _read_pointer(data: bytes) -> tuple[ModelMetadata, bytes | None]:
    """A ``latest.json``: its metadata and, from format 2 on, the model's bytes (None: the model is a ``.npz`` beside it)."""
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise ValueError(f"bad model pointer: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != POINTER_FORMAT:
        return ModelMetadata.from_dict(raw), None  # format 1: the bare metadata
    model = raw.get("model")
    if not isinstance(model, str):
        raise ValueError("bad model pointer: no model")
    try:
        return ModelMetadata.from_dict(raw.get("metadata")), base64.b64decode(model, validate=True)
    except binascii.Error as e:
        raise ValueError(f"bad model pointer: the model is not base64 ({e})") from e


def _read_pack(data: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise ValueError(f"bad model pack: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != PACK_FORMAT or not isinstance(raw.get("models"), list):
        raise ValueError(f"bad model pack: unsupported format {raw.get('format') if isinstance(raw, dict) else raw!r}")
    return raw

"""Per-sensor models in a ``ModelStore``: versioned names, metadata, and a ``latest`` pointer written last.

Layout under ``models/<detector>/<device>/<tag>/`` (ids percent-encoded)::

    <version>.npz    the model (``sensorflow.batch_jobs.detectors.save_model``: arrays + JSON, no pickle)
    <version>.json   its ``ModelMetadata``
    latest.json      the metadata of the newest version: the pointer readers follow

A version name is ``<trained_to as YYYYMMDDTHHMMSSZ>-<8 hex>``: sortable by
the window time it was trained up to, unique across retrains of one range.
Versions are never rewritten; the pointer is replaced only after its
model and metadata are complete, so a reader that follows it always finds a
whole model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata as package_metadata

from sensorflow.batch_jobs.detectors import Model, load_model, save_model
from sensorflow.batch_jobs.model_store.base import ModelStore, id_component

__all__ = ["ModelCatalog", "ModelMetadata", "StoredModel", "library_versions", "model_prefix", "new_version"]

METADATA_FORMAT = 1


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

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> ModelMetadata:
        try:
            raw = json.loads(data)
            if raw.get("format") != METADATA_FORMAT:
                raise ValueError(f"unsupported metadata format {raw.get('format')!r}")
            return cls(**raw)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"bad model metadata: {e}") from e


@dataclass(frozen=True, eq=False)
class StoredModel:
    metadata: ModelMetadata
    model: Model


def model_prefix(detector: str, device: str, tag: str) -> str:
    return f"models/{id_component(detector)}/{id_component(device)}/{id_component(tag)}"


def new_version(trained_to: int) -> str:
    stamp = datetime.fromtimestamp(trained_to // 1_000_000_000, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class ModelCatalog:
    """Reads and writes per-sensor models of one ``ModelStore``."""

    def __init__(self, store: ModelStore):
        self.store = store

    def put_models(self, models: list[tuple[ModelMetadata, Model]]) -> None:
        """Store each model and its metadata, then (only then) move each sensor's ``latest`` pointer."""
        versions: list[tuple[str, bytes]] = []
        pointers: list[tuple[str, bytes]] = []
        for meta, model in models:
            if model.detector != meta.detector:
                raise ValueError(f"model is {model.detector}, metadata says {meta.detector}")
            prefix = model_prefix(meta.detector, meta.device, meta.tag)
            described = meta.to_json()
            versions.append((f"{prefix}/{meta.version}.npz", save_model(model)))
            versions.append((f"{prefix}/{meta.version}.json", described))
            pointers.append((f"{prefix}/latest.json", described))
        self.store.put_many(versions, replace=False)
        self.store.put_many(pointers)

    def latest_metadata(self, detector: str, sensors: list[tuple[str, str]]) -> list[ModelMetadata | None]:
        """Each sensor's latest metadata, None where it has no model yet."""
        names = [f"{model_prefix(detector, d, t)}/latest.json" for d, t in sensors]
        return [None if data is None else ModelMetadata.from_json(data) for data in self.store.get_many(names)]

    def load_latest(self, detector: str, sensors: list[tuple[str, str]]) -> list[StoredModel | None | Exception]:
        """Each sensor's latest model; None where there is none, the exception where it cannot be loaded.

        One bad model does not stop the others: its slot holds the error.
        """
        out: list[StoredModel | None | Exception] = []
        metas: list[ModelMetadata | None | Exception] = []
        names = [f"{model_prefix(detector, d, t)}/latest.json" for d, t in sensors]
        for data in self.store.get_many(names):
            try:
                metas.append(None if data is None else ModelMetadata.from_json(data))
            except ValueError as e:
                metas.append(e)
        wanted = [m for m in metas if isinstance(m, ModelMetadata)]
        blobs = iter(self.store.get_many([f"{model_prefix(detector, m.device, m.tag)}/{m.version}.npz" for m in wanted]))
        for meta in metas:
            if not isinstance(meta, ModelMetadata):
                out.append(meta)
                continue
            data = next(blobs)
            try:
                if data is None:
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

        A sensor has a model once its ``latest.json`` pointer exists (versions without
        one are a write cut short). Sensors are matched by their encoded name
        components, so hashed long ids are found too. The listing holds every stored
        version as well, so its length grows with retrains.
        """
        prefix = f"models/{id_component(detector)}/"
        pointers = set()
        for name in self.store.list_names(prefix):
            parts = name[len(prefix):].split("/")
            if len(parts) == 3 and parts[2] == "latest.json":
                pointers.add((parts[0], parts[1]))
        return {(d, t) for d, t in sensors if (id_component(d), id_component(t)) in pointers}

    def versions(self, detector: str, device: str, tag: str) -> list[str]:
        """Every stored version of one sensor's model, oldest first."""
        prefix = model_prefix(detector, device, tag) + "/"
        return [name[len(prefix):-len(".npz")] for name in self.store.list_names(prefix) if name.endswith(".npz")]

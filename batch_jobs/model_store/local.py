"""The default model store: a local directory, one file per object."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

from sensorflow.batch_jobs.model_store.base import (
    FILE_SCHEME,
    ModelStore,
    ModelStoreError,
    ObjectNotFound,
    check_name,
)

__all__ = ["LocalModelStore"]


class LocalModelStore(ModelStore):
    """Objects as files under ``root``; a replacing put writes a temporary file and renames it over the old one.

    The rename is atomic, so a reader sees the old file or the new one. Files
    are not fsynced: after a machine crash a model may be lost, never half-read
    (a lost pointer only means the previous version stays latest).
    """

    def __init__(self, url: str):
        path = url.removeprefix(FILE_SCHEME)
        if not path:
            raise ModelStoreError("model store path is empty")
        self.root = Path(path).resolve()
        self.url = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ModelStoreError(f"cannot create model store directory {self.root}: {e}") from e
        # Temporary names: unique per store object (token) and put (counter), no random draw per put.
        self._token = uuid.uuid4().hex[:12]
        self._puts = itertools.count()

    def put_bytes(self, name: str, data: bytes, replace: bool = True) -> None:
        path = self._path(name)
        if not replace:
            _write_making_folders(path, data)
            return
        parent, _, base = path.rpartition("/")
        temporary = f"{parent}/.{base}.{self._token}{next(self._puts)}.tmp"
        try:
            _write_making_folders(temporary, data)
            os.replace(temporary, path)
        except BaseException:
            _remove_quietly(temporary)
            raise

    def get_bytes(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {name!r} in {self.url}") from None

    def list_names(self, prefix: str = "") -> list[str]:
        # Walk only the prefix's directory: the models of one detector, not every run's specs.
        folder = prefix.rpartition("/")[0]
        start = self.root / check_name(folder) if folder else self.root
        names = []
        for directory, _, files in os.walk(start):
            relative = os.path.relpath(directory, self.root)
            for file in files:
                if file.startswith("."):  # temporary files of puts in flight
                    continue
                name = file if relative == "." else f"{relative.replace(os.sep, '/')}/{file}"
                if name.startswith(prefix):
                    names.append(name)
        return sorted(names)

    def _path(self, name: str) -> str:
        return f"{self.root}/{check_name(name)}"


def _write_making_folders(path: str, data: bytes) -> None:
    """``_write``, making the missing folders first when there are any (checked only when the open fails)."""
    try:
        _write(path, data)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, data)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

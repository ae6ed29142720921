"""The object store under models, task specs and results: bytes by name, and ``open_model_store(url)``.

A name is a relative ``/``-separated path (``models/seed-ocsvm/1/4.latest.json``).
``put_bytes`` makes the whole object visible at once or not at all, so a
reader never sees half an object: the local directory writes a temporary
file and renames it, a Blob upload commits in one request. Objects written
with ``replace=False`` get a fresh name no reader knows yet (a versioned
model), so the local store may skip the rename for them.

URLs: a directory path or ``file:///PATH`` (the default, local), and
``azblob://CONTAINER[/PREFIX]`` for Azure Blob Storage, whose account comes
from ``BlobAccess`` (a connection string, or an account URL used with
DefaultAzureCredential), never from the URL: URLs go into task specs and
specs carry no secrets.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self
from urllib.parse import quote, unquote

__all__ = [
    "BlobAccess",
    "ModelStore",
    "ModelStoreError",
    "ObjectNotFound",
    "check_name",
    "id_component",
    "split_object_url",
]

BLOB_SCHEME = "azblob://"
FILE_SCHEME = "file://"
# Longest encoded id kept readable in a name; longer ones (or many multibyte
# characters) become a digest so a path component stays under filesystem limits.
_MAX_COMPONENT = 120


class ModelStoreError(RuntimeError):
    """The model store cannot be opened or used (bad URL, missing access, service error)."""


class ObjectNotFound(ModelStoreError):
    """No object has that name."""


@dataclass(frozen=True)
class BlobAccess:
    """How to reach the Blob account: a connection string (a secret) or an account URL + DefaultAzureCredential."""

    connection_string: str | None = None
    account_url: str | None = None

    def __repr__(self) -> str:  # never print the secret
        secret = "set" if self.connection_string else "unset"
        return f"BlobAccess(connection_string={secret}, account_url={self.account_url!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BlobAccess:
        """``SENSORFLOW_BLOB_CONNECTION_STRING`` or ``SENSORFLOW_BLOB_ACCOUNT_URL`` (read at the process edge)."""
        return cls(
            environ.get("SENSORFLOW_BLOB_CONNECTION_STRING") or None,
            environ.get("SENSORFLOW_BLOB_ACCOUNT_URL") or None,
        )


class ModelStore(ABC):
    """Whole objects by name; every put is atomic for readers."""

    url: str

    @abstractmethod
    def put_bytes(self, name: str, data: bytes, replace: bool = True) -> None:
        """Store ``data`` as ``name``; readers see the old object or the new one, never a part.

        ``replace=False`` promises ``name`` is new and unreferenced (a fresh
        version): the store may write it in place.
        """

    @abstractmethod
    def get_bytes(self, name: str) -> bytes:
        """The object's bytes; ``ObjectNotFound`` if there is none."""

    @abstractmethod
    def list_names(self, prefix: str = "") -> list[str]:
        """Names starting with ``prefix``, sorted."""

    def put_many(self, items: Iterable[tuple[str, bytes]], replace: bool = True) -> None:
        """``put_bytes`` for each item; remote stores overlap the requests. All are written when it returns."""
        for name, data in items:
            self.put_bytes(name, data, replace)

    def get_many(self, names: list[str]) -> list[bytes | None]:
        """Each object's bytes, or None where there is none; remote stores overlap the requests."""
        out: list[bytes | None] = []
        for name in names:
            try:
                out.append(self.get_bytes(name))
            except ObjectNotFound:
                out.append(None)
        return out

    def object_url(self, name: str) -> str:
        """A URL for one object, as ``split_object_url`` reads it back."""
        return f"{self.url.rstrip('/')}/{check_name(name)}"

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_name(name: str) -> str:
    """``name`` if it is a relative path of non-empty components without ``.``/``..``; ValueError otherwise."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        raise ValueError(f"bad object name {name!r}: expected a relative path like models/x/latest.json")
    return name


def id_component(identifier: str) -> str:
    """A device or tag id as one safe, reversible-looking name component (percent-encoded; long ones hashed)."""
    encoded = quote(identifier, safe="").replace(".", "%2E")
    if len(encoded) <= _MAX_COMPONENT:
        return encoded
    return "h-" + hashlib.sha256(identifier.encode("utf-8")).hexdigest()


def component_id(component: str) -> str:
    """The id of a readable component (hashed ones cannot be reversed: metadata keeps the real ids)."""
    return unquote(component)


def split_object_url(url: str) -> tuple[str, str]:
    """An object's URL as (URL of the store holding it, its name there): the parent is the store."""
    scheme = BLOB_SCHEME if url.startswith(BLOB_SCHEME) else ""
    rest = url[len(scheme):]
    head, _, name = rest.rstrip("/").rpartition("/")
    if not head or not name:
        raise ModelStoreError(f"not an object URL: {url!r} (expected .../NAME)")
    return scheme + head, name

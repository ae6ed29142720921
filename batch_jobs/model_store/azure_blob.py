"""The production model store: one Azure Blob Storage container (``azblob://CONTAINER[/PREFIX]``).

A Put Blob commits the whole blob in one request, so readers never see a
partial object and a replacing put needs no rename. ``put_many``/``get_many``
overlap requests on a small thread pool: a chunk of 500 sensors is a few
seconds of round trips one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from sensorflow.batch_jobs.model_store.base import (
    BLOB_SCHEME,
    BlobAccess,
    ModelStore,
    ModelStoreError,
    ObjectNotFound,
    check_name,
)

__all__ = ["BlobModelStore"]

_PARALLEL_REQUESTS = 16


class BlobModelStore(ModelStore):
    """A container (created if missing), optionally a name prefix inside it."""

    def __init__(self, url: str, access: BlobAccess):
        try:
            from azure.core.exceptions import AzureError, ResourceExistsError
            from azure.storage.blob import BlobServiceClient
        except ImportError as e:
            raise ModelStoreError(f"Azure Blob model store needs azure-storage-blob: pip install 'sensorflow[azure]' ({e})") from e
        container, _, prefix = url[len(BLOB_SCHEME):].partition("/")
        if not container:
            raise ModelStoreError(f"no container in model store URL {url!r}: expected azblob://CONTAINER[/PREFIX]")
        self.url = f"{BLOB_SCHEME}{container}" + (f"/{prefix.strip('/')}" if prefix.strip("/") else "")
        self._prefix = f"{check_name(prefix.strip('/'))}/" if prefix.strip("/") else ""
        self._errors: tuple[type[BaseException], ...] = (AzureError,)
        try:
            if access.connection_string:
                service = BlobServiceClient.from_connection_string(access.connection_string)
            elif access.account_url:
                from azure.identity import DefaultAzureCredential

                service = BlobServiceClient(access.account_url, credential=DefaultAzureCredential())
            else:
                raise ModelStoreError(
                    f"no Blob account for {self.url}: set SENSORFLOW_BLOB_CONNECTION_STRING, "
                    "or SENSORFLOW_BLOB_ACCOUNT_URL to use DefaultAzureCredential"
                )
            self._service = service
            self._container = service.get_container_client(container)
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
        except (AzureError, ValueError) as e:
            raise ModelStoreError(f"cannot open Blob container {container!r}: {_one_line(e)}") from e
        self._pool: ThreadPoolExecutor | None = None

    def put_bytes(self, name: str, data: bytes, replace: bool = True) -> None:
        blob = self._blob(name)
        try:
            self._container.upload_blob(blob, data, overwrite=True)
        except self._errors as e:
            raise ModelStoreError(f"cannot write {name!r} to {self.url}: {_one_line(e)}") from e

    def get_bytes(self, name: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._blob(name)
        try:
            return self._container.download_blob(blob).readall()
        except ResourceNotFoundError:
            raise ObjectNotFound(f"no object {name!r} in {self.url}") from None
        except self._errors as e:
            raise ModelStoreError(f"cannot read {name!r} from {self.url}: {_one_line(e)}") from e

    def list_names(self, prefix: str = "") -> list[str]:
        try:
            names = self._container.list_blob_names(name_starts_with=self._prefix + prefix)
            return sorted(name[len(self._prefix):] for name in names)
        except self._errors as e:
            raise ModelStoreError(f"cannot list {self.url}: {_one_line(e)}") from e

    def put_many(self, items: Iterable[tuple[str, bytes]], replace: bool = True) -> None:
        # list() surfaces the first failure after every request has finished.
        list(self._threads().map(lambda item: self.put_bytes(item[0], item[1], replace), items))

    def get_many(self, names: list[str]) -> list[bytes | None]:
        return list(self._threads().map(self._get_or_none, names))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._service.close()

    def _get_or_none(self, name: str) -> bytes | None:
        try:
            return self.get_bytes(name)
        except ObjectNotFound:
            return None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_PARALLEL_REQUESTS, thread_name_prefix="blob")
        return self._pool

    def _blob(self, name: str) -> str:
        return self._prefix + check_name(name)


def _one_line(error: BaseException) -> str:
    """The first line of an Azure SDK error (its full text repeats the response body)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"

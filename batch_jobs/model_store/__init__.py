"""Where models, task specs and task results live: a local directory or an Azure Blob container.

``open_model_store(url)`` gives a ``ModelStore`` (bytes by name, atomic
puts); ``ModelCatalog`` keeps per-sensor models in it with versioned names,
metadata and a ``latest`` pointer written last.
"""

from sensorflow.batch_jobs.model_store.base import (
    BLOB_SCHEME,
    FILE_SCHEME,
    BlobAccess,
    ModelStore,
    ModelStoreError,
    ObjectNotFound,
    split_object_url,
)
from sensorflow.batch_jobs.model_store.catalog import (
    ModelCatalog,
    ModelMetadata,
    StoredModel,
    new_version,
)

__all__ = [
    "BlobAccess",
    "ModelCatalog",
    "ModelMetadata",
    "ModelStore",
    "ModelStoreError",
    "ObjectNotFound",
    "StoredModel",
    "new_version",
    "open_model_store",
    "split_object_url",
]


def open_model_store(url: str, access: BlobAccess | None = None) -> ModelStore:
    """The store at ``url``: a path or ``file:///PATH`` (created if missing), or ``azblob://CONTAINER[/PREFIX]``.

    ``access`` (Blob only) defaults to ``BlobAccess.from_env()``.
    """
    if url.startswith(BLOB_SCHEME):
        from sensorflow.batch_jobs.model_store.azure_blob import BlobModelStore

        return BlobModelStore(url, access if access is not None else BlobAccess.from_env())
    if "://" in url and not url.startswith(FILE_SCHEME):
        raise ModelStoreError(f"unsupported model store URL {url!r}: expected a directory, file:///PATH or azblob://CONTAINER")
    from sensorflow.batch_jobs.model_store.local import LocalModelStore

    return LocalModelStore(url)

"""Where models, task specs and task results live: a local directory or an Azure Blob container.

``open_model_store(url)`` gives a ``ModelStore`` (bytes by name, atomic
puts); ``ModelCatalog`` keeps per-sensor models in it with versioned names,
metadata and a ``latest`` pointer written last.
"""

from sensorflow.batch_jobs.model_store.base import (
    BlobAccess,
    ModelStore,
    ModelStoreError,
    ObjectNotFound,
    open_model_store,
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

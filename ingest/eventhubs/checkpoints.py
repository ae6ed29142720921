"""Consumer-group progress in Azure Blob Storage: Event Hubs checkpoints plus our resume blob.

Two things are written after every epoch that every output has finished (see
docs/eventhubs.md for why they are safe):

1. our **resume blob** ``sensorflow/<namespace>/<hub>/<consumer group>/resume.json``: the
   committed closure ``C`` and per partition the sequence number to restart from, the partition
   watermark there and the durable position before which stored readings are dropped. JSON,
   never pickle; it names the window length and lateness it was computed for.
2. the standard **Event Hubs checkpoint** per partition (azure-eventhub-checkpointstoreblob-aio's
   ``BlobCheckpointStore``): the event just before the restart position, so Event Hubs tooling
   sees the consumer group's progress and lag.

The resume blob is written first and wins on load; the checkpoints alone (written by another
consumer, or an older run) give start positions without a watermark.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import SecretStr

from ingest.eventhubs.config import MissingDependency
from ingest.eventhubs.receiver import OffsetBook
from windowing.resume import ResumeBoard, ResumePoint, ResumeStart
from windowing.tumbling import BEFORE_TIME

__all__ = [
    "BlobCheckpoints",
    "CheckpointLocation",
    "CheckpointMismatch",
    "Checkpointer",
    "StreamIdentity",
    "decode_resume",
    "encode_resume",
]

log = logging.getLogger(__name__)

_FORMAT = 1


class CheckpointMismatch(ValueError):
    """The resume blob was written for other window settings; the message says what to do."""


@dataclass(frozen=True)
class CheckpointLocation:
    """A Blob container, by connection string or by account URL signed in with DefaultAzureCredential."""

    container: str
    connection_string: SecretStr | None = None
    account_url: str | None = None

    def __post_init__(self) -> None:
        if not self.container:
            raise ValueError("a checkpoint container name is needed")
        if (self.connection_string is None) == (self.account_url is None):
            raise ValueError("give exactly one of a checkpoint connection string or an account URL")

    def __repr__(self) -> str:
        return f"CheckpointLocation(container={self.container!r}, account_url={self.account_url!r})"


@dataclass(frozen=True)
class StreamIdentity:
    """Whose progress this is, and the window settings the resume data only holds for."""

    namespace: str
    eventhub: str
    consumer_group: str
    window_ns: int
    lateness_ns: int

    @property
    def resume_blob(self) -> str:
        return f"sensorflow/{self.namespace}/{self.eventhub}/{self.consumer_group}/resume.json".lower()


def encode_resume(start: ResumeStart, identity: StreamIdentity) -> bytes:
    return orjson.dumps(
        {
            "format": _FORMAT,
            "window_ns": identity.window_ns,
            "lateness_ns": identity.lateness_ns,
            "closed_through": start.closed_through,
            "partitions": {
                p: {"position": pt.position, "watermark": pt.watermark, "drop_before": pt.drop_before}
                for p, pt in sorted(start.partitions.items())
            },
            "written_at": datetime.now(UTC).isoformat(),
        }
    )


def decode_resume(data: bytes, identity: StreamIdentity) -> ResumeStart:
    """The resume blob's content; CheckpointMismatch if unreadable or written for other window settings."""
    try:
        doc = orjson.loads(data)
        if doc.get("format") != _FORMAT:
            raise CheckpointMismatch(f"resume blob {identity.resume_blob} has unknown format {doc.get('format')!r}")
        if (doc["window_ns"], doc["lateness_ns"]) != (identity.window_ns, identity.lateness_ns):
            raise CheckpointMismatch(
                f"resume blob {identity.resume_blob} was written with window {doc['window_ns'] / 1e9:g} s and lateness "
                f"{doc['lateness_ns'] / 1e9:g} s, not {identity.window_ns / 1e9:g} s and {identity.lateness_ns / 1e9:g} s: "
                "use the same settings, or a new consumer group for the new ones"
            )
        points = {
            str(p): ResumePoint(int(v["position"]), int(v["watermark"]), int(v["drop_before"]))
            for p, v in doc["partitions"].items()
        }
        return ResumeStart(int(doc["closed_through"]), points)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointMismatch):
            raise
        raise CheckpointMismatch(f"resume blob {identity.resume_blob} is not readable ({type(e).__name__}: {e})") from e


class BlobCheckpoints:
    """Reads and writes one consumer group's progress; a blocking facade over the async Blob SDKs.

    All calls run on this object's own event loop, one at a time (a lock), from any thread.
    """

    def __init__(self, location: CheckpointLocation, identity: StreamIdentity):
        try:
            from azure.eventhub.extensions.checkpointstoreblobaio import (
                BlobCheckpointStore,
            )
            from azure.storage.blob.aio import ContainerClient
        except ImportError as error:
            raise MissingDependency(
                "Blob checkpoints need azure-eventhub-checkpointstoreblob-aio: pip install 'sensorflow[azure]'"
            ) from error
        self.identity = identity
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._known: dict[str, int] = {}  # sequence number of each partition's last written checkpoint
        if location.connection_string is not None:
            secret = location.connection_string.get_secret_value()
            self._container = ContainerClient.from_connection_string(secret, location.container)
            self._store = BlobCheckpointStore.from_connection_string(secret, location.container)
            self._credential = None
        else:
            try:
                from azure.identity.aio import DefaultAzureCredential
            except ImportError as error:
                raise MissingDependency("an account URL needs azure-identity: pip install 'sensorflow[azure]'") from error
            self._credential = DefaultAzureCredential()
            self._container = ContainerClient(location.account_url, location.container, credential=self._credential)
            self._store = BlobCheckpointStore(location.account_url, location.container, credential=self._credential)

    def _run(self, coroutine: Any) -> Any:
        with self._lock:
            return self._loop.run_until_complete(coroutine)

    def load(self) -> ResumeStart | None:
        """Where to start without Bytewax state (None: no progress recorded for this consumer group)."""
        return self._run(self._load())

    async def _load(self) -> ResumeStart | None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            await self._container.create_container()
        except ResourceExistsError:
            pass
        ident = self.identity
        checkpoints = await self._store.list_checkpoints(ident.namespace, ident.eventhub, ident.consumer_group)
        self._known = {str(c["partition_id"]): int(c["sequence_number"]) for c in checkpoints}
        try:
            data = await (await self._container.get_blob_client(ident.resume_blob).download_blob()).readall()
        except ResourceNotFoundError:
            data = None
        if data is not None:
            start = decode_resume(data, ident)
            for p, seq in self._known.items():
                point = start.partitions.get(p)
                if point is None or seq + 1 > point.position:
                    log.warning(
                        "partition %s: the Event Hubs checkpoint (sequence number %d) is ahead of our resume blob "
                        "(another consumer in group %r?); resuming from the resume blob",
                        p, seq, ident.consumer_group, extra={"partition": p, "position": seq},
                    )
            return start
        if not self._known:
            return None
        log.warning(
            "consumer group %r has Event Hubs checkpoints but no sensorflow resume blob: starting after them; "
            "windows open at that point may be written with partial values",
            ident.consumer_group,
        )
        points = {p: ResumePoint(seq + 1, BEFORE_TIME, seq + 1) for p, seq in self._known.items()}
        return ResumeStart(BEFORE_TIME, points)

    def save(self, start: ResumeStart, events: Mapping[str, tuple[int, str]]) -> None:
        """Write the resume blob, then the checkpoint of every partition in ``events`` (sequence number, offset)."""
        self._run(self._save(start, events))

    async def _save(self, start: ResumeStart, events: Mapping[str, tuple[int, str]]) -> None:
        ident = self.identity
        blob = self._container.get_blob_client(ident.resume_blob)
        await blob.upload_blob(encode_resume(start, ident), overwrite=True)
        for partition, (sequence_number, offset) in sorted(events.items()):
            if self._known.get(partition) == sequence_number:
                continue
            await self._store.update_checkpoint(
                {
                    "fully_qualified_namespace": ident.namespace,
                    "eventhub_name": ident.eventhub,
                    "consumer_group": ident.consumer_group,
                    "partition_id": partition,
                    "sequence_number": sequence_number,
                    "offset": offset,
                }
            )
            self._known[partition] = sequence_number

    def close(self) -> None:
        async def close() -> None:
            await self._store.close()
            await self._container.close()
            if self._credential is not None:
                await self._credential.close()

        self._run(close())
        self._loop.close()


class Checkpointer:
    """Writes the board's resume start whenever it changes, on its own thread; latest wins.

    A failed write is logged and retried at the next change or interval; ``healthy`` turns
    False after failures so /readyz can report it.
    """

    def __init__(self, store: BlobCheckpoints, board: ResumeBoard, offsets: Mapping[str, OffsetBook], interval: float = 1.0):
        self._store = store
        self._board = board
        self._offsets = offsets
        self._interval = interval
        self._stop = threading.Event()
        self._written: ResumeStart | None = board.start
        self.failures = 0
        self.writes = 0
        self.last_written: float | None = None
        self._thread = threading.Thread(target=self._loop, name="checkpointer", daemon=True)

    @property
    def healthy(self) -> bool:
        return self.failures < 3

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def flush(self) -> None:
        """Write the current start now (raises on failure); used at graceful shutdown."""
        self._write(self._board.current())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._write(self._board.current())
            except Exception as error:  # storage trouble must not stop the dataflow; it is reported
                self.failures += 1
                log.warning("writing checkpoints failed (%d in a row): %s: %s", self.failures, type(error).__name__, error)

    def _write(self, start: ResumeStart) -> None:
        if start == self._written or not start.partitions:
            return
        events = {}
        for partition, point in start.partitions.items():
            offset = self._offsets[partition].offset(point.position - 1) if partition in self._offsets else None
            if offset is not None:
                events[partition] = (point.position - 1, offset)
        self._store.save(start, events)
        self._written = start
        self.writes += 1
        self.failures = 0
        self.last_written = time.monotonic()
        self._board.forget_before(start)
        for partition, point in start.partitions.items():
            if partition in self._offsets:
                self._offsets[partition].forget_before(point.position - 1)

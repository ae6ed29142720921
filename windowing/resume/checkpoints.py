"""Consumer-group progress in Azure Blob Storage: Event Hubs checkpoints plus our resume blobs.

Each process writes, whenever it changed (see docs/eventhubs.md for why they are safe; the
blob layout is in ``sensorflow.windowing.resume.blobs``):

1. in a cluster, the **shard ends** its window sink committed (``shards/<shard>.json``); every
   process merges all of them into the committed closure ``C``;
2. our **resume blob** of each partition whose resume log it holds (``resume/<partition>.json``):
   the sequence number to restart from, the partition watermark there, the durable position
   before which stored readings are dropped, and ``C``. JSON, never pickle; it names the window
   length and lateness it was computed for;
3. the standard **Event Hubs checkpoint** of those partitions (azure-eventhub-checkpointstoreblob-aio's
   ``BlobCheckpointStore``): the event just before the restart position, so Event Hubs tooling
   sees the consumer group's progress and lag.

The resume blobs are written first and win on load; the checkpoints alone (written by another
consumer, or an older run) give start positions without a watermark.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from sensorflow.ingest.eventhubs.config import MissingDependency
from sensorflow.records.windows import BEFORE_TIME
from sensorflow.windowing.resume.blobs import (
    CheckpointMismatch,
    PartitionResume,
    StreamIdentity,
    decode_partition_resume,
    decode_resume,
    decode_shard_end,
    encode_partition_resume,
    encode_shard_end,
    merge_resumes,
)
from sensorflow.windowing.resume.board import ResumeBoard, ResumePoint, ResumeStart

__all__ = [
    "BlobCheckpoints",
    "CheckpointLocation",
    "CheckpointMismatch",
    "Checkpointer",
    "StreamIdentity",
    "decode_resume",
]

log = logging.getLogger(__name__)


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
        from azure.core.exceptions import ResourceExistsError

        try:
            await self._container.create_container()
        except ResourceExistsError:
            pass
        ident = self.identity
        checkpoints = await self._store.list_checkpoints(ident.namespace, ident.eventhub, ident.consumer_group)
        self._known = {str(c["partition_id"]): int(c["sequence_number"]) for c in checkpoints}
        start = await self._load_resume()
        if start is not None:
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

    async def _load_resume(self) -> ResumeStart | None:
        """Every partition's resume blob merged; the old single blob for partitions without one."""
        ident = self.identity
        found = await self._download_all(ident.partitions_prefix)
        resumes = [decode_partition_resume(data, ident, name) for name, data in found.items()]
        legacy_data = await self._download(ident.resume_blob)
        legacy = decode_resume(legacy_data, ident) if legacy_data is not None else None
        return merge_resumes(resumes, legacy)

    async def _download_all(self, prefix: str) -> dict[str, bytes]:
        """Every blob under ``prefix``, by name, downloaded concurrently (one deleted meanwhile is left out)."""
        names = [b.name async for b in self._container.list_blobs(name_starts_with=prefix)]
        blobs = await asyncio.gather(*(self._download(name) for name in names))
        return {name: data for name, data in zip(names, blobs) if data is not None}

    async def _download(self, name: str) -> bytes | None:
        """The blob's bytes; None if there is no such blob."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await (await self._container.get_blob_client(name).download_blob()).readall()
        except ResourceNotFoundError:
            return None

    def save(self, start: ResumeStart, events: Mapping[str, tuple[int, str]]) -> None:
        """Write the resume blob of every partition in ``start`` (each with ``start.closed_through``), then
        the Event Hubs checkpoint of every partition in ``events`` (sequence number, offset)."""
        self._run(self._save(start, events))

    async def _save(self, start: ResumeStart, events: Mapping[str, tuple[int, str]]) -> None:
        ident = self.identity
        await asyncio.gather(
            *(
                self._container.get_blob_client(ident.partition_blob(p)).upload_blob(
                    encode_partition_resume(PartitionResume(p, start.closed_through, point), ident), overwrite=True
                )
                for p, point in sorted(start.partitions.items())
            )
        )
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

    def publish_shard_ends(self, ends: Mapping[int, int], shards: int) -> None:
        """Publish the committed window end of each shard in ``ends`` (this process committed them)."""
        ident = self.identity

        async def publish() -> None:
            await asyncio.gather(
                *(
                    self._container.get_blob_client(ident.shard_blob(shard)).upload_blob(
                        encode_shard_end(shard, end, shards, ident), overwrite=True
                    )
                    for shard, end in sorted(ends.items())
                )
            )

        self._run(publish())

    def shard_ends(self, shards: int) -> dict[int, int]:
        """The committed window end every process published, per shard (a shard nobody published is absent)."""
        ident = self.identity

        async def read() -> dict[int, int]:
            found = await self._download_all(ident.shards_prefix)
            ends = (decode_shard_end(data, ident, shards) for data in found.values())
            return dict(end for end in ends if end is not None)

        return self._run(read())

    def close(self) -> None:
        async def close() -> None:
            await self._store.close()
            await self._container.close()
            if self._credential is not None:
                await self._credential.close()

        self._run(close())
        self._loop.close()


class Checkpointer:
    """Writes the board's resume data whenever it changes, on its own thread; latest wins.

    It writes only the partitions whose resume logs the board holds (its process's share of a
    cluster), each with the Event Hubs checkpoint from the offsets the source carried along.
    With ``shards_shared`` (a cluster) it first publishes the shard ends this process's window
    sink committed, then computes ``C`` from every process's published ends. A failed write is
    logged and retried at the next change or interval; ``healthy`` turns False after failures
    so /readyz can report it.
    """

    def __init__(self, store: BlobCheckpoints, board: ResumeBoard, interval: float = 1.0, shards_shared: bool = False):
        self._store = store
        self._board = board
        self._interval = interval
        self._shards_shared = shards_shared
        self._stop = threading.Event()
        floor = board.start.closed_through if board.start is not None else BEFORE_TIME
        self._published = [floor] * board.windows.shards  # shard ends already published
        self._written: dict[str, tuple[int, ResumePoint]] = {}  # per partition: (C, point) written
        if board.start is not None:
            self._written = {p: (board.start.closed_through, pt) for p, pt in board.start.partitions.items()}
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
        """Write what changed now (raises on failure); used at graceful shutdown."""
        self._write()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._write()
            except Exception as error:  # storage trouble must not stop the dataflow; it is reported
                self.failures += 1
                log.warning("writing checkpoints failed (%d in a row): %s: %s", self.failures, type(error).__name__, error)

    def closed_through(self) -> int:
        """``C``: this process's commits, and in a cluster every process's published shard ends."""
        windows = self._board.windows
        if not self._shards_shared:
            return windows.closed_through
        ends = windows.committed_ends()
        changed = {shard: end for shard, end in enumerate(ends) if end > self._published[shard]}
        if changed:
            self._store.publish_shard_ends(changed, windows.shards)
            for shard, end in changed.items():
                self._published[shard] = end
        return windows.closed_through_with(self._store.shard_ends(windows.shards))

    def _write(self) -> None:
        closed_through = self.closed_through()
        start = self._board.current(closed_through)
        held = self._board.held()
        changed = {
            p: point for p, point in start.partitions.items()
            if p in held and self._written.get(p) != (closed_through, point)
        }
        if not changed:
            return
        events = {}
        for partition, point in changed.items():
            offset = self._board.offset(partition, point.position - 1)
            if offset is not None:
                events[partition] = (point.position - 1, offset)
        written = ResumeStart(closed_through, changed)
        self._store.save(written, events)
        self._written.update({p: (closed_through, point) for p, point in changed.items()})
        self.writes += 1
        self.failures = 0
        self.last_written = time.monotonic()
        self._board.forget_before(written)

"""A live Event Hub as a Bytewax partitioned source: one Bytewax partition per Event Hubs partition.

Each received SDK batch becomes ONE :class:`~sensorflow.records.readings.MessageBatch` (positions are
sequence numbers, enqueued times in ns). The SDK receives in a separate process
(:class:`~sensorflow.ingest.eventhubs.host.ReceiverHost`); ``next_batch`` never blocks: it takes what
that process has sent for the partition. A partition's snapshot is the sequence number after
the last emitted event; a resumed partition starts there, a new one at its checkpoint (from
Blob Storage) or else at the configured starting position.

Bytewax calls ``next_batch`` in epoch E+1 only after every output has finished epoch E, and
takes the source snapshot at the end of each epoch. So the first ``next_batch`` after a
snapshot proves that everything before the snapshot's position is fully processed (the
checkpointer's "durable" position). With ``progress`` on, the source carries that position,
and the offsets of the events it emits, IN the partition's batches
(:class:`~sensorflow.records.readings.SourceProgress`) to the lateness step, whichever worker or process
holds it; a partition with nothing new received sends a batch of no messages carrying only
a durable position that moved.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions
from sensorflow.ingest.eventhubs.host import ReceiverHost
from sensorflow.ingest.eventhubs.received import Received
from sensorflow.ingest.eventhubs.receiver import PartitionStatus
from sensorflow.records.readings import MessageBatch, SourceProgress
from sensorflow.records.timeparse import MISSING

__all__ = ["EventHubsSource", "to_message_batch"]

log = logging.getLogger(__name__)

_IDLE_POLL = timedelta(milliseconds=5)
_TAKE = 64  # received batches handed to Bytewax per call at most
# ... and bytes of bodies per call (one batch at least). Bytewax runs each step over everything
# the input emitted before the next step starts, so what one call hands over is decoded whole
# before any window it completes is closed and written. With a backlog (the flow was busy; the
# receivers kept receiving), 64 batches of 50-reading messages were a whole run's worth: the
# store writer idled while they were decoded, then the flow waited while it wrote them.
_TAKE_BYTES = 1 << 20


def to_message_batch(partition: str, received: Received, progress: SourceProgress | None = None) -> MessageBatch:
    """One received SDK batch as one dataflow item (bodies stay joined when no body holds a newline)."""
    if received.clean:
        return MessageBatch(
            partition, None, received.sequence_numbers, received.enqueued_ns, received.rejects, joined=received.data, progress=progress
        )
    return MessageBatch(partition, received.bodies, received.sequence_numbers, received.enqueued_ns, received.rejects, progress=progress)


class EventHubsSource(FixedPartitionedSource[MessageBatch, "int | None"]):
    """Reads ``partitions`` of the hub behind ``connection``.

    ``starts`` maps a partition to the sequence number to start from when Bytewax has no state
    for it (from checkpoints); ``stop`` set ends every partition at its next call (graceful
    shutdown: nothing queued but not emitted counts as read). ``progress`` (live runs with
    checkpoints) attaches :class:`~sensorflow.records.readings.SourceProgress` to the batches. ``cluster``
    (one process of several): ``status`` lists only the partitions this process reads, and a
    graceful stop first sends each partition's final position once it is proven durable (the
    process keeping its resume log may be another one), then ends the partition. ``host`` is the
    receiver process to use (the caller closes it); without one the source starts its own and
    closes it when its last partition closes.
    """

    def __init__(
        self,
        connection: EventHubsConnection,
        options: ReceiveOptions,
        partitions: list[str],
        starts: Mapping[str, int] | None = None,
        progress: bool = False,
        stop: threading.Event | None = None,
        host: ReceiverHost | None = None,
        cluster: bool = False,
    ):
        if isinstance(partitions, str) or not partitions:
            raise ValueError("partitions must be a non-empty list of partition ids")
        self.connection = connection
        self.options = options
        self.partitions = [str(p) for p in partitions]
        self.starts = dict(starts or {})
        self.progress = progress
        self.cluster = cluster
        self.stop = stop or threading.Event()
        self.status = {} if cluster else {p: PartitionStatus(p) for p in self.partitions}
        self.final_positions: dict[str, int | None] = {}
        self._host = host
        self._own_host = host is None
        self._lock = threading.Lock()
        self._open_parts = 0

    def list_parts(self) -> list[str]:
        return list(self.partitions)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _EventHubsPartition:
        start = resume_state if resume_state is not None else self.starts.get(for_part)
        log.info(
            "partition %s starts at %s",
            for_part,
            f"sequence number {start}" if start is not None else self.options.starting_position,
            extra={"partition": for_part, "position": start},
        )
        with self._lock:
            if self._host is None:
                self._host = ReceiverHost(self.connection, self.options)
            self._open_parts += 1
            self.status.setdefault(for_part, PartitionStatus(for_part))
        self._host.start(for_part, start, self.status[for_part])
        return _EventHubsPartition(for_part, self._host, start, self)

    def connected(self) -> bool:
        return all(s.connected for s in list(self.status.values()))

    def _closed(self, partition: str, position: int | None) -> None:
        self.final_positions[partition] = position
        with self._lock:
            self._open_parts -= 1
            if self._own_host and self._open_parts == 0 and self._host is not None:
                self._host.close()
                self._host = None


class _EventHubsPartition(StatefulSourcePartition[MessageBatch, "int | None"]):
    def __init__(self, partition: str, host: ReceiverHost, start: int | None, source: EventHubsSource):
        self._partition = partition
        self._host = host
        self._next = start  # sequence number after the last emitted event
        self._source = source
        self._status = source.status[partition]
        self._snapshotted: int | None = None
        self._carried: int | None = None  # the last durable position sent downstream

    def next_batch(self) -> list[MessageBatch]:
        durable, self._snapshotted = self._snapshotted, None  # every output finished that snapshot's epoch
        if not self._source.progress or (self._carried is not None and durable is not None and durable <= self._carried):
            durable = None  # nothing to carry, or nothing new
        if self._source.stop.is_set():
            return self._stopping(durable)
        batches = []
        for received in self._host.take(self._partition, _TAKE, _TAKE_BYTES):
            progress = None
            if self._source.progress:
                progress = SourceProgress(durable, received.sequence_numbers, received.offsets)
                self._carried, durable = durable if durable is not None else self._carried, None
            batches.append(to_message_batch(self._partition, received, progress))
            self._next = received.next_sequence
            self._status.last_sequence = self._next - 1
            if len(received) and received.enqueued_ns[-1] != MISSING:
                self._status.last_enqueued_ns = int(received.enqueued_ns[-1])
        if durable is not None:  # nothing received: the position still moves on downstream
            self._carried = durable
            batches.append(MessageBatch.carrying(self._partition, SourceProgress(durable, alone=True)))
        return batches

    def _stopping(self, durable: int | None) -> list[MessageBatch]:
        """Graceful stop: end now, or (cluster) once the final position has been sent as durable."""
        final = self._next
        if not (self._source.cluster and self._source.progress) or final is None or self._carried == final:
            raise StopIteration
        if durable == final:  # the snapshot after the last emitted event is proven: send it, end next call
            self._carried = final
            return [MessageBatch.carrying(self._partition, SourceProgress(final, alone=True))]
        return []  # wait for the next snapshot

    def next_awake(self) -> datetime | None:
        if self._source.stop.is_set():
            return datetime.now(UTC) + _IDLE_POLL if self._source.cluster and self._source.progress else None
        if self._host.waiting(self._partition):
            return None
        return datetime.now(UTC) + _IDLE_POLL

    def snapshot(self) -> int | None:
        self._snapshotted = self._next  # None (nothing read on a cold start) reports nothing
        return self._next

    def close(self) -> None:
        self._host.stop(self._partition)
        self._source._closed(self._partition, self._next)

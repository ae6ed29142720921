"""One Event Hubs Capture partition: a directory of Avro files read in order."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import fastavro
import numpy as np

from sensorflow.records.dead_letters import ReasonCode
from sensorflow.records.readings import MessageBatch, Reject
from sensorflow.records.timeparse import MISSING, parse_time

__all__ = ["AvroPosition", "AvroReader", "CAPTURE_SCHEMA"]

CAPTURE_SCHEMA = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}
"""Event Hubs Capture's Avro schema (what Capture writes; the reader needs only
SequenceNumber, EnqueuedTimeUtc and Body)."""

AvroPosition = tuple[int, int]
"""(file index, records consumed in that file) after the last message handed out."""


class AvroReader:
    """Reads Capture records (SequenceNumber, EnqueuedTimeUtc, Body) from sorted ``.avro`` files."""

    def __init__(self, files: list[Path], partition: str, position: AvroPosition = (0, 0), batch_records: int = 10_000):
        if batch_records < 1:
            raise ValueError("batch_records must be >= 1")
        self.files = [Path(f) for f in files]
        self.partition = partition
        self._file_index, self._record = position
        self._batch_records = batch_records
        self._handle = None
        self._records = None

    @property
    def position(self) -> AvroPosition:
        return (self._file_index, self._record)

    @property
    def bytes_read(self) -> int:
        """Bytes of the files read so far (the open file's position is where fastavro's buffered reads got to)."""
        done = sum(f.stat().st_size for f in self.files[: self._file_index])
        return done + (self._handle.tell() if self._handle is not None and not self._handle.closed else 0)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._records = None

    def read(self, max_messages: int | None = None) -> MessageBatch:
        """The next records (up to ``max_messages``); ``eof`` set once every file is read."""
        limit = min(max_messages or self._batch_records, self._batch_records)
        bodies: list[bytes] = []
        positions: list[int] = []
        enqueued: list[int] = []
        rejects: list[Reject] = []
        while len(bodies) + len(rejects) < limit and self._open():
            record = next(self._records, None)
            if record is None:
                self.close()
                self._file_index, self._record = self._file_index + 1, 0
                continue
            self._record += 1
            sequence = record.get("SequenceNumber")
            body = record.get("Body")
            if body is None:
                rejects.append(Reject(int(sequence or 0), ReasonCode.MISSING_BODY, b""))
                continue
            bodies.append(bytes(body))
            positions.append(int(sequence))
            when = parse_time(record.get("EnqueuedTimeUtc") or "")
            enqueued.append(MISSING if when is None else when)
        eof = self._file_index >= len(self.files)
        return MessageBatch(
            self.partition,
            bodies,
            np.array(positions, dtype=np.int64),
            np.array(enqueued, dtype=np.int64),
            tuple(rejects),
            eof,
        )

    def _open(self) -> bool:
        if self._records is not None:
            return True
        if self._file_index >= len(self.files):
            return False
        self._handle = open(self.files[self._file_index], "rb")  # noqa: SIM115 - closed by close()
        self._records = islice(fastavro.reader(self._handle), self._record, None)
        return True

"""Frames between the dataflow and its receiver process, over the child's stdin and stdout.

A frame is an 8-byte little-endian length, one kind byte and a payload. Received batches
(``BATCH``) are binary: a fixed header, the int64 columns as raw arrays, the offsets and the
joined bodies, so neither side touches an event in Python to pass a batch on. Everything else
(requests, status, logs) is a small JSON object. Nothing here is pickled.
"""

from __future__ import annotations

import struct
from dataclasses import asdict
from datetime import datetime
from typing import Any, BinaryIO

import numpy as np
import orjson
from pydantic import SecretStr

from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions
from sensorflow.ingest.eventhubs.received import Received

__all__ = [
    "BATCH",
    "JSON",
    "connection_from_json",
    "connection_to_json",
    "decode_batch",
    "encode_batch",
    "options_from_json",
    "options_to_json",
    "read_frame",
    "write_frame",
]

BATCH, JSON = b"B", b"J"

_FRAME = struct.Struct("<Qc")
# partition index, events, clean, next sequence, bytes of: offsets, rejects (JSON), data
_BATCH = struct.Struct("<IIBqQQQ")


def write_frame(stream: BinaryIO, kind: bytes, *parts: bytes | memoryview) -> None:
    """One frame of ``kind`` whose payload is ``parts`` concatenated; flushed."""
    stream.write(_FRAME.pack(sum(len(p) for p in parts), kind))
    stream.writelines(parts)
    stream.flush()


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes]:
    """(kind, payload) of the next frame; EOFError at the end of the stream (or a cut frame)."""
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        raise EOFError
    size, kind = _FRAME.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return kind, payload


def encode_batch(index: int, received: Received) -> list[bytes | memoryview]:
    """The payload parts of a ``BATCH`` frame for partition ``index``."""
    n = len(received)
    offsets = b"\n".join(received.offsets)
    if n and offsets.count(b"\n") != n - 1:  # hub offsets are numbers; never let one break the framing
        offsets = b"\n".join(b"" if b"\n" in o else o for o in received.offsets)
    rejects = orjson.dumps([[r.position, r.reason, r.payload.hex()] for r in received.rejects]) if received.rejects else b""
    header = _BATCH.pack(index, n, received.clean, received.next_sequence, len(offsets), len(rejects), len(received.data))
    parts: list[bytes | memoryview] = [
        header,
        memoryview(np.ascontiguousarray(received.sequence_numbers, dtype=np.int64)).cast("B"),
        memoryview(np.ascontiguousarray(received.enqueued_ns, dtype=np.int64)).cast("B"),
    ]
    if not received.clean and n:
        parts.append(memoryview(np.ascontiguousarray(received.body_lengths, dtype=np.int64)).cast("B"))
    parts += [offsets, rejects, received.data]
    return parts


def decode_batch(payload: bytes) -> tuple[int, Received]:
    """(partition index, batch) of a ``BATCH`` payload."""
    index, n, clean, next_sequence, n_offsets, n_rejects, n_data = _BATCH.unpack_from(payload)
    at = _BATCH.size
    view = memoryview(payload)

    def column() -> np.ndarray:
        nonlocal at
        array = np.frombuffer(view[at : at + 8 * n], dtype=np.int64).copy()
        at += 8 * n
        return array

    seqs, enqueued = column(), column()
    lengths = column() if not clean and n else None
    offsets = payload[at : at + n_offsets].split(b"\n") if n else []
    at += n_offsets
    rejects: tuple = ()
    if n_rejects:
        from sensorflow.records.readings import Reject  # not in the receiver process, which only encodes

        rejects = tuple(Reject(p, r, bytes.fromhex(h)) for p, r, h in orjson.loads(view[at : at + n_rejects]))
    at += n_rejects
    data = payload[at : at + n_data]
    return index, Received(data, bool(clean), lengths, seqs, enqueued, offsets, next_sequence, rejects)


def connection_to_json(connection: EventHubsConnection) -> dict[str, Any]:
    """The connection for the receiver process (its secret goes over the pipe, never on a command line)."""
    secret = connection.connection_string
    return {
        "eventhub_name": connection.eventhub_name,
        "connection_string": None if secret is None else secret.get_secret_value(),
        "fully_qualified_namespace": connection.fully_qualified_namespace,
    }


def connection_from_json(doc: dict[str, Any]) -> EventHubsConnection:
    secret = doc.get("connection_string")
    return EventHubsConnection(
        eventhub_name=doc.get("eventhub_name"),
        connection_string=None if secret is None else SecretStr(secret),
        fully_qualified_namespace=doc.get("fully_qualified_namespace"),
    )


def options_to_json(options: ReceiveOptions) -> dict[str, Any]:
    doc = asdict(options)
    if isinstance(options.starting_position, datetime):
        doc["starting_position"] = {"enqueued_time": options.starting_position.isoformat()}
    return doc


def options_from_json(doc: dict[str, Any]) -> ReceiveOptions:
    doc = dict(doc)
    position = doc.get("starting_position")
    if isinstance(position, dict):
        doc["starting_position"] = datetime.fromisoformat(position["enqueued_time"])
    return ReceiveOptions(**doc)

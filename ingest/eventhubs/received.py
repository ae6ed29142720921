"""What one received SDK batch becomes: :class:`Received`, built from the SDK's events without ``EventData`` properties.

Per event only the AMQP message's data sections (joined when there are several) and its
annotations (sequence number, enqueued time, offset) are read; an event whose body is an AMQP
value or sequence instead of data sections is kept as a :class:`~sensorflow.records.readings.Reject`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sensorflow.records.readings import Reject

__all__ = ["NOT_DATA", "Received", "received_from_events"]

_NS_PER_MS = 1_000_000
_SEQUENCE, _OFFSET, _ENQUEUED = b"x-opt-sequence-number", b"x-opt-offset", b"x-opt-enqueued-time"

# The receiver process builds Received; the records' modules (and with them pyarrow, 0.1-0.15 s
# of its start-up, before it can even list the partitions) are imported only when an event
# needs them: one without a data body, or without an enqueued time.


@cache
def _not_data() -> str:
    from sensorflow.records.dead_letters import ReasonCode

    return ReasonCode.MISSING_BODY.detail("an AMQP value or sequence body, not data sections")


@cache
def _missing_time() -> int:
    from sensorflow.records.timeparse import MISSING

    return int(MISSING)


def __getattr__(name: str) -> Any:  # NOT_DATA: the reason of an event without data sections
    if name == "NOT_DATA":
        return _not_data()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, eq=False)
class Received:
    """Events received in one SDK batch, in partition order.

    ``data`` is every data body joined by ``b"\\n"``; ``clean`` says no body holds a newline, so
    ``data.split(b"\\n")`` gives the bodies back; otherwise ``body_lengths`` does. ``offsets[i]``
    is event i's offset as bytes (``b""``: the hub gave none). Events without a data body are
    ``rejects`` (no position of their own in the arrays); ``next_sequence`` follows the batch's
    last event, rejected or not.
    """

    data: bytes
    clean: bool
    body_lengths: np.ndarray | None  # int64, set when not clean
    sequence_numbers: np.ndarray  # int64
    enqueued_ns: np.ndarray  # int64, MISSING where unknown
    offsets: Sequence[bytes]
    next_sequence: int
    rejects: tuple[Reject, ...] = ()

    def __len__(self) -> int:
        return len(self.sequence_numbers)

    @property
    def bodies(self) -> list[bytes]:
        if not len(self.sequence_numbers):
            return []
        if self.clean:
            return self.data.split(b"\n")
        bodies, start = [], 0
        for length in self.body_lengths.tolist():
            bodies.append(self.data[start : start + length])
            start += length + 1
        return bodies

    @classmethod
    def of(
        cls,
        bodies: list[bytes],
        sequence_numbers: Sequence[int],
        enqueued_ns: Sequence[int],
        offsets: Sequence[bytes],
        next_sequence: int | None = None,
        rejects: tuple[Reject, ...] = (),
    ) -> Received:
        """From bodies and columns; ``next_sequence`` defaults to the last sequence number + 1."""
        data = b"\n".join(bodies)
        clean = data.count(b"\n") == len(bodies) - 1
        lengths = None if clean else np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
        seqs = np.asarray(sequence_numbers, dtype=np.int64)
        if next_sequence is None:
            next_sequence = int(seqs[-1]) + 1
        return cls(data, clean, lengths, seqs, np.asarray(enqueued_ns, dtype=np.int64), offsets, next_sequence, rejects)


def _event_fields(event: Any) -> tuple[int, bytes | None, int | None, bytes | None]:
    """(sequence number, body or None if not data sections, enqueued ms, offset) of an ``EventData`` or AMQP message."""
    message = getattr(event, "_message", event)
    annotations = getattr(message, "message_annotations", None)
    if annotations is not None and hasattr(message, "data"):  # the pyamqp message the SDK decoded
        data = message.data
        body = None if data is None else data[0] if len(data) == 1 else b"".join(data)
        return annotations[_SEQUENCE], body, annotations.get(_ENQUEUED), annotations.get(_OFFSET)
    # Any other transport: the public properties (slower, same values).
    from azure.eventhub.amqp import AmqpMessageBodyType

    body = b"".join(event.body) if event.body_type == AmqpMessageBodyType.DATA else None
    enqueued = event.enqueued_time
    offset = event.offset
    return (
        event.sequence_number,
        body,
        None if enqueued is None else round(enqueued.timestamp() * 1000),
        None if offset is None else offset.encode(),
    )


def received_from_events(events: list, after: int | None = None) -> Received | None:
    """One SDK batch (``EventData`` or AMQP messages) as a :class:`Received`, skipping events before
    sequence number ``after``; None if none is left."""
    bodies, seqs, enqueued, offsets, rejects = [], [], [], [], []
    last = None
    for event in events:
        seq, body, enqueued_ms, offset = _event_fields(event)
        if after is not None and seq < after:
            continue  # a redelivery after a reconnect
        last = seq
        if body is None:
            from sensorflow.records.readings import Reject

            rejects.append(Reject(seq, _not_data(), b""))
            continue
        bodies.append(body)
        seqs.append(seq)
        enqueued.append(_missing_time() if enqueued_ms is None else enqueued_ms * _NS_PER_MS)
        offsets.append(offset or b"")
    if last is None:
        return None
    return Received.of(bodies, seqs, enqueued, offsets, last + 1, tuple(rejects))

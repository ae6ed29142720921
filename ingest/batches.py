"""What flows out of ``ingest``: message batches, columnar reading batches, dead letters.

One Bytewax item is one batch. Readings are columns (Arrow arrays), never
Python objects per reading, so operators downstream stay vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = [
    "MessageBatch",
    "Reject",
    "READING_SCHEMA",
    "ReadingBatch",
    "DEAD_LETTER_SCHEMA",
    "DeadLetter",
    "DeadLetterBatch",
]


@dataclass(frozen=True)
class Reject:
    """A message the transport could not even unwrap (e.g. a broken envelope)."""

    position: int
    reason: str
    payload: bytes


@dataclass(frozen=True, eq=False)
class MessageBatch:
    """Messages read from one input partition, in partition order.

    ``positions[i]`` is where message ``i`` sits in its partition (line number
    of a raw line, sequence number of an envelope or Event Hubs event);
    ``enqueued_ns[i]`` its enqueued time in ns, ``MISSING`` where unknown.
    ``eof`` marks the partition's last batch: no message follows it.
    ``joined``, when a reader has it for free, is ``b"\n".join(bodies)`` with
    no newline inside any body (it saves the decoder a copy).
    """

    partition: str
    bodies: list[bytes]
    positions: np.ndarray
    enqueued_ns: np.ndarray
    rejects: tuple[Reject, ...] = ()
    eof: bool = False
    joined: bytes | None = None

    def __post_init__(self) -> None:
        if not (len(self.bodies) == len(self.positions) == len(self.enqueued_ns)):
            raise ValueError("bodies, positions and enqueued_ns must have the same length")

    @property
    def messages(self) -> int:
        """Messages carried, rejects included."""
        return len(self.bodies) + len(self.rejects)


READING_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("element", pa.int32()),
        ("ts", pa.int64()),  # event time, ns since the epoch, UTC
        ("device", pa.string()),
        ("tag", pa.string()),
        ("value", pa.float64()),
    ]
)


@dataclass(frozen=True, eq=False)
class ReadingBatch:
    """Valid readings from one partition, in the order they were read."""

    partition: str
    table: pa.Table
    eof: bool = False

    @classmethod
    def empty(cls, partition: str, eof: bool = False) -> "ReadingBatch":
        return cls(partition, READING_SCHEMA.empty_table(), eof)

    def __len__(self) -> int:
        return self.table.num_rows


DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("partition", pa.string()),
        ("position", pa.int64()),
        ("element", pa.int32()),
        ("reason", pa.string()),
        ("payload", pa.binary()),
        ("ts", pa.int64()),
        ("device", pa.string()),
        ("tag", pa.string()),
        ("value", pa.float64()),
    ]
)


@dataclass(frozen=True)
class DeadLetter:
    """One element that did not become a windowed reading, and why.

    ``reason`` is ``code`` or ``code: detail``; the code alone is stable
    (``bad_json``, ``missing_field``, ``late``, ...).
    """

    partition: str
    position: int
    element: int
    reason: str
    payload: bytes | None = None
    ts: int | None = None
    device: str | None = None
    tag: str | None = None
    value: float | None = None


@dataclass(frozen=True, eq=False)
class DeadLetterBatch:
    """Dead letters as columns (schema ``DEAD_LETTER_SCHEMA``)."""

    table: pa.Table = field(default_factory=DEAD_LETTER_SCHEMA.empty_table)

    @classmethod
    def from_records(cls, records: list[DeadLetter]) -> "DeadLetterBatch":
        if not records:
            return cls()
        columns = {name: [getattr(r, name) for r in records] for name in DEAD_LETTER_SCHEMA.names}
        return cls(pa.table(columns, schema=DEAD_LETTER_SCHEMA))

    @classmethod
    def late(cls, partition: str, readings: pa.Table, reason: str = "late") -> "DeadLetterBatch":
        """Readings refused by the lateness rule, keeping their values."""
        n = readings.num_rows
        table = pa.table(
            {
                "partition": pa.array([partition] * n, pa.string()),
                "position": readings["position"],
                "element": readings["element"],
                "reason": pa.array([reason] * n, pa.string()),
                "payload": pa.nulls(n, pa.binary()),
                "ts": readings["ts"],
                "device": readings["device"],
                "tag": readings["tag"],
                "value": readings["value"],
            },
            schema=DEAD_LETTER_SCHEMA,
        )
        return cls(table)

    def __len__(self) -> int:
        return self.table.num_rows

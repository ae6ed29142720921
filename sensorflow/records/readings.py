"""What flows out of ``ingest``: message batches and columnar reading batches.

One Bytewax item is one batch. Readings are columns (Arrow arrays), never
Python objects per reading, so operators downstream stay vectorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = [
    "SourceProgress",
    "MessageBatch",
    "Reject",
    "READING_SCHEMA",
    "ReadingBatch",
]


@dataclass(frozen=True)
class Reject:
    """A message the transport could not even unwrap (e.g. a broken envelope)."""

    position: int
    reason: str
    payload: bytes


_NO_POSITIONS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class SourceProgress:
    """What a live source tells the step keeping its partition's resume log, carried in its batches.

    ``durable``: every message of the partition before this position has been processed by every
    output (None: nothing new proven since the last batch). ``sequence_numbers`` and ``offsets``:
    the transport's offset of each event of the batch (what a transport checkpoint names).
    ``alone``: the batch exists only to carry this (it has no messages and is no sign of life
    of the partition). References to the received arrays, never per-event copies.
    """

    durable: int | None = None
    sequence_numbers: np.ndarray = field(default_factory=lambda: _NO_POSITIONS)
    offsets: Sequence[bytes] = ()
    alone: bool = False


class MessageBatch:
    """Messages read from one input partition, in partition order.

    ``positions[i]`` is where message ``i`` sits in its partition (line number
    of a raw line, sequence number of an envelope or Event Hubs event);
    ``enqueued_ns[i]`` its enqueued time in ns, ``MISSING`` where unknown.
    ``eof`` marks the partition's last batch: no message follows it.

    Bodies come as a list, or as ``joined`` = ``b"\\n".join(bodies)`` when a
    reader has them that way and no body holds a newline; the decoder's fast
    path reads ``joined`` and only a slow path needs the list, split lazily.

    ``progress`` is set by live sources only (see :class:`SourceProgress`).
    """

    __slots__ = ("partition", "positions", "enqueued_ns", "rejects", "eof", "progress", "_bodies", "_joined")

    def __init__(
        self,
        partition: str,
        bodies: list[bytes] | None,
        positions: np.ndarray,
        enqueued_ns: np.ndarray,
        rejects: tuple[Reject, ...] = (),
        eof: bool = False,
        joined: bytes | None = None,
        progress: SourceProgress | None = None,
    ):
        if bodies is None and joined is None:
            raise ValueError("give bodies or joined")
        if bodies is not None and len(bodies) != len(positions):
            raise ValueError("bodies and positions must have the same length")
        if len(positions) != len(enqueued_ns):
            raise ValueError("positions and enqueued_ns must have the same length")
        self.partition = partition
        self.positions = positions
        self.enqueued_ns = enqueued_ns
        self.rejects = rejects
        self.eof = eof
        self.progress = progress
        self._bodies = bodies
        self._joined = joined

    @classmethod
    def carrying(cls, partition: str, progress: SourceProgress) -> MessageBatch:
        """A batch of no messages that only carries ``progress``."""
        return cls(partition, None, _NO_POSITIONS, _NO_POSITIONS, joined=b"", progress=progress)

    @property
    def bodies(self) -> list[bytes]:
        if self._bodies is None:
            self._bodies = self._joined.split(b"\n") if len(self.positions) else []
        return self._bodies

    @property
    def joined(self) -> bytes | None:
        return self._joined

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def messages(self) -> int:
        """Messages carried, rejects included."""
        return len(self.positions) + len(self.rejects)

    def __getstate__(self) -> tuple:
        return (self.partition, self.positions, self.enqueued_ns, self.rejects, self.eof, self.progress, self._bodies, self._joined)

    def __setstate__(self, state: tuple) -> None:
        (self.partition, self.positions, self.enqueued_ns, self.rejects, self.eof, self.progress, self._bodies, self._joined) = state


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
    """Valid readings from one partition, in the order they were read (``progress``: see MessageBatch)."""

    partition: str
    table: pa.Table
    eof: bool = False
    progress: SourceProgress | None = None

    def __len__(self) -> int:
        return self.table.num_rows

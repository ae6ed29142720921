"""JSON Lines envelope lines (CONTRACTS.md "Recordings") for message chunks.

Single-reading messages are rendered all at once into fixed-width byte rows
(lookup tables, no Python per line); other messages (JSON arrays, malformed
bodies) go through orjson one by one. Fixed-width rows need padding: it is
JSON whitespace, placed where it cannot change a value (after
`"sequence_number":` and at the end of the line); the offset is a decimal
string zero-padded to 12 digits, and the body text itself is never padded.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from functools import cache

import numpy as np
import orjson

from sensorflow.simulator.config import SimulatorConfig
from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.messages import MessageChunk
from sensorflow.simulator.rows import FieldFill, fill_rows
from sensorflow.simulator.texts import ReadingTexts
from sensorflow.simulator.timefmt import ENQUEUED_WIDTH, digit_table, enqueued_fills, format_enqueued_time

__all__ = ["EnvelopeWriter", "OFFSET_DIGITS", "body_json", "envelope_line"]

OFFSET_DIGITS = 12  # a multiple of 6: offsets are written in 6-digit groups
_SPACE = 32
_MID_OFFSET = b',"offset":"'
_MID_ENQUEUED = b'","enqueued_time":"'
_MID_BODY = b'","body":"'
_LINE_END = b'"}'


def _digits_width(values: np.ndarray, minimum: int) -> int:
    largest = int(values.max()) if values.shape[0] else 0
    return max(minimum, -(-len(str(largest)) // 4) * 4)


def body_json(body: bytes) -> str | dict[str, str]:
    """The envelope's `body`: the text if it is UTF-8, else `{"base64": ...}`."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}


def envelope_line(
    partition: int, sequence_number: int, offset: int, enqueued_ns: int, partition_key: str | None, body: bytes
) -> bytes:
    """One envelope line (with newline), rendered by orjson."""
    return orjson.dumps(
        {
            "partition": str(partition),
            "partition_key": partition_key,
            "sequence_number": sequence_number,
            "offset": f"{offset:0{OFFSET_DIGITS}d}",
            "enqueued_time": format_enqueued_time(enqueued_ns),
            "body": body_json(body),
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


@cache
def _right_aligned_groups() -> np.ndarray:
    """4-byte groups: 0..9999 zero-padded, then 0..9999 space-padded, then blank."""
    spaced = np.char.rjust(np.char.mod("%d", np.arange(10_000)).astype("S4"), 4)
    return np.concatenate([digit_table(4), spaced, np.array([b"    "], dtype="S4")])


def right_aligned_fills(column: int, width: int, values: np.ndarray) -> list[FieldFill]:
    """Decimal `values` right-aligned in `width` bytes (a multiple of 4), space-padded."""
    table = _right_aligned_groups()
    groups = width // 4
    fills = []
    for i in range(groups):
        power = groups - 1 - i
        group = (values // 10 ** (4 * power)) % 10_000
        higher = values // 10 ** (4 * (power + 1))
        index = np.where(higher > 0, group, np.where((group > 0) | (power == 0), 10_000 + group, 20_000))
        fills.append(FieldFill(column + 4 * i, table, index))
    return fills


def zero_padded_fills(column: int, width: int, values: np.ndarray) -> list[FieldFill]:
    """Decimal `values` zero-padded to `width` bytes (a multiple of 6)."""
    groups = width // 6
    return [
        FieldFill(column + 6 * i, digit_table(6), (values // 10 ** (6 * (groups - 1 - i))) % 1_000_000)
        for i in range(groups)
    ]


class EnvelopeWriter:
    """Renders a `MessageChunk` into envelope lines, per partition.

    Reuses a ring of `buffers` row buffers, because fresh memory costs page
    faults that are slower than the rendering. The blocks of a chunk stay
    valid until `buffers` more chunks have been rendered, so a writer thread
    may lag up to `buffers - 1` chunks behind.
    """

    def __init__(self, config: SimulatorConfig, fleet: Fleet, texts: ReadingTexts, buffers: int = 1) -> None:
        if buffers < 1:
            raise ValueError("buffers must be >= 1")
        self._fleet = fleet
        self._texts = texts
        self._keyed = config.messages.partition_by_device
        partitions = config.messages.partitions
        if self._keyed:
            partition_of = fleet.device_partitions(partitions)
            heads = [
                b'{"partition":"%d","partition_key":%s,"sequence_number":' % (partition_of[d], orjson.dumps(key))
                for d, key in enumerate(fleet.device_keys)
            ]
        else:
            heads = [b'{"partition":"%d","partition_key":null,"sequence_number":' % p for p in range(partitions)]
        width = max(len(h) for h in heads)
        self._heads = np.array([h.ljust(width) for h in heads], dtype=f"S{width}")
        self._buffers = [np.zeros(0, dtype=np.uint8) for _ in range(buffers)]
        # Per buffer: the template its rows hold, and how many rows hold it.
        self._templated: list[tuple[bytes, int]] = [(b"", 0) for _ in range(buffers)]
        self._turn = 0

    def _rows(self, count: int, template: bytes) -> tuple[np.ndarray, bool]:
        """The next buffer as rows, and whether its rows already hold `template`."""
        self._turn = (self._turn + 1) % len(self._buffers)
        width = len(template)
        if self._buffers[self._turn].shape[0] < count * width:
            self._buffers[self._turn] = np.empty(int(count * width * 1.25) + 4096, dtype=np.uint8)
            self._templated[self._turn] = (b"", 0)
        held_template, held_rows = self._templated[self._turn]
        ready = held_template == template and held_rows >= count
        if not ready:
            self._templated[self._turn] = (template, count)
        return self._buffers[self._turn][: count * width].reshape(count, width), ready

    def render_fast(self, chunk: MessageChunk, which: np.ndarray) -> np.ndarray:
        """Rows (with newline) of the single-reading messages `which`, as a 2-D uint8 array."""
        count = which.shape[0]
        sequence = chunk.sequence_number[which]
        sequence_width = _digits_width(sequence, 4)
        offsets = chunk.offset[which]
        offset_width = max(OFFSET_DIGITS, -(-len(str(int(offsets.max()))) // 6) * 6) if count else OFFSET_DIGITS
        sensor, cents = chunk.sensor[which], chunk.cents[which]
        head_width = self._heads.dtype.itemsize
        template = bytearray(b" " * head_width)
        template += b" " * sequence_width + _MID_OFFSET
        offset_column = len(template)
        template += b"0" * offset_width + _MID_ENQUEUED
        enqueued_column = len(template)
        template += b" " * ENQUEUED_WIDTH + _MID_BODY
        text_column = len(template)
        template += self._texts.head(escaped=True)
        width = text_column + self._texts.row_width(cents, escaped=True, suffix=_LINE_END) + 1
        template = template.ljust(width - 1) + b"\n"
        head_index = self._fleet.device_of(sensor) if self._keyed else chunk.partition[which]
        fills = [FieldFill(0, self._heads, head_index)]
        fills += right_aligned_fills(head_width, sequence_width, sequence)
        fills += zero_padded_fills(offset_column, offset_width, offsets)
        fills += enqueued_fills(enqueued_column, chunk.enqueued_ns[which])
        fills += self._texts.fills(
            text_column, sensor, chunk.event_ns[which], cents, escaped=True, suffix=_LINE_END, pad=_SPACE
        )
        template = bytes(template)
        rows, ready = self._rows(count, template)
        # Rows that hold this template already need only the variable-length tail reset.
        tail = (text_column + len(self._texts.head(escaped=True)), width - 1) if ready else None
        fill_rows(rows, np.frombuffer(template, dtype=np.uint8), fills, template_columns=tail)
        return rows

    def _explicit_line(self, chunk: MessageChunk, i: int) -> bytes:
        device = int(chunk.key_device[i])
        key = self._fleet.device_keys[device] if device >= 0 else None
        return envelope_line(
            int(chunk.partition[i]), int(chunk.sequence_number[i]), int(chunk.offset[i]),
            int(chunk.enqueued_ns[i]), key, chunk.explicit[i],
        )

    def blocks(self, chunk: MessageChunk) -> Iterator[tuple[int, memoryview | bytes]]:
        """(partition, bytes of consecutive lines) in file order; rows of a partition are contiguous."""
        n = len(chunk)
        if n == 0:
            return
        is_explicit = np.zeros(n, dtype=bool)
        if chunk.explicit:
            is_explicit[np.fromiter(chunk.explicit.keys(), dtype=np.int64, count=len(chunk.explicit))] = True
        fast = np.flatnonzero(~is_explicit)
        rows = self.render_fast(chunk, fast) if fast.shape[0] else None
        # Cut points: where the partition changes or fast/explicit alternates.
        change = np.flatnonzero(
            (chunk.partition[1:] != chunk.partition[:-1]) | (is_explicit[1:] != is_explicit[:-1])
        ) + 1
        bounds = np.concatenate([[0], change, [n]]).tolist()
        fast_before = np.cumsum(~is_explicit) - (~is_explicit)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            partition = int(chunk.partition[a])
            if is_explicit[a]:
                yield partition, b"".join(self._explicit_line(chunk, i) for i in range(a, b))
            else:
                r = int(fast_before[a])
                yield partition, memoryview(rows[r : r + (b - a)]).cast("B")

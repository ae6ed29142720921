"""One JSON Lines partition file, read in blocks from a resumable byte offset.

A line is an envelope (an object with ``"body"``, see docs/recordings.md) or
a raw message body. Only envelopes are unwrapped here; bodies are decoded
downstream.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from sensorflow.ingest.jsonblock import read_object_lines
from sensorflow.records.dead_letters import ReasonCode
from sensorflow.records.readings import MessageBatch, Reject
from sensorflow.records.timeparse import MISSING, parse_time, parse_time_array

__all__ = ["JsonlPosition", "JsonlReader"]

JsonlPosition = tuple[int, int]
"""(byte offset, lines consumed) after the last message handed out."""

_BODY_KEY = b'"body"'


class JsonlReader:
    """Reads messages from one ``.jsonl`` file; ``position`` resumes after the last one read."""

    def __init__(self, path: Path, partition: str, position: JsonlPosition = (0, 0), block_bytes: int = 1 << 20):
        if block_bytes < 128:
            raise ValueError("block_bytes must be >= 128")
        self.path = Path(path)
        self.partition = partition
        self._offset, self._line = position
        self._block_bytes = block_bytes
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._file.seek(self._offset)
        self._buffer = b""
        self._at_eof = False

    @property
    def position(self) -> JsonlPosition:
        return (self._offset, self._line)

    def close(self) -> None:
        self._file.close()

    def read(self, max_messages: int | None = None) -> MessageBatch:
        """The next messages (up to ``max_messages``); ``eof`` set once the file is exhausted."""
        self._fill()
        complete = self._buffer[: self._buffer.rfind(b"\n") + 1]
        if self._at_eof and len(complete) < len(self._buffer):
            complete = self._buffer + b"\n"  # a last line without its newline
        if max_messages:
            lines = complete.split(b"\n", max_messages)
            if len(lines) > max_messages and lines[max_messages]:
                taken, chunk = lines[:max_messages], complete[: len(complete) - len(lines[max_messages])]
            else:
                taken, chunk = lines[:-1], complete
        else:
            taken, chunk = None, complete  # split only if the lines are needed one by one
        consumed = min(len(chunk), len(self._buffer))  # the added newline is not in the file
        self._buffer = self._buffer[consumed:]
        first = self._line
        count = len(taken) if taken is not None else int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == ord("\n")))
        self._offset += consumed
        self._line += count
        eof = self._at_eof and not self._buffer
        return _unwrap(self.partition, taken, count, first, eof, chunk)

    def _fill(self) -> None:
        while not self._at_eof and (b"\n" not in self._buffer or len(self._buffer) < self._block_bytes // 2):
            chunk = self._file.read(self._block_bytes)
            if not chunk:
                self._at_eof = True
                break
            self._buffer += chunk
            if len(chunk) < self._block_bytes:
                self._at_eof = True


def _unwrap(
    partition: str, lines: list[bytes] | None, count: int, first_line: int, eof: bool, chunk: bytes
) -> MessageBatch:
    """Lines to messages: line numbers (1-based) are positions of raw lines.

    ``chunk`` is the bytes of the ``count`` lines, each with its newline;
    ``lines`` the same split, or None when not split yet.
    """
    # A one-byte search (memchr) first: most recordings hold no "y" at all.
    has_cr, has_envelopes = b"\r" in chunk, b"y" in chunk and _BODY_KEY in chunk
    positions = np.arange(first_line + 1, first_line + 1 + count, dtype=np.int64)
    enqueued = np.full(count, MISSING, dtype=np.int64)
    if not has_cr and not has_envelopes:
        return MessageBatch(partition, lines, positions, enqueued, eof=eof, joined=chunk[:-1] if count else b"")
    if has_envelopes and not has_cr:
        fast = _envelopes_fast(partition, chunk, count, positions, eof)
        if fast is not None:
            return fast
    if lines is None:
        lines = chunk.split(b"\n")[:-1]
    if has_cr:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if not has_envelopes:
        return MessageBatch(partition, lines, positions, enqueued, eof=eof)
    bodies: list[bytes] = []
    keep: list[int] = []
    rejects: list[Reject] = []
    for i, line in enumerate(lines):
        envelope = _envelope(line)
        if envelope is None:
            bodies.append(line)
            keep.append(i)
            continue
        body, sequence, enqueued_time = envelope
        position = sequence if sequence is not None else int(positions[i])
        if body is None:
            rejects.append(Reject(position, ReasonCode.BAD_ENVELOPE, line))
            continue
        bodies.append(body)
        keep.append(i)
        positions[i] = position
        enqueued[i] = enqueued_time
    index = np.array(keep, dtype=np.int64)
    return MessageBatch(partition, bodies, positions[index], enqueued[index], tuple(rejects), eof)


_ENVELOPE_SCHEMA = pa.schema(
    [("sequence_number", pa.int64()), ("enqueued_time", pa.string()), ("body", pa.string())]
)
_ENVELOPE_PARSE = pa_json.ParseOptions(explicit_schema=_ENVELOPE_SCHEMA, unexpected_field_behavior="ignore")


def _envelopes_fast(
    partition: str, chunk: bytes, count: int, line_positions: np.ndarray, eof: bool
) -> MessageBatch | None:
    """A block of envelope lines in one Arrow read; None when any line is not a plain envelope."""
    table = read_object_lines(chunk[:-1], count, _ENVELOPE_PARSE)
    if table is None:
        return None
    body = table.column("body").combine_chunks()
    if body.null_count:
        return None
    sequence = table.column("sequence_number").combine_chunks()
    positions = np.where(
        sequence.is_valid().to_numpy(zero_copy_only=False), sequence.fill_null(0).to_numpy(zero_copy_only=False), line_positions
    )
    enqueued, _ = parse_time_array(table.column("enqueued_time").combine_chunks())
    # Each body plus a newline, back to back in one buffer: the decoder's joined form.
    lines = pc.binary_join_element_wise(body, pa.scalar(""), "\n")
    start, end = lines.offset, lines.offset + len(lines)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[start : end + 1]
    joined = lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1] - 1]
    if joined.count(b"\n") != count - 1:
        return None  # a body holds a raw newline: leave it to the line-by-line path
    return MessageBatch(partition, None, positions.astype(np.int64), enqueued, eof=eof, joined=joined)


def _envelope(line: bytes) -> tuple[bytes | None, int | None, int] | None:
    """(body, sequence number, enqueued ns) of an envelope line; None for a raw line."""
    if _BODY_KEY not in line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "body" not in obj:
        return None
    sequence = obj.get("sequence_number")
    sequence = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None
    enqueued_text = obj.get("enqueued_time")
    enqueued = parse_time(enqueued_text) if isinstance(enqueued_text, str) else None
    raw = obj["body"]
    body: bytes | None = None
    if isinstance(raw, str):
        body = raw.encode("utf-8")
    elif isinstance(raw, dict) and isinstance(raw.get("base64"), str):
        try:
            body = base64.b64decode(raw["base64"], validate=True)
        except (binascii.Error, ValueError):
            body = None
    return body, sequence, MISSING if enqueued is None else enqueued

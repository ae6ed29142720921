"""One JSON Lines partition file, read in blocks from a resumable byte offset.

A line is an envelope (an object with ``"body"``, see docs/recordings.md) or
a raw message body. Only envelopes are unwrapped here; bodies are decoded
downstream. Plain envelope lines (the simulator's) are cut apart without a
JSON parser pass (``envelopes.py``); other envelopes are read by Arrow, and a
line Arrow refuses is unwrapped alone.

Memory stays bounded whatever a line holds: a line longer than the reader
will hold (:func:`held_line_bytes`) is streamed past block by block, and it
and a raw line over ``max_message_bytes`` become a ``too_large`` reject with
their first bytes. An envelope line up to the held size goes on: its body is
what ``max_message_bytes`` limits, and decoding judges that.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from sensorflow.ingest.decode import MAX_MESSAGE_BYTES, PAYLOAD_HEAD_BYTES, too_large_reason
from sensorflow.ingest.jsonblock import Lines, isolate, join_binary, long_lines, read_object_lines
from sensorflow.ingest.replay.envelopes import plain_envelopes
from sensorflow.records.dead_letters import ReasonCode
from sensorflow.records.readings import MessageBatch, Reject
from sensorflow.records.timeparse import MISSING, parse_time, parse_time_array

__all__ = ["JsonlPosition", "JsonlReader", "held_line_bytes"]

JsonlPosition = tuple[int, int]
"""(byte offset, lines consumed) after the last message handed out."""

_BODY_KEY = b'"body"'
# An envelope's sequence number in the first bytes of its line: both keys at the top level (no
# brace nor bracket before them), the number before the body, as the simulator writes them.
_HEAD_SEQUENCE = re.compile(rb'\A\s*\{[^{}\[\]]*?"sequence_number"\s*:\s*(-?\d+)\s*,[^{}\[\]]*?"body"\s*:')
_ENVELOPE_SLACK = 64 << 10
_CR = ord("\r")


def held_line_bytes(max_message_bytes: int) -> int:
    """The longest line a reader holds in memory: room for an envelope around a body of
    ``max_message_bytes`` (JSON escapes make a string up to 6x its bytes; base64, 4/3x)."""
    return 6 * max_message_bytes + _ENVELOPE_SLACK


class JsonlReader:
    """Reads messages from one ``.jsonl`` file; ``position`` resumes after the last one read."""

    def __init__(
        self,
        path: Path,
        partition: str,
        position: JsonlPosition = (0, 0),
        block_bytes: int = 1 << 20,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        if block_bytes < 128:
            raise ValueError("block_bytes must be >= 128")
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be >= 1")
        self.path = Path(path)
        self.partition = partition
        self._offset, self._line = position
        self._block_bytes = block_bytes
        self._max_message = max_message_bytes
        self._max_held = held_line_bytes(max_message_bytes)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._file.seek(self._offset)
        self._buffer = b""
        self._at_eof = False

    @property
    def position(self) -> JsonlPosition:
        return (self._offset, self._line)

    @property
    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (what a replay's progress counts)."""
        return self._offset

    def close(self) -> None:
        self._file.close()

    def read(self, max_messages: int | None = None) -> MessageBatch:
        """The next messages (up to ``max_messages``); ``eof`` set once the file is exhausted.

        A read ends at a line too large to pass (see the module's docstring): the batch carries
        it as its one reject, after the lines before it.
        """
        self._fill()
        if not self._at_eof and self._buffer and b"\n" not in self._buffer:
            return self._skip_line()  # longer than the reader holds
        complete = self._buffer[: self._buffer.rfind(b"\n") + 1]
        if self._at_eof and len(complete) < len(self._buffer):
            complete = self._buffer + b"\n"  # a last line without its newline
        oversized = self._first_oversized(complete)
        lines_before = complete if oversized is None else complete[: oversized[0]]
        if max_messages:
            lines = lines_before.split(b"\n", max_messages)
            if len(lines) > max_messages and lines[max_messages]:
                taken, chunk = lines[:max_messages], lines_before[: len(lines_before) - len(lines[max_messages])]
            else:
                taken, chunk = lines[:-1], lines_before
        else:
            taken, chunk = None, lines_before  # split only if the lines are needed one by one
        first = self._line
        count = len(taken) if taken is not None else int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == ord("\n")))
        rejects: tuple[Reject, ...] = ()
        end = len(chunk)
        if oversized is not None and (not max_messages or count < max_messages):
            start, stop = oversized
            line = complete[start : stop - (complete[stop - 1] == _CR)]
            rejects = (_too_large(line[:PAYLOAD_HEAD_BYTES], len(line), first + count + 1, self._max_message),)
            end = stop + 1
        consumed = min(end, len(self._buffer))  # the added newline is not in the file
        self._buffer = self._buffer[consumed:]
        self._offset += consumed
        self._line += count + len(rejects)
        eof = self._at_eof and not self._buffer
        batch = _unwrap(self.partition, taken, count, first, eof, chunk)
        return _with_rejects(batch, rejects) if rejects else batch

    def _first_oversized(self, complete: bytes) -> tuple[int, int] | None:
        """(start, end) of the first line of ``complete`` that is rejected here: longer than the
        reader holds, or a raw line (no ``"body"``) over ``max_message_bytes``."""
        for start, end in long_lines(complete, self._max_message, strip_cr=True):
            size = end - start - (complete[end - 1] == _CR)  # long_lines yields no empty line
            if size > self._max_held or complete.find(_BODY_KEY, start, end) < 0:
                return start, end
        return None

    def _skip_line(self) -> MessageBatch:
        """Stream past the line the buffer starts (too long to hold): keep its first bytes, count
        the rest block by block up to its newline, and hand it out as a ``too_large`` reject."""
        head, size, last = self._buffer[:PAYLOAD_HEAD_BYTES], len(self._buffer), self._buffer[-1:]
        self._buffer = b""
        newline = False
        while True:
            block = self._file.read(self._block_bytes)
            if not block:
                self._at_eof = True
                break
            at = block.find(b"\n")
            if at >= 0:
                size += at
                last = block[at - 1 : at] if at else last
                self._buffer = block[at + 1 :]
                self._at_eof = len(block) < self._block_bytes
                newline = True
                break
            size += len(block)
            last = block[-1:]
        self._offset += size + newline
        self._line += 1
        reject = _too_large(head, size - (last == b"\r"), self._line, self._max_message)
        eof = self._at_eof and not self._buffer
        empty = np.zeros(0, dtype=np.int64)
        return MessageBatch(self.partition, [], empty, empty.copy(), (reject,), eof)

    def _fill(self) -> None:
        while not self._at_eof and (b"\n" not in self._buffer or len(self._buffer) < self._block_bytes // 2):
            if b"\n" not in self._buffer and len(self._buffer) > self._max_held + 1:
                break  # the line is longer than the reader holds: read() streams past it
            chunk = self._file.read(self._block_bytes)
            if not chunk:
                self._at_eof = True
                break
            self._buffer += chunk
            if len(chunk) < self._block_bytes:
                self._at_eof = True


def _too_large(head: bytes, size: int, line_number: int, limit: int) -> Reject:
    """A line rejected for its size: positioned by the sequence number an envelope's ``head``
    names before its body, else by its line number (as ``_unwrap`` positions a line)."""
    match = _HEAD_SEQUENCE.match(head)
    position = int(match.group(1)) if match else line_number
    return Reject(position, too_large_reason(size, limit), head)


def _with_rejects(batch: MessageBatch, rejects: tuple[Reject, ...]) -> MessageBatch:
    """``batch`` with ``rejects`` added to its own."""
    return MessageBatch(
        batch.partition,
        batch.bodies if batch.joined is None else None,
        batch.positions,
        batch.enqueued_ns,
        batch.rejects + rejects,
        batch.eof,
        joined=batch.joined,
    )


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
    bodies, keep, rejects = _unwrap_each(enumerate(lines), positions, enqueued)
    index = np.array(keep, dtype=np.int64)
    return MessageBatch(partition, bodies, positions[index], enqueued[index], tuple(rejects), eof)


def _unwrap_each(
    numbered: Iterable[tuple[int, bytes]], positions: np.ndarray, enqueued: np.ndarray,
    may_be_envelope: np.ndarray | None = None,
) -> tuple[list[bytes], list[int], list[Reject]]:
    """Unwrap lines one by one: the bodies and the indices of the lines kept, and the broken envelopes.

    A raw line (or one ``may_be_envelope`` rules out) is its own body. An envelope's sequence
    number, when it has one, replaces the line number in ``positions``; its enqueued time goes
    into ``enqueued`` (both updated in place, at the line's index).
    """
    bodies: list[bytes] = []
    kept: list[int] = []
    rejects: list[Reject] = []
    for i, line in numbered:
        envelope = _envelope(line) if may_be_envelope is None or may_be_envelope[i] else None
        if envelope is None:
            bodies.append(line)
            kept.append(i)
            continue
        body, sequence, enqueued_time = envelope
        position = sequence if sequence is not None else int(positions[i])
        if body is None:
            rejects.append(Reject(position, ReasonCode.BAD_ENVELOPE, line))
            continue
        bodies.append(body)
        kept.append(i)
        positions[i] = position
        enqueued[i] = enqueued_time
    return bodies, kept, rejects


_ENVELOPE_SCHEMA = pa.schema(
    [("sequence_number", pa.int64()), ("enqueued_time", pa.string()), ("body", pa.string())]
)
_ENVELOPE_PARSE = pa_json.ParseOptions(explicit_schema=_ENVELOPE_SCHEMA, unexpected_field_behavior="ignore")
_BODY_PATTERN = np.frombuffer(_BODY_KEY, np.uint8)


def _envelopes_fast(
    partition: str, chunk: bytes, count: int, line_positions: np.ndarray, eof: bool
) -> MessageBatch | None:
    """A block holding envelope lines, columnar: plain envelopes cut apart, the rest read by Arrow,
    a line Arrow refuses alone.

    Plain envelope lines (``envelopes.plain_envelopes``: the simulator's shape) need no parser
    pass: their bodies and envelope fields are cut out by byte arithmetic. Other lines with
    ``"body"`` whose body is a string go to Arrow's reader together (``isolate`` narrows a refused
    read down to the lines at fault); a ``{"base64": ...}`` body, a line Arrow refuses and a line
    Arrow finds no body in are unwrapped line by line (``_envelope``); lines without ``"body"``
    are raw. None only when the block is not newline-separated lines.
    """
    try:
        lines = Lines(chunk[:-1], count)
    except ValueError:
        return None
    at = _body_keys(lines.chars)
    positions = line_positions.copy()
    enqueued = np.full(count, MISSING, dtype=np.int64)
    plain = plain_envelopes(lines, at) if _is_utf8(lines.block) else None
    if plain is not None:
        positions[plain.index] = np.where(plain.has_sequence, plain.sequence, positions[plain.index])
        enqueued[plain.index] = plain.enqueued_ns
        if len(plain.index) == count:
            return MessageBatch(partition, None, positions, enqueued, eof=eof, joined=plain.joined)
    candidate = np.zeros(count, dtype=bool)
    has_key = np.zeros(count, dtype=bool)
    if len(at):
        line_of = np.searchsorted(lines.starts, at, side="right") - 1
        has_key[line_of] = True
        chars, last = lines.chars, len(lines.chars) - 1

        def after_key(k: int) -> np.ndarray:  # past the end: the last byte, never the one looked for there
            return chars[np.minimum(at + k, last)]

        string_body = (after_key(6) == ord(":")) & (  # '"body":"' or '"body": "'
            (after_key(7) == ord('"')) | ((after_key(7) == ord(" ")) & (after_key(8) == ord('"')))
        )
        candidate[line_of[string_body]] = True
        candidate[line_of[~string_body]] = False  # a base64 body, or a second "body" on the line: line by line
    if plain is not None:
        candidate[plain.index] = False

    def read(index: np.ndarray) -> pa.Table | None:
        return read_object_lines(lines.join(index), len(index), _ENVELOPE_PARSE)

    parts, _ = isolate(np.flatnonzero(candidate), read)
    read_index = np.concatenate([index for index, _ in parts]) if parts else np.zeros(0, np.int64)
    tables = [table for _, table in parts]
    body = pa.concat_arrays([t.column("body").combine_chunks() for t in tables]) if tables else pa.array([], pa.string())
    found = body.is_valid().to_numpy(zero_copy_only=False)  # no top-level body: not an envelope to Arrow
    read_index, body = read_index[found], body.filter(pa.array(found))
    if tables:
        sequence = pa.concat_arrays([t.column("sequence_number").combine_chunks() for t in tables]).filter(pa.array(found))
        enqueued_time = pa.concat_arrays([t.column("enqueued_time").combine_chunks() for t in tables]).filter(pa.array(found))
        known = sequence.is_valid().to_numpy(zero_copy_only=False)
        positions[read_index] = np.where(known, sequence.fill_null(0).to_numpy(zero_copy_only=False), positions[read_index])
        enqueued[read_index], _ = parse_time_array(enqueued_time)
    fast = np.zeros(count, dtype=bool)
    fast[read_index] = True
    if plain is not None:
        fast[plain.index] = True
    if fast.all() and plain is None:
        joined = join_binary(body)
        if joined.count(b"\n") == count - 1:
            return MessageBatch(partition, None, positions, enqueued, eof=eof, joined=joined)
    # Some lines are not plain envelopes: unwrap those one by one, keep the rest's bodies as read.
    others = np.flatnonzero(~fast)
    other_bodies, other_kept, rejects = _unwrap_each(zip(others.tolist(), lines.take(others)), positions, enqueued,
                                                     has_key)
    if plain is not None:  # few lines besides the plain ones: their bodies go between runs of plain bodies
        extra_index = np.concatenate([read_index, np.array(other_kept, dtype=np.int64)])
        order = np.argsort(extra_index, kind="stable")
        extra_bodies = body.cast(pa.binary()).to_pylist() + other_bodies
        extra_bodies = [extra_bodies[i] for i in order.tolist()]
        kept = np.sort(np.concatenate([plain.index, extra_index]))
        bodies = _between(plain.index, plain.joined, extra_index[order], extra_bodies)
        if isinstance(bodies, list):
            return MessageBatch(partition, bodies, positions[kept], enqueued[kept], tuple(rejects), eof)
        return MessageBatch(partition, None, positions[kept], enqueued[kept], tuple(rejects), eof, joined=bodies)
    slot = np.empty(count, dtype=np.int64)
    slot[read_index] = np.arange(len(read_index))
    slot[other_kept] = len(read_index) + np.arange(len(other_kept))
    kept = np.sort(np.concatenate([read_index, np.array(other_kept, dtype=np.int64)]))
    bodies = pa.concat_arrays([body.cast(pa.binary()), pa.array(other_bodies, pa.binary())]).take(pa.array(slot[kept]))
    joined = join_binary(bodies)
    if joined.count(b"\n") != len(kept) - 1:
        return MessageBatch(partition, bodies.to_pylist(), positions[kept], enqueued[kept], tuple(rejects), eof)
    return MessageBatch(partition, None, positions[kept], enqueued[kept], tuple(rejects), eof, joined=joined)


def _between(plain_index: np.ndarray, plain_joined: bytes, extra_index: np.ndarray, extra_bodies: list[bytes]) -> bytes | list[bytes]:
    """The bodies of the lines ``plain_index`` (joined by newlines in ``plain_joined``) and of the lines
    ``extra_index`` (ascending), in line order: joined (runs of plain bodies as single slices), or a
    list when an extra body holds a line break."""
    plain_ends = np.flatnonzero(np.frombuffer(plain_joined, np.uint8) == ord("\n"))
    bounds = np.concatenate([[-1], plain_ends, [len(plain_joined)]]).tolist()  # body j: bounds[j] + 1 .. bounds[j + 1]
    before = np.searchsorted(plain_index, extra_index).tolist()  # plain bodies before each extra one
    if any(b"\n" in body for body in extra_bodies):
        bodies = plain_joined.split(b"\n") if len(plain_index) else []
        for k, (at, body) in enumerate(zip(before, extra_bodies)):
            bodies.insert(at + k, body)
        return bodies
    pieces, taken = [], 0
    for at, body in zip(before, extra_bodies):
        if at > taken:
            pieces.append(plain_joined[bounds[taken] + 1 : bounds[at]])
        pieces.append(body)
        taken = at
    if taken < len(plain_index):
        pieces.append(plain_joined[bounds[taken] + 1 :])
    return b"\n".join(pieces)


def _is_utf8(block: bytes) -> bool:
    if block.isascii():
        return True
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _body_keys(chars: np.ndarray) -> np.ndarray:
    """Where ``"body"`` starts in ``chars`` (found from its rare ``y``)."""
    ys = np.flatnonzero(chars == ord("y"))
    ys = ys[(ys >= 4) & (ys + 1 < len(chars))]
    match = np.ones(len(ys), dtype=bool)
    for k, byte in enumerate(_BODY_PATTERN.tolist()):
        match &= chars[ys - 4 + k] == byte
    return ys[match] - 4


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

"""Message bodies to columnar readings plus dead letters (a pure function).

The seed's JSON object, or a JSON array of them in one message. The messages
of a batch are parsed by Arrow's multi-threaded JSON reader in one call; a
message that looks odd is read apart, and one that Arrow refuses is found by
re-reading pieces of the batch (``jsonblock.isolate``), so a bad message costs
only itself. Only those go message by message, so every malformed message or
element becomes a dead letter with its reason, as the message-by-message path
decides. A message over ``max_message_bytes`` is a ``too_large`` dead letter
before any parsing (a 200 MB array once took 12 GB to parse). Nothing raises;
``readings + dead letters == elements seen`` always holds for what this returns (the lateness
step later refuses some of these readings: a late reading is a reading here and a dead letter
there, so a run's summary counts ``elements = readings + malformed``). A dead letter keeps the
element's Value only when it was a finite number (a ``bad_type: Value`` letter has none).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from sensorflow.ingest.jsonblock import Lines, isolate, long_lines, read_object_lines
from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch, ReasonCode
from sensorflow.records.readings import READING_SCHEMA, MessageBatch, ReadingBatch
from sensorflow.records.timeparse import MISSING, NS_PER_S, epoch_array_to_ns, epoch_to_ns, parse_time_array

__all__ = ["MAX_MESSAGE_BYTES", "PAYLOAD_HEAD_BYTES", "DecodeConfig", "Decoded", "decode_batch", "too_large_reason"]

MAX_MESSAGE_BYTES = 1 << 20
"""Event Hubs' largest publication (Standard, Premium and Dedicated tiers; Basic: 256 KB): "Azure
Event Hubs quotas and limits", https://learn.microsoft.com/azure/event-hubs/event-hubs-quotas.
No event a hub delivered can be larger."""
PAYLOAD_HEAD_BYTES = 1024
"""What a ``too_large`` dead letter keeps of its message: the first bytes, enough to tell what it was."""

_FIELDS = ("TS", "Device", "Tag", "Value")
_FAST_SCHEMA = pa.schema([("Value", pa.float64())])
_FAST_PARSE = pa_json.ParseOptions(explicit_schema=_FAST_SCHEMA, unexpected_field_behavior="infer")
# TS read as a time by Arrow itself while it parses (no string column, no second pass). Arrow's
# ISO-8601 forms are a subset of what ``parse_time`` accepts, with the same values (tested), so a
# block Arrow refuses this way is simply read again with TS as it came.
_TIMED_TYPE = pa.timestamp("ns", tz="UTC")
_TIMED_PARSE = pa_json.ParseOptions(
    explicit_schema=pa.schema([("TS", _TIMED_TYPE), ("Value", pa.float64())]),
    unexpected_field_behavior="infer",
)
_TEXT_TS = re.compile(rb'"TS"\s*:\s*"')
_INT64_ID_CHARS = 20  # the longest decimal string of an int64: "-9223372036854775808"
_ARRAY_PARSE = pa_json.ParseOptions(
    explicit_schema=pa.schema([("r", pa.list_(pa.struct([("Value", pa.float64())])))]),
    unexpected_field_behavior="infer",
)
_OPEN_BRACE, _OPEN_BRACKET = ord("{"), ord("[")
# Odd-looking messages go to Arrow only when there are this many: below, the message-by-message
# path costs less than one Arrow read (~0.2 ms whatever its size, twice when TS is refused as a
# time; ~1.2 us per message by message), and odd ones are mostly bad, so a read of them is mostly
# refused and cut into eighths (a 3 MiB batch of the simulator's 0.1% malformed holds ~13 of them:
# ~18 refused reads a batch).
_ODD_READ_MIN = 256
_YEAR_2000_NS = 946_684_800 * NS_PER_S


@dataclass(frozen=True)
class DecodeConfig:
    """How messages become readings.

    ``time_source``: ``"ts"`` uses each reading's ``TS`` field; ``"enqueued"``
    uses the message's enqueued time (what the seed's ASA query windowed by).
    Readings before ``min_event_ns`` are ``out_of_range``; more than
    ``max_clock_skew_ns`` ahead of the wall clock, ``future``. A message body
    longer than ``max_message_bytes`` is ``too_large``, unparsed.
    """

    time_source: Literal["ts", "enqueued"] = "ts"
    min_event_ns: int = _YEAR_2000_NS
    max_clock_skew_ns: int = 86_400 * NS_PER_S
    max_id_length: int = 128
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        if self.time_source not in ("ts", "enqueued"):
            raise ValueError(f"time_source must be 'ts' or 'enqueued', not {self.time_source!r}")
        if self.max_clock_skew_ns < 0:
            raise ValueError("max_clock_skew_ns must be >= 0")
        if self.max_id_length < 1:
            raise ValueError("max_id_length must be >= 1")
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be >= 1")


@dataclass(frozen=True, eq=False)
class Decoded:
    """The result of decoding one message batch."""

    readings: ReadingBatch
    dead_letters: DeadLetterBatch
    elements: int


@dataclass
class _Candidates:
    """Elements that parsed as objects, as columns, with a reason per row once checked."""

    message: np.ndarray  # index into the batch's bodies
    element: np.ndarray
    ts_text: pa.Array | None  # TS strings (nulls elsewhere)
    ts_number: np.ndarray | None  # epoch numbers as ns, MISSING elsewhere
    device: pa.Array
    tag: pa.Array
    value: np.ndarray
    value_present: np.ndarray
    reason: np.ndarray  # object: None or a reason string
    payload: Sequence[bytes | None]  # element payloads of array messages (None: use the body)
    numeric_ids: tuple[bool, bool] = (False, False)  # (Device, Tag) arrived as JSON integers throughout


def decode_batch(batch: MessageBatch, config: DecodeConfig, now_ns: int | None = None) -> Decoded:
    """Decode every message of ``batch``; never raises on bad data."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    dead: list[DeadLetter] = [
        DeadLetter(batch.partition, r.position, 0, r.reason, r.payload) for r in batch.rejects
    ]
    batch = _within_limit(batch, config.max_message_bytes, dead)
    parts, body = _parse(batch)
    readings = _validate_parts(batch, parts, body, config, now_ns, dead)
    dead_batch = DeadLetterBatch.from_records(dead)
    return Decoded(
        ReadingBatch(batch.partition, readings, batch.eof, batch.progress),
        dead_batch,
        readings.num_rows + len(dead_batch),
    )


def too_large_reason(size: int, limit: int) -> str:
    """The ``too_large`` reason of a message of ``size`` bytes (the same text from every reader)."""
    return ReasonCode.TOO_LARGE.detail(f"{size} bytes > max_message_bytes {limit}")


def _within_limit(batch: MessageBatch, limit: int, dead: list[DeadLetter]) -> MessageBatch:
    """``batch`` without its messages over ``limit`` bytes, each a ``too_large`` dead letter.

    Costs a few ``memchr`` calls per batch (``long_lines``), or one ``len`` per body; the batch
    is rebuilt only when it holds such a message.
    """
    n = len(batch)
    if n == 0:
        return batch
    joined = batch.joined
    if joined is not None:
        if len(joined) <= limit:
            return batch
        spans = list(long_lines(joined, limit))
        if not spans:
            return batch
        if joined.count(b"\n") == n - 1:
            over = [joined.count(b"\n", 0, start) for start, _ in spans]
        else:  # a reader broke the joined form's promise: judge the bodies one by one
            joined = None
    if joined is None:
        if max(map(len, batch.bodies)) <= limit:
            return batch
        over = [i for i, body in enumerate(batch.bodies) if len(body) > limit]
    bodies = batch.bodies
    for i in over:
        body = bodies[i]
        dead.append(DeadLetter(batch.partition, int(batch.positions[i]), 0, too_large_reason(len(body), limit),
                               body[:PAYLOAD_HEAD_BYTES]))
    keep = np.ones(n, dtype=bool)
    keep[over] = False
    kept = [body for body, k in zip(bodies, keep.tolist()) if k]
    return MessageBatch(
        batch.partition,
        None if joined is not None else kept,
        batch.positions[keep],
        batch.enqueued_ns[keep],
        eof=batch.eof,
        joined=b"\n".join(kept) if joined is not None else None,
        progress=batch.progress,
    )


# -- fast path ---------------------------------------------------------------


def _parse(batch: MessageBatch) -> tuple[list[_Candidates], Callable[[int], bytes]]:
    """Every message as candidates, in parts (columnar but for the messages Arrow refuses), and the
    body of message ``i`` by index.

    Messages that look odd (see ``Lines.odd_objects``) are read apart from the plain ones, so the
    plain ones go to Arrow in one read; a set Arrow still refuses is narrowed down piece by piece
    (``isolate``). Only the messages no Arrow read takes go to the message-by-message path. Each
    part's ``message`` indexes the batch; a message's rows are all in one part, in element order.
    The parts are not merged: a bad message's few rows must not cost a copy of every column.
    """
    n = len(batch)
    if n == 0:
        return [_empty_candidates()], lambda i: batch.bodies[i]
    lines = _lines(batch)
    # A dead letter's payload is its body: sliced from the block, never a split of all of it.
    body = lines.line if lines.block is batch.joined else (lambda i: batch.bodies[i])
    first = lines.first_bytes()
    objects, arrays = first == _OPEN_BRACE, first == _OPEN_BRACKET
    odd = ~(objects | arrays)
    if objects.any():
        odd |= objects & lines.odd_objects()
    if batch.joined is not None:
        def read_objects(index: np.ndarray) -> _Candidates | None:
            return _parse_fast(lines.join(index), len(index))
    else:
        def read_objects(index: np.ndarray) -> _Candidates | None:
            return _parse_fast_list(lines.take(index))

    def read_arrays(index: np.ndarray) -> _Candidates | None:
        return _parse_arrays(lines.take(index))

    parts: list[tuple[np.ndarray, _Candidates]] = []
    slow = [np.flatnonzero(odd & ~objects)]
    for index, read, plain in (
        (np.flatnonzero(objects & ~odd), read_objects, True),
        (np.flatnonzero(arrays & ~odd), read_arrays, True),
        (np.flatnonzero(objects & odd), read_objects, False),  # few, as a rule, and mostly bad
    ):
        if plain or len(index) >= _ODD_READ_MIN:
            read_parts, refused = isolate(index, read)
            parts += read_parts
            slow.append(refused)
        else:
            slow.append(index)
    slow_index = np.sort(np.concatenate(slow))
    if len(slow_index):
        bodies = lines.take(slow_index) if batch.joined is not None else [batch.bodies[i] for i in slow_index.tolist()]
        parts.append((slow_index, _parse_slow(bodies)))
    for index, part in parts:
        part.message = index[part.message]
    return [part for _, part in parts], body


def _lines(batch: MessageBatch) -> Lines:
    """The batch's bodies as one block of lines (line breaks inside a body made spaces)."""
    n = len(batch)
    if batch.joined is not None:
        try:
            return Lines(batch.joined, n)
        except ValueError:
            pass  # a reader broke the joined form's promise: read the bodies one line each
    joined = b"\n".join(batch.bodies)
    if joined.count(b"\n") != n - 1 or b"\r" in joined:
        joined = b"\n".join(_one_line(body) for body in batch.bodies)
    return Lines(joined, n)


def _parse_fast_list(bodies: list[bytes]) -> _Candidates | None:
    joined = b"\n".join(bodies)
    if joined.count(b"\n") != len(bodies) - 1:
        # JSON only has raw line breaks as whitespace between tokens.
        joined = b"\n".join(b.replace(b"\n", b" ").replace(b"\r", b" ") for b in bodies)
    return _parse_fast(joined, len(bodies))


def _parse_fast(joined: bytes, n: int) -> _Candidates | None:
    """``n`` bodies joined by newlines as one Arrow JSON read; None when Arrow refuses any of them."""
    if n == 0:
        return _empty_candidates()
    table = None
    first_line = joined.find(b"\n")
    if _TEXT_TS.search(joined, 0, first_line if first_line >= 0 else len(joined)):
        table = read_object_lines(joined, n, _TIMED_PARSE)
    if table is None:
        table = read_object_lines(joined, n, _FAST_PARSE)
    if table is None:
        return None
    columns = {name: table.column(name).combine_chunks() for name in _FIELDS if name in table.column_names}
    return _from_columns(columns, np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int32), [None] * n)


def _parse_arrays(bodies: list[bytes]) -> _Candidates | None:
    """Messages that are all JSON arrays of objects, in one Arrow read; None when any is not.

    Each body is wrapped as ``{"r": BODY}``, one per line, so Arrow parses the
    arrays as list<struct> and the elements come out as columns. A wrapped
    body that is not exactly one array (``[..], "x": ..``) shows up as a
    second column and is refused, like anything Arrow refuses.
    """
    if not bodies or not all(body[:1] == b"[" for body in bodies):
        return None
    block = b'{"r":' + b'}\n{"r":'.join(bodies) + b"}"
    if block.count(b"\n") != len(bodies) - 1 or b"\r" in block:
        block = b'{"r":' + b'}\n{"r":'.join(_one_line(body) for body in bodies) + b"}"
    table = read_object_lines(block, len(bodies), _ARRAY_PARSE)
    if table is None or table.column_names != ["r"]:
        return None
    arrays = table.column("r").combine_chunks()
    if not pa.types.is_list(arrays.type) or not pa.types.is_struct(arrays.type.value_type) or arrays.null_count:
        return None
    offsets = arrays.offsets.to_numpy()
    if np.any(np.diff(offsets) == 0):  # an empty array: the slow path names it
        return None
    elements = arrays.flatten()
    if elements.null_count:  # a null element: not an object
        return None
    message = pc.list_parent_indices(arrays).to_numpy().astype(np.int64)
    element = (np.arange(len(elements), dtype=np.int64) + offsets[0] - offsets[message]).astype(np.int32)
    columns = {name: elements.field(name) for name in _FIELDS if elements.type.get_field_index(name) >= 0}
    return _from_columns(columns, message, element, _ElementPayloads(bodies, message, element))


def _one_line(body: bytes) -> bytes:
    # JSON only has raw line breaks as whitespace between tokens.
    return body.replace(b"\n", b" ").replace(b"\r", b" ")


def _from_columns(
    columns: dict[str, pa.Array], message: np.ndarray, element: np.ndarray, payload: Sequence[bytes | None]
) -> _Candidates | None:
    """Candidates from Arrow columns of the four fields (absent: all null); None for types the slow path must judge."""
    n = len(message)
    columns = {name: columns.get(name, pa.nulls(n)) for name in _FIELDS}
    ts_type = columns["TS"].type
    ids_ok = all(columns[name].type in (pa.string(), pa.int64(), pa.null()) for name in ("Device", "Tag"))
    if not ids_ok or ts_type not in (pa.string(), pa.int64(), pa.float64(), pa.null(), _TIMED_TYPE):
        return None  # (Arrow infers other time types from strings by itself: the slow path judges those)
    if columns["Value"].type not in (pa.float64(), pa.null()):
        return None
    ts_text = ts_number = None
    if ts_type == pa.string():
        ts_text = columns["TS"]
    elif ts_type == _TIMED_TYPE:  # read as a time by Arrow, as _TIMED_PARSE asks
        ts_number = _filled(columns["TS"].cast(pa.int64()), MISSING)
    elif ts_type != pa.null():
        raw = columns["TS"]
        ns, ok = epoch_array_to_ns(raw.fill_null(0).to_numpy(zero_copy_only=False))
        ts_number = np.where(ok & raw.is_valid().to_numpy(zero_copy_only=False), ns, MISSING)
    value = columns["Value"].cast(pa.float64())
    reason = np.full(n, None, dtype=object)
    if ts_number is not None and ts_type != _TIMED_TYPE:
        bad = (ts_number == MISSING) & columns["TS"].is_valid().to_numpy(zero_copy_only=False)
        reason[bad] = ReasonCode.BAD_TIMESTAMP
    return _Candidates(
        message=message,
        element=element,
        ts_text=ts_text,
        ts_number=ts_number,
        device=_as_ids(columns["Device"]),
        tag=_as_ids(columns["Tag"]),
        value=_filled(value, 0.0),
        value_present=value.is_valid().to_numpy(zero_copy_only=False),
        reason=reason,
        payload=payload,
        numeric_ids=(columns["Device"].type == pa.int64(), columns["Tag"].type == pa.int64()),
    )


def _filled(column: pa.Array, missing: float) -> np.ndarray:
    """A numeric column as numpy, ``missing`` where null (no copy when there are no nulls)."""
    if column.null_count == 0:
        return column.to_numpy()
    return np.where(column.is_valid().to_numpy(zero_copy_only=False), column.fill_null(missing).to_numpy(), missing)


class _ElementPayloads(Sequence):
    """Payloads of array elements, made only for the few that become dead letters."""

    def __init__(self, bodies: list[bytes], message: np.ndarray, element: np.ndarray):
        self._bodies, self._message, self._element = bodies, message, element

    def __len__(self) -> int:
        return len(self._message)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        parsed = orjson.loads(self._bodies[self._message[i]])  # the fast path read it: valid JSON
        return _dump(parsed[self._element[i]])


def _as_ids(column: pa.Array) -> pa.Array:
    return pc.cast(column, pa.string())


def _empty_candidates() -> _Candidates:
    return _Candidates(
        message=np.zeros(0, np.int64),
        element=np.zeros(0, np.int32),
        ts_text=None,
        ts_number=None,
        device=pa.array([], pa.string()),
        tag=pa.array([], pa.string()),
        value=np.zeros(0),
        value_present=np.zeros(0, bool),
        reason=np.zeros(0, object),
        payload=[],
    )


# -- slow path: one message at a time ----------------------------------------

@dataclass(frozen=True)
class _Failure:
    reason: str


def _load(body: bytes) -> object:
    """Parse one body; a ``_Failure`` with the reason when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _Failure(ReasonCode.BAD_UTF8)
    if not text.strip():
        return _Failure(ReasonCode.EMPTY_MESSAGE)
    try:
        # The standard parser also takes NaN and Infinity, so they are reported as not_finite.
        return json.loads(text)
    except (ValueError, RecursionError):
        return _Failure(ReasonCode.BAD_JSON)


class _Rows:
    """Column lists filled one element at a time by the slow path."""

    def __init__(self) -> None:
        self.message: list[int] = []
        self.element: list[int] = []
        self.payload: list[bytes | None] = []
        self.fields: list[tuple] = []

    def add(self, message: int, element: int, payload: bytes | None, fields: tuple) -> None:
        self.message.append(message)
        self.element.append(element)
        self.payload.append(payload)
        self.fields.append(fields)

    def fail(self, message: int, reason: str) -> None:
        self.add(message, 0, None, (None, None, None, None, None, reason))

    def columns(self) -> _Candidates:
        ts_text, ts_ns, device, tag, value, reason = (list(c) for c in zip(*self.fields)) if self.fields else ([],) * 6
        return _Candidates(
            message=np.array(self.message, dtype=np.int64),
            element=np.array(self.element, dtype=np.int32),
            ts_text=pa.array(ts_text, pa.string()),
            ts_number=np.array([MISSING if t is None else t for t in ts_ns], dtype=np.int64),
            device=pa.array(device, pa.string()),
            tag=pa.array(tag, pa.string()),
            value=np.array([0.0 if v is None else v for v in value], dtype=np.float64),
            value_present=np.array([v is not None for v in value], dtype=bool),
            reason=np.array(reason, dtype=object),
            payload=self.payload,
        )


def _parse_slow(bodies: list[bytes]) -> _Candidates:
    rows = _Rows()
    for index, body in enumerate(bodies):
        parsed = _load(body)
        if isinstance(parsed, _Failure):
            rows.fail(index, parsed.reason)
        elif isinstance(parsed, dict):
            rows.add(index, 0, None, _fields(parsed))
        elif isinstance(parsed, list) and parsed:
            for position, item in enumerate(parsed):
                rows.add(index, position, _dump(item), _fields(item))
        else:
            rows.fail(index, ReasonCode.EMPTY_ARRAY if isinstance(parsed, list) else ReasonCode.NOT_AN_OBJECT)
    return rows.columns()


def _dump(item: object) -> bytes:
    try:
        return orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(item, default=str).encode()


def _fields(item: object) -> tuple:
    """(ts_text, ts_ns, device, tag, value, reason) of one element; reason None when fine so far."""
    if not isinstance(item, dict):
        return (None, None, None, None, None, ReasonCode.NOT_AN_OBJECT)
    ts = item.get("TS")
    ts_text = ts_ns = None
    reason = None
    if isinstance(ts, str):
        ts_text = ts
    elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
        ts_ns = epoch_to_ns(ts)
        if ts_ns is None:
            reason = ReasonCode.BAD_TIMESTAMP
    elif ts is not None:
        reason = ReasonCode.BAD_TYPE.detail("TS")
    device, why = _id(item.get("Device"), "Device")
    reason = reason or why
    tag, why = _id(item.get("Tag"), "Tag")
    reason = reason or why
    value = item.get("Value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # No number to keep: the dead letter's Value is NULL (the payload holds what came).
            reason, value = reason or ReasonCode.BAD_TYPE.detail("Value"), None
        else:
            try:
                value = float(value)
            except OverflowError:
                reason, value = reason or ReasonCode.NOT_FINITE, math.inf
    return (ts_text, ts_ns, device, tag, value, reason)


def _id(raw: object, name: str) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None  # reported as missing by the common checks
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        return "", ReasonCode.BAD_TYPE.detail(name)
    return (str(raw) if isinstance(raw, int) else raw), None


# -- common checks -------------------------------------------------------------


def _validate_parts(
    batch: MessageBatch, parts: list[_Candidates], body: Callable[[int], bytes], config: DecodeConfig, now_ns: int,
    dead: list[DeadLetter],
) -> pa.Table:
    """The readings of every part, in message order; their dead letters appended to ``dead`` in
    message order (every check is per row, so judging the parts apart changes no verdict)."""
    judged = [_validate(batch, c, body, config, now_ns) for c in parts if len(c.message)]
    letters = [j for j in judged if j.dead]
    if len(letters) == 1:
        dead.extend(letters[0].dead)
    elif letters:
        merged = [letter for j in letters for letter in j.dead]
        order = np.argsort(np.concatenate([j.dead_message for j in letters]), kind="stable")
        dead.extend(merged[i] for i in order.tolist())
    kept = [j for j in judged if j.readings.num_rows]
    if not kept:
        return READING_SCHEMA.empty_table()
    if len(kept) == 1:
        return kept[0].readings
    message = np.concatenate([j.message for j in kept])
    table = pa.concat_tables([j.readings for j in kept])
    if (np.diff(message) < 0).any():
        table = table.take(pa.array(np.argsort(message, kind="stable")))
    return table.combine_chunks()


@dataclass(frozen=True, eq=False)
class _Judged:
    """One part's readings and dead letters, with the message each came from (for merging parts)."""

    readings: pa.Table
    message: np.ndarray
    dead: list[DeadLetter]
    dead_message: np.ndarray


def _validate(
    batch: MessageBatch, c: _Candidates, body: Callable[[int], bytes], config: DecodeConfig, now_ns: int
) -> _Judged:
    reason = c.reason.copy()
    n = len(reason)
    dead: list[DeadLetter] = []
    flagged = reason != None  # elementwise
    mark = partial(_mark, reason, flagged)
    if config.time_source == "enqueued":
        ts = batch.enqueued_ns[c.message]
        mark(ts == MISSING, ReasonCode.NO_ENQUEUED_TIME)
    else:
        ts = c.ts_number if c.ts_number is not None else np.full(n, MISSING, np.int64)
        if c.ts_text is not None:
            has_text = c.ts_text.is_valid().to_numpy(zero_copy_only=False)
            text_ns, text_ok = _text_times(c.ts_text, has_text)
            mark(has_text & ~text_ok, ReasonCode.BAD_TIMESTAMP)
            ts = np.where(has_text, text_ns, ts)
            mark((ts == MISSING) & ~has_text, ReasonCode.MISSING_FIELD.detail("TS"))
        else:
            mark(ts == MISSING, ReasonCode.MISSING_FIELD.detail("TS"))
    for name, column, numeric in (("Device", c.device, c.numeric_ids[0]), ("Tag", c.tag, c.numeric_ids[1])):
        if column.null_count:
            mark(column.is_null().to_numpy(zero_copy_only=False), ReasonCode.MISSING_FIELD.detail(name))
        if numeric and config.max_id_length >= _INT64_ID_CHARS:
            continue  # an integer's decimal string is never empty nor longer
        lengths = pc.utf8_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        mark((lengths == 0) | (lengths > config.max_id_length), ReasonCode.BAD_ID.detail(name))
    mark(~c.value_present, ReasonCode.MISSING_FIELD.detail("Value"))
    mark(~np.isfinite(c.value), ReasonCode.NOT_FINITE)
    valid_ts = ts != MISSING
    mark(valid_ts & (ts < config.min_event_ns), ReasonCode.OUT_OF_RANGE)
    mark(valid_ts & (ts > now_ns + config.max_clock_skew_ns), ReasonCode.FUTURE)

    bad = np.flatnonzero(flagged)
    positions = batch.positions[c.message]
    if len(bad):
        devices, tags = c.device.take(pa.array(bad)).to_pylist(), c.tag.take(pa.array(bad)).to_pylist()
        for k, i in enumerate(bad):
            payload = c.payload[i] if c.payload[i] is not None else body(int(c.message[i]))
            dead.append(
                DeadLetter(
                    batch.partition,
                    int(positions[i]),
                    int(c.element[i]),
                    reason[i],
                    payload,
                    int(ts[i]) if ts[i] != MISSING else None,
                    devices[k] or None,
                    tags[k] or None,
                    float(c.value[i]) if c.value_present[i] and math.isfinite(c.value[i]) else None,
                )
            )
    keep = ~flagged
    if keep.all():
        index = None
    else:
        index = pa.array(np.flatnonzero(keep))
    pick = (lambda a: a) if index is None else (lambda a: a.take(index))
    pick_np = (lambda a: a) if index is None else (lambda a: a[keep])
    readings = pa.table(
        [
            pa.array(pick_np(positions)),
            pa.array(pick_np(c.element)),
            pa.array(pick_np(ts)),
            pick(c.device),
            pick(c.tag),
            pa.array(pick_np(c.value)),
        ],
        schema=READING_SCHEMA,
    )
    return _Judged(readings, pick_np(c.message), dead, c.message[bad])


def _text_times(texts: pa.Array, has_text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``parse_time_array`` of the rows that hold a text only: a part read with TS as text may sit
    among parts read with TS as times, and those rows must not send the whole column to the
    general (element by element) parser."""
    if texts.null_count == 0 or not has_text.any():
        return parse_time_array(texts)
    index = np.flatnonzero(has_text)
    ns = np.full(len(texts), MISSING, dtype=np.int64)
    ns[index], ok = parse_time_array(texts.take(pa.array(index)))
    parsed = np.zeros(len(texts), dtype=bool)
    parsed[index] = ok
    return ns, parsed


def _mark(reason: np.ndarray, flagged: np.ndarray, mask: np.ndarray, why: str) -> None:
    """Set ``why`` where ``mask`` holds and no earlier reason was found (``flagged`` follows)."""
    hit = mask & ~flagged
    if hit.any():
        reason[hit] = why
        flagged |= hit

"""Plain envelope lines unwrapped by byte arithmetic: no JSON parser pass over the envelopes.

The body of an envelope is a JSON string inside JSON, so the obvious read of a block of
envelopes parses it twice: once as envelopes (to get the body strings out), once as bodies.
This module takes the first pass away for the lines that have the plain shape the simulator
(and most writers) give them::

    {<head: keys and values, no backslash>"body":"<body: no escape but \\">"}<blanks>

For those lines the body text is the bytes between its quotes with each ``\\"`` made ``"``, and
the head is checked, not parsed: heads with their digits masked (every digit made ``1``) are
compared, and each distinct masked head (a *shape*: a few per block, since ids and times differ
only in their digits) is parsed once by the json module, which proves it valid JSON with
``body`` its last top-level key and no key twice, and tells where the sequence number and the
enqueued time lie. Masking digits keeps a head valid or invalid except for a number with a
leading zero, which is checked on every line. The lines of a shape then have their sequence
numbers and enqueued times cut from fixed columns, vectorized.

Any line that does not fit (another key after the body, an escape in the body other than
``\\"``, a control byte, a shape the json module refuses or that holds a sequence number that
is not an integer, ...) is left to the caller's general path, which decides what it is: this
module never judges a line bad, it only proves lines plain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from sensorflow.ingest.jsonblock import Lines
from sensorflow.records.timeparse import MISSING, parse_time_array

__all__ = ["PlainEnvelopes", "plain_envelopes"]

_QUOTE, _BACKSLASH, _CLOSE, _SPACE, _TAB = ord('"'), ord("\\"), ord("}"), ord(" "), ord("\t")
_ZERO, _NINE, _ONE, _MINUS = ord("0"), ord("9"), ord("1"), ord("-")
_MAX_HEAD = 512  # a longer head is left to the general path (and so is its line)
_MAX_TAIL = 16  # blanks after the closing brace
_MAX_SHAPES = 64  # more distinct heads in one block: leave the block to the general path
_MAX_DIGITS = 18  # a sequence number with more digits might not fit an int64: general path
_DIGITS_TO_ONE = bytes(range(256)).replace(b"0123456789", b"1111111111")
_DIGITS_TO_ONE_TABLE = np.frombuffer(_DIGITS_TO_ONE, np.uint8)
_HASH = np.random.default_rng(20261207).integers(1, 2**63, size=_MAX_HEAD // 8, dtype=np.uint64) | np.uint64(1)


@dataclass(frozen=True, eq=False)
class PlainEnvelopes:
    """The plain lines of a block: their indices (ascending), what their envelopes say, their bodies.

    ``sequence[i]`` is meaningful where ``has_sequence[i]``; ``enqueued_ns`` is ``MISSING`` where
    the envelope has no enqueued time or one that does not parse; ``joined`` is the bodies joined
    by newlines (no body holds a raw line break).
    """

    index: np.ndarray
    sequence: np.ndarray
    has_sequence: np.ndarray
    enqueued_ns: np.ndarray
    joined: bytes


@dataclass(frozen=True)
class _Shape:
    """Where one head shape holds what the reader uses: (start, end) columns within the line."""

    sequence: tuple[int, int] | None  # the integer's digits (with its sign)
    enqueued: tuple[int, int] | None  # the string's contents, without its quotes
    numbers: tuple[tuple[int, int], ...]  # every number token, for the leading-zero check


def plain_envelopes(lines: Lines, body_keys: np.ndarray) -> PlainEnvelopes | None:
    """The lines of ``lines`` that are plain envelopes (see the module's docstring); None if none is.

    ``body_keys``: where ``"body"`` starts in ``lines.block``, ascending (``jsonl._body_keys``).
    The block must be valid UTF-8 (the caller checks it once for the block).
    """
    n, chars, starts, block = lines.n, lines.chars, lines.starts, lines.block
    if not len(body_keys) or not n:
        return None
    padded = np.concatenate([np.zeros(_MAX_TAIL, np.uint8), chars, np.zeros(_MAX_HEAD + 8, np.uint8)])
    line = np.searchsorted(starts, body_keys, side="right") - 1
    if len(line) != n or (np.diff(line) != 1).any():  # not one "body" key per line: only lines with one
        once = np.bincount(line, minlength=n) == 1
        body_keys, line = body_keys[once[line]], line[once[line]]
    opening = body_keys + 7 + (padded[_MAX_TAIL + body_keys + 7] == _SPACE)  # the body string's opening quote
    ok = (padded[_MAX_TAIL + body_keys + 6] == ord(":")) & (padded[_MAX_TAIL + opening] == _QUOTE)
    line_start, line_end = starts[line], starts[line + 1] - 1  # end: where the newline is
    head = opening - line_start
    # The line ends in '"}' and blanks: the body's closing quote and the envelope's closing brace.
    ends = np.lib.stride_tricks.sliding_window_view(padded, _MAX_TAIL)[line_end]  # the bytes before line_end
    filled = (ends != _SPACE) & (ends != _TAB)
    last = _MAX_TAIL - 1 - np.argmax(filled[:, ::-1], axis=1)
    each = np.arange(len(line))
    closing = line_end - _MAX_TAIL + last - 1
    ok &= filled[each, last] & (ends[each, last] == _CLOSE) & (last >= 1) & (ends[each, last - 1] == _QUOTE)
    ok &= (closing > opening) & (head <= _MAX_HEAD)
    if (np.count_nonzero(chars < 0x20) != n - 1) and ok.any():  # a control byte (beside the newlines)
        ok &= ~lines.lines_holding((chars < 0x20) & (chars != ord("\n")))[line]
    if not ok.any():
        return None
    line, line_start, head, opening, closing = line[ok], line_start[ok], head[ok], opening[ok], closing[ok]
    # The bodies, and in them no escape but \" and no quote unescaped; no backslash in any head.
    joined = _join(block, opening + 1, closing)
    body_chars = np.frombuffer(joined, np.uint8)
    backslash, quote = body_chars == _BACKSLASH, body_chars == _QUOTE
    escapes = np.count_nonzero(backslash)
    if not (escapes == np.count_nonzero(chars == _BACKSLASH) == np.count_nonzero(quote)
            == np.count_nonzero(backslash[:-1] & quote[1:])):
        plain = _plain_bodies(chars, starts, line, opening, closing, body_chars, backslash, quote)
        if not plain.all():
            line, line_start, head, opening, closing = line[plain], line_start[plain], head[plain], opening[plain], closing[plain]
            if not len(line):
                return None
            joined = _join(block, opening + 1, closing)
        escapes = 1
    if escapes:
        joined = joined.translate(None, b"\\")  # each one escapes a quote
    # Heads, by length (a writer's padded rows have one; a line it wrote another way, another).
    plain = np.ones(len(line), bool)
    sequence = np.zeros(len(line), np.int64)
    has_sequence = np.zeros(len(line), bool)
    texts: list[np.ndarray] = []  # enqueued times: one parse for the block
    timed: list[np.ndarray] = []
    shortest = int(head.min())
    counts = np.bincount(head - shortest)
    if len(counts) == 1:  # as a rule
        groups = [(shortest, np.arange(len(line)))]
    else:  # each length's rows gathered once, at its own width
        lengths = np.flatnonzero(counts) + shortest
        if len(lengths) > _MAX_SHAPES:
            return None
        order = np.argsort(head, kind="stable")
        ends = np.cumsum(counts[lengths - shortest])
        groups = list(zip(lengths.tolist(), np.split(order, ends[:-1])))
    for length, rows in groups:
        width = -(-length // 8) * 8
        raw = np.lib.stride_tricks.sliding_window_view(padded, width)[_MAX_TAIL + line_start[rows]]
        if not _read_heads(raw, length, rows, plain, sequence, has_sequence, texts, timed):
            return None
    enqueued = np.full(len(line), MISSING, np.int64)
    if timed:
        index = np.concatenate(timed)
        sizes = np.concatenate([np.full(len(m), len(t) // max(len(m), 1), np.int32) for m, t in zip(timed, texts)])
        offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int32)]).astype(np.int32)
        array = pa.Array.from_buffers(pa.string(), len(index), [None, pa.py_buffer(offsets), pa.py_buffer(np.concatenate(texts))])
        enqueued[index] = parse_time_array(array)[0]
    if not plain.all():
        if not plain.any():
            return None
        line, joined = line[plain], _only(joined, plain)
        sequence, has_sequence, enqueued = sequence[plain], has_sequence[plain], enqueued[plain]
    return PlainEnvelopes(line, sequence, has_sequence, enqueued, joined)


def _read_heads(
    raw: np.ndarray, length: int, rows: np.ndarray, plain: np.ndarray, sequence: np.ndarray,
    has_sequence: np.ndarray, texts: list[np.ndarray], timed: list[np.ndarray],
) -> bool:
    """Check heads of one ``length`` (``raw``: their first bytes, one row each, for lines ``rows``) and
    cut out their sequence numbers and enqueued times; False when they hold too many shapes.

    Heads with digits masked are grouped into shapes, one json parse per shape. Columns where every
    head has the first head's byte need no masking: only the others are hashed and compared.
    ``plain`` turns False for the lines of a shape that is not a plain envelope head; the rest is
    written at ``rows``.
    """
    varying = np.flatnonzero(~(raw[:, :length] == raw[0, :length]).all(axis=0))
    masked = np.zeros((len(raw), -(-len(varying) // 8) * 8), np.uint8)
    masked[:, : len(varying)] = _DIGITS_TO_ONE_TABLE[raw[:, varying]]
    words = masked.view(np.uint64)
    keys = (words * _HASH[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
    shapes, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if len(shapes) > _MAX_SHAPES:
        return False
    if len(shapes) == 1:
        plain[rows] &= (words == words[first[0]]).all(axis=1)  # no hash collision
    else:
        plain[rows] &= (words == words[first][inverse]).all(axis=1)
    for s, row in enumerate(first.tolist()):
        members = np.flatnonzero(inverse == s) if len(shapes) > 1 else np.arange(len(raw))
        template = raw[row, :length].tobytes().translate(_DIGITS_TO_ONE)
        shape = _shape(template)
        if shape is None:
            plain[rows[members]] = False
            continue
        for a, b in shape.numbers:  # JSON numbers have no leading zero: "07" masks to a valid "11"
            d = a + (template[a] == _MINUS)
            if b - d > 1:
                plain[rows[members[raw[members, d] == _ZERO]]] = False
        if shape.sequence is not None:
            a, b = shape.sequence
            sign = int(template[a] == _MINUS)
            digits = raw[members, a + sign : b].astype(np.int64) - _ZERO
            numbers = digits @ (10 ** np.arange(b - a - sign - 1, -1, -1, dtype=np.int64))
            sequence[rows[members]] = -numbers if sign else numbers
            has_sequence[rows[members]] = True
        if shape.enqueued is not None:
            a, b = shape.enqueued
            texts.append(raw[members, a:b].ravel())
            timed.append(rows[members])
    return True


def _only(joined: bytes, keep: np.ndarray) -> bytes:
    """The lines of ``joined`` where ``keep`` holds, joined again: one slice per run of kept lines."""
    ends = np.concatenate([np.flatnonzero(np.frombuffer(joined, np.uint8) == ord("\n")), [len(joined)]])
    starts = np.concatenate([[0], ends[:-1] + 1])
    edges = np.flatnonzero(np.diff(np.concatenate([[False], keep, [False]]).astype(np.int8)))
    return b"\n".join(joined[starts[a] : ends[b - 1]] for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()))


def _join(block: bytes, starts: np.ndarray, ends: np.ndarray) -> bytes:
    return b"\n".join([block[a:b] for a, b in zip(starts.tolist(), ends.tolist())])


def _plain_bodies(
    chars: np.ndarray, starts: np.ndarray, line: np.ndarray, opening: np.ndarray, closing: np.ndarray,
    body_chars: np.ndarray, backslash: np.ndarray, quote: np.ndarray,
) -> np.ndarray:
    """Per candidate line: its body has no escape but \\" and no unescaped quote, and its head no backslash."""
    lengths = closing - opening - 1
    body_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])

    def per_body(mask: np.ndarray) -> np.ndarray:
        sums = np.add.reduceat(np.append(mask, False).astype(np.int64), body_starts)
        return np.where(lengths > 0, sums, 0)

    escaped_quote = np.append(backslash[:-1] & quote[1:], False)
    in_line = np.add.reduceat(np.append(chars == _BACKSLASH, False).astype(np.int64), starts[:-1])[line]
    escapes = per_body(backslash)
    return (escapes == per_body(quote)) & (escapes == per_body(escaped_quote)) & (escapes == in_line)


@lru_cache(maxsize=1024)  # a writer's shapes recur block after block; a head is at most _MAX_HEAD bytes
def _shape(head: bytes) -> _Shape | None:
    """Where a masked head (everything before the body's opening quote) holds the sequence number and
    the enqueued time; None unless it is a valid JSON object head ending in ``"body":`` with no key
    twice, an integer (or null or no) sequence number and a string (or null or no) enqueued time."""
    try:  # (a str, not bytes: json.loads would take a byte order mark or UTF-16 that JSON lines may not hold)
        top = json.loads(head.decode("utf-8") + '""}', object_pairs_hook=_Pairs, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(top, _Pairs):
        return None
    keys = [key for key, _ in top]
    if len(set(keys)) != len(keys) or keys[-1] != "body":
        return None
    values = _top_level_values(head)
    numbers = tuple(_number_tokens(head))
    sequence = enqueued = None
    for key, value in top:
        if key == "sequence_number" and value is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                return None
            a, b = values[key]
            digits = head[a:b].lstrip(b"-")
            if not digits.isdigit() or len(digits) > _MAX_DIGITS:
                return None
            sequence = (a, b)
        elif key == "enqueued_time" and value is not None:
            if not isinstance(value, str):
                return None
            a, b = values[key]
            enqueued = (a + 1, b - 1)
    return _Shape(sequence, enqueued, numbers)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")  # json.loads takes NaN and Infinity; JSON does not


class _Pairs(list):
    """An object's (key, value) pairs in order, as ``json.loads`` gives them to ``object_pairs_hook``."""


def _top_level_values(head: bytes) -> dict[str, tuple[int, int]]:
    """(start, end) of each top-level scalar value of a valid head that has no backslash."""
    spans: dict[str, tuple[int, int]] = {}
    depth, i, n, key, expect_key = 0, 0, len(head), None, False
    while i < n:
        c = head[i]
        if c == _QUOTE:
            end = head.index(b'"', i + 1) + 1
            if depth == 1 and expect_key:
                key, expect_key = head[i + 1 : end - 1].decode("utf-8"), False
            elif depth == 1 and key is not None:
                spans[key], key = (i, end), None
            i = end
            continue
        if c in b"{[":
            key = None if depth == 1 else key  # a nested value is no scalar
            depth += 1
            expect_key = depth == 1
        elif c in b"}]":
            depth -= 1
        elif depth == 1 and c == ord(","):
            expect_key, key = True, None
        elif depth == 1 and key is not None and c not in b" \t\n\r:":
            end = i
            while end < n and head[end] not in b" \t\n\r,}]":
                end += 1
            spans[key], key, i = (i, end), None, end
            continue
        i += 1
    return spans


def _number_tokens(head: bytes):
    """(start, end) of every number token of a valid head that has no backslash."""
    i, n = 0, len(head)
    while i < n:
        c = head[i]
        if c == _QUOTE:
            i = head.index(b'"', i + 1) + 1
            continue
        if c == _MINUS or _ZERO <= c <= _NINE:
            end = i + 1
            while end < n and head[end] in b"0123456789+-.eE":
                end += 1
            yield i, end
            i = end
            continue
        i += 1

"""Arrow's JSON reader on blocks of newline-separated objects, and what a block it refuses costs.

Arrow's reader crashes the process (segfault, pyarrow 26) on a line that
starts with ``null``, and it accepts several values on one line. So a block
goes to Arrow only when every line starts with ``{`` and Arrow returns one
row per line; anything else is for the caller's line-by-line path.

Arrow judges a block as a whole: one line it refuses refuses them all. So a
bad line must cost only itself: :class:`Lines` finds the lines that look
unlike the rest with a few vectorized byte checks (they are read apart), and
:func:`isolate` narrows a refused set of lines down to the few lines Arrow
will not take, re-reading only the pieces around them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

__all__ = ["Lines", "isolate", "join_binary", "long_lines", "read_object_lines"]

_READ = pa_json.ReadOptions(block_size=1 << 16, use_threads=True)  # small blocks: all cores on one batch
_NEWLINE, _OPEN, _CLOSE, _QUOTE, _CR = ord("\n"), ord("{"), ord("}"), ord('"'), ord("\r")
_ZERO, _NINE = ord("0"), ord("9")
_TS_HEAD = np.frombuffer(b'{"TS": "', np.uint8)
_PIECES = 8  # a refused set of lines is read again as this many pieces
LEAF = 8  # a refused set this small goes to the caller's line-by-line path

T = TypeVar("T")


def read_object_lines(block: bytes, lines: int, parse: pa_json.ParseOptions) -> pa.Table | None:
    """``block`` holds ``lines`` JSON objects separated by single newlines (no trailing one)."""
    if lines == 0 or not block.startswith(b"{"):
        return None
    chars = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(chars == ord("\n"))  # ~4x faster than bytes.count(b"\n{")
    if len(newlines) != lines - 1 or chars[-1] == ord("\n") or (chars[newlines + 1] != ord("{")).any():
        return None
    try:
        block.decode("utf-8")  # Arrow does not check string contents
        table = pa_json.read_json(io.BytesIO(block), read_options=_READ, parse_options=parse)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return table if table.num_rows == lines else None


class Lines:
    """``n`` lines of one block (``block`` = the lines joined by single newlines), by index.

    ``starts[i]`` is where line ``i`` begins and ``starts[i + 1] - 1`` where it ends.
    """

    def __init__(self, block: bytes, n: int, newlines: np.ndarray | None = None):
        self.block = block
        self.n = n
        self.chars = np.frombuffer(block, np.uint8)
        if newlines is None:
            newlines = np.flatnonzero(self.chars == _NEWLINE) if n > 1 else np.zeros(0, np.int64)
        if len(newlines) != n - 1:
            raise ValueError(f"expected {n} lines, found {len(newlines) + 1}")
        self.starts = np.empty(n + 1, dtype=np.int64)
        self.starts[0] = 0
        self.starts[1:n] = newlines + 1
        self.starts[n] = len(block) + 1
        self.lengths = np.diff(self.starts) - 1

    def line(self, i: int) -> bytes:
        return self.block[self.starts[i] : self.starts[i + 1] - 1]

    def take(self, index: np.ndarray) -> list[bytes]:
        starts, block = self.starts, self.block
        return [block[starts[i] : starts[i + 1] - 1] for i in index.tolist()]

    def join(self, index: np.ndarray) -> bytes:
        """Lines ``index`` (ascending) joined by newlines: one slice per run of consecutive lines."""
        if len(index) == self.n:
            return self.block
        if len(index) == 0:
            return b""
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        firsts = index[np.concatenate([[0], breaks])]
        lasts = index[np.concatenate([breaks - 1, [len(index) - 1]])]
        starts, block = self.starts, self.block
        return b"\n".join(block[starts[a] : starts[b + 1] - 1] for a, b in zip(firsts.tolist(), lasts.tolist()))

    def first_bytes(self) -> np.ndarray:
        """Each line's first byte (0 for an empty line)."""
        at = np.minimum(self.starts[:-1], max(len(self.block) - 1, 0))
        first = self.chars[at] if len(self.block) else np.zeros(self.n, np.uint8)
        return np.where(self.lengths > 0, first, 0)

    def last_bytes(self, back: int = 1) -> np.ndarray:
        """Each line's byte ``back`` places from its end (0 where the line is shorter)."""
        at = self.starts[1:] - 1 - back
        ok = self.lengths >= back
        return np.where(ok, self.chars[np.clip(at, 0, max(len(self.block) - 1, 0))], 0) if len(self.block) else at * 0

    def lines_holding(self, mask: np.ndarray) -> np.ndarray:
        """Per line: whether any byte where ``mask`` (over ``block``) holds lies on it."""
        hits = np.flatnonzero(mask)
        held = np.zeros(self.n, dtype=bool)
        if len(hits):
            held[np.searchsorted(self.starts, hits, side="right") - 1] = True
        return held

    def odd_objects(self) -> np.ndarray:
        """Lines unlike a plain seed-style object, to be read apart from the rest (a guess: Arrow judges).

        Odd: not ``{...}``; more than twice as long as the typical line (an id of another type
        or size); a last value (the seed's Value) that does not end as a number does (a string,
        true, NaN, ...); a ``null`` or an array anywhere; non-UTF-8 bytes; a ``TS`` that is not
        a number nor a text starting as an ISO date. Two byte compares over the block and a few
        gathers: a small cost next to Arrow's parse.
        """
        last_value = self.last_bytes(2)
        lengths = self.lengths
        typical = int(np.partition(lengths, len(lengths) // 2)[len(lengths) // 2])
        odd = (self.first_bytes() != _OPEN) | (self.last_bytes() != _CLOSE) | (last_value < _ZERO) | (last_value > _NINE)
        odd |= lengths > 2 * typical + 16
        # "n" is in null (and NaN, Infinity), never in the seed's keys, numbers, ISO times or integer ids.
        for byte in (b"n", b"["):  # memchr: most blocks hold neither, a few blocks a few
            odd |= self._lines_holding_byte(byte)
        if not self.block.isascii():
            try:
                self.block.decode("utf-8")
            except UnicodeDecodeError:
                odd |= self._lines_holding_non_ascii()
        odd |= self._odd_times()
        return odd

    def _lines_holding_byte(self, byte: bytes, few: int = 64) -> np.ndarray:
        """Per line: whether it holds ``byte``. A few hits are found by ``bytes.find`` alone; more, by
        one compare over the block."""
        hits, at = [], self.block.find(byte)
        while at >= 0 and len(hits) < few:
            hits.append(at)
            at = self.block.find(byte, at + 1)
        if at >= 0:
            return self.lines_holding(self.chars == byte[0])
        held = np.zeros(self.n, dtype=bool)
        if hits:
            held[np.searchsorted(self.starts, hits, side="right") - 1] = True
        return held

    def _lines_holding_non_ascii(self, segment: int = 1 << 16) -> np.ndarray:
        """Per line: whether it holds a byte >= 0x80, compared only in the segments of the block
        that are not ASCII (``bytes.isascii`` per segment: a bad message's bytes are few)."""
        held = np.zeros(self.n, dtype=bool)
        block = self.block
        for start in range(0, len(block), segment):
            if not block[start : start + segment].isascii():
                hits = np.flatnonzero(self.chars[start : start + segment] >= 0x80) + start
                held[np.searchsorted(self.starts, hits, side="right") - 1] = True
        return held

    def heads(self, width: int) -> np.ndarray:
        """The first ``width`` bytes of every line, one row each (one gather of whole rows from a
        sliding view, no index matrix); past a line's end: the next line's bytes, or zeros."""
        chars = self.chars if len(self.chars) >= width else np.concatenate([self.chars, np.zeros(width, np.uint8)])
        windows = np.lib.stride_tricks.sliding_window_view(chars, width)
        rows = windows[np.minimum(self.starts[:-1], len(windows) - 1)]
        short = self.starts[:-1] > len(windows) - 1  # the block's last lines: their true bytes, zero-padded
        if short.any():
            for i in np.flatnonzero(short).tolist():
                line = np.frombuffer(self.line(i)[:width], np.uint8)
                rows[i] = 0
                rows[i, : len(line)] = line
        return rows

    def _odd_times(self) -> np.ndarray:
        """Lines that start ``{"TS": `` with neither a number nor a plausible ISO date and time."""
        at = len(_TS_HEAD)
        rows = self.heads(at + 13)
        keyed = (rows[:, : at - 1] == _TS_HEAD[: at - 1]).all(axis=1) & (self.lengths >= at)
        value = rows[:, at - 1]
        odd = keyed & (value != _QUOTE) & ((value < _ZERO) | (value > _NINE))
        texts = np.flatnonzero(keyed & (value == _QUOTE))
        if not len(texts):
            return odd
        text = rows[texts, at:].astype(np.int16) - _ZERO  # YYYY-MM-DD[T ]HH as digit values
        digit = (text >= 0) & (text <= 9)
        month, day, hour = text[:, 5] * 10 + text[:, 6], text[:, 8] * 10 + text[:, 9], text[:, 11] * 10 + text[:, 12]
        after_date = text[:, 10] + _ZERO
        plausible = (
            digit[:, [0, 1, 2, 3, 5, 6, 8, 9]].all(axis=1) & (text[:, 4] == ord("-") - _ZERO) & (text[:, 7] == ord("-") - _ZERO)
            & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
            & ((after_date == _QUOTE)
               | (((after_date == ord("T")) | (after_date == ord(" "))) & digit[:, 11] & digit[:, 12] & (hour <= 23)))
            & (self.lengths[texts] >= at + 11)
        )
        odd[texts[~plausible]] = True
        return odd


def isolate(
    index: np.ndarray, read: Callable[[np.ndarray], T | None], leaf: int = LEAF
) -> tuple[list[tuple[np.ndarray, T]], np.ndarray]:
    """Read lines ``index`` with ``read``; where it refuses, read smaller pieces, down to ``leaf`` lines.

    Returns the pieces read (lines, result) in line order, and the lines of the refused pieces
    of at most ``leaf`` lines (for the caller's line-by-line path). One bad line among ``n``
    costs about two more reads of ``n / _PIECES`` lines per level, not a re-read of all ``n``.
    """
    parts: list[tuple[np.ndarray, T]] = []
    refused: list[np.ndarray] = []
    pending = [index]
    while pending:
        lines = pending.pop()
        if not len(lines):
            continue
        result = read(lines)
        if result is not None:
            parts.append((lines, result))
        elif len(lines) <= leaf:
            refused.append(lines)
        else:
            pending.extend(reversed(np.array_split(lines, min(_PIECES, len(lines)))))
    return parts, (np.concatenate(refused) if refused else np.zeros(0, np.int64))


def long_lines(block: bytes, limit: int, strip_cr: bool = False) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each line of ``block`` longer than ``limit`` bytes, in order.

    ``end`` is where the line's newline is (``len(block)`` for a last line without one);
    ``strip_cr``: a ``\\r`` before the newline is not counted. A line that long holds a multiple
    of ``limit + 1``, so one search for a newline each way from every such multiple finds them
    all: a few ``memchr`` calls per block, whatever its number of lines.
    """
    step = limit + 1
    at, n = 0, len(block)
    while at < n:
        start = block.rfind(b"\n", 0, at) + 1
        end = block.find(b"\n", at)
        end = n if end < 0 else end
        size = end - start
        if strip_cr and size and block[end - 1] == _CR:
            size -= 1
        if size > limit:
            yield start, end
        at = (end // step + 1) * step  # the next line that long holds a later multiple


def join_binary(values: pa.Array) -> bytes:
    """A string or binary array's values joined by newlines, in one copy."""
    if not len(values):
        return b""
    values = values.cast(pa.binary()) if values.type != pa.binary() else values
    lines = pc.binary_join_element_wise(values, pa.scalar(b"", pa.binary()), pa.scalar(b"\n", pa.binary()))
    start, end = lines.offset, lines.offset + len(lines)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[start : end + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1] - 1]

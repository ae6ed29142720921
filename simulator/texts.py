"""Message text of single readings, rendered from lookup tables into fixed-width byte rows.

A reading's text is the seed's form, `{"TS": "...Z", "Device": 2, "Tag": 4,
"Value": 84.92}`. It is assembled from three pieces: the constant head with
the 28-byte TS, a per-sensor fragment (`", "Device": 2, "Tag": 4, "Value": `)
and a value token (`84.92}`) placed right after the fragment. Rows are
padded at the end only, so the text itself stays compact: with NUL padding,
`bytes` of a row (numpy strips trailing NULs) is exactly the text.

`escaped=True` gives the same text as it appears inside a JSON string
(quotes as `\\"`), for envelope lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.rows import FieldFill, fill_rows
from sensorflow.simulator.timefmt import TS_WIDTH, ts_fills

__all__ = ["ReadingTexts"]

_HEAD = b'{"TS": "'
# A dense token table (one entry per cent in the value range) pays off while
# the range is not much wider than the number of values rendered; beyond
# that, render only the distinct values.
_DENSE_TABLE_SLACK = 100_000


def _escape(text: bytes) -> bytes:
    return text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def _json_id(value: str | int) -> bytes:
    return str(value).encode() if isinstance(value, int) else b'"' + value.encode() + b'"'


@dataclass
class _TokenTable:
    low: int
    texts: np.ndarray
    lengths: np.ndarray


@dataclass
class ReadingTexts:
    """Per-fleet tables for rendering reading texts; caches value-token tables between chunks."""

    fleet: Fleet
    _fragments: dict[tuple[bool, int], np.ndarray] = field(default_factory=dict, repr=False)
    _fragment_lengths: dict[bool, np.ndarray] = field(default_factory=dict, repr=False)
    _distinct: dict[bool, list[int]] = field(default_factory=dict, repr=False)
    _tokens: dict[tuple[bytes, int], _TokenTable] = field(default_factory=dict, repr=False)

    def head(self, escaped: bool) -> bytes:
        return _escape(_HEAD) if escaped else _HEAD

    def fragment_lengths(self, escaped: bool) -> np.ndarray:
        if escaped not in self._fragment_lengths:
            self.fragments(escaped, 0)
        return self._fragment_lengths[escaped]

    def _distinct_lengths(self, escaped: bool) -> list[int]:
        if escaped not in self._distinct:
            self._distinct[escaped] = sorted(set(self.fragment_lengths(escaped).tolist()))
        return self._distinct[escaped]

    def fragments(self, escaped: bool, pad: int) -> np.ndarray:
        """Per-sensor fragment after the TS, as an S array padded with byte `pad`."""
        key = (escaped, pad)
        if key not in self._fragments:
            texts = []
            for device in self.fleet.device_ids:
                device_json = _json_id(device)
                for tag in self.fleet.tag_ids:
                    text = b'", "Device": ' + device_json + b', "Tag": ' + _json_id(tag) + b', "Value": '
                    texts.append(_escape(text) if escaped else text)
            lengths = np.array([len(t) for t in texts], dtype=np.int64)
            width = int(lengths.max())
            self._fragment_lengths[escaped] = lengths
            self._fragments[key] = np.array([t.ljust(width, bytes([pad])) for t in texts], dtype=f"S{width}")
        return self._fragments[key]

    def value_tokens(self, cents: np.ndarray, suffix: bytes, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(table, index of each value into it, text length of each value's token).

        A token is the value with 2 decimals followed by `suffix`, padded with `pad`.
        """
        if cents.shape[0] == 0:
            return np.zeros(0, dtype="S1"), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        low, high = int(cents.min()), int(cents.max())
        if high - low > 4 * cents.shape[0] + _DENSE_TABLE_SLACK:
            distinct, index = np.unique(cents, return_inverse=True)
            texts, lengths = _render_tokens(distinct.tolist(), suffix, pad)
            return texts, index, lengths[index]
        key = (suffix, pad)
        table = self._tokens.get(key)
        if table is None or low < table.low or high >= table.low + table.texts.shape[0]:
            # Grow with a margin so slowly drifting values do not rebuild every chunk.
            margin = (high - low) // 4 + 1000
            new_low = low - margin if table is None else min(low - margin, table.low)
            new_high = high + margin if table is None else max(high + margin, table.low + table.texts.shape[0] - 1)
            texts, lengths = _render_tokens(range(new_low, new_high + 1), suffix, pad)
            table = _TokenTable(new_low, texts, lengths)
            self._tokens[key] = table
        index = cents - table.low
        return table.texts, index, table.lengths[index]

    def text_lengths(self, sensor: np.ndarray, cents: np.ndarray) -> np.ndarray:
        """Byte length of each reading's (unescaped) text."""
        _, _, token_lengths = self.value_tokens(cents, b"}", 0)
        return len(_HEAD) + TS_WIDTH + self.fragment_lengths(False)[sensor] + token_lengths

    def row_width(self, cents: np.ndarray, escaped: bool, suffix: bytes) -> int:
        """Bytes a row needs for these readings' texts followed by `suffix`."""
        tokens, _, _ = self.value_tokens(cents, b"}" + suffix, 0)
        return len(self.head(escaped)) + TS_WIDTH + self.fragments(escaped, 0).dtype.itemsize + tokens.dtype.itemsize

    def fills(
        self,
        column: int,
        sensor: np.ndarray,
        event_ns: np.ndarray,
        cents: np.ndarray,
        escaped: bool,
        suffix: bytes,
        pad: int,
    ) -> list[FieldFill]:
        """Fills writing each reading's text, minus the constant head, plus `suffix`.

        The row template must hold `head(escaped)` at `column` and be padded
        with `pad` after it (only the end of the text varies in position).
        """
        ts_column = column + len(self.head(escaped))
        fragment_column = ts_column + TS_WIDTH
        fragments = self.fragments(escaped, pad)
        tokens, index, _ = self.value_tokens(cents, b"}" + suffix, pad)
        result = ts_fills(ts_column, event_ns)
        result.append(FieldFill(fragment_column, fragments, sensor))
        lengths = self.fragment_lengths(escaped)
        if int(lengths.min()) == int(lengths.max()):
            result.append(FieldFill(fragment_column + int(lengths[0]), tokens, index))
            return result
        # The token's column depends on the fragment's length: one fill per length.
        fragment_length = lengths[sensor]
        for length in self._distinct_lengths(escaped):
            result.append(FieldFill(fragment_column + length, tokens, index, where=fragment_length == length))
        return result

    def render(self, sensor: np.ndarray, event_ns: np.ndarray, cents: np.ndarray) -> list[bytes]:
        """Each reading's text as `bytes` (for message bodies)."""
        n = sensor.shape[0]
        if n == 0:
            return []
        width = self.row_width(cents, escaped=False, suffix=b"")
        template = np.zeros(width, dtype=np.uint8)
        template[: len(_HEAD)] = np.frombuffer(_HEAD, dtype=np.uint8)
        rows = np.empty((n, width), dtype=np.uint8)
        fill_rows(rows, template, self.fills(0, sensor, event_ns, cents, escaped=False, suffix=b"", pad=0))
        return rows.view(f"S{width}")[:, 0].tolist()


def _render_tokens(cents_values, suffix: bytes, pad: int) -> tuple[np.ndarray, np.ndarray]:
    texts = [
        (b"-%d.%02d" % divmod(-c, 100) if c < 0 else b"%d.%02d" % divmod(c, 100)) + suffix for c in cents_values
    ]
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    width = int(lengths.max())
    return np.array([t.ljust(width, bytes([pad])) for t in texts], dtype=f"S{width}"), lengths

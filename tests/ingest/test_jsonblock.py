"""``jsonblock.Lines.odd_objects``: lines holding a rare byte are found alike however many there are."""

from __future__ import annotations

import numpy as np
import pytest

from sensorflow.ingest.jsonblock import Lines

PLAIN = b'{"TS": "2026-01-01T00:00:00.0000000Z", "Device": 4, "Tag": 1, "Value": 12.61}'


def _reference(lines: Lines) -> np.ndarray:
    """Per line: holds n, [ or a byte >= 0x80 (when the block is not UTF-8), by one compare each."""
    chars = lines.chars
    held = lines.lines_holding((chars == ord("n")) | (chars == ord("[")))
    try:
        lines.block.decode("utf-8")
    except UnicodeDecodeError:
        held |= lines.lines_holding(chars >= 0x80)
    return held


def _block(n: int, odd: dict[int, bytes]) -> Lines:
    rows = [odd.get(i, PLAIN) for i in range(n)]
    return Lines(b"\n".join(rows), n)


@pytest.mark.parametrize(
    "n, odd",
    [
        (1, {}),
        (5, {0: PLAIN.replace(b"4,", b"null,")}),
        (5, {4: PLAIN.replace(b"12.61", b"NaN")}),
        (200, {i: PLAIN.replace(b"12.61", b"[1]") for i in range(0, 200, 2)}),  # more hits than find alone takes
        (200, {i: PLAIN.replace(b"12.61", b"null") for i in range(3, 200, 3)}),
        (3000, {10: b'{"TS": "\xff\xfe"}', 2500: b'{"TS": "\xc3\xa9", "Device": "\xe2\x82\xac"}'}),  # two segments
        (3000, {1000: b'{"Device": "\xc3\xa9"}'}),  # valid UTF-8: not odd for its bytes
        (3000, {i: b'{"TS": "\x80"}' for i in range(0, 3000, 7)}),
    ],
)
def test_lines_with_rare_bytes_match_a_full_compare(n, odd):
    lines = _block(n, odd)
    found = lines._lines_holding_byte(b"n") | lines._lines_holding_byte(b"[")
    try:
        lines.block.decode("utf-8")
    except UnicodeDecodeError:
        found |= lines._lines_holding_non_ascii()
    assert (found == _reference(lines)).all()
    assert (lines.odd_objects() >= _reference(lines)).all()

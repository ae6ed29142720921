"""The offset book: Event Hubs offsets of the sequence numbers a checkpoint may name."""

from __future__ import annotations

import numpy as np

from sensorflow.windowing.resume.offsets import OffsetBook


def test_offset_book_finds_offsets_until_forgotten():
    book = OffsetBook()
    book.add(np.array([10, 11, 12]), [b"100", b"110", b"120"])
    book.add(np.array([13, 14]), [b"130", b""])
    assert [book.offset(s) for s in (9, 10, 12, 13, 14, 15)] == [None, "100", "120", "130", None, None]
    book.forget_before(13)
    assert (book.offset(12), book.offset(13)) == (None, "130")

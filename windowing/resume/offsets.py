"""Transport offsets of the events a partition has handed on, by sequence number (pure bookkeeping).

Event Hubs checkpoints name an event by sequence number AND offset; the resume logic works in
sequence numbers only, so the offsets are kept aside until a checkpoint has passed them.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["OffsetBook"]


class OffsetBook:
    """Offsets of the events handed to the dataflow, by sequence number, until checkpoints pass them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._batches: list[tuple[np.ndarray, Sequence[bytes]]] = []

    def add(self, sequence_numbers: np.ndarray, offsets: Sequence[bytes]) -> None:
        if len(offsets):
            with self._lock:
                self._starts.append(int(sequence_numbers[0]))
                self._batches.append((sequence_numbers, offsets))

    def offset(self, sequence_number: int) -> str | None:
        with self._lock:
            i = bisect.bisect_right(self._starts, sequence_number) - 1
            if i < 0:
                return None
            seqs, offsets = self._batches[i]
            j = int(np.searchsorted(seqs, sequence_number))
            if j < len(seqs) and seqs[j] == sequence_number and offsets[j]:
                return offsets[j].decode()
            return None

    def forget_before(self, sequence_number: int) -> None:
        with self._lock:
            keep = max(0, bisect.bisect_right(self._starts, sequence_number) - 1)
            del self._starts[:keep], self._batches[:keep]

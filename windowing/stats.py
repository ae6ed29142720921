"""Counters of one run, for the progress line and the final summary."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["RunStats"]


@dataclass
class RunStats:
    """Thread-safe counters shared by the operators of one process."""

    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    readings: int = 0
    elements: int = 0
    windows_written: int = 0
    dead_letters_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _COUNTERS = ("messages", "readings", "elements", "windows_written", "dead_letters_written")

    def add_decoded(self, messages: int, elements: int, readings: int) -> None:
        with self._lock:
            self.messages += messages
            self.elements += elements
            self.readings += readings

    def add_windows(self, rows: int) -> None:
        with self._lock:
            self.windows_written += rows

    def add_dead_letters(self, rows: int) -> None:
        with self._lock:
            self.dead_letters_written += rows

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self._COUNTERS}

    def merge(self, counts: dict[str, int]) -> None:
        """Add another process's counters (from :meth:`as_dict`)."""
        with self._lock:
            for name in self._COUNTERS:
                setattr(self, name, getattr(self, name) + int(counts.get(name, 0)))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress_line(self) -> str:
        rate = self.readings / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"{self.elements:,} elements, {self.readings:,} readings ({rate:,.0f}/s), "
            f"{self.windows_written:,} window rows, {self.dead_letters_written:,} dead letters written"
        )

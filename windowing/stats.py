"""Counters of one run, for the progress line, the final summary and the /metrics endpoint."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.dead_letters import ReasonCode
from sensorflow.windowing.tumbling import OpenWindows

__all__ = ["RunStats", "WRITE_BUCKETS"]

WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the store write latency histogram."""

_BY_REASON = "dead_letters:"  # as_dict's prefix of a count of dead letters by reason code


@dataclass
class RunStats:
    """Thread-safe counters shared by the operators of one process."""

    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    readings: int = 0
    elements: int = 0
    windows_written: int = 0
    dead_letters_written: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    write_buckets: list[int] = field(default_factory=lambda: [0] * (len(WRITE_BUCKETS) + 1))
    write_seconds: float = 0.0
    writer_peak_rss_kb: int | None = None  # the store writer process's, once it has closed
    partition_times: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Input partition -> (newest event time read, watermark), ns since the epoch, of this process's partitions."""
    _open_windows: list[Callable[[], OpenWindows]] = field(default_factory=list, repr=False)
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

    def add_dead_letters(self, rows: int, reasons: pa.Array | pa.ChunkedArray | None = None) -> None:
        """``rows`` written; ``reasons`` (their reason column) counts them by reason code (``late: ...`` is ``late``)."""
        counts: dict[str, int] = {}
        if reasons is not None and len(reasons):
            codes = pc.utf8_slice_codeunits(reasons, 0, 64)
            for item in pc.value_counts(codes).to_pylist():
                code = (item["values"] or "").split(":", 1)[0]
                counts[code] = counts.get(code, 0) + item["counts"]
        with self._lock:
            self.dead_letters_written += rows
            for code, n in counts.items():
                self.dead_letters_by_reason[code] = self.dead_letters_by_reason.get(code, 0) + n

    def observe_partition(self, partition: str, newest_event_ns: int, watermark_ns: int) -> None:
        """Partition ``partition`` has read up to event time ``newest_event_ns``; its watermark is ``watermark_ns``."""
        with self._lock:
            self.partition_times[partition] = (newest_event_ns, watermark_ns)

    def observe_write(self, seconds: float) -> None:
        """One store batch took ``seconds`` from hand-over to commit."""
        with self._lock:
            self.write_buckets[bisect.bisect_left(WRITE_BUCKETS, seconds)] += 1
            self.write_seconds += seconds

    @property
    def late_readings(self) -> int:
        with self._lock:
            return self.dead_letters_by_reason.get(ReasonCode.LATE, 0)

    def watch_open_windows(self, figures: Callable[[], OpenWindows]) -> None:
        """``figures()`` tells a window shard's open windows; :meth:`open_windows` adds them up."""
        with self._lock:
            self._open_windows.append(figures)

    def open_windows(self) -> OpenWindows:
        """The windows this process holds folded but not emitted; call it once the flow has returned."""
        with self._lock:
            watched = list(self._open_windows)
        return sum((figures() for figures in watched), OpenWindows())

    def as_dict(self) -> dict[str, int]:
        counts = {name: getattr(self, name) for name in self._COUNTERS}
        with self._lock:  # dead letters by reason too: a local cluster's summary tells the late readings apart
            counts.update({_BY_REASON + code: n for code, n in self.dead_letters_by_reason.items()})
        return counts

    def merge(self, counts: dict[str, int]) -> None:
        """Add another process's counters (from :meth:`as_dict`)."""
        with self._lock:
            for name in self._COUNTERS:
                setattr(self, name, getattr(self, name) + int(counts.get(name, 0)))
            for name, n in counts.items():
                if name.startswith(_BY_REASON):
                    code = name.removeprefix(_BY_REASON)
                    self.dead_letters_by_reason[code] = self.dead_letters_by_reason.get(code, 0) + int(n)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress_line(self, readings_per_s: float | None = None) -> str:
        """The counters in one line; ``readings_per_s`` (the current rate) if known, else the average since the start."""
        rate = readings_per_s if readings_per_s is not None else (self.readings / self.elapsed if self.elapsed > 0 else 0.0)
        return (
            f"{self.elements:,} elements, {self.readings:,} readings ({rate:,.0f}/s), "
            f"{self.windows_written:,} window rows, {self.dead_letters_written:,} dead letters written"
        )

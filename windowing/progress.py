"""The progress a run shows on stderr while its flow runs: a tqdm bar on a terminal, plain lines otherwise.

A replay knows its size: the bytes of the recording read (``ingest.replay.ReadMeter``) give the
percent done, and the byte rate over the last interval gives the ETA. Rates are CURRENT rates
(the change since the previous line), not averages since the start: a run that slows down shows
it at once. A live run has no size: its line has the counters and the current rate only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

from sensorflow.windowing.stats import RunStats

__all__ = ["Figures", "Progress", "Sample", "figures", "format_bytes", "format_eta", "plain_line"]

_BAR_REFRESH_SECONDS = 0.5


class SizedInput(Protocol):
    """What a replay source reports (``sensorflow.ingest.replay.ReadMeter``)."""

    @property
    def total_bytes(self) -> int: ...

    @property
    def bytes_read(self) -> int: ...


@dataclass(frozen=True)
class Sample:
    """The counters at one moment (``at``: monotonic seconds)."""

    at: float
    readings: int
    bytes_read: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class Figures:
    """What one progress line says: the current readings rate, and for a sized input percent, byte rate, ETA."""

    readings_per_s: float
    percent: float | None = None
    bytes_per_s: float | None = None
    eta_seconds: float | None = None


def figures(previous: Sample, now: Sample) -> Figures:
    """The figures between two samples: rates over that span (current, not since the start); no ETA while
    nothing was read in the span or the size is unknown."""
    span = now.at - previous.at
    if span <= 0:
        return Figures(0.0)
    readings_per_s = (now.readings - previous.readings) / span
    if now.total_bytes <= 0:
        return Figures(readings_per_s)
    percent = min(100.0, 100.0 * now.bytes_read / now.total_bytes)
    if previous.total_bytes <= 0:  # the partitions were being opened: a resumed offset is no rate
        return Figures(readings_per_s, percent)
    bytes_per_s = (now.bytes_read - previous.bytes_read) / span
    eta = (now.total_bytes - now.bytes_read) / bytes_per_s if bytes_per_s > 0 else None
    return Figures(readings_per_s, percent, bytes_per_s, eta)


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def format_eta(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def plain_line(stats: RunStats, now: Sample, shown: Figures) -> str:
    """``sensorflow: 42.0% of 1.2 GiB read, 3.1 MiB/s, ETA 0:01:23; <counters with the current rate>``."""
    head = ""
    if shown.percent is not None:
        head = f"{shown.percent:.1f}% of {format_bytes(now.total_bytes)} read"
        if shown.bytes_per_s is not None:
            head += f", {format_bytes(shown.bytes_per_s)}/s"
        head += f", ETA {format_eta(shown.eta_seconds)}" if shown.eta_seconds is not None else ", ETA unknown"
        head += "; "
    return f"sensorflow: {head}{stats.progress_line(shown.readings_per_s)}"


class Progress:
    """Shows the run's progress while the flow runs; ``interval`` 0 shows nothing.

    On a terminal (``out.isatty()``): a tqdm bar over the recording's bytes (a replay) or the
    readings (a live run), refreshed every half second. Otherwise one plain line every
    ``interval`` seconds (:func:`plain_line`). ``sized``: the replay's read meter, None for a live run.
    """

    def __init__(self, stats: RunStats, interval: float, out: TextIO, sized: SizedInput | None = None):
        self._stats = stats
        self._interval = interval
        self._out = out
        self._sized = sized
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        if self._interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> Sample:
        if self._sized is None:
            return Sample(time.monotonic(), self._stats.readings)
        return Sample(time.monotonic(), self._stats.readings, self._sized.bytes_read, self._sized.total_bytes)

    def _loop(self) -> None:
        isatty = getattr(self._out, "isatty", None)
        if isatty is not None and isatty():
            self._bar_loop()
        else:
            self._line_loop()

    def _line_loop(self) -> None:
        previous = self._sample()
        while not self._stop.wait(self._interval):
            now = self._sample()
            print(plain_line(self._stats, now, figures(previous, now)), file=self._out, flush=True)
            previous = now

    def _bar_loop(self) -> None:
        from tqdm import tqdm  # only on a terminal: a run in a container never imports it

        previous = self._sample()
        sized = self._sized is not None
        bar = tqdm(
            total=previous.total_bytes or None, desc="replay" if sized else "readings", unit="B" if sized else " readings",
            unit_scale=True, unit_divisor=1024 if sized else 1000, file=self._out, leave=False, dynamic_ncols=True,
            initial=previous.bytes_read if sized else previous.readings,
        )
        shown = previous
        try:
            while not self._stop.wait(_BAR_REFRESH_SECONDS):
                now = self._sample()
                if sized and now.total_bytes and bar.total != now.total_bytes:
                    bar.total = now.total_bytes
                if now.at - previous.at >= min(self._interval, 2.0):  # the readings rate over a couple of seconds
                    rate = figures(previous, now).readings_per_s
                    bar.set_postfix_str(
                        f"{rate:,.0f} readings/s, {self._stats.windows_written:,} windows, "
                        f"{self._stats.dead_letters_written:,} dead letters", refresh=False,
                    )
                    previous = now
                bar.update((now.bytes_read - shown.bytes_read) if sized else (now.readings - shown.readings))
                shown = now
        finally:
            bar.close()

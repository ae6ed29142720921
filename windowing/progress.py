"""The progress line a run prints on stderr while its flow runs."""

from __future__ import annotations

import threading
from typing import TextIO

from sensorflow.windowing.stats import RunStats

__all__ = ["Progress"]


class Progress:
    """Prints the stats line every ``interval`` seconds while the flow runs (0: never)."""

    def __init__(self, stats: RunStats, interval: float, out: TextIO):
        self._stats = stats
        self._interval = interval
        self._out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> "Progress":
        if self._interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            print(f"sensorflow: {self._stats.progress_line()}", file=self._out, flush=True)

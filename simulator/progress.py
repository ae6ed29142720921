"""Progress of ``sensorflow simulate``, phase by phase, on stderr.

A recording is written in phases (the fleet and its anomaly plan, the readings, the labels);
the readings phase knows its expected total (steps x readings per step; duplicates and dropouts
move the real count a little). On a terminal each phase is a tqdm bar; otherwise a line when a
phase starts and, while it runs, at most one every ``every_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["PhaseProgress"]


class PhaseProgress:
    """Phases with optional totals; ``bar`` None: a bar on a terminal only, False: never; ``enabled`` False: silent."""

    def __init__(self, out: TextIO | None = None, every_s: float = 5.0, bar: bool | None = None, enabled: bool = True):
        self.enabled = enabled
        self.out = out if out is not None else sys.stderr
        self.every_s = every_s
        isatty = getattr(self.out, "isatty", None)
        self._use_bar = bool(bar) or (bar is None and isatty is not None and isatty())
        self._bar: Any = None
        self._name = ""
        self._total: int | None = None
        self._unit = ""
        self.done = 0
        self._started = self._printed = time.monotonic()

    def phase(self, name: str, total: int | None = None, unit: str = "readings") -> None:
        """Start phase ``name`` (ends the previous one); ``total``: how many ``unit`` it will count, if known."""
        self.close()
        self._name, self._total, self._unit, self.done = name, total, unit, 0
        self._started = self._printed = time.monotonic()
        if not self.enabled:
            return
        if self._use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit=f" {unit}", unit_scale=True, file=self.out, leave=False)
        else:
            expected = f" (~{total:,} {unit})" if total else ""
            self._line(f"{name}{expected}")

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._printed >= self.every_s:
            elapsed = now - self._started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            share = f" ({100.0 * self.done / self._total:.1f}%)" if self._total else ""
            eta = ""
            if self._total and rate > 0 and self.done < self._total:
                eta = f", ETA {int((self._total - self.done) / rate)} s"
            self._line(f"{self._name}: {self.done:,} {self._unit}{share}, {rate:,.0f}/s{eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        self._printed = time.monotonic()
        print(f"sensorflow simulate: {text}", file=self.out, flush=True)

"""The final summary of a run: what it read, what it wrote, what the store holds, what is still open.

The lines add up: ``elements = readings + malformed`` (decoding turns every element into a
reading or a malformed dead letter), and the dead letters written are the malformed ones plus
the late readings (readings the lateness rule refused: they are counted among the readings AND
among the dead letters, never in a window). A live run that stops (a quiet hub, its max runtime,
SIGTERM or Ctrl-C) also says which windows are still open, not written, and where the next start
rebuilds them from. A run stopped by a signal still raises its interrupt; the report rides on it
(:func:`with_report`, :func:`report_of`), so the command prints the summary and exits 143 / 130.

Imports nothing heavy: the command line imports this module on every run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensorflow.windowing.execution import RunReport
    from sensorflow.windowing.tumbling import OpenWindows

__all__ = ["report_of", "summary_lines", "with_report"]

_REPORT = "sensorflow_run_report"


def with_report(interrupt: KeyboardInterrupt, report: RunReport) -> KeyboardInterrupt:
    """``interrupt`` carrying ``report``: what a run stopped by a signal had done."""
    setattr(interrupt, _REPORT, report)
    return interrupt


def report_of(interrupt: BaseException) -> RunReport | None:
    """The report :func:`with_report` put on ``interrupt``, or None."""
    return getattr(interrupt, _REPORT, None)


def summary_lines(report: RunReport) -> list[str]:
    """The summary a finished (or stopped) run prints, one line each."""
    stats, store = report.stats, report.store
    rate = stats.readings / stats.elapsed if stats.elapsed > 0 else 0.0
    malformed_read = stats.elements - stats.readings
    late = stats.late_readings
    verb = "consumed" if report.live else "replayed"
    stopped = f" (stopped: {report.stop_reason})" if report.stop_reason else ""
    lines = [
        f"sensorflow run: {verb} {report.partitions} partition(s) of {report.source} in {stats.elapsed:.1f} s{stopped}",
        f"  read:   {stats.messages:,} messages, {stats.elements:,} elements = {stats.readings:,} readings "
        f"+ {malformed_read:,} malformed ({rate:,.0f} readings/s)",
        f"  wrote:  {stats.windows_written:,} window rows, {stats.dead_letters_written:,} dead letters = "
        f"{stats.dead_letters_written - late:,} malformed + {late:,} late readings (this run)",
    ]
    if report.live:
        lines.append(_open_line(report.open_windows, report.rebuilt_from))
    if store is None:
        lines.append("  store:  not read (it did not answer as the run stopped)")
        return lines
    span = f", windows {store.first_window} .. {store.last_window}" if store.windows else ""
    dead = ", ".join(f"{reason} {n:,}" for reason, n in sorted(store.dead_letters.items())) or "none"
    lines.append(f"  store:  {store.windows:,} window rows, {store.sensors:,} sensors{span}")
    lines.append(f"  dead letters in store: {dead} (late readings: {store.late:,})")
    return lines


def _open_line(open_windows: OpenWindows | None, rebuilt_from: str | None) -> str:
    if rebuilt_from is None:
        fate = "they are lost: no --recovery-dir or --checkpoint-container, so the next start begins at --starting-position"
    else:
        fate = f"the next start rebuilds them from {rebuilt_from}"
    if open_windows is None:
        return f"  open:   not counted (the stop was interrupted); {fate}"
    if open_windows.rows == 0:
        return "  open:   none: every window read is written"
    ends = f"{_time(open_windows.first_end)} .. {_time(open_windows.last_end)}"
    return f"  open:   {open_windows.rows:,} window rows still open, not written (window ends {ends}); {fate}"


def _time(ns: int | None) -> str:
    if ns is None:
        return "?"
    moment = datetime.fromtimestamp(ns // 1_000_000 / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"

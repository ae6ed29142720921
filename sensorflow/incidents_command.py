"""``sensorflow incidents``: the store's incidents, newest and strongest first, as a table or JSON lines.

An incident is a run of one sensor's flagged windows (``sensorflow.batch_jobs.incidents``);
the sidecar's score tasks keep the ``Incidents`` table up to date. ``--since`` is window
time: a duration before the store's newest window (``1h``, ``30m``, ``2d``) or an ISO-8601
time; an incident is listed when it ends after it.

Exit status: 0 done (also when there is no incident); 2 a bad ``--since`` or no such SQLite file; 1 the
store failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

import pyarrow as pa

from sensorflow.records.timeparse import format_iso, parse_duration, parse_time
from sensorflow.store import Store, StoreError, StoreSummary, open_store

__all__ = ["incidents_command", "incident_rows", "newest_window", "open_for_reading", "resolve_since"]


class SinceError(ValueError):
    """A ``--since`` that is neither a duration nor a time."""


class NoStore(ValueError):
    """A SQLite store URL whose file does not exist (exit 2: a bad argument)."""


def resolve_since(text: str | None, newest_ns: int | None) -> int | None:
    """``--since`` as ns: a duration before ``newest_ns`` (``1h``, ``-1h``, ``newest-1h``) or an ISO-8601 time."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    duration = text.removeprefix("newest").removeprefix("-")
    try:
        ago = parse_duration(duration)
    except ValueError:
        ago = None
    if ago is not None:
        return None if newest_ns is None else newest_ns - ago
    parsed = parse_time(text)
    if parsed is None:
        raise SinceError(f"bad --since {text!r}: expected a duration before the newest window (1h, 30m, 2d) "
                         "or an ISO-8601 time (2026-01-01T06:00:00Z)")
    return parsed


def open_for_reading(store_url: str) -> Store:
    """The store at ``store_url``, its tables made if missing (a store made before ``Incidents`` has none yet).

    A SQLite file that does not exist is ``NoStore`` naming the absolute path: reading
    must not leave an empty database behind (a relative path is ``sqlite:///PATH``, an
    absolute one ``sqlite:////PATH``, four slashes).
    """
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise NoStore(f"no store at {path.resolve()} (sensorflow run writes one; sqlite:///PATH is relative "
                             "to the working directory, sqlite:////PATH absolute)")
    store = open_store(store_url)
    try:
        store.create_schema()
    except BaseException:
        store.close()
        raise
    return store


def newest_window(store: Store, summary: StoreSummary | None = None) -> int | None:
    """The newest window end in the store (ns), None when it has no windows; from ``summary`` if already read."""
    last = (summary or store.summary()).last_window
    return None if last is None else parse_time(last)


def incident_rows(table: pa.Table) -> list[dict]:
    """The incidents as JSON-ready dicts: times ISO-8601 UTC, ``duration_seconds`` from the first flagged window's start."""
    rows = []
    for row in table.to_pylist():
        rows.append({
            "device": row["device"], "tag": row["tag"], "detector": row["detector"],
            "start": format_iso(row["start"]), "end": format_iso(row["end"]),
            "flagged_windows": row["flagged_windows"], "peak_score": row["peak_score"], "open": bool(row["open"]),
            "updated_at": format_iso(row["updated_at"]),
        })
    return rows


def incidents_command(store_url: str, since: str | None = None, open_only: bool = False,
                      detector: str | None = None, as_json: bool = False, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    try:
        with open_for_reading(store_url) as store:
            since_ns = resolve_since(since, newest_window(store) if since else None)
            table = store.read_incidents(since_ns=since_ns, open_only=open_only, detector=detector)
    except (SinceError, NoStore) as e:
        print(f"sensorflow incidents: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"sensorflow incidents: {e}", file=sys.stderr)
        return 1
    rows = incident_rows(table)
    try:
        if as_json:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        else:
            out.write(format_table(rows) + "\n")
        out.flush()
    except BrokenPipeError:  # `| head` stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # so the interpreter's final flush is quiet too
    return 0


_COLUMNS = [("device", "device"), ("tag", "tag"), ("detector", "detector"), ("start", "start (UTC)"),
            ("end", "end (UTC)"), ("flagged_windows", "windows"), ("peak_score", "peak"), ("open", "open")]


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``incident_rows`` (newest first), or one line saying there are none."""
    if not rows:
        return "no incidents (the sidecar writes them as it scores: sensorflow sidecar --once)"
    cells = [[_cell(key, row[key]) for key, _ in _COLUMNS] for row in rows]
    heads = [head for _, head in _COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    numeric = {"flagged_windows", "peak_score"}
    lines = ["  ".join(h.rjust(w) if k in numeric else h.ljust(w) for (k, _), h, w in zip(_COLUMNS, heads, widths))]
    for c in cells:
        lines.append("  ".join(x.rjust(w) if k in numeric else x.ljust(w) for (k, _), x, w in zip(_COLUMNS, c, widths)))
    opened = sum(1 for r in rows if r["open"])
    lines.append(f"{len(rows):,} incident(s), {opened:,} open; score 1.0 is the threshold")
    return "\n".join(lines).rstrip()


def _cell(key: str, value) -> str:
    if key == "peak_score":
        return f"{value:,.2f}" if value < 1e6 else f"{value:.3g}"
    if key == "open":
        return "open" if value else ""
    if key in ("start", "end"):
        return value.replace("T", " ").removesuffix("Z")
    return f"{value:,}" if isinstance(value, int) else str(value)

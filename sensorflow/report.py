"""``sensorflow report``: one self-contained HTML page of what the store holds and what was found.

The page needs no server and no network: inline CSS, no script, every plot a
base64 PNG drawn by matplotlib (Agg). It holds the store's summary (windows,
sensors, the window-time span, dead letters, incidents, and with ``--labels``
how many labelled anomalies have an incident), then for the top sensors (most
incidents, then highest peak score) their window means with the min..max
band, flagged windows, missing slots, the score against its threshold of 1
and the labelled spans, then the incidents table (``sensorflow incidents``'s
rows, the first 50).

Exit status: 0 written; 2 bad arguments (``--since``, an unreadable labels
file, an output directory or a SQLite store that does not exist); 1 the store failed.
"""

from __future__ import annotations

import base64
import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow import __version__
from sensorflow.batch_jobs.quality import LabelSpan, read_labels
from sensorflow.batch_jobs.quality_plot import THRESHOLD, plot_png
from sensorflow.incidents_command import NoStore, SinceError, incident_rows, newest_window, open_for_reading, resolve_since
from sensorflow.records.timeparse import format_iso
from sensorflow.store import Store, StoreError, StoreSummary

__all__ = ["ReportData", "render_html", "report_command"]

Sensor = tuple[str, str]
INCIDENTS_LISTED = 50  # rows of the incidents table at most (the page says how many more)
CONTEXT_WINDOWS = 60  # window slots drawn before a sensor's first incident when the report has no --since


@dataclass(frozen=True)
class SensorPlot:
    """One top sensor's picture: which detector's scores, its incidents, the PNG."""

    device: str
    tag: str
    detector: str
    incidents: int
    peak_score: float
    png: bytes


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, gathered from the store (``render_html`` only formats it)."""

    store: str
    generated_at: str
    summary: StoreSummary
    since: int | None
    newest: int | None
    window_ns: int
    incidents: list[dict]
    incidents_total: int
    open_total: int
    plots: list[SensorPlot]
    labels: int | None = None  # labelled anomalies in the report's range (None: no --labels)
    labels_found: int = 0  # of those, with an incident of their sensor overlapping them


def report_command(store_url: str, out: Path, since: str | None = None, labels: Path | None = None,
                   detector: str | None = None, top: int = 6, window_seconds: float | None = None) -> int:
    """Write the page to ``out``; ``window_seconds`` None: the length the store recorded (5 s if it recorded none)."""
    out = Path(out)
    if not out.parent.is_dir():
        print(f"sensorflow report: directory does not exist: {out.parent.resolve()}", file=sys.stderr)
        return 2
    try:
        spans = read_labels(labels) if labels is not None else None
    except ValueError as e:
        print(f"sensorflow report: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        with open_for_reading(store_url) as store:
            window_ns = round(window_seconds * 1e9) if window_seconds is not None else _recorded_window_ns(store)
            data = gather(store, _describe(store_url), since, spans, detector, top, window_ns)
    except (SinceError, NoStore) as e:
        print(f"sensorflow report: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"sensorflow report: {e}", file=sys.stderr)
        return 1
    out.write_text(render_html(data), encoding="utf-8")
    print(f"sensorflow report: wrote {out} ({data.incidents_total:,} incident(s), {data.open_total:,} open, "
          f"{len(data.plots)} sensor plot(s))")
    return 0


def gather(store: Store, described: str, since: str | None, labels: Sequence[LabelSpan] | None,
           detector: str | None, top: int, window_ns: int) -> ReportData:
    """The report's content from an open store."""
    summary = store.summary()
    newest = newest_window(store, summary)  # one summary read: it counts the whole table
    since_ns = resolve_since(since, newest)
    table = store.read_incidents(since_ns=since_ns, detector=detector)
    plots = [_plot(store, entry, table, labels or [], since_ns, newest, window_ns) for entry in _top(table, top)]
    in_range = None if labels is None else [s for s in labels if since_ns is None or s.end > since_ns]
    found = 0 if in_range is None else sum(1 for s in in_range if _has_incident(table, s, window_ns))
    rows = incident_rows(table.slice(0, INCIDENTS_LISTED))
    opened = int(pc.sum(table["open"].cast(pa.int64())).as_py() or 0)
    return ReportData(described, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), summary, since_ns, newest,
                      window_ns, rows, table.num_rows, opened, plots, None if in_range is None else len(in_range), found)


def _recorded_window_ns(store: Store) -> int:
    """The window length the store recorded at creation (``StoreSettings``); 5 s for a store made before that table."""
    try:
        recorded = store.read_settings().get("window_seconds")
    except Exception:  # noqa: BLE001 - a store made before StoreSettings has no such table; the report only reads
        recorded = None
    return round(float(recorded) * 1e9) if recorded else 5 * 1_000_000_000


def _describe(url: str) -> str:
    """The store URL without secrets (an ODBC password is masked)."""
    if url.startswith("sqlite:///"):
        return url
    from sensorflow.store.odbc_connect import parse_store_url

    return f"{url.split(':', 1)[0]}:{parse_store_url(url).describe()}"


def _top(incidents: pa.Table, top: int) -> list[tuple[str, str, str, int, float]]:
    """(device, tag, detector, incidents, peak) of the ``top`` sensors: most incidents, then highest peak score."""
    if incidents.num_rows == 0:
        return []
    grouped = incidents.group_by(["device", "tag", "detector"], use_threads=False).aggregate(
        [([], "count_all"), ("peak_score", "max")])
    grouped = grouped.sort_by([("count_all", "descending"), ("peak_score_max", "descending"),
                               ("device", "ascending"), ("tag", "ascending"), ("detector", "ascending")])
    return [(r["device"], r["tag"], r["detector"], r["count_all"], r["peak_score_max"])
            for r in grouped.slice(0, top).to_pylist()]


def _plot(store: Store, entry: tuple[str, str, str, int, float], incidents: pa.Table, labels: Sequence[LabelSpan],
          since_ns: int | None, newest: int | None, window_ns: int) -> SensorPlot:
    device, tag, detector, count, peak = entry
    mine = incidents.filter(pc.and_(pc.and_(pc.equal(incidents["device"], device), pc.equal(incidents["tag"], tag)),
                                    pc.equal(incidents["detector"], detector)))
    first = int(pc.min(mine["start"]).as_py())
    hi = newest if newest is not None else int(pc.max(mine["end"]).as_py())
    lo = since_ns if since_ns is not None else first - CONTEXT_WINDOWS * window_ns
    sensor = [(device, tag)]
    windows = store.read_windows(sensor, lo, hi)
    predictions = store.read_predictions(sensor, lo, hi)
    predictions = predictions.filter(pc.equal(predictions["detector"], detector))
    note = f"[{detector}: {count} incident(s), peak {_score(peak)}]"
    png = plot_png(sensor, windows, predictions, labels, window_ns, titles={(device, tag): note}, scored_range=(lo + window_ns, hi))
    return SensorPlot(device, tag, detector, count, peak, png)


def _has_incident(incidents: pa.Table, span: LabelSpan, window_ns: int) -> bool:
    """Whether an incident of the span's sensor meets it (a window ending at t covers (t - window, t])."""
    mine = incidents.filter(pc.and_(pc.equal(incidents["device"], span.device), pc.equal(incidents["tag"], span.tag)))
    if mine.num_rows == 0:
        return False
    start, end = mine["start"].to_numpy(), mine["end"].to_numpy()
    return bool(np.any((end > span.start) & (start - window_ns < span.end)))


_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1240px;
       color: #1d2329; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #d6dbe0; }
.meta { color: #5b6670; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e4e7ea; text-align: left; white-space: nowrap; }
th { background: #f2f4f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.open td { background: #fff4e5; }
.summary td:first-child { color: #5b6670; }
figure { margin: 12px 0 24px; } figcaption { color: #5b6670; font-size: 13px; }
img { max-width: 100%; border: 1px solid #e4e7ea; }
.note { color: #5b6670; font-size: 13px; }
"""


def render_html(data: ReportData) -> str:
    """The page: one HTML document with inline CSS and base64 PNGs, nothing fetched."""
    e = html.escape
    s = data.summary
    span = f"{s.first_window} .. {s.last_window}" if s.windows else "no windows"
    dead = ", ".join(f"{reason} {n:,}" for reason, n in sorted(s.dead_letters.items())) or "none"
    scope = f"incidents ending after {format_iso(data.since)}" if data.since is not None else "all incidents"
    rows = [
        ("store", data.store), ("window rows", f"{s.windows:,}"), ("sensors", f"{s.sensors:,}"),
        ("window time (window ends, UTC)", span), ("window length", f"{data.window_ns / 1e9:g} s"),
        ("dead letters", dead), ("incidents", f"{data.incidents_total:,} ({scope})"),
        ("open incidents", f"{data.open_total:,}"),
    ]
    if data.labels is not None:
        rows.append(("labelled anomalies with an incident", f"{data.labels_found:,} of {data.labels:,}"))
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sensorflow report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        "<h1>sensorflow report</h1>",
        f'<p class="meta">generated {e(data.generated_at)} by sensorflow {e(__version__)}</p>',
        "<h2>Store</h2>", '<table class="summary" id="summary">',
        *(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows), "</table>",
        "<h2>Top sensors</h2>",
    ]
    if not data.plots:
        parts.append('<p class="note">No incidents: nothing to draw.</p>')
    else:
        parts.append('<p class="note">Most incidents first, then the highest peak score. Each picture: the window means '
                     "(line) with their min..max band, flagged windows (green inside a labelled span, red otherwise), "
                     "missing slots (grey ticks; a flagged one sits on the floor), labelled spans shaded; below, the "
                     f"score against its threshold of {THRESHOLD:g} (dashed).</p>")
    for p in data.plots:
        image = base64.b64encode(p.png).decode("ascii")
        caption = f"device {p.device} / tag {p.tag}: {p.incidents} incident(s), peak score {_score(p.peak_score)} ({p.detector})"
        parts.append(f'<figure class="sensor"><img alt="{e(caption)}" src="data:image/png;base64,{image}">'
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += [
        "<h2>Incidents</h2>",
        f'<p class="note">Runs of a sensor\'s flagged windows, newest first, then strongest. A window is flagged when '
        f"its Score is at least {THRESHOLD:g} (the threshold); <em>open</em> incidents may still go on. "
        "Times are window ends (UTC).</p>",
        _incidents_table(data),
        "</body>", "</html>", "",
    ]
    return "\n".join(parts)


def _incidents_table(data: ReportData) -> str:
    if not data.incidents:
        return '<p class="note" id="no-incidents">No incidents in this range.</p>'
    e = html.escape
    head = ("device", "tag", "detector", "start", "end", "windows", "peak score", "open")
    lines = ['<table id="incidents">', "<thead><tr>" + "".join(
        f'<th class="num">{h}</th>' if h in ("windows", "peak score") else f"<th>{h}</th>" for h in head) + "</tr></thead>",
        "<tbody>"]
    for r in data.incidents:
        cells = [e(r["device"]), e(r["tag"]), e(r["detector"]), e(_when(r["start"])), e(_when(r["end"]))]
        lines.append(f'<tr class="{"open" if r["open"] else "closed"}">' + "".join(f"<td>{c}</td>" for c in cells)
                     + f'<td class="num">{r["flagged_windows"]:,}</td><td class="num">{_score(r["peak_score"])}</td>'
                     + f'<td>{"open" if r["open"] else ""}</td></tr>')
    lines.append("</tbody></table>")
    if data.incidents_total > len(data.incidents):
        lines.append(f'<p class="note">{data.incidents_total - len(data.incidents):,} more not listed '
                     "(sensorflow incidents --json lists all).</p>")
    return "\n".join(lines)


def _when(iso: str) -> str:
    return iso.replace("T", " ").removesuffix("Z")


def _score(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:.3g}"

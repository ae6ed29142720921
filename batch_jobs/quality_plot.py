"""The picture of detection results (``evaluate --plot`` and the demo): windows, flags true and false, labels, score vs threshold."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.batch_jobs.quality import LabelSpan, Scope, inside_labels

__all__ = ["THRESHOLD", "plot_png", "plot_worst"]

THRESHOLD = 1.0
"""Where a score flags: the project's detectors scale their scores so a window is anomalous at >= 1."""


def _times(ns: np.ndarray) -> np.ndarray:
    return np.asarray(ns, dtype=np.int64).astype("datetime64[ns]")


def _of(table: pa.Table, device: str, tag: str) -> pa.Table:
    return table.filter(pc.and_(pc.equal(table["device"], device), pc.equal(table["tag"], tag)))


def _on_slots(rows: pa.Table, window_ns: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows on every window slot from the first to the last, NaN where a slot has no row (lines break there)."""
    ts = rows["ts"].to_numpy()
    if ts.shape[0] == 0:
        return _times(ts), {name: np.zeros(0) for name in ("value", "min", "max")}
    slots = np.arange(ts.min(), ts.max() + 1, window_ns, dtype=np.int64)
    at = (ts - slots[0]) // window_ns
    columns = {}
    for name in ("value", "min", "max"):
        column = np.full(slots.shape[0], np.nan)
        column[at] = rows[name].to_numpy()
        columns[name] = column
    return _times(slots), columns


def _labels_of(labels: Sequence[LabelSpan], device: str, tag: str, scope: Scope) -> list[LabelSpan]:
    return [s for s in labels if s.device == device and (scope == "device" or s.tag == tag)]


def plot_worst(
    path: Path,
    sensors: Sequence[tuple[str, str]],
    windows: pa.Table,
    predictions: pa.Table,
    labels: Sequence[LabelSpan],
    window_ns: int,
    scope: Scope = "sensor",
    titles: dict[tuple[str, str], str] | None = None,
    scored_range: tuple[int, int] | None = None,
    split_ns: int | None = None,
) -> Path:
    """Two panels per sensor of ``sensors`` (in order): windows with flags and labels, then score vs threshold.

    ``windows`` (``WINDOW_READ_SCHEMA``) and ``predictions`` (``PREDICTION_SCHEMA``,
    every scored row of these sensors) cover the range to draw. A flag inside a
    label of its unit (its sensor, or its device in the device scope) is drawn
    as true, any other as false; a flagged missing slot sits on the panel's
    floor. ``titles`` adds a note per sensor; ``scored_range`` (ns) bounds the
    time axis (labels reaching outside it are cut); ``split_ns`` (ns) draws a
    dashed line where training ends and scoring starts, when ``windows`` show
    both. Returns ``path``.
    """
    figure = _draw(sensors, windows, predictions, labels, window_ns, scope, titles, scored_range, split_ns)
    return _save(figure, path)


def plot_png(
    sensors: Sequence[tuple[str, str]],
    windows: pa.Table,
    predictions: pa.Table,
    labels: Sequence[LabelSpan],
    window_ns: int,
    titles: dict[tuple[str, str], str] | None = None,
    scored_range: tuple[int, int] | None = None,
) -> bytes:
    """``plot_worst``'s panels as PNG bytes, each missing window slot also marked (grey ticks on the panel's floor)."""
    buffer = io.BytesIO()
    _save(_draw(sensors, windows, predictions, labels, window_ns, "sensor", titles, scored_range, None, True), buffer)
    return buffer.getvalue()


def _save(figure, target):
    import matplotlib.pyplot as plt

    if isinstance(target, (str, Path)):
        figure.savefig(target, dpi=100)
        plt.close(figure)
        return Path(target)
    figure.savefig(target, dpi=100, format="png", metadata={"Software": None})  # no matplotlib URL in an embedded image
    plt.close(figure)
    return target


def _draw(sensors, windows, predictions, labels, window_ns, scope, titles, scored_range, split_ns, missing_slots=False):
    """The figure of ``plot_worst``; ``missing_slots`` also marks every slot without a window row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(sensors))
    figure, axes = plt.subplots(2 * rows, 1, figsize=(12, 3.2 * rows), sharex=True, squeeze=False,
                                gridspec_kw={"height_ratios": [3, 1] * rows})
    for i, (device, tag) in enumerate(sensors):
        values, scores = axes[2 * i, 0], axes[2 * i + 1, 0]
        ts, columns = _on_slots(_of(windows, device, tag), window_ns)
        values.fill_between(ts, columns["min"], columns["max"], color="tab:blue", alpha=0.15, linewidth=0, label="min..max")
        values.plot(ts, columns["value"], color="tab:blue", linewidth=0.8, label="mean (gaps: no readings)")
        spans = _labels_of(labels, device, tag, scope)
        for span in spans:
            values.axvspan(_times([span.start])[0], _times([span.end])[0], color="tab:orange", alpha=0.25)
        rows_of = _of(predictions, device, tag).sort_by("ts")
        flagged = rows_of.filter(pc.fill_null(rows_of["is_anomaly"], False))
        flag_ts = flagged["ts"].to_numpy()
        flag_value = flagged["value"].to_numpy(zero_copy_only=False).astype(float)
        floor = np.nanmin(columns["min"]) if np.isfinite(columns["min"]).any() else 0.0
        if missing_slots:
            gaps = np.isnan(columns["value"])
            values.scatter(ts[gaps], np.full(int(gaps.sum()), floor), color="grey", marker="|", s=30, zorder=2,
                           label="missing slot (no readings)")
        flag_value = np.where(np.isfinite(flag_value), flag_value, floor)  # a flagged missing slot: on the floor
        true = inside_labels(flag_ts, spans, window_ns)
        values.scatter(_times(flag_ts[true]), flag_value[true], color="tab:green", marker="o", s=22, zorder=3,
                       label="flagged, inside a label")
        values.scatter(_times(flag_ts[~true]), flag_value[~true], color="tab:red", marker="x", s=28, zorder=3,
                       label="flagged, false")
        kinds = sorted({s.kind for s in spans})
        note = (titles or {}).get((device, tag), "")
        title = f"device {device} / tag {tag}" + (f"  (labelled: {', '.join(kinds)})" if kinds else "") + (f"  {note}" if note else "")
        values.set_title(title, fontsize=9, loc="left")
        scores.plot(_times(rows_of["ts"].to_numpy()), rows_of["score"].to_numpy(zero_copy_only=False).astype(float),
                    color="tab:purple", linewidth=0.7, label="score")
        scores.axhline(THRESHOLD, color="tab:red", linestyle="--", linewidth=0.8, label=f"threshold {THRESHOLD:g}")
        scores.set_yscale("symlog", linthresh=THRESHOLD)
        scores.set_ylim(bottom=0)
        scores.set_ylabel("score", fontsize=8)
        for ax in (values, scores):
            ax.tick_params(labelsize=8)
            if split_ns is not None:
                ax.axvline(_times([split_ns])[0], color="grey", linestyle="--", linewidth=0.8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    more, more_names = axes[1, 0].get_legend_handles_labels()
    figure.legend(handles + more, names + more_names, loc="upper right", fontsize=8, ncol=3, frameon=False)
    if scored_range is not None:
        axes[-1, 0].set_xlim(_times([scored_range[0] - window_ns])[0], _times([scored_range[1]])[0])
    if not sensors:
        axes[0, 0].text(0.5, 0.5, "no flagged or missed sensor", ha="center", va="center", transform=axes[0, 0].transAxes)
    split = "dashed: training | scoring; " if split_ns is not None else ""
    axes[-1, 0].set_xlabel(f"window end (UTC); {split}shaded: labelled anomaly", fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure

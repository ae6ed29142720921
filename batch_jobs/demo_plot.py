"""The demo's picture: a few sensors' windows with labelled and predicted anomalies marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.batch_jobs.quality import LabelSpan

__all__ = ["plot_sensors"]


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


def plot_sensors(
    path: Path, windows: pa.Table, predictions: pa.Table, labels: list[LabelSpan], split_ns: int, window_ns: int
) -> Path:
    """One panel per sensor in ``windows`` (in first-appearance order): mean, min-max band, labels, flags.

    ``split_ns`` marks where training ends and scoring starts. Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sensors = list(dict.fromkeys(zip(windows["device"].to_pylist(), windows["tag"].to_pylist())))
    figure, axes = plt.subplots(max(1, len(sensors)), 1, figsize=(12, 2.4 * max(1, len(sensors))), sharex=True,
                                squeeze=False)
    for ax, (device, tag) in zip(axes[:, 0], sensors):
        ts, columns = _on_slots(_of(windows, device, tag), window_ns)
        ax.fill_between(ts, columns["min"], columns["max"], color="tab:blue", alpha=0.15, linewidth=0, label="min..max")
        ax.plot(ts, columns["value"], color="tab:blue", linewidth=0.8, label="mean (gaps: no readings)")
        kinds = []
        for label in labels:
            if (label.device, label.tag) == (device, tag):
                ax.axvspan(_times([label.start])[0], _times([label.end])[0], color="tab:orange", alpha=0.25)
                kinds.append(label.kind)
        flagged = _of(predictions, device, tag).filter(pc.field("is_anomaly"))
        ax.scatter(_times(flagged["ts"].to_numpy()), flagged["value"].to_numpy(), color="tab:red", marker="x",
                   s=28, zorder=3, label="flagged")
        ax.axvline(_times([split_ns])[0], color="grey", linestyle="--", linewidth=0.8)
        title = f"device {device} / tag {tag}" + (f"  (labelled: {', '.join(sorted(set(kinds)))})" if kinds else "")
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, names, loc="upper right", fontsize=8, ncol=3, frameon=False)
    axes[-1, 0].set_xlabel("window end (UTC); dashed: training | scoring; shaded: labelled anomaly", fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

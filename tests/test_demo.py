"""The demo end to end on a small fleet: simulator -> dataflow -> SQLite -> sidecar -> report and plot."""

from __future__ import annotations

import re

from sensorflow.batch_jobs.quality import evaluate, read_labels
from sensorflow.cli import main
from sensorflow.store import open_store

S = 1_000_000_000
START = 1_767_225_600 * S


def test_demo_trains_on_the_first_part_scores_the_rest_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--devices", "6", "--tags", "2", "--minutes", "12",
                 "--anomaly-rate", "20", "--task-processes", "1", "--plot-sensors", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed  # how long it takes is bench territory, not a test's (a busy machine is slow)

    with open_store(f"sqlite:///{out / 'sensorflow.db'}") as store:
        sensors = store.sensors_written_since(0)
        runs = store.read_runs(limit=10)
        predictions = store.read_predictions(sensors, 0, START + 3600 * S)
        windows = store.summary().windows
    assert len(sensors) == 12
    assert sorted((r.kind, r.status, r.sensors) for r in runs) == [
        ("score", "succeeded", 0), ("score", "succeeded", 12), ("train", "succeeded", 12)
    ]  # the first score phase has no models to score with: sensors without a model are not scored
    train = next(r for r in runs if r.kind == "train")
    assert (train.range_from, train.range_to) == (START, START + 360 * S)  # the first half, in window time
    ts = predictions["ts"].to_numpy()
    assert ts.min() == START + 365 * S and ts.max() == START + 720 * S  # scored: the rest, and only the rest
    assert 0.9 * 12 * 72 < windows <= 12 * 144 and len(predictions) <= 12 * 72

    labels = read_labels(out / "recording-2" / "labels.json")
    assert labels, "the scored part has labelled anomalies"
    report = evaluate(predictions, [x for x in labels if x.kind != "dropout"], scored_range=(START + 360 * S, START + 720 * S))
    assert report.recall >= 0.6 and report.precision >= 0.6, report  # predictions line up with the labels in time

    found = re.search(r"found:\s+(\d+) of (\d+) labelled anomalies", printed)
    assert found and int(found.group(2)) == len(labels), printed
    assert f"windows:   {windows:,} window rows" in printed
    assert "top anomalous sensors" in printed
    plot = out / "anomalies.png"
    assert f"plot:      {plot.resolve()}" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000

    # Running it again replaces the outputs instead of piling up runs.
    assert main(["demo", "--out", str(out), "--devices", "2", "--tags", "1", "--minutes", "4",
                 "--task-processes", "1"]) == 0
    with open_store(f"sqlite:///{out / 'sensorflow.db'}") as store:
        runs = store.read_runs()
        # only the second demo's runs (its sensors have too few windows to train, so each sidecar run tries again)
        assert len(store.sensors_written_since(0)) == 2 and runs and all(r.sensors <= 2 for r in runs)


def test_the_plot_shows_the_worst_false_alarm_sensor_first_then_one_per_kind():
    import pyarrow as pa

    from sensorflow.batch_jobs.quality import LabelSpan
    from sensorflow.demo import _plotted

    w = 5 * S
    labels = [LabelSpan("1", "1", "spike", START + 10 * w, START + 11 * w),
              LabelSpan("2", "1", "stuck", START + 20 * w, START + 30 * w)]
    rows = [(START + 11 * w, "1", "1"), *[(START + (21 + i) * w, "2", "1") for i in range(9)],
            *[(START + (40 + i) * w, "3", "1") for i in range(3)]]  # sensor 3: 3 flags, no label
    predictions = pa.table({"ts": [r[0] for r in rows], "device": [r[1] for r in rows], "tag": [r[2] for r in rows],
                            "is_anomaly": [True] * len(rows)})
    quality = evaluate(predictions, labels, w)
    plotted = _plotted(predictions, labels, quality, 3)
    assert list(plotted) == [("3", "1"), ("1", "1"), ("2", "1")]
    assert plotted[("3", "1")] == "[most false flags: 3 windows]"

"""A simulated recording replays through the core dataflow (`sensorflow run`)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from sensorflow.simulator import AnomalySpec, DeliverySpec, FleetSpec, write_jsonl_recording
from tests.simulator.helpers import fleet_config

REPO = Path(__file__).resolve().parents[2]


def _replay(source: Path, store: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{store}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_replay_dead_letters_equal_the_malformed_count_and_dropouts_have_no_windows(tmp_path):
    config = fleet_config(
        fleet=FleetSpec(devices=5, tags=4),
        anomalies=AnomalySpec(rate_per_sensor_hour=10.0, kinds=("dropout", "spike")),
        delivery=DeliverySpec(malformed_fraction=0.02),
    )
    summary = write_jsonl_recording(tmp_path / "rec", config)
    assert summary.malformed > 0
    _replay(tmp_path / "rec", tmp_path / "store.db")
    with sqlite3.connect(tmp_path / "store.db") as db:
        dead = db.execute("SELECT COUNT(*) FROM DeadLetters").fetchone()[0]
        rows = db.execute("SELECT TS, Device, Tag, Count FROM SensorValues").fetchall()
    assert dead == summary.malformed
    labels = json.loads((tmp_path / "rec" / "labels.json").read_text())
    by_window = {(device, tag, ts): count for ts, device, tag, count in rows}
    assert sum(by_window.values()) == summary.readings
    for label in labels:
        # window rows carry the window END: windows inside [start, end) end in (start, end]
        start = label["start"].replace("T", " ").rstrip("Z")
        end = label["end"].replace("T", " ").rstrip("Z")
        sensor = (label["device"], label["tag"])
        inside = [c for (d, t, ts), c in by_window.items() if (d, t) == sensor and start < ts <= end]
        if label["kind"] == "dropout":
            assert inside == []
        else:
            assert inside and all(c == 5 for c in inside)  # 1 reading/s, whole windows

"""/metrics for replays and the sidecar too, scraped over HTTP from real processes (issue 17, trap 4).

Before: ``--metrics-port`` was refused for replays ("metrics_port need source = eventhubs"), the
sidecar had no metrics, there were no ``process_*`` metrics, no build info, no watermark or
event-time lag gauges, and the dynamic gauges' help text repeated their names.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from sensorflow import __version__
from sensorflow.store import open_store
from sensorflow.windowing.live import _board_figures
from sensorflow.windowing.service import RunCollector
from sensorflow.windowing.stats import RunStats
from tests.conftest import REPO, seed_message, write_recording
from tests.support.builders import T0, W, add_windows
from tests.support.processes import wait_for

SENSORFLOW = [sys.executable, "-m", "sensorflow"]


class _Lines:
    """A child's stderr, read on a thread (never blocks the child), searchable while it runs."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def port(self) -> int | None:
        found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.text())
        return int(found.group(1)) if found else None


def _scrape(port: int) -> dict[str, object]:
    """Metric families by name; {} while the server does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict, name: str, **labels: str) -> float | None:
    family = families.get(name)
    for sample in getattr(family, "samples", []):
        if sample.name in (name, f"{name}_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def _assert_documented(families: dict) -> None:
    for name, family in families.items():
        if name.startswith("sensorflow_"):
            generic = name.removeprefix("sensorflow_").replace("_", " ")
            assert family.documentation and family.documentation != generic, (name, family.documentation)


def _assert_standard(families: dict) -> None:
    assert _value(families, "process_cpu_seconds") is not None, sorted(families)
    assert _value(families, "process_resident_memory_bytes") is not None
    assert _value(families, "python_info") == 1
    assert _value(families, "sensorflow_build_info", version=__version__) == 1


def test_a_replay_serves_metrics_with_watermarks_and_event_time_lag(tmp_path, processes):
    lines = [seed_message(f"2026-01-01T00:{s // 60:02d}:{s % 60:02d}.000Z", d, 1, float(s)) for s in range(600) for d in range(3)]
    source = write_recording(tmp_path / "rec", {"0": lines[::2], "1": lines[1::2]})
    # paced at 2x: ten minutes of event time last five, long enough to be scraped mid-run
    run = processes.start(
        [*SENSORFLOW, "run", "--source", str(source), "--store", f"sqlite:///{tmp_path / 'm.db'}", "--metrics-port", "0",
         "--replay-speed", "2", "--progress-seconds", "0"],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )
    err = _Lines(run.stderr)
    port = wait_for(err.port, "the run says where its metrics are", timeout=120, alive=[run])
    assert port, err.text()

    def watermarks() -> dict | None:
        families = _scrape(port)
        seen = [_value(families, "sensorflow_partition_watermark_seconds", partition=p) for p in ("0", "1")]
        return families if all(v is not None and v > 0 for v in seen) and _value(families, "sensorflow_readings") else None

    families = wait_for(watermarks, "both partitions' watermarks", timeout=120, alive=[run])
    assert families, err.text()
    start = 1_767_225_600  # 2026-01-01T00:00:00Z
    for p in ("0", "1"):
        mark = _value(families, "sensorflow_partition_watermark_seconds", partition=p)
        assert start - 5 <= mark < start + 600, mark  # event time less the 5 s lateness
        lag = _value(families, "sensorflow_partition_event_time_lag_seconds", partition=p)
        assert lag > 0, lag  # the recording is from the past: its age
    _assert_standard(families)
    _assert_documented(families)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
        assert reply.status == 200
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 143, err.text()


def test_the_extra_gauges_of_a_live_run_have_their_own_help():
    board = SimpleNamespace(windows=SimpleNamespace(closed_through=T0), stored_skipped=3)
    checkpointer = SimpleNamespace(writes=5, failures=1)
    collector = RunCollector(RunStats(), {}, lambda: _board_figures(board, checkpointer))
    families = {f.name: f for f in collector.collect()}
    assert families["sensorflow_checkpoint_writes"].samples[0].value == 5
    assert families["sensorflow_committed_window_end_seconds"].samples[0].value == T0 / 1e9
    _assert_documented(families)


def _store(path: Path, sensors: int, windows: int, spike_at: int) -> str:
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        store.create_schema()
        add_windows(store, [(str(d), "1") for d in range(sensors)], T0 + W, windows, spike_at=spike_at)
    return url


def test_the_sidecar_serves_its_runs_and_sensors(tmp_path, processes):
    url = _store(tmp_path / "s.db", sensors=6, windows=240, spike_at=236)  # +40 sigma near the end: one incident each
    sidecar = processes.start(
        [*SENSORFLOW, "sidecar", "--store", url, "--model-store", str(tmp_path / "models"), "--interval-seconds", "1",
         "--task-processes", "1", "--chunk-size", "2", "--metrics-port", "0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    err = _Lines(sidecar.stderr)
    port = wait_for(err.port, "the sidecar says where its metrics are", timeout=120, alive=[sidecar])
    assert port, err.text()

    def scored_after_training() -> dict | None:
        families = _scrape(port)
        score_runs = _value(families, "sensorflow_sidecar_runs", kind="score", status="succeeded") or 0
        trained = _value(families, "sensorflow_sidecar_sensors", kind="train", outcome="ok")
        return families if trained and score_runs >= 2 and _value(families, "sensorflow_sidecar_incidents_opened") else None

    families = wait_for(scored_after_training, "a training and a score run that scored its models", timeout=240, alive=[sidecar])
    assert families, err.text()
    assert _value(families, "sensorflow_sidecar_sensors", kind="train", outcome="ok") == 6
    assert _value(families, "sensorflow_sidecar_sensors", kind="score", outcome="ok") >= 6
    assert _value(families, "sensorflow_sidecar_runs", kind="train", status="succeeded") >= 1
    count = [s.value for s in families["sensorflow_sidecar_run_seconds"].samples
             if s.name.endswith("_count") and s.labels["kind"] == "train"]
    assert count and count[0] >= 1
    assert _value(families, "sensorflow_sidecar_sensors", kind="train", outcome="failed") == 0
    assert _value(families, "sensorflow_sidecar_predictions") > 0
    assert _value(families, "sensorflow_sidecar_incidents_opened") == 6  # later runs see them as old ones
    assert _value(families, "sensorflow_sidecar_open_incidents") is not None
    _assert_standard(families)
    _assert_documented(families)
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(timeout=30) == 143, err.text()

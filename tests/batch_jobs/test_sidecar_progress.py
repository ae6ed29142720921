"""`sidecar --once` says what each phase is doing: tasks done / total (issue 17, trap 3: it was silent
for 4 minutes while training 10k sensors: its bar was shown on a terminal only)."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from sensorflow.batch_jobs.sidecar import PhaseProgress
from sensorflow.batch_jobs.tasks import SensorOutcome, TaskResult
from sensorflow.store import open_store
from tests.conftest import REPO
from tests.support.builders import T0, W, add_windows


def _result(sensors: int, failed: int = 0) -> TaskResult:
    outcomes = tuple(SensorOutcome(str(i), "1", "failed" if i < failed else "ok") for i in range(sensors))
    return TaskResult("t", "r", "train", outcomes, 0.1)


def test_a_phase_off_a_terminal_is_a_line_at_its_start_and_one_when_its_last_task_is_done():
    out = io.StringIO()
    progress = PhaseProgress("train", 3, 6, None, out, every_s=3600)  # no line in between: the hour never passes
    for failed in (0, 1, 0):
        progress.task_done(_result(2, failed))
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "sensorflow sidecar: train: 3 task(s) of 6 sensors started" and len(lines) == 2, lines
    assert re.fullmatch(r"sensorflow sidecar: train: 3/3 tasks done \(6/6 sensors, 1 failed\) in \d+ s", lines[1]), lines


def test_every_task_is_a_line_when_the_interval_allows():
    out = io.StringIO()
    progress = PhaseProgress("score", 2, 4, None, out, every_s=0)
    progress.task_done(_result(2))
    assert out.getvalue().splitlines()[-1].startswith("sensorflow sidecar: score: 1/2 tasks done (2/4 sensors, 0 failed)")


def test_progress_false_is_silent():
    out = io.StringIO()
    progress = PhaseProgress("train", 1, 2, False, out, every_s=0)
    progress.task_done(_result(2))
    assert out.getvalue() == ""


def test_sidecar_once_shows_each_phase(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        store.create_schema()
        add_windows(store, [(str(d), "1") for d in range(6)], T0 + W, 240)
    command = [sys.executable, "-m", "sensorflow", "sidecar", "--once", "--store", url, "--model-store",
               str(tmp_path / "models"), "--task-processes", "1", "--chunk-size", "2"]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "sensorflow sidecar: train: 3 task(s) of 6 sensors started\n" in first.stderr, first.stderr
    assert re.search(r"sensorflow sidecar: train: 3/3 tasks done \(6/6 sensors, 0 failed\) in \d+ s\n", first.stderr), first.stderr
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert re.search(r"sensorflow sidecar: score: 3/3 tasks done \(6/6 sensors, 0 failed\)", second.stderr), second.stderr

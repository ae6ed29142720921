"""`sidecar --once` says what each phase is doing: tasks done / total (issue 17, trap 3: it was silent
for 4 minutes while training 10k sensors: its bar was shown on a terminal only)."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import threading

from sensorflow.batch_jobs.sidecar import PhaseProgress
from sensorflow.batch_jobs.tasks import SensorOutcome, TaskResult
from sensorflow.store import open_store
from tests.conftest import REPO
from tests.support.builders import T0, W, add_windows
from tests.support.processes import wait_for


def _result(sensors: int, failed: int = 0) -> TaskResult:
    outcomes = tuple(SensorOutcome(str(i), "1", "failed" if i < failed else "ok") for i in range(sensors))
    return TaskResult("t", "r", "train", outcomes, 0.1)


def test_a_short_phase_adds_no_line_to_the_runs_report():
    out = io.StringIO()
    progress = PhaseProgress("train", 3, 6, None, out, every_s=3600)  # done long before the hour it waits
    for failed in (0, 1, 0):
        progress.task_done(_result(2, failed))
    progress.close()
    assert out.getvalue() == ""


def test_with_no_wait_every_task_is_a_line():
    out = io.StringIO()
    progress = PhaseProgress("score", 2, 4, None, out, every_s=0)
    progress.task_done(_result(2))
    progress.task_done(_result(2, failed=1))
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "sensorflow sidecar: score: 2 task(s) of 4 sensors", lines
    assert re.fullmatch(r"sensorflow sidecar: score: 1/2 tasks done \(2/4 sensors, 0 failed\) in \d+ s", lines[1]), lines
    assert re.fullmatch(r"sensorflow sidecar: score: 2/2 tasks done \(4/4 sensors, 1 failed\) in \d+ s", lines[2]), lines


def test_progress_false_is_silent():
    out = io.StringIO()
    progress = PhaseProgress("train", 1, 2, False, out, every_s=0)
    progress.task_done(_result(2))
    assert out.getvalue() == ""


class _Lines:
    """A child's stderr, read on a thread while it runs."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self.lines.extend, args=(stream,), daemon=True).start()

    def text(self) -> str:
        return "".join(list(self.lines))


def test_a_long_phase_says_what_it_is_doing_while_it_runs(tmp_path, processes):
    """9,000 sensors with the slowest detector: a training phase of tens of seconds (3,000 took 5-9 s once tasks
    got faster: too close to the 5 s before a phase says anything), silent on the old code."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        store.create_schema()
        add_windows(store, [(str(d), "1") for d in range(9000)], T0 + W, 720)
    sidecar = processes.start(
        [sys.executable, "-m", "sensorflow", "sidecar", "--once", "--store", url, "--model-store", str(tmp_path / "models"),
         "--detector", "seed-ocsvm", "--task-processes", "2", "--chunk-size", "20", "--train-seconds", "100000"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    err = _Lines(sidecar.stderr)
    said = wait_for(lambda: re.search(r"sensorflow sidecar: train: 450 task\(s\) of 9,000 sensors.*\n"
                                      r"(.|\n)*sensorflow sidecar: train: \d+/450 tasks done \([\d,]+/9,000 sensors, 0 failed\) in \d+ s\n",
                                      err.text()),
                    "the phase and its tasks done so far on stderr", timeout=300, alive=[sidecar])
    assert said, err.text()
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(timeout=30) == 143, err.text()

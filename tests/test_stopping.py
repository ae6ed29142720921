"""Ctrl-C and SIGTERM end `simulate` and `sidecar` with one line and the shell's status, leave nothing half-said.

- An interrupted `simulate` leaves its recording marked INCOMPLETE (no labels.json); `run` refuses to
  replay it (exit 2) unless given --allow-incomplete.
- SIGTERM stops a sidecar run in progress within 10 s (Kubernetes waits 30 s): exit 143, the run
  recorded as interrupted, its task workers gone; a SIGKILLed sidecar leaves no worker behind either.

Every moment to signal is chosen by progress (bytes written, a run recorded, workers started), never by
seconds; every process started goes through the ``processes`` registry, which ends it (and its group)
at teardown even when an assertion fails.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sensorflow.records.recordings import INCOMPLETE
from sensorflow.records.runs import RunStatus
from sensorflow.store import open_store
from tests.conftest import REPO
from tests.support.builders import T0, W, add_windows
from tests.support.processes import all_gone, descendants, wait_for

SENSORFLOW = [sys.executable, "-m", "sensorflow"]


def _start(processes, argv: list[str]) -> subprocess.Popen:
    return processes.start([*SENSORFLOW, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("signum", "status", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_an_interrupted_simulate_leaves_a_recording_that_run_refuses(tmp_path, processes, signum, status, name):
    rec = tmp_path / "rec"
    proc = _start(processes, ["simulate", "--out", str(rec), "--profile", "fleet", "--devices", "2000", "--tags", "10",
                   "--duration", "1h", "--start", "2026-01-01T00:00:00Z", "--seed", "3"])
    assert wait_for(lambda: any(p.stat().st_size > 0 for p in rec.glob("partition-*.jsonl")),
                    "simulate writes its first block", timeout=120, alive=[proc]), proc.stderr.read()[-2000:]
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == status, err
    # progress lines may come first (a phase started); the stop itself is one line, the last
    assert f"stopped by {name}" in err.splitlines()[-1] and "incomplete" in err.splitlines()[-1], err
    assert err.count("stopped by") == 1 and "Traceback" not in err, err
    assert (rec / INCOMPLETE).is_file() and not (rec / "labels.json").exists()

    store = f"sqlite:///{tmp_path / 'w.db'}"
    refused = subprocess.run([*SENSORFLOW, "run", "--source", str(rec), "--store", store, "--progress-seconds", "0"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "incomplete" in refused.stderr and "--allow-incomplete" in refused.stderr
    assert not (tmp_path / "w.db").exists()
    if signum == signal.SIGINT:  # once is enough: what is there replays when asked
        allowed = subprocess.run([*SENSORFLOW, "run", "--source", str(rec), "--store", store, "--progress-seconds", "0",
                                  "--allow-incomplete"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert allowed.returncode == 0, allowed.stderr
        with open_store(store) as s:
            assert s.summary().windows > 0


def test_a_finished_simulate_leaves_no_mark_and_force_clears_an_old_one(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / INCOMPLETE).write_text("left by an interrupted run\n")
    argv = [*SENSORFLOW, "simulate", "--out", str(rec), "--duration", "1m", "--start", "2026-01-01T00:00:00Z"]
    kept = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 2 and INCOMPLETE in kept.stderr, kept.stderr  # an old recording is not overwritten silently
    done = subprocess.run([*argv, "--force"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (rec / INCOMPLETE).exists() and (rec / "labels.json").is_file()


def _store_with_history(path: Path, sensors: int, windows: int) -> str:
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        store.create_schema()
        add_windows(store, [(str(d), "1") for d in range(sensors)], T0 + W, windows)
    return url


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in descendants(proc) if "python" in p.name().lower()]


def _sidecar(processes, url: str, models: Path) -> subprocess.Popen:
    # seed-ocsvm: the slowest detector, so a run lasts long enough to be stopped in the middle
    return _start(processes, ["sidecar", "--once", "--store", url, "--model-store", str(models), "--detector", "seed-ocsvm",
                   "--task-processes", "2", "--chunk-size", "20", "--train-seconds", "100000"])


def test_sigterm_stops_a_sidecar_run_in_progress(tmp_path, processes):
    url = _store_with_history(tmp_path / "s.db", sensors=3000, windows=720)
    proc = _sidecar(processes, url, tmp_path / "models")
    with open_store(url) as store:
        assert wait_for(lambda: any(r.status == RunStatus.RUNNING for r in store.read_runs()), "a run starts",
                        timeout=120, alive=[proc]), proc.stderr.read()[-2000:]
    workers = wait_for(lambda: _workers(proc), "task workers start", timeout=120, alive=[proc])
    assert workers, proc.stderr.read()[-2000:]
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    stopped_in = time.monotonic() - signalled
    assert proc.returncode == 143, err
    assert stopped_in < 10 and "stopped by SIGTERM" in err.splitlines()[-1], err
    with open_store(url) as store:
        runs = store.read_runs()
    train = [r for r in runs if r.kind == "train"]
    assert [r.status for r in train] == [RunStatus.INTERRUPTED] and "interrupted" in train[0].detail, runs
    assert not any(r.status == RunStatus.RUNNING for r in runs), runs  # nothing left looking alive
    wait_for(lambda: all_gone(workers), "the task workers end with the sidecar", timeout=10)


def test_a_killed_sidecar_leaves_no_task_worker(tmp_path, processes):
    url = _store_with_history(tmp_path / "s.db", sensors=3000, windows=720)
    proc = _sidecar(processes, url, tmp_path / "models")
    workers = wait_for(lambda: _workers(proc), "task workers start", timeout=120, alive=[proc])
    assert workers, proc.stderr.read()[-2000:]
    with open_store(url) as store:
        assert wait_for(lambda: any(r.status == RunStatus.RUNNING for r in store.read_runs()), "a run starts",
                        timeout=120, alive=[proc]), proc.stderr.read()[-2000:]
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: all_gone(workers), "the task workers die with their parent", timeout=10)


def test_a_child_whose_parent_died_before_it_looked_exits_at_once():
    """die_with_parent with a parent pid that is no longer its parent (it died while the child started up)."""
    code = "from sensorflow.lifecycle import die_with_parent; die_with_parent(parent=1 << 22); import time; time.sleep(60)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr

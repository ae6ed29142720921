"""A local cluster (``sensorflow run --processes 2``) ends cleanly whichever of its processes goes first
(issue 16): a child killed mid-run or before the cluster formed ends the run with one line naming it
(exit 1), SIGTERM and Ctrl-C stop every process (143, 130), a SIGKILLed run leaves no child behind,
and a rerun with the same recovery directory gives the uninterrupted table.

Every moment to act is chosen by progress (the child started, epochs committed, rows in the store),
never by seconds; every process goes through the ``processes`` registry, which ends it and its group
at teardown even when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, assert_uninterrupted
from tests.support.processes import all_gone, descendants, wait_for
from tests.support.progress import committed_epoch, sqlite_rows

ENDS_WITHIN = 30.0  # the run's own bounds are 5 s (grace) + 5 s (stopping the others); a busy machine is slower
STOP_SECONDS = 10.0  # the bound for SIGTERM / Ctrl-C (Kubernetes waits 30 s)


def _command(source: Path, db: Path, recovery: Path, replay_speed: float = 20) -> list[str]:
    # Paced (400 s of event time in about 20 s) with short epochs: a run lasts long enough to act on
    # it mid-run, and commits many epochs to choose the moment by.
    return [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{db}",
            "--processes", "2", "--recovery-dir", str(recovery), "--snapshot-interval-seconds", "0.2",
            "--block-bytes", "8192", "--progress-seconds", "0", "--replay-speed", str(replay_speed)]


def _children(run: subprocess.Popen) -> list[psutil.Process]:
    found = []
    for process in descendants(run):
        try:
            if "sensorflow.windowing.cluster_child" in process.cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def _mid_run(run: subprocess.Popen, db: Path, recovery: Path) -> None:
    """Wait until the cluster has formed and works: two committed epochs and rows in the store."""
    reached = wait_for(lambda: committed_epoch(recovery.glob("part-*.sqlite3")) >= 2 and sqlite_rows(db) > 0,
                       "two committed epochs and rows in the store", timeout=300, alive=[run])
    assert reached, f"the run ended first: {run.stderr.read().decode(errors='replace')[-2000:]}"


def _ended(run: subprocess.Popen, within: float, what: str) -> str:
    """stderr once ``run`` has exited; fails if it is still running ``within`` seconds after ``what``."""
    try:
        run.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run was still running {within:g} s after {what} (the teardown ends it)")
    return run.stderr.read().decode(errors="replace")


def _one_line(stderr: str) -> str:
    for noise in ("panicked", "Box<dyn Any>", "Traceback", "Fatal Python error", "PanicException"):
        assert noise not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _rerun_gives_the_uninterrupted_table(processes, source: Path, db: Path, recovery: Path, reference: Path) -> None:
    rerun = processes.start(_command(source, db, recovery, replay_speed=200), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    assert_uninterrupted(db, reference)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_child_killed_mid_run_ends_the_run_with_one_line_and_a_rerun_gives_the_uninterrupted_table(
    tmp_path: Path, recording, processes
):
    source, reference = recording
    db, recovery = tmp_path / "cluster.db", tmp_path / "recovery"
    run = processes.start(_command(source, db, recovery), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _mid_run(run, db, recovery)
    (child,) = _children(run)
    everything = descendants(run)
    child.kill()

    line = _one_line(_ended(run, ENDS_WITHIN, "its child was killed"))
    assert run.returncode == 1, line
    assert f"cluster process 1 (pid {child.pid}) was killed by SIGKILL" in line, line
    assert wait_for(lambda: all_gone(everything), "every process of the run ends", timeout=ENDS_WITHIN)
    _rerun_gives_the_uninterrupted_table(processes, source, db, recovery, reference)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_child_that_dies_before_the_cluster_forms_ends_the_run(tmp_path: Path, recording, processes):
    """Process 0 waits in Rust for its peer to connect, deaf to signals: it used to wait for ever."""
    source, _ = recording
    db, recovery = tmp_path / "cluster.db", tmp_path / "recovery"
    run = processes.start(_command(source, db, recovery), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children = wait_for(lambda: _children(run), "the cluster's child process starts", timeout=300, alive=[run], poll=0.01)
    assert children, f"the run ended first: {run.stderr.read().decode(errors='replace')[-2000:]}"
    everything = descendants(run)
    children[0].kill()  # at once: its interpreter is still starting, long before it could connect

    line = _one_line(_ended(run, ENDS_WITHIN, "its child was killed"))
    assert run.returncode == 1, line
    assert f"cluster process 1 (pid {children[0].pid}) was killed by SIGKILL" in line, line
    assert wait_for(lambda: all_gone(everything + descendants(run)), "every process of the run ends", timeout=ENDS_WITHIN)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("signum", "group", "status"),
    [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
    ids=["sigterm-to-process-0", "ctrl-c-to-the-group"],
)
def test_a_signal_stops_every_process_of_a_cluster_run(tmp_path: Path, recording, processes, signum, group, status):
    source, reference = recording
    db, recovery = tmp_path / "cluster.db", tmp_path / "recovery"
    run = processes.start(_command(source, db, recovery), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _mid_run(run, db, recovery)
    everything = descendants(run)
    assert _children(run)
    if group:
        os.killpg(run.pid, signum)  # the registry started it as the leader of its own group, as a terminal would
    else:
        run.send_signal(signum)

    name = signal.Signals(signum).name
    line = _one_line(_ended(run, STOP_SECONDS, name))
    assert run.returncode == status, line
    assert line.startswith(f"sensorflow run: stopped by {name}"), line
    assert wait_for(lambda: all_gone(everything), "every process of the run ends", timeout=STOP_SECONDS)
    if signum == signal.SIGTERM:  # once is enough: what was committed is resumed
        _rerun_gives_the_uninterrupted_table(processes, source, db, recovery, reference)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_cluster_run_leaves_no_process_behind(tmp_path: Path, recording, processes):
    source, _ = recording
    db, recovery = tmp_path / "cluster.db", tmp_path / "recovery"
    run = processes.start(_command(source, db, recovery), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _mid_run(run, db, recovery)
    everything = descendants(run)
    assert _children(run)
    run.kill()
    run.wait(ENDS_WITHIN)
    assert wait_for(lambda: all_gone(everything), "the children and writers end with process 0", timeout=ENDS_WITHIN)

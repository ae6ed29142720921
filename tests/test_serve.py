"""`sensorflow serve`: the dataflow and the sidecar in one command, stopped together (issue 17, trap 9).

Ctrl-C (SIGINT to `serve` alone, as a terminal's foreground group holds only it: the children have
sessions of their own) or SIGTERM stops both children: one line, exit 130 / 143, no process left.
A failing child stops the other; a SIGKILLed `serve` takes its children with it.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from sensorflow.records.runs import RunStatus
from sensorflow.store import open_store
from tests.conftest import REPO
from tests.support.processes import all_gone, descendants, wait_for
from tests.support.progress import sqlite_rows

SEED = REPO / "samples" / "seed"


def _serve(processes, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return processes.start(
        [sys.executable, "-m", "sensorflow", "serve", "--source", str(SEED), "--store", f"sqlite:///{tmp_path / 'serve.db'}",
         "--model-store", str(tmp_path / "models"), "--interval-seconds", "1", "--task-processes", "1",
         "--progress-seconds", "0", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _scored(db: Path) -> bool:
    """A score run that scored sensors (so the sidecar trained first) is in the store."""
    if not sqlite_rows(db, "Runs"):
        return False
    with open_store(f"sqlite:///{db}") as store:
        return any(r.kind == "score" and r.status == RunStatus.SUCCEEDED and r.sensors for r in store.read_runs())


@pytest.mark.parametrize(
    ("signum", "status", "name", "pace"),
    [(signal.SIGINT, 130, "SIGINT", ["--replay-speed", "20"]),  # stopped mid-replay: both children running
     (signal.SIGTERM, 143, "SIGTERM", [])],  # the replay has ended; the sidecar goes on until stopped
)
def test_serve_replays_scores_and_stops_both_with_one_line(tmp_path, processes, signum, status, name, pace):
    proc = _serve(processes, tmp_path, *pace)
    db = tmp_path / "serve.db"
    started = wait_for(lambda: _commands(proc) >= {"run", "sidecar"} and descendants(proc), "both children start",
                       timeout=120, alive=[proc])
    assert started, proc.communicate(timeout=30)
    children = list(started)
    if pace:  # mid-replay: windows written, the sidecar has run (what it can do with the first windows is its own matter)
        ready = lambda: sqlite_rows(db) and sqlite_rows(db, "Runs")  # noqa: E731
    else:
        ready = lambda: _scored(db)  # noqa: E731
    assert wait_for(ready, "the dataflow writes and the sidecar runs", timeout=300, alive=[proc]), proc.communicate(timeout=30)
    assert ("run" in _commands(proc)) == bool(pace)  # a paced replay is still running; the other has ended
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err
    last = err.splitlines()[-1]
    assert last.startswith(f"sensorflow serve: stopped by {name}: dataflow and sidecar stopped"), err
    assert err.count("stopped by") == 1 and "Traceback" not in err, err  # the children's own stop lines are not repeated
    if not pace:
        assert "sensorflow run: replayed 3 partition(s)" in out, out  # the dataflow's summary, when the replay ended
        assert "the dataflow has finished (its source ended); the sidecar keeps scoring" in err, err
    wait_for(lambda: all_gone(children), "the dataflow and the sidecar (and theirs) end with serve", timeout=10)
    with sqlite3.connect(db) as con:
        assert con.execute('SELECT COUNT(*) FROM "SensorValues"').fetchone()[0] > 0
        assert pace or con.execute('SELECT COUNT(*) FROM "Predictions"').fetchone()[0] > 0
        running = con.execute('SELECT COUNT(*) FROM "Runs" WHERE "Status" = ?', ("running",)).fetchone()[0]
    assert running == 0


def _commands(proc: subprocess.Popen) -> set[str]:
    """Which sensorflow commands run below ``proc``."""
    found = set()
    for child in descendants(proc):
        try:
            found.update(word for word in child.cmdline() if word in ("run", "sidecar"))
        except psutil.Error:
            continue
    return found


def test_the_metrics_port_variable_is_the_dataflows_alone(tmp_path, processes):
    """Both children inherit the environment; only the dataflow binds SENSORFLOW_METRICS_PORT (the sidecar has its flag)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SENSORFLOW_METRICS_PORT": str(port)}
    proc = processes.start(
        [sys.executable, "-m", "sensorflow", "serve", "--source", str(SEED), "--store", f"sqlite:///{tmp_path / 'serve.db'}",
         "--model-store", str(tmp_path / "models"), "--interval-seconds", "1", "--task-processes", "1",
         "--progress-seconds", "0", "--replay-speed", "20"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    db = tmp_path / "serve.db"
    assert wait_for(lambda: sqlite_rows(db, "Runs") >= 2 and _commands(proc) >= {"run", "sidecar"},
                    "the sidecar runs beside the dataflow", timeout=300, alive=[proc]), proc.communicate(timeout=30)

    def dataflow_metrics() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                return b"sensorflow_readings_total" in reply.read()  # the dataflow's
        except OSError:
            return False

    assert wait_for(dataflow_metrics, "the dataflow's metrics on the port", timeout=120, alive=[proc]), proc.communicate(timeout=30)
    assert sqlite_rows(db, "Runs") >= 2 and "sidecar" in _commands(proc)  # the sidecar is still there
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Address already in use" not in err, err


def test_a_failing_dataflow_stops_the_sidecar(tmp_path, processes):
    proc = processes.start(
        [sys.executable, "-m", "sensorflow", "serve", "--source", str(tmp_path / "missing"),
         "--store", f"sqlite:///{tmp_path / 'serve.db'}", "--model-store", str(tmp_path / "models")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "sensorflow run:" in err and "not found" in err, err  # the dataflow's own reason is shown
    assert err.splitlines()[-1] == "sensorflow serve: the run exited with status 1; the sidecar was stopped", err


def test_bad_settings_are_refused_before_anything_starts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sensorflow", "serve", "--source", str(SEED), "--store", "mysql://x"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "store" in done.stderr, done.stderr


def test_a_killed_serve_leaves_no_child(tmp_path, processes):
    proc = _serve(processes, tmp_path)
    assert wait_for(lambda: _commands(proc) >= {"run", "sidecar"}, "both children start", timeout=120, alive=[proc])
    children = descendants(proc)
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: all_gone(children), "the children die with serve", timeout=30)

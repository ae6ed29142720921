"""SIGTERM and SIGINT stop a live run within 10 s even when the Event Hub and the Blob account for its
checkpoints are gone, with one line and the shell's status, and leave no receiver or writer process;
a SIGKILLed live run leaves none either (issue 16, defects 4 and 5).

Each run gets an Azurite of its own (started through the process registry), so the test can take the
checkpoint account away without touching the session's. Moments are chosen by progress (committed
epochs, rows in the store, a connected receiver), never by seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import REPO
from tests.support.azurite import Azurite, _azurite_binary, free_port
from tests.support.processes import ProcessRegistry, all_gone, descendants, wait_for
from tests.support.progress import committed_epoch, sqlite_rows

STOP_SECONDS = 10.0  # the bound (Kubernetes waits 30 s before SIGKILL)


def _own_azurite(registry: ProcessRegistry, workdir: Path) -> tuple[Azurite, subprocess.Popen]:
    binary = _azurite_binary()
    if binary is None:
        pytest.skip("Azurite not installed: run `bash .ci/test-deps.sh` (npm install azurite@3 into .cache/azurite)")
    port = free_port()
    process = registry.start([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir),
                              "--skipApiVersionCheck", "--silent", "--loose"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    assert wait_for(listening, "Azurite listening", timeout=60, alive=[process]), "Azurite did not start"
    return Azurite(port), process


def _publish(broker, seconds: range) -> None:
    for partition in broker.partition_ids:
        broker.publish(partition, [
            orjson.dumps({"TS": f"2026-01-01T00:{s // 60 % 60:02d}:{s % 60:02d}Z", "Device": d, "Tag": 1, "Value": float(s)})
            for s in seconds for d in range(5)
        ])


def _start_live(registry: ProcessRegistry, broker, azurite: Azurite, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    db, recovery = tmp_path / "live.db", tmp_path / "recovery"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORFLOW_")}
    env.update(SENSORFLOW_EVENTHUB_CONNECTION_STRING=broker.connection_string,
               SENSORFLOW_CHECKPOINT_CONNECTION_STRING=azurite.connection_string)
    command = [sys.executable, "-m", "sensorflow", "run", "--source", "eventhubs", "--store", f"sqlite:///{db}",
               "--checkpoint-container", "signals", "--recovery-dir", str(recovery), "--progress-seconds", "0",
               "--snapshot-interval-seconds", "0.5"]
    run = registry.start(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return run, db, recovery


def _working(run: subprocess.Popen, db: Path, recovery: Path) -> None:
    """Wait until the live run has committed two epochs and written windows (its receivers are connected)."""
    reached = wait_for(lambda: committed_epoch(recovery.glob("part-*.sqlite3")) >= 2 and sqlite_rows(db) > 0,
                       "two committed epochs and windows in the store", timeout=300, alive=[run])
    assert reached, f"the live run ended first: {run.stderr.read().decode(errors='replace')[-3000:]}"


def _roles(children: list[psutil.Process]) -> set[str]:
    names = set()
    for child in children:
        command = " ".join(child.cmdline())
        names |= {role for role in ("sensorflow.ingest.eventhubs.child", "sensorflow.windowing.writer") if role in command}
    return names


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("signum", "group", "status"), [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
                         ids=["sigterm", "ctrl-c-to-the-group"])
def test_a_live_run_whose_hub_and_checkpoint_account_are_gone_stops_within_10_s(
    tmp_path: Path, eventhubs_broker, processes, signum: int, group: bool, status: int
):
    azurite, azurite_process = _own_azurite(processes, tmp_path / "azurite")
    _publish(eventhubs_broker, range(120))
    run, db, recovery = _start_live(processes, eventhubs_broker, azurite, tmp_path)
    _working(run, db, recovery)
    children = descendants(run)
    assert _roles(children) == {"sensorflow.ingest.eventhubs.child", "sensorflow.windowing.writer"}, children

    eventhubs_broker.stop()  # the namespace is gone: receivers back off and reconnect
    azurite_process.kill()  # and so is the checkpoint account: a checkpoint write hangs in the SDK's retries
    azurite_process.wait(30)
    signalled = time.monotonic()
    if group:
        os.killpg(run.pid, signum)  # a terminal's Ctrl-C reaches the whole group, the receivers and writer too
    else:
        run.send_signal(signum)  # what Kubernetes sends to the pod's process
    try:
        _, err = run.communicate(timeout=60)  # longer than the bound: a slow stop is measured, not cut short
    except subprocess.TimeoutExpired:
        pytest.fail(f"the live run was still running 60 s after {signal.Signals(signum).name}")
    stopped_in = time.monotonic() - signalled
    stderr = err.decode(errors="replace")
    print(f"{signal.Signals(signum).name}: exit {run.returncode} after {stopped_in:.2f} s")
    assert run.returncode == status, stderr[-3000:]
    assert stopped_in < STOP_SECONDS, stderr[-3000:]
    for noise in ("panicked", "Box<dyn Any>", "Traceback", "Fatal Python error"):
        assert noise not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(f"sensorflow run: stopped by {signal.Signals(signum).name}"), stderr[-3000:]
    assert wait_for(lambda: all_gone(children), "the receiver and writer processes end with the run", timeout=STOP_SECONDS)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sigkilled_live_run_leaves_no_receiver_or_writer(tmp_path: Path, eventhubs_broker, processes):
    azurite, _ = _own_azurite(processes, tmp_path / "azurite")
    _publish(eventhubs_broker, range(120))
    run, db, recovery = _start_live(processes, eventhubs_broker, azurite, tmp_path)
    _working(run, db, recovery)
    children = descendants(run)
    assert _roles(children) == {"sensorflow.ingest.eventhubs.child", "sensorflow.windowing.writer"}, children

    run.send_signal(signal.SIGKILL)  # the run alone: nothing may be left of it
    run.wait(60)
    killed = time.monotonic()
    assert wait_for(lambda: all_gone(children), "the receiver and writer processes end with their parent", timeout=60)
    gone_in = time.monotonic() - killed
    print(f"SIGKILL: receiver and writer gone {gone_in:.2f} s after the run")
    assert gone_in < STOP_SECONDS


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_live_run_whose_store_is_down_stops_within_10_s(tmp_path: Path, eventhubs_broker, processes, postgres_server,
                                                          postgres_odbc):
    """The graceful stop cannot commit (the store is inside its 120 s retry budget): it is interrupted after its
    grace period, and the run still exits 143 with one line within 10 s, leaving no child."""
    from tests.windowing.test_signals import _Outage, _pg_rows

    _publish(eventhubs_broker, range(120))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORFLOW_")}
    env["SENSORFLOW_EVENTHUB_CONNECTION_STRING"] = eventhubs_broker.connection_string
    recovery, log = tmp_path / "recovery", tmp_path / "run.log"
    command = [sys.executable, "-m", "sensorflow", "run", "--source", "eventhubs", "--store", f"postgresql+odbc:{postgres_odbc}",
               "--recovery-dir", str(recovery), "--progress-seconds", "0", "--snapshot-interval-seconds", "0.5"]
    with open(log, "wb") as stderr_file:  # a file: the test reads it while the run goes on
        run = processes.start(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file)
    reached = wait_for(lambda: committed_epoch(recovery.glob("part-*.sqlite3")) >= 2 and _pg_rows(postgres_odbc) > 0,
                       "two committed epochs and windows in the store", timeout=300, alive=[run])
    assert reached, f"the live run ended first: {log.read_text()[-3000:]}"
    children = descendants(run)
    with _Outage(postgres_server, postgres_odbc):
        _publish(eventhubs_broker, range(120, 240))  # new windows to write while the store is down
        wait_for(lambda: "transient error" in log.read_text(errors="replace"), "the run meeting the outage",
                 timeout=120, alive=[run])
        assert run.poll() is None, log.read_text()[-3000:]
        signalled = time.monotonic()
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail("the live run was still running 60 s after SIGTERM")
        stopped_in = time.monotonic() - signalled
    stderr = log.read_text(errors="replace")
    print(f"SIGTERM with the store down: exit {run.returncode} after {stopped_in:.2f} s")
    assert run.returncode == 143, stderr[-3000:]
    assert stopped_in < STOP_SECONDS, stderr[-3000:]
    for noise in ("panicked", "Box<dyn Any>", "Traceback", "Fatal Python error"):
        assert noise not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("sensorflow run: stopped by SIGTERM"), stderr[-3000:]
    assert wait_for(lambda: all_gone(children), "the receiver and writer processes end with the run", timeout=STOP_SECONDS)

"""On the real wire: simulator -> test broker (real producer) -> dataflow (real consumer, checkpoints on Azurite) -> SQLite.

Every table is checked against the pandas reference of exactly what the broker stored, in
partition order. A live run never ends its input, so the last windows stay open; each test
appends one sentinel reading an hour later to every partition, which closes every window
before it, and leaves the sentinel's own window out of the comparison.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from sensorflow.settings import RunSettings, load_settings
from sensorflow.windowing.stats import RunStats
from tests.conftest import dead_letters_frame, windows_frame
from tests.support.processes import ProcessRegistry, wait_for
from tests.support.progress import committed_epoch, resume_positions
from tests.support.window_reference import accepted_and_late, windows

S = 1_000_000_000
START = "2026-01-01T00:00:00Z"
SENTINEL_DEVICE = "sentinel"


def _readings(broker) -> pd.DataFrame:
    """Every reading the broker holds, per partition in sequence order (the reference's input)."""
    rows = []
    for partition in broker.partition_ids:
        for event in broker.events(partition):
            try:
                message = orjson.loads(event.body)
            except orjson.JSONDecodeError:
                continue
            for item in message if isinstance(message, list) else [message]:
                rows.append((partition, pd.Timestamp(item["TS"]).value, str(item["Device"]), str(item["Tag"]), float(item["Value"])))
    return pd.DataFrame(rows, columns=["partition", "ts", "device", "tag", "value"])


def _reference(broker) -> pd.DataFrame:
    readings = _readings(broker)
    accepted, _ = accepted_and_late(readings, 5 * S)
    return windows(accepted[accepted["device"] != SENTINEL_DEVICE].reset_index(drop=True), 5 * S)


def _close_every_window(broker) -> None:
    latest = max(_readings(broker)["ts"])
    ts = pd.Timestamp(latest + 3600 * S, tz="UTC").isoformat()
    for partition in broker.partition_ids:
        broker.publish(partition, [orjson.dumps({"TS": ts, "Device": SENTINEL_DEVICE, "Tag": 0, "Value": 0.0})])


def _assert_equal_windows(db: Path, expected: pd.DataFrame) -> None:
    got = windows_frame(db)
    got = got[got["Device"] != SENTINEL_DEVICE].reset_index(drop=True)
    assert len(got) == len(expected) > 0
    keys = ["TS", "Device", "Tag", "Count", "Min", "Max"]
    assert got[keys].equals(expected[keys].reset_index(drop=True).astype(got[keys].dtypes.to_dict()))
    np.testing.assert_allclose(got["Value"], expected["Value"], rtol=1e-9)


def _env(broker, azurite) -> dict[str, str]:
    return {
        **os.environ,
        "SENSORFLOW_EVENTHUB_CONNECTION_STRING": broker.connection_string,
        "SENSORFLOW_CHECKPOINT_CONNECTION_STRING": azurite.connection_string,
    }


def _simulate(broker, azurite, *options: str, wait: bool = True, registry: ProcessRegistry) -> subprocess.Popen:
    command = [sys.executable, "-m", "sensorflow", "simulate", "--to", "eventhubs", "--profile", "fleet",
               "--start", START, "--seed", "5", *options]
    process = registry.start(command, env=_env(broker, azurite), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
        assert orjson.loads(out.splitlines()[-1])["messages_failed"] == 0
    return process


def _run_command(db: Path, container: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "sensorflow", "--log-level", "INFO", "run", "--source", "eventhubs",
            "--store", f"sqlite:///{db}", "--checkpoint-container", container, "--progress-seconds", "0",
            "--snapshot-interval-seconds", "0.5", "--log-format", "json", *options]


def test_simulator_through_the_broker_into_sqlite_equals_the_reference(eventhubs_broker, azurite, tmp_path, processes):
    _simulate(eventhubs_broker, azurite, "--devices", "12", "--tags", "3", "--duration", "4m", "--pace", "fast",
              "--out-of-order", "0.03", "--max-delay", "12s", "--readings-per-message", "1", registry=processes)
    assert sum(len(eventhubs_broker.events(p)) for p in eventhubs_broker.partition_ids) == 12 * 3 * 240
    _close_every_window(eventhubs_broker)
    db = tmp_path / "live.db"
    run = processes.start(_run_command(db, "e2e-plain", "--stop-after-idle-seconds", "3"),
                          env=_env(eventhubs_broker, azurite), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr.decode()[-3000:]
    _assert_equal_windows(db, _reference(eventhubs_broker))
    readings = _readings(eventhubs_broker)
    _, late = accepted_and_late(readings, 5 * S)
    dead = dead_letters_frame(db)
    assert len(late) > 0 and len(dead[dead["Reason"] == "late"]) == len(late)
    assert "consumed 4 partition(s)" in stdout.decode()


def _json_lines(stderr: bytes) -> list[dict]:
    out = []
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    return out


def _kill_moment(rng: random.Random, attempt: int, broker, sender: subprocess.Popen, recovery: Path, azurite, container: str):
    """When to SIGKILL this attempt: by what it has done, never by the clock (which a busy machine stretches).

    k more epochs committed and, while the simulator still sends, n more events delivered to
    it; before the recovery volume is lost (attempt 1), a resume blob past the start of a
    partition, so the start after the loss has Blob checkpoints to begin from.
    """
    parts = lambda: committed_epoch(recovery.glob("part-*.sqlite3"))  # noqa: E731
    epoch, delivered = parts() + rng.randint(2, 8), broker.delivered + rng.randint(150, 600)

    def reached() -> bool:
        if parts() < epoch or (sender.poll() is None and broker.delivered < delivered):
            return False
        return attempt != 1 or any(p > 0 for p in resume_positions(azurite.connection_string, container).values())

    return f"epoch {epoch} and {delivered:,} events delivered", reached


@pytest.mark.slow
@pytest.mark.timeout(900)  # a bound for a stuck run only: the kills wait on progress
def test_sigkill_mid_stream_and_restarts_with_and_without_recovery_state_give_the_reference_table(
    eventhubs_broker, azurite, tmp_path, processes
):
    # A live stream: the simulator sends in real time while the dataflow is killed and restarted.
    sender = _simulate(eventhubs_broker, azurite, "--devices", "10", "--tags", "3", "--duration", "40s",
                       "--rate", "4", "--pace", "realtime", "--out-of-order", "0.02", "--max-delay", "9s",
                       "--readings-per-message", "1", wait=False, registry=processes)
    db, recovery = tmp_path / "live.db", tmp_path / "recovery"
    command = _run_command(db, "e2e-kill", "--recovery-dir", str(recovery))
    env = _env(eventhubs_broker, azurite)
    rng = random.Random(7)
    starts = []
    for attempt in range(4):
        process = processes.start(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
        reader.start()
        # Started reading: a slow start-up on a busy machine must not be mistaken for a crash.
        wait_for(lambda: any(b"starts at" in line for line in list(lines)), f"attempt {attempt} to start reading",
                 timeout=300, alive=[process])
        what, reached = _kill_moment(rng, attempt, eventhubs_broker, sender, recovery, azurite, "e2e-kill")
        wait_for(reached, f"attempt {attempt}: {what}", timeout=300, alive=[process], poll=0.1)
        assert process.poll() is None, b"".join(lines).decode(errors="replace")[-3000:]  # a live run does not end by itself
        process.send_signal(signal.SIGKILL)
        process.wait(60)
        reader.join(60)
        starts.append(_json_lines(b"".join(lines)))
        if attempt == 1:
            shutil.rmtree(recovery)  # the recovery volume is lost: the next start uses the Blob checkpoints
        time.sleep(2)  # the experiment, not a wait: event time, not wall time, decides what is late
    out, err = sender.communicate(timeout=300)
    assert sender.returncode == 0, err.decode()[-2000:]
    _close_every_window(eventhubs_broker)
    final = processes.start(command + ["--stop-after-idle-seconds", "3"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()[-3000:]

    _assert_equal_windows(db, _reference(eventhubs_broker))
    messages = [[r["message"] for r in lines] for lines in starts]
    blob_start = next(m for m in messages[2] if "from Blob checkpoints" in m)
    assert max(int(n) for n in re.findall(r": (\d+)", blob_start)) > 0, blob_start  # not from the beginning
    assert any("Bytewax recovery state" in m for m in messages[1]), messages[1]
    dead = dead_letters_frame(db)
    assert set(dead["Reason"]) <= {"late"}


def test_a_sensor_seen_on_two_partitions_is_windowed_once(eventhubs_broker, azurite, tmp_path):
    base = pd.Timestamp(START).value
    for partition, offset in (("0", 0.0), ("1", 0.5)):
        bodies = [orjson.dumps({"TS": pd.Timestamp(base + int((i + offset) * S), tz="UTC").isoformat(),
                                "Device": 7, "Tag": 1, "Value": float(i) + offset}) for i in range(60)]
        eventhubs_broker.publish(partition, bodies)
    _close_every_window(eventhubs_broker)
    db = tmp_path / "two.db"
    settings = load_settings(RunSettings, {
        "source": "eventhubs", "eventhub_connection_string": eventhubs_broker.connection_string,
        "store": f"sqlite:///{db}", "checkpoint_connection_string": azurite.connection_string,
        "checkpoint_container": "e2e-two", "stop_after_idle_seconds": 2, "progress_seconds": 0,
    })
    from sensorflow.assembly import run_live

    run_live(settings)
    got = windows_frame(db)
    got = got[got["Device"] == "7"]
    assert got["Count"].tolist() == [10] * 12  # 5 readings from each partition in every 5 s window
    _assert_equal_windows(db, _reference(eventhubs_broker))


def test_an_idle_partition_does_not_stall_windows_beyond_the_idle_timeout(eventhubs_broker, azurite, tmp_path):
    from sensorflow.assembly import run_live

    db = tmp_path / "idle.db"
    settings = load_settings(RunSettings, {
        "source": "eventhubs", "eventhub_connection_string": eventhubs_broker.connection_string,
        "store": f"sqlite:///{db}", "idle_timeout_seconds": 1.5, "max_runtime_seconds": 600,
        "progress_seconds": 0, "snapshot_interval_seconds": 0.5, "writer": "inline",
    })
    base = pd.Timestamp(START).value
    body = [orjson.dumps({"TS": pd.Timestamp(base + i * S, tz="UTC").isoformat(), "Device": 1, "Tag": 1, "Value": 1.0})
            for i in range(60)]
    eventhubs_broker.publish("0", body)  # partitions 1, 2, 3 stay silent
    stats, stop = RunStats(), threading.Event()
    runner = threading.Thread(target=run_live, args=(settings,), kwargs={"stats": stats, "stop_event": stop}, daemon=True)
    runner.start()
    try:
        # Start-up (processes, connections) is not counted: the idle clock starts with the first reading.
        wait_for(lambda: stats.readings > 0, "the first reading decoded", timeout=300)
        decoded = time.monotonic()
        wait_for(lambda: db.exists() and not windows_frame(db).empty, "the first window written", timeout=300, poll=0.1)
        stalled_for = time.monotonic() - decoded
        # What this test measures is wall time by design (the idle timeout is wall time). A partition
        # never heard from starts its idle clock when the first partition is heard from, so windows
        # wait at most twice the idle timeout, plus the 1 s write gathering (and slack for a busy CI box).
        assert stalled_for < 1.5 * 2 + 1 + 2
        # A silent partition wakes up with readings of windows already written: they are late.
        eventhubs_broker.publish("2", [orjson.dumps({"TS": pd.Timestamp(base + 3 * S, tz="UTC").isoformat(),
                                                     "Device": 1, "Tag": 1, "Value": 99.0})])
        wait_for(lambda: not dead_letters_frame(db).empty, "the late reading's dead letter", timeout=300, poll=0.1)
    finally:
        stop.set()  # the run stops gracefully (its receiver process with it), pass or fail
        runner.join(120)
    assert not runner.is_alive()
    dead = dead_letters_frame(db)
    assert dead["Reason"].tolist() == ["late: window already closed"] and dead["Partition"].tolist() == ["2"]
    assert windows_frame(db)["Max"].max() == 1.0

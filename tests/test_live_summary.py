"""A live run that stops prints its final summary: the windows still open, not written, and where the
next start rebuilds them from (issue 17, trap 5).

On the test broker (the real AMQP consumer). Each partition carries its own sensor, one reading a
second for a minute: with the default 5 s windows and 5 s lateness every partition's watermark ends
at 00:00:54, so the windows ending up to 00:00:50 are written (10 per sensor) and the two ending at
00:00:55 and 00:01:00 stay open. Moments are chosen by progress (committed epochs, rows in the
store), never by seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, windows_frame
from tests.support.processes import ProcessRegistry, wait_for
from tests.support.progress import committed_epoch, sqlite_rows

WRITTEN_PER_SENSOR, OPEN_PER_SENSOR = 10, 2


def _publish(broker, seconds: range, device: str | None = None) -> None:
    for partition in broker.partition_ids:
        broker.publish(partition, [
            orjson.dumps({"TS": f"2026-01-01T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z",
                          "Device": device or f"d{partition}", "Tag": 1, "Value": float(s)})
            for s in seconds
        ])


def _start(registry: ProcessRegistry, broker, db: Path, recovery: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "sensorflow", "run", "--source", "eventhubs", "--store", f"sqlite:///{db}",
               "--recovery-dir", str(recovery), "--progress-seconds", "0", "--snapshot-interval-seconds", "0.5",
               *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORFLOW_")}
    env["SENSORFLOW_EVENTHUB_CONNECTION_STRING"] = broker.connection_string
    return registry.start(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _open_line(recovery: Path, sensors: int) -> str:
    return (
        f"  open:   {OPEN_PER_SENSOR * sensors} window rows still open, not written "
        "(window ends 2026-01-01 00:00:55.000 .. 2026-01-01 00:01:00.000); "
        f"the next start rebuilds them from the recovery state in {recovery} (the same --recovery-dir)"
    )


@pytest.mark.timeout(600)
def test_a_run_stopped_by_a_quiet_hub_says_which_windows_are_open_and_the_next_start_writes_them(
    eventhubs_broker, tmp_path: Path, processes
):
    _publish(eventhubs_broker, range(60))
    sensors = len(eventhubs_broker.partition_ids)
    db, recovery = tmp_path / "live.db", tmp_path / "recovery"
    run = _start(processes, eventhubs_broker, db, recovery, "--stop-after-idle-seconds", "2")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    assert len(windows_frame(db)) == WRITTEN_PER_SENSOR * sensors
    lines = out.splitlines()
    assert lines[0].startswith(f"sensorflow run: consumed {sensors} partition(s) of event hub 'hub' on 127.0.0.1 in ")
    assert lines[0].endswith("(stopped: no event for 2 s)"), out
    assert _open_line(recovery, sensors) in lines, out

    # The next start rebuilds them from the recovery state: readings an hour later close them.
    _publish(eventhubs_broker, range(3600, 3601), device="sentinel")
    again = _start(processes, eventhubs_broker, db, recovery, "--stop-after-idle-seconds", "2")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    frame = windows_frame(db)
    written = frame[frame["Device"] != "sentinel"]
    assert len(written) == (WRITTEN_PER_SENSOR + OPEN_PER_SENSOR) * sensors
    assert set(written["Count"]) == {5}  # the open windows kept the readings of the first run
    assert any(line.startswith("  open:   1 window rows still open") for line in out.splitlines()), out  # the sentinel's


@pytest.mark.timeout(600)
def test_a_run_stopped_by_sigterm_prints_its_summary_before_its_stop_line(eventhubs_broker, tmp_path: Path, processes):
    _publish(eventhubs_broker, range(60))
    sensors = len(eventhubs_broker.partition_ids)
    db, recovery = tmp_path / "live.db", tmp_path / "recovery"
    run = _start(processes, eventhubs_broker, db, recovery)
    reached = wait_for(lambda: sqlite_rows(db) == WRITTEN_PER_SENSOR * sensors
                       and committed_epoch(recovery.glob("part-*.sqlite3")) >= 2,
                       "the closable windows written and two epochs committed", timeout=300, alive=[run])
    assert reached, f"the live run ended first: {run.stderr.read()[-3000:]}"
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 143, err[-3000:]
    lines = out.splitlines()
    assert lines[0].endswith("(stopped: SIGTERM)"), out
    assert _open_line(recovery, sensors) in lines, out
    assert any(line.startswith(f"  store:  {WRITTEN_PER_SENSOR * sensors} window rows") for line in lines), out
    assert err.strip().splitlines()[-1].startswith("sensorflow run: stopped by SIGTERM"), err[-3000:]

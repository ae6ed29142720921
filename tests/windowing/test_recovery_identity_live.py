"""Live runs refuse Bytewax recovery state made from another hub, consumer group or input (issue 16, defect 1).

On the test broker (the real AMQP consumer). Before identities, a live run applied whatever state
the directory held: another consumer group's sequence numbers, or a replay's byte offsets and
end-of-input watermark, to this hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import REPO, windows_frame


def _publish(broker, seconds: int) -> None:
    for partition in broker.partition_ids:
        bodies = [orjson.dumps({"TS": f"2026-01-01T00:{s // 60:02d}:{s % 60:02d}Z", "Device": f"d{partition}", "Tag": 1,
                                "Value": float(s)}) for s in range(seconds)]
        broker.publish(partition, bodies)


def _live(broker, db: Path, recovery: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sensorflow", "run", "--source", "eventhubs", "--store", f"sqlite:///{db}",
               "--recovery-dir", str(recovery), "--progress-seconds", "0", "--snapshot-interval-seconds", "0.5",
               "--stop-after-idle-seconds", "2", *options]
    env = {**os.environ, "SENSORFLOW_EVENTHUB_CONNECTION_STRING": broker.connection_string}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def test_live_state_is_resumed_by_its_consumer_group_and_refused_by_another(eventhubs_broker, tmp_path: Path):
    _publish(eventhubs_broker, 60)
    db, recovery = tmp_path / "live.db", tmp_path / "recovery"
    first = _live(eventhubs_broker, db, recovery)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(windows_frame(db)) > 0

    refused = _live(eventhubs_broker, db, recovery, "--consumer-group", "audit")
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    assert refused.stderr.strip() == (
        f"sensorflow run: recovery state in {recovery} belongs to another run (input event hub 'hub' on 127.0.0.1, "
        "consumer group '$default' -> event hub 'hub' on 127.0.0.1, consumer group 'audit'): resume it with the same "
        "input, store and window settings, rerun with --fresh to start over, or use another --recovery-dir"
    )

    _publish(eventhubs_broker, 60)
    again = _live(eventhubs_broker, db, recovery)  # its own group: resumed, not refused
    assert again.returncode == 0, again.stderr[-3000:]


def test_a_replays_state_is_refused_by_a_live_run(eventhubs_broker, tmp_path: Path):
    recovery = tmp_path / "recovery"
    replay = subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(REPO / "samples" / "seed"), "--store",
         f"sqlite:///{tmp_path}/s.db", "--recovery-dir", str(recovery), "--progress-seconds", "0"],
        capture_output=True, text=True, timeout=180,
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    refused = _live(eventhubs_broker, tmp_path / "s.db", recovery)
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    assert "belongs to another run (input a recording of 3 partition(s) -> event hub 'hub' on 127.0.0.1, " \
           "consumer group '$default')" in refused.stderr

"""Receivers back off while the Event Hubs endpoint is unreachable (issue 16, defect 3).

A receiver process (the real ``sensorflow.ingest.eventhubs.child``, the real SDK) receives a
partition from a closed local port. Its ``connect()`` calls are counted inside that process by a
Python audit hook (``socket.connect`` events) installed through ``sitecustomize`` on its
``PYTHONPATH``: the SDK's pure-Python AMQP transport opens every connection through it. Before
the fix the child made ~5,000 connects per second for as long as it ran.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

pytest.importorskip("azure.eventhub", reason="azure-eventhub not installed: pip install 'sensorflow[azure]'")

from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions  # noqa: E402
from sensorflow.ingest.eventhubs.host import ReceiverHost  # noqa: E402
from sensorflow.ingest.eventhubs.receiver import PartitionStatus  # noqa: E402

WARM_UP_SECONDS = 10.0
MEASURE_SECONDS = 15.0
MAX_CONNECTS_PER_SECOND = 2.0

_COUNTER = '''
import os, sys, time
_path = os.environ.get("SENSORFLOW_TEST_CONNECT_LOG")
if _path:
    def _count(event, args, _path=_path):
        if event == "socket.connect":
            with open(_path, "a") as log:
                log.write(f"{os.getpid()} {time.monotonic()}\\n")
    sys.addaudithook(_count)
'''


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when this returns: connecting to it is refused


def _connects(log: Path) -> list[float]:
    if not log.exists():
        return []
    return [float(line.split()[1]) for line in log.read_text().splitlines() if line.strip()]


def test_a_receiver_of_an_unreachable_endpoint_connects_at_most_twice_a_second_after_10_s(tmp_path, monkeypatch):
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_COUNTER)
    log = tmp_path / "connects.log"
    monkeypatch.setenv("PYTHONPATH", str(hook_dir))
    monkeypatch.setenv("SENSORFLOW_TEST_CONNECT_LOG", str(log))
    connection = EventHubsConnection(connection_string=SecretStr(
        f"Endpoint=sb://127.0.0.1:{_closed_port()};SharedAccessKeyName=k;SharedAccessKey=x;EntityPath=hub;"
        "UseDevelopmentEmulator=true"
    ))
    status = PartitionStatus("0")
    host = ReceiverHost(connection, ReceiveOptions(lag_poll_seconds=0))
    try:
        host.start("0", None, status)
        started = time.monotonic()
        deadline = started + 60
        while not _connects(log) and time.monotonic() < deadline:  # the child has started and tried
            time.sleep(0.05)
        assert _connects(log), "no connect() was seen: the audit hook did not load in the receiver process"
        end = started + WARM_UP_SECONDS + MEASURE_SECONDS
        connected_seen = False
        while time.monotonic() < end:  # the measurement window itself; the receiver must stay disconnected
            connected_seen |= status.connected
            time.sleep(0.1)
        times = _connects(log)
    finally:
        host.close()
    late = [t for t in times if started + WARM_UP_SECONDS <= t <= end]
    rate = len(late) / MEASURE_SECONDS
    print(f"connects: {len(times)} in all, {len(late)} in the {MEASURE_SECONDS:.0f} s after the first "
          f"{WARM_UP_SECONDS:.0f} s ({rate:.2f}/s); reconnects counted: {status.reconnects}")
    assert rate <= MAX_CONNECTS_PER_SECOND
    assert not connected_seen  # /readyz reads this: false while disconnected
    assert status.reconnects >= 2  # the reconnect counter (sensorflow_partition_reconnects) grows
    assert status.last_error is not None and "NotConnected" in status.last_error

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


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def _wait_for(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s")


def _reconnects(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("sensorflow_partition_reconnects_total{"))


@pytest.mark.slow
def test_a_live_run_whose_namespace_goes_away_is_not_ready_counts_reconnects_and_backs_off(tmp_path, processes):
    """The issue's case end to end: `sensorflow run --source eventhubs`, then the AMQP endpoint disappears."""
    import re
    import subprocess
    import sys
    import threading

    import psutil

    from tests.conftest import REPO
    from tests.support.eventhubs_broker import EventHubsBroker

    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_COUNTER)
    log = tmp_path / "connects.log"
    broker = EventHubsBroker().start()
    env = {**__import__("os").environ, "PYTHONPATH": str(hook_dir), "SENSORFLOW_TEST_CONNECT_LOG": str(log),
           "SENSORFLOW_EVENTHUB_CONNECTION_STRING": broker.connection_string}
    run = processes.start(
        [sys.executable, "-m", "sensorflow", "run", "--source", "eventhubs", "--store", f"sqlite:///{tmp_path / 'live.db'}",
         "--metrics-port", "0", "--progress-seconds", "0", "--writer", "inline"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stderr), daemon=True)
    reader.start()
    child = None
    try:
        port = _wait_for(lambda: next((m.group(1) for m in map(re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/").search, list(lines)) if m), None),
                         120, "the metrics server")
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _get(base + "/readyz")[0] == 200, 120, "ready while the broker is up")
        child = _wait_for(lambda: next((p for p in psutil.Process(run.pid).children()
                                        if "sensorflow.ingest.eventhubs.child" in " ".join(p.cmdline())), None), 30, "the receiver process")
        broker.stop()  # the namespace is gone: its port refuses connections
        gone = time.monotonic()
        status, reason = _wait_for(lambda: (r := _get(base + "/readyz"))[0] == 503 and r, 60, "not ready after the broker left")
        assert "not connected" in reason, reason
        _wait_for(lambda: _reconnects(_get(base + "/metrics")[1]) >= 4, 60, "a reconnect per partition counted")
        end = gone + WARM_UP_SECONDS + MEASURE_SECONDS
        while time.monotonic() < end:  # the measurement window
            assert run.poll() is None, "".join(lines)[-3000:]
            assert _get(base + "/readyz")[0] == 503
            time.sleep(0.5)
        times = [float(t) for pid, t in (line.split() for line in log.read_text().splitlines()) if int(pid) == child.pid]
        late = [t for t in times if gone + WARM_UP_SECONDS <= t <= end]
        rate = len(late) / MEASURE_SECONDS
        print(f"receiver process: {len(late)} connects in the {MEASURE_SECONDS:.0f} s after the first "
              f"{WARM_UP_SECONDS:.0f} s without the broker ({rate:.2f}/s, 4 partitions)")
        assert rate <= MAX_CONNECTS_PER_SECOND
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if child is not None:  # it ends with its stdin; never leave it behind if it did not
            try:
                child.wait(10)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        broker.stop()

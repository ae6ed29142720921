"""The live service: /metrics, /healthz and /readyz, JSON log lines, graceful stops (waits end as soon as the stop is set)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from sensorflow.ingest.eventhubs.receiver import PartitionStatus
from sensorflow.windowing.service import JsonFormatter, MetricsServer, RunCollector, StopSignal, configure_logging
from sensorflow.windowing.stats import RunStats

S = 1_000_000_000


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_health_and_readiness_endpoints():
    import pyarrow as pa

    stats = RunStats()
    stats.add_decoded(10, 12, 11)
    stats.add_dead_letters(2, pa.array(["late", "bad_json"]))
    stats.observe_write(0.02)
    status = {"0": PartitionStatus("0", last_sequence=41, last_enqueued_ns=time.time_ns() - 2 * S, hub_last_sequence=50)}
    readiness = {"ok": (False, "partitions not connected: 0")}
    with MetricsServer(RunCollector(stats, status), lambda: readiness["ok"], port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        code, text = _get(base + "/metrics")
        assert code == 200
        for line in ('sensorflow_readings_total 11.0', 'sensorflow_dead_letters_total{reason="late"} 1.0',
                     'sensorflow_partition_last_sequence_number{partition="0"} 41.0',
                     'sensorflow_partition_events_behind{partition="0"} 9.0', "sensorflow_store_write_seconds_count 1.0"):
            assert line in text
        lag = float(next(ln for ln in text.splitlines() if ln.startswith("sensorflow_partition_enqueued_lag_seconds")).split()[-1])
        assert 1.5 < lag < 60
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz") == (503, "partitions not connected: 0\n")
        readiness["ok"] = (True, "ready")
        assert _get(base + "/readyz")[0] == 200


def test_json_log_lines_name_partition_and_position():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    try:
        logger.warning("receiver failed", extra={"partition": "3", "position": 17})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert (line["level"], line["message"], line["partition"], line["position"]) == ("WARNING", "receiver failed", "3", 17)


def test_a_max_runtime_stops_with_its_reason():
    stop = StopSignal(max_runtime=0.3)
    with stop:
        assert stop.event.wait(30)
    assert stop.reason == "max runtime 0.3 s reached"


def test_a_quiet_hub_stops_only_once_every_receiver_is_connected_and_no_event_came():
    events = {"count": 0}
    connected = threading.Event()
    stop = StopSignal(idle_seconds=0.4)
    stop.attach_activity(lambda: events["count"], connected.is_set)
    with stop:
        assert not stop.event.wait(1.0)  # not connected yet: the quiet clock does not run
        connected.set()
        assert stop.event.wait(30)
    assert stop.reason == "no event for 0.4 s"


def test_sigterm_sets_the_stop_once_and_the_previous_handler_comes_back():
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopSignal()
    with stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(30)
        stop.stop("later reason")  # the first reason stays
    assert stop.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_an_idle_stop_needs_an_activity_counter():
    with pytest.raises(ValueError, match="needs an activity counter"):
        with StopSignal(idle_seconds=1):
            pass


def test_configure_logging_writes_json_lines_and_quiets_the_sdks(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        logging.getLogger("sensorflow.test").info("hello", extra={"partition": "2"})
        logging.getLogger("azure.eventhub").info("a link opened")
        assert logging.getLogger("azure").level == logging.WARNING
    finally:
        root.handlers[:], root.level = handlers, level
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(d["logger"], d["message"], d.get("partition")) for d in lines] == [("sensorflow.test", "hello", "2")]

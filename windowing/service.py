"""What makes the live dataflow a service: /metrics, /healthz, /readyz, JSON logs, graceful stops.

* :class:`RunCollector` gives a run's Prometheus metrics, read from its counters at scrape time
  (the dataflow pays nothing per reading); ``sensorflow.exposition.MetricsServer`` serves them with
  the standard process and platform collectors and the build info, with ``/healthz`` (the process
  answers) and ``/readyz`` (a live run: every partition's receiver is connected, the store
  answers, checkpoints are being written; a replay: always).
* :class:`JsonFormatter` writes one JSON object per log line; ``partition`` and ``position``
  given as ``extra`` become fields, so every receiver error names where it happened.
* :class:`StopSignal` turns SIGTERM (Kubernetes stopping the pod), a max runtime or a quiet hub
  into one event the source checks: the dataflow finishes its batch, snapshots and checkpoints.
  A live run leaves the signals to ``sensorflow.windowing.interrupts``, which bounds that stop.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sensorflow.exposition import MetricsServer
from sensorflow.ingest.eventhubs.receiver import PartitionStatus
from sensorflow.logfields import record_extra
from sensorflow.records.windows import END_OF_TIME
from sensorflow.windowing.stats import WRITE_BUCKETS, RunStats

__all__ = ["JsonFormatter", "MetricsServer", "RunCollector", "StopSignal", "configure_logging"]

log = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, any ``extra`` fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(record_extra(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


JsonFormatter.converter = time.gmtime


def configure_logging(level: str, fmt: str) -> None:
    """Root logging to stderr as ``text`` or ``json``; replaces handlers set earlier."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("azure").setLevel(max(logging.WARNING, root.level))  # the SDKs log every link at INFO


Figures = dict[str, tuple[str, float]]
"""Extra gauges of a run: name (without ``sensorflow_``) -> (help text, value)."""


class RunCollector:
    """Prometheus metrics of one run (live or replay), read from its counters when scraped.

    ``partitions``: a live run's receivers (empty for a replay); ``extra``: more gauges, each with its help text.
    """

    def __init__(self, stats: RunStats, partitions: Mapping[str, PartitionStatus], extra: Callable[[], Figures] | None = None):
        self._stats = stats
        self._partitions = partitions
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield CounterMetricFamily("sensorflow_messages", "Messages read", value=stats.messages)
        yield CounterMetricFamily("sensorflow_readings", "Readings decoded (valid)", value=stats.readings)
        yield CounterMetricFamily("sensorflow_elements", "Elements seen (readings + malformed)", value=stats.elements)
        yield CounterMetricFamily("sensorflow_windows_written", "Window rows committed to the store", value=stats.windows_written)
        yield CounterMetricFamily("sensorflow_late_readings", "Readings refused as late", value=stats.late_readings)
        dead = CounterMetricFamily("sensorflow_dead_letters", "Dead letters written, by reason code", labels=["reason"])
        for reason, count in sorted(dict(stats.dead_letters_by_reason).items()):
            dead.add_metric([reason], count)
        yield dead
        buckets, total = list(stats.write_buckets), stats.write_seconds
        cumulative, running = [], 0
        for bound, count in zip([*map(str, WRITE_BUCKETS), "+Inf"], buckets):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(
            "sensorflow_store_write_seconds", "Seconds from handing a batch to the store until it is committed",
            buckets=cumulative, sum_value=total,
        )
        now_ns = time.time_ns()
        last = GaugeMetricFamily("sensorflow_partition_last_sequence_number", "Last sequence number read", labels=["partition"])
        lag = GaugeMetricFamily("sensorflow_partition_enqueued_lag_seconds", "Wall time minus enqueued time of the last event read", labels=["partition"])
        behind = GaugeMetricFamily("sensorflow_partition_events_behind", "Events enqueued but not read yet", labels=["partition"])
        up = GaugeMetricFamily("sensorflow_partition_connected", "1 if the partition's receiver is connected", labels=["partition"])
        reconnects = CounterMetricFamily("sensorflow_partition_reconnects", "Receiver reconnects", labels=["partition"])
        for pid, status in sorted(self._partitions.items()):
            if status.last_sequence is not None:
                last.add_metric([pid], status.last_sequence)
            if status.last_enqueued_ns is not None:
                lag.add_metric([pid], max(0.0, (now_ns - status.last_enqueued_ns) / 1e9))
            if status.behind is not None:
                behind.add_metric([pid], status.behind)
            up.add_metric([pid], 1.0 if status.connected else 0.0)
            reconnects.add_metric([pid], status.reconnects)
        yield from (last, lag, behind, up, reconnects)
        yield from _event_time(dict(stats.partition_times), now_ns)
        for name, (help_text, value) in (self._extra() if self._extra else {}).items():
            yield GaugeMetricFamily(f"sensorflow_{name}", help_text, value=value)


def _event_time(times: Mapping[str, tuple[int, int]], now_ns: int) -> Iterator[Metric]:
    """Per input partition: its watermark, and how far the newest event time read is behind the wall clock."""
    watermark = GaugeMetricFamily(
        "sensorflow_partition_watermark_seconds",
        "The partition's watermark (newest event time read minus the allowed lateness), Unix seconds; "
        "windows close when every partition's watermark has passed their end",
        labels=["partition"],
    )
    lag = GaugeMetricFamily(
        "sensorflow_partition_event_time_lag_seconds",
        "Wall time minus the newest event time read on the partition (a replay of old data shows its age)",
        labels=["partition"],
    )
    for pid, (newest, mark) in sorted(times.items()):
        if mark != END_OF_TIME:  # a partition at its end holds nothing back
            watermark.add_metric([pid], mark / 1e9)
        lag.add_metric([pid], (now_ns - newest) / 1e9)
    yield watermark
    yield lag


class StopSignal:
    """One event for every reason to stop gracefully: SIGTERM/SIGINT, a max runtime, a quiet hub.

    The activity counter (:meth:`attach_activity`) grows while events arrive; the hub counts
    as quiet once it has not changed for ``idle_seconds``. ``signals`` False leaves SIGTERM and
    SIGINT to the caller (a live run: ``sensorflow.windowing.interrupts``, which calls :meth:`stop`).
    """

    def __init__(
        self, max_runtime: float | None = None, idle_seconds: float | None = None, event: threading.Event | None = None,
        signals: bool = True,
    ):
        self.event = event if event is not None else threading.Event()
        self._signals = signals
        self.reason: str | None = None
        self._max_runtime = max_runtime
        self._idle_seconds = idle_seconds
        self._activity: Callable[[], int] | None = None
        self._ready: Callable[[], bool] = lambda: True
        self._previous: dict[int, signal.Handlers] = {}
        self._watch = threading.Thread(target=self._watch_loop, name="stop-watch", daemon=True)

    def attach_activity(self, activity: Callable[[], int], ready: Callable[[], bool] = lambda: True) -> None:
        """``activity`` grows while events arrive; the quiet clock runs only once ``ready()`` (all connected)."""
        self._activity = activity
        self._ready = ready

    def stop(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            log.info("stopping: %s", reason)
            self.event.set()

    def __enter__(self) -> StopSignal:
        if self._idle_seconds is not None and self._activity is None:
            raise ValueError("idle_seconds needs an activity counter")
        if self._signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        if self._max_runtime is not None or self._idle_seconds is not None:
            self._watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self.event.set()  # ends the watch thread

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop(signal.Signals(signum).name)

    def _watch_loop(self) -> None:
        started = last_change = time.monotonic()
        seen = self._activity() if self._activity else 0
        while not self.event.wait(0.2):
            now = time.monotonic()
            if self._max_runtime is not None and now - started >= self._max_runtime:
                self.stop(f"max runtime {self._max_runtime:g} s reached")
            if self._idle_seconds is not None:
                current = self._activity()
                if current != seen or not self._ready():
                    seen, last_change = current, now
                elif now - last_change >= self._idle_seconds:
                    self.stop(f"no event for {self._idle_seconds:g} s")

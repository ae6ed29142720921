"""Prometheus exposition for every long-running command: /metrics, /healthz, /readyz on one port.

:class:`MetricsServer` serves a registry that always holds prometheus-client's standard
process (``process_*``: CPU, memory, open files) and platform (``python_info``) collectors and
``sensorflow_build_info`` (the version), plus the collectors a command adds: a run's counters
(``sensorflow.windowing.service.RunCollector``), the sidecar's
(``sensorflow.batch_jobs.metrics.SidecarMetrics``). ``/healthz`` says the process answers;
``/readyz`` asks the command's ``ready`` callable.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sensorflow import __version__

__all__ = ["BuildInfo", "MetricsServer", "metrics_registry"]

log = logging.getLogger(__name__)


class BuildInfo:
    """``sensorflow_build_info{version, python}`` = 1: which release answers, for dashboards and alerts."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "sensorflow_build_info", "Always 1; the labels name the sensorflow release and the Python version",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


def metrics_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of ``collectors`` plus the standard process and platform collectors and the build info."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(BuildInfo())
    for collector in collectors:
        registry.register(collector)
    return registry


def _always_ready() -> tuple[bool, str]:
    return True, "ready"


class MetricsServer:
    """/metrics, /healthz and /readyz on ``port`` (0: a free one) on a daemon thread.

    ``collectors``: one collector or several; ``ready()`` answers /readyz (default: always ready).
    """

    def __init__(
        self, collectors: Collector | Iterable[Collector], ready: Callable[[], tuple[bool, str]] = _always_ready,
        port: int = 0, host: str = "0.0.0.0",
    ):
        listed = [collectors] if hasattr(collectors, "collect") else list(collectors)  # type: ignore[arg-type]
        self.registry = metrics_registry(listed)
        self._server = ThreadingHTTPServer((host, port), _handler(self.registry, ready))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on port %d", self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                ok, reason = ready()
                self._reply(200 if ok else 503, (reason + "\n").encode())
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not worth a line
            pass

    return Handler

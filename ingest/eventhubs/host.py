"""The receiver process seen from the dataflow: partitions are received there, batches taken here.

The SDK's receive loop costs tens of microseconds of Python per event; in the dataflow's process
it would hold the same interpreter lock as decoding and windowing, so the two would add up
instead of overlapping. :class:`ReceiverHost` runs every partition's receiver in one child
process (``sensorflow.ingest.eventhubs.child``, a fresh interpreter) and reads its frames on a thread into
per-partition inboxes; :meth:`ReceiverHost.take` never blocks and acknowledges what it takes,
which lets the child receive more (at most ``queue_batches`` batches per partition in flight).
The connection's secret reaches the child over its stdin, never on a command line.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from collections import deque
from typing import Any, Self

import orjson

from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions
from sensorflow.ingest.eventhubs.received import Received
from sensorflow.ingest.eventhubs.receiver import PartitionStatus
from sensorflow.ingest.eventhubs.wire import (
    BATCH,
    JSON,
    connection_to_json,
    decode_batch,
    options_to_json,
    read_frame,
    write_frame,
)

__all__ = ["ReceiverError", "ReceiverHost"]

log = logging.getLogger(__name__)


class ReceiverError(RuntimeError):
    """The receiver process failed or refused a request; the message is one line."""


class _Partition:
    def __init__(self, index: int, status: PartitionStatus):
        self.index = index
        self.status = status
        self.inbox: deque[Received] = deque()


class ReceiverHost:
    """One receiver process for the partitions of ``connection``'s hub; use as a context manager or :meth:`close`."""

    def __init__(self, connection: EventHubsConnection, options: ReceiveOptions):
        self.options = options
        # A fresh interpreter (not fork: the dataflow runs threads; not multiprocessing's spawn:
        # it would re-import the caller's __main__).
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sensorflow.ingest.eventhubs.child", str(os.getpid())],  # our pid: it ends when we do
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._partitions: dict[str, _Partition] = {}
        self._by_index: list[_Partition] = []
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._failure: str | None = None
        self._closed = False
        self._send({
            "op": "init",
            "connection": connection_to_json(connection),
            "options": options_to_json(options),
            "log_level": logging.getLogger().getEffectiveLevel(),
        })
        self._reader = threading.Thread(target=self._read, name="eventhubs-receiver-frames", daemon=True)
        self._reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partition_ids(self, timeout: float = 300.0) -> list[str]:
        """The hub's partition ids; ReceiverError if the hub cannot be read."""
        self._send({"op": "partitions"})
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise ReceiverError(f"the receiver process did not list the partitions within {timeout:.0f} s") from None
        if "error" in reply:
            raise ReceiverError(reply["error"])
        return list(reply["ids"])

    def start(self, partition: str, next_sequence: int | None, status: PartitionStatus) -> None:
        """Receive ``partition`` from ``next_sequence`` (None: the options' starting position) into its inbox."""
        with self._start_lock:  # Bytewax workers build their partitions on their own threads
            if partition in self._partitions:
                raise ValueError(f"partition {partition} is already started")
            entry = _Partition(len(self._by_index), status)
            self._partitions[partition] = entry
            self._by_index.append(entry)
            self._send({"op": "start", "index": entry.index, "partition": partition, "next": next_sequence})

    def take(self, partition: str, limit: int, max_bytes: int | None = None) -> list[Received]:
        """Up to ``limit`` received batches of ``partition``, oldest first; [] when none is waiting.

        ``max_bytes``: stop once the batches taken hold that many bytes of bodies (at least one is taken).
        """
        entry = self._partitions[partition]
        inbox, out = entry.inbox, []
        size = 0
        while inbox and len(out) < limit and (max_bytes is None or size < max_bytes):
            received = inbox.popleft()
            out.append(received)
            size += len(received.data)
        if out:
            self._send({"op": "ack", "index": entry.index, "n": len(out)})
        elif self._failure is not None:
            raise ReceiverError(self._failure)
        return out

    def waiting(self, partition: str) -> bool:
        return bool(self._partitions[partition].inbox) or self._failure is not None

    def stop(self, partition: str) -> None:
        """Stop receiving ``partition`` (what was received and not taken is dropped)."""
        entry = self._partitions.get(partition)
        if entry is not None and self._failure is None:
            self._send({"op": "stop", "index": entry.index})

    def close(self, timeout: float = 15.0) -> None:
        """Stop every receiver and the process."""
        if self._closed:
            return
        self._closed = True
        try:
            self._process.stdin.close()
        except OSError:  # already gone
            pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the receiver process did not stop within %.0f s; killing it", timeout)
            self._process.kill()
            self._process.wait()
        self._reader.join(5.0)

    # -- requests and frames ---------------------------------------------------------

    def _send(self, request: dict[str, Any]) -> None:
        payload = orjson.dumps(request)
        with self._write_lock:
            try:
                write_frame(self._process.stdin, JSON, payload)
            except (BrokenPipeError, ValueError) as e:  # ValueError: stdin closed by close()
                if not self._closed:
                    raise ReceiverError(self._failure or f"the receiver process is gone (exit code {self._process.poll()})") from e

    def _read(self) -> None:
        stream = self._process.stdout
        try:
            while True:
                kind, payload = read_frame(stream)
                if kind == BATCH:
                    index, received = decode_batch(payload)
                    entry = self._by_index[index]
                    entry.status.received_events += len(received) + len(received.rejects)
                    entry.inbox.append(received)
                else:
                    self._on_message(orjson.loads(payload))
        except EOFError:
            pass
        except Exception as e:  # a broken frame: the process is unusable; say why, then stop reading
            log.error("reading the receiver process failed: %s: %s", type(e).__name__, e)
            self._process.kill()
        if not self._closed:
            code = self._process.wait()
            self._failure = f"the receiver process exited unexpectedly (exit code {code})"
            for entry in self._by_index:
                entry.status.connected = False
                entry.status.last_error = self._failure
            self._replies.put({"error": self._failure})
            log.error(self._failure)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "status":
            status = self._by_index[message["index"]].status
            status.connected = message["connected"]
            status.stolen = message["stolen"]
            status.reconnects = message["reconnects"]
            status.last_error = message["last_error"]
        elif kind == "hub":
            self._by_index[message["index"]].status.hub_last_sequence = message["last"]
        elif kind == "log":
            logger = logging.getLogger(message["name"])
            if logger.isEnabledFor(message["level"]):
                record = logger.makeRecord(
                    message["name"], message["level"], "(receiver process)", 0, message["message"], None, None,
                    extra=message["extra"],
                )
                if "exception" in message:
                    record.exc_text = message["exception"]
                logger.handle(record)
        elif kind == "partitions":
            self._replies.put(message)
        elif kind == "fatal":
            self._failure = f"the receiver process failed: {message['error']}"
            self._replies.put({"error": self._failure})

"""The receiver process: every partition's SDK receive loop, away from the dataflow's interpreter lock.

Started by :class:`~sensorflow.ingest.eventhubs.host.ReceiverHost` as ``python -m sensorflow.ingest.eventhubs.child``.
Its stdin carries JSON requests (``init`` with the connection and options first, then
``partitions``, ``start``, ``ack``, ``stop``); its stdout carries frames back (see
``sensorflow.ingest.eventhubs.wire``): received batches, status changes, the hub's last sequence numbers,
log records, the partition list. The end of stdin (the dataflow stopped or died) stops it; it
ignores SIGINT and SIGTERM (the dataflow decides how a run stops) and ends when the dataflow's
process dies (``lifecycle.die_with_parent``, given the dataflow's pid on its command line), so no
receiver outlives a SIGKILLed run.

Back-pressure: at most ``queue_batches`` batches of a partition are in flight (sent, not yet
taken by the dataflow, which acknowledges what it takes); a partition at its limit blocks in
the SDK callback, so the SDK stops asking the hub for more, as it did with an in-process queue.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from functools import partial
from typing import Any, BinaryIO

import orjson

from sensorflow.backoff import Backoff, Reconnects
from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions
from sensorflow.ingest.eventhubs.received import Received
from sensorflow.ingest.eventhubs.receiver import PartitionReceiver, PartitionStatus
from sensorflow.ingest.eventhubs.wire import (
    BATCH,
    JSON,
    connection_from_json,
    encode_batch,
    options_from_json,
    read_frame,
    write_frame,
)
from sensorflow.logfields import record_extra

__all__ = ["main"]

log = logging.getLogger(__name__)

# Receive loops are busy Python threads while other threads are still connecting. With the SDK's
# public receive_batch (the fallback), each partition's processor even spins on an empty consumer
# map while its load-balancing thread connects, and with the default 5 ms switch interval every
# step of those hand-shakes waits behind the spinners: 4 partitions connected after 1.3 s
# instead of 0.5 s. Batches are large, so switching more often costs nothing measurable.
_SWITCH_SECONDS = 0.0005


class _Replies:
    """Frames to the dataflow; any thread may send."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: bytes, *parts: Any) -> None:
        with self._lock:
            write_frame(self._stream, kind, *parts)

    def send_json(self, doc: dict[str, Any]) -> None:
        self.send(JSON, orjson.dumps(doc))


class _ForwardLogs(logging.Handler):
    """Log records go to the dataflow, which logs them with its own handlers and format."""

    def __init__(self, replies: _Replies):
        super().__init__()
        self._replies = replies

    def emit(self, record: logging.LogRecord) -> None:
        try:
            doc = {
                "type": "log", "name": record.name, "level": record.levelno, "message": record.getMessage(),
                "extra": record_extra(record),
            }
            if record.exc_info:
                doc["exception"] = logging.Formatter().formatException(record.exc_info)
            self._replies.send_json(doc)
        except Exception:  # a log record must never break a receiver
            self.handleError(record)


class _Receivers:
    """The partitions this process receives, by the index the dataflow gave them."""

    def __init__(self, connection: EventHubsConnection, options: ReceiveOptions, replies: _Replies):
        self._connection = connection
        self._options = options
        self._replies = replies
        self._receivers: dict[int, PartitionReceiver] = {}
        self._in_flight: dict[int, int] = {}
        self._credit = threading.Condition()
        self._poller_stop = threading.Event()
        self._poller: threading.Thread | None = None

    def handle(self, request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "ack":
            with self._credit:
                self._in_flight[request["index"]] -= request["n"]
                self._credit.notify_all()
        elif op == "start":
            self._start(request["index"], request["partition"], request["next"])
        elif op == "stop":
            receiver = self._receivers.get(request["index"])
            if receiver is not None:  # stopping may wait for the SDK: not on the request loop
                threading.Thread(target=receiver.stop, name="eventhubs-stop", daemon=True).start()
        elif op == "partitions":
            self._replies.send_json({"type": "partitions", **self._partition_ids()})
        else:
            raise ValueError(f"unknown request {op!r}")

    def close(self) -> None:
        self._poller_stop.set()
        stoppers = [threading.Thread(target=r.stop, args=(5.0,), daemon=True) for r in self._receivers.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(6.0)

    def _partition_ids(self) -> dict[str, Any]:
        try:
            client = self._connection.consumer(self._options.consumer_group, retry_total=2)
        except Exception as e:  # a missing dependency, a bad credential setup: reported, one line
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        try:
            return {"ids": [str(p) for p in client.get_partition_ids()]}
        except Exception as e:  # any SDK failure here means the dataflow cannot start; it says which hub
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        finally:
            client.close()

    def _start(self, index: int, partition: str, next_sequence: int | None) -> None:
        self._in_flight[index] = 0
        status = PartitionStatus(partition)
        receiver = PartitionReceiver(
            self._connection,
            self._options,
            partition,
            next_sequence,
            status,
            deliver=partial(self._deliver, index),
            on_status=partial(self._status, index),
        )
        self._receivers[index] = receiver
        receiver.start()
        if self._poller is None and self._options.lag_poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll_hub, name="eventhubs-lag", daemon=True)
            self._poller.start()

    def _deliver(self, index: int, received: Received) -> None:
        receiver = self._receivers[index]
        with self._credit:
            while self._in_flight[index] >= self._options.queue_batches and not receiver.stopping:
                self._credit.wait(0.5)
            if receiver.stopping:  # the dataflow closed this partition: it reads no more
                return
            self._in_flight[index] += 1
        self._replies.send(BATCH, *encode_batch(index, received))

    def _status(self, index: int, status: PartitionStatus) -> None:
        self._replies.send_json({
            "type": "status", "index": index, "connected": status.connected, "stolen": status.stolen,
            "reconnects": status.reconnects, "last_error": status.last_error,
        })

    def _poll_hub(self) -> None:
        """Each partition's last enqueued sequence number, for ``events behind`` (a metric only).

        A round that cannot read the hub ends at its first failure, and the next one waits longer
        (the receivers' backoff, from ``lag_poll_seconds`` up to 10 times that): an unreachable
        hub is not asked once per partition every round.
        """
        poll = self._options.lag_poll_seconds
        failures = Reconnects(Backoff(first=poll, cap=10 * poll), healthy_seconds=0)
        client = self._connection.consumer(self._options.consumer_group, retry_total=1)
        try:
            while True:
                wait = poll
                for index, receiver in list(self._receivers.items()):
                    partition = receiver.status.partition
                    try:
                        properties = client.get_partition_properties(partition)
                    except Exception as error:  # a metric only: log and try again later
                        log.debug("partition %s: properties not read: %r", partition, error)
                        wait = max(poll, failures.failed())
                        break
                    failures.connected()
                    self._replies.send_json({"type": "hub", "index": index, "last": int(properties["last_enqueued_sequence_number"])})
                if self._poller_stop.wait(wait):
                    return
        finally:
            client.close()


def main(requests: BinaryIO, replies_stream: BinaryIO) -> int:
    """Serve the dataflow on ``requests``/``replies_stream`` until ``requests`` ends."""
    sys.setswitchinterval(_SWITCH_SECONDS)
    replies = _Replies(replies_stream)
    try:
        _, payload = read_frame(requests)
    except EOFError:
        return 0
    init = orjson.loads(payload)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(replies)]
    root.setLevel(init["log_level"])
    logging.getLogger("azure").setLevel(max(logging.WARNING, init["log_level"]))  # the SDK logs every link at INFO
    try:
        receivers = _Receivers(connection_from_json(init["connection"]), options_from_json(init["options"]), replies)
    except Exception as e:  # settings the parent accepted cannot fail here; say so if they do
        replies.send_json({"type": "fatal", "error": f"{type(e).__name__}: {e}"})
        return 1
    try:
        while True:
            try:
                _, payload = read_frame(requests)
            except EOFError:
                return 0
            receivers.handle(orjson.loads(payload))
    finally:
        receivers.close()


if __name__ == "__main__":
    from sensorflow.lifecycle import die_with_parent

    die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 else None)  # a SIGKILLed dataflow leaves no receiver behind
    # Its life is the dataflow's: it ends when stdin does, not on a terminal's Ctrl-C or a
    # signal to the process group (the dataflow stops and closes stdin then, within a bound).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Frames own the real stdout; anything a library prints goes to stderr instead.
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    code = 1
    try:
        code = main(sys.stdin.buffer, frames)
        frames.flush()
    except OSError:  # the dataflow is gone
        pass
    except BaseException:
        traceback.print_exc()  # on stderr; the dataflow reports the exit code
    finally:
        os._exit(code)  # the SDK's daemon threads may still hold sockets: do not wait for them

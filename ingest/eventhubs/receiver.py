"""One Event Hubs partition received on its own thread, one SDK batch at a time.

Each partition gets a thread running the SDK's receive loop for that partition; every received
batch becomes one :class:`~sensorflow.ingest.eventhubs.received.Received` (bodies joined, sequence numbers,
enqueued times, offsets) handed to ``deliver``, which may block: a blocked callback stops the SDK
asking the hub for more (back-pressure). When the SDK gives up after its own retries, or cannot
open the connection at all, the thread closes the client and reconnects from the event after the
last one received, with capped exponential backoff and jitter (``sensorflow.backoff``, the same
mechanism as the store's); a partition stolen by a receiver with a higher owner level is reported
as such. ``status.connected`` is True only while the SDK's link is ready; ``status.reconnects``
counts failed connections (the ``sensorflow_partition_reconnects`` metric).

The SDK's consumer swallows a failure to open its connection (``receive`` returns as if it had
been closed: azure-eventhub 5.15, ``EventHubConsumer.receive``), so calling it in a loop against
an unreachable endpoint opened a connection per call, ~5,000 per second; such a return is taken
here for the failed connection it is.

Receivers run in the receiver process (``sensorflow.ingest.eventhubs.child``), away from the dataflow's
interpreter lock. With the SDK's pure-Python AMQP transport (its default) they drive the SDK's
partition consumer themselves and take its decoded AMQP messages as they are, because building
an ``EventData`` costs ~25 us per event, a third of the SDK's whole receive loop. Everything on
the wire (connection, auth, credit, retries, owner level, link stealing) is still the SDK's; any
other transport, or an SDK whose consumer no longer looks as expected, gets the public
``EventHubConsumerClient.receive_batch``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sensorflow.backoff import Reconnects
from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions
from sensorflow.ingest.eventhubs.received import Received, received_from_events

__all__ = ["PartitionReceiver", "PartitionStatus"]

log = logging.getLogger(__name__)

@dataclass
class PartitionStatus:
    """What the receiver and the dataflow know about one partition (read by /metrics and /readyz)."""

    partition: str
    connected: bool = False
    stolen: bool = False
    reconnects: int = 0
    last_error: str | None = None
    last_sequence: int | None = None  # last event handed to the dataflow
    last_enqueued_ns: int | None = None  # its enqueued time
    hub_last_sequence: int | None = None  # the partition's last enqueued sequence number (polled)
    received_events: int = 0
    updated: float = field(default_factory=time.monotonic)

    @property
    def behind(self) -> int | None:
        """Events enqueued on the partition that the dataflow has not read yet."""
        if self.hub_last_sequence is None:
            return None
        return max(0, self.hub_last_sequence - (self.last_sequence if self.last_sequence is not None else -1))


class NotConnected(ConnectionError):
    """The SDK could not open the connection (and did not say why)."""


def _is_stolen(error: BaseException) -> bool:
    # EventHubError.error holds the AMQP condition after "amqp:" ("link:stolen").
    return getattr(error, "error", None) == "link:stolen"


class PartitionReceiver:
    """Receives one partition on a daemon thread into ``deliver`` (which may block: back-pressure).

    ``on_status`` is called after ``status`` changed (connected, error, reconnect). ``direct``
    drives the SDK's consumer where it can (see the module docstring); False: always the public
    ``receive_batch``.
    """

    def __init__(
        self,
        connection: EventHubsConnection,
        options: ReceiveOptions,
        partition: str,
        next_sequence: int | None,
        status: PartitionStatus,
        deliver: Callable[[Received], None],
        on_status: Callable[[PartitionStatus], None] | None = None,
        direct: bool = True,
    ):
        self._connection = connection
        self._options = options
        self._partition = partition
        self._next = next_sequence  # first sequence number still to receive; None: cold start
        self.status = status
        self._deliver = deliver
        self._on_status = on_status or (lambda status: None)
        self._stop = threading.Event()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._failed = False
        self._direct = direct
        self._consumer: Any = None
        self._reconnects = Reconnects(options.backoff(), options.healthy_seconds)
        self.path: str | None = None  # "consumer" or "receive_batch": how it received last
        self._thread = threading.Thread(target=self._run, name=f"eventhubs-{partition}", daemon=True)

    def start(self) -> PartitionReceiver:
        self._thread.start()
        return self

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._close_client()
        self._thread.join(timeout)

    # -- the receiving thread ----------------------------------------------------

    def _run(self) -> None:
        reconnects = self._reconnects
        while not self._stop.is_set():
            client = self._connection.consumer(self._options.consumer_group, retry_total=self._options.sdk_retries)
            with self._client_lock:
                self._client = client
            failed = self._receive(client)
            self._close_client()
            self._set_connected(False)
            if self._stop.is_set():
                break
            if failed:
                pause = reconnects.failed()
                self.status.reconnects += 1
                self._on_status(self.status)
                log.warning(
                    "partition %s: receiver failed, reconnecting in %.1f s",
                    self._partition,
                    pause,
                    extra={"partition": self._partition, "position": self._next, "error": self.status.last_error},
                )
                self._stop.wait(pause)

    def _receive(self, client: Any) -> bool:
        """Run the SDK's receive loop until stopped or it fails; True if it failed."""
        if self._next is None:
            position, inclusive = self._options.sdk_position()
        else:
            position, inclusive = self._next, True
        self._failed = False
        try:
            if self._direct and self._receive_messages(client, position, inclusive):
                return self._failed
            self.path = "receive_batch"
            client.receive_batch(
                self._on_batch,
                partition_id=self._partition,
                starting_position=position,
                starting_position_inclusive=inclusive,
                max_batch_size=self._options.batch_size,
                max_wait_time=self._options.max_wait_seconds,
                prefetch=self._options.prefetch,
                owner_level=self._options.owner_level,
                on_error=self._on_error,
            )
        except Exception as error:  # the client could not start (e.g. bad address), or gave up receiving
            self._note_error(error)
            self._failed = True
        return self._failed

    def _receive_messages(self, client: Any, position: Any, inclusive: bool) -> bool:
        """The SDK's partition consumer driven here, in batches of its AMQP messages; False if this SDK cannot."""
        if getattr(getattr(client, "_amqp_transport", None), "KIND", None) != "pyamqp" or not hasattr(client, "_create_consumer"):
            return False
        consumer = client._create_consumer(
            self._options.consumer_group,
            self._partition,
            position,
            self._on_messages,
            event_position_inclusive=inclusive,
            prefetch=self._options.prefetch,
            owner_level=self._options.owner_level,
        )
        buffer = getattr(consumer, "_message_buffer", None)
        if buffer is None or not hasattr(consumer, "_next_message_in_buffer") or not hasattr(consumer, "_last_received_event"):
            consumer.close()
            return False
        consumer._next_message_in_buffer = buffer.popleft  # the AMQP message itself, no EventData
        self._consumer = consumer
        self.path = "consumer"
        try:
            while not self._stop.is_set():
                consumer.receive(batch=True, max_batch_size=self._options.batch_size, max_wait_time=self._options.max_wait_seconds)
                if self._stop.is_set():
                    break
                if not consumer.running:  # the SDK could not open the connection and returned as if closed
                    self._note_error(NotConnected("cannot open the connection to the Event Hubs endpoint"))
                    self._failed = True
                    break
                if consumer.handler_ready:
                    self._up()
        finally:
            self._consumer = None
            consumer.close()
        return True

    def _on_messages(self, messages: list) -> None:
        if messages:
            from azure.eventhub import EventData

            # What the SDK's own retries resume after (it reads this event's offset).
            self._consumer._last_received_event = EventData._from_message(messages[-1])
        self._on_batch(None, messages)

    def _on_batch(self, context: Any, events: list) -> None:
        consumer = self._consumer
        if consumer is None or consumer.handler_ready:  # the direct path may call this before its link is up
            self._up()
        if not events or self._stop.is_set():
            return
        received = received_from_events(events, self._next)
        if received is None:
            return  # a redelivery after a reconnect: already delivered
        self._next = received.next_sequence
        self._deliver(received)

    def _up(self) -> None:
        self._reconnects.connected()
        self._set_connected(True)

    def _set_connected(self, connected: bool) -> None:
        if self.status.connected != connected:
            self.status.connected = connected
            self._on_status(self.status)

    def _on_error(self, context: Any, error: BaseException) -> None:
        self._note_error(error)
        self._failed = True
        # Closing makes receive_batch return; we reconnect from self._next ourselves (the
        # SDK's processor would restart from the original starting position).
        threading.Thread(target=self._close_client, name=f"eventhubs-{self._partition}-close", daemon=True).start()

    def _note_error(self, error: BaseException) -> None:
        self.status.connected = False
        self.status.last_error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        if _is_stolen(error):
            self.status.stolen = True
            log.error(
                "partition %s was taken over by another receiver with a higher owner level "
                "(another consumer with owner_level set on consumer group %r)",
                self._partition,
                self._options.consumer_group,
                extra={"partition": self._partition, "position": self._next},
            )
        else:
            log.warning(
                "partition %s: %s",
                self._partition,
                self.status.last_error,
                extra={"partition": self._partition, "position": self._next},
            )
        self._on_status(self.status)

    def _close_client(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as error:  # closing a broken client may fail; nothing to do
                log.debug("closing the client of partition %s failed: %r", self._partition, error)

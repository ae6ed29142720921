"""Event Hubs output: sends a simulation through azure-eventhub's producer.

azure-eventhub (and azure-identity for Entra ID sign-in) are imported only
when a producer is opened; without them the error names the extra to
install. The sender takes a ready producer and never reads settings or the
environment: `EventHubTarget` is built at the edge (the CLI).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from sensorflow.ingest.eventhubs.config import EventHubsConnection, MissingDependency
from sensorflow.simulator.batching import (
    DEFAULT_MAX_BATCH_BYTES,
    OutgoingEvent,
    PlannedBatch,
    RetriesExhausted,
    RetryPolicy,
    group_by_tick,
    plan_batches,
    send_with_retry,
    wall_time_due,
)
from sensorflow.simulator.messages import MessageChunk, message_bodies
from sensorflow.simulator.stream import Simulation

__all__ = [
    "EventHubTarget",
    "EventHubsSender",
    "EventHubsUnavailable",
    "MissingDependency",
    "SendStats",
    "open_producer",
]

_AZURE_HINT = "pip install 'sensorflow[azure]'"

EventHubTarget = EventHubsConnection
"""Where to send: the same connection description the live source reads with."""


class EventHubsUnavailable(RuntimeError):
    """Sending keeps failing after retries (no connection, or several batches in a row)."""


# Give up on the hub after this many batches in a row failed every retry.
MAX_FAILED_BATCHES_IN_A_ROW = 3


def open_producer(target: EventHubsConnection) -> Any:
    """An `EventHubProducerClient` for `target` (imports azure lazily)."""
    # Our RetryPolicy is the one retry loop (with exponential backoff); the
    # SDK's own retries would multiply it.
    return target.producer(retry_total=0)


def _is_retryable(error: BaseException) -> bool:
    from azure.eventhub.exceptions import ConnectError, ConnectionLostError, EventDataSendError, OperationTimeoutError

    return isinstance(error, (ConnectError, ConnectionLostError, OperationTimeoutError, EventDataSendError))


@dataclass
class SendStats:
    """Running totals of a send."""

    messages_sent: int = 0
    readings_sent: int = 0
    messages_failed: int = 0
    batches_sent: int = 0
    bytes_sent: int = 0
    started_s: float = field(default_factory=time.monotonic)

    def to_json(self, now_s: float) -> dict[str, object]:
        seconds = max(now_s - self.started_s, 1e-9)
        return {
            "messages_sent": self.messages_sent,
            "readings_sent": self.readings_sent,
            "messages_failed": self.messages_failed,
            "batches_sent": self.batches_sent,
            "bytes_sent": self.bytes_sent,
            "seconds": round(seconds, 3),
            "readings_per_s": round(self.readings_sent / seconds, 1),
        }


class EventHubsSender:
    """Sends message chunks in batches, optionally paced to simulated time.

    `producer` is an `EventHubProducerClient` (or anything with its
    `create_batch` / `send_batch`); `event_factory` makes an `EventData`
    from bytes (default: azure's).
    """

    def __init__(
        self,
        producer: Any,
        *,
        partition_by_key: bool = True,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        retry: RetryPolicy | None = None,
        pace: bool = False,
        tick_s: float = 0.1,
        progress: TextIO | None = sys.stderr,
        progress_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        event_factory: Callable[[bytes], Any] | None = None,
        is_retryable: Callable[[BaseException], bool] = _is_retryable,
    ) -> None:
        if not (hasattr(producer, "create_batch") and hasattr(producer, "send_batch")):
            raise TypeError("producer must have create_batch() and send_batch() (an EventHubProducerClient)")
        if tick_s <= 0 or progress_every_s <= 0:
            raise ValueError("tick_s and progress_every_s must be > 0")
        self._producer = producer
        self._partition_by_key = partition_by_key
        self._max_batch_bytes = max_batch_bytes
        self._retry = retry or RetryPolicy()
        self._pace = pace
        self._tick_ns = int(tick_s * 1e9)
        self._progress = progress
        self._progress_every_s = progress_every_s
        self._clock = clock
        self._sleep = sleep
        self._event_factory = event_factory
        self._is_retryable = is_retryable
        self._origin: tuple[int, float] | None = None
        self._failed_in_a_row = 0
        self._last_progress = clock()
        self.stats = SendStats(started_s=clock())

    def _make_event(self, body: bytes) -> Any:
        if self._event_factory is None:
            try:
                from azure.eventhub import EventData
            except ImportError as error:
                raise MissingDependency(f"the Event Hubs output needs azure-eventhub: {_AZURE_HINT}") from error
            self._event_factory = EventData
        return self._event_factory(body)

    def events(self, chunk: MessageChunk, bodies: list[bytes], keys: list[str]) -> list[OutgoingEvent]:
        """The chunk's messages as events in enqueued order."""
        order = np.argsort(chunk.enqueued_ns, kind="stable").tolist()
        key_device = chunk.key_device.tolist()
        due = chunk.enqueued_ns.tolist()
        counts = chunk.reading_count.tolist()
        return [
            OutgoingEvent(
                bodies[i],
                keys[key_device[i]] if self._partition_by_key and key_device[i] >= 0 else None,
                due[i],
                counts[i],
            )
            for i in order
        ]

    def send_events(self, events: list[OutgoingEvent]) -> None:
        runs = group_by_tick(events, self._tick_ns) if self._pace else [events]
        for run in runs:
            for planned in plan_batches(run, self._max_batch_bytes):
                self._wait_until_due(planned)
                self._send_planned(planned)
                self._maybe_report()

    def _wait_until_due(self, planned: PlannedBatch) -> None:
        if not self._pace:
            return
        if self._origin is None:
            self._origin = (planned.due_ns, self._clock())
        due = wall_time_due(planned.due_ns, *self._origin)
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)

    def _send_planned(self, planned: PlannedBatch) -> None:
        if planned.oversized:
            self.stats.messages_failed += 1
            return
        pending = list(planned.events)
        while pending:
            batch = self._create_batch(planned.partition_key)
            added = 0
            for event in pending:
                try:
                    batch.add(self._make_event(event.body))
                except ValueError:  # the batch is full: the SDK's size count is the authority
                    break
                added += 1
            if added == 0:  # too big even for an empty batch
                self.stats.messages_failed += 1
                pending = pending[1:]
                continue
            sent, pending = pending[:added], pending[added:]
            try:
                send_with_retry(
                    lambda ready=batch: self._producer.send_batch(ready), self._retry, self._is_retryable, self._sleep
                )
            except RetriesExhausted as error:
                self.stats.messages_failed += len(sent)
                self._failed_in_a_row += 1
                if self._failed_in_a_row >= MAX_FAILED_BATCHES_IN_A_ROW:
                    raise EventHubsUnavailable(f"{self._failed_in_a_row} batches in a row failed: {error}") from error
                continue
            self._failed_in_a_row = 0
            self.stats.batches_sent += 1
            self.stats.messages_sent += len(sent)
            self.stats.readings_sent += sum(e.readings for e in sent)
            self.stats.bytes_sent += sum(len(e.body) for e in sent)

    def _create_batch(self, partition_key: str | None) -> Any:
        batches: list[Any] = []

        def create() -> None:
            batches.append(self._producer.create_batch(partition_key=partition_key))

        try:
            send_with_retry(create, self._retry, self._is_retryable, self._sleep)
        except RetriesExhausted as error:
            raise EventHubsUnavailable(f"cannot reach the event hub: {error}") from error
        return batches[-1]

    def _maybe_report(self) -> None:
        now = self._clock()
        if self._progress is not None and now - self._last_progress >= self._progress_every_s:
            self._last_progress = now
            figures = self.stats.to_json(now)
            print(
                f"sent {figures['messages_sent']:,} messages ({figures['readings_sent']:,} readings), "
                f"failed {figures['messages_failed']:,}, {figures['readings_per_s']:,.0f} readings/s",
                file=self._progress,
                flush=True,
            )

    def send_simulation(self, simulation: Simulation) -> dict[str, object]:
        """Send every chunk of `simulation`; return the final figures."""
        keys = simulation.fleet.device_keys
        for chunk in simulation.chunks():
            self.send_events(self.events(chunk, message_bodies(chunk, simulation.texts), keys))
        return self.stats.to_json(self._clock())

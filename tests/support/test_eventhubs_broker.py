"""The local Event Hubs test broker against the real azure-eventhub SDK (sync and aio clients)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import Self

import pytest

pytest.importorskip("azure.eventhub")
pytest.importorskip("proton")

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumerClient
from azure.eventhub.aio import EventHubProducerClient as AsyncProducerClient

from tests.support import eventhubs_broker as broker_support
from tests.support.eventhubs_broker import EventHubsBroker
from tests.support.eventhubs_codec import pad_frame

# The fixture, until tests/conftest.py lists tests.support.eventhubs_broker in pytest_plugins.
eventhubs_broker = broker_support.eventhubs_broker

pytestmark = pytest.mark.timeout(60)


class Receiver:
    """``EventHubConsumerClient.receive_batch`` on one partition in a thread, collecting what arrives."""

    def __init__(self, broker: EventHubsBroker, partition: str = "0", **kwargs) -> None:
        self.client = EventHubConsumerClient.from_connection_string(
            broker.connection_string, consumer_group="$default", retry_total=3, retry_backoff_factor=0.1
        )
        self.events: list[EventData] = []
        self.errors: list[Exception] = []
        self._idle = threading.Event()
        kwargs.setdefault("starting_position", "-1")
        kwargs.setdefault("max_wait_time", 0.2)
        self._thread = threading.Thread(
            target=self.client.receive_batch,
            kwargs=dict(on_event_batch=self._on_batch, on_error=self._on_error, partition_id=partition, **kwargs),
            daemon=True,
        )
        self._thread.start()

    def _on_batch(self, _context, events: list[EventData]) -> None:
        self.events.extend(events)
        if not events:
            self._idle.set()

    def _on_error(self, _context, error: Exception) -> None:
        self.errors.append(error)

    def wait_idle(self, timeout: float = 10) -> None:
        """Until the link is attached and has nothing more to deliver."""
        self._idle.clear()
        assert self._idle.wait(timeout), "the consumer never went idle"

    def wait_for(self, count: int, timeout: float = 10) -> list[EventData]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.events) >= count, f"got {len(self.events)} events of {count}"
        return self.events

    def close(self) -> None:
        self.client.close()
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def receive(broker: EventHubsBroker, count: int, **kwargs) -> list[tuple[int, str]]:
    """(sequence number, body) of the first ``count`` events a fresh consumer receives."""
    with Receiver(broker, **kwargs) as receiver:
        receiver.wait_for(count)
        receiver.wait_idle()
        return [(e.sequence_number, e.body_as_str()) for e in receiver.events]


def producer(broker: EventHubsBroker) -> EventHubProducerClient:
    return EventHubProducerClient.from_connection_string(broker.connection_string)


def test_pad_frame_fills_trailing_nulls():
    close = b"\x00\x00\x00\x0c\x02\x00\x00\x00" + b"\x00\x53\x18\x45"  # close, empty list
    assert pad_frame(close) == b"\x00\x00\x00\x0f\x02\x00\x00\x00" + b"\x00\x53\x18\xc0\x02\x01\x40"
    heartbeat = b"\x00\x00\x00\x08\x02\x00\x00\x00"
    assert pad_frame(heartbeat) == heartbeat


def test_producer_sends_to_a_partition_and_by_partition_key(eventhubs_broker):
    with producer(eventhubs_broker) as client:
        batch = client.create_batch(partition_id="2")
        for i in range(3):
            batch.add(EventData(f"p{i}"))
        client.send_batch(batch)
        batch = client.create_batch(partition_key="sensor-7")
        for i in range(4):
            batch.add(EventData(f"k{i}"))
        client.send_batch(batch)
        client.send_event(EventData("single"), partition_id="2")
        assert batch.max_size_in_bytes == 1024 * 1024  # sized from the link's max-message-size

    stored = eventhubs_broker.events("2")
    assert [e.body for e in stored[:3]] == [b"p0", b"p1", b"p2"]
    assert stored[-1].body == b"single"
    assert [e.sequence_number for e in stored] == list(range(len(stored)))
    offsets = [int(e.offset) for e in stored]
    assert offsets == sorted(set(offsets))
    keyed = [e for pid in eventhubs_broker.partition_ids for e in eventhubs_broker.events(pid) if e.partition_key]
    assert [e.body for e in keyed] == [b"k0", b"k1", b"k2", b"k3"]
    assert {e.partition_key for e in keyed} == {"sensor-7"}
    keyed_partitions = {pid for pid in eventhubs_broker.partition_ids for e in eventhubs_broker.events(pid) if e.partition_key}
    assert len(keyed_partitions) == 1  # a key's events all land in one partition

    (key_pid,) = keyed_partitions
    stored = {e.body: e for e in eventhubs_broker.events(key_pid)}
    with Receiver(eventhubs_broker, partition=key_pid) as receiver:
        events = receiver.wait_for(len(stored))
    for event in events:
        assert event.offset == stored[event.body_as_str().encode()].offset
        assert event.enqueued_time is not None
    assert [e.partition_key for e in events if e.body_as_str().startswith("k")] == [b"sensor-7"] * 4  # the SDK gives bytes


def test_consumer_starting_positions(eventhubs_broker):
    t0 = 1_700_000_000_000
    for i in range(10):
        eventhubs_broker.publish("0", [f"e{i}".encode()], enqueued_time_ms=t0 + 1000 * i)
    stored = eventhubs_broker.events("0")
    everything = [(i, f"e{i}") for i in range(10)]

    assert receive(eventhubs_broker, 10, starting_position="-1") == everything
    assert receive(eventhubs_broker, 7, starting_position=3, starting_position_inclusive=True) == everything[3:]
    assert receive(eventhubs_broker, 6, starting_position=3) == everything[4:]
    assert receive(eventhubs_broker, 5, starting_position=stored[4].offset) == everything[5:]
    at_5 = dt.datetime.fromtimestamp((t0 + 5000) / 1000, dt.UTC)
    assert receive(eventhubs_broker, 5, starting_position=at_5, starting_position_inclusive=True) == everything[5:]
    assert receive(eventhubs_broker, 4, starting_position=at_5) == everything[6:]

    with Receiver(eventhubs_broker, starting_position="@latest") as latest:
        latest.wait_idle()
        eventhubs_broker.publish("0", [b"new"])
        events = latest.wait_for(1)
        assert [(e.sequence_number, e.body_as_str()) for e in events] == [(10, "new")]


def test_eventhub_and_partition_properties(eventhubs_broker):
    eventhubs_broker.publish("1", [b"a", b"b"], enqueued_time_ms=1_700_000_000_000)
    with producer(eventhubs_broker) as client:
        hub = client.get_eventhub_properties()
        assert hub["eventhub_name"] == "hub"
        assert hub["partition_ids"] == ["0", "1", "2", "3"]
        assert isinstance(hub["created_at"], dt.datetime)
        empty = client.get_partition_properties("0")
        assert empty["is_empty"] is True
        assert empty["last_enqueued_sequence_number"] == -1
        full = client.get_partition_properties("1")
    assert full["id"] == "1"
    assert full["is_empty"] is False
    assert full["beginning_sequence_number"] == 0
    assert full["last_enqueued_sequence_number"] == 1
    assert full["last_enqueued_offset"] == eventhubs_broker.events("1")[1].offset
    assert full["last_enqueued_time_utc"] == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)


def test_higher_owner_level_steals_the_partition(eventhubs_broker):
    eventhubs_broker.publish("0", [b"before"])
    with Receiver(eventhubs_broker, owner_level=0) as first:
        first.wait_for(1)
        with Receiver(eventhubs_broker, owner_level=1) as second:
            second.wait_for(1)
            eventhubs_broker.publish("0", [b"after"])
            assert [e.body_as_str() for e in second.wait_for(2)] == ["before", "after"]
            deadline = time.monotonic() + 10  # the SDK reports the stolen link from its own thread
            while not first.errors and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [e.body_as_str() for e in first.events] == ["before"]
            assert first.errors and "amqp:link:stolen" in str(first.errors[0])


def test_consumer_recovers_from_dropped_connections(eventhubs_broker):
    eventhubs_broker.publish("3", [b"a", b"b"])
    with Receiver(eventhubs_broker, partition="3") as receiver:
        receiver.wait_for(2)
        eventhubs_broker.drop_connections()
        eventhubs_broker.publish("3", [b"c"])
        events = receiver.wait_for(3, timeout=20)
        time.sleep(0.3)
    assert [(e.sequence_number, e.body_as_str()) for e in events] == [(0, "a"), (1, "b"), (2, "c")]
    assert not eventhubs_broker.errors


def test_aio_clients(eventhubs_broker):
    async def main() -> list[tuple[int, str]]:
        async with AsyncProducerClient.from_connection_string(eventhubs_broker.connection_string) as client:
            batch = await client.create_batch(partition_id="1")
            for i in range(3):
                batch.add(EventData(f"x{i}"))
            await client.send_batch(batch)
            assert (await client.get_partition_properties("1"))["last_enqueued_sequence_number"] == 2
        got: list[tuple[int, str]] = []
        done = asyncio.Event()
        consumer = AsyncConsumerClient.from_connection_string(
            eventhubs_broker.connection_string, consumer_group="$default", load_balancing_interval=0.5
        )

        async def on_batch(_context, events):
            got.extend((e.sequence_number, e.body_as_str()) for e in events)
            if len(got) >= 3:
                done.set()

        task = asyncio.create_task(
            consumer.receive_batch(on_batch, partition_id="1", starting_position="-1", max_wait_time=0.2)
        )
        await asyncio.wait_for(done.wait(), 15)
        await consumer.close()
        await task
        return got

    assert asyncio.run(main()) == [(0, "x0"), (1, "x1"), (2, "x2")]


def test_large_batches_round_trip(eventhubs_broker):
    body = b"z" * 100_000
    with producer(eventhubs_broker) as client:
        batch = client.create_batch(partition_id="2")
        for _ in range(9):
            batch.add(EventData(body))
        client.send_batch(batch)
    assert [len(e.body) for e in eventhubs_broker.events("2")] == [100_000] * 9
    with Receiver(eventhubs_broker, partition="2") as receiver:
        events = receiver.wait_for(9)
    assert all(e.body_as_str() == body.decode() for e in events)


def test_receive_throughput(eventhubs_broker):
    count = 20_000
    eventhubs_broker.publish(
        "0", [b'{"TS":"2024-01-01T00:00:00Z","Device":"d1","Tag":"t","Value":%d}' % i for i in range(count)]
    )
    with Receiver(eventhubs_broker, max_batch_size=300, max_wait_time=1) as receiver:
        receiver.wait_for(1, timeout=10)
        started, first = time.perf_counter(), len(receiver.events)
        events = receiver.wait_for(count, timeout=40)
        elapsed = time.perf_counter() - started
    assert [e.sequence_number for e in events[:count]] == list(range(count))
    rate = (count - first) / elapsed
    print(f"\nreceive_batch through the test broker: {rate:,.0f} events/s ({1e6 / rate:.0f} us/event)")

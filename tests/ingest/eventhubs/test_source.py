"""The Event Hubs source: receivers on the real SDK against the test broker."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from pydantic import SecretStr

from sensorflow.ingest.eventhubs.config import (
    EventHubsConnection,
    ReceiveOptions,
)
from sensorflow.ingest.eventhubs.host import ReceiverError
from sensorflow.ingest.eventhubs.received import NOT_DATA, Received
from sensorflow.ingest.eventhubs.receiver import PartitionReceiver, PartitionStatus
from sensorflow.ingest.eventhubs.source import EventHubsSource
from sensorflow.records.readings import Reject


def _options(**extra) -> ReceiveOptions:
    return ReceiveOptions(max_wait_seconds=0.05, retry_initial_seconds=0.2, retry_max_seconds=0.5, **extra)


def _drain(partition, want: int, timeout: float = 30) -> list:
    batches, deadline = [], time.monotonic() + timeout
    while sum(len(b) for b in batches) < want and time.monotonic() < deadline:
        batches.extend(partition.next_batch())
        time.sleep(0.01)
    return batches


@pytest.mark.parametrize("sdk_retries", [0, 3], ids=["our-reconnect", "sdk-retry"])
def test_source_reads_every_event_once_in_order_across_dropped_connections(eventhubs_broker, sdk_retries, caplog):
    caplog.set_level(logging.INFO)
    bodies = [f'{{"n": {i}}}'.encode() for i in range(3000)]
    eventhubs_broker.publish("1", bodies[:1000])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(batch_size=100, sdk_retries=sdk_retries), eventhubs_broker.partition_ids, progress=True)
    part = source.build_part("read", "1", None)
    try:
        got = _drain(part, 1000)
        eventhubs_broker.drop_connections()
        eventhubs_broker.publish("1", bodies[1000:])
        got += _drain(part, 2000)
        if sdk_retries == 0:  # the SDK gives up at once: our receiver reconnects after the last event
            assert source.status["1"].reconnects >= 1
            # logged in the receiver process, logged here with where it happened
            reconnect = next(r for r in caplog.records if "reconnecting" in r.getMessage())
            assert (reconnect.name, reconnect.partition, reconnect.position) == ("sensorflow.ingest.eventhubs.receiver", "1", 1000)
    finally:
        part.close()
    positions = np.concatenate([b.positions for b in got])
    assert positions.tolist() == list(range(3000))
    assert [body for b in got for body in b.bodies] == bodies
    assert all(len(b) <= 100 for b in got)
    assert source.final_positions["1"] == 3000 and part.snapshot() == 3000
    stored = eventhubs_broker.events("1")
    # Each batch carries its events' offsets, for the Event Hubs checkpoints of whoever keeps the partition's resume log.
    assert all(b.progress.sequence_numbers is b.positions for b in got)
    assert [o.decode() for b in got for o in b.progress.offsets] == [e.offset for e in stored]
    assert source.status["1"].hub_last_sequence >= 999  # polled from the hub for "events behind"


def test_a_resumed_partition_starts_at_its_sequence_number(eventhubs_broker):
    eventhubs_broker.publish("0", [b"%d" % i for i in range(50)])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    part = EventHubsSource(connection, _options(), ["0"]).build_part("read", "0", 42)
    try:
        got = _drain(part, 8)
    finally:
        part.close()
    assert np.concatenate([b.positions for b in got]).tolist() == list(range(42, 50))


@pytest.mark.parametrize("direct", [True, False], ids=["consumer", "receive_batch"])
def test_a_partition_taken_over_by_a_higher_owner_level_is_reported(eventhubs_broker, caplog, direct):
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    first = PartitionReceiver(connection, _options(owner_level=1), "2", None, PartitionStatus("2"), lambda r: None, direct=direct).start()
    second = PartitionReceiver(connection, _options(owner_level=2), "2", None, PartitionStatus("2"), lambda r: None)
    try:
        deadline = time.monotonic() + 20
        while not first.status.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        second.start()
        while not first.status.stolen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.stop()
        second.stop()
    assert first.status.stolen
    assert any("higher owner level" in r.getMessage() for r in caplog.records)


def test_bodies_of_several_data_sections_non_utf8_and_value_bodies_arrive_as_sent(eventhubs_broker):
    from azure.eventhub import EventData, EventHubProducerClient
    from azure.eventhub.amqp import AmqpAnnotatedMessage

    sent = [b'{"n": 0}', b"\xff\xfe\x00 not utf-8", b'{"a":\n 1}', b""]
    with EventHubProducerClient.from_connection_string(eventhubs_broker.connection_string) as producer:
        batch = producer.create_batch(partition_id="3")
        batch.add(EventData(sent[0]))
        batch.add(AmqpAnnotatedMessage(data_body=[b"\xff\xfe", b"\x00 not", b" utf-8"]))  # three data sections
        batch.add(AmqpAnnotatedMessage(value_body={"not": "data"}))
        batch.add(EventData(sent[2]))
        batch.add(EventData(sent[3]))
        producer.send_batch(batch)
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(), eventhubs_broker.partition_ids)
    part = source.build_part("read", "3", None)
    try:
        got = _drain(part, 4)
    finally:
        part.close()
    assert [body for b in got for body in b.bodies] == sent
    assert np.concatenate([b.positions for b in got]).tolist() == [0, 1, 3, 4]
    assert [r for b in got for r in b.rejects] == [Reject(2, NOT_DATA, b"")]
    assert source.final_positions["3"] == 5
    stored = eventhubs_broker.events("3")
    assert np.concatenate([b.enqueued_ns for b in got]).tolist() == [stored[i].enqueued_time_ms * 1_000_000 for i in (0, 1, 3, 4)]


def test_the_direct_consumer_and_the_public_receive_batch_deliver_the_same_batches(eventhubs_broker):
    eventhubs_broker.publish("2", [b'{"n": %d}' % i for i in range(700)] + [b"\xff", b"a\nb"])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    got = {}
    for direct in (True, False):
        batches: list[Received] = []
        receiver = PartitionReceiver(connection, _options(batch_size=300), "2", 1, PartitionStatus("2"), batches.append, direct=direct)
        receiver.start()
        deadline = time.monotonic() + 30
        while sum(len(b) for b in batches) < 701 and time.monotonic() < deadline:
            time.sleep(0.02)
        receiver.stop()
        got[receiver.path] = (
            [body for b in batches for body in b.bodies],
            np.concatenate([b.sequence_numbers for b in batches]).tolist(),
            np.concatenate([b.enqueued_ns for b in batches]).tolist(),
            [o for b in batches for o in b.offsets],
            all(len(b) <= 300 for b in batches),
        )
    assert set(got) == {"consumer", "receive_batch"}
    assert got["consumer"] == got["receive_batch"]
    stored = eventhubs_broker.events("2")[1:]
    assert got["consumer"][:4] == (
        [e.body for e in stored], list(range(1, 702)), [e.enqueued_time_ms * 1_000_000 for e in stored], [e.offset.encode() for e in stored]
    )


def test_a_partition_has_at_most_queue_batches_in_flight(eventhubs_broker):
    eventhubs_broker.publish("0", [b"%d" % i for i in range(2000)])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(batch_size=50, queue_batches=3), ["0"])
    part = source.build_part("read", "0", None)
    try:
        deadline = time.monotonic() + 30
        while source.status["0"].received_events < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the receiver would go on here if it were not held back
        assert source.status["0"].received_events == 150
        got = _drain(part, 2000)  # taking them lets it go on, to the end
    finally:
        part.close()
    assert np.concatenate([b.positions for b in got]).tolist() == list(range(2000))


def test_a_receiver_process_that_dies_stops_the_source_with_a_clear_error(eventhubs_broker):
    eventhubs_broker.publish("0", [b"1", b"2"])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(), ["0"])
    part = source.build_part("read", "0", None)
    try:
        assert len(_drain(part, 2)) >= 1
        source._host._process.kill()
        with pytest.raises(ReceiverError, match="receiver process exited unexpectedly"):
            _drain(part, 1, timeout=10)
        assert not source.status["0"].connected
    finally:
        part.close()


def test_one_call_hands_over_a_bounded_amount_of_bodies_and_at_least_one_batch(eventhubs_broker, monkeypatch):
    # Bytewax decodes all a call hands over before any window it completes is closed and written:
    # a backlog taken whole would leave the store writer idle, then the flow waiting for it.
    from sensorflow.ingest.eventhubs import source as source_module

    eventhubs_broker.publish("0", [b"%09d" % i for i in range(300)])  # 10 bytes a body with its separator
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(batch_size=50), ["0"])
    part = source.build_part("read", "0", None)
    try:
        deadline = time.monotonic() + 30
        while source.status["0"].received_events < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.status["0"].received_events == 300
        monkeypatch.setattr(source_module, "_TAKE_BYTES", 1)
        taken = [part.next_batch()]  # the bound is below one batch: one batch all the same
        monkeypatch.setattr(source_module, "_TAKE_BYTES", 600)
        taken.append(part.next_batch())  # batches until they hold 600 bytes
        monkeypatch.setattr(source_module, "_TAKE_BYTES", 1 << 20)
        taken.append(part.next_batch())  # the rest
    finally:
        part.close()
    sizes = [[10 * len(b) - 1 for b in batches] for batches in taken]  # bytes of bodies joined by newlines
    assert len(sizes[0]) == 1
    assert sum(sizes[1][:-1]) < 600 <= sum(sizes[1]) and sizes[2]
    assert np.concatenate([b.positions for batches in taken for b in batches]).tolist() == list(range(300))

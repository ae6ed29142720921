"""Event Hubs batching, retry and pacing logic, on their own (no broker yet)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.simulator.batching import (
    OutgoingEvent,
    RetriesExhausted,
    RetryPolicy,
    estimated_batch_overhead,
    estimated_event_size,
    group_by_tick,
    plan_batches,
    send_with_retry,
    wall_time_due,
)

events_strategy = st.lists(
    st.tuples(st.sampled_from([None, "1", "2", "device-0042", "x" * 60]), st.integers(0, 3000)),
    max_size=80,
)


def _events(spec) -> list[OutgoingEvent]:
    return [OutgoingEvent(b"b" * size, key, due_ns=i) for i, (key, size) in enumerate(spec)]


@settings(max_examples=100, deadline=None)
@given(spec=events_strategy, limit=st.integers(200, 20_000))
def test_batches_stay_under_the_limit_and_keep_key_order(spec, limit):
    events = _events(spec)
    batches = plan_batches(events, limit)
    # every event exactly once
    assert sorted(e.due_ns for b in batches for e in b.events) == list(range(len(events)))
    for batch in batches:
        assert {e.partition_key for e in batch.events} == {batch.partition_key}
        size = estimated_batch_overhead(batch.partition_key) + sum(estimated_event_size(e) for e in batch.events)
        assert batch.estimated_bytes == size
        if batch.oversized:
            assert len(batch.events) == 1 and size > limit
        else:
            assert size <= limit
    # per key, events keep their order across consecutive batches
    for key in {e.partition_key for e in events}:
        planned = [e.due_ns for b in batches if b.partition_key == key for e in b.events]
        assert planned == [e.due_ns for e in events if e.partition_key == key]


def test_batches_are_filled_before_a_new_one_starts():
    events = [OutgoingEvent(b"x" * 100, "7", i) for i in range(10)]
    per_event = estimated_event_size(events[0])
    limit = estimated_batch_overhead("7") + 4 * per_event
    assert [len(b.events) for b in plan_batches(events, limit)] == [4, 4, 2]


@settings(max_examples=30, deadline=None)
@given(spec=events_strategy, limit=st.integers(2_000, 20_000))
def test_plans_fit_a_real_event_data_batch(spec, limit):
    """The estimate is an upper bound of azure-eventhub's own size count (no broker needed)."""
    eventhub = pytest.importorskip("azure.eventhub")
    for batch in plan_batches(_events(spec), limit):
        if batch.oversized:
            continue
        real = eventhub.EventDataBatch(max_size_in_bytes=limit, partition_key=batch.partition_key)
        for event in batch.events:
            real.add(eventhub.EventData(event.body))  # raises ValueError if the plan overfilled it
        assert real.size_in_bytes <= batch.estimated_bytes


def test_group_by_tick_splits_on_tick_boundaries():
    events = [OutgoingEvent(b"", None, due) for due in (0, 50, 99, 100, 250, 260)]
    assert [[e.due_ns for e in run] for run in group_by_tick(events, 100)] == [[0, 50, 99], [100], [250, 260]]


def test_wall_time_due_maps_simulated_time_to_the_clock():
    assert wall_time_due(5_500_000_000, 5_000_000_000, 100.0) == pytest.approx(100.5)


def test_retry_policy_backs_off_exponentially_up_to_the_cap():
    assert RetryPolicy(attempts=6, base_delay_s=0.5, multiplier=2, max_delay_s=3).delays() == [0.5, 1, 2, 3, 3]


class Transient(Exception):
    pass


def test_send_with_retry_retries_transient_errors_then_succeeds():
    failures, slept, calls = [Transient("a"), Transient("b")], [], []

    def send():
        calls.append(1)
        if failures:
            raise failures.pop(0)

    attempts = send_with_retry(send, RetryPolicy(attempts=5), lambda e: isinstance(e, Transient), slept.append)
    assert attempts == 3 and len(calls) == 3 and slept == [0.5, 1.0]


def test_send_with_retry_gives_up_after_the_last_attempt():
    slept = []

    def send():
        raise Transient("link lost\nwith details")

    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts: link lost$") as info:
        send_with_retry(send, RetryPolicy(attempts=3), lambda e: isinstance(e, Transient), slept.append)
    assert isinstance(info.value.__cause__, Transient) and slept == [0.5, 1.0]


def test_send_with_retry_does_not_retry_other_errors():
    slept = []

    def send():
        raise PermissionError("bad key")

    with pytest.raises(PermissionError):
        send_with_retry(send, RetryPolicy(), lambda e: isinstance(e, Transient), slept.append)
    assert slept == []


@pytest.mark.parametrize("keyed", [True, False])
def test_sender_turns_a_chunk_into_events_in_enqueued_order(keyed):
    """With a real (unconnected) producer client: nothing is sent, only events are built."""
    eventhub = pytest.importorskip("azure.eventhub")
    from sensorflow.simulator import DeliverySpec, MessageSpec, Simulation
    from sensorflow.simulator.eventhubs import EventHubsSender
    from sensorflow.simulator.messages import message_bodies
    from tests.simulator.helpers import fleet_config

    producer = eventhub.EventHubProducerClient.from_connection_string(
        "Endpoint=sb://example.invalid/;SharedAccessKeyName=k;SharedAccessKey=x;EntityPath=hub"
    )
    config = fleet_config(
        delivery=DeliverySpec(out_of_order_fraction=0.1, malformed_fraction=0.01),
        messages=MessageSpec(partition_by_device=keyed),
    )
    simulation = Simulation.prepare(config)
    sender = EventHubsSender(producer, partition_by_key=keyed, progress=None)
    chunk = next(simulation.chunks())
    bodies = message_bodies(chunk, simulation.texts)
    events = sender.events(chunk, bodies, simulation.fleet.device_keys)
    assert len(events) == len(chunk)
    assert [e.due_ns for e in events] == sorted(chunk.enqueued_ns.tolist())
    assert sorted(e.body for e in events) == sorted(bodies)
    keys = {e.partition_key for e in events}
    assert keys == ({None} if not keyed else set(simulation.fleet.device_keys))
    assert sum(e.readings for e in events) == chunk.readings
    producer.close()

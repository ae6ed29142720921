"""The one backoff mechanism (sensorflow.backoff): capped, exponential, jittered; reconnects start over once healthy."""

import time

import pytest

from sensorflow.backoff import Backoff, Reconnects


@pytest.mark.parametrize(("first", "cap"), [(0.2, 15.0), (1.0, 30.0), (0.5, 0.5)])
def test_waits_double_up_to_the_cap_with_half_of_each_random(first, cap):
    backoff = Backoff(first, cap)
    for attempt in range(1, 20):
        ceiling = min(cap, first * 2 ** (attempt - 1))
        waits = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_a_budget_stops_before_a_wait_that_would_end_past_it():
    calls = []

    def fail():
        calls.append(time.monotonic())
        raise ConnectionError

    with pytest.raises(ConnectionError):
        Backoff(0.02, 0.05).retrying(lambda e: isinstance(e, ConnectionError), budget_seconds=0.3)(fail)
    assert 0.3 - 0.05 - 0.02 <= calls[-1] - calls[0] <= 0.3


def test_errors_not_accepted_are_raised_at_once():
    calls = []

    def fail():
        calls.append(1)
        raise ValueError

    with pytest.raises(ValueError):
        Backoff(0.01, 0.01).retrying(lambda e: isinstance(e, ConnectionError), budget_seconds=10)(fail)
    assert calls == [1]


def test_reconnect_waits_grow_while_failing_and_start_over_after_a_healthy_connection():
    brief = Reconnects(Backoff(1.0, 30.0), healthy_seconds=3600)  # no connection counts as healthy
    assert all(min(30, 2**n) / 2 <= brief.failed() for n in range(5))
    brief.connected()
    assert brief.failed() >= 8 and brief.failures == 6  # up only briefly: still failing, the waits keep growing
    healthy = Reconnects(Backoff(1.0, 30.0), healthy_seconds=0)  # any connection counts as healthy
    for _ in range(5):
        healthy.failed()
    healthy.connected()
    assert healthy.failed() <= 1.0 and healthy.failures == 1

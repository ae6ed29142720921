"""Capped exponential backoff with jitter: how every connection of this project waits before it tries again.

One mechanism, built on tenacity, for the ODBC store (``sensorflow.store.odbc_retry``) and the
Event Hubs receivers (``sensorflow.ingest.eventhubs.receiver``). Wait number n (1-based) is
``min(cap, first * 2**(n-1))``: half of it fixed, half uniformly random, so clients that lost
the same server together do not come back together, and none ever waits less than half its
step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

__all__ = ["Backoff", "Reconnects"]


@dataclass(frozen=True)
class Backoff:
    """Waits of ~``first`` * 2^n seconds, at most ``cap``; half of each wait fixed, half random."""

    first: float = 0.5
    cap: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("backoff needs 0 < first <= cap")

    def wait(self) -> tenacity.wait.wait_base:
        """The tenacity wait strategy: ceiling/2 + uniform(0, ceiling/2)."""
        half, half_cap = self.first / 2, self.cap / 2
        return tenacity.wait_exponential(multiplier=half, max=half_cap) + tenacity.wait_random_exponential(
            multiplier=half, max=half_cap
        )

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only the attempt number is read
        state.attempt_number = attempt
        return self.wait()(state)

    def retrying(
        self,
        retry_if: Callable[[BaseException], bool],
        budget_seconds: float | None,
        before_sleep: Callable[[tenacity.RetryCallState], Any] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> tenacity.Retrying:
        """Calls retried on errors ``retry_if`` accepts, while the next wait still ends within ``budget_seconds``
        of the first attempt (None: for ever); the last error is raised as it is."""
        stop = tenacity.stop_never if budget_seconds is None else tenacity.stop_before_delay(budget_seconds)
        return tenacity.Retrying(
            wait=self.wait(), stop=stop, retry=tenacity.retry_if_exception(retry_if), reraise=True,
            before_sleep=before_sleep, sleep=sleep,
        )


class Reconnects:
    """The waits of a connection meant to stay up: longer after each failure, from the start again
    once a connection stayed up ``healthy_seconds``."""

    def __init__(self, backoff: Backoff, healthy_seconds: float = 30.0):
        self.backoff = backoff
        self.healthy_seconds = healthy_seconds
        self.failures = 0
        self._up_since: float | None = None

    def connected(self) -> None:
        """The connection is up (call once per connection; later calls keep the first time)."""
        if self._up_since is None:
            self._up_since = time.monotonic()

    def failed(self) -> float:
        """The connection failed (or never came up): seconds to wait before the next attempt."""
        if self._up_since is not None and time.monotonic() - self._up_since >= self.healthy_seconds:
            self.failures = 0
        self._up_since = None
        self.failures += 1
        return self.backoff.delay(self.failures)

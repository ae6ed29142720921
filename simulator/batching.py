"""Pure logic of the Event Hubs output: batch planning, retry backoff, real-time pacing.

Nothing here imports azure: the planner groups events by partition key
and fills batches up to a byte budget, estimated the way the producer
counts (body plus per-event AMQP overhead). The producer's own
`EventDataBatch.add` stays the authority: when it says a batch is full
(ValueError) the sender starts the next batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "BATCH_OVERHEAD_BYTES",
    "DEFAULT_MAX_BATCH_BYTES",
    "EVENT_OVERHEAD_BYTES",
    "OutgoingEvent",
    "PlannedBatch",
    "RetryPolicy",
    "RetriesExhausted",
    "estimated_batch_overhead",
    "estimated_event_size",
    "group_by_tick",
    "plan_batches",
    "send_with_retry",
    "wall_time_due",
]

# Event Hubs Standard allows 1 MiB per batch; stay under it so the estimate's
# error lands on the safe side.
DEFAULT_MAX_BATCH_BYTES = 1_000_000
# Upper bounds of what azure-eventhub 5.x adds per event and per batch (AMQP
# header and annotations), plus the key's length where there is a key;
# measured with EventDataBatch.size_in_bytes (it counts ~16 B per event,
# ~30 B + key per keyed event, ~40 B + key per keyed batch).
EVENT_OVERHEAD_BYTES = 64
BATCH_OVERHEAD_BYTES = 64


@dataclass(frozen=True)
class OutgoingEvent:
    """One message to send: its body, partition key (None = service's choice) and due time."""

    body: bytes
    partition_key: str | None
    due_ns: int
    readings: int = 1


@dataclass(frozen=True)
class PlannedBatch:
    """Events that go in one batch: same partition key, estimated size within the limit.

    `oversized` marks a lone event that is bigger than the limit by itself.
    """

    partition_key: str | None
    events: tuple[OutgoingEvent, ...]
    estimated_bytes: int
    oversized: bool = False

    @property
    def due_ns(self) -> int:
        return max(e.due_ns for e in self.events)

    @property
    def readings(self) -> int:
        return sum(e.readings for e in self.events)


def _key_bytes(key: str | None) -> int:
    return len(key.encode("utf-8")) if key is not None else 0


def estimated_event_size(event: OutgoingEvent) -> int:
    """Upper bound of the bytes an event adds to a batch."""
    return len(event.body) + EVENT_OVERHEAD_BYTES + _key_bytes(event.partition_key)


def estimated_batch_overhead(partition_key: str | None) -> int:
    """Upper bound of an empty batch's size."""
    return BATCH_OVERHEAD_BYTES + _key_bytes(partition_key)


def plan_batches(events: Iterable[OutgoingEvent], max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> list[PlannedBatch]:
    """Group events by partition key (first-seen key order, event order kept) into size-bounded batches."""
    if max_batch_bytes <= BATCH_OVERHEAD_BYTES:
        raise ValueError("max_batch_bytes is smaller than a batch's own overhead")
    by_key: dict[str | None, list[OutgoingEvent]] = {}
    for event in events:
        by_key.setdefault(event.partition_key, []).append(event)
    batches: list[PlannedBatch] = []
    for key, keyed in by_key.items():
        empty = estimated_batch_overhead(key)
        current: list[OutgoingEvent] = []
        size = empty
        for event in keyed:
            event_size = estimated_event_size(event)
            if empty + event_size > max_batch_bytes:
                if current:
                    batches.append(PlannedBatch(key, tuple(current), size))
                    current, size = [], empty
                batches.append(PlannedBatch(key, (event,), empty + event_size, oversized=True))
                continue
            if current and size + event_size > max_batch_bytes:
                batches.append(PlannedBatch(key, tuple(current), size))
                current, size = [], empty
            current.append(event)
            size += event_size
        if current:
            batches.append(PlannedBatch(key, tuple(current), size))
    return batches


def group_by_tick(events: Sequence[OutgoingEvent], tick_ns: int) -> Iterator[list[OutgoingEvent]]:
    """Split events sorted by due time into runs that fall in the same tick (for paced sending)."""
    if tick_ns <= 0:
        raise ValueError("tick_ns must be > 0")
    run: list[OutgoingEvent] = []
    current_tick = None
    for event in events:
        tick = event.due_ns // tick_ns
        if run and tick != current_tick:
            yield run
            run = []
        current_tick = tick
        run.append(event)
    if run:
        yield run


def wall_time_due(due_ns: int, simulated_origin_ns: int, wall_origin_s: float) -> float:
    """Wall-clock second at which an event due at simulated `due_ns` should be sent (real-time pacing)."""
    return wall_origin_s + (due_ns - simulated_origin_ns) / 1e9


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: delay_i = min(max_delay, base_delay * multiplier**i)."""

    attempts: int = 5
    base_delay_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def delays(self) -> list[float]:
        """Sleeps between the attempts (one fewer than `attempts`)."""
        return [min(self.max_delay_s, self.base_delay_s * self.multiplier**i) for i in range(self.attempts - 1)]


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; the last one is the cause."""


def send_with_retry(
    send: Callable[[], None],
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool],
    sleep: Callable[[float], None],
) -> int:
    """Call `send` until it succeeds; return the attempts used.

    A non-retryable error propagates at once; after `policy.attempts`
    retryable failures, raises `RetriesExhausted` from the last error.
    """
    delays = policy.delays()
    for attempt in range(policy.attempts):
        try:
            send()
            return attempt + 1
        except Exception as error:
            if not is_retryable(error):
                raise
            if attempt == policy.attempts - 1:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise RetriesExhausted(f"gave up after {policy.attempts} attempts: {first_line}") from error
            sleep(delays[attempt])
    raise AssertionError("unreachable")

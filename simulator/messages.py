"""From delivered readings to partitioned messages with sequence numbers and offsets.

Messages of a chunk come out sorted by (partition, enqueued time). Per
partition, sequence numbers count from 0 and offsets are the byte position
of the body in the partition's stream, both continuing across chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sensorflow.simulator.config import SimulatorConfig
from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.malformed import MALFORMED_KINDS, malformed_body
from sensorflow.simulator.readings import ReadingChunk, Streams
from sensorflow.simulator.texts import ReadingTexts

__all__ = ["MessageAssembler", "MessageChunk", "message_bodies"]


@dataclass(frozen=True)
class MessageChunk:
    """Messages of one chunk, sorted by (partition, enqueued_ns).

    A message with `reading_count == 1` and no entry in `explicit` is a
    single reading whose text is rendered from `sensor`, `event_ns` and
    `cents` (the same row); every other message's body is in `explicit`.
    `key_device` is the device index whose id is the partition key, or -1.
    """

    partition: np.ndarray
    key_device: np.ndarray
    enqueued_ns: np.ndarray
    sequence_number: np.ndarray
    offset: np.ndarray
    body_length: np.ndarray
    reading_count: np.ndarray
    sensor: np.ndarray
    event_ns: np.ndarray
    cents: np.ndarray
    explicit: dict[int, bytes]
    malformed: int

    def __len__(self) -> int:
        return int(self.partition.shape[0])

    @property
    def readings(self) -> int:
        return int(self.reading_count.sum())


def _group_arrays(chunk: ReadingChunk, device: np.ndarray, per_message: int, texts: ReadingTexts):
    """Group each device's readings, in delivery order, into JSON-array messages."""
    order = np.argsort(device, kind="stable")
    dev_sorted = device[order]
    n = order.shape[0]
    first_of_device = np.ones(n, dtype=bool)
    first_of_device[1:] = dev_sorted[1:] != dev_sorted[:-1]
    device_start = np.maximum.accumulate(np.where(first_of_device, np.arange(n), 0))
    rank = np.arange(n) - device_start
    starts = np.flatnonzero(rank % per_message == 0)
    ends = np.append(starts[1:], n)
    reading_texts = texts.render(chunk.sensor[order], chunk.event_ns[order], chunk.cents[order])
    bodies = [b"[" + b", ".join(reading_texts[a:b]) + b"]" for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    enqueued = chunk.delivery_ns[order][ends - 1]
    return dev_sorted[starts], enqueued, (ends - starts).astype(np.int32), bodies


class MessageAssembler:
    """Turns reading chunks into message chunks; keeps per-partition counters between chunks."""

    def __init__(self, config: SimulatorConfig, fleet: Fleet, texts: ReadingTexts) -> None:
        self._config = config
        self._fleet = fleet
        self._texts = texts
        self._streams = Streams(config.seed)
        partitions = config.messages.partitions
        self._device_partition = fleet.device_partitions(partitions)
        self._next_sequence = np.zeros(partitions, dtype=np.int64)
        self._next_offset = np.zeros(partitions, dtype=np.int64)
        self._round_robin = 0

    def assemble(self, chunk: ReadingChunk) -> MessageChunk:
        config = self._config
        per_message = config.messages.readings_per_message
        device = self._fleet.device_of(chunk.sensor).astype(np.int32)
        if per_message == 1:
            key_device, enqueued = device, chunk.delivery_ns
            counts = np.ones(len(chunk), dtype=np.int32)
            sensor, event_ns, cents = chunk.sensor, chunk.event_ns, chunk.cents
            body_length = self._texts.text_lengths(sensor, cents)
            explicit_bodies: list[bytes] | None = None
        else:
            key_device, enqueued, counts, explicit_bodies = _group_arrays(chunk, device, per_message, self._texts)
            order = np.argsort(enqueued, kind="stable")
            key_device, enqueued, counts = key_device[order], enqueued[order], counts[order]
            explicit_bodies = [explicit_bodies[i] for i in order.tolist()]
            body_length = np.array([len(b) for b in explicit_bodies], dtype=np.int64)
            sensor = event_ns = cents = np.zeros(len(explicit_bodies), dtype=np.int64)
        good = key_device.shape[0]
        bad_device, anchor, bad_bodies = self._malformed(chunk.index, enqueued)
        bad = len(bad_bodies)
        rank = np.concatenate([np.arange(good, dtype=np.int64) * 2, anchor * 2 + 1])
        all_device = np.concatenate([key_device, bad_device])
        all_enqueued = np.concatenate([enqueued, enqueued[anchor]])
        # Arrival order: good messages are already in enqueued order; a malformed
        # one goes right after the message it was drawn next to.
        arrival = np.argsort(rank, kind="stable") if bad else np.arange(good, dtype=np.int64)
        if config.messages.partition_by_device:
            partition = self._device_partition[all_device]
            key = all_device
        else:
            partition = np.empty(good + bad, dtype=np.int32)
            partition[arrival] = (self._round_robin + np.arange(good + bad)) % config.messages.partitions
            self._round_robin = (self._round_robin + good + bad) % config.messages.partitions
            key = np.full(good + bad, -1, dtype=np.int32)
        # Stable sort of small ints is a radix sort: group by partition, keep arrival order.
        order = arrival[np.argsort(partition[arrival].astype(np.int16), kind="stable")]
        partition = partition[order].astype(np.int32)
        all_length = np.concatenate([body_length, np.array([len(b) for b in bad_bodies], dtype=np.int64)])[order]
        sequence, offset = self._number(partition, all_length)
        position = np.empty(good + bad, dtype=np.int64)
        position[order] = np.arange(good + bad)
        explicit: dict[int, bytes] = {}
        if explicit_bodies is not None:
            explicit.update(zip(position[:good].tolist(), explicit_bodies, strict=True))
        explicit.update(zip(position[good:].tolist(), bad_bodies, strict=True))
        zero = np.zeros(bad, dtype=np.int64)
        return MessageChunk(
            partition=partition,
            key_device=key[order],
            enqueued_ns=all_enqueued[order],
            sequence_number=sequence,
            offset=offset,
            body_length=all_length,
            reading_count=np.concatenate([counts, zero.astype(np.int32)])[order],
            sensor=np.concatenate([sensor, zero])[order],
            event_ns=np.concatenate([event_ns, zero])[order],
            cents=np.concatenate([cents, zero])[order],
            explicit=explicit,
            malformed=bad,
        )

    def _number(self, partition: np.ndarray, body_length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sequence numbers and offsets of messages sorted by partition; advances the counters."""
        partitions = self._config.messages.partitions
        counts = np.bincount(partition, minlength=partitions)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # Rows are grouped by partition, so per-row partition constants are runs.
        index_in_partition = np.arange(partition.shape[0]) - np.repeat(starts, counts)
        sequence = np.repeat(self._next_sequence, counts) + index_in_partition
        running = np.concatenate([[0], np.cumsum(body_length)])
        offset = np.repeat(self._next_offset - running[starts], counts) + running[:-1]
        self._next_sequence += counts
        self._next_offset += running[starts + counts] - running[starts]
        return sequence, offset

    def _malformed(self, chunk_index: int, enqueued: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """(device, anchor message, body) of the chunk's malformed messages.

        Drawn so that they are `malformed_fraction` of all messages; each is
        enqueued right after its anchor (a good message of the chunk).
        """
        fraction = self._config.delivery.malformed_fraction
        empty = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), [])
        if fraction <= 0 or enqueued.shape[0] == 0:
            return empty
        rng = self._streams.rng(Streams.MALFORMED, chunk_index)
        count = int(rng.binomial(enqueued.shape[0], fraction / (1.0 - fraction)))
        anchor = np.sort(rng.integers(0, enqueued.shape[0], count))
        device = rng.integers(0, self._fleet.spec.devices, count).astype(np.int32)
        tag = rng.integers(0, self._fleet.spec.tags, count)
        kinds = rng.integers(0, len(MALFORMED_KINDS), count)
        device_ids, tag_ids = self._fleet.device_ids, self._fleet.tag_ids
        bodies = []
        for d, t, k, a in zip(device.tolist(), tag.tolist(), kinds.tolist(), anchor.tolist(), strict=True):
            bodies.append(
                malformed_body(
                    MALFORMED_KINDS[k], rng, _json_text(device_ids[d]), _json_text(tag_ids[t]), int(enqueued[a])
                )
            )
        return device, anchor, bodies


def _json_text(value: str | int) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def message_bodies(chunk: MessageChunk, texts: ReadingTexts) -> list[bytes]:
    """Every message's body bytes, in the chunk's order."""
    n = len(chunk)
    is_explicit = np.zeros(n, dtype=bool)
    if chunk.explicit:
        is_explicit[np.fromiter(chunk.explicit.keys(), dtype=np.int64, count=len(chunk.explicit))] = True
    fast = np.flatnonzero(~is_explicit)
    rendered = texts.render(chunk.sensor[fast], chunk.event_ns[fast], chunk.cents[fast])
    if not chunk.explicit:
        return rendered
    bodies: list[bytes] = [b""] * n
    for i, body in zip(fast.tolist(), rendered, strict=True):
        bodies[i] = body
    for i, body in chunk.explicit.items():
        bodies[i] = body
    return bodies

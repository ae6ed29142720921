"""Per-partition resume blobs, shard ends, and the progress the live source carries in its batches (no servers)."""

from __future__ import annotations

import threading

import numpy as np
import orjson
import pyarrow as pa
import pytest

from sensorflow.ingest.eventhubs.config import (
    EventHubsConnection,
    ReceiveOptions,
)
from sensorflow.ingest.eventhubs.received import Received
from sensorflow.ingest.eventhubs.source import EventHubsSource
from sensorflow.records.readings import READING_SCHEMA, MessageBatch, ReadingBatch, SourceProgress
from sensorflow.records.windows import BEFORE_TIME
from sensorflow.windowing.operators import LatenessLogic
from sensorflow.windowing.resume.blobs import (
    CheckpointMismatch,
    PartitionResume,
    StreamIdentity,
    decode_partition_resume,
    decode_resume,
    decode_shard_end,
    encode_partition_resume,
    encode_shard_end,
    merge_resumes,
)
from sensorflow.windowing.resume.board import CommittedWindows, ResumeBoard, ResumePoint, ResumeStart
from sensorflow.windowing.resume.checkpoints import Checkpointer
from tests.support.builders import window_table

S = 1_000_000_000
IDENTITY = StreamIdentity("NS.example", "Readings", "$Default", 5 * S, 5 * S)


def test_blob_names_are_per_partition_and_per_shard_under_the_consumer_group():
    assert IDENTITY.partition_blob("3") == "sensorflow/ns.example/readings/$default/resume/3.json"
    assert IDENTITY.shard_blob(1) == "sensorflow/ns.example/readings/$default/shards/1.json"
    assert IDENTITY.resume_blob == "sensorflow/ns.example/readings/$default/resume.json"


def test_a_partition_blob_round_trips_and_refuses_other_window_settings():
    resume = PartitionResume("2", 60 * S, ResumePoint(10, 50 * S, 20))
    name = IDENTITY.partition_blob("2")
    assert decode_partition_resume(encode_partition_resume(resume, IDENTITY), IDENTITY, name) == resume
    other = StreamIdentity("NS.example", "Readings", "$Default", 5 * S, 7 * S)
    with pytest.raises(CheckpointMismatch, match=r"resume/2\.json was written with window 5 s and lateness 5 s, not 5 s and 7 s"):
        decode_partition_resume(encode_partition_resume(resume, IDENTITY), other, name)
    with pytest.raises(CheckpointMismatch, match="not readable"):
        decode_partition_resume(b"[1]", IDENTITY, name)


@pytest.mark.parametrize(
    ("resumes", "legacy", "expected"),
    [
        ([], None, None),
        (  # one C for all: the largest closure (every window at or before it is stored)
            [PartitionResume("0", 60 * S, ResumePoint(10, 1, 12)), PartitionResume("1", 70 * S, ResumePoint(5, 2, 5))],
            None,
            ResumeStart(70 * S, {"0": ResumePoint(10, 1, 12), "1": ResumePoint(5, 2, 5)}),
        ),
        (  # a partition's own blob wins over the old single blob; others keep the old point
            [PartitionResume("0", 50 * S, ResumePoint(30, 3, 30))],
            ResumeStart(40 * S, {"0": ResumePoint(10, 1, 12), "1": ResumePoint(5, 2, 5)}),
            ResumeStart(50 * S, {"0": ResumePoint(30, 3, 30), "1": ResumePoint(5, 2, 5)}),
        ),
        ([], ResumeStart(40 * S, {"1": ResumePoint(5, 2, 5)}), ResumeStart(40 * S, {"1": ResumePoint(5, 2, 5)})),
    ],
    ids=["nothing", "largest-closure", "partition-over-legacy", "legacy-only"],
)
def test_merging_partition_blobs(resumes, legacy, expected):
    assert merge_resumes(resumes, legacy) == expected


def test_a_shard_blob_of_another_shard_count_or_window_counts_as_never_published():
    assert decode_shard_end(encode_shard_end(1, 60 * S, 2, IDENTITY), IDENTITY, 2) == (1, 60 * S)
    assert decode_shard_end(encode_shard_end(1, 60 * S, 2, IDENTITY), IDENTITY, 4) is None
    other = StreamIdentity("NS.example", "Readings", "$Default", 10 * S, 5 * S)
    assert decode_shard_end(encode_shard_end(1, 60 * S, 2, other), IDENTITY, 2) is None
    assert decode_shard_end(b"{", IDENTITY, 2) is None


def _windows(*ends_and_devices: tuple[int, str]) -> pa.Table:
    ends, devices = zip(*ends_and_devices)
    return window_table(ends, devices, "t")


def _device_of_shard(shard: int, shards: int = 2) -> str:
    from sensorflow.windowing.shards import shard_of

    return next(f"d{i}" for i in range(100) if shard_of(f"d{i}", "t", shards) == shard)


def test_the_committed_closure_merges_published_shard_ends():
    windows = CommittedWindows(2, floor=10 * S)
    assert windows.closed_through_with({}) == 10 * S
    windows.handed(_windows((30 * S, _device_of_shard(0))))
    windows.committed()
    assert windows.committed_ends() == [30 * S, 10 * S]
    assert windows.closed_through_with({}) == 10 * S  # shard 1: nobody published, floor
    assert windows.closed_through_with({1: 25 * S}) == 25 * S
    assert windows.closed_through_with({0: 20 * S, 1: 40 * S}) == 30 * S  # a stale published end never lowers ours


class _MemoryBlobs:
    """BlobCheckpoints' interface over dicts (what two processes share)."""

    def __init__(self) -> None:
        self.partitions: dict[str, tuple[int, ResumePoint]] = {}
        self.shards: dict[int, int] = {}
        self.checkpoints: dict[str, tuple[int, str]] = {}

    def save(self, start, events) -> None:
        self.partitions.update({p: (start.closed_through, pt) for p, pt in start.partitions.items()})
        self.checkpoints.update(events)

    def publish_shard_ends(self, ends, shards) -> None:
        self.shards.update(ends)

    def shard_ends(self, shards) -> dict[int, int]:
        return dict(self.shards)


def _lateness(board: ResumeBoard) -> LatenessLogic:
    return LatenessLogic(5 * S, 2, None, board)


def _readings(partition: str, positions: list[int], seconds: list[float], progress: SourceProgress | None = None) -> ReadingBatch:
    n = len(positions)
    table = pa.table({"position": positions, "element": [0] * n, "ts": [int(s * S) for s in seconds],
                      "device": ["d"] * n, "tag": ["t"] * n, "value": [1.0] * n}, schema=READING_SCHEMA)
    return ReadingBatch(partition, table, progress=progress)


def test_two_processes_write_only_their_partitions_with_c_from_each_others_shards():
    blobs = _MemoryBlobs()
    with_sink, without_sink = ResumeBoard(2), ResumeBoard(2)  # process A keeps partition 0's log, B the window sink
    lateness = _lateness(without_sink)
    offsets = [b"o10", b"o11", b"o12"]
    lateness.on_batch([_readings("0", [10, 11, 12], [100, 101, 102], SourceProgress(None, np.array([10, 11, 12]), offsets))])
    lateness.on_batch([_readings("0", [13], [120], SourceProgress(13))])  # durable: everything before 13 is done
    for shard in (0, 1):
        with_sink.windows.handed(_windows((105 * S, _device_of_shard(shard))))
    with_sink.windows.committed()
    a = Checkpointer(blobs, without_sink, shards_shared=True)
    b = Checkpointer(blobs, with_sink, shards_shared=True)
    a.flush()
    assert blobs.partitions == {"0": (BEFORE_TIME, ResumePoint(10, BEFORE_TIME, 13))}  # nothing known committed yet
    b.flush()  # B publishes its shard ends; it holds no partition log, so writes no partition
    assert blobs.shards == {0: 105 * S, 1: 105 * S} and set(blobs.partitions) == {"0"}
    a.flush()
    # C = 105 s from B's shards: every reading before 13 is in a stored window, restart at 13
    assert blobs.partitions == {"0": (105 * S, ResumePoint(13, 97 * S, 13))}
    assert blobs.checkpoints == {"0": (12, "o12")}


def test_a_batch_carrying_only_progress_reaches_the_board_and_no_shard():
    board = ResumeBoard(2)
    lateness = _lateness(board)
    out, _ = lateness.on_batch([_readings("1", [0, 1], [10, 11])])
    assert len(out) == 2  # one message per shard
    alone = ReadingBatch("1", READING_SCHEMA.empty_table(), progress=SourceProgress(2, alone=True))
    out, _ = lateness.on_batch([alone])
    assert out == []  # no sign of life for the window shards' idle clocks
    assert board.current().partitions["1"] == ResumePoint(0, BEFORE_TIME, 2)  # durable at 2; nothing committed yet


class _Host:
    """The receiver process's interface, fed by the test."""

    def __init__(self) -> None:
        self.inbox: list[Received] = []

    def start(self, partition, start, status) -> None:
        pass

    def take(self, partition, most, max_bytes=None):
        taken, self.inbox = self.inbox[:most], self.inbox[most:]  # the test's batches are small: no byte bound
        return taken

    def waiting(self, partition) -> bool:
        return bool(self.inbox)

    def stop(self, partition) -> None:
        pass


def _source(cluster: bool = False, progress: bool = True) -> tuple[EventHubsSource, _Host, object]:
    from pydantic import SecretStr

    host = _Host()
    connection = EventHubsConnection(connection_string=SecretStr("Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=s;EntityPath=hub"))
    source = EventHubsSource(connection, ReceiveOptions(), ["0"], {}, progress, threading.Event(), host, cluster)
    return source, host, source.build_part("read", "0", None)


def test_the_source_carries_offsets_and_each_durable_position_once():
    source, host, part = _source()
    host.inbox.append(Received.of([b"a", b"b"], [0, 1], [0, 0], [b"100", b"101"]))
    first = part.next_batch()
    assert [b.progress.durable for b in first] == [None] and list(first[0].progress.offsets) == [b"100", b"101"]
    part.snapshot()
    host.inbox.append(Received.of([b"c"], [2], [0], [b"102"]))
    second = part.next_batch()  # the snapshot at 2 is proven now; it rides on the next batch
    assert [(b.progress.durable, len(b)) for b in second] == [(2, 1)]
    part.snapshot()
    idle = part.next_batch()  # nothing received: a batch of no messages carries the new durable position
    assert [(b.progress.durable, b.progress.alone, b.messages) for b in idle] == [(3, True, 0)]
    part.snapshot()
    assert part.next_batch() == []  # the same position again: nothing to carry
    plain_source, plain_host, plain = _source(progress=False)
    plain_host.inbox.append(Received.of([b"a"], [0], [0], [b"100"]))
    plain.snapshot()
    assert [b.progress for b in plain.next_batch()] == [None]  # replay-like: nothing extra


def test_a_cluster_member_sends_the_final_durable_position_before_it_stops():
    source, host, part = _source(cluster=True)
    host.inbox.append(Received.of([b"a", b"b"], [0, 1], [0, 0], [b"100", b"101"]))
    part.next_batch()
    source.stop.set()
    assert part.next_batch() == []  # the last events are not proven processed yet
    part.snapshot()
    final = part.next_batch()
    assert [(b.progress.durable, b.progress.alone) for b in final] == [(2, True)]
    with pytest.raises(StopIteration):
        part.next_batch()
    one_process, host, alone = _source(cluster=False)
    host.inbox.append(Received.of([b"a"], [0], [0], [b"100"]))
    alone.next_batch()
    one_process.stop.set()
    with pytest.raises(StopIteration):  # one process: the final positions are used after the flow ends
        alone.next_batch()


def test_a_message_batch_without_messages_decodes_to_nothing_but_its_progress():
    from sensorflow.ingest.decode import DecodeConfig
    from sensorflow.windowing.dataflow import _decode
    from sensorflow.windowing.stats import RunStats

    decoded = _decode(DecodeConfig(), RunStats(), MessageBatch.carrying("0", SourceProgress(5, alone=True)))
    assert (len(decoded.readings), len(decoded.dead_letters), decoded.readings.progress.durable) == (0, 0, 5)


def encode_resume(start: ResumeStart, identity: StreamIdentity) -> bytes:
    """The single resume blob earlier versions wrote (this one only reads it)."""
    return orjson.dumps({
        "format": 1, "window_ns": identity.window_ns, "lateness_ns": identity.lateness_ns,
        "closed_through": start.closed_through,
        "partitions": {
            p: {"position": pt.position, "watermark": pt.watermark, "drop_before": pt.drop_before}
            for p, pt in sorted(start.partitions.items())
        },
        "written_at": "2026-11-01T00:00:00+00:00",
    })


def test_resume_blob_round_trips_and_refuses_other_window_settings():
    identity = StreamIdentity("ns", "hub", "$Default", 5 * S, 5 * S)
    start = ResumeStart(60 * S, {"0": ResumePoint(10, 50 * S, 20), "1": ResumePoint(0, -(2**63), 0)})
    assert decode_resume(encode_resume(start, identity), identity) == start
    other = StreamIdentity("ns", "hub", "$Default", 10 * S, 5 * S)
    with pytest.raises(CheckpointMismatch, match="window 5 s"):
        decode_resume(encode_resume(start, identity), other)
    with pytest.raises(CheckpointMismatch, match="not readable"):
        decode_resume(b"{", identity)

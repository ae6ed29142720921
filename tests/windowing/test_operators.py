"""The Bytewax glue around the window math: per-partition lateness and fan-out, per-shard windows.

(The write-batch step, ``WriteBatchLogic``, has its own file: test_write_batches.py.)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sensorflow.records.dead_letters import DeadLetterBatch
from sensorflow.records.readings import READING_SCHEMA, ReadingBatch
from sensorflow.records.windows import END_OF_TIME, WindowBatch
from sensorflow.windowing.operators import LatenessLogic, WindowLogic
from sensorflow.windowing.shards import ShardMessage
from sensorflow.windowing.tumbling import WindowAggregator

S = 1_000_000_000
T0 = 1_767_225_600 * S


def readings(seconds: list[float], devices: list[str] | None = None, first_position: int = 0) -> pa.Table:
    n = len(seconds)
    devices = devices or ["d"] * n
    return pa.table(
        {
            "position": pa.array(np.arange(first_position, first_position + n), pa.int64()),
            "element": pa.array(np.zeros(n), pa.int32()),
            "ts": pa.array([T0 + round(s * S) for s in seconds], pa.int64()),
            "device": devices,
            "tag": ["t"] * n,
            "value": pa.array(np.arange(n, dtype=np.float64)),
        },
        schema=READING_SCHEMA,
    )


def test_lateness_sends_late_readings_to_dead_letters_and_every_shard_a_message():
    logic = LatenessLogic(lateness_ns=5 * S, shards=3, state=None)
    out, _ = logic.on_batch([ReadingBatch("0", readings([10, 11, 4, 6, 12], ["a", "b", "c", "d", "e"]))])
    late = [item for item in out if isinstance(item, DeadLetterBatch)]
    routed = [item for item in out if not isinstance(item, DeadLetterBatch)]
    assert len(late) == 1 and late[0].table["position"].to_pylist() == [2]  # 4 s < 11 s - 5 s
    assert late[0].table["reason"].to_pylist() == ["late"]
    assert sorted(shard for shard, _ in routed) == ["0", "1", "2"]  # every shard learns the watermark
    assert {m.watermark for _, m in routed} == {T0 + 7 * S}  # max read 12 s - lateness 5 s
    assert sorted(p for _, m in routed for p in m.readings["position"].to_pylist()) == [0, 1, 3, 4]


def test_end_of_input_sends_the_end_of_time_watermark():
    logic = LatenessLogic(lateness_ns=0, shards=1, state=None)
    out, _ = logic.on_batch([ReadingBatch("0", readings([1, 2]), eof=True)])
    [(shard, message)] = out
    assert (shard, message.watermark) == ("0", END_OF_TIME)


def test_a_shard_emits_windows_once_every_partition_has_passed_their_end():
    logic = WindowLogic(WindowAggregator(5 * S, ["0", "1"]))
    first, _ = logic.on_batch([ShardMessage("0", readings([1, 2, 6]), T0 + 6 * S)])
    assert first == []  # partition 1 has read nothing yet: its watermark holds every window open
    # values 0, 1 (partition 0, at 1 s and 2 s) and 0 (partition 1, at 3 s) fall in the window ending at 5 s
    out, _ = logic.on_batch([ShardMessage("1", readings([3]), T0 + 8 * S)])
    [closed] = out
    assert isinstance(closed, WindowBatch)
    assert closed.table.to_pydict() == {
        "window_end": [T0 + 5 * S], "device": ["d"], "tag": ["t"], "value": [1 / 3], "count": [3], "min": [0.0], "max": [1.0],
    }


def test_a_reading_for_a_window_already_closed_is_a_late_dead_letter():
    logic = WindowLogic(WindowAggregator(5 * S, ["0"]))
    logic.on_batch([ShardMessage("0", readings([1]), T0 + 7 * S)])
    out, _ = logic.on_batch([ShardMessage("0", readings([2], first_position=9), T0 + 7 * S)])
    [late] = out
    assert isinstance(late, DeadLetterBatch)
    assert late.table["position"].to_pylist() == [9]
    assert late.table["reason"].to_pylist() == ["late: window already closed"]


def test_only_a_live_shard_asks_to_be_notified_for_idle_partitions():
    replay = WindowLogic(WindowAggregator(5 * S, ["0"]))
    live = WindowLogic(WindowAggregator(5 * S, ["0", "1"], idle_timeout_ns=2 * S))
    live.on_batch([ShardMessage("0", readings([1]), T0 + 1 * S)])
    assert replay.notify_at() is None
    assert live.notify_at() is not None

"""Typed recovery state: every snapshot survives Bytewax's pickling; another release's state is refused."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.records.readings import READING_SCHEMA, ReadingBatch
from sensorflow.records.windows import BEFORE_TIME, WINDOW_SCHEMA, WindowBatch
from sensorflow.windowing.operators import LatenessLogic, LatenessSnapshot, WriteBatchLogic, WriteBatchSnapshot
from sensorflow.windowing.resume.board import (
    AlreadyStored,
    PartitionTracker,
    ResumeBoard,
    ResumeLog,
    ResumeLogSnapshot,
    ResumePoint,
    ResumeStart,
    TrackerSnapshot,
)
from sensorflow.windowing.state import SNAPSHOT_VERSION, RecoveryStateError
from sensorflow.windowing.tumbling import WindowAggregator, WindowSnapshot

S = 1_000_000_000
L = 5 * S


def _readings(seconds: list[float], positions: list[int] | None = None) -> pa.Table:
    n = len(seconds)
    return pa.table(
        {"position": positions or list(range(n)), "element": [0] * n, "ts": [int(s * S) for s in seconds],
         "device": ["d"] * n, "tag": ["t"] * n, "value": [float(i) for i in range(n)]},
        schema=READING_SCHEMA,
    )


def _closed_windows(end: int, sensors: int) -> WindowBatch:
    table = pa.table(
        {"window_end": pa.array(np.full(sensors, end), pa.int64()), "device": [str(i) for i in range(sensors)],
         "tag": ["t"] * sensors, "value": np.ones(sensors), "count": pa.array(np.ones(sensors, np.int64)),
         "min": np.ones(sensors), "max": np.ones(sensors)},
        schema=WINDOW_SCHEMA,
    )
    return WindowBatch(table)


def _write_batches(state: WriteBatchSnapshot | None = None) -> WriteBatchLogic:
    return WriteBatchLogic(min_rows=100, max_rows=1_000, min_windows=3, max_wait=timedelta(seconds=60), state=state)


def _window_state() -> WindowSnapshot:
    agg = WindowAggregator(L, ["a", "b"])
    agg.add("a", _readings([1, 2, 7, 12]), 6 * S)
    agg.add("b", _readings([3, 11]), 8 * S)  # the window ending at 5 s closes; two stay open
    return agg.snapshot()


def _tracked_lateness() -> LatenessLogic:
    """A lateness step restarted from checkpoints, part-way through the readings the store already has."""
    board = ResumeBoard(1, ResumeStart(10 * S, {"0": ResumePoint(20, 3 * S, 40)}))
    logic = LatenessLogic(L, 1, None, board)
    logic.on_batch([ReadingBatch("0", _readings([8, 9, 12], [20, 21, 22]))])
    return logic


def _snapshots() -> dict[str, object]:
    """One of every snapshot type, each holding something (a tracker mid-restart, open windows, tables)."""
    tracked = _tracked_lateness().snapshot()
    write = _write_batches()
    write.on_batch([_closed_windows(5 * S, 10)])
    return {
        "window": _window_state(),
        "lateness": tracked,
        "lateness without a board": LatenessLogic(L, 1, None).snapshot(),
        "tracker": tracked.tracker,
        "resume log": tracked.tracker.log,
        "write batches": write.snapshot(),
    }


@pytest.mark.parametrize("roundtrip", [lambda s: pickle.loads(pickle.dumps(s)), copy.deepcopy], ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("name", list(_snapshots()))
def test_every_snapshot_round_trips_unchanged(name, roundtrip):
    state = _snapshots()[name]
    again = roundtrip(state)
    assert type(again) is type(state) and again == state and again.version == SNAPSHOT_VERSION


def test_snapshots_hold_what_their_step_needs_by_name():
    tracked = _tracked_lateness().snapshot()
    assert isinstance(tracked, LatenessSnapshot) and isinstance(tracked.tracker, TrackerSnapshot)
    assert tracked.watermark == 7 * S and tracked.tracker.partition == "0"
    assert tracked.tracker.stored == AlreadyStored(10 * S, 40)
    log = tracked.tracker.log
    assert isinstance(log, ResumeLogSnapshot)
    assert (log.base_position, log.first, log.before, log.after, log.largest) == (20, (20,), (3 * S,), (7 * S,), (12 * S,))
    window = _window_state()
    assert window.watermarks == {"a": 6 * S, "b": 8 * S} and window.closed_through == L
    assert sum(t.num_rows for t in window.pending) == 2 and all(isinstance(t, pa.Table) for t in window.pending)


def test_restored_steps_carry_on_as_the_originals():
    state = pickle.loads(pickle.dumps(_window_state()))
    for agg in (WindowAggregator.restore(L, ["a", "b"], state), WindowAggregator.restore(L, ["a", "b"], _window_state())):
        agg.add("a", _readings([]), 20 * S)
        closed, _ = agg.add("b", _readings([]), 20 * S)
        assert closed.table["window_end"].to_pylist() == [10 * S, 15 * S]
    board = ResumeBoard(1)
    restored = LatenessLogic(L, 1, pickle.loads(pickle.dumps(_tracked_lateness().snapshot())), board)
    assert restored.snapshot() == _tracked_lateness().snapshot() and board.held() == {"0"}
    write = _write_batches()
    write.on_batch([_closed_windows(5 * S, 60)])
    again = _write_batches(copy.deepcopy(write.snapshot()))
    assert again.rows == 60 and again.ends == {5 * S}


def _restores(state: object) -> dict[str, object]:
    return {
        "window": lambda: WindowAggregator.restore(L, ["a"], state),
        "lateness": lambda: LatenessLogic(L, 1, state),
        "tracker": lambda: PartitionTracker(ResumeBoard(1), state),
        "resume log": lambda: ResumeLog.restore(state),
        "write batches": lambda: _write_batches(state),
    }


_LEGACY = [  # what the release before typed state wrote
    ("window", ({"a": 3 * S}, BEFORE_TIME, ())),
    ("lateness", 3 * S),
    ("lateness", (3 * S, None)),
    ("tracker", ("0", (20, 3 * S, ((20,), (3 * S,), (7 * S,), (12 * S,))), (10 * S, 40))),
    ("resume log", (20, 3 * S, ((20,), (3 * S,), (7 * S,), (12 * S,)))),
    ("write batches", ()),
]


def _refused(restore) -> str:
    with pytest.raises(RecoveryStateError) as raised:
        restore()
    message = str(raised.value)
    assert "\n" not in message
    assert "written by another sensorflow release" in message and "fresh --recovery-dir" in message
    return message


@pytest.mark.parametrize("name, legacy", _LEGACY)
def test_a_legacy_state_is_refused_not_misread(name, legacy):
    assert f"recovery state is {type(legacy).__name__}, not " in _refused(_restores(legacy)[name])


@pytest.mark.parametrize("name", list(_restores(None)))
def test_a_snapshot_of_another_version_is_refused(name):
    current = _snapshots()[name]
    other = dataclasses.replace(current, version=SNAPSHOT_VERSION + 1)
    message = _refused(_restores(other)[name])
    assert f"{type(current).__name__} version {SNAPSHOT_VERSION + 1}, not " in message


def test_a_nested_snapshot_of_another_version_is_refused_too():
    state = _tracked_lateness().snapshot()
    log = dataclasses.replace(state.tracker.log, version=SNAPSHOT_VERSION + 1)
    nested = dataclasses.replace(state, tracker=dataclasses.replace(state.tracker, log=log))
    assert "ResumeLogSnapshot version" in _refused(lambda: LatenessLogic(L, 1, nested, ResumeBoard(1)))


def test_restore_merges_a_sensor_and_window_repeated_across_tables():
    """Partial tables as any release of this snapshot version may hold them: a sensor and window in two tables."""
    from sensorflow.records.windows import END_OF_TIME
    from sensorflow.windowing.tumbling import _PARTIAL_SCHEMA

    def partial(rows: list[tuple[str, int, float, int, float, float]]) -> pa.Table:
        return pa.table(
            {"device": [r[0] for r in rows], "tag": ["t"] * len(rows), "window_end": [r[1] for r in rows],
             "sum": [r[2] for r in rows], "count": [r[3] for r in rows], "min": [r[4] for r in rows], "max": [r[5] for r in rows]},
            schema=_PARTIAL_SCHEMA,
        )

    state = WindowSnapshot(
        SNAPSHOT_VERSION, {"a": 6 * S}, L,
        (partial([("d", 10 * S, 3.0, 2, 1.0, 2.0), ("e", 15 * S, 5.0, 1, 5.0, 5.0)]), partial([("d", 10 * S, 4.0, 1, 4.0, 4.0)])),
    )
    agg = WindowAggregator.restore(L, ["a"], state)
    assert agg.open_windows().rows == 2
    again = WindowAggregator.restore(L, ["a"], pickle.loads(pickle.dumps(agg.snapshot())))
    closed, _ = again.add("a", _readings([]), END_OF_TIME)
    assert closed.table.to_pylist() == [
        {"window_end": 10 * S, "device": "d", "tag": "t", "value": 7.0 / 3, "count": 3, "min": 1.0, "max": 4.0},
        {"window_end": 15 * S, "device": "e", "tag": "t", "value": 5.0, "count": 1, "min": 5.0, "max": 5.0},
    ]

"""Resume points for restarts without Bytewax state: the pure log, the committed closure, and the real dataflow."""

from __future__ import annotations

import copy
import pickle
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.run import cli_main

from sensorflow.ingest.decode import DecodeConfig
from sensorflow.records.readings import MessageBatch
from sensorflow.records.timeparse import MISSING
from sensorflow.records.windows import BEFORE_TIME
from sensorflow.store import open_store
from sensorflow.windowing.dataflow import FlowConfig, build_flow
from sensorflow.windowing.resume.board import (
    CommittedWindows,
    ResumeBoard,
    ResumeLog,
    ResumePoint,
    ResumeStart,
)
from sensorflow.windowing.sink import WindowSink
from sensorflow.windowing.stats import RunStats
from tests.conftest import dead_letters_frame, windows_frame
from tests.support.builders import window_table

S = 1_000_000_000


def test_resume_point_is_the_first_batch_that_reaches_the_closure():
    log = ResumeLog(None, BEFORE_TIME)
    # (first position, watermark before, watermark after, largest ts) per batch
    for mark in [(0, BEFORE_TIME, 5 * S, 10 * S), (10, 5 * S, 9 * S, 14 * S), (20, 9 * S, 20 * S, 25 * S), (30, 20 * S, 25 * S, 30 * S)]:
        log.record(*mark)
    # closure 15 s: batch at 20 is the first with an event at or after 15 s
    assert log.resume_point(15 * S, durable=40) == ResumePoint(20, 9 * S, 40)
    # only batches before the durable position count: nothing open before 20 -> resume at 20 itself
    assert log.resume_point(15 * S, durable=20) == ResumePoint(20, 9 * S, 20)
    # everything stored: resume at the durable position with the watermark there
    assert log.resume_point(35 * S, durable=40) == ResumePoint(40, 25 * S, 40)
    # nothing stored yet: the very first reading
    assert log.resume_point(BEFORE_TIME, durable=40) == ResumePoint(0, BEFORE_TIME, 40)


def test_log_prunes_and_merges_conservatively_and_survives_pickle():
    log = ResumeLog(0, BEFORE_TIME, max_entries=4)
    for i in range(9):
        log.record(i * 10, i * S, (i + 1) * S, (i + 3) * S)
    assert len(log) <= 4
    point = log.resume_point(6 * S, durable=90)
    exact = ResumePoint(30, 3 * S, 90)  # batch 3 is the first with largest ts >= 6 s
    assert point.position <= exact.position and point.watermark <= exact.watermark
    log.prune(point)
    assert log.base_position == point.position
    again = ResumeLog.restore(pickle.loads(pickle.dumps(log.snapshot())))
    assert ResumeLog.restore(copy.deepcopy(log.snapshot())).snapshot() == again.snapshot() == log.snapshot()
    assert again.resume_point(6 * S, 90) == log.resume_point(6 * S, 90)


def _windows(rows: list[tuple[int, str, str]]) -> pa.Table:
    ends, devices, tags = zip(*rows)
    return window_table(ends, devices, tags)


def test_committed_closure_is_the_minimum_over_shards_and_moves_only_on_commit():
    windows = CommittedWindows(shards=2)
    sensors = [(str(d), "1") for d in range(20)]
    windows.handed(_windows([(10 * S, d, t) for d, t in sensors]))
    assert windows.closed_through == BEFORE_TIME  # handed, not committed
    windows.committed()
    assert windows.closed_through == 10 * S
    windows.handed(_windows([(15 * S, "0", "1")]))  # one shard only
    windows.committed()
    assert windows.closed_through == 10 * S


class _ListPartition(StatefulSourcePartition):
    def __init__(self, pid: str, messages: list[bytes], start: int, stop_at: int | None, source: _ListSource):
        self.pid, self.messages, self.next, self.stop_at, self.source = pid, messages, start, stop_at, source
        self.snapshotted = None

    def next_batch(self):
        if self.snapshotted is not None:
            self.source.board.source_durable(self.pid, self.snapshotted)
            self.snapshotted = None
        end = min(self.next + 7, len(self.messages) if self.stop_at is None else self.stop_at)
        if self.next >= end:
            if self.stop_at is None:  # the whole input: close every window
                self.source.final[self.pid] = self.next
                if not self.source.eof_sent.get(self.pid):
                    self.source.eof_sent[self.pid] = True
                    return [MessageBatch(self.pid, [], np.zeros(0, np.int64), np.zeros(0, np.int64), eof=True)]
            self.source.final[self.pid] = self.next
            raise StopIteration
        positions = np.arange(self.next, end, dtype=np.int64)
        self.next = end
        return [MessageBatch(self.pid, self.messages[positions[0]:end], positions, np.full(len(positions), MISSING))]

    def snapshot(self):
        self.snapshotted = self.next
        return self.next


class _ListSource(FixedPartitionedSource):
    """In-memory partitions that start at given positions and may stop early (no end-of-input)."""

    def __init__(self, partitions: dict[str, list[bytes]], board: ResumeBoard, starts=None, stop_at=None):
        self.partitions, self.board = partitions, board
        self.starts, self.stop_at = starts or {}, stop_at or {}
        self.final: dict[str, int] = {}
        self.eof_sent: dict[str, bool] = {}

    def list_parts(self):
        return list(self.partitions)

    def build_part(self, step_id, for_part, resume_state):
        start = self.starts.get(for_part, 0)
        return _ListPartition(for_part, self.partitions[for_part], start, self.stop_at.get(for_part), self)


def _messages(rng: np.random.Generator, n: int, t0: float) -> list[bytes]:
    t = t0 + np.cumsum(rng.exponential(0.05, n)) + np.where(rng.random(n) < 0.2, rng.uniform(-8, 0, n), 0)
    out = []
    for i in range(n):
        ts = np.datetime_as_string(np.datetime64(int(t[i] * 1e6), "us"), unit="us") + "Z"
        out.append(orjson.dumps({"TS": ts, "Device": int(rng.integers(0, 6)), "Tag": 1, "Value": round(float(rng.normal(50, 9)), 3)}))
    return out


def _run(partitions, db: Path, board: ResumeBoard, starts=None, stop_at=None) -> _ListSource:
    source = _ListSource(partitions, board, starts, stop_at)
    stats = RunStats()
    config = FlowConfig(partitions=tuple(partitions), decode=DecodeConfig(max_clock_skew_ns=10**18))
    url = f"sqlite:///{db}"
    with open_store(url) as store:
        store.create_schema()
    flow = build_flow(source, config, WindowSink(url, stats, "inline", board.windows), stats, board)
    cli_main(flow, epoch_interval=timedelta(milliseconds=1))
    return source


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restart_from_resume_start_without_bytewax_state_gives_the_uninterrupted_table(tmp_path: Path, seed: int):
    rng = np.random.default_rng(seed)
    partitions = {p: _messages(rng, 600, 1_767_225_600) for p in ("0", "1", "2")}
    clean = tmp_path / "clean.db"
    _run(partitions, clean, ResumeBoard(1))

    crashed = tmp_path / "crashed.db"
    stop_at = {p: int(rng.integers(100, 500)) for p in partitions}
    board = ResumeBoard(1)
    first = _run(partitions, crashed, board, stop_at=stop_at)
    for p, position in first.final.items():  # the flow ended: everything it read is processed
        board.source_durable(p, position)
    start = board.current()
    assert start.closed_through > BEFORE_TIME
    assert all(start.partitions[p].position <= stop_at[p] for p in partitions)
    # A restart with NO Bytewax state, from the resume points only.
    restarted = ResumeBoard(1, ResumeStart(start.closed_through, dict(start.partitions)))
    _run(partitions, crashed, restarted, starts={p: pt.position for p, pt in start.partitions.items()})
    assert restarted.stored_skipped > 0

    a, b = windows_frame(clean), windows_frame(crashed)
    assert len(a) == len(b) > 0
    assert a[["TS", "Device", "Tag", "Count", "Min", "Max"]].equals(b[["TS", "Device", "Tag", "Count", "Min", "Max"]])
    np.testing.assert_allclose(a["Value"], b["Value"], rtol=1e-9)
    assert dead_letters_frame(clean).equals(dead_letters_frame(crashed))


def test_board_keeps_previous_points_and_only_moves_forward():
    start = ResumeStart(10 * S, {"0": ResumePoint(50, 3 * S, 60)})
    board = ResumeBoard(1, start)
    assert board.current() == start  # nothing reported yet
    log = ResumeLog(50, 3 * S)
    board.attach("0", log)
    log.record(60, 3 * S, 8 * S, 12 * S)
    board.source_durable("0", 70)
    assert board.current().partitions["0"] == ResumePoint(60, 3 * S, 70)

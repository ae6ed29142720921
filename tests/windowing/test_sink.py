"""The sink: window batches and dead letters reach the store by the snapshot (the commit barrier), through one writer."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pyarrow as pa
import pytest

from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch
from sensorflow.records.windows import WindowBatch
from sensorflow.store import open_store
from sensorflow.windowing.resume.board import CommittedWindows
from sensorflow.windowing.sink import WINDOW_SINK_PARTITION, WindowSink
from sensorflow.windowing.stats import RunStats
from tests.conftest import dead_letters_frame, windows_frame
from tests.support.builders import T0, W, window_table


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'sink.db'}"
    with open_store(url) as store:
        store.create_schema()
    return url


def _batch(first_end: int, sensors: int) -> WindowBatch:
    return WindowBatch(window_table(T0 + first_end * W, [str(i) for i in range(sensors)], "t", 2.0, 4, 1.0, 3.0))


@pytest.mark.parametrize("writer", ["inline", "process"])
def test_window_batches_are_committed_by_the_snapshot_and_counted(store_url: str, tmp_path: Path, writer: str):
    stats = RunStats()
    sink = WindowSink(store_url, stats, writer)
    assert sink.list_parts() == [WINDOW_SINK_PARTITION]
    part = sink.build_part("write_windows", WINDOW_SINK_PARTITION, None)
    try:
        part.write_batch([_batch(1, 3), WindowBatch(window_table([], [], []))])
        part.write_batch([_batch(2, 3)])
        assert part.snapshot() is None
        assert stats.windows_written == 6  # every handed row is committed once snapshot() returns
        frame = windows_frame(tmp_path / "sink.db")
        assert len(frame) == 6 and set(frame["Count"]) == {4} and set(frame["Value"]) == {2.0}
    finally:
        part.close()
    assert stats.write_buckets and sum(stats.write_buckets) == 2  # one observation per handed batch


def test_the_sink_tells_the_resume_board_what_it_handed_and_when_it_is_committed(store_url: str):
    commits = CommittedWindows(1)
    part = WindowSink(store_url, RunStats(), "inline", commits).build_part("write_windows", WINDOW_SINK_PARTITION, None)
    try:
        part.write_batch([_batch(1, 2), _batch(2, 2)])
        before = commits.closed_through
        part.snapshot()
        assert commits.closed_through == T0 + 2 * W > before
    finally:
        part.close()


def test_an_unknown_writer_kind_is_refused(store_url: str):
    with pytest.raises(ValueError, match="writer must be 'process' or 'inline'"):
        WindowSink(store_url, RunStats(), "threads")


def _letters() -> tuple[DeadLetterBatch, DeadLetterBatch]:
    letters = DeadLetterBatch.from_records([
        DeadLetter("0", 3, 0, "bad_json: unexpected end", b"{"),
        DeadLetter("0", 9, 1, "missing_field: Value", b"{}"),
    ])
    late = DeadLetterBatch.late("1", pa.table({
        "position": pa.array([5, 6], pa.int64()), "element": pa.array([0, 0], pa.int32()),
        "ts": pa.array([T0, T0 + 1_234_567_891], pa.int64()), "device": ["d", "e"], "tag": ["t", "t"], "value": [1.5, 2.5],
    }))
    return letters, late


@pytest.mark.parametrize("writer", ["inline", "process"])
def test_dead_letters_go_through_the_writer_committed_by_the_snapshot_and_counted_by_reason(
    store_url: str, tmp_path: Path, writer: str,
):
    stats = RunStats()
    part = WindowSink(store_url, stats, writer).build_part("write_windows", WINDOW_SINK_PARTITION, None)
    letters, late = _letters()
    try:
        part.write_batch([letters, _batch(1, 2), late])
        part.write_batch([letters])  # a replay of the same letters: the same rows
        part.snapshot()
        assert stats.windows_written == 2
        assert dict(stats.dead_letters_by_reason) == {"bad_json": 2, "missing_field": 2, "late": 2}
        with closing(sqlite3.connect(tmp_path / "sink.db")) as db:  # committed once snapshot() returns
            rows = db.execute("SELECT Partition, Position, Reason, TS FROM DeadLetters ORDER BY 1, 2").fetchall()
        assert rows == [
            ("0", 3, "bad_json: unexpected end", None), ("0", 9, "missing_field: Value", None),
            ("1", 5, "late", "2026-01-01 00:00:00.000"), ("1", 6, "late", "2026-01-01 00:00:01.234"),
        ]
    finally:
        part.close()


def test_dead_letters_alone_are_committed_by_the_snapshot(store_url: str, tmp_path: Path):
    stats = RunStats()
    part = WindowSink(store_url, stats, "process").build_part("write_windows", WINDOW_SINK_PARTITION, None)
    letters, _ = _letters()
    try:
        part.write_batch([letters])
        part.snapshot()
        assert len(dead_letters_frame(tmp_path / "sink.db")) == 2 and stats.dead_letters_written == 2
        assert stats.windows_written == 0
    finally:
        part.close()



def test_without_the_barrier_the_snapshot_counts_what_is_committed_and_does_not_wait(store_url: str, tmp_path: Path):
    import os
    import signal
    import time

    from sensorflow.windowing.writer import COMMIT_AFTER

    stats = RunStats()
    part = WindowSink(store_url, stats, "process", barrier=False).build_part("write_windows", WINDOW_SINK_PARTITION, None)
    letters, _ = _letters()
    try:
        process = part._writer._process
        process.send_signal(signal.SIGSTOP)  # a writer that cannot answer: the snapshot must not wait for it
        try:
            part.write_batch([_batch(1, 3), letters])
            part.snapshot()
            assert stats.windows_written == 0 and stats.dead_letters_written == 0
        finally:
            os.kill(process.pid, signal.SIGCONT)
        deadline = time.monotonic() + COMMIT_AFTER + 10
        while (stats.windows_written, stats.dead_letters_written) != (3, 2) and time.monotonic() < deadline:
            part.snapshot()  # the writer commits by itself; a later snapshot counts it
            time.sleep(0.02)
        assert (stats.windows_written, stats.dead_letters_written) == (3, 2)
        part.write_batch([_batch(2, 3)])
    finally:
        part.close()  # commits and counts the rest before it returns
    assert stats.windows_written == 6 and len(windows_frame(tmp_path / "sink.db")) == 6
    assert sum(stats.write_buckets) == 3  # one observation per handed batch


def test_checkpoints_need_the_barrier(store_url: str):
    with pytest.raises(ValueError, match="need the commit barrier"):
        WindowSink(store_url, RunStats(), "process", CommittedWindows(1), barrier=False)

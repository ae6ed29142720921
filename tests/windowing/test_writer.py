"""The store writer process: frames in, one transaction per gathered group, one ack per frame."""

import queue
import sqlite3

import numpy as np
import pyarrow as pa
import pytest

from windowing import writer as writer_module
from windowing.store import open_store
from windowing.tumbling import WINDOW_SCHEMA
from windowing.writer import ProcessWriter, WriterError, _gather, _to_ipc

S = 5_000_000_000


def windows(end: int, sensors: int) -> pa.Table:
    n = sensors
    return pa.table(
        [
            pa.array(np.full(n, end * S + 1_800_000_000 * 10**9)),
            pa.array([str(i) for i in range(n)]),
            pa.array(["t"] * n),
            pa.array(np.full(n, float(end))),
            pa.array(np.ones(n, dtype=np.int64)),
            pa.array(np.ones(n)),
            pa.array(np.ones(n)),
        ],
        schema=WINDOW_SCHEMA,
    )


def test_gather_takes_what_is_queued_and_stops_at_markers_and_the_row_bound(monkeypatch):
    frames: queue.Queue = queue.Queue()
    for end in (1, 2, 3):
        frames.put(_to_ipc(windows(end, 10)))
    frames.put(b"")
    tables, end = _gather(frames)
    assert [t.num_rows for t in tables] == [10, 10, 10] and end == b""

    monkeypatch.setattr(writer_module, "_GATHER_ROWS", 15)
    for end in (1, 2, 3):
        frames.put(_to_ipc(windows(end, 10)))
    assert [t.num_rows for t in _gather(frames)[0]] == [10, 10]  # bound reached
    tables, end = _gather(frames)
    assert [t.num_rows for t in tables] == [10] and end == b"more"  # queue empty: write what there is
    frames.put(None)
    assert _gather(frames) == ([], None)


def test_the_process_writer_commits_every_table_and_counts_each(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with open_store(url) as store:
        store.create_schema()
    writer = ProcessWriter(url, depth=3)
    for end in range(1, 8):
        writer.submit(windows(end, 50))
    assert writer.drain() == 7 * 50
    writer.close()
    rows = sqlite3.connect(tmp_path / "w.db").execute("SELECT COUNT(*), SUM(Value) FROM SensorValues").fetchone()
    assert rows == (350, 50.0 * sum(range(1, 8)))


def test_a_failing_store_is_reported_not_hidden(tmp_path):
    writer = ProcessWriter(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no tables: the upsert fails
    writer.submit(windows(1, 5))
    with pytest.raises(WriterError, match="writing windows failed"):
        writer.drain()

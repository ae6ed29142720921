"""The store writer process: tables upserted into an open transaction, committed together, one ack each."""

import sqlite3
import time

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.records.windows import WindowBatch
from sensorflow.store import open_store
from sensorflow.windowing.writer import COMMIT_AFTER, COMMIT_ROWS, ProcessWriter, WriterError
from tests.support.builders import window_table

S = 5_000_000_000


def windows(end: int, sensors: int) -> pa.Table:
    return window_table(np.full(sensors, end * S + 1_800_000_000 * 10**9), [str(i) for i in range(sensors)], "t", float(end), 1, 1.0, 1.0)


@pytest.fixture
def store_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with open_store(url) as store:
        store.create_schema()
    return url


def _one_row(url: str, query: str) -> tuple:
    db = sqlite3.connect(url[len("sqlite:///") :])
    try:
        return db.execute(query).fetchone()
    finally:
        db.close()


def table_now(url: str) -> tuple:
    return _one_row(url, "SELECT COUNT(*), SUM(Value), COUNT(DISTINCT WrittenAt) FROM SensorValues")


def test_tables_handed_over_together_commit_together_and_are_counted_each(store_url):
    writer = ProcessWriter(store_url)
    for end in range(1, 8):
        writer.submit(windows(end, 50))
    assert writer.drain() == 7 * 50
    writer.close()
    count, total, written_at = table_now(store_url)
    assert (count, total) == (350, 50.0 * sum(range(1, 8)))
    assert written_at == 1  # one transaction (WrittenAt is its start on the database clock)


def dead_letters(partition: str, positions: range) -> pa.Table:
    from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch

    return DeadLetterBatch.from_records([DeadLetter(partition, p, 0, "bad_json: x", b"{") for p in positions]).table


def dead_letters_now(url: str) -> tuple:
    return _one_row(url, "SELECT COUNT(*), COUNT(DISTINCT WrittenAt) FROM DeadLetters")


def test_dead_letters_commit_in_the_windows_transaction_and_are_acknowledged_in_order(store_url):
    writer = ProcessWriter(store_url)
    writer.submit(windows(1, 50))
    writer.submit_dead_letters(dead_letters("0", range(3)))
    writer.submit(windows(2, 50))
    writer.submit_dead_letters(dead_letters("1", range(4)))
    writer.submit_dead_letters(dead_letters("0", range(3)))  # a replay: the same keys, no new rows
    assert writer.drain() == 100  # window rows only
    assert [len(reasons) for reasons in writer.committed_dead_letters()] == [3, 4, 3]
    assert writer.committed_dead_letters() == []
    writer.close()
    assert table_now(store_url)[::2] == (100, 1) and dead_letters_now(store_url) == (7, 1)  # one transaction


def test_dead_letters_alone_commit_by_themselves_after_a_while(store_url):
    writer = ProcessWriter(store_url)
    writer.submit_dead_letters(dead_letters("0", range(5)))
    deadline = time.monotonic() + COMMIT_AFTER + 5
    while dead_letters_now(store_url)[0] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead_letters_now(store_url)[0] == 5
    assert writer.drain() == 0 and [len(r) for r in writer.committed_dead_letters()] == [5]
    writer.close()


def test_an_open_transaction_commits_by_itself_after_a_while(store_url):
    writer = ProcessWriter(store_url)
    writer.submit(windows(1, 20))
    deadline = time.monotonic() + COMMIT_AFTER + 5
    while table_now(store_url)[0] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert table_now(store_url)[0] == 20  # visible without a drain: live stores stay fresh
    assert writer.drain() == 20
    writer.close()


def test_back_pressure_commits_before_more_is_handed_over(store_url):
    writer = ProcessWriter(store_url, max_pending_rows=100)
    for end in range(1, 6):
        writer.submit(windows(end, 60))  # each submit beyond the first waits for the one before
        assert writer._pending_rows <= 100
    assert writer.drain() == 300
    writer.close()
    assert table_now(store_url)[:2] == (300, 60.0 * 15)


def test_back_pressure_waits_for_the_writers_own_commit_when_it_holds_commit_rows(store_url, monkeypatch):
    # Default bound (2 x COMMIT_ROWS): a full pipe means the writer has COMMIT_ROWS to commit on
    # its own. A flush there would cut its transaction short (small commits cost more per row).
    flushes = []
    writer = ProcessWriter(store_url)
    monkeypatch.setattr(writer, "_flush", lambda: flushes.append(writer._pending_rows) or ProcessWriter._flush(writer))
    half = COMMIT_ROWS // 2 + 1
    for end in range(1, 5):  # the 4th exceeds the bound: it waits for acknowledgements
        writer.submit(windows(end, half))
    assert flushes == []
    assert writer.drain() == 4 * half
    assert flushes  # drain does ask for the commit
    writer.close()
    count, _, transactions = table_now(store_url)
    assert count == 4 * half
    assert transactions <= 3  # commits of >= COMMIT_ROWS (two tables each), then the drain's


def test_a_failing_store_is_reported_not_hidden(tmp_path):
    writer = ProcessWriter(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no tables: the upsert fails
    writer.submit(windows(1, 5))
    with pytest.raises(WriterError, match="writing windows failed"):
        writer.drain()


def test_a_writer_started_early_is_the_one_the_partition_takes_or_is_closed_unused(store_url):
    from sensorflow.windowing.sink import WindowSink
    from sensorflow.windowing.stats import RunStats

    sink = WindowSink(store_url, RunStats())
    sink.start_writer()
    started = sink._started
    part = sink.build_part("write", "windows", None)
    assert part._writer is started and sink._started is None
    part.write_batch([WindowBatch(windows(1, 7))])
    part.close()
    assert table_now(store_url)[0] == 7

    unused = WindowSink(store_url, RunStats())
    unused.start_writer()
    process = unused._started._process
    unused.close_unused()
    assert process.poll() == 0  # stopped, not left running


def _recording(directory):
    from tests.conftest import seed_message, write_recording

    partitions = {"0": [], "1": []}
    for second in range(600):
        for device in range(10):
            ts = f"2018-08-28T23:{second // 60:02d}:{second % 60:02d}.000Z"
            partitions[str(device % 2)].append(seed_message(ts, device, 1, float(second % 17 + device)))
    return write_recording(directory, partitions)


def test_a_killed_writer_process_ends_the_run_with_exit_1_and_a_rerun_writes_the_reference(tmp_path, processes):
    """Issue 16, defect 2: SIGKILL to the writer made the run abort (exit 134) with Rust panics."""
    import signal
    import subprocess
    import sys

    import psutil

    from tests.conftest import REPO, run_flow, windows_frame
    from tests.support.progress import sqlite_rows

    source = _recording(tmp_path / "rec")
    reference = tmp_path / "reference.db"
    run_flow(source, reference)
    db, recovery = tmp_path / "run.db", tmp_path / "recovery"
    command = [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{db}",
               "--recovery-dir", str(recovery), "--snapshot-interval-seconds", "0.5", "--progress-seconds", "0"]
    run = processes.start([*command, "--replay-speed", "20"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        writer = None
        while run.poll() is None and time.monotonic() < deadline:  # windows committed: the writer is at work
            writers = [c for c in psutil.Process(run.pid).children() if "sensorflow.windowing.writer" in " ".join(c.cmdline())]
            if writers and sqlite_rows(db) > 0:  # 0 until the file and its schema exist
                writer = writers[0]
                break
            time.sleep(0.05)
        assert writer is not None, "the run wrote no windows in time"
        writer.send_signal(signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 1, stderr  # not 134 (SIGABRT)
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("sensorflow run: WriterError: the store writer process was killed by signal 9 (SIGKILL)"), last
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    got, expected = windows_frame(db), windows_frame(reference)
    assert len(got) == len(expected) > 0
    keys = ["TS", "Device", "Tag", "Count", "Min", "Max"]
    assert got[keys].equals(expected[keys])
    np.testing.assert_allclose(got["Value"], expected["Value"], rtol=1e-9)


def test_collect_takes_the_acknowledgements_that_arrived_and_never_waits_for_the_rest(store_url):
    import os
    import signal

    writer = ProcessWriter(store_url)
    writer.submit(windows(1, 20))
    writer._process.send_signal(signal.SIGSTOP)  # a writer that cannot answer: collect() must not wait for it
    try:
        assert writer.collect() == 0 and writer.pending == 1
    finally:
        os.kill(writer._process.pid, signal.SIGCONT)
    counted, deadline = 0, time.monotonic() + COMMIT_AFTER + 10
    while writer.pending and time.monotonic() < deadline:  # the writer commits by itself after COMMIT_AFTER
        counted += writer.collect()
        time.sleep(0.02)
    assert (counted, writer.pending) == (20, 0)
    writer.submit(windows(2, 30))
    assert writer.drain() == 30  # drain still waits, and counts only what collect did not
    writer.close()
    assert table_now(store_url)[0] == 50


def test_replies_are_read_whole_however_they_arrive():
    import os

    from sensorflow.windowing.writer import _LENGTH, _ReplyReader

    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as stream:
        replies = _ReplyReader(stream)
        frame = _LENGTH.pack(5) + b"hello"
        assert replies.poll() is None
        os.write(write_end, frame[:3])
        assert replies.poll() is None  # a reply cut in the pipe waits for the rest
        os.write(write_end, frame[3:] + frame + frame[:9])
        assert [replies.poll(), replies.read(), replies.poll()] == [b"hello", b"hello", None]
        os.write(write_end, frame[9:])
        os.close(write_end)
        assert replies.read() == b"hello"
        with pytest.raises(EOFError):
            replies.poll()

"""Paced replays (``--replay-speed``): absurd timestamps are judged as decoding judges them, and the pace holds."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.ingest.replay.source import ReplaySource
from tests.conftest import dead_letters_frame, windows_frame

START = datetime(2026, 1, 1, tzinfo=UTC)


def _recording(directory: Path, seconds: float, rate: float, absurd: tuple[str, ...] = ()) -> Path:
    """One partition of raw readings, ``rate`` per second of event time, the ``absurd`` TS lines half-way."""
    directory.mkdir(parents=True)
    count = int(seconds * rate)
    with open(directory / "partition-0.jsonl", "wb") as f:
        for i in range(count):
            ts = (START + timedelta(seconds=i / rate)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            f.write(orjson.dumps({"TS": ts, "Device": i % 5, "Tag": 1, "Value": float(i)}) + b"\n")
            if i == count // 2:
                for text in absurd:
                    f.write(orjson.dumps({"TS": text, "Device": 9, "Tag": 1, "Value": 1.0}) + b"\n")
    return directory


def test_a_far_future_reading_does_not_stall_a_paced_replay(tmp_path: Path):
    """Issue 16, defect 7: one reading in 2200 held ``--replay-speed 60`` back for ever (it waited for 2200)."""
    source = _recording(tmp_path / "rec", 60, 10, ("2200-01-01T00:00:00Z", "1970-01-01T00:00:00Z"))
    db = tmp_path / "paced.db"
    command = [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{db}",
               "--replay-speed", "60", "--writer", "inline", "--progress-seconds", "0"]
    try:  # 1 s of pacing; the deadline is for a loaded machine's start-up, not for the pace
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it (one process: the writer is inline)
        pytest.fail("the paced replay did not finish within 120 s: a far-future reading held it back")
    assert result.returncode == 0, result.stderr
    dead = dead_letters_frame(db)
    assert sorted(dead["Reason"]) == ["future", "out_of_range"]  # judged as an unpaced replay judges them
    assert len(windows_frame(db)) == 12 * 5


def _emissions(source: ReplaySource, deadline_s: float) -> list[tuple[float, int]]:
    """(wall time, newest accepted event time) of each batch a paced partition emits, honouring
    ``next_awake`` as Bytewax does; fails if the source asks to wait past the deadline."""
    part = source.build_part("read", "0", None)
    deadline = time.monotonic() + deadline_s
    emitted = []
    while True:
        try:
            batches = part.next_batch()
        except StopIteration:
            return emitted
        now = time.monotonic()
        for batch in batches:
            ts = decode_batch(batch, DecodeConfig()).readings.table.column("ts").to_numpy()
            if len(ts):
                emitted.append((now, int(ts.max())))
        if not batches:
            awake = part.next_awake()
            wait = 0.0 if awake is None else (awake - datetime.now(UTC)).total_seconds()
            if now + wait > deadline:
                pytest.fail(f"the source asks to wait {wait:,.0f} s more, past the test's deadline")
            if wait > 0:
                time.sleep(wait)  # the source's own schedule, as Bytewax keeps it


@pytest.mark.parametrize("speed", [10.0, 40.0])
def test_a_paced_replay_keeps_within_ten_percent_of_the_asked_pace(tmp_path: Path, speed: float):
    source = _recording(tmp_path / "rec", 40, 50, ("2200-01-01T00:00:00Z", "not a time", "1970-01-01T00:00:00Z"))
    emitted = _emissions(ReplaySource(source, speed=speed), deadline_s=60)
    (first_wall, first_event), (last_wall, last_event) = emitted[0], emitted[-1]
    assert last_event == int((START + timedelta(seconds=40 - 1 / 50)).timestamp() * 1e9)  # every reading, none absurd
    achieved = (last_event - first_event) / 1e9 / (last_wall - first_wall)
    assert abs(achieved / speed - 1) <= 0.10, f"asked {speed}x, achieved {achieved:.2f}x"

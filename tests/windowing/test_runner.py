"""The replay runner: its source judges pace with the flow's decode settings; it says whether it resumes."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sensorflow.assembly import replay_job
from tests.conftest import REPO, run_flow, run_settings, windows_frame

SPEED = 4.0
SPAN_S = 20  # event time between the first and last reading: a paced replay takes SPAN_S / SPEED = 5 s


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _recording(directory: Path, case: str) -> tuple[Path, dict]:
    """Three readings SPAN_S apart, that only this case's decode settings accept or pace by; and those settings."""
    directory.mkdir()
    lines = []
    if case == "min_event_time":  # before 2000, the default oldest event time
        start = datetime(1990, 1, 1, tzinfo=UTC)
        settings = {"min_event_time": "1980-01-01T00:00:00Z"}
    elif case == "max_clock_skew_seconds":  # two days ahead of the wall clock, past the default one day
        start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        settings = {"max_clock_skew_seconds": 10 * 86_400}
    else:  # enqueued time: the readings' TS are all the same, their enqueued times are SPAN_S apart
        start = datetime(2026, 1, 1, tzinfo=UTC)
        settings = {"time_source": "enqueued"}
    for i, offset in enumerate((0, SPAN_S // 2, SPAN_S)):
        at = start + timedelta(seconds=offset)
        body = orjson.dumps({"TS": _iso(start if case == "time_source" else at), "Device": 1, "Tag": 1, "Value": float(i)})
        if case == "time_source":
            lines.append(orjson.dumps({"partition": "0", "sequence_number": i, "offset": str(i),
                                       "enqueued_time": _iso(at), "body": body.decode()}))
        else:
            lines.append(body)
    (directory / "partition-0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return directory, settings


@pytest.mark.parametrize("case", ["min_event_time", "max_clock_skew_seconds", "time_source"])
def test_a_paced_replay_is_paced_by_the_readings_the_flows_decode_settings_accept(tmp_path: Path, case: str):
    """The pacer judges readings as decoding will: with the run's own --min-event-time,
    --max-clock-skew-seconds and --time-source, not the defaults (with the defaults, these
    readings would be refused or all at one time, and the replay would not be paced at all)."""
    source, settings = _recording(tmp_path / "rec", case)
    db = tmp_path / "paced.db"
    job = replay_job(run_settings(source, db, replay_speed=SPEED, **settings))
    from sensorflow.windowing.runner import replay_source

    assert replay_source(job).decode == job.flow.decode
    began = time.monotonic()
    run_flow(source, db, replay_speed=SPEED, writer="inline", **settings)
    took = time.monotonic() - began
    # A lower bound only, which a busy machine cannot break: it makes the run slower, never faster.
    assert took >= SPAN_S / SPEED * 0.9, f"the replay took {took:.2f} s: it was not paced by these readings"
    assert windows_frame(db)["Count"].sum() == 3  # and decoding accepted every one of them


def test_the_runner_says_whether_it_starts_fresh_or_resumes(tmp_path: Path, caplog):
    source, recovery = REPO / "samples" / "seed", tmp_path / "recovery"
    caplog.set_level(logging.INFO, logger="sensorflow.windowing.runner")
    run_flow(source, tmp_path / "s.db", recovery_dir=recovery, writer="inline")
    messages = [r.getMessage() for r in caplog.records if r.name == "sensorflow.windowing.runner"]
    assert messages == [f"starting fresh: no committed state in recovery directory {recovery}"]
    caplog.clear()
    run_flow(source, tmp_path / "s.db", recovery_dir=recovery, writer="inline")
    messages = [r.getMessage() for r in caplog.records if r.name == "sensorflow.windowing.runner"]
    assert messages == [f"resuming from the recovery state in {recovery}"]

"""`sensorflow simulate` says which event time it wrote and how to continue it (issue 17, trap 8).

Before, it printed no time span and its help did not say that --start defaults to now, so continuing a
recording meant reading a file's last line.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sensorflow.simulator.cli import add_subcommand
from tests.simulator.helpers import read_recording


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorflow")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


def _event_times(directory: Path) -> list[str]:
    return sorted(json.loads(line.body)["TS"] for line in read_recording(directory))


def _span(capsys) -> tuple[dict, str]:
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.mark.parametrize(("profile", "flags"), [("seed", []), ("fleet", ["--devices", "2", "--tags", "2", "--rate", "0.5"])])
def test_it_prints_the_first_and_last_event_time_and_where_to_continue(tmp_path: Path, capsys, profile: str, flags):
    first = tmp_path / "first"
    assert _run(["--out", str(first), "--profile", profile, *flags, "--start", "2026-01-01T00:00:00Z", "--duration", "90s"]) == 0
    figures, err = _span(capsys)
    times = _event_times(first)
    assert (figures["first_event"], figures["last_event"]) == (times[0], times[-1])
    assert figures["next_start"] == "2026-01-01T00:01:30Z"
    assert (f"event time {times[0]} .. {times[-1]}" in err and "continue with --start 2026-01-01T00:01:30Z" in err), err

    # The printed --start continues it: the next recording's first step is the step after the last.
    second = tmp_path / "second"
    assert _run(["--out", str(second), "--profile", profile, *flags, "--start", figures["next_start"],
                 "--duration", "90s", "--seed", "1"]) == 0
    after, _ = _span(capsys)
    step = 2  # seed: a reading every 2 s; fleet: 0.5 readings per second
    assert _event_times(second)[0] == after["first_event"] == "2026-01-01T00:01:30.0000000Z"
    last = datetime.fromisoformat(times[-1][:26] + "+00:00")
    assert (datetime.fromisoformat(after["first_event"][:26] + "+00:00") - last).total_seconds() == step


def test_the_default_start_is_now(tmp_path: Path, capsys):
    before = datetime.now(timezone.utc)
    assert _run(["--out", str(tmp_path), "--duration", "10s"]) == 0
    figures, _ = _span(capsys)
    first = datetime.fromisoformat(figures["first_event"][:26] + "+00:00")
    assert before.replace(second=0, microsecond=0) <= first <= datetime.now(timezone.utc)
    assert first.second == 0 and first.microsecond == 0  # floored to the minute
    assert _event_times(tmp_path)[0] == figures["first_event"]


def test_the_help_documents_the_default_start_and_how_to_continue(capsys):
    with pytest.raises(SystemExit):
        _run(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'now' (the default: the wall clock at start, floored to the minute)" in text
    assert "to continue a recording, the --start it printed" in text
    assert "continue into another --out" in text
    assert "--duration 4h \\ --start" in text  # the example's line break is shown, not swallowed


def test_now_is_floored_to_the_minute_so_windows_line_up():
    """A start in mid-window made every sensor's first and last window partial (a low count: flagged)."""
    from sensorflow.simulator.config import parse_start

    now_ns = 1_767_225_600 * 10**9 + 37 * 10**9 + 123_456_789  # 2026-01-01T00:00:37.123456789Z
    assert parse_start("now", now_ns) == 1_767_225_600 * 10**9

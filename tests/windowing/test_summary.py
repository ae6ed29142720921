"""The final summary's lines add up (issue 17, trap 7), and a live run's says what is still open (trap 5).

Before, the summary printed "N elements -> R readings" and "D dead letters": R + D came to more than N
by the late readings, which are readings and dead letters both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sensorflow.cli import main
from sensorflow.store import StoreSummary
from sensorflow.windowing.execution import RunReport
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.summary import report_of, summary_lines, with_report
from sensorflow.windowing.tumbling import OpenWindows
from tests.conftest import dead_letters_frame, seed_message, write_recording

S = 1_000_000_000


def _numbers(line: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", line)]


def _recording(directory: Path) -> Path:
    """Two partitions with late readings (ts 10 after ts 29 with 5 s lateness) and malformed messages."""
    partitions = {}
    for pid in ("0", "1"):
        bodies = [seed_message(f"2026-01-01T00:00:{s:02d}Z", pid, 1, float(s)) for s in range(30)]
        bodies += [seed_message(f"2026-01-01T00:00:{s:02d}Z", pid, 1, 0.5) for s in (10, 11, 12)]  # late
        bodies += [b'{"TS": "2026-01-01T00:00:31Z", "Device": 1, "Tag": 1, "Value": "high"}', b"not json"]
        partitions[pid] = bodies
    return write_recording(directory, partitions)


def test_the_summary_of_a_replay_with_late_readings_adds_up(tmp_path: Path, capsys):
    db = tmp_path / "s.db"
    status = main(["run", "--source", str(_recording(tmp_path / "rec")), "--store", f"sqlite:///{db}",
                   "--progress-seconds", "0"])
    assert status == 0
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    messages, elements, readings, malformed_read, _rate = _numbers(lines["read"])
    windows, dead, malformed, late = _numbers(lines["wrote"])
    assert (messages, elements, readings, malformed_read) == (70, 70, 66, 4)
    assert "elements = " in lines["read"] and elements == readings + malformed_read
    assert "dead letters = " in lines["wrote"] and dead == malformed + late
    assert (malformed, late) == (malformed_read, 6)
    stored = dead_letters_frame(db)
    assert late == (stored["Reason"] == "late").sum() and dead == len(stored)


def _live_report(open_windows: OpenWindows | None, rebuilt_from: str | None, store: StoreSummary | None) -> RunReport:
    stats = RunStats(messages=10, readings=8, elements=10, windows_written=3)
    stats.add_dead_letters(2)
    return RunReport(4, stats, store, source="event hub 'h' on ns", live=True, open_windows=open_windows,
                     rebuilt_from=rebuilt_from, stop_reason="SIGTERM")


@pytest.mark.parametrize(("open_windows", "line"), [
    (OpenWindows(12, 1_767_225_605 * S, 1_767_225_660 * S),
     "  open:   12 window rows still open, not written (window ends 2026-01-01 00:00:05.000 .. 2026-01-01 00:01:00.000); "
     "the next start rebuilds them from SOMEWHERE"),
    (OpenWindows(), "  open:   none: every window read is written"),
    (None, "  open:   not counted (the stop was interrupted); the next start rebuilds them from SOMEWHERE"),
])
def test_a_live_summary_says_what_is_open(open_windows, line):
    lines = summary_lines(_live_report(open_windows, "SOMEWHERE", StoreSummary(3, 1, "a", "b")))
    assert lines[0] == "sensorflow run: consumed 4 partition(s) of event hub 'h' on ns in " + lines[0].split(" in ")[1]
    assert lines[0].endswith("s (stopped: SIGTERM)")
    assert line in lines


def test_without_recovery_or_checkpoints_the_open_windows_are_said_to_be_lost():
    lines = summary_lines(_live_report(OpenWindows(3, 5 * S, 5 * S), None, StoreSummary(3, 1, "a", "b")))
    assert lines[3] == (
        "  open:   3 window rows still open, not written (window ends 1970-01-01 00:00:05.000 .. 1970-01-01 00:00:05.000); "
        "they are lost: no --recovery-dir or --checkpoint-container, so the next start begins at --starting-position"
    )


def test_a_store_that_did_not_answer_at_the_stop_is_said_so():
    lines = summary_lines(_live_report(OpenWindows(), "x", None))
    assert lines[-1] == "  store:  not read (it did not answer as the run stopped)"


def test_open_windows_of_several_shards_add_up():
    total = OpenWindows(2, 10, 20) + OpenWindows() + OpenWindows(3, 5, 15)
    assert total == OpenWindows(5, 5, 20)


def test_the_report_rides_on_the_interrupt():
    report = _live_report(OpenWindows(), "x", None)
    interrupt = with_report(KeyboardInterrupt(), report)
    assert report_of(interrupt) is report and report_of(KeyboardInterrupt()) is None


def test_a_local_clusters_counts_keep_the_late_readings():
    child = RunStats()
    import pyarrow as pa

    child.add_dead_letters(3, pa.array(["late", "late: window already closed", "bad_json"]))
    parent = RunStats()
    parent.merge(child.as_dict())
    assert parent.late_readings == 2 and parent.dead_letters_written == 3

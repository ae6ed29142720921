"""A replay's progress: percent done, the CURRENT rate and an ETA from the bytes of the recording read;
a tqdm bar on a terminal, plain lines every --progress-seconds otherwise (issue 17, trap 3)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading

from sensorflow.ingest.replay.source import ReadMeter
from sensorflow.windowing.progress import Progress, Sample, figures, format_eta, plain_line
from sensorflow.windowing.stats import RunStats
from tests.conftest import REPO, seed_message, write_recording
from tests.support.processes import wait_for


def test_the_rate_is_the_current_one_not_the_average_since_the_start():
    # 100k readings in the first 10 s, then 10k in the next 10 s: 1,000/s now, 5,500/s on average
    start, busy, slow = Sample(0.0, 0, 0, 1000), Sample(10.0, 100_000, 500, 1000), Sample(20.0, 110_000, 600, 1000)
    shown = figures(busy, slow)
    assert shown.readings_per_s == 1_000
    assert shown.percent == 60.0 and shown.bytes_per_s == 10.0 and shown.eta_seconds == 40.0
    assert figures(start, busy).readings_per_s == 10_000
    stats = RunStats(readings=110_000, elements=110_000)
    line = plain_line(stats, slow, shown)
    assert line.startswith("sensorflow: 60.0% of 1,000 B read, 10 B/s, ETA 0:00:40; ") and "(1,000/s)" in line, line


def test_no_eta_while_the_size_is_unknown_or_nothing_moved():
    assert figures(Sample(0.0, 0), Sample(5.0, 50)).percent is None  # a live run: no size
    opened = figures(Sample(0.0, 0, 0, 0), Sample(5.0, 50, 400, 1000))  # partitions opened in between (may be resumed)
    assert opened.percent == 40.0 and opened.eta_seconds is None
    stalled = figures(Sample(0.0, 0, 400, 1000), Sample(5.0, 0, 400, 1000))
    assert stalled.bytes_per_s == 0 and stalled.eta_seconds is None
    assert "ETA unknown" in plain_line(RunStats(), Sample(5.0, 0, 400, 1000), stalled)
    assert format_eta(3725) == "1:02:05"


def test_the_meter_counts_the_partitions_this_process_reads():
    meter = ReadMeter()
    meter.add_partition("0", 1000, 0)
    meter.add_partition("1", 500, 100)  # resumed
    meter.note_read("0", 250)
    assert (meter.bytes_read, meter.total_bytes) == (350, 1500)


class _Terminal(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def test_on_a_terminal_a_tqdm_bar_over_the_bytes():
    meter, stats, out = ReadMeter(), RunStats(), _Terminal()
    meter.add_partition("0", 10 << 20, 0)
    with Progress(stats, 5.0, out, meter):
        meter.note_read("0", 5 << 20)
        stats.add_decoded(10, 10, 10)
        wait_for(lambda: re.search(r"replay:\s+50%\|", out.text()), "the bar at 50%", timeout=60)
    assert "sensorflow:" not in out.text()  # no plain lines on a terminal


def test_off_a_terminal_nothing_with_progress_seconds_0():
    out = io.StringIO()
    with Progress(RunStats(), 0, out, ReadMeter()):
        pass
    assert out.getvalue() == ""


def test_a_replay_prints_percent_current_rate_and_eta(tmp_path):
    """The command, off a terminal: plain lines with percent, byte rate and ETA (before: counters and an average)."""
    lines = [seed_message(f"2026-01-01T00:{s // 60:02d}:{s % 60:02d}.000Z", d, 1, float(s), pad=200)
             for s in range(0, 600) for d in range(5)]
    source = write_recording(tmp_path / "rec", {"0": lines[::2], "1": lines[1::2]})
    # paced at 60x: ten minutes of event time take about 10 s, several progress lines at 0.5 s
    done = subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{tmp_path / 'p.db'}",
         "--replay-speed", "60", "--progress-seconds", "0.5", "--block-bytes", "4096"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("sensorflow: ")]
    assert progress, done.stderr
    with_eta = [line for line in progress if re.match(r"sensorflow: \d+\.\d% of [\d.,]+ KiB read, [\d.,]+ (B|KiB)/s, ETA \d+:\d\d:\d\d; ", line)]
    assert with_eta, progress
    percents = [float(line.split("%", 1)[0].rsplit(" ", 1)[1]) for line in progress if "% of" in line]
    assert percents == sorted(percents) and 0 < percents[-1] <= 100, progress

"""`simulate` shows its phases and, on a long target, the readings written so far (issue 17, trap 3:
nothing was printed for 25 s on a 50 M-reading target)."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from sensorflow.simulator.capture import write_capture_recording
from sensorflow.simulator.progress import PhaseProgress
from sensorflow.simulator.recording import expected_readings, write_jsonl_recording
from tests.conftest import REPO
from tests.simulator.helpers import fleet_config


def _phases(text: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in text.splitlines()]


def test_each_phase_is_shown_and_the_readings_phase_counts_towards_its_total(tmp_path):
    out = io.StringIO()
    config = fleet_config()
    total = expected_readings(config)
    summary = write_jsonl_recording(tmp_path / "rec", config, progress=PhaseProgress(out, every_s=0))
    lines = _phases(out.getvalue())
    assert lines[0] == "preparing the fleet and its anomalies"
    assert lines[1] == f"writing readings to {tmp_path / 'rec'} (~{total:,} readings)"
    counted = [line for line in lines if re.match(r"writing readings to .*: [\d,]+ readings \(\d+\.\d%\), [\d,]+/s", line)]
    assert counted, lines
    assert counted[-1].split(": ")[1].startswith(f"{summary.readings:,} readings")
    assert lines[-1] == "writing labels.json"


def test_capture_recordings_show_the_same_phases(tmp_path):
    out = io.StringIO()
    write_capture_recording(tmp_path / "cap", fleet_config(), progress=PhaseProgress(out, every_s=0))
    lines = _phases(out.getvalue())
    assert lines[0] == "preparing the fleet and its anomalies" and lines[-1] == "writing labels.json"
    assert any(line.startswith("writing readings to") and "%" in line for line in lines), lines


def test_without_progress_nothing_is_printed(tmp_path, capsys):
    write_jsonl_recording(tmp_path / "rec", fleet_config())
    assert capsys.readouterr().err == ""


def test_the_command_says_what_it_is_doing_before_it_is_done(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sensorflow", "simulate", "--out", str(tmp_path / "rec"), "--profile", "fleet",
         "--devices", "20", "--tags", "5", "--duration", "10m", "--start", "2026-01-01T00:00:00Z"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "sensorflow simulate: preparing the fleet and its anomalies\n" in done.stderr
    assert f"sensorflow simulate: writing readings to {tmp_path / 'rec'} (~60,000 readings)\n" in done.stderr, done.stderr

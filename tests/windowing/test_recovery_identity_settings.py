"""A rerun whose decode setting ``max_message_bytes`` differs from the one its recovery state was made
with is refused like a change of window or store (exit 2, one line naming it); the same value resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(REPO / "samples" / "seed"),
         "--store", f"sqlite:///{tmp_path}/s.db", "--progress-seconds", "0", "--recovery-dir", str(tmp_path / "recovery"),
         *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def test_a_rerun_with_another_max_message_bytes_is_refused_and_the_same_value_resumes(tmp_path: Path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1,655 window rows" in first.stdout

    refused = _run(tmp_path, "--max-message-bytes", "4096")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"sensorflow run: recovery state in {tmp_path / 'recovery'} belongs to another run (max_message_bytes "
        "1,048,576 -> 4,096): resume it with the same input, store and window settings, rerun with --fresh to start "
        "over, or use another --recovery-dir"
    )

    same = _run(tmp_path, "--max-message-bytes", str(1 << 20))  # the default, given explicitly: the same state
    assert same.returncode == 0, same.stderr
    assert "wrote:  0 window rows, 0 dead letters" in same.stdout
    fresh = _run(tmp_path, "--max-message-bytes", "4096", "--fresh")
    assert fresh.returncode == 0, fresh.stderr

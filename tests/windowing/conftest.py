"""Fixtures of the windowing tests that stop, kill or starve a replay and resume it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.windowing.test_recovery import _recording


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> tuple[Path, Path]:
    """The recovery test's recording and the table of its uninterrupted replay (one process, unpaced),
    made once for every test that interrupts a replay of it (signals, full disk, local cluster)."""
    directory = tmp_path_factory.mktemp("interrupted")
    source = _recording(directory / "rec")
    reference = directory / "reference.db"
    done = subprocess.run([sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store",
                           f"sqlite:///{reference}", "--progress-seconds", "0"],
                          cwd=REPO, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return source, reference

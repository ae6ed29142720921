"""The top-level help's "Start with" commands work in any directory, not only in the repository
(issue 17, trap 8): before, it said `sensorflow run --source samples/seed`, a path that exists only
in a checkout. Each command is run as printed, from an empty directory outside the repository;
`sensorflow demo` gets a smaller fleet (the same command, seconds instead of half a minute)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

DEMO_SIZE = ["--devices", "4", "--tags", "2", "--minutes", "10"]


def _sensorflow(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorflow", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def _start_commands(help_text: str) -> list[list[str]]:
    section = help_text.split("Start with", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(line)[1:] for line in section.splitlines() if line.startswith("  sensorflow ")]


def test_the_help_s_first_commands_work_outside_the_repository(tmp_path: Path):
    assert not tmp_path.is_relative_to(REPO)
    shown = _sensorflow(["--help"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    commands = _start_commands(shown.stdout)
    assert commands and any(c[0] == "run" for c in commands), shown.stdout
    for command in commands:
        result = _sensorflow(command + (DEMO_SIZE if command == ["demo"] else []), tmp_path)
        assert result.returncode == 0, f"sensorflow {shlex.join(command)}: {result.stderr[-3000:]}"
        if command[0] == "run":
            assert " window rows, " in result.stdout, result.stdout
    assert (tmp_path / ".sensorflow" / "demo" / "sensorflow.db").exists()
    assert (tmp_path / "sensorflow.db").exists()

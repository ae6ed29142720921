"""samples/README.md says what is true (issue 17, trap 8): what `make run` runs, and the command that made
the seed recording, which must make it again byte for byte."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SAMPLES = REPO / "samples"


def _make_run_recipe() -> str:
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert recipe, "the Makefile has no run target"
    return recipe.group(1).strip().removeprefix("$(BIN)/")


def test_the_readme_says_what_make_run_runs():
    text = " ".join((SAMPLES / "README.md").read_text().split())
    recipe = _make_run_recipe()
    assert recipe == "sensorflow demo"
    assert f"`make run` does not use it: it runs `{recipe}`" in text


def test_the_readme_s_command_makes_the_seed_recording_again(tmp_path: Path):
    text = (SAMPLES / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL).group(1).replace("\\\n", " ")
    args = shlex.split(block)
    assert args[:2] == ["sensorflow", "simulate"] and args[args.index("--out") + 1] == "samples/seed"
    args[args.index("--out") + 1] = str(tmp_path / "seed")
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    shipped = sorted(p.name for p in (SAMPLES / "seed").iterdir())
    assert shipped == sorted(p.name for p in (tmp_path / "seed").iterdir())
    for name in shipped:
        assert (tmp_path / "seed" / name).read_bytes() == (SAMPLES / "seed" / name).read_bytes(), name

"""What a command costs before its work starts: the modules it imports, and its writer process started early.

Import checks, not timings: each runs the command in a fresh interpreter and reads the
modules it loaded (``sys.modules`` at exit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# Run as `python -c _PROBE OUT ARGS...`: the `sensorflow` command with ARGS as its own command line
# (so `run` is in its own process, as from the shell), then the names in sys.modules into OUT.
_PROBE = """
import json, sys
out, sys.argv = sys.argv[1], ["sensorflow", *sys.argv[2:]]
from sensorflow.cli import main
try:
    code = main()
except SystemExit as e:
    code = e.code
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
sys.exit(code)
"""

# Nothing of these is needed to list the commands or a command's options.
HEAVY = {"numpy", "pyarrow", "pandas", "bytewax", "fastavro", "matplotlib", "sklearn", "scipy", "azure"}
# Nor to replay a recording of JSON Lines into SQLite.
NOT_FOR_A_REPLAY = {"pandas", "matplotlib", "sklearn", "scipy", "azure", "fastavro", "croniter", "tqdm"}


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    result = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(out.read_text()))


def packages(modules: set[str], names: set[str]) -> set[str]:
    """The modules of ``modules`` that are one of ``names`` or inside one of them (``sensorflow.simulator``: its package)."""
    return {m for m in modules if any(m == name or m.startswith(name + ".") for name in names)}


def test_listing_the_commands_imports_no_settings_model_and_no_data_library(tmp_path):
    modules = imported_by(tmp_path, "--help")
    assert not packages(modules, HEAVY | {"pydantic", "pydantic_settings", "sensorflow.settings", "sensorflow.simulator"})


@pytest.mark.parametrize("command", ["run", "sidecar", "evaluate", "demo"])
def test_a_commands_options_need_its_settings_model_only(tmp_path, command):
    modules = imported_by(tmp_path, command, "--help")
    assert "sensorflow.settings" in modules  # its flags are made from it
    assert not packages(modules, HEAVY | {"sensorflow.simulator", "sensorflow.batch_jobs", "sensorflow.assembly"})


def test_a_replay_imports_nothing_it_does_not_use(tmp_path):
    modules = imported_by(tmp_path, "run", "--source", str(REPO / "samples" / "seed"), "--store",
                          f"sqlite:///{tmp_path / 'r.db'}", "--progress-seconds", "0")
    assert {"bytewax", "pyarrow", "sensorflow.windowing.writer"} <= modules  # it did run
    # pandas is installed here (the test extra), and pyarrow would import it at its first array.
    assert not packages(modules, NOT_FOR_A_REPLAY | {"sensorflow.simulator", "sensorflow.batch_jobs"})


def test_the_listed_simulate_help_is_the_simulators_own():
    from sensorflow.cli import _SIMULATE_HELP
    from sensorflow.simulator.cli import add_subcommand

    commands = argparse.ArgumentParser(prog="sensorflow").add_subparsers()
    add_subcommand(commands)
    assert [action.help for action in commands._choices_actions] == [_SIMULATE_HELP]


def test_each_command_is_parsed_by_its_own_parser_made_on_first_use():
    from sensorflow.cli import _parser

    args = _parser().parse_args(["--log-level", "INFO", "run", "--source", "rec/", "--fresh"])
    assert (args.command, args.source, args.fresh, args.func.__name__, args.log_level) == ("run", "rec/", True, "_run", "INFO")
    args = _parser().parse_args(["task", "run", "spec.json"])
    assert (args.command, args.action, args.spec_url) == ("task", "run", "spec.json")
    args = _parser().parse_args(["simulate", "--out", "rec/", "--profile", "fleet"])
    assert (args.command, args.out, args.profile) == ("simulate", "rec/", "fleet")


# The writer's interpreter, started before the store is known (sensorflow run starts it first thing).


@pytest.fixture
def store_url(tmp_path):
    from sensorflow.store import open_store

    url = f"sqlite:///{tmp_path / 'w.db'}"
    with open_store(url) as store:
        store.create_schema()
    return url


def test_a_writer_process_started_early_is_taken_over_by_the_writer(store_url):
    from sensorflow.windowing.writer import ProcessWriter, WriterProcess
    from tests.windowing.test_writer import table_now, windows

    with WriterProcess() as early:
        process = early._process
        writer = ProcessWriter(store_url, process=early)
        assert writer._process is process
        with pytest.raises(ValueError, match="taken over"):
            early.take()
        writer.submit(windows(1, 9))
        assert writer.drain() == 9
        writer.close()
    assert table_now(store_url)[0] == 9
    assert process.returncode == 0


def test_a_writer_process_nobody_took_exits_when_closed():
    from sensorflow.windowing.writer import WriterProcess

    early = WriterProcess()
    process = early._process
    early.close()
    assert process.returncode == 0
    early.close()  # once is enough


def test_a_run_that_writes_inline_closes_the_writer_process_it_was_given(tmp_path):
    from sensorflow.assembly import run_replay
    from sensorflow.settings import RunSettings, load_settings
    from sensorflow.windowing.writer import WriterProcess

    settings = load_settings(RunSettings, {"source": str(REPO / "samples" / "seed"), "store": f"sqlite:///{tmp_path / 'i.db'}",
                                           "writer": "inline", "progress_seconds": 0})
    early = WriterProcess()
    process = early._process
    report = run_replay(settings, writer_process=early)
    assert report.store.windows == 1655
    assert process.returncode == 0  # closed by the run, not left waiting for a store

"""The ``sensorflow`` command as a user meets it."""

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def sensorflow(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorflow", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_help_explains_the_first_step():
    result = sensorflow("--help")
    assert result.returncode == 0
    assert "sensorflow run --source " in result.stdout
    run_help = sensorflow("run", "--help")
    assert "--window-seconds" in run_help.stdout and "SENSORFLOW_" not in run_help.stderr
    assert "examples:" in run_help.stdout


def test_run_replays_the_shipped_sample_and_prints_what_it_wrote(tmp_path: Path):
    result = sensorflow("run", "--source", str(REPO / "samples" / "seed"), "--store", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1,806 messages" in out and "readings/s" in out
    assert "1,655 window rows, 15 sensors" in out
    assert "late 25" in out and "not_finite 2" in out


def test_bad_settings_exit_non_zero_with_one_clear_line(tmp_path: Path):
    result = sensorflow("run", "--source", str(REPO / "samples" / "seed"), "--window-seconds", "0")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "window_seconds" in result.stderr and "greater than 0" in result.stderr


def test_missing_source_and_env_settings(tmp_path: Path):
    import os

    result = sensorflow("run", env={**os.environ, "SENSORFLOW_WORKERS": "zero"})
    assert result.returncode == 2
    assert "source: required" in result.stderr and "workers" in result.stderr
    missing = sensorflow("run", "--source", str(tmp_path / "nothing-here"))
    assert missing.returncode == 1 and "recording not found" in missing.stderr


def test_config_file(tmp_path: Path):
    config = tmp_path / "sensorflow.toml"
    config.write_text(f'source = "{REPO / "samples" / "seed"}"\nstore = "sqlite:///{tmp_path}/c.db"\nwindow_seconds = 60\n')
    result = sensorflow("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "15 sensors" in result.stdout and "windows 2018-08-28 23:01:00.000" in result.stdout


def test_a_store_failure_mid_run_is_one_clear_line(tmp_path: Path, monkeypatch, capsys):
    from sensorflow.cli import main
    from sensorflow.store.sqlite import SqliteStore

    def disk_full(self, table):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(SqliteStore, "upsert_windows", disk_full)
    code = main(["run", "--source", str(REPO / "samples" / "seed"), "--store", f"sqlite:///{tmp_path}/f.db",
                 "--writer", "inline", "--progress-seconds", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("sensorflow run: the dataflow failed: OSError: disk full (simulated)")


def _window_rows(db: Path) -> list[tuple]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute("SELECT Count, COUNT(*) FROM SensorValues GROUP BY Count ORDER BY Count").fetchall()


def test_a_run_with_another_window_length_than_the_store_holds_is_refused(tmp_path: Path):
    # Trap 1 of issue 17: `run --window-seconds 10` on a store of 5 s windows wrote 10 s windows among them.
    store = f"sqlite:///{tmp_path}/w.db"
    seed = str(REPO / "samples" / "seed")
    assert sensorflow("run", "--source", seed, "--store", store).returncode == 0
    before = _window_rows(tmp_path / "w.db")
    for flags, stored, asked in ((["--window-seconds", "10"], "5 s", "not 10 s"),
                                 (["--time-source", "enqueued"], "time source ts", "not enqueued")):
        refused = sensorflow("run", "--source", seed, "--store", store, *flags)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("sensorflow run: the store holds ")
        assert stored in refused.stderr and asked in refused.stderr
    sidecar = sensorflow("sidecar", "--once", "--store", store, "--window-seconds", "10", "--model-store", str(tmp_path / "m"))
    assert sidecar.returncode == 2 and sidecar.stderr.strip() == (
        "sensorflow sidecar: the store holds 5 s windows, not 10 s (window_seconds): use --window-seconds 5, or another store"
    )
    assert _window_rows(tmp_path / "w.db") == before  # nothing was written


def test_a_store_made_before_stores_recorded_their_settings_is_judged_by_its_rows(tmp_path: Path):
    import sqlite3

    store = f"sqlite:///{tmp_path}/old.db"
    seed = str(REPO / "samples" / "seed")
    assert sensorflow("run", "--source", seed, "--store", store).returncode == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as connection:
        connection.execute("DROP TABLE StoreSettings")  # as the previous version left it
        connection.commit()
    refused = sensorflow("run", "--source", seed, "--store", store, "--window-seconds", "10")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "multiples of 5 s" in refused.stderr and "not 10 s" in refused.stderr
    again = sensorflow("run", "--source", seed, "--store", store)
    assert again.returncode == 0, again.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as connection:
        assert dict(connection.execute("SELECT Name, Value FROM StoreSettings")) == {
            "window_seconds": "5", "time_source": "ts", "schema_version": "2"
        }


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    """``sensorflow ARGV`` in this process: exit status, stdout, stderr."""
    from sensorflow.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own exits
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, hint", [
    (["run", "--source", "rec", "--window-second", "10"], "--window-second: did you mean --window-seconds?"),
    (["run", "--sourc", "rec"], "--sourc: did you mean --source?"),
    (["sidecar", "--onc"], "--onc: did you mean --once?"),
    (["task", "run", "spec.json", "--spec"], "--spec: no such option"),
])
def test_flags_are_never_abbreviated_and_an_unknown_one_gets_its_commands_usage(capsys, argv, hint):
    # Trap 1/6 of issue 17: `--window-second 10` was taken as --window-seconds, `--sourc` as --source.
    code, _, err = _main(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"usage: sensorflow {' '.join(argv[:2] if argv[0] == 'task' else argv[:1])} ")
    assert lines[-1].startswith(f"sensorflow {argv[0]}") and hint in lines[-1]


def test_global_flags_go_before_or_after_the_subcommand(capsys, tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(f'source = "{tmp_path / "nothing-here"}"\n')
    for argv in (["--log-level", "debug", "run", "--config", str(config)],
                 ["run", "--config", str(config), "--log-level", "DEBUG"],
                 ["--config", str(config), "run"]):
        code, _, err = _main(capsys, *argv)
        assert code == 1 and "recording not found" in err, (argv, err)
    after = sensorflow("run", "--source", str(tmp_path / "x"), "--log-level", "DEBUG")
    assert after.returncode == 1 and "DEBUG sensorflow: run failed" in after.stderr


@pytest.mark.parametrize("argv, message", [
    (["--log-level", "LOUD", "run"], "sensorflow: argument --log-level: invalid choice: 'LOUD'"),
    (["run", "--source", "rec", "--log-level", "LOUD"], "sensorflow run: argument --log-level: invalid choice: 'LOUD'"),
    (["run", "--source", "rec", "--time-source", "wall"], "sensorflow run: invalid settings: time_source: Input should be 'ts' or 'enqueued'"),
    (["sidecar", "--detector", "nope"], "sensorflow sidecar: invalid settings: detector: unknown detector 'nope'"),
])
def test_an_invalid_value_is_one_line_and_exit_2(argv, message):
    # Trap 6: `--log-level LOUD` printed a traceback.
    result = sensorflow(*argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr


def test_help_lists_choices_once_and_defaults_once():
    run_help = sensorflow("run", "--help").stdout
    sidecar_help = sensorflow("sidecar", "--help").stdout
    evaluate_help = sensorflow("evaluate", "--help").stdout
    assert "--time-source {ts,enqueued}" in run_help and "--writer {process,inline}" in run_help
    assert "--log-format {text,json}" in run_help and "--log-level LEVEL" in run_help
    assert "--executor {local,azure-batch}" in sidecar_help
    assert "--detector {seed-ocsvm,robust-window,calibrated,mad-z}" in sidecar_help
    assert "--scope {sensor,device}" in evaluate_help
    assert "[--seed-csv | --no-seed-csv]" in sidecar_help and "CSV]" not in sidecar_help
    for text in (run_help, sidecar_help, evaluate_help):
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and flat.count("(default: as fast as possible)") == (text is run_help)
    assert "(default: as fast as possible) (default" not in " ".join(run_help.split())


def test_the_recording_is_checked_before_the_store_and_a_relative_sqlite_path_is_explained(tmp_path: Path):
    # Trap 6: "directory ... does not exist: data" hid "recording not found", and said nothing of the slashes.
    missing = sensorflow("run", "--source", "nothing-here", "--store", "sqlite:///data/e1.db", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.strip() == "sensorflow run: recording not found: nothing-here"
    no_dir = sensorflow("run", "--source", str(REPO / "samples" / "seed"), "--store", "sqlite:///data/e1.db", cwd=tmp_path)
    assert no_dir.returncode == 1 and no_dir.stderr.count("\n") == 1
    assert f"does not exist: {tmp_path.resolve() / 'data'} " in no_dir.stderr
    assert "an absolute path takes four slashes: sqlite:////data/e1.db" in no_dir.stderr


def test_a_model_store_of_another_kind_is_refused_before_the_sidecar_runs(tmp_path: Path):
    result = sensorflow("sidecar", "--once", "--store", f"sqlite:///{tmp_path}/s.db", "--model-store", "postgres://x")
    assert result.returncode == 2
    assert result.stderr == (
        "sensorflow sidecar: invalid settings: model_store: must be a directory, file:///PATH or "
        "azblob://CONTAINER[/PREFIX], not 'postgres://x'\n"
    )

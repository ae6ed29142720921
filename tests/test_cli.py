"""The ``sensorflow`` command as a user meets it."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def sensorflow(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorflow", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_help_explains_the_first_step():
    result = sensorflow("--help")
    assert result.returncode == 0
    assert "sensorflow run --source samples/seed" in result.stdout
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

"""``sensorflow run --store postgresql+odbc:...`` end to end: the same tables as the SQLite run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import REPO, dead_letters_frame, windows_frame
from tests.store.pg import assert_same_windows, pg_dead_letters, pg_windows

SEED = REPO / "samples" / "seed"


def sensorflow_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(SEED), "--progress-seconds", "0", *args],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )


def test_the_cli_writes_the_same_tables_to_postgresql_as_to_sqlite(tmp_path: Path, postgres_odbc):
    db = tmp_path / "seed.db"
    lite = sensorflow_run("--store", f"sqlite:///{db}")
    pg = sensorflow_run("--store", f"postgresql+odbc:{postgres_odbc}")
    assert lite.returncode == 0 and pg.returncode == 0, pg.stderr
    # The report's store lines come from the store: the same on both.
    store_lines = [line for line in pg.stdout.splitlines() if line.lstrip().startswith(("store:", "dead letters"))]
    assert store_lines and store_lines == [
        line for line in lite.stdout.splitlines() if line.lstrip().startswith(("store:", "dead letters"))
    ]
    assert "1,655 window rows, 15 sensors" in pg.stdout

    expected = windows_frame(db)
    assert len(expected) == 1655
    assert_same_windows(pg_windows(postgres_odbc), expected)
    lite_dead = dead_letters_frame(db)
    pg_dead = pg_dead_letters(postgres_odbc)
    pd.testing.assert_frame_equal(pg_dead, lite_dead, check_dtype=False)

    again = sensorflow_run("--store", f"postgresql+odbc:{postgres_odbc}")  # a rerun upserts the same rows
    assert again.returncode == 0, again.stderr
    assert_same_windows(pg_windows(postgres_odbc), expected)
    assert len(pg_dead_letters(postgres_odbc)) == len(lite_dead)


def test_inline_writer_too(tmp_path: Path, postgres_odbc):
    result = sensorflow_run("--store", f"postgresql+odbc:{postgres_odbc}", "--writer", "inline")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "seed.db"
    assert sensorflow_run("--store", f"sqlite:///{db}").returncode == 0
    assert_same_windows(pg_windows(postgres_odbc), windows_frame(db))


def test_an_unreachable_store_is_one_line(tmp_path: Path):
    from tests.support.azurite import free_port

    url = f"postgresql+odbc:Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={free_port()};Database=x;Pwd=s3cret"
    result = subprocess.run(
        [sys.executable, "-m", "sensorflow", "run", "--source", str(SEED), "--store", url, "--store-retry-seconds", "0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sensorflow run: StoreError: connect failed") and "08001" in last and "s3cret" not in result.stderr
    assert "gave up after" in last and "store_retry_seconds 0.5" in last

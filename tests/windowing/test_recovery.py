"""Crash at arbitrary points (SIGKILL), restart, and the table equals an uninterrupted run's."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from sensorflow.windowing.state import SNAPSHOT_VERSION
from tests.conftest import REPO, dead_letters_frame, windows_frame
from tests.support.processes import wait_for
from tests.support.progress import committed_epoch, sqlite_rows

START_S = 1_767_225_600


def _recording(directory: Path, partitions: int = 3, per_partition: int = 40_000, seed: int = 11) -> Path:
    """Seed-format lines; the same sensors on every partition, out of order within and beyond lateness."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    for p in range(partitions):
        t = START_S + np.cumsum(rng.exponential(0.01, per_partition)) + rng.uniform(0, 2)
        jitter = np.where(rng.random(per_partition) < 0.3, rng.uniform(-9, 0, per_partition), 0.0)
        t = t + jitter
        with open(directory / f"partition-{p}.jsonl", "wb") as f:
            for i in range(per_partition):
                if i % 997 == 0:
                    f.write(b'{"TS": broken\n')
                    continue
                whole = int(t[i])
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t[i] - whole) * 1e7):07d}Z"
                msg = {"TS": ts, "Device": int(rng.integers(0, 40)), "Tag": int(rng.integers(0, 5)),
                       "Value": round(float(rng.normal(50, 10)), 3)}
                f.write(orjson.dumps(msg) + b"\n")
    return directory


def _command(source: Path, db: Path, recovery: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", f"sqlite:///{db}",
           "--block-bytes", "8192", "--progress-seconds", "0"]
    if recovery is not None:
        # Paced (400 s of event time in about 8 s) and short epochs: each run commits many epochs
        # and writes many batches, so there are many moments to kill it at.
        cmd += ["--recovery-dir", str(recovery), "--snapshot-interval-seconds", "0.2", "--replay-speed", "50"]
    return cmd


KILLS = 4


def _kill_moment(rng: random.Random, attempt: int, db: Path, recovery: Path) -> tuple[str, Callable[[], bool]]:
    """When to SIGKILL this attempt, by what it has done (never by the clock, which a busy machine stretches).

    Even attempts: once k more epochs are committed (between snapshots). Odd attempts: once
    the store holds more rows (a write landed; the epoch covering it is usually not committed
    yet, so the rerun writes those windows again and must upsert, not duplicate).
    """
    if attempt % 2 == 0:
        target = committed_epoch(recovery.glob("part-*.sqlite3")) + rng.randint(1, 5)
        return f"epoch {target} committed", lambda: committed_epoch(recovery.glob("part-*.sqlite3")) >= target
    rows = sqlite_rows(db)
    return f"more than {rows:,} rows in the store", lambda: sqlite_rows(db) > rows


@pytest.mark.slow
@pytest.mark.timeout(900)  # a bound for a stuck run only: on a busy machine every step just takes longer
def test_sigkill_and_restart_give_the_uninterrupted_table(tmp_path: Path, processes):
    source = _recording(tmp_path / "rec")
    clean_db = tmp_path / "clean.db"
    clean = processes.start(_command(source, clean_db, None), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err.decode()[-2000:]

    crashed_db, recovery = tmp_path / "crashed.db", tmp_path / "recovery"
    rng = random.Random(5)
    kills = 0
    for attempt in range(KILLS + 1):
        log = tmp_path / f"attempt-{attempt}.log"
        with open(log, "wb") as stderr:  # a file, not a pipe nobody reads while the run goes on
            proc = processes.start(_command(source, crashed_db, recovery), stdout=subprocess.DEVNULL, stderr=stderr)
        if attempt < KILLS:
            what, reached = _kill_moment(rng, attempt, crashed_db, recovery)
            if wait_for(reached, f"attempt {attempt}: {what}", timeout=300, alive=[proc]):
                proc.send_signal(signal.SIGKILL)  # the run alone: its writer must end with it
                proc.wait(60)
                kills += 1
                if kills == 3:
                    # The experiment, not a wait: a pause longer than the 5 s lateness (replays have no wall-clock
                    # idle timeout) shows that event time, not wall time, decides what is late.
                    time.sleep(8)
                continue
        proc.wait(600)  # the last attempt runs to the end of the input (or an attempt ended before its moment)
        assert proc.returncode == 0, log.read_text()[-2000:]
        break
    assert kills == KILLS, f"the replay finished after {kills} kill(s); make the input larger"

    clean, crashed = windows_frame(clean_db), windows_frame(crashed_db)
    assert len(crashed) == len(clean) > 0
    assert crashed[["TS", "Device", "Tag", "Count", "Min", "Max"]].equals(clean[["TS", "Device", "Tag", "Count", "Min", "Max"]])
    np.testing.assert_allclose(crashed["Value"], clean["Value"], rtol=1e-9)
    clean_dead, crashed_dead = dead_letters_frame(clean_db), dead_letters_frame(crashed_db)
    assert crashed_dead.equals(clean_dead)
    # Only the partition's own lateness rule decides: the shards' safety net never fires on a replay.
    assert set(clean_dead["Reason"]) == {"bad_json", "late"}


def test_a_recovery_dir_of_another_release_is_refused_with_one_line(tmp_path: Path, monkeypatch, capsys):
    from sensorflow.cli import main
    from sensorflow.windowing.operators import LatenessLogic

    args = ["run", "--source", str(REPO / "samples" / "seed"), "--store", f"sqlite:///{tmp_path}/s.db", "--writer", "inline",
            "--progress-seconds", "0", "--recovery-dir", str(tmp_path / "recovery")]
    with monkeypatch.context() as old_release:  # the lateness state as the release before typed state wrote it
        old_release.setattr(LatenessLogic, "snapshot", lambda self: self.clock.watermark)
        assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"sensorflow run: recovery state is int, not LatenessSnapshot version {SNAPSHOT_VERSION}: the recovery "
        "directory was written by another sensorflow release; start with a fresh --recovery-dir"
    )


def _sensorflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorflow", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _simulate(cwd: Path, duration: str, seed: int, start: str, *extra: str) -> None:
    result = _sensorflow("simulate", "--out", "rec/", "--profile", "fleet", "--devices", "20", "--tags", "5",
                         "--duration", duration, "--seed", str(seed), "--start", start, *extra, cwd=cwd)
    assert result.returncode == 0, result.stderr


def test_a_recovery_dir_that_meets_another_recording_and_store_is_refused_and_fresh_starts_over(tmp_path: Path):
    """Issue 16, defect 1, as a user met it: old offsets and an end-of-input watermark made every reading late."""
    _simulate(tmp_path, "2m", 1, "2026-01-01T00:00:00Z")
    first = ("run", "--source", "rec/", "--store", "sqlite:///a.db", "--recovery-dir", ".sensorflow/recovery")
    result = _sensorflow(*first, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote:  2,400 window rows" in result.stdout
    again = _sensorflow(*first, cwd=tmp_path)  # its own state: resumed (at the end), not refused
    assert again.returncode == 0, again.stderr
    assert "wrote:  0 window rows, 0 dead letters" in again.stdout

    was = (tmp_path / "rec" / "partition-0.jsonl").stat().st_size
    _simulate(tmp_path, "4m", 2, "2026-02-01T00:00:00Z", "--force")
    now = (tmp_path / "rec" / "partition-0.jsonl").stat().st_size
    second = ("run", "--source", "rec/", "--store", "sqlite:///b.db", "--recovery-dir", ".sensorflow/recovery")
    refused = _sensorflow(*second, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line
    assert line == (
        "sensorflow run: recovery state in .sensorflow/recovery belongs to another run (input: partition-0.jsonl is "
        f"{now:,} bytes, was {was:,} (and 3 more partition(s)); store "
        f"sqlite:///{tmp_path}/a.db -> sqlite:///{tmp_path}/b.db): resume it with the same input, store and window "
        "settings, rerun with --fresh to start over, or use another --recovery-dir"
    )
    assert not (tmp_path / "b.db").exists()  # refused before anything was written

    fresh = _sensorflow(*second, "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert "wrote:  4,800 window rows, 0 dead letters" in fresh.stdout
    assert len(windows_frame(tmp_path / "b.db")) == 4_800


@pytest.mark.parametrize("stray", ["lost+found/", "part-0.sqlite3"])
def test_a_recovery_dir_with_a_stray_entry_runs_or_says_what_to_do(tmp_path: Path, stray: str):
    """Issue 16, defect 6: a volume's lost+found, or a 0-byte partition, ended every rerun in NoPartitionsError."""
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    if stray.endswith("/"):
        (recovery / stray).mkdir()
    else:
        (recovery / stray).touch()
    run = ("run", "--source", str(REPO / "samples" / "seed"), "--store", f"sqlite:///{tmp_path}/s.db",
           "--progress-seconds", "0", "--recovery-dir", str(recovery))
    result = _sensorflow(*run, cwd=tmp_path)
    if stray == "lost+found/":  # a filesystem's own directory: the partitions go beside it
        assert result.returncode == 0, result.stderr
        assert "1,655 window rows" in result.stdout
        return
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"sensorflow run: recovery directory {recovery}: part-0.sqlite3 is not a usable Bytewax recovery partition "
        "(0 bytes; left by an interrupted start?): rerun with --fresh to start over"
    )
    fresh = _sensorflow(*run, "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert "1,655 window rows" in fresh.stdout

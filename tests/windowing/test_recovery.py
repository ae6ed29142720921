"""Crash at arbitrary points (SIGKILL), restart, and the table equals an uninterrupted run's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from sensorflow.windowing.state import SNAPSHOT_VERSION
from tests.conftest import REPO, dead_letters_frame, windows_frame

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
        # Paced (400 s of event time in 8 s) so every attempt is killed part-way, however fast the machine.
        cmd += ["--recovery-dir", str(recovery), "--snapshot-interval-seconds", "0.2", "--replay-speed", "50"]
    return cmd


@pytest.mark.slow
def test_sigkill_and_restart_give_the_uninterrupted_table(tmp_path: Path):
    source = _recording(tmp_path / "rec")
    clean_db = tmp_path / "clean.db"
    subprocess.run(_command(source, clean_db, None), check=True, capture_output=True, timeout=300)

    crashed_db, recovery = tmp_path / "crashed.db", tmp_path / "recovery"
    rng = random.Random(5)
    kills = 0
    for attempt in range(40):
        proc = subprocess.Popen(_command(source, crashed_db, recovery), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=rng.uniform(0.8, 3.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
            if kills == 3:
                time.sleep(20)  # a long pause: event time, not wall time, decides what is late
            continue
        assert proc.returncode == 0, err.decode()[-2000:]
        break
    else:
        pytest.fail("the replay never finished")
    assert kills >= 3, "the replay finished before it could be killed enough times; make the input larger"

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

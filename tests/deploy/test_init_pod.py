"""The pods' init step (deploy/k8s/base/init-pod.sh), run with sh as the init container runs it:
the hostfile, and each pod's share of real Bytewax recovery partitions."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.k8s import BASE

SCRIPT = BASE / "init-pod.sh"


def _init(action: str, ordinal: int, recovery: Path, partitions: int, holders: int, **extra: str):
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "BYTEWAX_POD_NAME": f"sensorflow-{ordinal}",
        "BYTEWAX_STATEFULSET_NAME": "sensorflow",
        "SENSORFLOW_RECOVERY_DIR": str(recovery),
        "RECOVERY_PARTITIONS": str(partitions),
        "RECOVERY_HOLDERS": str(holders),
        **extra,
    }
    return subprocess.run(["sh", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=60, check=False)


def _partitions(directory: Path) -> dict[int, int]:
    """part index -> part count, read from each partition file Bytewax made."""
    found = {}
    for path in sorted(directory.glob("part-*.sqlite3")):
        with sqlite3.connect(path) as con:
            (index, count), = con.execute("SELECT part_index, part_count FROM parts").fetchall()
        assert path.name == f"part-{index}.sqlite3"
        found[index] = count
    return found


@pytest.mark.parametrize(("partitions", "holders", "pods"), [(5, 2, 3), (8, 1, 2), (32, 4, 4), (3, 3, 5)])
def test_the_holders_share_every_partition_exactly_once(tmp_path: Path, partitions: int, holders: int, pods: int):
    shares = []
    for ordinal in range(pods):
        done = _init("recovery", ordinal, tmp_path / f"pod-{ordinal}", partitions, holders)
        assert done.returncode == 0, done.stderr
        share = _partitions(tmp_path / f"pod-{ordinal}")
        assert set(share.values()) <= {partitions}
        assert sorted(share) == list(range(ordinal, partitions, holders)) if ordinal < holders else share == {}
        assert not list((tmp_path / f"pod-{ordinal}").glob(".init-*")), "scratch directory left behind"
        shares.append(set(share))
    assert sorted(i for share in shares for i in share) == list(range(partitions))


def test_a_restarted_pod_keeps_its_partitions(tmp_path: Path):
    recovery = tmp_path / "pod-1"
    assert _init("recovery", 1, recovery, 6, 2).returncode == 0
    with sqlite3.connect(recovery / "part-3.sqlite3") as con:  # state a run would have written
        con.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 2, 7)")
    (recovery / ".init-999").mkdir()  # an init step killed half-way
    again = _init("recovery", 1, recovery, 6, 2)
    assert again.returncode == 0 and "keeping the 3 recovery partition(s)" in again.stdout
    with sqlite3.connect(recovery / "part-3.sqlite3") as con:
        assert con.execute("SELECT resume_epoch FROM exs").fetchall() == [(7,)]
    assert sorted(_partitions(recovery)) == [1, 3, 5] and not (recovery / ".init-999").exists()


def test_the_hostfile_lists_every_pod_in_ordinal_order(tmp_path: Path):
    hostfile = tmp_path / "hostfile"
    done = _init(
        "hostfile", 2, tmp_path, 8, 1, BYTEWAX_HOSTFILE_PATH=str(hostfile), BYTEWAX_REPLICAS="3",
        CLUSTER_DOMAIN="sensorflow.sensors.svc.cluster.local", CLUSTER_PORT="9999",
    )
    assert done.returncode == 0, done.stderr
    assert hostfile.read_text().splitlines() == [
        f"sensorflow-{i}.sensorflow.sensors.svc.cluster.local:9999" for i in range(3)
    ]


@pytest.mark.parametrize(("pod", "action"), [("other-0", "recovery"), ("sensorflow-x", "recovery"), ("sensorflow-0", "nonsense")])
def test_bad_input_stops_the_pod_with_one_line(tmp_path: Path, pod: str, action: str):
    done = _init(action, 0, tmp_path / "r", 4, 1, BYTEWAX_POD_NAME=pod)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(("init-pod:", "usage:"))
    assert not list((tmp_path / "r").glob("part-*"))


def test_missing_variables_are_named(tmp_path: Path):
    done = subprocess.run(["sh", str(SCRIPT), "recovery"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "SENSORFLOW_RECOVERY_DIR" in done.stderr

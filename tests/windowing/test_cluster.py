"""A Bytewax cluster addressed the way the StatefulSet addresses it, on one machine.

Each "pod" is a ``sensorflow run`` process whose environment is built from the base manifests
(deploy/k8s/base: the dataflow container's env, the settings ConfigMap, the Secret's keys) and
whose recovery volume is prepared by the same init script the init container runs. Only what
must differ on one machine differs: each pod's volumes are directories, and the hostfile lists
127.0.0.1 ports instead of the pods' DNS names. The store is PostgreSQL over ODBC, as on a cluster.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.assembly import settings_for
from sensorflow.settings import RunSettings
from sensorflow.store import open_store
from sensorflow.windowing.cluster import ClusterEnvError, ClusterMember, member_from_env
from tests.conftest import seed_message, write_recording
from tests.deploy.k8s import BASE, container, container_env, workload_docs
from tests.support.azurite import free_port
from tests.support.processes import Drained, ProcessRegistry, wait_for, wait_while_progressing
from tests.support.progress import committed_epoch

START_S = 1_767_225_600
PODS = 2
_LIVE_ONLY = ("SENSORFLOW_CHECKPOINT_CONTAINER", "SENSORFLOW_METRICS_PORT")

# ---- the addressing rules, as Bytewax's own `python -m bytewax.run` applies them -------------


def _hostfile(tmp_path: Path, lines: str) -> str:
    path = tmp_path / "hostfile"
    path.write_text(lines)
    return str(path)


def test_the_pod_ordinal_and_the_hostfile_make_the_member(tmp_path: Path):
    env = {
        "BYTEWAX_POD_NAME": "sensor-flow-3",
        "BYTEWAX_STATEFULSET_NAME": "sensor-flow",
        "BYTEWAX_HOSTFILE_PATH": _hostfile(tmp_path, "a:1\n\n b:2 \nc:3\nd:4\n"),
        "BYTEWAX_WORKERS_PER_PROCESS": "2",
    }
    assert member_from_env(env) == ClusterMember(3, ("a:1", "b:2", "c:3", "d:4"), 2)
    assert member_from_env({"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "a:1;b:2"}) == ClusterMember(1, ("a:1", "b:2"))
    assert member_from_env({}) is None
    assert member_from_env({"BYTEWAX_POD_NAME": "sensorflow-0"}) is None  # no StatefulSet name: not a cluster


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BYTEWAX_POD_NAME": "other-0", "BYTEWAX_STATEFULSET_NAME": "sensorflow"}, "does not start with"),
        ({"BYTEWAX_POD_NAME": "sensorflow-x", "BYTEWAX_STATEFULSET_NAME": "sensorflow"}, "whole number"),
        ({"BYTEWAX_PROCESS_ID": "0"}, "no addresses"),
        ({"BYTEWAX_PROCESS_ID": "2", "BYTEWAX_ADDRESSES": "a:1;b:2"}, "not below the 2"),
        ({"BYTEWAX_PROCESS_ID": "0", "BYTEWAX_HOSTFILE_PATH": "/nonexistent/hostfile"}, "cannot read"),
        ({"BYTEWAX_PROCESS_ID": "0", "BYTEWAX_ADDRESSES": "a:1", "BYTEWAX_WORKERS_PER_PROCESS": "0"}, "1 to 64"),
    ],
)
def test_bad_cluster_variables_are_one_line_errors(env: dict, message: str):
    with pytest.raises(ClusterEnvError, match=message) as caught:
        member_from_env(env)
    assert "\n" not in str(caught.value)


def test_the_cluster_sets_processes_and_workers_unless_they_disagree():
    member = ClusterMember(0, ("a:1", "b:2", "c:3"), 2)
    settings = settings_for(member, RunSettings(source="rec"))
    assert (settings.processes, settings.workers) == (3, 2)
    assert settings_for(member, RunSettings(source="rec", processes=3, workers=2)) == settings
    with pytest.raises(ClusterEnvError, match="processes=2 disagrees with 3"):
        settings_for(member, RunSettings(source="rec", processes=2))
    with pytest.raises(ClusterEnvError, match="workers=4 disagrees with 2"):
        settings_for(member, RunSettings(source="rec", workers=4))


def test_a_bad_cluster_variable_stops_sensorflow_run_with_status_2(tmp_path: Path):
    env = {**_clean_environ(), "BYTEWAX_PROCESS_ID": "0", "SENSORFLOW_SOURCE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "sensorflow", "run"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sensorflow run: a Bytewax process id is set but no addresses: set BYTEWAX_HOSTFILE_PATH or BYTEWAX_ADDRESSES"
    ]


# ---- pods on one machine -------------------------------------------------------------------


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SENSORFLOW_", "BYTEWAX_"))}


@dataclass(frozen=True)
class Pods:
    """``PODS`` processes of the StatefulSet, as environments and a hostfile on this machine."""

    root: Path
    source: Path
    store: str
    snapshot_seconds: float | None = None

    def _env(self, container_name: str, ordinal: int) -> dict[str, str]:
        statefulset, settings = workload_docs()
        spec = container(statefulset, container_name)
        fields = {"metadata.name": f"{statefulset['metadata']['name']}-{ordinal}", "metadata.namespace": "default"}
        env = container_env(spec, {"sensorflow-settings": settings}, {"sensorflow-secrets": {}}, fields)
        # Each pod's volumes become directories of its own.
        volumes = {}
        for mount in spec["volumeMounts"]:
            volumes[mount["mountPath"]] = self.root / f"pod-{ordinal}" / mount["name"]
            volumes[mount["mountPath"]].mkdir(parents=True, exist_ok=True)
        env = {name: _on_volume(value, volumes) for name, value in env.items()}
        # A recording instead of the live Event Hub (the live-only settings go), and the Secret's store.
        for key in _LIVE_ONLY:
            env.pop(key, None)
        return {**env, "SENSORFLOW_SOURCE": str(self.source), "SENSORFLOW_STORE": self.store}

    def init(self) -> None:
        """The init container of every pod: its share of the recovery partitions, spread over
        all pods as the large overlay spreads them (RECOVERY_HOLDERS = replicas)."""
        for ordinal in range(PODS):
            env = {**_clean_environ(), **self._env("init", ordinal), "RECOVERY_HOLDERS": str(PODS)}
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the image's python
            done = subprocess.run(
                ["sh", str(BASE / "init-pod.sh"), "recovery"], env=env, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stderr

    def start(self, registry: ProcessRegistry) -> list[subprocess.Popen]:
        """Every pod's dataflow container; fresh ports, as a rescheduled pod would get; ``registry`` ends them at teardown."""
        hostfile = "".join(f"127.0.0.1:{free_port()}\n" for _ in range(PODS))
        processes = []
        for ordinal in range(PODS):
            env = {**_clean_environ(), **self._env("dataflow", ordinal)}
            Path(env["BYTEWAX_HOSTFILE_PATH"]).write_text(hostfile)
            env.update(SENSORFLOW_PROGRESS_SECONDS="0", SENSORFLOW_BLOCK_BYTES="8192")
            if self.snapshot_seconds is not None:  # short epochs, so kills land between many snapshots
                env["SENSORFLOW_SNAPSHOT_INTERVAL_SECONDS"] = str(self.snapshot_seconds)
            processes.append(
                registry.start([sys.executable, "-m", "sensorflow", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
        return processes


def _on_volume(value: str, volumes: dict[str, Path]) -> str:
    """``value`` with a pod path under a volume's mount path moved to that volume's directory."""
    for mount_path in sorted(volumes, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(volumes[mount_path]) + value[len(mount_path):]
    return value


def _recording(directory: Path, partitions: int = 3, per_partition: int = 100_000, seed: int = 3) -> Path:
    """The same sensors on every partition, out of order within and beyond lateness, some bad lines."""
    rng = np.random.default_rng(seed)
    bodies = {}
    for p in range(partitions):
        t = START_S + np.cumsum(rng.exponential(0.01, per_partition)) + np.where(
            rng.random(per_partition) < 0.3, rng.uniform(-9, 0, per_partition), 0.0
        )
        devices, tags, values = rng.integers(0, 30, per_partition), rng.integers(0, 4, per_partition), rng.normal(50, 10, per_partition)
        bodies[str(p)] = [
            b'{"TS": broken' if i % 991 == 0 else
            seed_message(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(int(t[i])))}.{int(t[i] % 1 * 1e7):07d}Z",
                         int(devices[i]), int(tags[i]), round(float(values[i]), 3))
            for i in range(per_partition)
        ]
    return write_recording(directory, bodies, envelope=True)


def _tables(store_url: str) -> tuple[pa.Table, dict[str, int]]:
    with open_store(store_url) as store:
        windows = store.read_windows(sorted(store.sensors_written_since(0)), 0, 2**62)
        return windows, store.summary().dead_letters


def _assert_same(actual: tuple[pa.Table, dict[str, int]], expected: tuple[pa.Table, dict[str, int]]) -> None:
    (windows, dead), (want_windows, want_dead) = actual, expected
    assert windows.num_rows == want_windows.num_rows > 0
    frame, want = windows.to_pandas(), want_windows.to_pandas()
    assert list(frame.columns) == list(want.columns) == ["ts", "device", "tag", "value", "count", "min", "max"]
    exact = ["ts", "device", "tag", "count", "min", "max"]
    assert frame[exact].equals(want[exact])
    np.testing.assert_allclose(frame["value"], want["value"], rtol=1e-9)
    assert dead == want_dead and set(dead) == {"bad_json", "late"}


@pytest.fixture(scope="module")
def replay(tmp_path_factory, postgres_server) -> tuple[Path, tuple[pa.Table, dict[str, int]]]:
    """The recording, and what one process without a cluster writes from it."""
    root = tmp_path_factory.mktemp("cluster")
    source = _recording(root / "rec")
    store = f"postgresql+odbc:{postgres_server.new_database()}"
    env = {**_clean_environ(), "SENSORFLOW_PROGRESS_SECONDS": "0"}
    registry = ProcessRegistry()
    try:
        run = registry.start([sys.executable, "-m", "sensorflow", "run", "--source", str(source), "--store", store],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode(errors="replace")[-2000:]
    finally:
        registry.close()
    return source, _tables(store)


def _wait(processes: list[subprocess.Popen], progress: Callable[[], object], stalled_after: float = 120) -> list[tuple[int, str]]:
    """Each pod's exit code and stderr tail once all have exited; fails if ``progress`` stays the same for
    ``stalled_after`` seconds while they run (no fixed limit on the whole run: a busy machine is slower)."""
    drained = Drained(processes)
    if not wait_while_progressing(processes, progress, stalled_after):
        pytest.fail(f"the pods made no progress for {stalled_after:g} s (their teardown ends them)")
    return [(process.returncode, drained.stderr(i)[-2000:]) for i, process in enumerate(processes)]


def _recovery_partitions(root: Path) -> list[Path]:
    return sorted(root.glob("pod-*/recovery/recovery/part-*.sqlite3"))


def _committed_epoch(root: Path) -> int:
    """The newest epoch the cluster committed to any recovery partition (integers only, no pickles)."""
    return committed_epoch(_recovery_partitions(root))


def _progress(root: Path) -> Callable[[], tuple[int, ...]]:
    """The cluster's progress: its newest committed epoch, and the commits each recovery partition holds."""

    def progress() -> tuple[int, ...]:
        return (_committed_epoch(root), *(committed_epoch([p]) for p in _recovery_partitions(root)))

    return progress


@pytest.mark.slow
@pytest.mark.timeout(900)  # a bound for a stuck cluster only; the waits below are on progress
def test_two_pods_write_the_table_one_process_writes(tmp_path: Path, replay, postgres_server, processes):
    source, expected = replay
    pods = Pods(tmp_path, source, f"postgresql+odbc:{postgres_server.new_database()}")
    pods.init()
    for code, err in _wait(pods.start(processes), _progress(tmp_path)):
        assert code == 0, err
    _assert_same(_tables(pods.store), expected)
    # Each pod held its share of the recovery partitions, and the cluster committed to every one.
    for ordinal in range(PODS):
        held = sorted((tmp_path / f"pod-{ordinal}" / "recovery").rglob("part-*.sqlite3"))
        assert [p.name for p in held] == [f"part-{i}.sqlite3" for i in sorted(range(ordinal, 8, PODS), key=str)]
        for path in held:
            with sqlite3.connect(path) as con:
                assert con.execute("SELECT COUNT(*) FROM commits").fetchone()[0] >= 1, path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_pod_and_a_restarted_cluster_write_the_same_table(tmp_path: Path, replay, postgres_server, processes):
    source, expected = replay
    pods = Pods(tmp_path, source, f"postgresql+odbc:{postgres_server.new_database()}", snapshot_seconds=0.3)
    pods.init()
    rng = random.Random(7)
    kills = 0
    for _ in range(30):
        before = _committed_epoch(tmp_path)
        running = pods.start(processes)
        # Kill only once this execution has committed an epoch: the cluster has formed (a pod
        # killed while the others still dial it is simply waited for, and proves nothing here).
        formed = wait_for(lambda: _committed_epoch(tmp_path) > before, "the cluster to commit an epoch",
                          timeout=300, alive=running)
        # Then k more epochs (0.3 s each; a whole run takes 40 or more of them, 300k readings):
        # the moment is chosen by the cluster's progress, not by a clock a busy machine stretches.
        target = _committed_epoch(tmp_path) + rng.randint(1, 12)
        if formed and wait_for(lambda: _committed_epoch(tmp_path) >= target, f"epoch {target}", timeout=300, alive=running):
            victim = kills % PODS  # pod 0 and pod 1 in turn
            running[victim].send_signal(signal.SIGKILL)
            # The survivor loses its peer and exits non-zero (Kubernetes restarts its container),
            # unless the kill landed after the dataflow had completed on every worker (a survivor
            # only exits 0 once its peer's progress said so): then the next start resumes at the
            # end. Either way it must not hang, and the final table below shows nothing was lost.
            results = _wait(running, _progress(tmp_path))
            if results[victim][0] == -signal.SIGKILL:
                kills += 1
                continue
            # The pod exited between the check and the kill (Popen does not signal a process
            # that has exited): this execution ran to its end, and every pod must say so.
            assert [code for code, _ in results] == [0] * PODS, results
            break
        results = _wait(running, _progress(tmp_path))
        assert [code for code, _ in results] == [0] * PODS, results
        break
    else:
        pytest.fail("the cluster never finished")
    assert kills >= 2, "the replay finished before it could be killed twice; make the input larger"
    _assert_same(_tables(pods.store), expected)

"""The live source as a 2-process Bytewax cluster: test broker (real SDK) -> 2 `sensorflow run` pods -> PostgreSQL.

The pods find each other through Bytewax's cluster variables, as in tests/windowing/test_cluster.py;
checkpoints are on Azurite. Bytewax spreads the Event Hubs partitions, the lateness keys and the
window sink over the two processes independently, so durable positions, offsets and committed
shard ends must cross processes for the checkpoints to be right. Every table is checked against
the pandas reference of what the broker holds.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from sensorflow.store import open_store
from tests.support.azurite import free_port
from tests.support.processes import Drained, ProcessRegistry, wait_for, wait_while_progressing
from tests.support.progress import committed_epoch, resume_positions
from tests.support.window_reference import accepted_and_late, windows

S = 1_000_000_000
START_NS = pd.Timestamp("2026-01-01T00:00:00Z").value
PODS = 2
SENTINEL = "sentinel"


def _bodies(partitions: list[str], per_partition: int, seed: int = 11) -> dict[str, list[bytes]]:
    """The same sensors on every partition; out of order within the lateness and beyond it (late)."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in partitions:
        t = START_NS + np.cumsum(rng.exponential(0.2 * S, per_partition)).astype(np.int64)
        shuffle = rng.random(per_partition)
        t = t - np.where(shuffle < 0.05, rng.integers(0, 4 * S, per_partition), 0)  # within lateness
        t = t - np.where(shuffle > 0.99, rng.integers(8 * S, 20 * S, per_partition), 0)  # late
        devices, tags = rng.integers(0, 6, per_partition), rng.integers(0, 2, per_partition)
        values = np.round(rng.normal(20, 5, per_partition), 3)
        out[p] = [
            orjson.dumps({"TS": pd.Timestamp(int(ts), tz="UTC").isoformat(), "Device": int(d), "Tag": int(g), "Value": float(v)})
            for ts, d, g, v in zip(t, devices, tags, values)
        ]
    return out


def _readings(broker) -> pd.DataFrame:
    rows = []
    for p in broker.partition_ids:
        for event in broker.events(p):
            m = orjson.loads(event.body)
            rows.append((p, pd.Timestamp(m["TS"]).value, str(m["Device"]), str(m["Tag"]), float(m["Value"])))
    return pd.DataFrame(rows, columns=["partition", "ts", "device", "tag", "value"])


def _close_every_window(broker) -> None:
    ts = pd.Timestamp(int(_readings(broker)["ts"].max()) + 3600 * S, tz="UTC").isoformat()
    for p in broker.partition_ids:
        broker.publish(p, [orjson.dumps({"TS": ts, "Device": SENTINEL, "Tag": 0, "Value": 0.0})])


def _assert_reference(store_url: str, broker) -> None:
    readings = _readings(broker)
    accepted, late = accepted_and_late(readings, 5 * S)
    expected = windows(accepted[accepted["device"] != SENTINEL].reset_index(drop=True), 5 * S)
    with open_store(store_url) as store:
        sensors = [s for s in sorted(store.sensors_written_since(0)) if s[0] != SENTINEL]
        got = store.read_windows(sensors, 0, 2**62).to_pandas()
        dead = store.summary().dead_letters
    got["TS"] = pd.to_datetime(got["ts"]).dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    got = got.rename(columns={"device": "Device", "tag": "Tag", "value": "Value", "count": "Count", "min": "Min", "max": "Max"})
    got = got.sort_values(["Device", "Tag", "TS"]).reset_index(drop=True)
    assert len(got) == len(expected) > 0
    keys = ["TS", "Device", "Tag", "Count", "Min", "Max"]
    assert got[keys].astype(str).equals(expected[keys].astype(str))
    np.testing.assert_allclose(got["Value"], expected["Value"], rtol=1e-9)
    # Late readings are dead letters once each; no reading of a stored window came back as "window already closed".
    assert len(late) > 0 and dead == {"late": len(late)}


class _Cluster:
    """``PODS`` `sensorflow run --source eventhubs` processes forming one Bytewax cluster; ``registry`` ends them at teardown."""

    def __init__(self, root: Path, broker, azurite, store: str, container: str, registry: ProcessRegistry):
        self.root, self.broker, self.azurite, self.store, self.container = root, broker, azurite, store, container
        self.registry = registry

    def recovery(self, pod: int) -> Path:
        return self.root / f"pod-{pod}" / "recovery"

    def init_recovery(self) -> None:
        """What each pod's init step does: its share of the recovery partitions (one each here)."""
        from bytewax.recovery import init_db_dir

        scratch = self.root / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        init_db_dir(scratch, PODS)
        for pod in range(PODS):
            self.recovery(pod).mkdir(parents=True, exist_ok=True)
            shutil.move(scratch / f"part-{pod}.sqlite3", self.recovery(pod) / f"part-{pod}.sqlite3")

    def run(self) -> list[str]:
        """Run the cluster until the hub is quiet (graceful stop); the pods' logs."""
        return self.wait(self.start())

    def start(self) -> list[subprocess.Popen]:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(PODS))
        processes = []
        for pod in range(PODS):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SENSORFLOW_", "BYTEWAX_"))}
            env.update(
                BYTEWAX_PROCESS_ID=str(pod), BYTEWAX_ADDRESSES=addresses,
                SENSORFLOW_EVENTHUB_CONNECTION_STRING=self.broker.connection_string,
                SENSORFLOW_CHECKPOINT_CONNECTION_STRING=self.azurite.connection_string,
            )
            command = [sys.executable, "-m", "sensorflow", "--log-level", "INFO", "run", "--source", "eventhubs",
                       "--store", self.store, "--checkpoint-container", self.container,
                       "--recovery-dir", str(self.recovery(pod)), "--progress-seconds", "0",
                       "--snapshot-interval-seconds", "0.5", "--stop-after-idle-seconds", "3", "--log-format", "json"]
            processes.append(self.registry.start(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        return processes

    def progress(self) -> tuple[int, ...]:
        """Events the broker delivered, and the epochs each pod committed: what moves while the pods work."""
        epochs = (committed_epoch(self.recovery(pod).glob("part-*.sqlite3")) for pod in range(PODS))
        return (self.broker.delivered, *epochs)

    def wait(self, processes: list[subprocess.Popen], stalled_after: float = 120, statuses: tuple[int, ...] = (0,)) -> list[str]:
        """The pods' logs once they have stopped; fails if they made no progress for ``stalled_after`` seconds
        (no limit on the whole run: on a busy machine it is only slower)."""
        drained = Drained(processes)
        if not wait_while_progressing(processes, self.progress, stalled_after):
            pytest.fail(f"the pods made no progress for {stalled_after:g} s (their teardown ends them)")
        logs = [drained.stderr(i) for i in range(len(processes))]
        for process, err in zip(processes, logs):
            assert process.returncode in statuses, err[-3000:]
        return logs


def _resume_positions_past_start(cluster: _Cluster) -> bool:
    """True once every partition's resume blob holds a position past the partition's start."""
    positions = resume_positions(cluster.azurite.connection_string, cluster.container)
    return set(positions) == set(cluster.broker.partition_ids) and min(positions.values()) > 0


def _blob_view(azurite, container: str) -> tuple[dict[str, int], list[str]]:
    """What Event Hubs tooling sees (checkpointed sequence number per partition), and our resume blobs."""
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
    from azure.storage.blob.aio import ContainerClient

    async def view():
        async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
            checkpoints = await store.list_checkpoints("127.0.0.1", "hub", "$default")
        async with ContainerClient.from_connection_string(azurite.connection_string, container) as client:
            names = [b.name async for b in client.list_blobs(name_starts_with="sensorflow/")]
        return {c["partition_id"]: c["sequence_number"] for c in checkpoints}, names

    return asyncio.run(view())


@pytest.fixture
def cluster(tmp_path, eventhubs_broker, azurite, postgres_server, request, processes) -> _Cluster:
    container = "cluster-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    store = f"postgresql+odbc:{postgres_server.new_database()}"
    return _Cluster(tmp_path, eventhubs_broker, azurite, store, container, processes)


def test_a_two_process_live_cluster_writes_the_reference_table(cluster):
    broker = cluster.broker
    for p, bodies in _bodies(broker.partition_ids, 1500).items():
        broker.publish(p, bodies)
    _close_every_window(broker)
    cluster.init_recovery()
    cluster.run()
    _assert_reference(cluster.store, broker)


@pytest.mark.timeout(900)  # a bound for a stuck cluster only: every wait below is on progress
def test_a_cluster_stopped_mid_stream_that_lost_its_recovery_volumes_resumes_from_per_partition_blobs(cluster):
    broker = cluster.broker
    bodies = _bodies(broker.partition_ids, 2000)
    for p, b in bodies.items():
        broker.publish(p, b[:400])
    sent = {"upto": 400}
    stop_sending = threading.Event()

    def send(cap: int, chunk: int, pause: float) -> None:
        """A live stream: events keep arriving while the pods run. It slows down (to a chunk a second) while
        the pods lag behind it, so a busy machine that slows the pods does not see the stream end before they
        are stopped; it never pauses (3 s without events would stop the pods by themselves)."""
        while sent["upto"] < cap and not stop_sending.is_set():
            behind = time.monotonic() + 1.0
            while broker.delivered < sent["upto"] * len(bodies) - 4 * chunk * len(bodies) and time.monotonic() < behind:
                time.sleep(0.02)
            at = sent["upto"]
            for p, b in bodies.items():
                broker.publish(p, b[at : at + chunk])
            sent["upto"] = at + chunk
            time.sleep(pause)

    cluster.init_recovery()
    processes = cluster.start()
    sender = threading.Thread(target=send, args=(1900, 10, 0.08))
    sender.start()
    try:
        # Mid-stream by progress: every partition's resume blob is past its start (checkpoints were
        # written) while events keep arriving. Start-up (interpreters, connections) is not counted.
        wait_for(lambda: _resume_positions_past_start(cluster) or not sender.is_alive(),
                 "a resume blob past the start of every partition", timeout=300, alive=processes, poll=0.2)
        assert sender.is_alive(), f"the stream ended (at {sent['upto']} of 2,000 per partition) before every partition was checkpointed"
        for process in processes:
            process.send_signal(signal.SIGTERM)  # mid-stream: the sources stop while events flow
    finally:
        stop_sending.set()
        sender.join()
    first = sent["upto"]
    # 143: stopped by the SIGTERM (128 + 15), after what was committed; 0: a pod whose partitions went idle
    # (--stop-after-idle-seconds) had already stopped when the signal came
    cluster.wait(processes, statuses=(0, 143))

    seen, names = _blob_view(cluster.azurite, cluster.container)
    prefix = "sensorflow/127.0.0.1/hub/$default/"
    assert {f"{prefix}resume/{p}.json" for p in broker.partition_ids} <= set(names)
    assert any(n.startswith(prefix + "shards/") for n in names)
    assert set(seen) == set(broker.partition_ids)  # Event Hubs checkpoints of every partition, from whichever pod

    for pod in range(PODS):  # both recovery volumes are lost
        shutil.rmtree(cluster.recovery(pod))
    cluster.init_recovery()
    for p, b in bodies.items():
        broker.publish(p, b[first:])
    _close_every_window(broker)
    logs = cluster.run()

    starts = [line for log in logs for line in log.splitlines() if "starting from Blob checkpoints" in line]
    assert len(starts) == PODS  # every pod loads the same blobs
    assert len({orjson.loads(line)["message"] for line in starts}) == 1
    positions = [int(n) for n in re.findall(r"'\d+': (\d+)", orjson.loads(starts[0])["message"])]
    assert len(positions) == len(broker.partition_ids) and min(positions) > 0  # not from the beginning
    assert not any("Bytewax recovery state" in log for log in logs)
    _assert_reference(cluster.store, broker)
    seen, _ = _blob_view(cluster.azurite, cluster.container)
    assert set(seen) == set(broker.partition_ids)

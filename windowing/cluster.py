"""Multi-process Bytewax clusters: a local one (process 0 is the caller, the others are children),
or one member of a cluster addressed by Bytewax's environment variables (one process per pod).

Python threads share one interpreter lock, so more worker threads do not use
more cores for our Python steps; processes do. Every process builds the same
dataflow from the same job (sent to children on stdin, never on the
command line, so a store URL with a password does not show in ``ps``).

On Kubernetes each pod of a StatefulSet is one process; :func:`member_from_env` reads
the same variables as ``python -m bytewax.run`` (our entry point calls Bytewax's
``cli_main`` itself, which does not read them): ``BYTEWAX_PROCESS_ID`` or the pod's
ordinal (``BYTEWAX_POD_NAME`` minus ``BYTEWAX_STATEFULSET_NAME-``), and
``BYTEWAX_ADDRESSES`` (``;``-separated) or one address per line of
``BYTEWAX_HOSTFILE_PATH``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bytewax.dataflow import Dataflow

from sensorflow.windowing.execution import Execution, execute

__all__ = ["CHILD_MODULE", "ClusterEnvError", "ClusterMember", "member_from_env", "run_local_cluster"]

CHILD_MODULE = "sensorflow.windowing.cluster_child"
"""What a local cluster's other processes run: ``python -m CHILD_MODULE``, the job on stdin."""

log = logging.getLogger(__name__)


class ClusterEnvError(ValueError):
    """Bytewax cluster variables that cannot be used; the message is one line for humans."""


@dataclass(frozen=True)
class ClusterMember:
    """This process's place in a cluster addressed from the environment."""

    process_id: int
    addresses: tuple[str, ...]
    workers: int | None = None
    """``BYTEWAX_WORKERS_PER_PROCESS`` when given."""

    def sizes(self, processes: int, workers: int) -> tuple[int, int]:
        """``(processes, workers)`` as this cluster has them.

        ``processes`` and ``workers`` at 1 (their default) take the cluster's values;
        any other value must agree with them.
        """
        sized = {"processes": processes, "workers": workers}
        for name, value, origin in (
            ("processes", len(self.addresses), "Bytewax cluster address(es)"),
            ("workers", self.workers, "BYTEWAX_WORKERS_PER_PROCESS"),
        ):
            current = sized[name]
            if value is None or current == value:
                continue
            if current != 1:
                raise ClusterEnvError(f"{name}={current} disagrees with {value} from {origin}")
            sized[name] = value
        return sized["processes"], sized["workers"]


def member_from_env(env: Mapping[str, str] = os.environ) -> ClusterMember | None:
    """This process's cluster membership from Bytewax's variables, or None when none is set."""
    process_id = _process_id(env)
    if process_id is None:
        return None
    addresses = _addresses(env)
    if not addresses:
        raise ClusterEnvError("a Bytewax process id is set but no addresses: set BYTEWAX_HOSTFILE_PATH or BYTEWAX_ADDRESSES")
    if not 0 <= process_id < len(addresses):
        raise ClusterEnvError(f"Bytewax process id {process_id} is not below the {len(addresses)} cluster address(es)")
    workers = env.get("BYTEWAX_WORKERS_PER_PROCESS", "").strip()
    if workers and not (workers.isdigit() and 1 <= int(workers) <= 64):
        raise ClusterEnvError(f"BYTEWAX_WORKERS_PER_PROCESS must be a whole number from 1 to 64, not {workers!r}")
    return ClusterMember(process_id, addresses, int(workers) if workers else None)


def _process_id(env: Mapping[str, str]) -> int | None:
    if env.get("BYTEWAX_PROCESS_ID"):
        text = env["BYTEWAX_PROCESS_ID"]
    elif env.get("BYTEWAX_POD_NAME") and env.get("BYTEWAX_STATEFULSET_NAME"):
        pod, prefix = env["BYTEWAX_POD_NAME"], env["BYTEWAX_STATEFULSET_NAME"] + "-"
        if not pod.startswith(prefix):
            raise ClusterEnvError(f"pod name {pod!r} does not start with the StatefulSet name {prefix!r}")
        text = pod[len(prefix):]
    else:
        return None
    if not text.isdigit():
        raise ClusterEnvError(f"Bytewax process id must be a whole number, not {text!r}")
    return int(text)


def _addresses(env: Mapping[str, str]) -> tuple[str, ...]:
    if env.get("BYTEWAX_ADDRESSES"):
        lines = env["BYTEWAX_ADDRESSES"].split(";")
    elif env.get("BYTEWAX_HOSTFILE_PATH"):
        try:
            lines = Path(env["BYTEWAX_HOSTFILE_PATH"]).read_text().splitlines()
        except OSError as e:
            raise ClusterEnvError(f"cannot read BYTEWAX_HOSTFILE_PATH: {e}") from e
    else:
        return ()
    return tuple(line.strip() for line in lines if line.strip())


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_local_cluster(flow: Dataflow, execution: Execution, job: dict) -> list[dict[str, int]]:
    """Run ``flow`` as process 0 of ``execution.processes``; returns the children's counters.

    Each child builds its flow from ``job`` (JSON-ready) in :data:`CHILD_MODULE`.
    """
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(execution.processes)]
    children = []
    for process_id in range(1, execution.processes):
        child = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        child.stdin.write(json.dumps({"job": job, "process_id": process_id, "addresses": addresses}))
        child.stdin.close()
        children.append(child)
    try:
        execute(flow, execution, 0, addresses)
    finally:
        outputs = [child.stdout.read() for child in children]
        for child in children:
            child.wait()
    failed = [i + 1 for i, child in enumerate(children) if child.returncode != 0]
    if failed:
        raise RuntimeError(f"cluster process(es) {failed} failed; see their errors above")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


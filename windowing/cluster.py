"""A local multi-process Bytewax cluster: process 0 is the caller, the others are children.

Python threads share one interpreter lock, so more worker threads do not use
more cores for our Python steps; processes do. Every process builds the same
dataflow from the same settings (sent to children on stdin, never on the
command line, so a store URL with a password does not show in ``ps``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading

from bytewax.dataflow import Dataflow

from sensorflow.settings import RunSettings

__all__ = ["run_local_cluster", "child_main"]

log = logging.getLogger(__name__)


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


def run_local_cluster(settings: RunSettings, flow: Dataflow) -> list[dict[str, int]]:
    """Run ``flow`` as process 0 of ``settings.processes``; returns the children's counters."""
    from windowing.runner import execute

    addresses = [f"127.0.0.1:{port}" for port in _free_ports(settings.processes)]
    children = []
    for process_id in range(1, settings.processes):
        child = subprocess.Popen(
            [sys.executable, "-m", "windowing.cluster"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        job = {"settings": settings.model_dump(mode="json"), "process_id": process_id, "addresses": addresses}
        child.stdin.write(json.dumps(job))
        child.stdin.close()
        children.append(child)
    try:
        execute(flow, settings, 0, addresses)
    finally:
        outputs = [child.stdout.read() for child in children]
        for child in children:
            child.wait()
    failed = [i + 1 for i, child in enumerate(children) if child.returncode != 0]
    if failed:
        raise RuntimeError(f"cluster process(es) {failed} failed; see their errors above")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def _exit_with_parent(parent: int) -> None:
    # A child whose parent was killed must not linger holding the recovery store.
    while True:
        if os.getppid() != parent:
            os._exit(3)
        threading.Event().wait(0.5)


def child_main() -> int:
    from windowing.runner import execute, prepare_flow

    job = json.loads(sys.stdin.read())
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    settings = RunSettings.model_validate(job["settings"])
    flow, _, stats = prepare_flow(settings)
    execute(flow, settings, job["process_id"], job["addresses"])
    print(json.dumps(stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(child_main())

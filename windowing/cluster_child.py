"""One child process of a local cluster (``python -m sensorflow.windowing.cluster_child``).

Reads ``{"job", "process_id", "addresses"}`` as JSON on stdin (see ``cluster.run_local_cluster``),
builds the same flow as process 0 from the job, runs its share and prints its counters as the
last line of stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

from sensorflow.windowing.execution import execute
from sensorflow.windowing.runner import JOBS, prepare_flow

__all__ = ["child_main"]


def _exit_with_parent(parent: int) -> None:
    # A child whose parent was killed must not linger holding the recovery store.
    while True:
        if os.getppid() != parent:
            os._exit(3)
        threading.Event().wait(0.5)


def child_main() -> int:
    message = json.loads(sys.stdin.read())
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    job = JOBS.validate_python(message["job"])
    flow, _, stats = prepare_flow(job)
    execute(flow, job.execution, message["process_id"], message["addresses"])
    print(json.dumps(stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(child_main())

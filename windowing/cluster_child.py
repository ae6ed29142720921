"""One child process of a local cluster (``python -m sensorflow.windowing.cluster_child PARENT_PID``).

Reads ``{"job", "process_id", "addresses", "log_level"}`` as JSON on stdin (see
``cluster.run_local_cluster``), builds the same flow as process 0 from the job, runs its share and
prints ``{"counters": ...}`` as the last line of stdout, or ``{"error": "..."}`` (one line) and exits 1.

Its life is process 0's: it dies with it (``lifecycle.die_with_parent``, given process 0's pid on
the command line, so a parent that died while this one was starting counts too); SIGINT is ignored
(a terminal's Ctrl-C reaches the whole process group, and process 0 decides how the run stops);
SIGTERM, which process 0 sends to stop it, ends it at once (a rerun resumes from the last committed
epoch, as after any crash).
"""

from __future__ import annotations

import json
import logging
import signal
import sys

from sensorflow.lifecycle import die_with_parent
from sensorflow.windowing.execution import execute
from sensorflow.windowing.runner import JOBS, prepare_flow

__all__ = ["child_main"]

log = logging.getLogger(__name__)


def child_main() -> int:
    message = json.loads(sys.stdin.read())
    logging.getLogger().setLevel(message.get("log_level", logging.WARNING))
    try:
        job = JOBS.validate_python(message["job"])
        flow, _, stats = prepare_flow(job)
        execute(flow, job.execution, message["process_id"], message["addresses"])
    except BaseException as error:  # Bytewax's panics are no Exception; process 0 prints the one line
        log.debug("cluster process %s failed", message.get("process_id"), exc_info=error)
        print(json.dumps({"error": _one_line(error)}), flush=True)
        return 1
    print(json.dumps({"counters": stats.as_dict()}), flush=True)
    return 0


def _one_line(error: BaseException) -> str:
    """The root cause (Bytewax re-raises a step's exception as the cause of its own), as one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 else None)  # no child outlives process 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(child_main())

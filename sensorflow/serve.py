"""``sensorflow serve``: the dataflow and the sidecar side by side, for a laptop.

Two child processes, ``sensorflow run`` and ``sensorflow sidecar``, each in a session of its
own so a terminal's Ctrl-C reaches only this process, which passes the signal on: each child
stops as it would alone (a run keeps what was committed, a sidecar records its run as
interrupted), then this prints ONE line and exits 130 (SIGINT) or 143 (SIGTERM). A child still
running 15 s after the signal is killed with its process group. Children die with this process
(``PR_SET_PDEATHSIG``: SIGTERM), so a SIGKILLed ``serve`` leaves no orphan either.

When the dataflow ends by itself (a replay has read its recording: exit 0), the sidecar keeps
scoring on its schedule until stopped; when either child fails, the other is stopped and its
status is this command's. In production, Kubernetes runs the two as containers of their own
(deploy/k8s): one process per container, each restarted on its own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from sensorflow.lifecycle import exit_status, raise_on_sigterm, stopped_by

__all__ = ["Child", "serve_command"]

STOP_SECONDS = 15.0
"""How long the children get after the signal (each stops within 10 s by its own contract) before SIGKILL."""

_PR_SET_PDEATHSIG = 1
METRICS_PORT_ENV = "SENSORFLOW_METRICS_PORT"


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up in this process (not between fork and exec); None where there is none."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the children are still stopped by the normal paths
        return None


def _die_with(parent: int, prctl: Callable[..., int] | None) -> Callable[[], None]:
    def in_the_child() -> None:  # between fork and exec: no lookups, no locks
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return in_the_child


@dataclass
class Child:
    """One child command; its stderr is relayed line by line, and held back once ``stop`` was called."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # None: this process's environment
    process: subprocess.Popen | None = None
    held: list[str] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _relay: threading.Thread | None = None

    def start(self, prctl: Callable[..., int] | None) -> None:
        """Start the child (dying with this process); its lines are relayed once :meth:`relay` is called."""
        self.process = subprocess.Popen(
            self.argv, env=self.env, stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
            preexec_fn=_die_with(os.getpid(), prctl),
        )

    def relay(self) -> None:
        """Relay the child's stderr on a thread (started after every fork: no thread runs while one happens)."""
        assert self.process is not None
        self._relay = threading.Thread(target=self._relay_lines, args=(self.process.stderr,), name=f"{self.name}-stderr", daemon=True)
        self._relay.start()

    def _relay_lines(self, stream: IO[str]) -> None:
        for line in stream:
            if self._stopping.is_set():
                self.held.append(line)  # the child's own "stopped by" line: this command says it once
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def poll(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def stop(self, signum: int) -> None:
        """Pass ``signum`` on (SIGINT or SIGTERM) to the child alone; its own children are its to stop."""
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the child's process group (its writer, task workers): it did not stop in time."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self, timeout: float = 5.0) -> None:
        """Reap the child and wait for its last lines."""
        if self.process is not None:
            self.process.wait()
        if self._relay is not None:
            self._relay.join(timeout)

    def show_held(self) -> None:
        """The lines held back while stopping, for a child that did not stop as asked."""
        sys.stderr.writelines(self.held)
        sys.stderr.flush()


def child_argv(command: str, log_level: str, flags: Sequence[str]) -> list[str]:
    """``python -m sensorflow --log-level LEVEL COMMAND FLAGS...`` with this interpreter."""
    return [sys.executable, "-m", "sensorflow", "--log-level", log_level, command, *flags]


def serve_command(run_flags: Sequence[str], sidecar_flags: Sequence[str], log_level: str = "WARNING",
                  poll_seconds: float = 0.2) -> int:
    """Run the dataflow and the sidecar until Ctrl-C/SIGTERM or until one fails; the exit status."""
    # SENSORFLOW_METRICS_PORT is the dataflow's: the sidecar serves metrics only on its own flag's port
    sidecar_env = {k: v for k, v in os.environ.items() if k != METRICS_PORT_ENV}
    children = [Child("run", child_argv("run", log_level, run_flags)),
                Child("sidecar", child_argv("sidecar", log_level, sidecar_flags), sidecar_env)]
    dataflow, sidecar = children
    raise_on_sigterm()
    try:
        prctl = _prctl()
        for child in children:
            child.start(prctl)
        for child in children:
            child.relay()
        print("sensorflow serve: dataflow and sidecar started; Ctrl-C or SIGTERM stops both", file=sys.stderr, flush=True)
        replayed = False
        while True:
            run_status, sidecar_status = dataflow.poll(), sidecar.poll()
            if run_status == 0 and not replayed:
                replayed = True
                print("sensorflow serve: the dataflow has finished (its source ended); the sidecar keeps scoring on "
                      "its schedule until Ctrl-C or SIGTERM", file=sys.stderr, flush=True)
            if run_status not in (None, 0) or sidecar_status is not None:
                failed, other = (dataflow, sidecar) if run_status not in (None, 0) else (sidecar, dataflow)
                status = failed.poll()
                failed.finish()
                _stop_all([other], signal.SIGTERM)
                print(f"sensorflow serve: the {failed.name} exited with status {status}; the {other.name} was stopped",
                      file=sys.stderr, flush=True)
                return status or 1
            time.sleep(poll_seconds)
    except KeyboardInterrupt as e:
        signum = signal.SIGTERM if exit_status(e) == 128 + signal.SIGTERM else signal.SIGINT
        _stop_all(children, signum)
        print(f"sensorflow serve: stopped by {stopped_by(e)}: dataflow and sidecar stopped (what was committed stays; "
              "with --recovery-dir a rerun resumes)", file=sys.stderr, flush=True)
        return exit_status(e)


def _stop_all(children: Sequence[Child], signum: int) -> None:
    """``signum`` to each running child, SIGKILL to what is left after :data:`STOP_SECONDS`; later signals ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave the children half stopped
        signal.signal(sig, signal.SIG_IGN)
    expected = 128 + signum
    running = [c for c in children if c.process is not None and c.poll() is None]
    for child in running:
        child.stop(signum)
    deadline = time.monotonic() + STOP_SECONDS
    while any(c.poll() is None for c in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for child in running:
        if child.poll() is None:
            child.kill()
        child.finish()
        if child.poll() not in (expected, 0):  # it did not stop as asked: what it said matters
            child.show_held()

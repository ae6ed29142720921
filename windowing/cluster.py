"""Multi-process Bytewax clusters: a local one (process 0 is the caller, the others are children),
or one member of a cluster addressed by Bytewax's environment variables (one process per pod).

Python threads share one interpreter lock, so more worker threads do not use
more cores for our Python steps; processes do. Every process builds the same
dataflow from the same job (sent to children on stdin, never on the
command line, so a store URL with a password does not show in ``ps``).

A local cluster ends as one: Bytewax's peers wait on each other, so a child that fails or is
killed ends the run (:class:`ClusterProcessError`, one line naming the process and how it ended),
the others are stopped, and no child outlives process 0 however it ended (see ``_Children``).

On Kubernetes each pod of a StatefulSet is one process; :func:`member_from_env` reads
the same variables as ``python -m bytewax.run`` (our entry point calls Bytewax's
``cli_main`` itself, which does not read them): ``BYTEWAX_PROCESS_ID`` or the pod's
ordinal (``BYTEWAX_POD_NAME`` minus ``BYTEWAX_STATEFULSET_NAME-``), and
``BYTEWAX_ADDRESSES`` (``;``-separated) or one address per line of
``BYTEWAX_HOSTFILE_PATH``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow

from sensorflow.lifecycle import Terminated, exit_status, stopped_by
from sensorflow.windowing.execution import Execution, execute

__all__ = ["CHILD_MODULE", "ClusterEnvError", "ClusterProcessError", "ClusterMember", "member_from_env", "run_local_cluster"]

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

    Each child builds its flow from ``job`` (JSON-ready) in :data:`CHILD_MODULE`. Every way out
    ends every child (see :class:`_Children`): a child that fails or is killed ends the run with
    :class:`ClusterProcessError`; an error or interrupt of process 0 is raised as it came, once the
    children are stopped.
    """
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(execution.processes)]
    with _Children(range(1, execution.processes), job, addresses) as children:
        try:
            execute(flow, execution, 0, addresses)
        except BaseException as error:
            children.ending()
            if not _rust_panic(error):  # its own error or an interrupt: raised as it came
                raise
            # A Rust panic: process 0 lost a peer's connection. Say what happened to the peer; if none
            # failed, still one line rather than a traceback.
            log.debug("process 0 of the local cluster failed", exc_info=error)
            failed = children.failure(_PEER_EXIT_SECONDS)
            raise failed or ClusterProcessError(f"cluster process 0 failed: {type(error).__name__}: {error}") from None
        return children.counters()


class ClusterProcessError(RuntimeError):
    """A process of a local cluster failed or was killed, so the run ended; the message is one line."""


STOP_GRACE_SECONDS = 5.0
"""SIGTERM -> SIGKILL for a child that is being stopped."""

EXIT_GRACE_SECONDS = 5.0
"""How long process 0 may take to end its own flow once a peer failed (or a signal asked it to stop)
before it exits at once: Bytewax waits in Rust, deaf to signals, for a peer that never connects."""

_PEER_EXIT_SECONDS = 5.0  # process 0 saw its peer go: how long the peer's exit may take to be seen


def _rust_panic(error: BaseException) -> bool:
    """A Rust panic (Bytewax's worker lost a peer's connection, say), not an exception raised by a Python step:
    Bytewax raises those as ``BytewaxRuntimeError``; its panics (``PanicException``) are no ``Exception``."""
    return not isinstance(error, (Exception, KeyboardInterrupt, SystemExit))


@dataclass
class _Child:
    process_id: int
    popen: subprocess.Popen
    output: str = ""
    watcher: threading.Thread | None = None

    def describe(self) -> str:
        """How it ended, with its own error line if it sent one."""
        status = self.popen.returncode
        how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        error = _last_message(self.output).get("error")
        return f"cluster process {self.process_id} (pid {self.popen.pid}) {how}" + (f": {error}" if error else "")


def _last_message(output: str) -> dict:
    lines = output.strip().splitlines()
    try:
        message = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


class _Children:
    """Process 0's children: started, watched, and ended on every way out (a context manager, entered on the
    thread that runs process 0's flow).

    * One thread per child reads its output and waits for it. A child that ends with a status other
      than 0 while process 0 is not itself ending is the run's failure: the other children are
      stopped, and if process 0's flow has not returned within :data:`EXIT_GRACE_SECONDS` (it waits
      for the lost peer in Rust, where no signal reaches it), this process prints one line and exits 1.
    * SIGINT and SIGTERM: while process 0's flow runs on Bytewax's threads, its main thread may not
      look at signals at all, and an exception a handler raises while Bytewax unwinds aborts the
      process (a panic in a destructor, SIGABRT). So for the length of the flow the handlers only
      note the signal, and a thread that sees it through ``signal.set_wakeup_fd`` stops the
      children: process 0's flow then returns (it lost its peers), and on exit the handler that
      was there before (``windowing.interrupts``) is called with the signal, so it raises as in any
      run. If the flow has not returned within :data:`EXIT_GRACE_SECONDS`, this process prints one
      line and exits with the signal's status (130, 143).
    * On exit, every child still running gets SIGTERM, then SIGKILL after :data:`STOP_GRACE_SECONDS`.
    * A child ends itself when this process dies, however it died (``lifecycle.die_with_parent``).
    """

    def __init__(self, process_ids: range, job: dict, addresses: list[str]):
        self._job, self._addresses = job, addresses
        self._ids = process_ids
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._ending = False  # process 0 is ending the run: what its children do from now on is its doing
        self._failure: ClusterProcessError | None = None
        self._failed = threading.Event()
        self._returned = threading.Event()  # process 0's flow returned or raised
        self._wakeup: tuple[int, int] | None = None
        self._previous_wakeup = -1
        self._handlers: dict[int, Any] = {}  # the handlers this replaced for the flow's length
        self._signum: int | None = None  # the first SIGINT/SIGTERM that arrived meanwhile
        self._exiting = False  # a thread has decided to end this process at once

    def __enter__(self) -> _Children:
        try:
            for process_id in self._ids:
                self._start(process_id)
            self._watch_signals()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._returned.set()
            exiting = self._exiting
        if exiting:  # another thread is ending this process (_exit_unless_returned): nothing more to say
            threading.Event().wait()
        self.ending()
        self._stop_all()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(self._wakeup[1])  # the signal watcher sees the end of its pipe and closes the other end
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        if self._signum is not None:  # the run's own handling of the signal, now that nothing unwinds
            handler = self._handlers[self._signum]
            if callable(handler):
                handler(self._signum, None)
            else:
                signal.raise_signal(self._signum)

    def _start(self, process_id: int) -> None:
        popen = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE, str(os.getpid())],  # the pid: it dies with this process
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        child = _Child(process_id, popen)
        self._children.append(child)
        try:
            popen.stdin.write(json.dumps({
                "job": self._job, "process_id": process_id, "addresses": self._addresses,
                "log_level": logging.getLogger().getEffectiveLevel(),
            }))
            popen.stdin.close()
        except BrokenPipeError:  # it died at once: its watcher reports how
            pass
        child.watcher = threading.Thread(target=self._watch, args=(child,), name=f"cluster-process-{process_id}", daemon=True)
        child.watcher.start()

    def _watch(self, child: _Child) -> None:
        child.output = child.popen.stdout.read()
        child.popen.wait()
        with self._lock:
            if child.popen.returncode == 0 or self._ending or self._failure is not None:
                return
            self._failure = ClusterProcessError(child.describe())
        self._failed.set()
        log.debug("%s", self._failure)
        self._stop_all()
        self._exit_unless_returned(
            f"sensorflow run: {self._failure} (process 0 could not stop its flow: exiting; with --recovery-dir a rerun resumes)", 1
        )

    def ending(self) -> None:
        """Process 0 is ending the run (its flow failed or was interrupted): children's exits are no longer news."""
        with self._lock:
            self._ending = True

    def failure(self, wait: float) -> ClusterProcessError | None:
        """The child failure that ended the run, waiting up to ``wait`` seconds for one to be seen."""
        self._failed.wait(wait)
        return self._failure

    def counters(self) -> list[dict[str, int]]:
        """Each child's counters once all have ended (interruptible: a signal raises here as anywhere);
        :class:`ClusterProcessError` if one failed."""
        for child in self._children:
            while child.watcher.is_alive():
                child.watcher.join(0.5)
        if self._failure is not None:
            raise self._failure
        return [_last_message(child.output)["counters"] for child in self._children]

    def _stop_all(self) -> None:
        """SIGTERM to every child still running, SIGKILL to those left after the grace; waits for them."""
        running = [c.popen for c in self._children if c.popen.poll() is None]
        for popen in running:
            with contextlib.suppress(ProcessLookupError):
                popen.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for popen in running:
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def _watch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only: a flow on another thread is stopped by its caller
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN:  # started with it ignored (nohup, a background job): left so
                self._handlers[signum] = handler
                signal.signal(signum, self._note_signal)
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._wakeup = (read_end, write_end)
        threading.Thread(target=self._on_signals, args=(read_end,), name="cluster-signals", daemon=True).start()

    def _note_signal(self, signum: int, frame: object) -> None:
        if self._signum is None:
            self._signum = signum

    def _on_signals(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for signum in iter(lambda: pipe.read(1), b""):
                if signum[0] not in self._handlers or self._returned.is_set():
                    continue
                # Ending the children makes process 0's flow return (it loses its peers).
                self.ending()
                self._failed.set()  # no child failure to wait for: process 0 stops the run
                self._stop_all()
                interrupt = Terminated() if signum[0] == signal.SIGTERM else KeyboardInterrupt()
                self._exit_unless_returned(
                    f"sensorflow run: stopped by {stopped_by(interrupt)} (process 0 could not stop its flow: exiting; "
                    "with --recovery-dir a rerun resumes)", exit_status(interrupt),
                )
                return

    def _exit_unless_returned(self, line: str, status: int) -> None:
        """Print ``line`` and end this process at once unless process 0's flow returns within :data:`EXIT_GRACE_SECONDS`
        (it waits in Rust for a peer that never connects). What was committed stays, as after a SIGKILL; the
        writer process dies with this one."""
        if self._returned.wait(EXIT_GRACE_SECONDS):
            return
        with self._lock:
            if self._returned.is_set():
                return
            self._exiting = True
        print(line, file=sys.stderr, flush=True)
        time.sleep(0.5)  # stderr may be a pipe that a thread of this process passes on (windowing.rust_panics)
        os._exit(status)


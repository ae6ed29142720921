"""Processes a test starts, and the guarantee that none outlives it.

A test starts its processes through the ``processes`` fixture (a :class:`ProcessRegistry`).
Each one gets a process group of its own (``start_new_session``), so the teardown can end the
process and everything it started (the writer, receivers, a local cluster's other processes),
even when the test failed, was interrupted by a timeout, or SIGKILLed the parent itself and
left its children to end on their own: SIGTERM to the group, then SIGKILL to what is left.

:func:`watch_session` (the session-wide fixture in ``tests/conftest.py``) is the net under
that: at the end of the session it looks for any process the tests started that is still
alive, whether it is still a descendant of pytest or was orphaned to init, reports and kills
it, and fails the session. Processes are recognised by :data:`SESSION_MARK`, an environment
variable every child inherits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import psutil
import pytest

__all__ = [
    "PROCESS_TOKEN",
    "all_gone",
    "descendants",
    "SESSION_MARK",
    "Drained",
    "ProcessRegistry",
    "end_processes",
    "leftover_processes",
    "new_session_mark",
    "processes",
    "wait_for",
    "wait_while_progressing",
]

SESSION_MARK = "TESTS_SESSION_MARK"
"""Set in pytest's environment for the session; inherited by every child whose environment is
built from os.environ (not named SENSORFLOW_*: tests drop those settings from the environment)."""

GRACE_SECONDS = 10.0  # SIGTERM -> SIGKILL: the issue's own bound for a clean stop


def wait_for(
    condition: Callable[[], object],
    what: str,
    timeout: float = 300.0,
    alive: Sequence[subprocess.Popen] = (),
    poll: float = 0.05,
) -> object:
    """Poll ``condition`` until it is truthy; returns its value.

    Fails with ``what`` if ``timeout`` passes (a generous deadline: progress decides, not the
    clock), and returns None as soon as any process of ``alive`` has exited, so the caller can
    tell "the run ended first" from "the run made progress".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if any(p.poll() is not None for p in alive):
            return None
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(poll)


PROCESS_TOKEN = "TESTS_PROCESS_TOKEN"
"""Set in the environment of each process a registry starts, and so inherited by its children: how
the teardown recognises them once their parent is gone (PIDs are reused quickly: pid_max is 32768
here, so a process group id alone is not proof)."""


@dataclass
class ProcessRegistry:
    """Starts processes, each in a new process group, and ends all of them (and their children) on :meth:`close`."""

    started: list[subprocess.Popen] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    grace: float = GRACE_SECONDS  # SIGTERM -> SIGKILL

    def start(self, command: Sequence[str], env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
        """``subprocess.Popen(command, env=env, **popen)`` in a process group of its own, ended at teardown."""
        env = {**(os.environ if env is None else env), PROCESS_TOKEN: self.token}
        process = subprocess.Popen(list(command), env=env, start_new_session=True, **popen)  # type: ignore[call-overload]
        self.started.append(process)
        return process

    def close(self) -> list[str]:
        """End every process started here, their groups and children; returns what was still running."""
        ended = end_processes(self.started, self.token, self.grace)
        for process in self.started:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.started.clear()
        return ended


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:200]}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {process.pid}"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def descendants(popen: subprocess.Popen) -> list[psutil.Process]:
    """The processes ``popen`` started, and theirs (none once it has gone)."""
    try:
        return psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def all_gone(processes: Sequence[psutil.Process]) -> bool:
    """No process of ``processes`` is still running (zombies count as gone)."""
    return not any(_alive(p) for p in processes)


def _carrying(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``name=value``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.pid != os.getpid() and process.environ().get(name) == value and _alive(process):
                found.append(process)
    return found


def end_processes(started: Sequence[subprocess.Popen], token: str | None = None, grace: float = GRACE_SECONDS) -> list[str]:
    """SIGTERM, then after ``grace`` SIGKILL: every process of ``started`` still running, its process
    group, its descendants, and every process carrying ``token`` (their orphans). Returns a
    description of each process that was still alive.

    A group is signalled only while its leader is running or unreaped (its id cannot have been
    reused then), and never pytest's own; other processes are signalled one by one.
    """
    own_group = os.getpgid(0)
    for popen in started:
        popen.poll()  # reap what has exited: from here on, returncode None means the leader's pid is ours
    leaders = [p for p in started if p.returncode is None and p.pid != own_group]
    members: dict[int, psutil.Process] = {}
    for popen in leaders:
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(popen.pid)
            for process in [leader, *leader.children(recursive=True)]:
                members[process.pid] = process
    if token is not None:
        members.update((p.pid, p) for p in _carrying(PROCESS_TOKEN, token))
    members.pop(os.getpid(), None)
    alive = [p for p in members.values() if _alive(p)]
    report = [_describe(p) for p in alive]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not alive:
            break
        for popen in leaders:
            if popen.poll() is None:  # still ours: its group id is its pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, sig)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)  # psutil checks the pid still names the same process
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            for popen in started:
                popen.poll()
            time.sleep(0.05)
            alive = [p for p in alive if _alive(p)]
    for popen in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(1)
    return report


def leftover_processes(mark: str, baseline: set[int]) -> list[psutil.Process]:
    """Live processes started during the session: pytest's descendants not in ``baseline``, and
    any process (orphaned to init, say) whose environment carries ``SESSION_MARK=mark``."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True) if p.pid not in baseline and _alive(p)}
    found.update((p.pid, p) for p in _carrying(SESSION_MARK, mark) if p.pid not in baseline)
    return [p for p in found.values() if not _pytests_resource_tracker(p)]


def _pytests_resource_tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker of pytest itself (a test used a process pool in-process):
    it lives as long as pytest does and ends when pytest's end of its pipe closes."""
    with contextlib.suppress(psutil.Error):
        return process.ppid() == os.getpid() and "multiprocessing.resource_tracker" in " ".join(process.cmdline())
    return False


def new_session_mark() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def processes() -> Iterator[ProcessRegistry]:
    """A :class:`ProcessRegistry`; every process it started is ended at teardown, pass or fail."""
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        ended = registry.close()
        if ended:  # expected after a failure; after a pass, a test that did not wait for what it started
            print(f"teardown ended {len(ended)} process(es):", *ended, sep="\n  ", file=sys.stderr)


def wait_while_progressing(
    running: Sequence[subprocess.Popen], progress: Callable[[], object], stalled_after: float = 120.0, poll: float = 0.5
) -> bool:
    """Wait until every process of ``running`` has exited; False if ``progress()`` stayed the same for
    ``stalled_after`` seconds first (a run that is slow because the machine is busy still moves).
    Pipes are not read here: use :class:`Drained` for processes with ``stdout``/``stderr`` pipes."""
    last, since = progress(), time.monotonic()
    while any(p.poll() is None for p in running):
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stalled_after:
            return False
        time.sleep(poll)
    return True


class Drained:
    """Reads the pipes of ``running`` on threads while the caller waits on something else, so a
    process that writes a lot never blocks on a full pipe; :meth:`stderr` once they have exited."""

    def __init__(self, running: Sequence[subprocess.Popen]) -> None:
        import threading

        self._errs: dict[int, bytes] = {}
        self._threads = [threading.Thread(target=self._drain, args=(i, p), daemon=True) for i, p in enumerate(running)]
        for thread in self._threads:
            thread.start()

    def _drain(self, index: int, process: subprocess.Popen) -> None:
        _, err = process.communicate()
        self._errs[index] = err or b""

    def stderr(self, index: int, timeout: float = 60.0) -> str:
        self._threads[index].join(timeout)
        return self._errs.get(index, b"").decode(errors="replace")

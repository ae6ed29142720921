"""The process registry ends whole process trees, and the session check finds what escaped it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from tests.support.processes import SESSION_MARK, ProcessRegistry, end_processes, leftover_processes, wait_for

# A parent that starts a child which ignores SIGTERM, prints the child's pid, and waits.
_TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def _child_pid(parent: subprocess.Popen) -> int:
    return int(parent.stdout.readline())


def test_a_tree_is_ended_even_a_child_that_ignores_sigterm():
    registry = ProcessRegistry()
    parent = registry.start([sys.executable, "-c", _TREE], stdout=subprocess.PIPE)
    child = _child_pid(parent)
    report = end_processes(registry.started, registry.token, grace=1.0)
    assert len(report) == 2 and any(str(child) in line for line in report)
    assert parent.poll() is not None
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    registry.close()


def test_a_child_orphaned_by_a_sigkilled_parent_is_ended_by_the_token_it_inherited():
    registry = ProcessRegistry(grace=1.0)
    parent = registry.start([sys.executable, "-c", _TREE], stdout=subprocess.PIPE)
    child = _child_pid(parent)
    parent.send_signal(signal.SIGKILL)  # what the kill/restart tests do: the parent alone
    parent.wait(10)
    assert psutil.pid_exists(child)  # an orphan now, reparented away from this process
    registry.close()
    wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
             "the orphan to end", timeout=30)


def test_the_session_check_finds_an_orphan_by_its_environment_mark():
    mark = f"check-{os.getpid()}"
    env = {**os.environ, SESSION_MARK: mark}
    # The parent starts a child in a session of its own and exits: no process group, no parentage links it to us.
    launcher = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', "
         "'import time; time.sleep(600)'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )
    orphan = int(launcher.stdout)
    try:
        assert orphan not in {p.pid for p in psutil.Process().children(recursive=True)}
        deadline = time.monotonic() + 30
        while orphan not in {p.pid for p in leftover_processes(mark, baseline=set())}:
            assert time.monotonic() < deadline, "the marked orphan was not found"
            time.sleep(0.1)
        assert orphan not in {p.pid for p in leftover_processes("another-session", baseline=set())}
    finally:
        psutil.Process(orphan).kill()

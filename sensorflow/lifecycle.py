"""How a command stops: SIGTERM raised like Ctrl-C, the exit status of each, and children that die with their parent.

Kubernetes stops a container with SIGTERM and kills it 30 s later; a person
stops a command with Ctrl-C (SIGINT, which Python raises as
``KeyboardInterrupt``). ``raise_on_sigterm`` makes SIGTERM raise
``Terminated``, a ``KeyboardInterrupt``, so one ``except KeyboardInterrupt``
stops a command the same way for both, and ``exit_status`` gives the shell's
statuses: 130 for SIGINT, 143 for SIGTERM (128 + the signal number).

``die_with_parent`` ends a child process when its parent dies, so a
SIGKILLed command leaves no worker behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["Terminated", "die_with_parent", "exit_status", "raise_on_sigterm", "stopped_by"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises ``Terminated`` in the main thread (a no-op off the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for SIGINT (Ctrl-C)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def stopped_by(interrupt: KeyboardInterrupt) -> str:
    """``SIGTERM`` or ``SIGINT``, for the one line a stopped command prints."""
    return "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"


def die_with_parent(parent: int | None = None, every_s: float = 0.25) -> None:
    """End this process (exit status 1) within ``every_s`` of its parent's death, however the parent died.

    A daemon thread compares ``os.getppid()`` with ``parent`` (the pid of the
    process that started this one, as it knew itself; default: the current
    parent): an orphan is handed to another parent, so a change means the
    parent is gone, even if it died before this was called (a child's start-up
    is slow on a busy machine). Not ``PR_SET_PDEATHSIG``: its signal follows
    the THREAD that started the child, so a pool started from a worker thread
    would lose its processes when that thread ends.
    """
    expected = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(every_s)
        os._exit(1)

    if os.getppid() != expected:
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()

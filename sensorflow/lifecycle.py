"""How a command stops: SIGTERM raised like Ctrl-C, the exit status of each, and children that die with their parent.

Kubernetes stops a container with SIGTERM and kills it 30 s later; a person
stops a command with Ctrl-C (SIGINT, which Python raises as
``KeyboardInterrupt``). ``raise_on_sigterm`` makes SIGTERM raise
``Terminated``, a ``KeyboardInterrupt``, so one ``except KeyboardInterrupt``
stops a command the same way for both, and ``exit_status`` gives the shell's
statuses: 130 for SIGINT, 143 for SIGTERM (128 + the signal number).

``die_with_parent`` asks Linux to kill a child process when its parent dies
(``PR_SET_PDEATHSIG``), so a SIGKILLed command leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

__all__ = ["Terminated", "die_with_parent", "exit_status", "raise_on_sigterm", "stopped_by"]

_PR_SET_PDEATHSIG = 1


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


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux; elsewhere nothing).

    If the parent is already gone when this runs (the race between fork and
    this call), the process exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the parent's own clean-up has to do
        return
    if os.getppid() != parent:
        os._exit(1)

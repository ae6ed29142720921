"""How a running dataflow meets SIGINT and SIGTERM: one stop, bounded, never an abort.

Bytewax 0.21 runs a single worker on the main thread and checks Python's signals in its loop. An
exception raised by a signal handler (``KeyboardInterrupt``, or ``sensorflow.lifecycle.Terminated``
for SIGTERM) surfaces in whichever Python step is running; Bytewax turns it into a Rust panic,
unwinds (calling every sink's ``close()``) and re-raises it from ``cli_main`` as the cause of a
``BytewaxRuntimeError``. That unwinding is a clean stop: the last committed epoch is the state a
rerun resumes from, and every write is an upsert. What makes it unclean is a SECOND exception
raised while it unwinds (a panic in a destructor: SIGABRT, exit 134), or a ``close()`` that waits
for an unreachable store.

:class:`Interrupts` handles both signals for the length of a run:

* the first signal raises, as ``lifecycle.raise_on_sigterm`` and Python's own SIGINT handler do
  (the exception is theirs) - unless ``graceful`` is given (live runs): then it asks for a graceful
  stop (the source ends, the flow commits, checkpoints are written) and raises only if that has not
  finished within ``grace_seconds``, or on a second signal;
* it raises at most once; later signals are logged and dropped, so nothing is raised inside
  Bytewax's clean-up;
* :attr:`stopping` tells sinks and the run's exit steps to bound their waits;
* :meth:`raise_if_stopped` raises the interrupt once the flow has returned, however it returned
  (a ``close()`` keeps an interrupt instead of raising it: :meth:`kept`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from sensorflow.lifecycle import raise_on_sigterm

__all__ = ["Interrupts"]

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """SIGINT/SIGTERM during a run (see the module docstring); a context manager, on the main thread only."""

    def __init__(self, graceful: Callable[[str], None] | None = None, grace_seconds: float = 4.0):
        self._graceful = graceful
        self._grace_seconds = grace_seconds
        self._raising: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._previous: dict[int, Any] = {}
        self._signum: int | None = None
        self._interrupt: KeyboardInterrupt | None = None
        self._raised = False
        self._lock = threading.Lock()
        self._done = threading.Event()

    @property
    def stopping(self) -> bool:
        """True once a signal asked this run to stop."""
        return self._signum is not None

    def kept(self, interrupt: KeyboardInterrupt) -> None:
        """An interrupt caught where raising it could abort the process; :meth:`raise_if_stopped` raises it."""
        with self._lock:
            if self._interrupt is None:
                self._interrupt = interrupt
                self._signum = self._signum or signal.SIGINT

    def raise_if_stopped(self) -> None:
        """Raise the run's interrupt (``Terminated`` for SIGTERM, ``KeyboardInterrupt`` for SIGINT) if it was stopped."""
        if self._signum is None:
            return
        if self._interrupt is None:  # a graceful stop that finished: the interrupt the first signal would have raised
            try:
                self._raising[self._signum](self._signum, None)
            except KeyboardInterrupt as interrupt:
                self._interrupt = interrupt
        if self._interrupt is not None:
            raise self._interrupt.with_traceback(None)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; a run on another thread is stopped by its caller
        before = signal.getsignal(signal.SIGTERM)
        raise_on_sigterm()  # SIGTERM raises lifecycle.Terminated, as Ctrl-C raises KeyboardInterrupt
        self._raising[signal.SIGTERM] = signal.getsignal(signal.SIGTERM)
        self._previous[signal.SIGTERM] = before
        interrupt = signal.getsignal(signal.SIGINT)
        if interrupt is not signal.SIG_IGN:  # started with SIGINT ignored (nohup, a background job): left so
            self._raising[signal.SIGINT] = interrupt if callable(interrupt) else signal.default_int_handler
            self._previous[signal.SIGINT] = interrupt
        for signum in self._raising:
            signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._raised:
            log.info("%s received while stopping: ignored (the stop is under way)", name)
            return
        first = self._signum is None
        if first:
            self._signum = signum
        if first and self._graceful is not None:
            log.info("%s received: stopping gracefully (at most %g s before the run is interrupted)", name, self._grace_seconds)
            threading.Thread(target=self._deadline, args=(signum,), name="stop-deadline", daemon=True).start()
            self._graceful(name)
            return
        self._raised = True
        try:
            self._raising[self._signum](self._signum, frame)
        except KeyboardInterrupt as interrupt:
            self._interrupt = interrupt
            raise

    def _deadline(self, signum: int) -> None:
        """After the grace period, deliver the signal to the main thread again: a blocked read returns, and it raises."""
        if not self._done.wait(self._grace_seconds) and not self._raised:
            log.warning("the graceful stop did not finish within %g s: interrupting the run", self._grace_seconds)
            signal.pthread_kill(threading.main_thread().ident, signum)

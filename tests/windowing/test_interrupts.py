"""The run's SIGINT/SIGTERM policy on its own: the first signal raises (lifecycle's exceptions), later ones
are dropped, a graceful stop is asked first where there is one and interrupted after its grace period."""

from __future__ import annotations

import os
import signal
import time

import pytest

from sensorflow.lifecycle import Terminated
from sensorflow.windowing.interrupts import Interrupts


def _until_raised(timeout: float = 30.0) -> None:
    """Run Python bytecode until a signal handler raises (handlers run between bytecodes); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.01)
    pytest.fail(f"no interrupt within {timeout:g} s")


@pytest.fixture(autouse=True)
def _restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_the_first_signal_raises_once_and_later_ones_are_dropped(signum, raised):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Interrupts() as interrupts:
        with pytest.raises(raised) as first:
            os.kill(os.getpid(), signum)
            _until_raised()
        assert interrupts.stopping
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while the run unwinds: nothing raised
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0)  # a bytecode boundary: the handlers have run
        for _ in range(100):
            pass
        with pytest.raises(raised) as again:
            interrupts.raise_if_stopped()
        assert again.value is first.value
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before


def test_a_graceful_stop_is_asked_first_and_interrupted_after_its_grace_period():
    asked: list[str] = []
    with Interrupts(graceful=asked.append, grace_seconds=0.3) as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(Terminated):
            _until_raised()
        assert time.monotonic() - started >= 0.25  # not before the grace period
    assert asked == ["SIGTERM"] and interrupts.stopping


def test_a_graceful_stop_that_finishes_is_still_reported_as_the_signal():
    asked: list[str] = []
    with Interrupts(graceful=asked.append, grace_seconds=60) as interrupts:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # bytecode boundaries: the handler runs, asks, raises nothing
            pass
        assert asked == ["SIGINT"]
    with pytest.raises(KeyboardInterrupt) as stopped:
        interrupts.raise_if_stopped()
    assert not isinstance(stopped.value, Terminated)


def test_a_second_signal_during_a_graceful_stop_interrupts_at_once():
    with Interrupts(graceful=lambda name: None, grace_seconds=60):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            pass
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGINT)  # the first signal's kind is the one reported
            _until_raised()


def test_an_interrupt_kept_by_a_close_is_raised_after_the_flow():
    with Interrupts() as interrupts:
        assert not interrupts.stopping
        interrupts.raise_if_stopped()  # nothing happened: nothing raised
        kept = Terminated("signal SIGTERM")
        interrupts.kept(kept)
        with pytest.raises(Terminated) as raised:
            interrupts.raise_if_stopped()
        assert raised.value is kept


def test_a_sigint_ignored_at_start_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with Interrupts():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # nohup, a background job: Ctrl-C is not for it
        for _ in range(100):
            pass
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN

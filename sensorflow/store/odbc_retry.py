"""Which ODBC errors are worth another try, and trying again with backoff.

Errors are classified by SQLSTATE and, for SQL Server, by native error
number — never by the words of a message. pyodbc puts the SQLSTATE in
``args[0]`` and renders each diagnostic record into ``args[1]`` in a fixed
format, ``[SQLSTATE] text (native) (function)`` (later records
``; [SQLSTATE] text (native)``); ``diagnostics()`` reads the states and
numbers back out of that format, anchored at each record's end.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Diagnostic", "RetryPolicy", "diagnostics", "is_transient", "retry"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Retry-worthy SQLSTATEs besides class 08 (connection exceptions): serialization failure
# and deadlock (SQL Server reports its deadlock as 40001 too), timeouts, and PostgreSQL's
# operator intervention (admin/crash shutdown, starting up) and too many connections.
_TRANSIENT_STATES = frozenset({"40001", "40P01", "HYT00", "HYT01", "57P01", "57P02", "57P03", "53300"})

# One diagnostic record as pyodbc renders it: "[42S02] ... (208) (SQLExecDirectW)" or,
# after the first, "; [01000] ... (5701)". The lazy text runs to the native number
# that ends the record (followed by the function name, the next record, or the end).
_RECORD = re.compile(r"\[(?P<state>[0-9A-Z]{5})\] .*? \((?P<native>-?\d+)\)(?= \(\w+\)|; \[[0-9A-Z]{5}\] |$)", re.DOTALL)


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic record of an ODBC error."""

    sqlstate: str
    native: int | None


def diagnostics(error: BaseException) -> tuple[Diagnostic, ...]:
    """The diagnostic records of a pyodbc error (SQLSTATE from ``args[0]`` when the text has none)."""
    args = getattr(error, "args", ())
    state = args[0] if args and isinstance(args[0], str) else ""
    text = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
    records = tuple(Diagnostic(m["state"], int(m["native"])) for m in _RECORD.finditer(text))
    return records or (Diagnostic(state, None),)


def is_transient(error: BaseException, transient_natives: frozenset[int]) -> bool:
    """True if retrying the whole transaction may succeed: a lost connection, a timeout, a deadlock, throttling."""
    for record in diagnostics(error):
        if record.sqlstate.startswith("08") or record.sqlstate in _TRANSIENT_STATES:
            return True
        if record.native is not None and record.native in transient_natives:
            return True
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: try ``attempts`` times, waiting ~first_delay * 2^n (at most max_delay)."""

    attempts: int = 8
    first_delay: float = 0.2
    max_delay: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError("attempts must be >= 1 and 0 <= first_delay <= max_delay")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): half fixed, half random."""
        ceiling = min(self.max_delay, self.first_delay * 2**retry)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry(
    action: Callable[[], T],
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
    recover: Callable[[], None],
    what: str,
    rng: random.Random | None = None,
) -> T:
    """``action()``, retried on errors ``transient`` accepts, calling ``recover()`` before each retry.

    A non-transient error, or a transient one on the last attempt, propagates.
    """
    rng = rng or random.Random()
    for attempt in range(policy.attempts):
        try:
            return action()
        except Exception as e:
            if attempt + 1 >= policy.attempts or not transient(e):
                raise
            pause = policy.delay(attempt, rng)
            states = ",".join(sorted({d.sqlstate for d in diagnostics(e)}))
            log.warning("%s: transient error [%s], retry %d/%d in %.2f s", what, states, attempt + 1, policy.attempts - 1, pause)
            recover()
            time.sleep(pause)
    raise AssertionError("unreachable")

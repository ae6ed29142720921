"""Which ODBC errors are worth another try, and trying again with backoff for a time budget.

Errors are classified by SQLSTATE and, for SQL Server, by native error
number — never by the words of a message. pyodbc puts the SQLSTATE in
``args[0]`` and renders each diagnostic record into ``args[1]`` in a fixed
format, ``[SQLSTATE] text (native) (function)`` (later records
``; [SQLSTATE] text (native)``); ``diagnostics()`` reads the states and
numbers back out of that format, anchored at each record's end.

Permanent errors are never retried, whatever else the error carries: no such database
(3D000), bad credentials (class 28; SQL Server's login failed, 18456), no permission (42501;
SQL Server's 229/230). Transient ones are retried with capped exponential backoff and jitter
(``sensorflow.backoff``) for at most the policy's ``budget_seconds``: by default 120 s, twice
the "less than 60 seconds" in which Microsoft says most Azure SQL reconfigurations (failovers)
finish (docs/azure-sql.md has the source), so a typical failover is outlasted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from sensorflow.backoff import Backoff

__all__ = [
    "DEFAULT_BUDGET_SECONDS",
    "Diagnostic",
    "RetryPolicy",
    "diagnostics",
    "is_permanent",
    "is_permanent_state",
    "is_transient",
    "retry",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Retry-worthy SQLSTATEs besides class 08 (connection exceptions): serialization failure
# and deadlock (SQL Server reports its deadlock as 40001 too), timeouts, and PostgreSQL's
# operator intervention (admin/crash shutdown, starting up) and too many connections.
_TRANSIENT_STATES = frozenset({"40001", "40P01", "HYT00", "HYT01", "57P01", "57P02", "57P03", "53300"})
# Never worth another try: no such database, no permission; and class 28 (bad credentials).
_PERMANENT_STATES = frozenset({"3D000", "42501"})
_PERMANENT_CLASSES = ("28",)
# SQL Server, where the SQLSTATE is generic: login failed, permission denied (object, column).
_PERMANENT_NATIVES = frozenset({18456, 229, 230})

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


def is_permanent_state(sqlstate: str) -> bool:
    """True for a SQLSTATE no retry can get past: no such database, bad credentials, no permission."""
    return sqlstate in _PERMANENT_STATES or sqlstate.startswith(_PERMANENT_CLASSES)


def is_permanent(error: BaseException) -> bool:
    """True if no retry can succeed: no such database, bad credentials, no permission."""
    return any(
        is_permanent_state(record.sqlstate) or (record.native is not None and record.native in _PERMANENT_NATIVES)
        for record in diagnostics(error)
    )


def is_transient(error: BaseException, transient_natives: frozenset[int]) -> bool:
    """True if retrying the whole transaction may succeed: a lost connection, a timeout, a deadlock, throttling."""
    if is_permanent(error):
        return False
    for record in diagnostics(error):
        if record.sqlstate.startswith("08") or record.sqlstate in _TRANSIENT_STATES:
            return True
        if record.native is not None and record.native in transient_natives:
            return True
    return False


DEFAULT_BUDGET_SECONDS = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """Transient errors retried with ``backoff`` while the next wait ends within ``budget_seconds`` of the first error."""

    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.2, cap=15.0))

    def __post_init__(self) -> None:
        if self.budget_seconds < 0:
            raise ValueError("budget_seconds must be >= 0")


def retry(
    action: Callable[[], T],
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
    recover: Callable[[], None],
    what: str,
) -> T:
    """``action()``, retried on errors ``transient`` accepts, calling ``recover()`` before each retry.

    A non-transient error, or a transient one whose next wait would end past the budget, propagates.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        states = ",".join(sorted({d.sqlstate for d in diagnostics(error)})) if error is not None else "?"
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: transient error [%s], retry %d in %.2f s (%.0f of %.0f s retry budget used)",
            what, states, state.attempt_number, pause, state.seconds_since_start, policy.budget_seconds,
        )
        recover()

    return policy.backoff.retrying(transient, policy.budget_seconds, before_sleep)(action)

"""The one check every stateful step makes on the state Bytewax hands back after a restart.

Bytewax pickles each step's snapshot into its recovery store and passes it back, unpickled, to
the step's builder. Snapshots are frozen dataclasses with a ``version`` field; a state of
another type (a tuple written by an older release) or another version is refused, never
misread. ``SNAPSHOT_VERSION`` is the shape of every snapshot of this release: bump it when any
snapshot's fields change.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["SNAPSHOT_VERSION", "RecoveryStateError", "checked"]

SNAPSHOT_VERSION = 1

_T = TypeVar("_T")


class RecoveryStateError(RuntimeError):
    """Bytewax's recovery store holds state this release cannot read: another release wrote it."""


def checked(state: object, expected: type[_T]) -> _T:
    """``state`` itself when it is an ``expected`` of ``SNAPSHOT_VERSION``; else :class:`RecoveryStateError`.

    The error is one line naming what was found and what to do (a fresh ``--recovery-dir``).
    """
    version = getattr(state, "version", None)
    if type(state) is expected and version == SNAPSHOT_VERSION:
        return state  # type: ignore[return-value]
    found = type(state).__name__ + (f" version {version}" if type(state) is expected else "")
    raise RecoveryStateError(
        f"recovery state is {found}, not {expected.__name__} version {SNAPSHOT_VERSION}: the recovery directory "
        "was written by another sensorflow release; start with a fresh --recovery-dir"
    )

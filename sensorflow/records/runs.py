"""Sidecar runs as the store's ``Runs`` table keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["RunKind", "RunRecord", "RunStatus"]


class RunKind(StrEnum):
    """What a run or task does; a member is its value, the text ``Runs.Kind`` and task specs keep."""

    TRAIN = "train"
    SCORE = "score"


class RunStatus(StrEnum):
    """Where a run stands; a member is its value, the text ``Runs.Status`` keeps.

    ``partial``: some sensors failed (listed in the run's detail for the next run to retry).
    ``interrupted``: stopped by SIGINT or SIGTERM before it finished; like ``failed``, it moves
    nothing on, so the next run plans the same work again.
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class RunRecord:
    """One sidecar run as kept in the ``Runs`` table (key ``run_id``).

    Times are int64 ns: ``started_at``/``finished_at`` on the database clock
    (``Store.database_time``), ``range_from``/``range_to`` in window time (TS).
    ``detail`` is a JSON text the sidecar owns (failed sensors, job id, task
    durations); the store keeps it verbatim. ``kind`` and ``status`` given as
    text (a store's row) become their enum members; other text is a ``ValueError``.
    """

    run_id: str
    kind: RunKind
    status: RunStatus
    started_at: int
    finished_at: int | None = None
    range_from: int | None = None
    range_to: int | None = None
    sensors: int = 0
    tasks: int = 0
    failures: int = 0
    detail: str = "{}"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RunKind(self.kind))
        object.__setattr__(self, "status", RunStatus(self.status))

"""Sidecar runs as the store's ``Runs`` table keeps them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunRecord"]


@dataclass(frozen=True)
class RunRecord:
    """One sidecar run as kept in the ``Runs`` table (key ``run_id``).

    Times are int64 ns: ``started_at``/``finished_at`` on the database clock
    (``Store.database_time``), ``range_from``/``range_to`` in window time (TS).
    ``detail`` is a JSON text the sidecar owns (failed sensors, job id, task
    durations); the store keeps it verbatim.
    """

    run_id: str
    kind: str  # "score" | "train"
    status: str  # "running" | "succeeded" | "partial" | "failed"
    started_at: int
    finished_at: int | None = None
    range_from: int | None = None
    range_to: int | None = None
    sensors: int = 0
    tasks: int = 0
    failures: int = 0
    detail: str = "{}"

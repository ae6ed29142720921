"""Adding a job's tasks to Azure Batch in bulk: 100 per call, per-task outcomes, bounded retries.

The Add Task Collection call takes at most 100 tasks and answers per task:
``success``, ``servererror`` (retry it unchanged) or ``clienterror`` (it will
never be taken). A whole call can fail too (5xx after the client's own
retries, a dropped connection): the tasks may or may not have been added,
so they are sent again, and a ``TaskExists`` answer then means an earlier
attempt took them. Retries go in rounds with a growing pause; tasks still
not taken after the last round are reported as rejected with the last
reason, so their sensors fail (and are retried by the next run) instead of
the whole run failing. The SDK's own ``create_tasks`` retries server errors
without a bound, which is why this module calls the single-request
operation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sensorflow.batch_jobs.azure_batch_pool import BatchSetupError

__all__ = ["MAX_TASKS_PER_CALL", "AddReport", "BatchTask", "add_tasks"]

log = logging.getLogger(__name__)

MAX_TASKS_PER_CALL = 100  # the service's limit for Add Task Collection


@dataclass(frozen=True)
class BatchTask:
    """One task to add: its id and its ``BatchTaskCreateOptions``."""

    task_id: str
    options: Any


@dataclass
class AddReport:
    """What adding did: calls made, tasks re-sent, and the tasks Batch would not take (id -> reason)."""

    calls: int = 0
    resent: int = 0
    added: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"calls": self.calls, "resent": self.resent, "added": len(self.added), "rejected": dict(self.rejected)}


def add_tasks(client: Any, job_id: str, tasks: Sequence[BatchTask], rounds: int = 5, backoff_seconds: float = 2.0) -> AddReport:
    """Add ``tasks`` to ``job_id`` in calls of at most 100; see the module docstring for the retry rules."""
    from azure.batch import models
    from azure.core.exceptions import AzureError, HttpResponseError

    report = AddReport()
    pending = list(tasks)
    last_error: dict[str, str] = {}
    for round_ in range(rounds):
        if round_:
            report.resent += len(pending)
        again: list[BatchTask] = []
        for lo in range(0, len(pending), MAX_TASKS_PER_CALL):
            chunk = pending[lo:lo + MAX_TASKS_PER_CALL]
            report.calls += 1
            try:
                response = client.create_task_collection(job_id, models.BatchTaskGroup(task_values=[t.options for t in chunk]))
            except HttpResponseError as e:
                status = e.status_code or 0
                if status and status < 500 and status not in (408, 429):  # the request is wrong: no retry fixes it
                    raise BatchSetupError(f"cannot add tasks to Batch job {job_id}: {_reason(e)}") from e
                again.extend(chunk)
                last_error.update({t.task_id: _reason(e) for t in chunk})
                continue
            except AzureError as e:  # no answer at all: unknown whether they were added
                again.extend(chunk)
                last_error.update({t.task_id: _reason(e) for t in chunk})
                continue
            answers = {r.task_id: r for r in response.result_values or []}
            for task in chunk:
                answer = answers.get(task.task_id)
                if answer is None:
                    again.append(task)
                    last_error[task.task_id] = "no answer for the task"
                elif answer.status == models.BatchTaskAddStatus.SUCCESS or _code(answer) == "TaskExists":
                    report.added.add(task.task_id)
                elif answer.status == models.BatchTaskAddStatus.SERVER_ERROR:
                    again.append(task)
                    last_error[task.task_id] = _answer_reason(answer)
                else:
                    report.rejected[task.task_id] = _answer_reason(answer)
        if not again:
            return report
        pending = again
        if round_ + 1 < rounds:
            log.warning("Batch job %s: %d task(s) not added yet, sending them again", job_id, len(again))
            time.sleep(backoff_seconds * 2 ** round_)
    for task in pending:
        report.rejected[task.task_id] = f"not added after {rounds} round(s): {last_error.get(task.task_id, 'unknown')}"
    return report


def _code(answer: Any) -> str | None:
    return answer.error.code if answer.error is not None else None


def _answer_reason(answer: Any) -> str:
    error = answer.error
    if error is None:
        return str(answer.status)
    message = error.message.value if error.message is not None else ""
    return f"{error.code}: {message}"[:300]


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]

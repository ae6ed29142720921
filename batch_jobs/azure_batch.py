"""Run a sidecar run's tasks on Azure Batch: one job per run, one Batch task per ``TaskSpec``.

``AzureBatchExecutor.run`` deletes this pool's sensorflow jobs older than the
retention period, makes sure the pool exists (``azure_batch_pool``), writes
each spec to the model store (Azure Blob: the nodes read it from there),
creates a job named after the run (``sensorflow-score-20260101T001000-ab12cd``)
and adds its tasks in bulk. Every task runs ``sensorflow task run SPEC_URL``
in the project's container image with the store reference and Blob access in
its environment (never in the spec), under a wall-clock limit and a retry
count; Batch uploads its stdout, stderr and ``result.json`` (the task's
``TaskResult``) to the output container as ``<job>/<task>/...``. The executor
polls the job, reads each finished task's result from there and reports it;
a task that left no result comes back with every sensor failed and Batch's
reason (exit code, failure code, last stderr line), so the sidecar retries
those sensors in its next run. The job is terminated when the run ends.

``run_detail()`` gives the run record the job id, the pool, how the tasks
were added and each task's attempts and durations.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sensorflow.batch_jobs.azure_batch_add import BatchTask, add_tasks
from sensorflow.batch_jobs.azure_batch_pool import (
    BatchSetupError,
    PoolConfig,
    ensure_pool,
    one_line,
)
from sensorflow.batch_jobs.executors import Callback, Executor, report, store_specs
from sensorflow.batch_jobs.model_store.base import BLOB_SCHEME
from sensorflow.batch_jobs.tasks import ENV_PREFIX, TaskResult, TaskSpec

__all__ = [
    "RESULT_FILE",
    "RESULT_FILE_ENV",
    "AzureBatchExecutor",
    "BatchConfig",
    "expired_jobs",
    "job_id_for",
]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
RESULT_FILE_ENV = "SENSORFLOW_TASK_RESULT_FILE"  # where `sensorflow task run` also writes its result, for upload
JOB_PREFIX = "sensorflow-"
_RUN_ID = re.compile(r"^(?P<stamp>\d{8}T\d{6})-(?P<kind>[a-z]+)-(?P<suffix>[0-9a-f]+)$")
_POLL_FAILURES = 5  # consecutive failed polls before the run gives up


@dataclass(frozen=True)
class BatchConfig:
    """How runs use Batch: the pool, where outputs go, retries, time limits, retention and polling."""

    pool: PoolConfig
    output_container_url: str = field(repr=False)  # may carry a SAS token
    max_task_retries: int = 2
    task_timeout_seconds: float = 3600.0
    job_timeout_seconds: float = 4 * 3600.0
    retention_seconds: float = 24 * 3600.0
    poll_seconds: float = 15.0
    add_rounds: int = 5  # rounds of re-adding tasks the service could not take
    add_backoff_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not self.output_container_url.startswith(("https://", "http://")):
            raise BatchSetupError("the Batch output container must be a container URL (https://ACCOUNT.blob.core.windows.net/NAME)")
        if "?" not in self.output_container_url and self.pool.identity_resource_id is None:
            raise BatchSetupError("the Batch output container URL needs a SAS token, or set the pool's managed identity")
        if self.max_task_retries < -1:
            raise BatchSetupError("max task retries must be >= 0 (-1: unlimited)")
        if min(self.task_timeout_seconds, self.job_timeout_seconds, self.retention_seconds, self.poll_seconds) <= 0:
            raise BatchSetupError("Batch timeouts, retention and poll interval must be > 0")
        if self.add_rounds < 1:
            raise BatchSetupError("add_rounds must be >= 1")

    @property
    def output_base(self) -> str:
        """The container URL without its SAS token: safe to log and record."""
        return self.output_container_url.split("?", 1)[0]


def job_id_for(run_id: str) -> str:
    """A readable, valid Batch job id for a run: ``sensorflow-<kind>-<timestamp>-<suffix>``."""
    match = _RUN_ID.match(run_id)
    name = f"{match['kind']}-{match['stamp']}-{match['suffix']}" if match else re.sub(r"[^A-Za-z0-9_-]", "-", run_id)
    return (JOB_PREFIX + name)[:64]


def expired_jobs(jobs: Sequence[Any], pool_id: str, now: datetime, retention: timedelta, job_timeout: timedelta) -> list[str]:
    """Ids of this pool's sensorflow jobs to delete: ended before ``now - retention``.

    A job still active that was created before ``now - retention - job_timeout``
    outlived its own time limit (a sidecar died mid-run): it goes too.
    """
    cutoff = now - retention
    expired = []
    for job in jobs:
        if not job.id.startswith(JOB_PREFIX) or job.pool_info is None or job.pool_info.pool_id != pool_id:
            continue
        if job.state == "deleting":
            continue
        ended = job.execution_info.end_time if job.execution_info is not None else None
        if (ended < cutoff) if ended is not None else (job.creation_time < cutoff - job_timeout):
            expired.append(job.id)
    return expired


class AzureBatchExecutor(Executor):
    """Runs each run's tasks as one Azure Batch job; see the module docstring.

    ``client`` is an ``azure.batch.BatchClient``; ``environ`` is what every
    task gets in its environment (the store URL behind ``env:NAME``, Blob
    access for the model store); ``outputs`` reads the output container
    (default: from its URL, with the SAS token or DefaultAzureCredential).
    """

    def __init__(self, config: BatchConfig, client: Any, environ: Mapping[str, str], outputs: Any = None):
        self.config, self.client = config, client
        self._environ = dict(environ)
        self._outputs = outputs if outputs is not None else _container_client(config)
        self._detail: dict[str, Any] = {}

    def run(self, specs: Sequence[TaskSpec], on_done: Callback | None = None) -> list[TaskResult]:
        if not specs:
            return []
        self._check(specs)
        job_id = job_id_for(specs[0].run_id)
        clock = time.monotonic()
        self._detail = {"pool_id": self.config.pool.pool_id, "deleted_jobs": self._cleanup()}
        self._detail["pool"] = ensure_pool(self.client, self.config.pool)
        try:
            urls = store_specs(specs)
        except Exception as e:  # noqa: BLE001 - no spec stored: every task fails with the reason, as on the local pool
            return report([TaskResult.all_failed(s, f"cannot store the task spec: {e}") for s in specs], on_done)
        self._create_job(job_id, specs[0])
        self._detail |= {"job_id": job_id, "outputs": f"{self.config.output_base}/{job_id}/"}
        try:
            return self._run_job(job_id, specs, urls, on_done, clock)
        finally:
            self._terminate(job_id)
            self._detail["seconds"] = round(time.monotonic() - clock, 3)

    def run_detail(self) -> dict[str, Any]:
        return {"batch": dict(self._detail)} if self._detail else {}

    def close(self) -> None:
        self._outputs.close()
        self.client.close()

    # -- steps ----------------------------------------------------------------------------------

    def _check(self, specs: Sequence[TaskSpec]) -> None:
        if len({s.task_id for s in specs}) != len(specs) or len({s.run_id for s in specs}) != 1:
            raise ValueError("a run's task ids must be unique and its tasks share one run id")
        for spec in specs:
            if spec.store.startswith("sqlite:///"):
                raise BatchSetupError("Azure Batch needs a server store (PostgreSQL or Azure SQL over ODBC): "
                                      "Batch nodes cannot open this machine's SQLite file")
            if not spec.model_store.startswith(BLOB_SCHEME):
                raise BatchSetupError(f"Azure Batch needs the model store in Azure Blob (azblob://CONTAINER), "
                                      f"not {spec.model_store!r}: Batch nodes read specs and models from there")
            name = spec.store[len(ENV_PREFIX):]
            if name not in self._environ:
                raise BatchSetupError(f"the store variable {name} is not in the environment given to Batch tasks")

    def _cleanup(self) -> int:
        """Delete expired jobs; trouble is logged, not fatal (the next run tries again)."""
        from azure.core.exceptions import AzureError

        try:
            jobs = list(self.client.list_jobs(select=["id", "state", "creationTime", "executionInfo", "poolInfo"]))
            doomed = expired_jobs(jobs, self.config.pool.pool_id, datetime.now(UTC),
                                  timedelta(seconds=self.config.retention_seconds),
                                  timedelta(seconds=self.config.job_timeout_seconds))
            for job_id in doomed:  # deletion finishes in the service; its poller is not waited for
                self.client.begin_delete_job(job_id, polling_interval=max(1, round(self.config.poll_seconds)))
            return len(doomed)
        except AzureError as e:
            log.warning("Batch job cleanup failed (retried next run): %s", one_line(e))
            return 0

    def _create_job(self, job_id: str, first: TaskSpec) -> None:
        from azure.batch import models
        from azure.core.exceptions import AzureError

        environment = {**self._environ, RESULT_FILE_ENV: RESULT_FILE}
        job = models.BatchJobCreateOptions(
            id=job_id,
            display_name=f"sensorflow {first.kind} run {first.run_id}",
            pool_info=models.BatchPoolInfo(pool_id=self.config.pool.pool_id),
            constraints=models.BatchJobConstraints(
                max_wall_clock_time=timedelta(seconds=self.config.job_timeout_seconds),
                max_task_retry_count=self.config.max_task_retries,
            ),
            common_environment_settings=[models.EnvironmentSetting(name=k, value=v) for k, v in sorted(environment.items())],
            metadata=[models.BatchMetadataItem(name="sensorflow-run", value=first.run_id)],
        )
        try:
            self.client.create_job(job)
        except AzureError as e:
            raise BatchSetupError(f"cannot create Batch job {job_id}: {one_line(e)}") from e

    def _run_job(self, job_id: str, specs: Sequence[TaskSpec], urls: list[str], on_done: Callback | None,
                 clock: float) -> list[TaskResult]:
        tasks = [BatchTask(spec.task_id, self._task(job_id, spec, url)) for spec, url in zip(specs, urls)]
        added = add_tasks(self.client, job_id, tasks, self.config.add_rounds, self.config.add_backoff_seconds)
        self._detail["add"] = added.summary()
        results: dict[str, TaskResult] = {}
        for spec in specs:
            if spec.task_id in added.rejected:
                results[spec.task_id] = report([TaskResult.all_failed(
                    spec, f"Batch did not take the task: {added.rejected[spec.task_id]}")], on_done)[0]
        waiting = {s.task_id: s for s in specs if s.task_id not in results}
        self._detail["tasks"] = {}
        self._wait(job_id, waiting, results, on_done, clock)
        return [results[s.task_id] for s in specs]

    def _task(self, job_id: str, spec: TaskSpec, url: str):
        from azure.batch import models

        def upload(pattern: str, path: str) -> Any:
            destination = models.OutputFileBlobContainerDestination(
                container_url=self.config.output_container_url, path=path,
                identity_reference=None if "?" in self.config.output_container_url else
                models.BatchNodeIdentityReference(resource_id=self.config.pool.identity_resource_id))
            return models.OutputFile(file_pattern=pattern, destination=models.OutputFileDestination(container=destination),
                                     upload_options=models.OutputFileUploadConfiguration(upload_condition="taskcompletion"))

        prefix = f"{job_id}/{spec.task_id}"
        return models.BatchTaskCreateOptions(
            id=spec.task_id,
            display_name=f"{spec.kind} {len(spec.sensors)} sensors",
            command_line=f"sensorflow task run {shlex.quote(url)}",
            container_settings=models.BatchTaskContainerSettings(
                image_name=self.config.pool.container_image,
                working_directory=models.ContainerWorkingDirectory.TASK_WORKING_DIRECTORY,
            ),
            # stdout.txt and stderr.txt sit in the task directory, one above the working directory.
            output_files=[upload("../std*.txt", prefix), upload(RESULT_FILE, f"{prefix}/{RESULT_FILE}")],
            constraints=models.BatchTaskConstraints(
                max_wall_clock_time=timedelta(seconds=self.config.task_timeout_seconds),
                max_task_retry_count=self.config.max_task_retries,
                retention_time=timedelta(seconds=self.config.retention_seconds),
            ),
            user_identity=models.UserIdentity(auto_user=models.AutoUserSpecification(scope="pool", elevation_level="nonadmin")),
        )

    def _wait(self, job_id: str, waiting: dict[str, TaskSpec], results: dict[str, TaskResult],
              on_done: Callback | None, clock: float) -> None:
        """Poll until every waiting task completed, the job ended, or the job's time limit (plus slack) passed."""
        from azure.core.exceptions import AzureError

        deadline = clock + self.config.job_timeout_seconds + 4 * self.config.poll_seconds + 60
        failures = 0
        while waiting:
            try:
                finished = [t for t in self.client.list_tasks(job_id, select=["id", "state", "creationTime", "executionInfo", "nodeInfo"])
                            if t.id in waiting and t.state == "completed"]
                ended = None if finished else self._job_ended(job_id)
                failures = 0
            except AzureError as e:
                failures += 1
                if failures >= _POLL_FAILURES:
                    raise BatchSetupError(f"cannot follow Batch job {job_id}: {one_line(e)}") from e
                log.warning("polling Batch job %s failed (%d in a row): %s", job_id, failures, one_line(e))
                finished, ended = [], None
            for task in finished:
                spec = waiting.pop(task.id)
                self._detail["tasks"][task.id] = _task_detail(task)
                results[task.id] = report([self._collect(job_id, spec, task)], on_done)[0]
            if waiting and (ended is not None or time.monotonic() > deadline):
                reason = ended or f"no result within the job's time limit ({self.config.job_timeout_seconds:.0f} s)"
                for spec in list(waiting.values()):
                    results[spec.task_id] = report([TaskResult.all_failed(spec, f"Batch job {job_id} ended: {reason}")], on_done)[0]
                waiting.clear()
            if waiting and not finished:
                time.sleep(self.config.poll_seconds)

    def _job_ended(self, job_id: str) -> str | None:
        """Why the job is over (completed or being terminated), or None while it runs."""
        job = self.client.get_job(job_id, select=["id", "state", "executionInfo"])
        if job.state not in ("completed", "terminating"):
            return None
        info = job.execution_info
        return (info.termination_reason if info is not None else None) or str(job.state)

    def _collect(self, job_id: str, spec: TaskSpec, task: Any) -> TaskResult:
        """The task's own result from the output container, else every sensor failed with Batch's reason."""
        raw = self._read(f"{job_id}/{spec.task_id}/{RESULT_FILE}")
        if raw is not None:
            try:
                result = TaskResult.from_json(raw)
                if (result.task_id, result.run_id) == (spec.task_id, spec.run_id) and \
                        [(o.device, o.tag) for o in result.outcomes] == [tuple(s) for s in spec.sensors]:
                    return result
                log.warning("result of Batch task %s/%s belongs to another task: ignored", job_id, spec.task_id)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("result of Batch task %s/%s is unreadable: %s", job_id, spec.task_id, e)
        info = task.execution_info
        attempts = (info.retry_count + 1) if info is not None else 0
        parts = [f"exit code {info.exit_code}" if info is not None and info.exit_code is not None else "never ran"]
        if info is not None and info.failure_info is not None:
            parts.append(f"{info.failure_info.code}: {info.failure_info.message}")
        stderr = (self._read(f"{job_id}/{spec.task_id}/stderr.txt") or b"").decode("utf-8", "replace").strip()
        if stderr:
            parts.append(f"stderr: {stderr.splitlines()[-1][:300]}")
        seconds = (info.end_time - info.start_time).total_seconds() if info is not None and info.start_time and info.end_time else 0.0
        return TaskResult.all_failed(spec, f"Batch task failed after {attempts} attempt(s), no result: {'; '.join(parts)}", seconds)

    def _read(self, name: str) -> bytes | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self._outputs.download_blob(name).readall()
        except ResourceNotFoundError:
            return None
        except AzureError as e:
            log.warning("cannot read Batch output %s: %s", name, one_line(e))
            return None

    def _terminate(self, job_id: str) -> None:
        from azure.core.exceptions import AzureError

        # azure-batch 15.1 cannot send a terminate request without a body (and does not export its
        # options model): the REST body itself, with the reason.
        reason = {"terminateReason": "RunFinished"}
        try:
            self.client.begin_terminate_job(job_id, reason, polling_interval=max(1, round(self.config.poll_seconds)))
        except AzureError as e:  # e.g. already completed by its time limit
            log.info("Batch job %s not terminated: %s", job_id, one_line(e))


def _task_detail(task: Any) -> dict[str, Any]:
    """Attempts, exit code, node and durations of a completed Batch task, for the run record."""
    info = task.execution_info
    detail: dict[str, Any] = {"attempts": (info.retry_count + 1) if info else 0, "exit_code": info.exit_code if info else None}
    if info is not None and info.start_time is not None:
        detail["queued_seconds"] = round((info.start_time - task.creation_time).total_seconds(), 3)
        if info.end_time is not None:
            detail["ran_seconds"] = round((info.end_time - info.start_time).total_seconds(), 3)
    if info is not None and info.failure_info is not None:
        detail["failure"] = f"{info.failure_info.code}: {info.failure_info.message}"
    if task.node_info is not None:
        detail["node"] = task.node_info.node_id
    return detail


def _container_client(config: BatchConfig) -> Any:
    from azure.storage.blob import ContainerClient

    if "?" in config.output_container_url:
        return ContainerClient.from_container_url(config.output_container_url)
    from azure.identity import DefaultAzureCredential

    return ContainerClient.from_container_url(config.output_container_url, credential=DefaultAzureCredential())

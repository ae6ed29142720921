"""An in-process stand-in for the Azure Batch service, behind the real ``azure.batch.BatchClient``.

``BatchStandIn.transport()`` is an azure-core ``HttpTransport``: the client's
whole pipeline (serialization, shared key signing, retry policy, error
mapping, paging, long-running-operation pollers) runs unchanged and only the
network hop is replaced. The stand-in serves exactly the REST operations the
executor uses (pools: get, add, enable autoscale; jobs: add, get, list,
delete, terminate; tasks: add collection, list), checks the shared key
signature, the API version and the request bodies (100 tasks per call, ids,
autoscale formulas through ``batch_formula``), and answers anything else
with an error naming the operation.

Tasks really run: each attempt is a subprocess of the task's command line
(``sensorflow`` resolved to this checkout's ``.venv/bin/sensorflow``) in a
task directory with ``wd/`` as working directory, stdout/stderr in the task
directory, the job's and task's environment settings plus ``AZ_BATCH_*``
(not this process's environment), the task's wall-clock limit and retry
count; after each attempt its output files are uploaded to Blob Storage
(Azurite) per ``outputFiles`` (SAS container URLs only), as Batch does.
``Faults`` injects what a live service does now and then: 500s on Add Task
Collection (before or after taking the tasks), per-task server errors, a
node losing a task's process, a node with a different environment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shlex
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import isodate

from tests.support.batch_formula import FormulaError, Samples, evaluate
from tests.support.batch_standin_http import (
    ROUTES,
    StandInResponse,
    StandInTransport,
    error_body,
    signature,
)

__all__ = ["BatchStandIn", "Faults"]

REPO = Path(__file__).resolve().parents[2]
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class Faults:
    """Faults to inject; tests change them between runs."""

    add_errors: list[str] = field(default_factory=list)  # next Add Task Collection calls: "500" or "500-after" (taken, then 500)
    add_server_errors: dict[str, int] = field(default_factory=dict)  # task id -> per-task "servererror" answers first
    kill: dict[str, float] = field(default_factory=dict)  # task id -> attempts whose process is killed at once (inf: all)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # task id -> environment overrides on its node


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BatchStandIn:
    """The service state (pools, jobs, tasks), a request log and a node with ``slots`` task slots."""

    def __init__(self, root: Path, account: str = "standin", key: str = "", slots: int = 2, page_size: int = 1000):
        self.account = account
        self.key = key or base64.b64encode(hashlib.sha256(b"stand-in key").digest()).decode()
        self.url = f"https://{account}.westeurope.batch.azure.com"
        self.root, self.page_size = root, page_size
        self.command = str(REPO / ".venv" / "bin" / "sensorflow")
        self.faults = Faults()
        self.ops: list[str] = []  # operation of every request served, in order
        self.pools: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.tasks: dict[str, dict[str, dict]] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._processes: dict[tuple[str, str], subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._node = ThreadPoolExecutor(slots, thread_name_prefix="standin-node")

    def transport(self) -> StandInTransport:
        return StandInTransport(self)

    def close(self) -> None:
        with self._lock:
            for process in self._processes.values():
                process.kill()
            self.jobs.clear()
        self._node.shutdown(wait=True, cancel_futures=True)

    # -- HTTP -----------------------------------------------------------------------------------

    def handle(self, request: Any) -> StandInResponse:
        url = urlsplit(request.url)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "api-version" not in query:
            return self._reply(request, 400, error_body("MissingRequiredQueryParameter", "api-version is required"))
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        name, _, given = credential.partition(":")
        expected = signature(self.account, self.key, request.method, request.headers, url)
        if scheme != "SharedKey" or name != self.account or not hmac.compare_digest(given, expected):
            return self._reply(request, 401, error_body("AuthenticationFailed", "Server failed to authenticate the request."))
        path = unquote(url.path)
        for method, pattern, operation, handler_name in ROUTES:
            match = pattern.match(path)
            if method == request.method and match:
                body = json.loads(request.content) if request.content else None
                with self._lock:
                    self.ops.append(operation)
                    self._enforce_job_limits()
                    status, payload, headers = getattr(self, handler_name)(body, query, **match.groupdict())
                return self._reply(request, status, payload, headers)
        return self._reply(request, 400, error_body("UnsupportedOperation", f"the stand-in does not serve {request.method} {path}"))

    def _reply(self, request: Any, status: int, payload: Any = None, headers: dict | None = None) -> StandInResponse:
        headers = {"request-id": os.urandom(8).hex(), **(headers or {})}
        if payload is not None:
            headers["Content-Type"] = "application/json;odata=minimalmetadata"
        return StandInResponse(request, status, b"" if payload is None else json.dumps(payload).encode(), headers)

    @staticmethod
    def _created(entity: dict) -> tuple[int, dict, dict]:
        modified = format_datetime(datetime.fromisoformat(entity["lastModified"]), usegmt=True)  # headers carry RFC 1123
        return 201, None, {"ETag": entity["eTag"], "Last-Modified": modified, "DataServiceId": entity["url"]}

    def _entity(self, body: dict, kind: str, state: str = "active") -> dict:
        now = _now()
        return {**body, "url": f"{self.url}/{kind}/{body['id']}", "eTag": f"0x{os.urandom(6).hex().upper()}",
                "lastModified": now, "creationTime": now, "state": state, "stateTransitionTime": now}

    def _page(self, items: list[dict], query: dict, path: str) -> dict:
        skip = int(query.get("$skiptoken", 0))
        size = min(self.page_size, int(query.get("maxresults", 1000)))
        page = {"value": items[skip:skip + size]}
        if skip + size < len(items):
            page["odata.nextLink"] = f"{self.url}{path}?api-version={query['api-version']}&$skiptoken={skip + size}"
        return page

    # -- pools ----------------------------------------------------------------------------------

    def get_pool(self, body: None, query: dict, pool: str):
        if pool not in self.pools:
            return 404, error_body("PoolNotFound", "The specified pool does not exist."), {}
        return 200, self.pools[pool], {}

    def add_pool(self, body: dict, query: dict):
        vm = body.get("virtualMachineConfiguration") or {}
        containers = vm.get("containerConfiguration") or {}
        if not body.get("vmSize") or not vm.get("imageReference") or not vm.get("nodeAgentSKUId"):
            return 400, error_body("InvalidRequestBody", "vmSize and virtualMachineConfiguration are required"), {}
        if containers.get("type") != "dockerCompatible" or not containers.get("containerImageNames"):
            return 400, error_body("InvalidRequestBody", "a container pool needs its type and image names"), {}
        if not _ID.match(body.get("id", "")):
            return 400, error_body("InvalidPropertyValue", "a pool id is 1-64 letters, digits, '-' or '_'"), {}
        if body["id"] in self.pools:
            return 409, error_body("PoolExists", "The specified pool already exists."), {}
        if (problem := self._check_autoscale(body)) is not None:
            return 400, problem, {}
        self.pools[body["id"]] = self._entity(body, "pools") | {"allocationState": "steady", "currentDedicatedNodes": 0,
                                                                  "currentLowPriorityNodes": 0}
        return self._created(self.pools[body["id"]])

    def enable_autoscale(self, body: dict, query: dict, pool: str):
        if pool not in self.pools:
            return 404, error_body("PoolNotFound", "The specified pool does not exist."), {}
        if (problem := self._check_autoscale({**body, "enableAutoScale": True})) is not None:
            return 400, problem, {}
        self.pools[pool].update(body, enableAutoScale=True, lastModified=_now())
        return 200, None, {}

    @staticmethod
    def _check_autoscale(body: dict) -> dict | None:
        if not body.get("enableAutoScale"):
            return None
        if isodate.parse_duration(body.get("autoScaleEvaluationInterval", "PT15M")).total_seconds() < 300:
            return error_body("InvalidPropertyValue", "autoScaleEvaluationInterval must be at least 5 minutes")
        try:
            evaluate(body.get("autoScaleFormula", ""), {"$PendingTasks": Samples(), "$ActiveTasks": Samples(),
                                                        "$RunningTasks": Samples()})
        except FormulaError as e:
            return error_body("InvalidAutoScaleFormula", str(e))
        return None

    # -- jobs -----------------------------------------------------------------------------------

    def add_job(self, body: dict, query: dict):
        if not body.get("poolInfo", {}).get("poolId"):
            return 400, error_body("InvalidRequestBody", "poolInfo.poolId is required"), {}
        if not _ID.match(body.get("id", "")):
            return 400, error_body("InvalidPropertyValue", "a job id is 1-64 letters, digits, '-' or '_'"), {}
        if body["id"] in self.jobs:
            return 409, error_body("JobExists", "The specified job already exists."), {}
        self.jobs[body["id"]] = self._entity(body, "jobs") | {"executionInfo": {"startTime": _now(), "poolId": body["poolInfo"]["poolId"]}}
        self.tasks[body["id"]] = {}
        return self._created(self.jobs[body["id"]])

    def get_job(self, body: None, query: dict, job: str):
        if job not in self.jobs:
            return 404, error_body("JobNotFound", "The specified job does not exist."), {}
        return 200, self.jobs[job], {}

    def list_jobs(self, body: None, query: dict):
        return 200, self._page(list(self.jobs.values()), query, "/jobs"), {}

    def delete_job(self, body: None, query: dict, job: str):
        if job not in self.jobs:
            return 404, error_body("JobNotFound", "The specified job does not exist."), {}
        self._kill(job)
        del self.jobs[job], self.tasks[job]
        return 202, None, {}

    def terminate_job(self, body: dict | None, query: dict, job: str):
        if job not in self.jobs:
            return 404, error_body("JobNotFound", "The specified job does not exist."), {}
        if self.jobs[job]["state"] == "completed":
            return 409, error_body("JobCompleted", "The specified job is already in a completed state."), {}
        self._end_job(job, (body or {}).get("terminateReason") or "UserTerminate")
        return 202, None, {}

    def _end_job(self, job: str, reason: str) -> None:
        self._kill(job)
        now = _now()
        self.jobs[job].update(state="completed", stateTransitionTime=now)
        self.jobs[job]["executionInfo"].update(endTime=now, terminateReason=reason)

    def _enforce_job_limits(self) -> None:
        now = datetime.now(UTC)
        for job_id, job in self.jobs.items():
            limit = (job.get("constraints") or {}).get("maxWallClockTime")
            if job["state"] == "active" and limit and now - isodate.parse_datetime(job["creationTime"]) > isodate.parse_duration(limit):
                self._end_job(job_id, "MaxWallClockTimeExpiry")

    def set_job_times(self, job: str, created: datetime, ended: datetime | None) -> None:
        """Test set-up: make a job look created (and ended) at these times."""
        with self._lock:
            self.jobs[job]["creationTime"] = created.isoformat().replace("+00:00", "Z")
            if ended is not None:
                self.jobs[job].update(state="completed")
                self.jobs[job]["executionInfo"]["endTime"] = ended.isoformat().replace("+00:00", "Z")

    # -- tasks ----------------------------------------------------------------------------------

    def add_tasks(self, body: dict, query: dict, job: str):
        if job not in self.jobs:
            return 404, error_body("JobNotFound", "The specified job does not exist."), {}
        if self.jobs[job]["state"] != "active":
            return 409, error_body("JobNotActive", "The specified job is not active."), {}
        tasks = body.get("value") or []
        if not 1 <= len(tasks) <= 100:
            return 400, error_body("InvalidRequestBody", f"a task collection holds 1 to 100 tasks, not {len(tasks)}"), {}
        fault = self.faults.add_errors.pop(0) if self.faults.add_errors else None
        if fault == "500":
            return 500, error_body("ServerBusy", "The server is busy."), {}
        answers = [self._add_task(job, task) for task in tasks]
        if fault == "500-after":
            return 500, error_body("OperationTimedOut", "The operation timed out after taking the tasks."), {}
        return 200, {"value": answers}, {}

    def _add_task(self, job: str, task: dict) -> dict:
        task_id = task.get("id", "")
        if self.faults.add_server_errors.get(task_id, 0) > 0:
            self.faults.add_server_errors[task_id] -= 1
            return {"status": "servererror", "taskId": task_id, "error": error_body("ServerBusy", "Try again.")}
        if not _ID.match(task_id):
            return {"status": "clienterror", "taskId": task_id, "error": error_body("InvalidPropertyValue", "bad task id")}
        if task_id in self.tasks[job]:
            return {"status": "clienterror", "taskId": task_id, "error": error_body("TaskExists", "The specified task already exists.")}
        if not task.get("commandLine") or not (task.get("containerSettings") or {}).get("imageName"):
            return {"status": "clienterror", "taskId": task_id, "error": error_body("InvalidPropertyValue", "commandLine and imageName are required")}
        entity = self._entity(task, f"jobs/{job}/tasks")
        self.tasks[job][task_id] = entity
        self._node.submit(self._run_task, job, task_id)
        return {"status": "success", "taskId": task_id, "eTag": entity["eTag"], "lastModified": entity["lastModified"],
                "location": entity["url"]}

    def list_tasks(self, body: None, query: dict, job: str):
        if job not in self.jobs:
            return 404, error_body("JobNotFound", "The specified job does not exist."), {}
        return 200, self._page(list(self.tasks[job].values()), query, f"/jobs/{job}/tasks"), {}

    # -- the node -------------------------------------------------------------------------------

    def _kill(self, job: str) -> None:
        for (job_id, _), process in self._processes.items():
            if job_id == job:
                process.kill()

    def _run_task(self, job_id: str, task_id: str) -> None:
        from tests.support.batch_standin_node import run_attempt

        while True:
            with self._lock:
                job, task = self.jobs.get(job_id), self.tasks.get(job_id, {}).get(task_id)
                if job is None or task is None or job["state"] != "active" or job["poolInfo"]["poolId"] not in self.pools:
                    return  # no pool, no nodes: the task stays queued
                attempt = self._attempts.get((job_id, task_id), 0)
                self._attempts[(job_id, task_id)] = attempt + 1
                info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
                for key in ("endTime", "exitCode", "result", "failureInfo"):
                    info.pop(key, None)
                info["startTime"] = _now()
                task.update(state="running", stateTransitionTime=info["startTime"],
                            nodeInfo={"poolId": job["poolInfo"]["poolId"], "nodeId": "tvmps_standin_0"})
                environment = {s["name"]: s.get("value", "") for s in job.get("commonEnvironmentSettings") or []}
                environment |= {s["name"]: s.get("value", "") for s in task.get("environmentSettings") or []}
                environment |= self.faults.env.get(task_id, {})
                kill = attempt < self.faults.kill.get(task_id, 0)
            outcome = run_attempt(self, job_id, task, environment, kill)
            with self._lock:
                if job_id not in self.jobs:
                    return
                info.update(endTime=_now(), exitCode=outcome.exit_code, result="success" if outcome.failure is None else "failure")
                if outcome.failure is not None:
                    info["failureInfo"] = {"category": "usererror", "code": outcome.failure[0], "message": outcome.failure[1]}
                retries = _max_retries(task, self.jobs[job_id])
                if outcome.failure is not None and outcome.retryable and (retries == -1 or info["retryCount"] < retries) \
                        and self.jobs[job_id]["state"] == "active":
                    info["retryCount"] += 1
                    info["lastRetryTime"] = _now()
                    task.update(state="active", stateTransitionTime=info["lastRetryTime"])
                    continue
                task.update(state="completed", stateTransitionTime=info["endTime"])
                return

    def register(self, job_id: str, task_id: str, process: subprocess.Popen | None) -> bool:
        """Track a task's running process (None: forget it); False if its job ended meanwhile."""
        with self._lock:
            if process is None:
                self._processes.pop((job_id, task_id), None)
                return True
            if self.jobs.get(job_id, {}).get("state") != "active":
                return False
            self._processes[(job_id, task_id)] = process
            return True


def _max_retries(task: dict, job: dict) -> int:
    for constraints in (task.get("constraints"), job.get("constraints")):
        if constraints and constraints.get("maxTaskRetryCount") is not None:
            return int(constraints["maxTaskRetryCount"])
    return 0


def command_argv(command_line: str, sensorflow: str) -> list[str]:
    """The command line as the node runs it (no shell); ``sensorflow`` is the image's entry point."""
    argv = shlex.split(command_line)
    return [sensorflow, *argv[1:]] if argv and argv[0] == "sensorflow" else argv

"""The stand-in's compute node: one attempt of a task as a local process, then its output files to Blob.

An attempt runs the task's command line without a shell, in ``wd/`` of the
task directory, with stdout.txt and stderr.txt beside ``wd/`` (where Batch
puts them), an environment of ``AZ_BATCH_*`` plus the job's and task's
settings only, and the task's wall-clock limit. Output files are uploaded
after every attempt whose exit code matches their upload condition:
a pattern with a wildcard keeps each file's path below the pattern's fixed
directory under ``path``; a plain file name is uploaded as ``path`` itself.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import isodate

__all__ = ["Attempt", "run_attempt", "upload_outputs"]


@dataclass(frozen=True)
class Attempt:
    """How an attempt ended: exit code, Batch's failure (code, message) if any, and whether a retry may follow."""

    exit_code: int
    failure: tuple[str, str] | None
    retryable: bool


def run_attempt(service: Any, job_id: str, task: dict, environment: dict[str, str], kill: bool) -> Attempt:
    from tests.support.batch_standin import command_argv

    task_dir = service.root / job_id / task["id"]
    wd = task_dir / "wd"
    wd.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(task_dir), "LANG": "C.UTF-8",
        "AZ_BATCH_ACCOUNT_URL": service.url, "AZ_BATCH_JOB_ID": job_id, "AZ_BATCH_TASK_ID": task["id"],
        "AZ_BATCH_NODE_ID": "tvmps_standin_0", "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(wd),
        **environment,
    }
    limit = (task.get("constraints") or {}).get("maxWallClockTime")
    timeout = isodate.parse_duration(limit).total_seconds() if limit else None
    timed_out = False
    with open(task_dir / "stdout.txt", "wb") as out, open(task_dir / "stderr.txt", "wb") as err:
        try:
            process = subprocess.Popen(command_argv(task["commandLine"], service.command), cwd=wd, env=env,
                                       stdout=out, stderr=err)
        except OSError as e:
            err.write(f"{e}\n".encode())
            exit_code = 127
        else:
            if not service.register(job_id, task["id"], process) or kill:
                process.kill()  # the job ended meanwhile, or a fault: the node lost the process
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                timed_out = True
            service.register(job_id, task["id"], None)
            exit_code = process.returncode if process.returncode >= 0 else 128 - process.returncode
    upload_error = upload_outputs(task, wd, exit_code)
    if timed_out:
        return Attempt(exit_code, ("MaxWallClockTimeExpiry", "The task ran longer than its maximum wall clock time"), False)
    if upload_error is not None:
        return Attempt(exit_code, ("FileUploadFailed", upload_error), False)
    if exit_code != 0:
        name = signal.Signals(exit_code - 128).name if exit_code > 128 else ""
        return Attempt(exit_code, ("FailureExitCode", f"The task process exited with an unexpected exit code {name}".strip()), True)
    return Attempt(0, None, False)


def upload_outputs(task: dict, wd: Path, exit_code: int) -> str | None:
    """Upload the task's output files for this exit code; the first upload error, or None."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient

    for output in task.get("outputFiles") or []:
        condition = output["uploadOptions"]["uploadCondition"].lower()
        if (condition == "tasksuccess" and exit_code != 0) or (condition == "taskfailure" and exit_code == 0):
            continue
        destination = output["destination"]["container"]
        if destination.get("identityReference"):
            return "the stand-in uploads with SAS container URLs only"
        pattern, path = output["filePattern"], destination.get("path")
        parts = pattern.split("/")
        fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
        base = (wd / "/".join(parts[:fixed])).resolve() if fixed is not None else None
        try:
            with ContainerClient.from_container_url(destination["containerUrl"]) as container:
                for file in sorted(glob.glob(str(wd / pattern), recursive=True)):
                    if not os.path.isfile(file):
                        continue
                    if base is not None:
                        relative = Path(file).resolve().relative_to(base).as_posix()
                        name = f"{path.rstrip('/')}/{relative}" if path else relative
                    else:
                        name = path or Path(file).name
                    with open(file, "rb") as data:
                        container.upload_blob(name, data, overwrite=True)
        except AzureError as e:
            return f"upload of {pattern} failed: {str(e).splitlines()[0]}"
    return None

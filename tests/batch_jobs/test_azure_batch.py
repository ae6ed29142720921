"""The Azure Batch executor through the real azure-batch client, against the in-process stand-in.

The stand-in (batch_standin.py) replaces only the network hop: requests are
built, signed, retried and parsed by azure-batch itself, tasks run the real
``sensorflow task run SPEC_URL`` as local processes, and their output files
land in Azurite, where the executor reads them back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sensorflow.assembly import open_executor
from sensorflow.batch_commands import sidecar_from_settings, task_environment
from sensorflow.batch_jobs.azure_batch import (
    AzureBatchExecutor,
    BatchConfig,
    expired_jobs,
    job_id_for,
)
from sensorflow.batch_jobs.azure_batch_add import BatchTask, add_tasks
from sensorflow.batch_jobs.azure_batch_pool import (
    BatchSetupError,
    PoolConfig,
    autoscale_formula,
    ensure_pool,
    open_batch_client,
)
from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR
from sensorflow.batch_jobs.executors import LocalPoolExecutor
from sensorflow.batch_jobs.sidecar import Sidecar, SidecarConfig
from sensorflow.batch_jobs.tasks import TaskSpec
from sensorflow.settings import SidecarSettings, load_settings
from sensorflow.store import open_store
from tests.conftest import REPO
from tests.support.batch_formula import FormulaError, Samples, evaluate
from tests.support.batch_standin import BatchStandIn
from tests.support.builders import T0, W, add_windows

SENSORS = [(str(d), str(t)) for d in (1, 2, 3) for t in (1, 2)]  # 6 sensors: 3 tasks of 2
IMAGE = "example.azurecr.io/sensorflow:test"
WRONG_KEY = "bm90LXRoZS1rZXktb2YtdGhpcy1hY2NvdW50"  # base64, but not Azurite's key


# The autoscale formula ----------------------------------------------------------------------------


def nodes(formula: str, pending: tuple[float, ...], target: str = "$TargetDedicatedNodes") -> float:
    return evaluate(formula, {"$PendingTasks": Samples(pending)})[target]


@pytest.mark.parametrize(
    ("pending", "expected"),
    [
        ((), 0),  # a new pool: no samples yet, nothing pending
        ((0,) * 10, 0),  # nothing pending for the whole window: scale to zero
        ((1,) + (0,) * 9, 1),  # one task pending now
        ((0, 0, 7) + (0,) * 7, 4),  # 7 pending a minute ago, 2 slots per node: 4 nodes, kept through the gap
        ((0,) * 10 + (9,), 0),  # pending 5.5 minutes ago only: out of the window
        ((100,) * 10, 6),  # capped at max nodes
        ((3,), 2),  # too few samples for the window: the newest decides
    ],
)
def test_autoscale_formula_follows_pending_tasks_within_the_caps(pending, expected):
    assert nodes(autoscale_formula(0, 6, 2), pending) == expected


def test_autoscale_formula_text_min_nodes_and_spot():
    text = autoscale_formula(1, 6, 2, spot=True, sample_minutes=10)
    statements = [s.strip() for s in "\n".join(
        line for line in text.splitlines() if not line.startswith("//")).split(";") if s.strip()]
    assert len(text) < 8192 and len(statements) <= 100  # the service's limits
    assert statements[-3:] == [
        "$TargetLowPriorityNodes = max(minNodes, min(maxNodes, ceil(pending / slotsPerNode)))",
        "$TargetDedicatedNodes = 0",
        "$NodeDeallocationOption = taskcompletion",  # a scale-down never cuts a running task short
    ]
    assert "sampleWindow = TimeInterval_Minute * 10" in statements
    assert nodes(text, (0,) * 20, "$TargetLowPriorityNodes") == 1  # min nodes kept
    assert nodes(text, (0,) * 20) == 0
    with pytest.raises(FormulaError):
        evaluate("$TargetDedicatedNodes = maxx(1);", {})


def test_a_configured_formula_replaces_the_generated_one_and_bad_pools_are_refused():
    own = "$TargetDedicatedNodes = 2;"
    assert PoolConfig("p", "standard_d2s_v3", IMAGE, formula=own).autoscale == own
    for bad, message in [({"pool_id": "a b"}, "pool id"), ({"min_nodes": 5, "max_nodes": 2}, "node caps"),
                         ({"sample_minutes": 1}, "5 minutes"), ({"vm_image": "ubuntu"}, "publisher:offer:sku"),
                         ({"registry_username": "u"}, "both")]:
        with pytest.raises(BatchSetupError, match=message):
            PoolConfig(**{"pool_id": "p", "vm_size": "standard_d2s_v3", "container_image": IMAGE, **bad})


# Pool, jobs and adding tasks through the client ---------------------------------------------------


@pytest.fixture
def standin(tmp_path):
    service = BatchStandIn(tmp_path / "nodes", slots=2, page_size=2)  # small pages: listing must follow nextLink
    yield service
    service.close()


def client_for(service: BatchStandIn, key: str | None = None, **options):
    options = {"retry_total": 2, "retry_backoff_factor": 0.01, **options}
    return open_batch_client(service.url, service.account, key or service.key, transport=service.transport(), **options)


def test_ensure_pool_creates_the_pool_once_and_keeps_its_formula_in_line(standin):
    config = PoolConfig("sf-pool", "standard_d2s_v3", IMAGE, max_nodes=3, task_slots_per_node=2,
                        registry_username="puller", registry_password="registry-secret")
    client = client_for(standin)
    assert ensure_pool(client, config) == "created"
    pool = standin.pools["sf-pool"]
    containers = pool["virtualMachineConfiguration"]["containerConfiguration"]
    assert containers["containerImageNames"] == [IMAGE] and pool["taskSlotsPerNode"] == 2
    assert containers["containerRegistries"] == [{"username": "puller", "password": "registry-secret",
                                                  "registryServer": "example.azurecr.io"}]
    assert pool["enableAutoScale"] and pool["autoScaleFormula"] == config.autoscale
    assert pool["autoScaleEvaluationInterval"] == "PT05M00S"
    assert ensure_pool(client, config) == "existing"
    assert ensure_pool(client, replace(config, max_nodes=8)) == "updated"
    assert "maxNodes = 8;" in standin.pools["sf-pool"]["autoScaleFormula"]
    assert standin.ops == ["Pool_Get", "Pool_Add", "Pool_Get", "Pool_Get", "Pool_EnableAutoScale"]


def test_a_wrong_account_key_is_a_clear_setup_error(standin):
    client = client_for(standin, key="d3Jvbmcta2V5")
    with pytest.raises(BatchSetupError, match=r"cannot set up Batch pool 'p': ClientAuthenticationError"):
        ensure_pool(client, PoolConfig("p", "standard_d2s_v3", IMAGE))


def test_a_run_that_cannot_use_batch_is_recorded_as_failed(standin, postgres_odbc, blob):
    url = f"postgresql+odbc:{postgres_odbc}"
    config = BatchConfig(PoolConfig("p", "standard_d2s_v3", IMAGE), blob[1])
    policy = sidecar_from_settings(load_settings(SidecarSettings, {}), "x", "x").policy
    with open_store(url) as store, AzureBatchExecutor(config, client_for(standin, key="d3Jvbmcta2V5"),
                                                      {"SF_STORE": url}) as executor:
        store.create_schema()
        add_windows(store, SENSORS, T0, 12)
        sidecar = Sidecar(SidecarConfig("env:SF_STORE", blob[0], DEFAULT_DETECTOR, policy), store, executor, progress=False)
        with pytest.raises(BatchSetupError, match="ClientAuthenticationError"):
            sidecar.run_once()
        score, run = sorted(store.read_runs(), key=lambda r: r.kind)
    assert (score.kind, score.status, score.sensors) == ("score", "succeeded", 0)  # no models yet: nothing to score
    detail = json.loads(run.detail)
    assert (run.kind, run.status) == ("train", "failed") and "ClientAuthenticationError" in detail["error"]
    assert detail["batch"] == {"pool_id": "p", "deleted_jobs": 0}  # cleanup could not list jobs either; no job made


def queued_tasks(standin, count: int) -> tuple[object, str, list[BatchTask]]:
    """A job on a pool that does not exist, so its tasks stay queued; ``count`` tasks for it."""
    from azure.batch import models

    client = client_for(standin)
    job_id = f"sensorflow-test-{uuid.uuid4().hex[:6]}"
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id="nowhere")))
    tasks = [BatchTask(f"t-{i:03d}", models.BatchTaskCreateOptions(
        id=f"t-{i:03d}", command_line="sensorflow --version",
        container_settings=models.BatchTaskContainerSettings(image_name=IMAGE))) for i in range(count)]
    return client, job_id, tasks


@pytest.mark.parametrize(
    ("add_errors", "server_errors", "calls", "requests", "resent"),
    [
        ([], {}, 3, 3, 0),  # 250 tasks: 100 + 100 + 50
        (["500"], {}, 3, 4, 0),  # a 500 on the first call: the client's retry policy sends it again
        (["500-after"], {}, 3, 4, 0),  # taken, then a 500: the resend answers TaskExists, counted as added
        ([], {"t-007": 1, "t-249": 2}, 5, 5, 3),  # per-task server errors: only those are sent again
    ],
)
def test_tasks_are_added_at_most_100_per_call_and_retried(standin, add_errors, server_errors, calls, requests, resent):
    client, job_id, tasks = queued_tasks(standin, 250)
    standin.faults.add_errors, standin.faults.add_server_errors = list(add_errors), dict(server_errors)
    report = add_tasks(client, job_id, tasks, rounds=4, backoff_seconds=0.01)
    assert (report.calls, report.resent, len(report.added), report.rejected) == (calls, resent, 250, {})
    assert standin.ops.count("Task_AddCollection") == requests
    assert sorted(standin.tasks[job_id]) == [t.task_id for t in tasks]  # each once


def test_tasks_batch_will_not_take_are_rejected_with_the_reason(standin):
    from azure.batch import models

    client, job_id, tasks = queued_tasks(standin, 3)
    tasks[1] = BatchTask("t-001", models.BatchTaskCreateOptions(id="t-001", command_line=""))
    standin.faults.add_errors = ["500"] * 6  # more than the client's 2 retries, twice
    report = add_tasks(client, job_id, tasks, rounds=2, backoff_seconds=0.01)
    assert report.added == set() and set(report.rejected) == {"t-000", "t-001", "t-002"}
    assert report.rejected["t-000"].startswith("not added after 2 round(s): HttpResponseError")
    report = add_tasks(client, job_id, tasks, rounds=2, backoff_seconds=0.01)  # the service is back
    assert report.added == {"t-000", "t-002"}
    assert report.rejected == {"t-001": "InvalidPropertyValue: commandLine and imageName are required"}


def test_expired_jobs_are_this_pools_sensorflow_jobs_past_retention():
    from azure.batch import models

    now = datetime(2026, 1, 2, 12, tzinfo=UTC)

    def job(job_id, pool="pool", created_h=30, ended_h=None, state="completed"):
        info = {"startTime": (now - timedelta(hours=created_h)).isoformat()}
        if ended_h is not None:
            info["endTime"] = (now - timedelta(hours=ended_h)).isoformat()
        return models.BatchJob({"id": job_id, "state": state, "poolInfo": {"poolId": pool}, "executionInfo": info,
                                "creationTime": (now - timedelta(hours=created_h)).isoformat()})

    jobs = [
        job("sensorflow-score-old", ended_h=25),  # ended 25 h ago: deleted
        job("sensorflow-score-recent", ended_h=23),  # kept
        job("sensorflow-train-other-pool", pool="other", ended_h=48),  # another deployment's: kept
        job("someone-elses-job", ended_h=48),  # not ours: kept
        job("sensorflow-score-deleting", ended_h=48, state="deleting"),  # already going
        job("sensorflow-train-orphan", created_h=29, state="active"),  # running past its 4 h limit + retention
        job("sensorflow-train-running", created_h=27, state="active"),  # within 24 h + 4 h: kept
    ]
    assert expired_jobs(jobs, "pool", now, timedelta(hours=24), timedelta(hours=4)) == [
        "sensorflow-score-old", "sensorflow-train-orphan"]


def test_job_ids_are_readable_and_valid():
    assert job_id_for("20260101T001000-score-ab12cd") == "sensorflow-score-20260101T001000-ab12cd"
    assert job_id_for("my run/1") == "sensorflow-my-run-1"


# Settings and refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--store", "sqlite:///x.db"], "needs a server store"),
        (["--store", "postgresql+odbc:Driver=x", "--model-store", "models/"], "needs model_store azblob://"),
        (["--store", "postgresql+odbc:Driver=x", "--model-store", "azblob://m"], "needs batch_account_url, batch_container_image"),
    ],
)
def test_the_sidecar_refuses_azure_batch_without_server_stores(flags, message):
    command = [sys.executable, "-m", "sensorflow", "sidecar", "--once", "--executor", "azure-batch", *flags]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def spec(kind: str, store: str, model_store: str, index: int = 0) -> TaskSpec:
    return TaskSpec(f"{kind}-{index:05d}", "20260101T000000-score-abcdef", kind, (("1", "1"),), None, None,
                    DEFAULT_DETECTOR, store, model_store)


def test_the_executor_refuses_sqlite_and_local_model_stores(standin):
    config = BatchConfig(PoolConfig("p", "standard_d2s_v3", IMAGE), "https://a.blob.core.windows.net/out?sig=x")
    executor = AzureBatchExecutor(config, client_for(standin), {"SF_STORE": "postgresql+odbc:x"}, outputs=object())
    with pytest.raises(BatchSetupError, match="needs a server store"):
        executor.run([spec("score", "sqlite:///x.db", "azblob://m")])
    with pytest.raises(BatchSetupError, match="model store in Azure Blob"):
        executor.run([spec("score", "env:SF_STORE", "/tmp/models")])
    with pytest.raises(BatchSetupError, match="SF_OTHER is not in the environment"):
        executor.run([spec("score", "env:SF_OTHER", "azblob://m")])
    with pytest.raises(BatchSetupError, match="needs a SAS token"):
        BatchConfig(PoolConfig("p", "standard_d2s_v3", IMAGE), "https://a.blob.core.windows.net/out")
    assert standin.ops == []  # refused before any request


# Runs on the stand-in, outputs in Azurite ---------------------------------------------------------


@pytest.fixture
def blob(azurite, monkeypatch):
    """A model store container and an output container with a SAS URL, on Azurite."""
    from azure.storage.blob import (
        BlobServiceClient,
        ContainerSasPermissions,
        generate_container_sas,
    )

    monkeypatch.setenv("SENSORFLOW_BLOB_CONNECTION_STRING", azurite.connection_string)
    account = dict(part.split("=", 1) for part in azurite.connection_string.split(";") if part)["AccountName"]
    suffix = uuid.uuid4().hex[:10]
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    outputs = service.create_container(f"outputs{suffix}")
    sas = generate_container_sas(account, outputs.container_name, account_key=azurite_key(azurite.connection_string),
                                 permission=ContainerSasPermissions(read=True, write=True, create=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=2))
    yield f"azblob://models{suffix}", f"{outputs.url}?{sas}", outputs, azurite.connection_string
    service.close()


def test_a_task_over_its_time_limit_is_stopped_and_its_sensors_fail(standin, blob):
    model_store, output_url, _, _ = blob
    config = BatchConfig(PoolConfig("p", "standard_d2s_v3", IMAGE), output_url, task_timeout_seconds=0.3,
                         max_task_retries=3, poll_seconds=0.1)
    environ = {"SF_STORE": "postgresql+odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=x;"}
    with AzureBatchExecutor(config, client_for(standin), environ) as executor:
        (result,) = executor.run([spec("score", "env:SF_STORE", model_store)])
        batch = executor.run_detail()["batch"]
    assert result.count("failed") == 1 and "MaxWallClockTimeExpiry" in result.outcomes[0].reason
    assert batch["tasks"]["score-00000"]["attempts"] == 1  # a timeout is not retried
    assert batch["job_id"] == "sensorflow-score-20260101T000000-abcdef"


def test_tasks_left_when_the_job_hits_its_time_limit_fail_with_the_reason(tmp_path, blob):
    model_store, output_url, _, _ = blob
    service = BatchStandIn(tmp_path / "node", slots=1)  # one slot: the second task never starts
    config = BatchConfig(PoolConfig("p", "standard_d2s_v3", IMAGE), output_url, job_timeout_seconds=1.0, poll_seconds=0.1)
    slow = {"SF_STORE": "postgresql+odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=x;"}  # retried for s
    try:
        with AzureBatchExecutor(config, client_for(service), slow) as executor:
            first, second = executor.run([spec("score", "env:SF_STORE", model_store, i) for i in (0, 1)])
    finally:
        service.close()
    assert first.count("failed") == second.count("failed") == 1
    assert second.outcomes[0].reason == (
        "Batch job sensorflow-score-20260101T000000-abcdef ended: MaxWallClockTimeExpiry")


def predictions(url: str) -> set[tuple]:
    with open_store(url) as store:
        rows = store.read_predictions(SENSORS, 0, T0 + 10**6 * W).to_pylist()
    return {(r["device"], r["tag"], r["ts"], r["value"], r["score"], r["is_anomaly"]) for r in rows}


def local_run(url: str, tmp_path) -> set[tuple]:
    """The reference: the same two sidecar runs on the local process pool."""
    policy = sidecar_from_settings(load_settings(SidecarSettings, {"chunk_size": 2, "safety_margin_seconds": 0}),
                                   "x", "x").policy
    config = SidecarConfig("env:SF_LOCAL_STORE", str(tmp_path / "local-models"), DEFAULT_DETECTOR, policy)
    with open_store(url) as store, LocalPoolExecutor(2, {"SF_LOCAL_STORE": url}) as pool:
        store.create_schema()
        add_windows(store, SENSORS, T0, 120)
        Sidecar(config, store, pool, progress=False).run_once()
        add_windows(store, SENSORS, T0 + 120 * W, 24, seed=1)
        Sidecar(config, store, pool, progress=False).run_once()
    return predictions(url)


def test_sidecar_runs_on_azure_batch_give_the_local_pools_predictions(standin, blob, postgres_server, tmp_path):
    model_store, output_url, outputs, connection_string = blob
    url = f"postgresql+odbc:{postgres_server.new_database()}"
    settings = load_settings(SidecarSettings, {
        "executor": "azure-batch", "store": url, "model_store": model_store, "chunk_size": 2,
        "safety_margin_seconds": 0, "blob_connection_string": connection_string, "batch_account_url": standin.url,
        "batch_account_name": standin.account, "batch_account_key": standin.key, "batch_pool_id": "sf-e2e",
        "batch_container_image": IMAGE, "batch_output_container_url": output_url, "batch_max_task_retries": 1,
        "batch_poll_seconds": 0.2, "batch_job_retention_hours": 24,
    })
    store_url, reference, model_store, environ = task_environment(settings)
    config = sidecar_from_settings(settings, reference, model_store)
    stale = seed_stale_jobs(standin)
    with open_store(store_url) as store, open_executor(settings, environ, transport=standin.transport(),
                                                       retry_backoff_factor=0.01) as executor:
        store.create_schema()
        add_windows(store, SENSORS, T0, 120)
        standin.faults.add_errors = ["500"]  # the first Add Task Collection of the run
        standin.faults.kill = {"train-00001": 1}  # the node loses this task's first attempt
        first = Sidecar(config, store, executor, progress=False).run_once()
        assert first.score.specs == () and first.train.count("ok") == 6  # no models yet: the first run only trains
        train = json.loads(first.train.run.detail)
        assert train["batch"]["job_id"].startswith("sensorflow-train-") and train["batch"]["pool"] == "created"
        assert train["batch"]["tasks"]["train-00001"]["attempts"] == 2 and train["batch"]["tasks"]["train-00000"]["attempts"] == 1
        assert all(t["ran_seconds"] > 0 and "queued_seconds" in t for t in train["batch"]["tasks"].values())
        assert train["batch"]["deleted_jobs"] == 1 and train["batch"]["add"]["calls"] == 1
        assert set(standin.jobs) >= set(stale) - {"sensorflow-score-old"} and "sensorflow-score-old" not in standin.jobs

        add_windows(store, SENSORS, T0 + 120 * W, 24, seed=1)
        # A node whose Blob key is wrong: the task cannot read its spec, on every attempt.
        standin.faults.env = {"score-00002": {"SENSORFLOW_BLOB_CONNECTION_STRING": WRONG_KEY.join(
            connection_string.split(azurite_key(connection_string)))}}
        second = Sidecar(config, store, executor, progress=False).run_once().score
        assert second.run.status == "partial" and second.run.failures == 2
        detail = json.loads(second.run.detail)
        assert {(f["device"], f["tag"]) for f in detail["failed"]} == {("3", "1"), ("3", "2")}
        reason = detail["failed"][0]["reason"]
        assert reason.startswith("Batch task failed after 2 attempt(s), no result: exit code 1") and "failed to authenticate" in reason
        assert all(f["ts_from"] == T0 + 120 * W - 300 * 10**9 for f in detail["failed"])  # kept for the retry
        assert detail["batch"]["tasks"]["score-00002"]["attempts"] == 2  # retried once, failed again
        assert second.run.range_to == T0 + 144 * W  # the others went on

        standin.faults.env = {}
        third = Sidecar(config, store, executor, progress=False).run_once().score
        assert third.run.status == "succeeded" and third.run.sensors == 2 and third.count("ok") == 2
        job = json.loads(third.run.detail)["batch"]["job_id"]
    assert predictions(store_url) == local_run(f"postgresql+odbc:{postgres_server.new_database()}", tmp_path)

    names = set(outputs.list_blob_names(name_starts_with=f"{job}/"))
    assert names == {f"{job}/score-00000/{name}" for name in ("stdout.txt", "stderr.txt", "result.json")}
    assert "2 ok" in outputs.download_blob(f"{job}/score-00000/stdout.txt").readall().decode()
    with open_store(store_url) as store:
        recorded = json.dumps([r.detail for r in store.read_runs(limit=20)])
    # No SAS token, no password; connection strings appear only with passwords masked (the store's messages).
    leaks = [recorded[max(0, i - 200):i + 40] for i in map(recorded.find, ("sig=", WRONG_KEY, url)) if i >= 0]
    assert not leaks, leaks
    assert set(standin.ops) == {"Job_List", "Job_Delete", "Pool_Get", "Pool_Add", "Job_Add", "Task_AddCollection",
                                "Task_List", "Job_Get", "Job_Terminate"}


def azurite_key(connection_string: str) -> str:
    return dict(part.split("=", 1) for part in connection_string.split(";") if part)["AccountKey"]


def seed_stale_jobs(standin) -> list[str]:
    """Jobs left from earlier days: only the first is this pool's, sensorflow's and past retention."""
    from azure.batch import models

    client = client_for(standin)
    now = datetime.now(UTC)
    jobs = [("sensorflow-score-old", "sf-e2e", 30), ("sensorflow-score-yesterday", "sf-e2e", 2),
            ("sensorflow-score-elsewhere", "other-pool", 30), ("nightly-report", "sf-e2e", 30)]
    for job_id, pool, ended_h in jobs:
        client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool)))
        standin.set_job_times(job_id, now - timedelta(hours=ended_h + 1), now - timedelta(hours=ended_h))
    standin.ops.clear()
    return [job_id for job_id, _, _ in jobs]

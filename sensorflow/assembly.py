"""The assembly layer: settings become the typed configuration objects the layers below take.

Each builder here is the one place a setting turns into what the code below it needs, for
replay, live and cluster runs alike: :func:`decode_config`, :func:`flow_options`,
:func:`execution`, :func:`receive_options` and the jobs made of them (:func:`replay_job`,
:func:`live_job`); :func:`open_executor` does the same for the sidecar's executor. Nothing below
this module imports ``sensorflow.settings``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sensorflow.ingest.decode import DecodeConfig
from sensorflow.ingest.eventhubs.config import EventHubsConnection, ReceiveOptions, parse_starting_position
from sensorflow.ingest.replay.source import discover_partitions
from sensorflow.records.recordings import incomplete_marker
from sensorflow.records.timeparse import NS_PER_S
from sensorflow.settings import ExecutorSettings, RunSettings, SettingsError
from sensorflow.store import RetryPolicy
from sensorflow.windowing.cluster import ClusterEnvError, ClusterMember, member_from_env
from sensorflow.windowing.dataflow import FlowOptions
from sensorflow.windowing.execution import Execution, Output, RunReport
from sensorflow.windowing.resume.checkpoints import CheckpointLocation
from sensorflow.windowing.resume.identity import (
    EventHubIdentity,
    RecordingIdentity,
    RecoveryIdentity,
    eventhub_identity,
    recording_identity,
    store_identity,
)
from sensorflow.windowing.resume.recovery_dir import RecoveryDirError, own_recovery_dir
from sensorflow.windowing.runner import ReplayInput, ReplayJob
from sensorflow.windowing.stats import RunStats

if TYPE_CHECKING:  # imported where used: a replay never loads the batch jobs
    from sensorflow.batch_jobs.executors import Executor
    from sensorflow.windowing.live import LiveJob
    from sensorflow.windowing.writer import WriterProcess

__all__ = [
    "decode_config",
    "execution",
    "executor_from_settings",
    "flow_options",
    "live_job",
    "open_executor",
    "output",
    "receive_options",
    "recovery_identity",
    "replay_job",
    "run_live",
    "run_replay",
    "settings_for",
]


def settings_for(member: ClusterMember, settings: RunSettings) -> RunSettings:
    """``settings`` with the cluster's process and worker counts (see ``ClusterMember.sizes``)."""
    processes, workers = member.sizes(settings.processes, settings.workers)
    return settings.model_copy(update={"processes": processes, "workers": workers})


def decode_config(settings: RunSettings) -> DecodeConfig:
    return DecodeConfig(
        time_source=settings.time_source,
        min_event_ns=int(settings.min_event_time.timestamp()) * NS_PER_S,
        max_clock_skew_ns=round(settings.max_clock_skew_seconds * NS_PER_S),
        max_message_bytes=settings.max_message_bytes,
    )


def flow_options(settings: RunSettings) -> FlowOptions:
    return FlowOptions(
        window_ns=settings.window_ns,
        lateness_ns=settings.lateness_ns,
        shards=settings.shards,
        idle_timeout_ns=settings.idle_timeout_ns,
        decode=decode_config(settings),
    )


def execution(settings: RunSettings) -> Execution:
    return Execution(
        workers=settings.workers,
        processes=settings.processes,
        snapshot_interval_seconds=settings.snapshot_interval_seconds,
        recovery_dir=settings.recovery_dir,
        progress_seconds=settings.progress_seconds,
    )


def output(settings: RunSettings) -> Output:
    return Output(settings.store, settings.writer, RetryPolicy(budget_seconds=settings.store_retry_seconds))


def receive_options(settings: RunSettings) -> ReceiveOptions:
    return ReceiveOptions(
        consumer_group=settings.consumer_group,
        starting_position=parse_starting_position(settings.starting_position),
        batch_size=settings.receive_batch_size,
        max_wait_seconds=settings.receive_wait_seconds,
        prefetch=max(2 * settings.receive_batch_size, 300),
        owner_level=settings.owner_level,
    )


def replay_job(settings: RunSettings) -> ReplayJob:
    return ReplayJob(
        input=ReplayInput(Path(settings.source), settings.block_bytes, settings.replay_speed),
        output=output(settings),
        flow=flow_options(settings),
        execution=execution(settings),
        metrics_port=settings.metrics_port,
    )


def live_job(settings: RunSettings) -> LiveJob:
    from sensorflow.windowing.live import LiveJob

    checkpoints = None
    if settings.checkpoint_container is not None:
        checkpoints = CheckpointLocation(
            settings.checkpoint_container, settings.checkpoint_connection_string, settings.checkpoint_account_url
        )
    return LiveJob(
        connection=_connection(settings),
        output=output(settings),
        receive=receive_options(settings),
        checkpoints=checkpoints,
        flow=flow_options(settings),
        execution=execution(settings),
        metrics_port=settings.metrics_port,
        max_runtime_seconds=settings.max_runtime_seconds,
        stop_after_idle_seconds=settings.stop_after_idle_seconds,
    )


def recovery_identity(settings: RunSettings) -> RecoveryIdentity:
    """What this run's recovery state belongs to: its input, its store, its window settings."""
    source: RecordingIdentity | EventHubIdentity
    if settings.live:
        connection = _connection(settings)
        source = eventhub_identity(connection.namespace, connection.hub, settings.consumer_group)
    else:
        path = Path(settings.source)
        source = recording_identity(discover_partitions(path), path if path.is_dir() else path.parent)
    return RecoveryIdentity(
        source, store_identity(settings.store), settings.window_ns, settings.lateness_ns, settings.time_source,
        settings.max_message_bytes,
    )


def _own_recovery(settings: RunSettings, member: ClusterMember | None, fresh: bool) -> None:
    """Refuse (SettingsError, exit 2) recovery state that belongs to another run; ``fresh`` clears it first."""
    if settings.recovery_dir is None:
        if fresh:
            raise SettingsError("--fresh clears the state in --recovery-dir, and no recovery_dir is set")
        return
    try:
        own_recovery_dir(
            settings.recovery_dir, recovery_identity(settings), settings.processes * settings.workers,
            make_partitions=member is None, fresh=fresh,
        )
    except RecoveryDirError as e:
        raise SettingsError(str(e)) from e


def _connection(settings: RunSettings) -> EventHubsConnection:
    return EventHubsConnection(
        eventhub_name=settings.eventhub_name,
        connection_string=settings.eventhub_connection_string,
        fully_qualified_namespace=settings.eventhub_namespace,
    )


def _member(settings: RunSettings) -> tuple[RunSettings, ClusterMember | None]:
    """This process's cluster from Bytewax's variables, and the settings sized for it."""
    try:
        member = member_from_env()
        return (settings if member is None else settings_for(member, settings)), member
    except ClusterEnvError as e:  # the environment's cluster variables are settings too
        raise SettingsError(str(e)) from e


def run_replay(settings: RunSettings, progress: TextIO = sys.stderr, *, fresh: bool = False,
               allow_incomplete: bool = False, writer_process: WriterProcess | None = None) -> RunReport:
    """Replay ``settings.source`` into ``settings.store`` (see ``sensorflow.windowing.runner``).

    A recovery directory must belong to this recording, store and window settings (else
    SettingsError); ``fresh`` clears it first. A recording marked INCOMPLETE (its writer was
    stopped) is refused (SettingsError) unless ``allow_incomplete``. ``writer_process``: a store
    writer's interpreter started early, for the run's writer to take over (the caller closes it).
    """
    from sensorflow.windowing.runner import run_replay as run

    marker = incomplete_marker(settings.source)
    if marker is not None and not allow_incomplete:
        raise SettingsError(
            f"the recording {settings.source} is incomplete: its writer was stopped before the end ({marker} exists); "
            "write it again, or replay what is there with --allow-incomplete"
        )
    settings, member = _member(settings)  # settings (exit 2) before the input and the store (exit 1)
    discover_partitions(Path(settings.source))  # the recording before the store: "not found" must not hide behind its error
    _own_recovery(settings, member, fresh)
    return run(replay_job(settings), member, progress, writer_process)


def run_live(
    settings: RunSettings,
    progress: TextIO = sys.stderr,
    stats: RunStats | None = None,
    stop_event: threading.Event | None = None,
    *,
    fresh: bool = False,
) -> RunReport:
    """Consume the Event Hub in ``settings`` into ``settings.store`` (see ``sensorflow.windowing.live``).

    A recovery directory must belong to this hub and consumer group, store and window settings
    (else SettingsError); ``fresh`` clears it first.
    """
    from sensorflow.windowing.live import run_live as run

    settings, member = _member(settings)
    _own_recovery(settings, member, fresh)
    return run(live_job(settings), member, progress, stats, stop_event)


def open_executor(settings: ExecutorSettings, environ: Mapping[str, str], **batch_client_options: Any) -> Executor:
    """The executor the settings name: the local pool, or Azure Batch (``batch_client_options`` go to its client)."""
    from sensorflow.batch_jobs.executors import LocalPoolExecutor

    if settings.executor == "azure-batch":
        return executor_from_settings(settings, environ, **batch_client_options)
    return LocalPoolExecutor(settings.task_processes, environ)


def executor_from_settings(settings: ExecutorSettings, environ: Mapping[str, str], **client_options: Any) -> Executor:
    """An ``AzureBatchExecutor`` from validated ``ExecutorSettings`` (``client_options`` go to the BatchClient)."""
    from sensorflow.batch_jobs.azure_batch import AzureBatchExecutor, BatchConfig
    from sensorflow.batch_jobs.azure_batch_pool import PoolConfig, open_batch_client

    def secret(value: Any) -> str | None:
        return None if value is None else value.get_secret_value()

    pool = PoolConfig(
        settings.batch_pool_id, settings.batch_vm_size, settings.batch_container_image or "",
        vm_image=settings.batch_vm_image, node_agent=settings.batch_node_agent,
        min_nodes=settings.batch_min_nodes, max_nodes=settings.batch_max_nodes,
        task_slots_per_node=settings.batch_task_slots_per_node, spot=settings.batch_spot_nodes,
        formula=settings.batch_autoscale_formula, sample_minutes=settings.batch_autoscale_minutes,
        registry_username=settings.batch_registry_username, registry_password=secret(settings.batch_registry_password),
        identity_resource_id=settings.batch_identity_resource_id,
    )
    config = BatchConfig(
        pool, secret(settings.batch_output_container_url) or "", max_task_retries=settings.batch_max_task_retries,
        task_timeout_seconds=settings.batch_task_timeout_seconds, job_timeout_seconds=settings.batch_job_timeout_seconds,
        retention_seconds=settings.batch_job_retention_hours * 3600, poll_seconds=settings.batch_poll_seconds,
    )
    client = open_batch_client(settings.batch_account_url or "", settings.batch_account_name,
                               secret(settings.batch_account_key), **client_options)
    return AzureBatchExecutor(config, client, environ)

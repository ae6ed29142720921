"""One typed, frozen settings object, from flags > SENSORFLOW_* env vars > a TOML config file > defaults."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "DemoSettings",
    "EvaluateSettings",
    "ExecutorSettings",
    "IncidentsSettings",
    "ReportSettings",
    "RunSettings",
    "SettingsError",
    "SidecarSettings",
    "load_settings",
]


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one line for humans."""


class _Settings(BaseSettings):
    """Every command's settings: flags > SENSORFLOW_* env > TOML file (``--config``) > defaults; frozen."""

    model_config = SettingsConfigDict(env_prefix="SENSORFLOW_", frozen=True, extra="forbid")
    config_file: ClassVar[Path | None] = None  # the --config file (load_settings sets it on a subclass)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _CommandToml(settings_cls))


class _CommandToml(PydanticBaseSettingsSource):
    """The ``--config`` TOML file as one command reads it: the top-level keys, then its own ``[<command>]`` table.

    One file serves every command: a command takes the top-level keys it has (keys of other
    commands only are left to them; a key of no command is an unknown setting) and its own
    table, and ignores the other commands' tables. The command is the settings class's name
    without ``Settings``, lower case (``RunSettings``: ``[run]``).
    """

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls)
        path = getattr(settings_cls, "config_file", None)
        self._values = _command_values(settings_cls, Path(path)) if path else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _command_of(cls: type[BaseSettings]) -> str:
    return cls.__name__.removesuffix("Settings").lower()


def _commands() -> dict[str, set[str]]:
    """Every command's settings names (the concrete settings classes below ``_Settings``)."""
    found: dict[str, set[str]] = {}
    pending = list(_Settings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__name__.startswith("_") and _command_of(cls) != "executor":  # ExecutorSettings: a base
            found.setdefault(_command_of(cls), set()).update(cls.model_fields)
    return found


def _command_values(cls: type[BaseSettings], path: Path) -> dict[str, Any]:
    import tomllib

    with path.open("rb") as f:
        data = tomllib.load(f)
    commands = _commands()
    command = _command_of(cls)
    tables = {key for key, value in data.items() if isinstance(value, dict)}
    unknown_tables = sorted(tables - commands.keys())
    if unknown_tables:
        raise ValueError(
            f"{path}: unknown table [{unknown_tables[0]}]: tables are commands' own settings, "
            f"[{'], ['.join(sorted(commands))}]"
        )
    anyones = set().union(*commands.values())
    values = {k: v for k, v in data.items() if k not in tables and (k in cls.model_fields or k not in anyones)}
    values.update(data.get(command, {}))
    return values


_STORE_SCHEMES = ("sqlite:///", "postgresql+odbc:", "mssql+odbc:")


def _checked_store(value: str) -> str:
    if not value.startswith(_STORE_SCHEMES):
        raise ValueError(_store_scheme_error(value))
    return value


StoreUrl = Annotated[str, AfterValidator(_checked_store)]
"""A store URL of a scheme some backend opens (checked as a setting, before anything connects)."""


class RunSettings(_Settings):
    """Settings of ``sensorflow run``."""

    source: str = Field(
        description="recording file or directory to replay (JSON Lines or Capture Avro), or 'eventhubs' to consume a live Event Hub"
    )
    store: StoreUrl = Field("sqlite:///sensorflow.db", description="store URL: sqlite:///PATH")
    store_retry_seconds: float = Field(
        120.0, ge=0, le=86_400,
        description="server stores: retry transient errors (lost connection, failover) this long before the run fails; "
        "outlasts a typical Azure SQL failover (< 60 s, docs/azure-sql.md)",
    )
    window_seconds: float = Field(5.0, gt=0, le=86_400, description="tumbling window length")
    lateness_seconds: float = Field(5.0, ge=0, le=86_400, description="allowed lateness (ASA's late-arrival tolerance)")
    time_source: Literal["ts", "enqueued"] = Field("ts", description="event time from each reading's TS, or the message's enqueued time")
    max_clock_skew_seconds: float = Field(86_400.0, ge=0, description="readings further ahead of the wall clock are dead letters")
    min_event_time: datetime = Field(
        datetime(2000, 1, 1, tzinfo=timezone.utc), description="readings before this time are dead letters"
    )
    replay_speed: float | None = Field(None, gt=0, description="pace a replay at N x real time (default: as fast as possible)")
    recovery_dir: Path | None = Field(None, description="Bytewax recovery directory; enables resume after a crash")
    snapshot_interval_seconds: float = Field(10.0, gt=0, description="how often state is snapshotted (the epoch length)")
    workers: int = Field(1, ge=1, le=64, description="Bytewax worker threads per process")
    processes: int = Field(1, ge=1, le=64, description="local Bytewax processes, a cluster on 127.0.0.1 (experimental: slower than 1 on 2 cores)")
    writer: Literal["process", "inline"] = Field(
        "process", description="window writes in a writer process (overlaps with decoding) or inline in the sink"
    )
    shards: int | None = Field(None, ge=1, le=1024, description="window shards (default: one per worker)")
    block_bytes: int = Field(3 << 20, ge=128, le=1 << 28, description="bytes read per replay batch (small values only for tests)")
    max_message_bytes: int = Field(
        1 << 20, ge=1, le=4 << 20,
        description="larger messages are dead letters (too_large), never parsed; default: Event Hubs' 1 MB limit "
        "(learn.microsoft.com/azure/event-hubs/event-hubs-quotas); at most 4 MiB (a 4 MB array message takes a run "
        "from 0.3 to 0.54 GB of RSS: docs/recordings.md)",
    )
    progress_seconds: float = Field(
        5.0, ge=0, description="progress on stderr: a bar on a terminal, else a line every N seconds with percent, "
        "current rate and ETA (0: none)"
    )
    # -- live: Azure Event Hubs (source = eventhubs) --------------------------------------------
    eventhub_connection_string: SecretStr | None = Field(
        None, description="eventhubs: connection string (Endpoint=sb://...;EntityPath=HUB); or use --eventhub-namespace"
    )
    eventhub_namespace: str | None = Field(
        None, description="eventhubs: fully qualified namespace (NS.servicebus.windows.net), signs in with DefaultAzureCredential"
    )
    eventhub_name: str | None = Field(None, description="eventhubs: event hub name (needed with a namespace)")
    consumer_group: str = Field("$default", min_length=1, description="eventhubs: consumer group")
    starting_position: str = Field(
        "earliest", description="eventhubs: where a partition without checkpoint starts: earliest, latest or an ISO enqueued time"
    )
    owner_level: int | None = Field(None, ge=0, description="eventhubs: exclusive receivers; a higher level takes a partition over")
    receive_batch_size: int = Field(500, ge=1, le=10_000, description="eventhubs: events per received batch at most")
    receive_wait_seconds: float = Field(0.2, gt=0, le=60, description="eventhubs: deliver a smaller batch after this wait")
    checkpoint_connection_string: SecretStr | None = Field(
        None, description="eventhubs: Blob Storage connection string for checkpoints; or use --checkpoint-account-url"
    )
    checkpoint_account_url: str | None = Field(
        None, description="eventhubs: Blob account URL for checkpoints, signs in with DefaultAzureCredential"
    )
    checkpoint_container: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        description="eventhubs: Blob container for checkpoints, 3-63 of a-z 0-9 - (created if missing)",
    )
    idle_timeout_seconds: float = Field(
        30.0, gt=0, description="eventhubs: a partition silent this long (wall time) stops holding windows open"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65_535, description="serve /metrics, /healthz, /readyz on this port while the run runs (0: any free port)"
    )
    stop_after_idle_seconds: float | None = Field(
        None, gt=0, description="eventhubs: stop gracefully after no event at all for this long (none: run until SIGTERM)"
    )
    max_runtime_seconds: float | None = Field(None, gt=0, description="eventhubs: stop gracefully after this long")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or JSON (one object per line)")

    @field_validator("window_seconds")
    @classmethod
    def _whole_milliseconds(cls, value: float) -> float:
        if abs(value * 1000 - round(value * 1000)) > 1e-6:
            raise ValueError("must be a whole number of milliseconds")
        return value

    @field_validator("min_event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    @model_validator(mode="after")
    def _live_settings(self) -> "RunSettings":
        if not self.live:
            given = [name for name in _LIVE_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} need source = eventhubs")
            return self
        if (self.eventhub_connection_string is None) == (self.eventhub_namespace is None):
            raise ValueError("source eventhubs needs exactly one of eventhub_connection_string or eventhub_namespace")
        if self.eventhub_namespace is not None and not self.eventhub_name:
            raise ValueError("eventhub_namespace needs eventhub_name")
        if self.checkpoint_connection_string is not None and self.checkpoint_account_url is not None:
            raise ValueError("give checkpoint_connection_string or checkpoint_account_url, not both")
        has_account = self.checkpoint_connection_string is not None or self.checkpoint_account_url is not None
        if has_account != (self.checkpoint_container is not None):
            raise ValueError("checkpoints need both a container and a connection string or account URL")
        if self.replay_speed is not None or self.processes != 1:
            raise ValueError("replay_speed and processes > 1 are for replays, not source eventhubs")
        from sensorflow.ingest.eventhubs.config import parse_starting_position

        parse_starting_position(self.starting_position)
        return self

    @property
    def live(self) -> bool:
        """True when the source is a live Event Hub rather than a recording."""
        return self.source.strip().lower() == "eventhubs"

    @property
    def idle_timeout_ns(self) -> int | None:
        return round(self.idle_timeout_seconds * 1e9) if self.live else None

    @property
    def window_ns(self) -> int:
        return round(self.window_seconds * 1e9)

    @property
    def lateness_ns(self) -> int:
        return round(self.lateness_seconds * 1e9)


# The detectors' names, for --help without importing the detectors (tests/test_settings.py holds them to the registry).
DETECTOR_NAMES = ("seed-ocsvm", "robust-window", "calibrated", "mad-z")
DEFAULT_DETECTOR = "calibrated"


class _BatchSettings(_Settings):
    """What the sidecar and the demo share: the model store, detector, task pool and Blob access."""

    model_store: str = Field(
        ".sensorflow/models", description="model store: a directory, file:///PATH or azblob://CONTAINER[/PREFIX]"
    )
    detector: str | None = Field(
        None, description=f"detector name (default: {DEFAULT_DETECTOR})", json_schema_extra={"choices": DETECTOR_NAMES}
    )
    threshold_scale: float = Field(
        1.0, gt=0, le=1000, description="sensitivity: multiplies every sensor's threshold (2: fewer, stronger alarms; 0.5: more)"
    )
    task_processes: int | None = Field(None, ge=1, le=256, description="local task processes (default: CPU count)")
    chunk_size: int = Field(500, ge=1, le=100_000, description="sensors per task")
    window_seconds: float = Field(5.0, gt=0, le=86_400, description="window length of the stored windows")
    incident_gap_windows: int = Field(
        3, ge=0, le=100_000, description="flagged windows at most this many unflagged window slots apart are one incident"
    )
    blob_connection_string: SecretStr | None = Field(
        None, description="Azure Blob connection string for azblob:// (secret; prefer the env variable)"
    )
    blob_account_url: str | None = Field(None, description="Azure Blob account URL, used with DefaultAzureCredential")

    @field_validator("model_store")
    @classmethod
    def _model_store_scheme(cls, value: str | None) -> str | None:
        # A path, file:///PATH or azblob://...; anything else with a scheme would fail every sensor's task later.
        if value is not None and "://" in value and not value.startswith(("file://", "azblob://")):
            raise ValueError(
                f"must be a directory, file:///PATH or azblob://CONTAINER[/PREFIX], not {redacted(value)!r}"
            )
        return value

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str | None) -> str | None:
        if value is not None:
            from sensorflow.batch_jobs.detectors import UnknownDetectorError, get_detector

            try:
                get_detector(value)
            except UnknownDetectorError as e:
                raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _scalable(self) -> "_BatchSettings":
        if self.threshold_scale != 1.0:
            from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR, get_detector

            try:
                get_detector(self.detector or DEFAULT_DETECTOR, threshold_scale=self.threshold_scale)
            except ValueError as e:
                raise ValueError(str(e)) from None
        return self

    @property
    def window_ns(self) -> int:
        return round(self.window_seconds * 1e9)


class _AzureBatchSettings(_Settings):
    """The sidecar's Azure Batch executor (``executor = azure-batch``, docs/azure-batch.md); secrets from the env."""


    executor: Literal["local", "azure-batch"] = Field("local", description="where tasks run: local processes or an Azure Batch pool")
    batch_account_url: str | None = Field(None, description="azure-batch: account URL, https://ACCOUNT.REGION.batch.azure.com")
    batch_account_name: str | None = Field(
        None, description="azure-batch: account name for shared key auth (key in SENSORFLOW_BATCH_ACCOUNT_KEY); no key: Azure AD"
    )
    batch_account_key: SecretStr | None = Field(None, description="azure-batch: shared key (secret; prefer the env variable)")
    batch_pool_id: str = Field("sensorflow", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="azure-batch: pool id (created if missing)")
    batch_vm_size: str = Field("standard_d2s_v3", description="azure-batch: VM size of the pool's nodes")
    batch_vm_image: str = Field("microsoft-dsvm:ubuntu-hpc:2204", description="azure-batch: node OS image, publisher:offer:sku[:version]")
    batch_node_agent: str = Field("batch.node.ubuntu 22.04", description="azure-batch: node agent SKU of that image")
    batch_container_image: str | None = Field(None, description="azure-batch: the sensorflow image tasks run in (REGISTRY/sensorflow:TAG)")
    batch_registry_username: str | None = Field(None, description="azure-batch: container registry user (or use a managed identity)")
    batch_registry_password: SecretStr | None = Field(None, description="azure-batch: container registry password (secret)")
    batch_identity_resource_id: str | None = Field(
        None, description="azure-batch: resource id of the pool's user-assigned identity, for image pulls and output uploads"
    )
    batch_min_nodes: int = Field(0, ge=0, le=1000, description="azure-batch: fewest nodes (0: none while no task is pending)")
    batch_max_nodes: int = Field(4, ge=1, le=1000, description="azure-batch: most nodes")
    batch_task_slots_per_node: int = Field(2, ge=1, le=256, description="azure-batch: tasks at once per node (one per vCPU)")
    batch_spot_nodes: bool = Field(False, description="azure-batch: Spot (low-priority) nodes instead of dedicated ones")
    batch_autoscale_formula: str | None = Field(None, description="azure-batch: autoscale formula replacing the generated one")
    batch_autoscale_minutes: int = Field(5, ge=5, le=10_080, description="azure-batch: autoscale evaluation interval")
    batch_output_container_url: SecretStr | None = Field(
        None, description="azure-batch: Blob container URL for task logs and results; with a SAS token (secret) unless the pool has an identity"
    )
    batch_max_task_retries: int = Field(2, ge=0, le=100, description="azure-batch: retries of a task that exits non-zero")
    batch_task_timeout_seconds: float = Field(3600.0, gt=0, description="azure-batch: wall-clock limit of one task attempt")
    batch_job_timeout_seconds: float = Field(14_400.0, gt=0, description="azure-batch: wall-clock limit of a run's job")
    batch_job_retention_hours: float = Field(24.0, gt=0, description="azure-batch: delete this pool's jobs this long after they end")
    batch_poll_seconds: float = Field(15.0, gt=0, description="azure-batch: how often a run polls its job")


class ExecutorSettings(_BatchSettings, _AzureBatchSettings):
    """What commands that run batch tasks share: the store the tasks read, and where they run (local pool or Azure Batch)."""

    store: StoreUrl = Field("sqlite:///sensorflow.db", description="store URL: sqlite:///PATH, postgresql+odbc:..., mssql+odbc:...")

    @model_validator(mode="after")
    def _azure_batch(self) -> ExecutorSettings:
        if self.executor != "azure-batch":
            return self
        if self.store.startswith("sqlite:///"):
            raise ValueError("executor azure-batch needs a server store (postgresql+odbc: or mssql+odbc:): "
                             "Batch nodes cannot open this machine's SQLite file")
        if not (self.model_store or "").startswith("azblob://"):
            raise ValueError("executor azure-batch needs model_store azblob://CONTAINER: Batch nodes read specs and models there")
        missing = [n for n in ("batch_account_url", "batch_container_image", "batch_output_container_url") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"executor azure-batch needs {', '.join(missing)}")
        if self.blob_connection_string is None and self.blob_account_url is None:
            raise ValueError("executor azure-batch needs Blob access for the model store: blob_connection_string or blob_account_url")
        if self.batch_account_key is not None and not self.batch_account_name:
            raise ValueError("batch_account_key needs batch_account_name")
        if self.batch_min_nodes > self.batch_max_nodes:
            raise ValueError("batch_min_nodes must be <= batch_max_nodes")
        return self


class SidecarSettings(ExecutorSettings):
    """Settings of ``sensorflow sidecar``: what to score and train, and when."""

    interval_seconds: float = Field(300.0, gt=0, description="run every N seconds of wall time")
    cron: str | None = Field(None, description="run at the times of a cron expression instead (e.g. '10 * * * *')")
    safety_margin_seconds: float = Field(120.0, ge=0, description="rescan windows written this long before the last run's start")
    score_lookback_seconds: float = Field(300.0, ge=0, description="rescore this much window time before the last run's newest window")
    train_seconds: float = Field(3600.0, gt=0, description="train on this much window time before the newest window")
    retrain_every_seconds: float = Field(3600.0, gt=0, description="retrain when the newest window moved this far past the last training")
    lease_seconds: float = Field(600.0, gt=0, description="lease lifetime; renewed while a run is in progress")
    seed_csv: bool = Field(False, description="also write the original's per-sensor prediction CSVs to predictions/")
    metrics_port: int | None = Field(
        None, ge=0, le=65_535, description="serve /metrics, /healthz, /readyz on this port (0: any free port)"
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import croniter

            if not croniter.is_valid(value):
                raise ValueError(f"bad cron expression {value!r}")
        return value


class EvaluateSettings(ExecutorSettings):
    """Settings of ``sensorflow evaluate``: which window-time ranges to train and score, labels, report and plot.

    Times (``train_from``, ``train_to``, ``score_to``) are text: ISO-8601, or
    relative to the newest window in the store (``newest``, ``newest-30m``,
    ``-2h``); ``sensorflow.batch_jobs.evaluation.parse_window_time`` reads them.
    """

    model_store: str | None = Field(  # type: ignore[assignment]  # evaluation models never go where the sidecar's are
        None, description="keep the evaluation's models under this model store (a directory or azblob://CONTAINER[/PREFIX]), "
        "in evaluate-<run>/; default: a fresh temporary directory, removed after"
    )
    train_from: str | None = Field(
        None, description="train on windows after this time (default: train_to - train_seconds; with --as-scheduled: the oldest window)"
    )
    train_to: str | None = Field(None, description="train on windows up to this time; scoring starts after it")
    score_to: str = Field("newest", description="score windows up to this time (with --as-scheduled: replay the schedule up to it)")
    train_seconds: float = Field(3600.0, gt=0, description="window time to train on (as the sidecar: before each retrain point)")
    retrain_every_seconds: float = Field(3600.0, gt=0, description="--as-scheduled: retrain this often in window time, as the sidecar")
    labels: Path | None = Field(None, description="labels.json of known incidents (the simulator's format) to score against")
    scope: Literal["sensor", "device"] = Field(
        "sensor", description="sensor: a label matches its (device, tag); device: labels match on device, tags' flags united"
    )
    plot: Path | None = Field(None, description="write a PNG of the worst sensors here")
    top: int = Field(10, ge=1, le=1000, description="how many worst sensors to list (and up to 8 of them to plot)")


class DemoSettings(_BatchSettings):
    """Settings of ``sensorflow demo``: the simulated fleet and where the outputs go."""

    out: Path = Field(Path(".sensorflow/demo"), description="directory for the recording, store, models and plot (replaced)")
    devices: int = Field(100, ge=1, le=10_000, description="simulated devices")
    tags: int = Field(4, ge=1, le=100, description="tags per device")
    minutes: float = Field(60.0, gt=1, le=24 * 60, description="simulated event time in minutes")
    train_fraction: float = Field(0.5, gt=0.1, lt=0.95, description="first part of the event time to train on")
    anomaly_rate: float = Field(
        4.0, ge=0, le=120, description="labelled anomalies per sensor per hour of the scored part (a tenth of it in training)"
    )
    seed: int = Field(7, ge=0, description="random seed of the simulation")
    plot_sensors: int = Field(4, ge=1, le=12, description="sensors drawn in the plot")


class IncidentsSettings(_Settings):
    """Settings of ``sensorflow incidents``: which store, which incidents."""

    store: StoreUrl = Field("sqlite:///sensorflow.db", description="store URL: sqlite:///PATH, postgresql+odbc:..., mssql+odbc:...")
    since: str | None = Field(
        None, description="only incidents ending after this: a duration before the store's newest window (1h, 30m, 2d) "
        "or an ISO-8601 time (default: all)"
    )
    detector: str | None = Field(
        None, description="only this detector's incidents, as Predictions.Detector names it (calibrated, eval:calibrated)"
    )


class ReportSettings(IncidentsSettings):
    """Settings of ``sensorflow report``: the incidents' settings, labels, how many sensors to draw, the output file."""

    out: Path = Field(Path("report.html"), description="the HTML file to write (one self-contained page)")
    labels: Path | None = Field(None, description="labels.json of known anomalies (the simulator's format): shaded in the plots")
    top: int = Field(6, ge=0, le=100, description="sensors to draw: most incidents first, then the highest peak score")
    window_seconds: float | None = Field(
        None, gt=0, le=86_400, description="window length of the stored windows (default: the length the store recorded)"
    )


_LIVE_ONLY = (
    "eventhub_connection_string",
    "eventhub_namespace",
    "eventhub_name",
    "owner_level",
    "checkpoint_connection_string",
    "checkpoint_account_url",
    "checkpoint_container",
    "stop_after_idle_seconds",
    "max_runtime_seconds",
)


def load_settings(cls: type[BaseSettings], flags: dict[str, Any], config_file: Path | None = None) -> Any:
    """Build ``cls`` from explicit flags (None values dropped), env and an optional TOML file.

    Raises :class:`SettingsError` with one readable line.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise SettingsError(f"config file not found: {config_file}")
    _warn_unknown_env(os.environ)
    target = cls
    if config_file is not None:
        target = type(cls.__name__, (cls,), {"config_file": Path(config_file)})
    try:
        return target(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(_one_line(e)) from e
    except (OSError, ValueError) as e:  # e.g. a TOML syntax error
        raise SettingsError(f"cannot read settings: {e}") from e


def _one_line(error: ValidationError) -> str:
    """Each error as ``name: message``; a check of several settings together (no name) as its message alone."""
    parts = []
    for item in error.errors():
        name = ".".join(str(x) for x in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = f"required (flag --{name.replace('_', '-')} or env SENSORFLOW_{name.upper()})"
        elif item["type"] == "extra_forbidden":
            message = "unknown setting"
        parts.append(f"{name}: {message}" if name and not message.startswith(f"{name} ") else message)  # "store must ..."
    return "invalid settings: " + "; ".join(parts)


def redacted(url: str) -> str:
    """``url`` whole, but for the secrets a store or Blob URL may carry (passwords, keys, SAS signatures)."""
    url = re.sub(r"(?i)\b(pwd|password|accountkey|sharedaccesskey|sig)=[^;&]*", r"\1=***", url)
    return re.sub(r"(//[^:/@;]+):[^@/;]*@", r"\1:***@", url)


def _store_scheme_error(value: str) -> str:
    return f"store must start with sqlite:///, postgresql+odbc: or mssql+odbc:, not {redacted(value)!r}"


def _warn_unknown_env(environ: Mapping[str, str]) -> None:
    """A warning for each SENSORFLOW_* variable that is no command's setting, naming the closest one."""
    import difflib
    import logging

    names = {f"SENSORFLOW_{name.upper()}" for fields in _commands().values() for name in fields} | _OTHER_ENV
    for variable in sorted(environ):
        if variable.startswith("SENSORFLOW_") and variable not in names and not variable.startswith(_OTHER_ENV_PREFIXES):
            close = difflib.get_close_matches(variable, sorted(names), n=1, cutoff=0.6)
            hint = f": did you mean {close[0]}?" if close else ""
            logging.getLogger("sensorflow.settings").warning("%s is not a setting of any command, ignored%s", variable, hint)


# SENSORFLOW_* variables that are not settings: the Batch task's result file, the simulator's hub settings.
_OTHER_ENV = {"SENSORFLOW_TASK_RESULT_FILE"}
_OTHER_ENV_PREFIXES = ("SENSORFLOW_EVENTHUB_",)

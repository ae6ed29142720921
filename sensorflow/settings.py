"""One typed, frozen settings object, from flags > SENSORFLOW_* env vars > a TOML config file > defaults."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

__all__ = ["RunSettings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one line for humans."""


class RunSettings(BaseSettings):
    """Settings of ``sensorflow run``."""

    model_config = SettingsConfigDict(env_prefix="SENSORFLOW_", frozen=True, extra="forbid")

    source: str = Field(description="recording file or directory to replay (JSON Lines or Capture Avro)")
    store: str = Field("sqlite:///sensorflow.db", description="store URL: sqlite:///PATH")
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
    block_bytes: int = Field(4 << 20, ge=128, le=1 << 28, description="bytes read per replay batch (small values only for tests)")
    progress_seconds: float = Field(5.0, ge=0, description="progress line interval on stderr (0: off)")

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
    def _store_scheme(self) -> "RunSettings":
        if not self.store.startswith(("sqlite:///", "postgresql+odbc:", "mssql+odbc:")):
            raise ValueError(f"store must start with sqlite:///, postgresql+odbc: or mssql+odbc:, not {self.store!r}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def window_ns(self) -> int:
        return round(self.window_seconds * 1e9)

    @property
    def lateness_ns(self) -> int:
        return round(self.lateness_seconds * 1e9)


def load_settings(cls: type[BaseSettings], flags: dict[str, Any], config_file: Path | None = None) -> Any:
    """Build ``cls`` from explicit flags (None values dropped), env and an optional TOML file.

    Raises :class:`SettingsError` with one readable line.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise SettingsError(f"config file not found: {config_file}")
    target = cls
    if config_file is not None:
        config = {**cls.model_config, "toml_file": Path(config_file)}
        target = type(cls.__name__, (cls,), {"model_config": config})
    try:
        return target(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(_one_line(e)) from e
    except (OSError, ValueError) as e:  # e.g. a TOML syntax error
        raise SettingsError(f"cannot read settings: {e}") from e


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        name = ".".join(str(x) for x in item["loc"]) or "settings"
        message = item["msg"]
        if item["type"] == "missing":
            message = f"required (flag --{name.replace('_', '-')} or env SENSORFLOW_{name.upper()})"
        elif item["type"] == "extra_forbidden":
            message = "unknown setting"
        parts.append(f"{name}: {message}")
    return "invalid settings: " + "; ".join(parts)

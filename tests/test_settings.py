"""Settings at their edges: one TOML file for every command, misspelled variables, messages, the model store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sensorflow.settings import (
    DETECTOR_NAMES,
    EvaluateSettings,
    RunSettings,
    SettingsError,
    SidecarSettings,
    load_settings,
    redacted,
)

CONFIG = """\
store = "sqlite:///shared.db"
window_seconds = 10
cron = "10 * * * *"

[run]
source = "rec/"
lateness_seconds = 2

[sidecar]
interval_seconds = 60
detector = "robust-window"

[evaluate]
train_to = "-1h"
detector = "mad-z"
"""


@pytest.fixture(autouse=True)
def _no_sensorflow_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("SENSORFLOW_")]:
        monkeypatch.delenv(name)


def test_one_toml_file_serves_every_command(tmp_path: Path):
    # Trap 6 of issue 17: each command rejected the other's keys.
    config = tmp_path / "sensorflow.toml"
    config.write_text(CONFIG)
    run = load_settings(RunSettings, {}, config)
    assert (run.store, run.window_seconds, run.source, run.lateness_seconds) == ("sqlite:///shared.db", 10, "rec/", 2)
    sidecar = load_settings(SidecarSettings, {}, config)
    assert (sidecar.store, sidecar.window_seconds, sidecar.cron, sidecar.interval_seconds, sidecar.detector) == (
        "sqlite:///shared.db", 10, "10 * * * *", 60, "robust-window"
    )
    evaluate = load_settings(EvaluateSettings, {"detector": "calibrated"}, config)
    assert (evaluate.store, evaluate.train_to, evaluate.detector) == ("sqlite:///shared.db", "-1h", "calibrated")  # flags win


@pytest.mark.parametrize(
    "text, message",
    [
        ('source = "rec/"\nwindow_secondz = 5\n', "window_secondz: unknown setting"),  # a key of no command
        ('[run]\nsource = "rec/"\ncron = "* * * * *"\n', "cron: unknown setting"),  # in run's own table: not run's
        ('source = "rec/"\n[sidcar]\ncron = "* * * * *"\n', "unknown table [sidcar]"),
    ],
)
def test_a_config_key_no_command_knows_is_still_refused(tmp_path: Path, text: str, message: str):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(RunSettings, {}, config)


def test_a_misspelled_variable_gets_a_warning_naming_the_setting(monkeypatch, caplog):
    # Trap 6: SENSORFLOW_WINDOW_SECOND was ignored silently.
    monkeypatch.setenv("SENSORFLOW_WINDOW_SECOND", "10")
    monkeypatch.setenv("SENSORFLOW_CRON", "* * * * *")  # the sidecar's: no warning for a run
    monkeypatch.setenv("SENSORFLOW_EVENTHUB_CONNECTION_STRING_X", "")  # the simulator's namespace: its own
    with caplog.at_level(logging.WARNING, logger="sensorflow.settings"):
        settings = load_settings(RunSettings, {"source": "rec/"})
    assert settings.window_seconds == 5
    assert [r.getMessage() for r in caplog.records] == [
        "SENSORFLOW_WINDOW_SECOND is not a setting of any command, ignored: did you mean SENSORFLOW_WINDOW_SECONDS?"
    ]


def test_messages_name_the_whole_url_without_its_secrets_and_without_validator_noise():
    with pytest.raises(SettingsError) as refused:
        load_settings(RunSettings, {"source": "rec/", "store": "postgresql://sensorflow:hunter2@db.example.com:5432/readings"})
    message = str(refused.value)
    assert message == (
        "invalid settings: store must start with sqlite:///, postgresql+odbc: or mssql+odbc:, "
        "not 'postgresql://sensorflow:***@db.example.com:5432/readings'"
    )
    assert redacted("mssql+odbc:Driver=x;Server=s;UID=u;PWD=secret;Encrypt=yes") == (
        "mssql+odbc:Driver=x;Server=s;UID=u;PWD=***;Encrypt=yes"
    )


@pytest.mark.parametrize("cls", [SidecarSettings, EvaluateSettings])
def test_a_model_store_url_of_another_kind_is_refused_at_start(cls):
    # Trap 6: `--model-store postgres://x` failed every sensor's task and the sidecar exited 0.
    with pytest.raises(SettingsError, match=r"model_store: must be a directory, file:///PATH or azblob://CONTAINER\[/PREFIX\], not 'postgres://x'"):
        load_settings(cls, {"model_store": "postgres://x", "train_to": "-1h"} if cls is EvaluateSettings else {"model_store": "postgres://x"})
    for good in ("models", "/var/lib/models", "file:///var/lib/models", "azblob://models/prefix"):
        assert load_settings(SidecarSettings, {"model_store": good}).model_store == good


def test_the_listed_detector_names_are_the_registry():
    from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR, DETECTORS
    from sensorflow.settings import DEFAULT_DETECTOR as LISTED_DEFAULT

    assert set(DETECTOR_NAMES) == set(DETECTORS) and LISTED_DEFAULT == DEFAULT_DETECTOR

"""`sensorflow simulate` options: recordings, bad combinations, Event Hubs settings."""

from __future__ import annotations

import argparse
import json

import pytest

from sensorflow.simulator.cli import EPILOG, add_subcommand
from sensorflow.simulator.settings import EventHubSettings
from tests.simulator.helpers import read_recording


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorflow")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


def test_writes_a_seed_recording_and_prints_a_summary(tmp_path, capsys):
    code = _run(["--out", str(tmp_path), "--start", "2026-01-01T00:00:00Z", "--duration", "2m"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["readings"] == 60 == len(read_recording(tmp_path))
    assert (tmp_path / "labels.json").read_text().strip() == "[]"


def test_fleet_options_shape_the_recording(tmp_path, capsys):
    code = _run([
        "--out", str(tmp_path), "--profile", "fleet", "--devices", "4", "--tags", "3", "--rate", "2",
        "--duration", "30s", "--start", "2026-01-01T00:00:00Z", "--ids", "str", "--partitions", "2",
        "--anomaly-rate", "30", "--anomaly-kinds", "spike,dropout", "--readings-per-message", "5",
    ])
    assert code == 0
    lines = read_recording(tmp_path)
    assert {line.file_partition for line in lines} <= {"0", "1"}
    readings = [r for line in lines for r in json.loads(line.body)]
    assert {r["Device"] for r in readings} <= {f"device-{i}" for i in range(1, 5)}
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert {label["kind"] for label in labels} <= {"spike", "dropout"}
    dropped = sum(1 for label in labels if label["kind"] == "dropout")
    assert len(readings) <= 4 * 3 * 2 * 30 and (dropped or len(readings) == 4 * 3 * 2 * 30)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give either --out DIR"),
        (["--out", "X", "--to", "eventhubs"], "give either --out DIR"),
        (["--out", "X", "--rate", "5"], "--rate needs --profile fleet"),
        (["--out", "X", "--profile", "fleet", "--interval", "3"], "--interval is for --profile seed"),
        (["--to", "eventhubs", "--format", "avro"], "--format is for recordings"),
        (["--out", "X", "--pace", "realtime"], "--pace is for --to eventhubs"),
        (["--out", "X", "--capture-window", "1m"], "--capture-window needs --format avro"),
        (["--out", "X", "--eventhub", "hub"], "need --to eventhubs"),
        (["--out", "X", "--duration", "soon"], "--duration: bad duration"),
        (["--out", "X", "--start", "yesterday"], "bad start time"),
        (["--out", "X", "--anomaly-kinds", "spike,wobble"], "unknown anomaly kind(s): wobble"),
        (["--out", "X", "--profile", "fleet", "--devices", "0"], "devices must be an int >= 1"),
        (["--out", "X", "--readings-per-message", "0"], "readings per message"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sensorflow simulate: error: ") and message in err


def test_eventhubs_without_connection_settings_is_one_clear_line(capsys, monkeypatch):
    for name in ("CONNECTION_STRING", "NAMESPACE", "NAME"):
        monkeypatch.delenv(f"SENSORFLOW_EVENTHUB_{name}", raising=False)
    assert _run(["--to", "eventhubs", "--duration", "10s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SENSORFLOW_EVENTHUB_CONNECTION_STRING" in err


def test_refuses_to_overwrite_a_recording_without_force(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--start", "2026-01-01T00:00:00Z", "--duration", "10s"]
    assert _run(args) == 0
    assert _run(args) == 2
    assert "already holds a recording" in capsys.readouterr().err
    assert _run([*args, "--force"]) == 0


def test_connection_string_comes_from_the_environment_and_stays_secret(monkeypatch):
    secret = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=s3cr3t"
    monkeypatch.setenv("SENSORFLOW_EVENTHUB_CONNECTION_STRING", secret)
    settings = EventHubSettings(name="readings")
    target = settings.target()
    assert target.connection_string.get_secret_value() == secret
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in repr(target) and "s3cr3t" not in str(target)


def test_namespace_sign_in_needs_a_hub_name(monkeypatch):
    monkeypatch.delenv("SENSORFLOW_EVENTHUB_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("SENSORFLOW_EVENTHUB_NAME", raising=False)
    with pytest.raises(ValueError, match="event hub name"):
        EventHubSettings(namespace="ns.servicebus.windows.net").target()


def test_help_has_an_example_for_each_mode():
    for example in ("--out rec/", "--format avro", "--to eventhubs", "--readings-per-message", "--namespace"):
        assert example in EPILOG

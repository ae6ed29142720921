"""The ``sensorflow`` command: one entry point, a subcommand per job.

Each subcommand's options are made when that subcommand is chosen (``_Command``), and each
command imports what it runs when it runs: ``sensorflow --help`` imports neither the settings
models nor the simulator, and ``sensorflow run`` nothing of the batch jobs, the simulator,
matplotlib, scikit-learn or Azure (``tests/test_startup.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sensorflow import __version__
from sensorflow.lifecycle import exit_status, raise_on_sigterm, stopped_by

if TYPE_CHECKING:  # the settings models (pydantic) are imported by the commands that use them
    from pydantic_settings import BaseSettings

    from sensorflow.settings import RunSettings

__all__ = ["main"]

_DESCRIPTION = """\
sensorflow turns sensor readings into 5-second window averages per (Device, Tag)
in SQL, then trains and scores one anomaly model per sensor.

Start with (in any directory; about 30 s, everything under .sensorflow/demo):
  sensorflow demo
then replay a recording of your own into a store of your own:
  sensorflow simulate --out rec --duration 10m --start 2026-01-01T00:00:00Z
  sensorflow run --source rec --store sqlite:///sensorflow.db

Every flag of a subcommand can also come from an environment variable
SENSORFLOW_<FLAG> (e.g. SENSORFLOW_WINDOW_SECONDS=10) or from a TOML file
given with --config; flags win over env, env over the file.
"""

_RUN_EXAMPLES = """\
examples:
  # replay a recording directory (one partition per *.jsonl file) into SQLite
  sensorflow run --source samples/seed --store sqlite:///sensorflow.db
  # windows by the message's enqueued time, as the original ASA job did
  sensorflow run --source rec/ --time-source enqueued
  # survive crashes: snapshot state every 5 s, rerun the same command to resume
  sensorflow run --source rec/ --recovery-dir .sensorflow/recovery --snapshot-interval-seconds 5
  # the state belongs to that recording, store and window settings; another is refused: start over
  sensorflow run --source rec2/ --recovery-dir .sensorflow/recovery --fresh
  # pace a replay at 10x real time
  sensorflow run --source rec/ --replay-speed 10

live, from Azure Event Hubs (--source eventhubs; secrets from the environment, not flags):
  # connection string in SENSORFLOW_EVENTHUB_CONNECTION_STRING, checkpoints in Blob Storage
  # (SENSORFLOW_CHECKPOINT_CONNECTION_STRING), metrics and probes on :9108
  sensorflow run --source eventhubs --consumer-group sensorflow --checkpoint-container checkpoints \\
      --recovery-dir /var/lib/sensorflow/recovery --metrics-port 9108 --log-format json
  # Entra ID (DefaultAzureCredential) for both the hub and the storage account
  sensorflow run --source eventhubs --eventhub-namespace NS.servicebus.windows.net --eventhub-name readings \\
      --checkpoint-account-url https://ACCOUNT.blob.core.windows.net --checkpoint-container checkpoints
  # catch up from an enqueued time, then stop once the hub has been quiet for a minute
  sensorflow run --source eventhubs --starting-position 2026-01-01T00:00:00Z --stop-after-idle-seconds 60

  A live run starts each partition from the Bytewax recovery state if --recovery-dir holds
  one, else from the consumer group's Blob checkpoints, else at --starting-position. SIGTERM
  stops it gracefully (last batch processed, snapshot, checkpoint). See docs/eventhubs.md.

stopping: SIGTERM or Ctrl-C stops any run within 10 s, even with the store or the hub
unreachable (a live run's graceful stop gets 3 s of it): one line, exit 143 / 130; what was
committed stays, and a rerun with the same --recovery-dir resumes.
"""


def _add_settings_flags(parser: argparse.ArgumentParser, cls: type[BaseSettings]) -> None:
    """One flag per settings field; values are validated by the settings model, as env and TOML values are.

    Fields with a fixed set of values list them (``{ts,enqueued}``); booleans are ``--flag`` / ``--no-flag``.
    """
    for name, field in cls.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        if _is_bool(field.annotation):
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=_field_help(field))
            continue
        choices = _choices(field)
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            # Listed, not enforced here: the model's one message is the same for a flag, env or TOML value.
            metavar="{" + ",".join(choices) + "}" if choices else name.split("_")[-1].upper(),
            help=_field_help(field),
        )


def _field_help(field: Any) -> str:
    """The field's description and its default, unless the description says it or there is none to say."""
    description = field.description or ""
    if field.is_required():
        return f"{description} (required)"
    if field.default is None or isinstance(field.default, bool) or "default" in description:
        return description
    return f"{description} (default: {field.default})"


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                  and set(typing.get_args(annotation)) == {bool, type(None)})


def _choices(field: Any) -> list[str] | None:
    """The values a field takes: a ``Literal``'s, or ``json_schema_extra["choices"]`` (names known without imports)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "choices" in extra:
        return list(extra["choices"])
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return None


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """argparse as every ``sensorflow`` parser uses it.

    No abbreviations (``--window-second`` is not ``--window-seconds``); the global flags
    (``--log-level``, ``--config``) are accepted after the subcommand as well as before it; an
    unknown flag gets this (sub)command's usage and the nearest known flag ("did you mean");
    any other error is one line, exit 2.
    """

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # A subcommand's copy of a global flag leaves the value given before the subcommand alone.
        default = None if top else argparse.SUPPRESS
        self.add_argument("--log-level", default="WARNING" if top else default, type=str.upper, choices=_LOG_LEVELS,
                          metavar="LEVEL", help=f"logging level: {', '.join(_LOG_LEVELS)} (default: WARNING)")
        self.add_argument("--config", type=Path, default=default, metavar="TOML",
                          help="TOML file of settings: keys as the flags (with _) at the top level, or in a "
                          "[<command>] table for one command only")
        self._globals = {o for a in self._actions[-2:] for o in a.option_strings}

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        global_flag = next((a for a in self._actions if set(a.option_strings) & set(args) & self._globals_), None)
        if global_flag is not None:  # a command that defines --config itself: keep the global one, with its help
            global_flag.help = kwargs.get("help", global_flag.help)
            return global_flag
        return super().add_argument(*args, **kwargs)

    @property
    def _globals_(self) -> set[str]:
        return getattr(self, "_globals", set())

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self._unrecognized(extras)
        return namespace, extras

    def _unrecognized(self, extras: list[str]) -> None:
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for extra in extras:
            if extra.startswith("-"):
                close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.6)
                hints.append(f"{extra}: did you mean {close[0]}?" if close else f"{extra}: no such option")
        if not hints:
            hints.append(f"unexpected {' '.join(extras)}")
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: unrecognized arguments: {'; '.join(hints)}\n")

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _Command(argparse.ArgumentParser):
    """A subcommand as ``sensorflow --help`` lists it; its own parser is made at its first use.

    ``define`` adds the subcommand's parser (``add_parser(name, ...)``) to a subparsers action.
    It runs when the subcommand is parsed (its options, its ``--help``), so listing the
    commands imports nothing that their options are made from (settings models, the simulator).
    """

    def __init__(self, *, define: Callable[[argparse._SubParsersAction], None], **kwargs: Any):
        super().__init__(add_help=False, **kwargs)
        self._define = define
        self._parser: argparse.ArgumentParser | None = None

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        return self._defined().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        return self._defined().format_usage()

    def format_help(self) -> str:
        return self._defined().format_help()

    def _defined(self) -> argparse.ArgumentParser:
        if self._parser is None:
            prefix, name = self.prog.rsplit(" ", 1)
            commands = _Parser().add_subparsers(prog=prefix)
            self._define(commands)
            self._parser = commands.choices[name]
        return self._parser


# `simulate`'s line in `sensorflow --help`, here so that listing the commands does not import the
# simulator; its own `add_subcommand` says the same (tests/test_startup.py checks).
_SIMULATE_HELP = "simulate sensor readings into a recording or Event Hubs"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sensorflow", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter, top=True
    )
    parser.add_argument("--version", action="version", version=f"sensorflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Command)
    commands.add_parser(
        "run",
        help="replay recorded events, or consume a live Event Hub, through the windowing dataflow into SQL",
        define=_define_run,
    )
    commands.add_parser("sidecar", help="score new windows and retrain per-sensor models, on a schedule",
                        define=_define_sidecar)
    commands.add_parser("task", help="run one batch task from its spec", define=_define_task)
    commands.add_parser(
        "evaluate",
        help="measure a detector and sensitivity on the store's history: train on one range, score another, vs labels",
        define=_define_evaluate,
    )
    commands.add_parser(
        "demo",
        help="the whole story on a simulated fleet: windows, models, anomalies found vs labelled, a plot",
        define=_define_demo,
    )
    commands.add_parser("serve", help="run the dataflow and the sidecar together (a laptop's whole service)", define=_define_serve)
    commands.add_parser("incidents", help="list incidents (runs of a sensor's flagged windows), newest and strongest first",
                        define=_define_incidents)
    commands.add_parser("report", help="write one self-contained HTML page: the store's summary, incidents, top sensors' plots",
                        define=_define_report)
    if importlib.util.find_spec("sensorflow.simulator") is not None:  # the simulator is optional in slim installs
        commands.add_parser("simulate", help=_SIMULATE_HELP, define=_define_simulate)
    return parser


def _define_run(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import RunSettings

    run = commands.add_parser(
        "run",
        description="Replay recorded events (exits when the input ends), or consume a live Azure Event Hub "
        "(--source eventhubs; runs until SIGTERM), through the 5-second windowing dataflow into the store.",
        epilog=_RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--fresh", action="store_true",
                     help="start over: delete the recovery state in --recovery-dir first (a run refuses state made "
                     "from another input, store or window settings)")
    run.add_argument("--allow-incomplete", action="store_true",
                     help="replay a recording marked INCOMPLETE (its writer was stopped before the end; refused otherwise)")
    _add_settings_flags(run, RunSettings)
    run.set_defaults(func=_run)


def _define_simulate(commands: argparse._SubParsersAction) -> None:
    from sensorflow.simulator.cli import add_subcommand

    add_subcommand(commands)


_SIDECAR_EXAMPLES = """\
examples:
  # one run: score what was written since the last run, train if due, then exit
  sensorflow sidecar --once --store sqlite:///sensorflow.db
  # every 5 minutes; scoring at minute 10 of every hour instead: --cron '10 * * * *'
  sensorflow sidecar --interval-seconds 300
  # models in Azure Blob Storage (account from SENSORFLOW_BLOB_CONNECTION_STRING)
  sensorflow sidecar --model-store azblob://models
"""


_EVALUATE_EXAMPLES = """\
times: ISO-8601 (2026-01-01T06:00:00Z; no zone: UTC) or relative to the newest window in the
store: 'newest', 'newest-30m', or the short form '-30m' (units s, m, h, d; '1h30m' works).
Write a leading '-' as --train-to=-1h (with '=') so it is not read as a flag.
Ranges are in window time (a window's TS is its end): train on (train_from, train_to],
score (train_to, score_to].

examples:
  # train on the hour before the last one, score the last hour, against known incidents
  sensorflow evaluate --store sqlite:///sensorflow.db --train-from=-2h --train-to=-1h --labels labels.json
  # a less sensitive detector, the worst sensors drawn to a PNG
  sensorflow evaluate --train-to 2026-01-01T06:00:00Z --score-to 2026-01-01T12:00:00Z \\
      --threshold-scale 2 --labels labels.json --plot worst.png
  # replay the sidecar's schedule over the whole history: retrain every hour on the trailing 3 hours
  sensorflow evaluate --as-scheduled --train-seconds 10800 --retrain-every-seconds 3600 --labels labels.json
  # SKAB-style: a device's incident is found when any of its tags flags inside it
  sensorflow evaluate --train-to=-1d --labels labels.json --scope device

The last line on stdout is one JSON object (recall, precision, f1, false_flag_windows,
false_flag_episodes, ..., worst_false, worst_missed); progress goes to stderr. Predictions are
written under Detector 'eval:<detector>' and models to their own model store, so the sidecar's
rows and models are never replaced.
"""


def _define_sidecar(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import SidecarSettings

    sidecar = commands.add_parser(
        "sidecar",
        description="Each run scores the sensors with windows written since the last run and retrains "
        "when due, on a local process pool or Azure Batch (--executor); one sidecar at a time holds the store's lease.",
        epilog=_SIDECAR_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sidecar.add_argument("--once", action="store_true", help="one run, then exit")
    _add_settings_flags(sidecar, SidecarSettings)
    sidecar.set_defaults(func=_sidecar)


def _define_task(commands: argparse._SubParsersAction) -> None:
    task = commands.add_parser("task", description="Run one batch task.")
    actions = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    task_run = actions.add_parser(
        "run",
        help="run the task whose JSON spec is at SPEC_URL; its result is written beside it",
        description="Read a task spec (a model store object: a path or azblob://CONTAINER/NAME), run it "
        "and write <task>.result.json beside it. Exit 1 if the task could not run.",
    )
    task_run.add_argument("spec_url", metavar="SPEC_URL")
    task_run.set_defaults(func=_task_run)


def _define_evaluate(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import EvaluateSettings

    evaluate = commands.add_parser(
        "evaluate",
        description="Train on a window-time range and score the next (--train-from/--train-to/--score-to), or replay "
        "the sidecar's schedule over the history (--as-scheduled), through the sidecar's task specs and executor "
        "(local pool or Azure Batch). With --labels: recall, precision, F1, false flags per sensor-day, the worst "
        "sensors; a text table, an optional PNG (--plot) and one JSON line last on stdout.",
        epilog=_EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--as-scheduled", action="store_true",
                          help="replay the sidecar's schedule: retrain every --retrain-every-seconds on the trailing "
                          "--train-seconds, score each slice up to the next retrain")
    _add_settings_flags(evaluate, EvaluateSettings)
    evaluate.set_defaults(func=_evaluate)


def _define_demo(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import DemoSettings

    demo = commands.add_parser(
        "demo",
        description="Simulate a fleet with labelled anomalies, replay it through the dataflow into SQLite, "
        "train on the first part and score the rest with the sidecar, then report and plot.",
    )
    _add_settings_flags(demo, DemoSettings)
    demo.set_defaults(func=_demo)


_SERVE_EXAMPLES = """\
examples:
  # replay the sample into SQLite and score it; the sidecar keeps scoring every minute until Ctrl-C
  sensorflow serve --source samples/seed --store sqlite:///sensorflow.db
  # a live Event Hub (secrets from the environment), metrics of both on :9108 and :9109
  sensorflow serve --source eventhubs --checkpoint-container checkpoints --recovery-dir .sensorflow/recovery \\
      --metrics-port 9108 --sidecar-metrics-port 9109

The dataflow is `sensorflow run` with the run flags below; the sidecar is `sensorflow sidecar` with
the same --store and --window-seconds and the sidecar flags; other sidecar settings come from
SENSORFLOW_* variables or --config. Ctrl-C or SIGTERM stops both (one line, exit 130 / 143); if
either fails, the other is stopped and serve exits with its status.
"""


def _define_serve(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import RunSettings

    serve = commands.add_parser(
        "serve",
        description="Run the windowing dataflow (sensorflow run) and the sidecar (sensorflow sidecar) side by side "
        "as two child processes, until Ctrl-C or SIGTERM.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", type=Path, default=None, help="TOML file of settings, given to both commands")
    serve.add_argument("--fresh", action="store_true", help="the dataflow's --fresh: delete the state in --recovery-dir first")
    serve.add_argument("--allow-incomplete", action="store_true", help="the dataflow's --allow-incomplete")
    side = serve.add_argument_group("sidecar")
    side.add_argument("--model-store", default=None, help="sidecar: model store, a directory or azblob://CONTAINER (default: .sensorflow/models)")
    side.add_argument("--detector", default=None, help="sidecar: detector name (default: the project's default)")
    side.add_argument("--threshold-scale", default=None, help="sidecar: sensitivity (2: fewer, stronger alarms)")
    side.add_argument("--task-processes", default=None, help="sidecar: local task processes (default: CPU count)")
    side.add_argument("--interval-seconds", default="60", help="sidecar: score every N seconds (default: 60)")
    side.add_argument("--cron", default=None, help="sidecar: run at the times of a cron expression instead")
    side.add_argument("--sidecar-metrics-port", default=None,
                      help="sidecar: serve /metrics, /healthz, /readyz on this port (0: any free port)")
    run = serve.add_argument_group("dataflow (sensorflow run)")
    _add_settings_flags(run, RunSettings)  # type: ignore[arg-type]  # an argument group adds arguments the same way
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from sensorflow.serve import serve_command
    from sensorflow.settings import RunSettings, SidecarSettings, load_settings

    run_values = _flags(args, RunSettings)
    sidecar_values = {name: getattr(args, name) for name in
                      ("model_store", "detector", "threshold_scale", "task_processes", "interval_seconds", "cron")
                      if getattr(args, name) is not None}
    if args.sidecar_metrics_port is not None:
        sidecar_values["metrics_port"] = args.sidecar_metrics_port
    for shared in ("store", "window_seconds"):
        if shared in run_values:
            sidecar_values[shared] = run_values[shared]
    if args.cron is not None:
        sidecar_values.pop("interval_seconds")
    load_settings(RunSettings, run_values, args.config)  # both refuse bad settings here: one line, exit 2
    load_settings(SidecarSettings, sidecar_values, args.config)
    config = ["--config", str(args.config)] if args.config is not None else []
    run_flags = [*config, *(["--fresh"] if args.fresh else []), *(["--allow-incomplete"] if args.allow_incomplete else []),
                 *_as_flags(run_values)]
    return serve_command(run_flags, [*config, *_as_flags(sidecar_values)], args.log_level)


def _as_flags(values: dict[str, Any]) -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in values.items()]


_INCIDENTS_EXAMPLES = """\
examples:
  sensorflow incidents --store sqlite:///sensorflow.db            # all, newest first
  sensorflow incidents --since 1h --open                          # open ones that ended in the newest hour of windows
  sensorflow incidents --detector calibrated --json | head        # one JSON object per line

--since is window time: a duration before the store's newest window, or an ISO-8601 time.
"""


def _define_incidents(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import IncidentsSettings

    incidents = commands.add_parser(
        "incidents",
        description="List the store's incidents: runs of one sensor's flagged windows (Score >= 1) in which flags are "
        "at most --incident-gap-windows apart, written by the sidecar as it scores. Newest start first, then the "
        "highest peak score; a table, or JSON lines with --json.",
        epilog=_INCIDENTS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    incidents.add_argument("--open", action="store_true", help="only open incidents (their sensor may still be in alarm)")
    incidents.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    incidents.add_argument("--config", type=Path, default=None, help="TOML file of settings (keys as the flags, with _)")
    _add_settings_flags(incidents, IncidentsSettings)
    incidents.set_defaults(func=_incidents)


def _define_report(commands: argparse._SubParsersAction) -> None:
    from sensorflow.settings import ReportSettings

    report = commands.add_parser(
        "report",
        description="Write one self-contained HTML page (no server, no network: inline CSS, plots embedded as PNG): "
        "the store's summary, the incidents table, and for the top sensors their window means with the min..max band, "
        "flagged windows, missing slots, the score against its threshold of 1, and labelled spans with --labels.",
        epilog="example:\n  sensorflow report --store sqlite:///sensorflow.db --since 2h --labels rec/labels.json --out report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--config", type=Path, default=None, help="TOML file of settings (keys as the flags, with _)")
    _add_settings_flags(report, ReportSettings)
    report.set_defaults(func=_report)


def _incidents(args: argparse.Namespace) -> int:
    from sensorflow.incidents_command import incidents_command
    from sensorflow.settings import IncidentsSettings, load_settings

    settings = load_settings(IncidentsSettings, _flags(args, IncidentsSettings), args.config)
    return incidents_command(settings.store, settings.since, args.open, settings.detector, args.json)


def _report(args: argparse.Namespace) -> int:
    from sensorflow.report import report_command
    from sensorflow.settings import ReportSettings, load_settings

    s = load_settings(ReportSettings, _flags(args, ReportSettings), args.config)
    return report_command(s.store, s.out, s.since, s.labels, s.detector, s.top, s.window_seconds)


def _sidecar(args: argparse.Namespace) -> int:
    from sensorflow.batch_commands import sidecar_command
    from sensorflow.settings import SidecarSettings, load_settings

    settings = load_settings(SidecarSettings, _flags(args, SidecarSettings), args.config)
    refused = _check_window_length("sidecar", settings.store, settings.window_ns)
    return refused if refused is not None else sidecar_command(settings, args.once)


def _evaluate(args: argparse.Namespace) -> int:
    from sensorflow.evaluate import evaluate_command
    from sensorflow.settings import EvaluateSettings, load_settings

    settings = load_settings(EvaluateSettings, _flags(args, EvaluateSettings), args.config)
    refused = _check_window_length("evaluate", settings.store, settings.window_ns)
    return refused if refused is not None else evaluate_command(settings, args.as_scheduled)


def _check_window_length(command: str, store_url: str, window_ns: int) -> int | None:
    """The store's recorded window length against the command's (store.metadata); an exit status if refused.

    A store that cannot be opened is left to the command, whose own line reports it as it always did.
    """
    from sensorflow.store import StoreError, open_store
    from sensorflow.store.metadata import StoreSettings, StoreSettingsMismatch, check_store_settings

    try:
        with open_store(store_url) as store:
            store.create_schema()
            check_store_settings(store, StoreSettings(window_ns), record=False)
    except StoreSettingsMismatch as e:
        print(f"sensorflow {command}: {e}", file=sys.stderr)
        return 2
    except StoreError:
        return None
    return None


def _task_run(args: argparse.Namespace) -> int:
    from sensorflow.batch_commands import task_run_command

    return task_run_command(args.spec_url)


def _demo(args: argparse.Namespace) -> int:
    from sensorflow.demo import demo_command
    from sensorflow.settings import DemoSettings, load_settings

    return demo_command(load_settings(DemoSettings, _flags(args, DemoSettings), args.config))


def _flags(args: argparse.Namespace, cls: type[BaseSettings]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None}


def _run(args: argparse.Namespace) -> int:
    from sensorflow.settings import RunSettings, load_settings
    from sensorflow.windowing.writer import WriterProcess

    raise_on_sigterm()  # from here SIGTERM stops a run as Ctrl-C does (the dataflow's own handling: windowing.interrupts)
    settings = load_settings(RunSettings, _flags(args, RunSettings), args.config)
    reports = contextlib.ExitStack()
    writer_process = None
    if not settings.live and settings.writer == "process" and settings.processes == 1:
        # The replay's store writer gets its own interpreter: start it before this process
        # imports the dataflow (numpy, pyarrow, Bytewax), so the two start-ups overlap.
        writer_process = reports.enter_context(WriterProcess())

    from bytewax.errors import BytewaxRuntimeError

    from sensorflow.ingest.eventhubs.config import MissingDependency
    from sensorflow.ingest.replay.source import RecordingError
    from sensorflow.store import StoreError
    from sensorflow.store.metadata import StoreSettingsMismatch
    from sensorflow.windowing.resume.checkpoints import CheckpointMismatch
    from sensorflow.windowing.state import RecoveryStateError
    from sensorflow.windowing.writer import WriterError

    if settings.log_format == "json":  # the flag, SENSORFLOW_LOG_FORMAT or the config file
        from sensorflow.windowing.service import configure_logging

        configure_logging(args.log_level, "json")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # Rust's panic reports only at DEBUG
        from sensorflow.windowing.rust_panics import rust_panics_hidden

        reports.enter_context(rust_panics_hidden())
    try:
        if settings.live:
            from sensorflow.assembly import run_live
            from sensorflow.windowing.live import LiveSourceError

            try:
                report = run_live(settings, fresh=args.fresh)
            except (LiveSourceError, CheckpointMismatch, MissingDependency) as e:
                print(f"sensorflow run: {e}", file=sys.stderr)
                return 1
        else:
            from sensorflow.assembly import run_replay

            report = run_replay(settings, fresh=args.fresh, allow_incomplete=args.allow_incomplete,
                                writer_process=writer_process)
    except KeyboardInterrupt as e:
        return _stopped(e)
    except StoreSettingsMismatch as e:  # a setting to change, not a failure: exit 2 as for bad settings
        print(f"sensorflow run: {e}", file=sys.stderr)
        return 2
    except (StoreError, RecordingError) as e:
        logging.getLogger("sensorflow").debug("run failed", exc_info=e)
        print(f"sensorflow run: {type(e).__name__ + ': ' if isinstance(e, StoreError) else ''}{e}", file=sys.stderr)
        return 1
    except (BytewaxRuntimeError, OSError, RuntimeError) as e:  # broken infrastructure mid-run
        chain = [e]
        while chain[-1].__cause__ is not None:
            chain.append(chain[-1].__cause__)
        root = chain[-1]
        logging.getLogger("sensorflow").debug("dataflow failed", exc_info=e)
        if isinstance(root, KeyboardInterrupt):  # stopped by a signal inside a step: Bytewax's error wraps it
            return _stopped(root)
        if isinstance(root, RecoveryStateError):  # a rerun would fail the same way: its own line says what to do
            print(f"sensorflow run: {root}", file=sys.stderr)
            return 1
        ours = next((x for x in chain if isinstance(x, (StoreError, WriterError))), None)
        if ours is not None:  # the store or its writer failed: our own line names the cause (SQLSTATE, signal)
            print(f"sensorflow run: {type(ours).__name__}: {ours}", file=sys.stderr)
            return 1
        print(
            f"sensorflow run: the dataflow failed: {type(root).__name__}: {root} "
            "(rerun with --log-level DEBUG for the traceback; with --recovery-dir a rerun resumes)",
            file=sys.stderr,
        )
        return 1
    finally:
        reports.close()
    _print_report(settings, report)
    return 0


def _stopped(interrupt: KeyboardInterrupt) -> int:
    """One line for a run stopped by SIGINT/SIGTERM, after a live run's summary; 130 or 143."""
    from sensorflow.windowing.summary import report_of, summary_lines

    logging.getLogger("sensorflow").debug("run stopped", exc_info=interrupt)
    report = report_of(interrupt)
    if report is not None:  # a live run: what it did, and the windows still open
        print("\n".join(summary_lines(report)), flush=True)
    print(
        f"sensorflow run: stopped by {stopped_by(interrupt)} (what was committed stays; with --recovery-dir a rerun resumes)",
        file=sys.stderr,
    )
    return exit_status(interrupt)


def _print_report(settings: RunSettings, report: Any) -> None:
    from sensorflow.windowing.summary import summary_lines

    print("\n".join(summary_lines(report)))


def main(argv: list[str] | None = None) -> int:
    """The command; ``argv`` None: ``sys.argv``, and this process is the command's own (not a caller's)."""
    # Arrow's default pool keeps freed memory for reuse; the system allocator gives it
    # back (peak RSS with 100k sensors 340 -> 290 MB, no slower). Read by Arrow once, at
    # first use, so it must be set before anything imports pyarrow; an explicit value wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if argv is None and args.command == "run":  # a run never uses pandas; a caller's process may (see refuse_pandas)
        from sensorflow.imports import refuse_pandas

        refuse_pandas()
    from sensorflow.settings import SettingsError

    try:
        return args.func(args)
    except SettingsError as e:
        print(f"sensorflow {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"sensorflow {args.command}: stopped by {stopped_by(e)}", file=sys.stderr)
        return exit_status(e)

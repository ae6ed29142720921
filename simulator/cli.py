"""`sensorflow simulate`: the argparse subcommand.

`add_subcommand(subparsers)` registers it; the parsed namespace's `func`
runs it and returns the exit code. Bad options end with one line on stderr
and exit code 2; failures while sending or writing exit with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sensorflow.lifecycle import exit_status, raise_on_sigterm, stopped_by
from sensorflow.records.recordings import INCOMPLETE
from sensorflow.simulator.config import (
    ANOMALY_KINDS,
    SIGNAL_KINDS,
    AnomalySpec,
    DeliverySpec,
    FleetSpec,
    MessageSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    parse_duration,
    parse_start,
)
from sensorflow.simulator.timefmt import NS_PER_S, format_ts

__all__ = ["add_subcommand", "build_config", "event_span", "run"]

EPILOG = """\
examples:
  seed-compatible recording (3 devices x 5 tags, one reading every 2 s, 1 hour):
    sensorflow simulate --out rec/ --start 2026-01-01T00:00:00Z
  the hour after it, as a recording of its own (the first printed "continue with --start
  2026-01-01T01:00:00Z"); `sensorflow run` replays one after the other into the same store:
    sensorflow simulate --out rec2/ --start 2026-01-01T01:00:00Z --seed 1
  a fleet of 10,000 sensors at 1 reading/s for 15 minutes, with faults and labelled anomalies:
    sensorflow simulate --out rec/ --profile fleet --devices 1000 --tags 10 --rate 1 \\
        --duration 15m --start 2026-01-01T00:00:00Z --seed 7 --anomaly-rate 2 \\
        --out-of-order 0.01 --max-delay 10s --duplicates 0.001 --malformed 0.001
  a mixed fleet (daily cycles of 1 h, quantized and on/off, counts, heavy tails) whose training
  range (the first 25 %) holds anomalies on a fifth of the sensors, one of them stuck for a long time:
    sensorflow simulate --out rec/ --profile fleet --signal mixed --period 1h --duration 4h \\
        --start 2026-01-01T00:00:00Z --anomaly-rate 1 --train-anomalies 0.2 --train-range 0.25
  JSON arrays of 50 readings per message, string ids:
    sensorflow simulate --out rec/ --profile fleet --ids str --readings-per-message 50
  Event Hubs Capture-style Avro files:
    sensorflow simulate --out capture/ --format avro --profile fleet --duration 10m
  send to Event Hubs in real time (connection string from SENSORFLOW_EVENTHUB_CONNECTION_STRING):
    sensorflow simulate --to eventhubs --eventhub readings --profile fleet --devices 100
  send a historic day as fast as possible, signing in with Entra ID:
    sensorflow simulate --to eventhubs --namespace NS.servicebus.windows.net --eventhub readings \\
        --start 2026-01-01T00:00:00Z --duration 1d --pace fast

a recording directory is what `sensorflow run --source DIR` replays; its labels.json is the ground truth.

event time: readings start at --start (default: now, the wall clock when the command starts,
floored to the minute so that windows line up with the recording) and
step every --interval (seed) or 1/--rate s (fleet) for --duration; a reading may sit up to --jitter
of a step later. simulate prints the first and last step it wrote and the --start that continues
it (the step after the last); a recording is never appended to, so continue into another --out
(a --duration that is a multiple of the window length keeps every window inside one recording).
"""


class UsageError(ValueError):
    """A bad option or option combination."""


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register `simulate` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate sensor readings into a recording or Event Hubs",
        description="Simulate a fleet of sensors: the seed's 3x5 fleet by default, or fleets at scale, "
        "with labelled anomalies and delivery faults.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("output")
    where.add_argument("--out", metavar="DIR", help="write a recording into DIR")
    where.add_argument("--to", choices=["eventhubs"], help="send to Event Hubs instead of writing files")
    where.add_argument("--format", choices=["jsonl", "avro"], help="recording format (default jsonl)")
    where.add_argument("--capture-window", metavar="DURATION", help="avro: time span of one file (default 5m)")
    where.add_argument("--force", action="store_true", help="replace an earlier recording in DIR")
    fleet = parser.add_argument_group("fleet and time")
    fleet.add_argument("--profile", choices=["seed", "fleet"], default="seed",
                       help="seed: one reading every --interval from a random sensor, uniform values (default); "
                       "fleet: every sensor reads at --rate, realistic values")
    fleet.add_argument("--devices", type=int, help="devices 1..N (default 3 for seed, 100 for fleet)")
    fleet.add_argument("--tags", type=int, help="tags per device 1..N (default 5 for seed, 10 for fleet)")
    fleet.add_argument("--ids", choices=["int", "str"], default="int", help="integer ids or strings like device-001")
    fleet.add_argument("--rate", type=float, help="fleet: readings per sensor per second (default 1)")
    fleet.add_argument("--interval", type=float, help="seed: seconds between readings (default 2)")
    fleet.add_argument("--duration", default="1h", help="simulated time span, e.g. 90s, 15m, 2h, 1d (default 1h)")
    fleet.add_argument("--start", default="now",
                       help="event time of the first reading: 'now' (the default: the wall clock at start, floored to "
                       "the minute) or an ISO "
                       "time like 2026-01-01T00:00:00Z; to continue a recording, the --start it printed")
    fleet.add_argument("--seed", type=int, default=0, help="random seed: same options and seed, same output")
    fleet.add_argument(
        "--signal", choices=SIGNAL_KINDS,
        help="value model (default by profile: uniform for seed, realistic for fleet); daily: a cycle of --period "
        "plus drift; quantized: coarse steps and on/off sensors; counts: mostly-zero event counts with bursts; "
        "heavy: Student-t noise; mixed: realistic, daily, quantized, counts and heavy in equal shares",
    )
    fleet.add_argument("--period", metavar="DURATION", help="cycle of realistic and daily signals (default 1d)")
    fleet.add_argument(
        "--jitter", type=float, default=0.0, help="move readings later by up to this part of the interval"
    )
    faults = parser.add_argument_group("faults and anomalies")
    faults.add_argument("--out-of-order", type=_fraction, default=0.0, help="fraction of readings delivered late")
    faults.add_argument("--max-delay", default="10s", help="longest late delivery (default 10s)")
    faults.add_argument("--duplicates", type=_fraction, default=0.0, help="fraction of readings delivered twice")
    faults.add_argument("--malformed", type=_fraction, default=0.0, help="fraction of messages that are malformed")
    faults.add_argument("--anomaly-rate", type=float, default=0.0, help="labelled anomalies per sensor per hour")
    faults.add_argument("--anomaly-kinds", default=",".join(ANOMALY_KINDS), help="comma-separated subset of kinds")
    faults.add_argument("--window", default="5s", help="labels align to windows of this length (default 5s)")
    faults.add_argument("--train-anomalies", type=_fraction, default=0.0, metavar="SHARE",
                        help="share of sensors with one more, long anomaly inside the training range (the first "
                        "is stuck); labelled like the others")
    faults.add_argument("--train-range", type=float, default=0.25, metavar="FRACTION",
                        help="the training range: this first part of the run (default 0.25)")
    shape = parser.add_argument_group("messages")
    shape.add_argument("--readings-per-message", type=int, default=1,
                       help="1 = the seed's single object; N = JSON arrays of up to N readings of one device")
    shape.add_argument("--partitions", type=int, default=4, help="recording partitions (default 4)")
    shape.add_argument("--no-partition-key", action="store_true",
                       help="send without partition key (round-robin) instead of keying by device")
    hub = parser.add_argument_group("Event Hubs")
    hub.add_argument("--connection-string", help="default: env SENSORFLOW_EVENTHUB_CONNECTION_STRING")
    hub.add_argument("--namespace", help="fully qualified namespace, signs in with DefaultAzureCredential")
    hub.add_argument("--eventhub", help="event hub name (env SENSORFLOW_EVENTHUB_NAME)")
    hub.add_argument("--pace", choices=["realtime", "fast"], help="eventhubs: send in simulated time or at once")
    hub.add_argument("--max-batch-bytes", type=int, default=1_000_000, help="batch size budget (default 1000000)")
    parser.set_defaults(func=run)


def _duration(text: str, option: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def build_config(args: argparse.Namespace, now_ns: int) -> SimulatorConfig:
    """The `SimulatorConfig` the options describe; UsageError for bad combinations."""
    fleet_profile = args.profile == "fleet"
    if args.rate is not None and not fleet_profile:
        raise UsageError("--rate needs --profile fleet (the seed profile sends one reading every --interval seconds)")
    if args.interval is not None and fleet_profile:
        raise UsageError("--interval is for --profile seed; use --rate with --profile fleet")
    rate = args.rate if args.rate is not None else 1.0
    if fleet_profile:
        interval_s = 1.0 / rate if rate > 0 else 0.0
    else:
        interval_s = args.interval if args.interval is not None else 2.0
    if interval_s <= 0:
        raise UsageError("--rate and --interval must be > 0")
    kinds = tuple(k.strip() for k in args.anomaly_kinds.split(",") if k.strip())
    return SimulatorConfig(
        timing=TimingSpec(
            start_ns=parse_start(args.start, now_ns),
            duration_ns=_duration(args.duration, "--duration"),
            interval_ns=max(100, round(interval_s * 1e7) * 100),
            sampling="every_sensor" if fleet_profile else "random_sensor",
            jitter=args.jitter,
        ),
        fleet=FleetSpec(
            devices=args.devices if args.devices is not None else (100 if fleet_profile else 3),
            tags=args.tags if args.tags is not None else (10 if fleet_profile else 5),
            ids=args.ids,
        ),
        signal=SignalSpec(
            args.signal or ("realistic" if fleet_profile else "uniform"),
            period_ns=_duration(args.period or "1d", "--period"),
        ),
        anomalies=AnomalySpec(
            rate_per_sensor_hour=args.anomaly_rate, kinds=kinds, window_ns=_duration(args.window, "--window"),
            train_anomalies=args.train_anomalies, train_range=args.train_range,
        ),
        delivery=DeliverySpec(
            out_of_order_fraction=args.out_of_order,
            max_delay_ns=_duration(args.max_delay, "--max-delay"),
            duplicate_fraction=args.duplicates,
            malformed_fraction=args.malformed,
        ),
        messages=MessageSpec(
            readings_per_message=args.readings_per_message,
            partition_by_device=not args.no_partition_key,
            partitions=args.partitions,
        ),
        seed=args.seed,
    )


def _check_outputs(args: argparse.Namespace) -> None:
    if (args.out is None) == (args.to is None):
        raise UsageError("give either --out DIR (a recording) or --to eventhubs")
    if args.to == "eventhubs":
        for option, value in (("--format", args.format), ("--capture-window", args.capture_window),
                              ("--force", args.force or None)):
            if value is not None:
                raise UsageError(f"{option} is for recordings (--out), not --to eventhubs")
    else:
        if args.pace is not None:
            raise UsageError("--pace is for --to eventhubs; recordings are always written as fast as possible")
        hub_options = (args.connection_string, args.namespace, args.eventhub)
        if any(v is not None for v in hub_options):
            raise UsageError("--connection-string/--namespace/--eventhub need --to eventhubs")
        if args.capture_window is not None and args.format != "avro":
            raise UsageError("--capture-window needs --format avro")
    if args.connection_string is not None and args.namespace is not None:
        raise UsageError("give --connection-string or --namespace, not both")


def _fail(message: str) -> None:
    print(f"sensorflow simulate: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run `simulate` with parsed options; return the exit code."""
    from sensorflow.simulator.eventhubs import EventHubsUnavailable, MissingDependency

    try:
        _check_outputs(args)
        config = build_config(args, time.time_ns())
    except ValueError as error:  # UsageError and the config's own checks
        _fail(str(error))
        return 2
    raise_on_sigterm()  # SIGTERM stops it as Ctrl-C does
    try:
        if args.to == "eventhubs":
            figures = _send(args, config)
        else:
            figures = _record(args, config)
    except KeyboardInterrupt as stop:
        where = (f"the recording in {args.out} is incomplete (marked by its {INCOMPLETE} file; `sensorflow run` "
                 "refuses it unless given --allow-incomplete); write it again with --force") if args.to != "eventhubs" \
            else "messages sent so far stay in the Event Hub"
        print(f"sensorflow simulate: stopped by {stopped_by(stop)}: {where}", file=sys.stderr)
        return exit_status(stop)
    except (ValueError, FileExistsError, NotADirectoryError, MissingDependency) as error:
        _fail(str(error))
        return 2
    except (OSError, EventHubsUnavailable) as error:
        _fail(f"{type(error).__name__}: {error}")
        return 1
    span = event_span(config)
    if span:
        print(f"sensorflow simulate: event time {span['first_event']} .. {span['last_event']} "
              f"(first and last of {config.timing.steps:,} steps, one every {config.timing.interval_ns / NS_PER_S:g} s); "
              f"continue with --start {span['next_start']}", file=sys.stderr)
    print(json.dumps({**figures, **span}))
    return 1 if figures.get("messages_failed") else 0


def event_span(config: SimulatorConfig) -> dict[str, str]:
    """The event time a run covers, as texts: its first and last step (``TS`` as the recording writes it;
    a reading may sit up to ``jitter`` of a step later) and ``next_start``, the ``--start`` of the run
    that continues it; {} when the run has no step."""
    timing = config.timing
    if timing.steps == 0:
        return {}
    end = timing.start_ns + timing.steps * timing.interval_ns
    next_start = format_ts(end) if end % NS_PER_S else format_ts(end)[:19] + "Z"  # whole seconds read best
    return {
        "first_event": format_ts(timing.start_ns),
        "last_event": format_ts(end - timing.interval_ns),
        "next_start": next_start,
    }


def _record(args: argparse.Namespace, config: SimulatorConfig) -> dict[str, object]:
    from sensorflow.simulator.progress import PhaseProgress

    progress = PhaseProgress()  # phase by phase on stderr: a bar on a terminal, a line every 5 s otherwise
    if args.format == "avro":
        from sensorflow.simulator.capture import write_capture_recording

        window_s = _duration(args.capture_window or "5m", "--capture-window") // 1_000_000_000
        summary = write_capture_recording(args.out, config, window_s=window_s, overwrite=args.force, progress=progress)
    else:
        from sensorflow.simulator.recording import write_jsonl_recording

        summary = write_jsonl_recording(args.out, config, overwrite=args.force, progress=progress)
    print(
        f"wrote {summary.messages:,} messages ({summary.readings:,} readings, {summary.malformed:,} malformed, "
        f"{summary.labels:,} labels) to {summary.directory} in {summary.seconds:.1f} s",
        file=sys.stderr,
    )
    return summary.to_json()


def _send(args: argparse.Namespace, config: SimulatorConfig) -> dict[str, object]:
    from pydantic import SecretStr

    from sensorflow.simulator.batching import RetryPolicy
    from sensorflow.simulator.eventhubs import EventHubsSender, open_producer
    from sensorflow.simulator.settings import EventHubSettings
    from sensorflow.simulator.stream import Simulation

    overrides: dict[str, object] = {}
    if args.connection_string is not None:
        overrides["connection_string"] = SecretStr(args.connection_string)
    if args.namespace is not None:
        overrides["namespace"] = args.namespace
    if args.eventhub is not None:
        overrides["name"] = args.eventhub
    target = EventHubSettings(**overrides).target()
    producer = open_producer(target)
    sender = EventHubsSender(
        producer,
        partition_by_key=config.messages.partition_by_device,
        max_batch_bytes=args.max_batch_bytes,
        retry=RetryPolicy(),
        pace=(args.pace or "realtime") == "realtime",
    )
    try:
        figures = sender.send_simulation(Simulation.prepare(config))
    finally:
        producer.close()
    print(
        f"sent {figures['messages_sent']:,} messages ({figures['readings_sent']:,} readings), "
        f"failed {figures['messages_failed']:,}, {figures['readings_per_s']:,.0f} readings/s",
        file=sys.stderr,
    )
    return figures

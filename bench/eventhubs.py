"""Live-path speed: the raw azure-eventhub receive rate vs our dataflow end to end, on the same data.

For each shape (1 and 50 readings per message, and 50 with one message in 1,000 cut short: a dead
letter) a fresh test broker (tests/support, in its own
process so it does not share our interpreter lock) holds the same events; then, ``--rounds``
times in turn:

* raw: one ``EventHubConsumerClient.receive_batch`` thread per partition counts events, nothing
  else, until every event has arrived (the SDK's public receive loop, as an application would
  use it);
* ours: ``sensorflow run --source eventhubs`` (``run_live`` in this process, its receiver and
  store writer processes) from the call until every reading is decoded and every window (closed
  by a sentinel reading an hour later) is committed to SQLite: once every reading is decoded the
  run is stopped as SIGTERM would, and it returns after its last commit.

Both clocks start before any connection is made. Start-up, paid once per run, is also printed
on its own: seconds to raw's first event received and to ours' first reading decoded (the
receiver process, its imports and connections), and the ratio from there to the end. Ours runs
as ``sensorflow run`` does by default, without a recovery directory or checkpoints;
``--recovery`` gives it a Bytewax recovery directory, so every 1 s epoch waits for the store's
commit and Bytewax writes its snapshots (the price of resuming). ``--stages`` instead times, on one core and
the same messages, each step of our dataflow alone (decode, lateness + windows, the SQLite
upserts of the windows they close): where ours spends its CPU. The machine is shared, so wall rates move
from run to run: each figure is the median of the rounds, and each line also gives the CPU
seconds spent per message (raw: its process; ours: the dataflow's process and its receiver and
writer processes), which load moves much less. Prints a line per shape and one JSON line at the
end. Usage:
    .venv/bin/python bench/eventhubs.py [--messages 60000] [--sensors 1000] [--partitions 4] [--rounds 3]
        [--shapes x1,x50,x50_malformed] [--recovery] [--stages]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading

import numpy as np
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START_S = 1_767_225_600  # 2026-01-01T00:00:00Z
# (name in the JSON line, readings per message, one malformed message in this many; 0: none)
SHAPES = (("x1", 1, 0), ("x50", 50, 0), ("x50_malformed", 50, 1000))


def _bad(m, malformed_every: int):
    """Message ``m`` (an int or an array of them) is malformed (a truncated body) in the shape with one bad
    message in ``malformed_every``."""
    return malformed_every > 0 and m % malformed_every == malformed_every // 2


def _bodies(partition: int, partitions: int, messages: int, per_message: int, sensors: int,
            malformed_every: int = 0) -> list[bytes]:
    """Seed-format messages of this partition: every sensor reads once per second, in order; with
    ``malformed_every``, one message in that many is cut short (invalid JSON: a dead letter)."""
    import orjson

    out = []
    for m in range(partition, messages, partitions):
        first = m * per_message
        items = []
        for k in range(first, first + per_message):
            second, sensor = divmod(k, sensors)
            items.append({"TS": f"2026-01-01T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{sensor % 1000:03d}0000Z",
                          "Device": sensor // 10, "Tag": sensor % 10, "Value": float(k % 97)})
        body = orjson.dumps(items[0] if per_message == 1 else items)
        out.append(body[: len(body) // 2] if _bad(m, malformed_every) else body)
    return out


def _valid(messages: int, per_message: int, malformed_every: int) -> np.ndarray:
    """Indices k of the readings in well-formed messages (reading k is in message k // per_message)."""
    k = np.arange(messages * per_message, dtype=np.int64)
    return k[~_bad(k // per_message, malformed_every)] if malformed_every > 0 else k


def _windows(valid: np.ndarray, sensors: int) -> int:
    """Windows of 5 s the readings ``valid`` fall in: reading k is sensor k % sensors at second k // sensors."""
    return int(np.unique((valid % sensors) * (1 << 40) + (valid // sensors) // 5).shape[0])


def _serve_broker(partitions: int, messages: int, per_message: int, sensors: int, malformed_every: int) -> None:
    """The broker process: fill every partition, print the connection string, serve until stdin closes."""
    import orjson

    from tests.support.eventhubs_broker import EventHubsBroker

    broker = EventHubsBroker(partitions=partitions).start()
    last_second = (messages * per_message) // sensors + 1
    sentinel = orjson.dumps({"TS": f"2026-01-01T{(last_second + 3600) // 3600:02d}:00:00Z", "Device": "sentinel", "Tag": 0, "Value": 0})
    for p in range(partitions):
        bodies = _bodies(p, partitions, messages, per_message, sensors, malformed_every)
        for i in range(0, len(bodies), 5000):
            broker.publish(str(p), bodies[i : i + 5000])
        broker.publish(str(p), [sentinel])
    print(broker.connection_string, flush=True)
    sys.stdin.read()
    broker.stop()


class _Broker:
    def __init__(self, args: argparse.Namespace, per_message: int, malformed_every: int):
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--serve-broker", str(args.partitions), str(args.messages), str(per_message),
             str(args.sensors), str(malformed_every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.connection_string = self._process.stdout.readline().strip()
        if not self.connection_string:
            raise RuntimeError("the broker process did not start")

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(30)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _raw(connection_string: str, partitions: int, total: int) -> tuple[float, float]:
    """Seconds for the bare SDK to receive ``total`` events over all partitions; seconds to its first event."""
    from azure.eventhub import EventHubConsumerClient

    received = [0]
    first = [None]
    lock = threading.Lock()
    done = threading.Event()
    clients = []

    def receive(pid: str) -> None:
        client = EventHubConsumerClient.from_connection_string(connection_string, consumer_group="$default")
        clients.append(client)

        def on_batch(context, events) -> None:
            with lock:
                if first[0] is None and events:
                    first[0] = time.monotonic()
                received[0] += len(events)
                if received[0] >= total:
                    done.set()

        client.receive_batch(on_batch, partition_id=pid, starting_position="-1", max_batch_size=500,
                             max_wait_time=0.2, prefetch=1000)

    started = time.monotonic()
    threads = [threading.Thread(target=receive, args=(str(p),), daemon=True) for p in range(partitions)]
    for t in threads:
        t.start()
    done.wait(600)
    seconds = time.monotonic() - started
    for client in clients:
        client.close()
    return seconds, first[0] - started


def _ours(connection_string: str, readings: int, windows: int, dead_letters: int = 0,
          recovery: bool = False) -> tuple[float, float]:
    """Seconds for our dataflow until every reading is decoded and every window and dead letter committed;
    seconds to the first reading decoded (start-up: processes, imports, connections). ``recovery``: with a
    Bytewax recovery directory (each epoch then waits for the store's commit, and Bytewax writes its snapshots)."""
    from sensorflow.assembly import run_live
    from sensorflow.settings import RunSettings, load_settings
    from sensorflow.windowing.stats import RunStats

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(RunSettings, {
            "source": "eventhubs", "eventhub_connection_string": connection_string,
            "store": f"sqlite:///{tmp}/bench.db", "progress_seconds": 0, "snapshot_interval_seconds": 1,
            **({"recovery_dir": f"{tmp}/recovery"} if recovery else {}),
        })
        stats, stop = RunStats(), threading.Event()
        runner = threading.Thread(target=run_live, args=(settings,), kwargs={"stats": stats, "stop_event": stop, "progress": sys.stderr}, daemon=True)
        started = time.monotonic()
        runner.start()
        first = None
        while stats.readings < readings and runner.is_alive() and time.monotonic() - started < 900:
            if first is None and stats.readings:
                first = time.monotonic() - started
            time.sleep(0.005)
        stop.set()  # a graceful stop: the flow finishes what it read, commits, and returns
        while (stats.windows_written < windows or stats.dead_letters_written < dead_letters) and runner.is_alive():
            time.sleep(0.005)
        seconds = time.monotonic() - started
        runner.join(60)  # the receiver process stops after this
        if stats.windows_written != windows or stats.dead_letters_written != dead_letters:
            raise RuntimeError(f"ours committed {stats.windows_written} windows and {stats.dead_letters_written} dead "
                               f"letters, expected {windows} and {dead_letters}")
        return seconds, first if first is not None else seconds


def _stages(messages: int, per_message: int, sensors: int) -> dict[str, float]:
    """CPU us per message of each dataflow step alone, on one partition's worth of the bench's messages."""
    import pyarrow as pa

    from sensorflow.ingest.decode import DecodeConfig, decode_batch
    from sensorflow.ingest.eventhubs.received import Received
    from sensorflow.ingest.eventhubs.source import to_message_batch
    from sensorflow.records.windows import WindowBatch
    from sensorflow.store import open_store
    from sensorflow.windowing.operators import LatenessLogic, WindowLogic
    from sensorflow.windowing.tumbling import WindowAggregator

    bodies = _bodies(0, 1, messages, per_message, sensors)
    batches = []
    for i in range(0, len(bodies), 500):  # the receiver's batch size
        chunk = bodies[i : i + 500]
        batches.append(to_message_batch("0", Received.of(chunk, range(i, i + len(chunk)), [0] * len(chunk), [b"0"] * len(chunk))))
    decode_batch(batches[0], DecodeConfig())  # lazy imports and first-call set-up are not per message
    started = time.process_time()
    decoded = [decode_batch(batch, DecodeConfig()) for batch in batches]
    decode_s = time.process_time() - started
    lateness, window = LatenessLogic(5 * 10**9, 1, None), WindowLogic(WindowAggregator(5 * 10**9, ("0",), None))
    closed: list[pa.Table] = []
    started = time.process_time()
    for item in decoded:
        routed, _ = lateness.on_batch([item.readings])
        out, _ = window.on_batch([message for _, message in routed])
        closed += [w.table for w in out if isinstance(w, WindowBatch)]
    window_s = time.process_time() - started
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{tmp}/stages.db") as store:
        store.create_schema()
        table = pa.concat_tables(closed)
        started = time.process_time()
        for i in range(0, table.num_rows, 65_536):  # the dataflow's write batches
            store.upsert_windows(table.slice(i, 65_536))
        store_s = time.process_time() - started
    us = 1e6 / len(bodies)
    return {"decode": round(decode_s * us, 1), "lateness_and_windows": round(window_s * us, 1),
            "store_upserts": round(store_s * us, 1), "windows_per_message": round(table.num_rows / len(bodies), 2)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-broker":
        _serve_broker(*map(int, sys.argv[2:7]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60_000, help="messages per shape (default 60000)")
    parser.add_argument("--sensors", type=int, default=1000, help="sensors, each reading once per second (default 1000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="raw and ours measured this many times in turn (default 3)")
    parser.add_argument("--stages", action="store_true", help="time each dataflow step alone instead (no broker)")
    parser.add_argument("--shapes", default=",".join(name for name, _, _ in SHAPES),
                        help="comma-separated shapes to run (default: all of " + ", ".join(name for name, _, _ in SHAPES) + ")")
    parser.add_argument("--recovery", action="store_true",
                        help="ours with a Bytewax recovery directory: every 1 s epoch waits for the store's commit")
    args = parser.parse_args()
    if args.stages:
        stages = {f"x{n}": _stages(args.messages // 5, n, args.sensors) for n in (1, 50)}
        for name, figures in stages.items():
            print(f"{name[1:]:>2} reading(s)/message, CPU us per message: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        print(json.dumps({"bench": "eventhubs-stages", **stages}))
        return 0
    results = {}
    chosen = args.shapes.split(",")
    unknown = set(chosen) - {name for name, _, _ in SHAPES}
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    for name, per_message, malformed_every in SHAPES:
        if name not in chosen:
            continue
        valid = _valid(args.messages, per_message, malformed_every)
        readings = int(valid.shape[0])
        windows = _windows(valid, args.sensors)
        total = args.messages + args.partitions  # + one sentinel per partition
        broker = _Broker(args, per_message, malformed_every)
        raw_s, raw_cpu, ours_s, ours_cpu, raw_first, ours_first = [], [], [], [], [], []
        try:
            for _ in range(args.rounds):
                cpu = _cpu_seconds()
                seconds, first = _raw(broker.connection_string, args.partitions, total)
                raw_s.append(seconds)
                raw_first.append(first)
                raw_cpu.append(_cpu_seconds() - cpu)
                cpu = _cpu_seconds()
                seconds, first = _ours(broker.connection_string, readings + args.partitions, windows,
                                       args.messages - readings // per_message, args.recovery)
                ours_s.append(seconds)
                ours_first.append(first)
                ours_cpu.append(_cpu_seconds() - cpu)
        finally:
            broker.close()
        raw, ours = statistics.median(raw_s), statistics.median(ours_s)
        shape = {
            "readings_per_message": per_message,
            "messages": args.messages,
            "malformed_messages": args.messages - readings // per_message,
            "readings": readings,
            "windows": windows,
            "rounds": args.rounds,
            "raw_messages_per_s": round(total / raw),
            "raw_readings_per_s": round(readings / raw),
            "raw_cpu_us_per_message": round(statistics.median(raw_cpu) / total * 1e6, 1),
            "ours_readings_per_s": round(readings / ours),
            "ours_cpu_us_per_message": round(statistics.median(ours_cpu) / total * 1e6, 1),
            "ours_vs_raw": round(raw / ours, 3),
            "raw_seconds": [round(x, 2) for x in raw_s],
            "ours_seconds": [round(x, 2) for x in ours_s],
            # start-up, paid once per run: to the first event received (raw), the first reading decoded (ours)
            "raw_first_event_seconds": round(statistics.median(raw_first), 2),
            "ours_first_reading_seconds": round(statistics.median(ours_first), 2),
            # the rest: from then until the end, medians of the rounds
            "ours_vs_raw_after_start": round(statistics.median(r - f for r, f in zip(raw_s, raw_first))
                                             / statistics.median(o - f for o, f in zip(ours_s, ours_first)), 3),
        }
        results[name] = shape
        bad = f", {shape['malformed_messages']} malformed" if malformed_every else ""
        print(f"{per_message:>2} reading(s)/message{bad}: raw SDK {shape['raw_messages_per_s']:,} msg/s = "
              f"{shape['raw_readings_per_s']:,} readings/s ({shape['raw_cpu_us_per_message']} us CPU/msg); "
              f"ours end to end {shape['ours_readings_per_s']:,} readings/s ({shape['ours_cpu_us_per_message']} us CPU/msg), "
              f"{shape['ours_vs_raw']:.0%} of raw (median of {args.rounds}; {windows:,} windows each)", flush=True)
        print(f"   start-up: raw's first event after {shape['raw_first_event_seconds']} s, ours' first reading decoded "
              f"after {shape['ours_first_reading_seconds']} s; from there to the end ours is "
              f"{shape['ours_vs_raw_after_start']:.0%} of raw", flush=True)
    print(json.dumps({"bench": "eventhubs", "partitions": args.partitions, "sensors": args.sensors, "recovery": args.recovery,
                      **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rust panic reports are kept off stderr below DEBUG; every other line passes, in order."""

import os
import subprocess
import sys

from sensorflow.windowing.rust_panics import is_panic_line

REPORT = [
    b"thread '<unnamed>' panicked at src/outputs.rs:332:45:\n",
    b"Box<dyn Any>\n",
    b"stack backtrace:\n",
    b"   0: std::panicking::begin_panic\n",
    b"             at ./csu/../csu/libc-start.c:360:3\n",
    b"note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n",
]


def test_a_report_is_recognised_line_by_line_and_ordinary_lines_are_not():
    in_report = False
    for line in REPORT:
        in_report = is_panic_line(line, in_report)
        assert in_report, line
    assert not is_panic_line(b"2026-01-01 00:00:00,000 WARNING sensorflow.store: retry 1\n", True)
    assert not is_panic_line(b"   0: a log line that merely looks like a frame\n", False)
    assert not is_panic_line(b"sensorflow run: StoreError: upsert windows failed\n", True)


def test_a_failing_flow_prints_its_lines_but_not_the_panic(tmp_path):
    script = tmp_path / "flow.py"
    script.write_text(
        "import sys\n"
        "import bytewax.operators as op\n"
        "from bytewax.dataflow import Dataflow\n"
        "from bytewax.run import cli_main\n"
        "from bytewax.testing import TestingSource\n"
        "from bytewax.outputs import DynamicSink, StatelessSinkPartition\n"
        "from sensorflow.windowing.rust_panics import rust_panics_hidden\n"
        "class Part(StatelessSinkPartition):\n"
        "    def write_batch(self, items):\n"
        "        raise RuntimeError('the store gave up')\n"
        "class Sink(DynamicSink):\n"
        "    def build(self, step_id, worker_index, worker_count):\n"
        "        return Part()\n"
        "flow = Dataflow('f')\n"
        "op.output('out', op.input('in', flow, TestingSource([1, 2])), Sink())\n"
        "with rust_panics_hidden():\n"
        "    print('before', file=sys.stderr, flush=True)\n"
        "    try:\n"
        "        cli_main(flow)\n"
        "    except RuntimeError as e:\n"
        "        print(f'one line: {e.__cause__ or e}', file=sys.stderr)\n"  # a DynamicSink's error is the cause
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120,
                          env={**os.environ, "RUST_BACKTRACE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == ["before", "one line: the store gave up", "after"]


def test_the_line_after_a_header_is_the_panic_message_whatever_it_says():
    """Bytewax's recovery store on a full disk: the message is SQLite's error, not ``Box<dyn Any>``."""
    report = [
        b"thread 'timely:work-0' panicked at src/run.rs:167:13:\n",
        b"called `Result::unwrap()` on an `Err` value: SqliteFailure(Error { code: DiskFull, extended_code: 13 })\n",
        b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
    ]
    in_report = False
    for i, line in enumerate(report):
        in_report = is_panic_line(line, in_report, after_header=i == 1)
        assert in_report, line
    assert not is_panic_line(b"sensorflow run: the dataflow failed\n", in_report, after_header=False)

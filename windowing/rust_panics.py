"""Keeps Bytewax's Rust panic reports off stderr, so a failed flow ends with one readable line.

Bytewax 0.21 turns an exception raised in a step into a Rust panic, unwinds, and re-raises the
Python exception from ``cli_main`` (bytewax/bytewax#318, "Abort on exception without
panicking", is the upstream issue). The panic's report (``thread '...' panicked at
src/outputs.rs:332:45:``, ``Box<dyn Any>``, with ``RUST_BACKTRACE`` set some 35 frames) is
written by Rust's default panic hook straight to file descriptor 2, which Python cannot hook.
:func:`rust_panics_hidden` points descriptor 2 at a pipe for the length of the run and passes
every line on except those reports; the caller prints the Python exception as one line and
shows the reports only at ``--log-level DEBUG`` (by not using this).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

__all__ = ["is_panic_line", "rust_panics_hidden"]

_HEADER = re.compile(rb"^thread '[^']*' panicked at ")
_BODY = re.compile(
    rb"^(Box<dyn Any>|stack backtrace:|\s+\d+: |\s+at |note: (Some details are omitted|run with `RUST_BACKTRACE)"
    rb"|panic in a destructor during cleanup|thread caused non-unwinding panic|\s*$)"
)


def is_panic_line(line: bytes, in_report: bool, after_header: bool = False) -> bool:
    """True if ``line`` belongs to a Rust panic report (``in_report``: the line before did; ``after_header``:
    the line before was the report's first, so this one is the panic's message, whatever it says: ``Box<dyn
    Any>`` for a Python error, ``called `Result::unwrap()` on an `Err` value: ...`` for a full disk)."""
    return bool(_HEADER.match(line)) or after_header or (in_report and bool(_BODY.match(line)))


@contextlib.contextmanager
def rust_panics_hidden() -> Iterator[None]:
    """Inside: Rust panic reports written to stderr are dropped, everything else is passed on."""
    sys.stderr.flush()
    os.environ["RUST_BACKTRACE"] = "0"  # read by Rust at its first panic: no frames to filter
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, saved), name="stderr-filter", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer in this process is gone: the forwarder sees its end
        forwarder.join(5.0)  # a child process that inherited the pipe keeps it open: do not wait for it
        if not forwarder.is_alive():
            os.close(saved)


def _forward(read_end: int, out: int) -> None:
    in_report = after_header = False
    with os.fdopen(read_end, "rb") as pipe:
        try:
            for line in iter(pipe.readline, b""):
                in_report = is_panic_line(line, in_report, after_header)
                after_header = bool(_HEADER.match(line))
                if not in_report:
                    _write_all(out, line)
        except Exception:  # never stop draining: a full pipe would block every write to stderr
            for chunk in iter(lambda: pipe.read1(65536), b""):
                _write_all(out, chunk)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:  # the terminal went away: nothing to tell
            return

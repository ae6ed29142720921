"""A store writer in its own process, so store work runs on another core.

The dataflow hands window tables, and dead-letter tables, over a pipe (Arrow IPC) and carries
on. The writer upserts each table as it arrives into an open transaction and commits
when it holds ``COMMIT_ROWS`` rows, when the transaction is ``COMMIT_AFTER``
old, or when the dataflow asks (a flush frame); then it acknowledges every
table of that transaction. Tables that commit together write the store pages
they touch once, so the writer works while the dataflow reads and still
writes in large transactions. ``drain()`` flushes and waits for every
acknowledgement: the sink calls it from ``snapshot()``, so Bytewax never
records an epoch whose windows are not committed. Rows not yet acknowledged
are bounded (back-pressure). Dead letters ride in the same transactions: the writer owns the
store's one write lock, so the dataflow never waits for it, and they are made durable by the
same barrier as the windows.

A failure in the writer (the store gave up, the writer died) reaches the dataflow as one
exception, a :class:`~sensorflow.store.StoreError` when the store failed (its message names
the SQLSTATE), a :class:`WriterError` otherwise; what was not acknowledged is not committed,
and a rerun from the recovery state writes it again. :meth:`ProcessWriter.abandon` ends the
process without raising, for a flow that is already failing; :meth:`ProcessWriter.finish` ends it
within a bound, committing what it was handed if the store answers in time (a run stopped by a
signal).

The writer process ignores SIGINT and SIGTERM: a terminal's Ctrl-C reaches the whole process group,
and the dataflow's process decides how the run stops (it closes the writer's stdin). It dies with
the dataflow's process (``lifecycle.die_with_parent``, given the dataflow's pid on its command
line, so a parent that died while the writer was starting counts too): a SIGKILLed run leaves no
writer behind.

Its interpreter can start before its store is known (:class:`WriterProcess`, which a
``ProcessWriter`` then takes over): the child imports what it needs and waits for its first
frame, so its start-up overlaps the caller's own. This module imports pyarrow only where it
uses it, so a caller can start that interpreter before importing pyarrow itself.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, BinaryIO, NoReturn, overload

import orjson

if TYPE_CHECKING:  # at run time pyarrow and the store are imported lazily, where they are used
    import pyarrow as pa

    from sensorflow.store import RetryPolicy, WindowWriter

__all__ = ["InlineWriter", "ProcessWriter", "WriterError", "WriterProcess", "own_peak_rss_kb"]

log = logging.getLogger(__name__)


class WriterError(RuntimeError):
    """The writer process failed; the batch it was writing is not committed."""


def _error_reply(error: Exception) -> bytes:
    return orjson.dumps({"error": str(error), "kind": type(error).__name__})


def _to_ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue().to_pybytes()


_LENGTH = struct.Struct("<Q")


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError
    (size,) = _LENGTH.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return payload


class _ReplyReader:
    """The writer's replies, read from its stdout's descriptor: :meth:`poll` takes a reply that has
    arrived without waiting for one that has not. A read cut short (an interrupt) leaves what it
    had read in the buffer, so replies never get out of step."""

    def __init__(self, stream: BinaryIO):
        self._fd = stream.fileno()
        self._buffer = bytearray()

    def read(self) -> bytes:
        """The next reply; waits for it. EOFError if the writer's end closed first."""
        while (frame := self._frame()) is None:
            self._fill()
        return frame

    def poll(self) -> bytes | None:
        """The next reply if it has arrived whole, else None (EOFError as :meth:`read`)."""
        while (frame := self._frame()) is None:
            if not select.select([self._fd], [], [], 0)[0]:
                return None
            self._fill()
        return frame

    def _frame(self) -> bytes | None:
        if len(self._buffer) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(self._buffer)
        end = _LENGTH.size + size
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        return frame

    def _fill(self) -> None:
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            raise EOFError
        self._buffer += chunk


def _pump(requests: BinaryIO, frames: "queue.Queue[bytes | None]") -> None:
    while True:
        try:
            frames.put(_receive(requests))
        except (EOFError, OSError):
            frames.put(None)
            return


_FLUSH = b"F"  # a frame asking to commit now (an Arrow IPC stream is never one byte)
_DEAD_LETTERS = b"D"  # first byte of a dead-letter table's frame (an Arrow IPC stream starts with 0xFF)
COMMIT_ROWS = 196_608
COMMIT_AFTER = 1.0  # seconds a transaction may stay open (how stale a live store may get)


def _writer_main(requests: BinaryIO, replies: BinaryIO) -> int:
    """The child: first frame is the store URL and retry budget (never on the command line), then tables.

    Everything before that frame is start-up that may overlap the caller's (see ``WriterProcess``).
    """
    import pyarrow as pa

    from sensorflow.backoff import Backoff
    from sensorflow.imports import refuse_pandas
    from sensorflow.store import RetryPolicy, open_store

    refuse_pandas()  # the writer never uses it; pyarrow would import it at its first array
    # Windows first close a while after the dataflow starts: meanwhile, do what Arrow would
    # otherwise do lazily in the first write (look for pandas).
    pa.array([0.0])
    try:
        first = _receive(requests)
    except EOFError:  # a WriterProcess closed before any ProcessWriter took it
        return 0
    try:
        opening = orjson.loads(first)
        retry = opening.get("retry")
        policy = None if retry is None else RetryPolicy(retry["budget_seconds"], Backoff(retry["first"], retry["cap"]))
        store: WindowWriter = open_store(opening["store"], policy)
    except Exception as e:  # reported to the parent, which raises
        _send(replies, _error_reply(e))
        return 1
    frames: queue.Queue[bytes | None] = queue.Queue()
    # Drain the pipe at once so the dataflow never blocks writing a frame while we write SQL.
    pump = threading.Thread(target=_pump, args=(requests, frames), name="frames", daemon=True)
    pump.start()
    with store:
        transaction = store.window_transaction()
        tables: list[bytes] = []  # acknowledgement of each table in the open transaction, in order
        opened = 0.0
        while True:
            wait = None if not tables else max(0.0, opened + COMMIT_AFTER - time.monotonic())
            try:
                frame = frames.get(timeout=wait)
            except queue.Empty:
                frame = _FLUSH  # the open transaction is old enough
            if frame is None:  # the dataflow is gone: what it did not see acknowledged is replayed
                transaction.rollback()
                return 0
            try:
                if frame not in (_FLUSH, b""):
                    dead_letters = frame[:1] == _DEAD_LETTERS
                    table = pa.ipc.open_stream(frame[1:] if dead_letters else frame).read_all()
                    if dead_letters:
                        transaction.add_dead_letters(table)
                    else:
                        transaction.add(table)
                    if not tables:
                        opened = time.monotonic()
                    tables.append(orjson.dumps({"dead_letters" if dead_letters else "rows": table.num_rows}))
                committed = bool(tables) and (frame in (_FLUSH, b"") or transaction.rows >= COMMIT_ROWS)
                if committed:
                    transaction.commit()
            except Exception as e:
                _send(replies, _error_reply(e))
                return 1
            if committed:  # one acknowledgement per table, as the dataflow counts them
                for ack in tables:
                    _send(replies, ack)
                tables.clear()
            if frame == b"":
                _send(replies, orjson.dumps({"closed": True, "peak_rss_kb": own_peak_rss_kb()}))
                # The dataflow closes the pipe next: wait for that, so no thread is left
                # reading it while the interpreter shuts down.
                pump.join()
                return 0


def own_peak_rss_kb() -> int | None:
    """This process's own peak RSS (Linux's VmHWM; ``ru_maxrss`` would count the parent's, from before exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class WriterProcess:
    """A writer's interpreter, started before its store is known; a ``ProcessWriter`` takes it over.

    The child imports what it needs, then waits for its store. Start it as early as a run knows
    it will write through a writer process: its start-up then overlaps the caller's instead of
    delaying the first windows. ``close()`` ends it if no ``ProcessWriter`` took it (else a no-op).
    """

    def __init__(self) -> None:
        # A fresh interpreter (not fork: the dataflow runs threads; not multiprocessing's
        # spawn: it would re-import the caller's __main__).
        self._process: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", "sensorflow.windowing.writer", str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def take(self) -> subprocess.Popen:
        """The child, for the ``ProcessWriter`` that takes it over (once)."""
        if self._process is None:
            raise ValueError("this writer process was taken over or closed already")
        process, self._process = self._process, None
        return process

    def close(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        process.stdin.close()  # no first frame: it exits once it has started
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ProcessWriter:
    """Upserts window and dead-letter tables into ``store_url`` from a child process (``process``: one started earlier).

    ``drain`` returns the window rows committed since the last drain (or ``collect``), waiting
    for every commit; ``collect`` the same without waiting (what has been acknowledged);
    ``committed_dead_letters`` the reasons of the dead letters committed since it was last asked.
    """

    def __init__(self, store_url: str, max_pending_rows: int = 2 * COMMIT_ROWS, retry: RetryPolicy | None = None,
                 process: WriterProcess | None = None):
        if max_pending_rows < 1:
            raise ValueError("max_pending_rows must be >= 1")
        self._max_pending_rows = max_pending_rows
        self._pending: list[int] = []  # rows of each table handed over and not yet acknowledged
        self._pending_reasons: list[pa.Array | pa.ChunkedArray | None] = []  # of each: a dead-letter table's reasons
        self._committed_reasons: list[pa.Array | pa.ChunkedArray] = []
        self._pending_rows = 0
        self._flushed = False  # a flush was asked since the last acknowledgement
        self.rows = 0
        self.peak_rss_kb: int | None = None  # the writer process's, known once closed
        self._broken = False  # an interrupt (Ctrl-C, SIGTERM) cut a frame short: the pipes are out of step
        self._process = (process or WriterProcess()).take()
        self._replies = _ReplyReader(self._process.stdout)
        opening: dict = {"store": store_url}
        if retry is not None:
            opening["retry"] = {"budget_seconds": retry.budget_seconds, "first": retry.backoff.first, "cap": retry.backoff.cap}
        _send(self._process.stdin, orjson.dumps(opening))

    def submit(self, table: pa.Table) -> None:
        """Hand window ``table`` over; blocks only while ``max_pending_rows`` rows wait for their commit."""
        self._hand(table, None)

    def submit_dead_letters(self, table: pa.Table) -> None:
        """Hand dead letters (``DEAD_LETTER_SCHEMA``) over, to commit with the windows; blocks as ``submit``."""
        self._hand(table, table["reason"])

    def committed_dead_letters(self) -> list[pa.Array | pa.ChunkedArray]:
        """The reason column of each dead-letter table committed since the last call."""
        committed, self._committed_reasons = self._committed_reasons, []
        return committed

    def _hand(self, table: pa.Table, reasons: pa.Array | pa.ChunkedArray | None) -> None:
        while self._pending and self._pending_rows + table.num_rows > self._max_pending_rows:
            # With COMMIT_ROWS handed over the writer commits by itself: a flush would cut its
            # transaction short, and small commits cost more per row (each writes the index pages
            # it touched). (The count may include acknowledgements not read yet: never fewer rows.)
            if self._pending_rows < COMMIT_ROWS:
                self._flush()
            self._ack()
        self._write(_to_ipc(table) if reasons is None else _DEAD_LETTERS + _to_ipc(table))
        self._pending.append(table.num_rows)
        self._pending_reasons.append(reasons)
        self._pending_rows += table.num_rows
        self._flushed = False

    def drain(self) -> int:
        """Commit every table handed over and wait for it; returns rows committed since the last drain."""
        while self._pending:
            self._flush()
            self._ack()
        rows, self.rows = self.rows, 0
        return rows

    def collect(self) -> int:
        """Rows committed since the last drain or collect, as far as the writer has acknowledged them;
        never waits (the writer commits by itself, at latest ``COMMIT_AFTER`` after a table arrived)."""
        while self._pending and (reply := self._reply(wait=False)) is not None:
            self._acknowledged(reply)
        rows, self.rows = self.rows, 0
        return rows

    @property
    def pending(self) -> int:
        """Tables handed over whose commit is not acknowledged yet."""
        return len(self._pending)

    def close(self) -> None:
        self.drain()
        self._write(b"")
        self.peak_rss_kb = self._reply().get("peak_rss_kb")
        self._process.stdin.close()
        self._process.wait()

    def finish(self, timeout: float) -> None:
        """End the process within ``timeout`` seconds, without raising: what was handed over is committed if
        the store answers in time (a commit it cannot finish dies with the process, and a rerun from the
        recovery state writes those windows again). For a run stopped by a signal."""
        if not self._broken:
            try:
                self._write(b"")  # commit what the open transaction holds, then close
            except BaseException:  # noqa: BLE001 - the writer is gone or the pipe broke: it ends below all the same
                pass
        self.abandon(timeout)

    def abandon(self, timeout: float = 10.0) -> None:
        """End the process without committing what it holds and without raising (the flow is failing)."""
        try:
            self._process.stdin.close()  # the writer rolls its open transaction back and exits
        except OSError:
            pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:  # stuck in the store (a retry wait): its transaction dies with it
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _flush(self) -> None:
        if not self._flushed:
            self._write(_FLUSH)
            self._flushed = True

    def _write(self, frame: bytes) -> None:
        try:
            _send(self._process.stdin, frame)
        except BrokenPipeError as e:
            self._died(e)
        except BaseException:  # an interrupt mid-frame: the writer would read the rest of it as a new frame
            self._broken = True
            raise

    def _died(self, cause: BaseException) -> NoReturn:
        """The process is gone without a word: say how it ended (an error it reported comes first)."""
        reply = None
        try:
            reply = orjson.loads(self._replies.read())
        except (EOFError, OSError, ValueError):
            pass
        if reply is not None and "error" in reply:
            self._raise_reported(reply)
        try:
            code = self._process.wait(5.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            how = f"was killed by signal {-code} ({signal.Signals(-code).name})" if -code in signal.valid_signals() else f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        raise WriterError(f"the store writer process {how}; windows it had not committed are written again by a rerun with the same --recovery-dir") from cause

    def _raise_reported(self, reply: dict) -> NoReturn:
        if reply.get("kind") == "StoreError":
            from sensorflow.store import StoreError

            raise StoreError(reply["error"])
        raise WriterError(f"writing windows failed: {reply.get('kind', 'Error')}: {reply['error']}")

    def _ack(self) -> None:
        self._acknowledged(self._reply())

    def _acknowledged(self, reply: dict) -> None:
        self._pending_rows -= self._pending.pop(0)
        reasons = self._pending_reasons.pop(0)
        if reasons is None:
            self.rows += reply["rows"]
        else:
            self._committed_reasons.append(reasons)
        if not self._pending:
            self._flushed = False

    @overload
    def _reply(self) -> dict: ...

    @overload
    def _reply(self, wait: bool) -> dict | None: ...

    def _reply(self, wait: bool = True) -> dict | None:
        try:
            payload = self._replies.read() if wait else self._replies.poll()
        except EOFError as e:
            self._died(e)
        except BaseException:  # an interrupt mid-reply: take the pipes as out of step (finish() then only ends the writer)
            self._broken = True
            raise
        if payload is None:
            return None
        reply = orjson.loads(payload)
        if "error" in reply:
            self._raise_reported(reply)
        return reply


class InlineWriter:
    """The same interface, writing in the caller's thread: each batch is committed before ``submit`` returns."""

    def __init__(self, store_url: str, retry: RetryPolicy | None = None):
        from sensorflow.store import open_store

        self._store: WindowWriter = open_store(store_url, retry)
        self.rows = 0
        self._committed_reasons: list[pa.Array | pa.ChunkedArray] = []
        self.peak_rss_kb: int | None = None  # no process of its own

    def submit(self, table: pa.Table) -> None:
        self.rows += self._store.upsert_windows(table)

    def submit_dead_letters(self, table: pa.Table) -> None:
        self._store.upsert_dead_letters(table)
        self._committed_reasons.append(table["reason"])

    def committed_dead_letters(self) -> list[pa.Array | pa.ChunkedArray]:
        committed, self._committed_reasons = self._committed_reasons, []
        return committed

    def drain(self) -> int:
        rows, self.rows = self.rows, 0
        return rows

    collect = drain  # every batch was committed before submit returned

    pending = 0

    def close(self) -> None:
        self._store.close()

    def finish(self, timeout: float) -> None:
        self._store.close()  # every batch was committed before submit returned

    def abandon(self) -> None:
        self._store.close()


if __name__ == "__main__":
    from sensorflow.lifecycle import die_with_parent

    die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 else None)  # a SIGKILLed dataflow leaves no writer behind
    # Its life is the dataflow's: a terminal's Ctrl-C or a signal to the process group is the
    # dataflow's to handle (it closes our stdin, and we roll back or commit and exit).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = _writer_main(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout.flush()
    # After an error the frame pump may still be blocked reading the pipe: exit without the
    # interpreter's shutdown, which would wait on that read ("could not acquire lock").
    os._exit(code)

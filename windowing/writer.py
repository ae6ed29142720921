"""A store writer in its own process, so store work runs on another core.

The dataflow hands a window table over a pipe (Arrow IPC) and carries on;
the writer commits it, together with any tables queued behind it, in one
transaction and acknowledges each.
``drain()`` waits for every acknowledgement: the sink calls it from
``snapshot()``, so Bytewax never records an epoch whose windows are not
committed. At most ``depth`` tables are in flight (back-pressure).
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from typing import BinaryIO

import orjson
import pyarrow as pa

__all__ = ["InlineWriter", "ProcessWriter", "WriterError"]

log = logging.getLogger(__name__)


class WriterError(RuntimeError):
    """The writer process failed; the batch it was writing is not committed."""


def _to_ipc(table: pa.Table) -> bytes:
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


def _pump(requests: BinaryIO, frames: "queue.Queue[bytes | None]") -> None:
    while True:
        try:
            frames.put(_receive(requests))
        except (EOFError, OSError):
            frames.put(None)
            return


def _writer_main(requests: BinaryIO, replies: BinaryIO) -> int:
    """The child: first frame is the store URL (never on the command line), then tables."""
    from windowing.store import open_store

    try:
        store = open_store(orjson.loads(_receive(requests))["store"])
    except Exception as e:  # reported to the parent, which raises
        _send(replies, orjson.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    frames: queue.Queue[bytes | None] = queue.Queue()
    # Drain the pipe at once so the dataflow never blocks writing a frame while we write SQL.
    pump = threading.Thread(target=_pump, args=(requests, frames), name="frames", daemon=True)
    pump.start()
    # Windows first close a while after the dataflow starts: meanwhile, do the imports Arrow
    # would otherwise do lazily in the first write (its pandas shim, where pandas is installed).
    pa.array([0.0])
    with store:
        while True:
            try:
                tables, end = _gather(frames)
                if tables:
                    store.upsert_windows(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
            except Exception as e:
                _send(replies, orjson.dumps({"error": f"{type(e).__name__}: {e}"}))
                return 1
            for table in tables:  # one acknowledgement per frame, as the dataflow counts them
                _send(replies, orjson.dumps({"rows": table.num_rows}))
            if end is None:  # the dataflow is gone
                return 0
            if end == b"":
                _send(replies, orjson.dumps({"closed": True, "peak_rss_kb": _peak_rss_kb()}))
                # The dataflow closes the pipe next: wait for that, so no thread is left
                # reading it while the interpreter shuts down.
                pump.join()
                return 0


_GATHER_ROWS = 393_216


def _peak_rss_kb() -> int | None:
    """This process's own peak RSS (Linux's VmHWM; ``ru_maxrss`` would count the parent's, from before exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _gather(frames: "queue.Queue[bytes | None]") -> tuple[list[pa.Table], bytes | None]:
    """The next frame's table and those queued behind it, up to ``_GATHER_ROWS`` rows, for one
    transaction: the further the writer falls behind, the larger its transactions, and a larger
    one writes each store page it touches once for more rows. Returns (tables, end), end being
    ``b""`` (close) or None (pipe gone) when such a marker came, else the sentinel ``b"more"``."""
    tables: list[pa.Table] = []
    rows = 0
    frame = frames.get()
    while frame:
        table = pa.ipc.open_stream(frame).read_all()
        tables.append(table)
        rows += table.num_rows
        if rows >= _GATHER_ROWS:
            return tables, b"more"
        try:
            frame = frames.get_nowait()
        except queue.Empty:
            return tables, b"more"
    return tables, frame


class ProcessWriter:
    """Upserts window tables into ``store_url`` from a child process."""

    def __init__(self, store_url: str, depth: int = 4):
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._depth = depth
        self._pending = 0
        self.rows = 0
        self.peak_rss_kb: int | None = None  # the writer process's, known once closed
        # A fresh interpreter (not fork: the dataflow runs threads; not multiprocessing's
        # spawn: it would re-import the caller's __main__).
        self._process = subprocess.Popen(
            [sys.executable, "-m", "windowing.writer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        _send(self._process.stdin, orjson.dumps({"store": store_url}))

    def submit(self, table: pa.Table) -> None:
        """Queue ``table``; blocks only while ``depth`` tables are already in flight."""
        while self._pending >= self._depth:
            self._ack()
        try:
            _send(self._process.stdin, _to_ipc(table))
        except BrokenPipeError as e:
            raise WriterError(f"the writer process exited (code {self._process.poll()})") from e
        self._pending += 1

    def drain(self) -> int:
        """Wait until every submitted table is committed; returns rows committed since the last drain."""
        while self._pending:
            self._ack()
        rows, self.rows = self.rows, 0
        return rows

    def close(self) -> None:
        self.drain()
        _send(self._process.stdin, b"")
        self.peak_rss_kb = self._reply().get("peak_rss_kb")
        self._process.stdin.close()
        self._process.wait()

    def _ack(self) -> None:
        reply = self._reply()
        self._pending -= 1
        self.rows += reply["rows"]

    def _reply(self) -> dict:
        try:
            reply = orjson.loads(_receive(self._process.stdout))
        except EOFError as e:
            raise WriterError(f"the writer process exited (code {self._process.poll()})") from e
        if "error" in reply:
            raise WriterError(f"writing windows failed: {reply['error']}")
        return reply




class InlineWriter:
    """The same interface, writing in the caller's thread: each batch is committed before ``submit`` returns."""

    def __init__(self, store_url: str):
        from windowing.store import open_store

        self._store = open_store(store_url)
        self.rows = 0

    def submit(self, table: pa.Table) -> None:
        self.rows += self._store.upsert_windows(table)

    def drain(self) -> int:
        rows, self.rows = self.rows, 0
        return rows

    def close(self) -> None:
        self._store.close()


if __name__ == "__main__":
    code = _writer_main(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout.flush()
    # After an error the frame pump may still be blocked reading the pipe: exit without the
    # interpreter's shutdown, which would wait on that read ("could not acquire lock").
    os._exit(code)

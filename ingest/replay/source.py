"""A directory of recordings as a Bytewax partitioned source: one partition per recorded partition."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.ingest.replay.jsonl import JsonlReader
from sensorflow.records.readings import MessageBatch

if TYPE_CHECKING:  # imported where a Capture recording is read
    from sensorflow.ingest.replay.avro import AvroReader

__all__ = ["ReadMeter", "ReplaySource", "discover_partitions", "RecordingError"]

log = logging.getLogger(__name__)


class RecordingError(ValueError):
    """The path holds no recording we can replay."""


def _partition_id(path: Path) -> str:
    stem = path.stem
    return stem[len("partition-") :] if stem.startswith("partition-") else stem


def discover_partitions(path: Path) -> dict[str, list[Path]]:
    """Partition id -> its files: ``*.jsonl`` files (one each) or per-partition directories of ``.avro``."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"recording not found: {path}")
    if path.is_file():
        if path.suffix not in (".jsonl", ".avro"):
            raise RecordingError(f"not a recording file (expected .jsonl or .avro): {path}")
        return {_partition_id(path): [path]}
    jsonl = sorted(path.glob("*.jsonl"))
    avro_dirs = sorted(d for d in path.iterdir() if d.is_dir() and any(d.rglob("*.avro")))
    if jsonl and avro_dirs:
        raise RecordingError(f"{path} mixes .jsonl files and Avro directories; replay one kind at a time")
    parts: dict[str, list[Path]] = {}
    for file in jsonl:
        pid = _partition_id(file)
        if pid in parts:
            raise RecordingError(f"two files map to partition {pid!r} in {path}")
        parts[pid] = [file]
    for directory in avro_dirs:
        parts[directory.name] = sorted(directory.rglob("*.avro"))
    if not parts:
        raise RecordingError(
            f"no recording in {path}: expected *.jsonl files or one directory of .avro files per partition"
        )
    return parts


class ReadMeter:
    """How many bytes of the recording this process's partitions have read, of how many: a replay's
    percent done and ETA. Thread-safe (each Bytewax worker reads its own partitions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._read: dict[str, int] = {}

    def add_partition(self, partition: str, size: int, read: int) -> None:
        """This process reads ``partition`` of ``size`` bytes, ``read`` of them already (a resumed run)."""
        with self._lock:
            self._sizes[partition] = size
            self._read[partition] = read

    def note_read(self, partition: str, read: int) -> None:
        with self._lock:
            self._read[partition] = read

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    @property
    def bytes_read(self) -> int:
        with self._lock:
            return sum(self._read.values())


class ReplaySource(FixedPartitionedSource[MessageBatch, tuple]):
    """Replays recorded partitions; each item is one :class:`MessageBatch`.

    ``speed=None`` replays as fast as possible; ``speed=N`` paces messages at
    N x real time by the event time of the readings ``decode`` accepts (the
    flow's own decode configuration: a reading decoding will refuse, such as
    one far in the future, never holds a replay back). The snapshot of a
    partition is the position after the last emitted batch.
    """

    def __init__(
        self, path: Path, block_bytes: int = 1 << 20, speed: float | None = None, decode: DecodeConfig = DecodeConfig()
    ):
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        self.path = Path(path)
        self.partitions = discover_partitions(self.path)
        self.block_bytes = block_bytes
        self.speed = speed
        self.decode = decode
        self.meter = ReadMeter()

    def list_parts(self) -> list[str]:
        return list(self.partitions)

    def build_part(self, step_id: str, for_part: str, resume_state: tuple | None) -> "_ReplayPartition":
        files = self.partitions[for_part]
        if files[0].suffix == ".avro":
            from sensorflow.ingest.replay.avro import AvroReader  # fastavro: only for Capture recordings

            reader = AvroReader(files, for_part, resume_state or (0, 0))
        else:
            reader = JsonlReader(files[0], for_part, resume_state or (0, 0), self.block_bytes, self.decode.max_message_bytes)
        if resume_state:
            log.info("partition %s resumes at %s", for_part, resume_state)
        self.meter.add_partition(for_part, sum(f.stat().st_size for f in files), reader.bytes_read)
        return _ReplayPartition(reader, _Pacer(self.speed, self.decode) if self.speed else None, self.meter)


class _ReplayPartition(StatefulSourcePartition[MessageBatch, tuple]):
    def __init__(self, reader: JsonlReader | AvroReader, pacer: _Pacer | None, meter: ReadMeter):
        self._reader = reader
        self._meter = meter
        self._committed = reader.position
        self._done = False
        self._pacer = pacer
        self._pending: MessageBatch | None = None

    def next_batch(self) -> list[MessageBatch]:
        if self._done:
            raise StopIteration
        if self._pacer is None:
            batch = self._reader.read()
        else:
            if self._pending is None:
                self._pending = self._reader.read(self._pacer.chunk)
            if not self._pacer.due(self._pending):
                return []
            batch, self._pending = self._pending, None
        self._committed = self._reader.position
        self._done = batch.eof
        self._meter.note_read(self._reader.partition, self._reader.bytes_read)
        return [batch]

    def next_awake(self) -> datetime | None:
        if self._pacer is None or self._pending is None:
            return None
        return self._pacer.awake

    def snapshot(self) -> tuple:
        return self._committed

    def close(self) -> None:
        self._reader.close()


class _Pacer:
    """Holds batches back until their last reading is due at ``speed`` x real time.

    Event times are what decoding makes of the batch with the flow's :class:`DecodeConfig`: the
    same time source, and the same readings refused (``future``, ``out_of_range``, unparsable),
    so one absurd timestamp can neither stall a replay nor race it. The origin is the first
    accepted reading and the wall clock when it was seen; every later batch is due by that one
    origin, so time spent elsewhere in the flow is caught up, not added.
    """

    def __init__(self, speed: float, decode: DecodeConfig):
        self.speed = speed
        self.decode = decode
        self.chunk = 1
        self.awake: datetime | None = None
        self._origin: tuple[float, int] | None = None  # (monotonic s, event ns)
        self._judged: tuple[MessageBatch, np.ndarray] | None = None

    def due(self, batch: MessageBatch) -> bool:
        times = self._event_times(batch)
        if len(times) == 0:
            return True
        if self._origin is None:
            self._origin = (time.monotonic(), int(times.min()))
        wall, event = self._origin
        due_at = wall + (int(times.max()) - event) / 1e9 / self.speed
        wait = due_at - time.monotonic()
        span = (int(times.max()) - int(times.min())) / 1e9 / self.speed
        self.chunk = min(self.chunk * 2, 4096) if span < 0.05 else max(self.chunk // 2, 1) if span > 0.2 else self.chunk
        if wait > 0:
            self.awake = datetime.now(timezone.utc) + timedelta(seconds=wait)
            return False
        return True

    def _event_times(self, batch: MessageBatch) -> np.ndarray:
        """The event times of the readings decoding accepts in ``batch`` (judged once per batch)."""
        if self._judged is None or self._judged[0] is not batch:
            readings = decode_batch(batch, self.decode).readings.table
            self._judged = (batch, readings.column("ts").to_numpy())
        return self._judged[1]

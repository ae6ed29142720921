"""The dataflow, top to bottom: read -> decode -> lateness -> window -> write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource

from sensorflow.ingest.decode import DecodeConfig, Decoded, decode_batch
from sensorflow.records.dead_letters import DeadLetterBatch
from sensorflow.records.readings import MessageBatch, ReadingBatch
from sensorflow.records.windows import WindowBatch
from sensorflow.windowing.operators import LatenessLogic, LatenessSnapshot, WindowLogic, WriteBatchLogic, WriteBatchSnapshot
from sensorflow.windowing.resume.board import ResumeBoard
from sensorflow.windowing.sink import WindowSink
from sensorflow.windowing.state import SNAPSHOT_VERSION
from sensorflow.windowing.stats import RunStats
from sensorflow.windowing.tumbling import WindowAggregator, WindowSnapshot

__all__ = ["FlowConfig", "FlowOptions", "build_flow"]


@dataclass(frozen=True)
class FlowConfig:
    """What the dataflow needs to know; built from the settings at the edge."""

    partitions: tuple[str, ...]
    window_ns: int = 5_000_000_000
    lateness_ns: int = 5_000_000_000
    shards: int = 1
    idle_timeout_ns: int | None = None
    decode: DecodeConfig = DecodeConfig()
    write_rows: int = 196_608  # most closed windows gathered per batch for the store writer
    write_min_rows: int = 16_384  # fewest, unless the input ends or write_wait passes
    write_windows: int = 4  # window ends a batch spans before it goes (see WriteBatchLogic)
    write_wait: timedelta = timedelta(seconds=1)  # wall time a smaller batch may wait

    def __post_init__(self) -> None:
        if not self.partitions:
            raise ValueError("partitions must not be empty")
        if self.window_ns <= 0 or self.lateness_ns < 0:
            raise ValueError("window must be > 0 and lateness >= 0")
        if self.shards < 1 or self.write_rows < 1 or self.write_windows < 1:
            raise ValueError("shards, write_rows and write_windows must be >= 1")
        if not 1 <= self.write_min_rows <= self.write_rows:
            raise ValueError("write_min_rows must be between 1 and write_rows")


@dataclass(frozen=True)
class FlowOptions:
    """What the settings fix of a :class:`FlowConfig` before the input's partitions are known.

    ``shards`` None means one window shard per worker of the whole cluster.
    """

    window_ns: int = 5_000_000_000
    lateness_ns: int = 5_000_000_000
    shards: int | None = None
    idle_timeout_ns: int | None = None
    decode: DecodeConfig = DecodeConfig()

    def config(self, partitions: tuple[str, ...], workers: int) -> FlowConfig:
        """The flow's configuration for these input partitions and ``workers`` in the whole cluster."""
        return FlowConfig(
            partitions=tuple(partitions),
            window_ns=self.window_ns,
            lateness_ns=self.lateness_ns,
            shards=self.shards or workers,
            idle_timeout_ns=self.idle_timeout_ns,
            decode=self.decode,
        )


def build_flow(
    source: FixedPartitionedSource,
    config: FlowConfig,
    window_sink: WindowSink,
    stats: RunStats,
    board: ResumeBoard | None = None,
) -> Dataflow:
    """One dataflow; no I/O happens until it runs.

    ``board`` (live runs with checkpoints) collects where each partition could restart without
    Bytewax state; its ``start``, if any, is the checkpoint this run starts from. Dead letters go
    to the window sink's one writer with the windows (``sensorflow.windowing.sink``).
    """
    flow = Dataflow("sensorflow")
    messages = op.input("read", flow, source)
    decoded = op.map("decode", messages, partial(_decode, config.decode, stats))
    malformed = op.filter_map("malformed", decoded, _dead_letters)
    readings = op.map("readings", decoded, _readings)
    by_partition = op.key_on("by_partition", readings, _partition)
    stamped = op.key_rm("stamped", op.stateful_batch("lateness", by_partition, partial(_lateness, config, board, stats)))
    late_or_routed = op.branch("late_or_routed", stamped, _is_dead_letter)
    windowed = op.key_rm("windowed", op.stateful_batch("window", late_or_routed.falses, partial(_window, config, board, stats)))
    closed_or_late = op.branch("closed_or_late", windowed, _is_window_batch)
    dead_letters = op.merge("dead_letters", malformed, late_or_routed.trues, closed_or_late.falses)
    by_writer = op.key_on("by_writer", closed_or_late.trues, _writer)
    write_batches = op.stateful_batch("write_batches", by_writer, partial(_write_batches, config))
    dead_letters_by_writer = op.key_on("dead_letters_by_writer", dead_letters, _writer)
    op.output("write_windows", op.merge("to_writer", write_batches, dead_letters_by_writer), window_sink)
    return flow


def _decode(config: DecodeConfig, stats: RunStats, batch: MessageBatch) -> Decoded:
    decoded = decode_batch(batch, config)  # the readings carry the batch's source progress on
    stats.add_decoded(batch.messages, decoded.elements, len(decoded.readings))
    return decoded


def _dead_letters(decoded: Decoded) -> DeadLetterBatch | None:
    return decoded.dead_letters if len(decoded.dead_letters) else None


def _readings(decoded: Decoded) -> ReadingBatch:
    return decoded.readings


def _partition(batch: ReadingBatch) -> str:
    return batch.partition


def _lateness(config: FlowConfig, board: ResumeBoard | None, stats: RunStats, resume: LatenessSnapshot | None) -> LatenessLogic:
    return LatenessLogic(config.lateness_ns, config.shards, resume, board, stats)


def _window(config: FlowConfig, board: ResumeBoard | None, stats: RunStats, resume: WindowSnapshot | None) -> WindowLogic:
    start = board.start if board is not None else None
    if resume is None and start is not None:  # restart from checkpoints: closed windows stay closed
        resume = WindowSnapshot(SNAPSHOT_VERSION, start.watermarks(), start.closed_through, ())
    if resume is None:
        aggregator = WindowAggregator(config.window_ns, config.partitions, config.idle_timeout_ns)
    else:
        aggregator = WindowAggregator.restore(config.window_ns, config.partitions, resume, config.idle_timeout_ns)
    stats.watch_open_windows(aggregator.open_windows)  # a stopped live run tells the windows still open
    return WindowLogic(aggregator)


def _write_batches(config: FlowConfig, resume: WriteBatchSnapshot | None) -> WriteBatchLogic:
    return WriteBatchLogic(config.write_min_rows, config.write_rows, config.write_windows, config.write_wait, resume)


def _writer(batch: WindowBatch | DeadLetterBatch) -> str:
    # One writer: the embedded store takes one writing transaction at a time anyway.
    return "windows"


def _is_dead_letter(item: object) -> bool:
    return isinstance(item, DeadLetterBatch)


def _is_window_batch(item: object) -> bool:
    return isinstance(item, WindowBatch)

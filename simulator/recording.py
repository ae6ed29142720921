"""JSON Lines recordings: `partition-<id>.jsonl` files plus `labels.json` in one directory."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sensorflow.records.recordings import INCOMPLETE
from sensorflow.simulator.anomalies import write_labels
from sensorflow.simulator.config import SimulatorConfig
from sensorflow.simulator.envelope import EnvelopeWriter
from sensorflow.simulator.progress import PhaseProgress
from sensorflow.simulator.stream import Simulation

__all__ = ["RecordingSummary", "finish_output_dir", "prepare_output_dir", "write_jsonl_recording"]

LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class RecordingSummary:
    """What a file output wrote. `readings` counts good readings (duplicates included)."""

    directory: Path
    messages: int
    readings: int
    malformed: int
    labels: int
    partitions: int
    bytes_written: int
    seconds: float

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "messages": self.messages,
            "readings": self.readings,
            "malformed": self.malformed,
            "labels": self.labels,
            "partitions": self.partitions,
            "bytes": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "readings_per_s": round(self.readings_per_s, 1),
        }


def prepare_output_dir(out_dir: Path, patterns: tuple[str, ...], overwrite: bool) -> None:
    """Create `out_dir`; refuse (or, with `overwrite`, delete) earlier output matching `patterns`.

    Then mark the directory INCOMPLETE until `finish_output_dir`: a writer
    stopped halfway (Ctrl-C, SIGTERM, a full disk) leaves the mark, and
    `sensorflow run` refuses to replay it unless told to.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = [p for pattern in (*patterns, INCOMPLETE) for p in out_dir.glob(pattern)]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a recording ({existing[0].name}); choose another directory")
    for path in existing:
        if path.is_file():
            path.unlink()
    (out_dir / INCOMPLETE).write_text(
        "sensorflow simulate was stopped before it finished this recording: its partitions end early and\n"
        "labels.json is missing. Write it again with `sensorflow simulate ... --force`, or replay what is\n"
        "here with `sensorflow run --source DIR --allow-incomplete`.\n",
        encoding="utf-8",
    )


def finish_output_dir(out_dir: Path) -> None:
    """The recording is whole: remove its INCOMPLETE mark (written by `prepare_output_dir`)."""
    (out_dir / INCOMPLETE).unlink(missing_ok=True)


class _FileSink:
    """Writes blocks on a thread, so the kernel's page work overlaps the next chunk's rendering.

    The queue holds one chunk: with the writer's ring of 3 buffers, a
    buffer is reused only after its blocks were written.
    """

    def __init__(self, files: list) -> None:
        self._files = files
        self._queue: queue.Queue[list | None] = queue.Queue(maxsize=1)
        self._written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (blocks := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(blocks)
                except BaseException as error:  # re-raised on the caller's thread in close()
                    self._error = error

    def _write(self, blocks: Iterable) -> None:
        for partition, block in blocks:
            self._written += self._files[partition].write(block)

    def put(self, blocks: list) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(blocks)

    def close(self) -> int:
        """Wait for the writes, close the files; return the bytes written."""
        self._queue.put(None)
        self._thread.join()
        for f in self._files:
            f.close()
        if self._error is not None:
            raise self._error
        return self._written


def write_jsonl_recording(
    out_dir: Path | str, config: SimulatorConfig, overwrite: bool = False, progress: PhaseProgress | None = None
) -> RecordingSummary:
    """Write the run as a JSON Lines recording (CONTRACTS.md envelopes) and its `labels.json`.

    Lines of a partition file are in enqueued order with sequence numbers
    from 0. Returns counts and timing.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    prepare_output_dir(out_dir, ("partition-*.jsonl", LABELS_FILE), overwrite)
    progress = progress or PhaseProgress(enabled=False)
    progress.phase("preparing the fleet and its anomalies", unit="")
    simulation = Simulation.prepare(config)
    progress.phase(f"writing readings to {out_dir}", expected_readings(config))
    writer = EnvelopeWriter(config, simulation.fleet, simulation.texts, buffers=3)
    partitions = config.messages.partitions
    messages = readings = malformed = 0
    files = [open(out_dir / f"partition-{p}.jsonl", "wb", buffering=1 << 20) for p in range(partitions)]
    sink = _FileSink(files)
    try:
        for chunk in simulation.chunks():
            messages += len(chunk)
            readings += chunk.readings
            malformed += chunk.malformed
            sink.put(list(writer.blocks(chunk)))
            progress.advance(chunk.readings)
    finally:
        written = sink.close()
    progress.phase("writing labels.json", unit="")
    labels = simulation.labels
    write_labels(out_dir / LABELS_FILE, labels)
    finish_output_dir(out_dir)
    progress.close()
    return RecordingSummary(
        out_dir, messages, readings, malformed, len(labels), partitions, written, time.perf_counter() - started
    )


def expected_readings(config: SimulatorConfig) -> int:
    """About how many readings a run makes: steps x readings per step (duplicates and dropouts move it a little)."""
    return config.timing.steps * config.readings_per_step

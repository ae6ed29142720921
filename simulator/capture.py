"""Event Hubs Capture-style Avro recordings.

Layout as Capture writes it, under the output directory:
`<partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro`, one file per capture
window (by enqueued time) and partition, plus `labels.json` at the top.
Sorting the paths of a partition sorts its files by time.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from fastavro import parse_schema
from fastavro.write import Writer

from sensorflow.ingest.replay.avro import CAPTURE_SCHEMA
from sensorflow.simulator.anomalies import write_labels
from sensorflow.simulator.config import SimulatorConfig
from sensorflow.simulator.messages import message_bodies
from sensorflow.simulator.progress import PhaseProgress
from sensorflow.simulator.recording import (
    LABELS_FILE,
    RecordingSummary,
    expected_readings,
    finish_output_dir,
    prepare_output_dir,
)
from sensorflow.simulator.stream import Simulation
from sensorflow.simulator.timefmt import format_capture_time

__all__ = ["CAPTURE_SCHEMA", "capture_path", "write_capture_recording"]

_PARSED = parse_schema(CAPTURE_SCHEMA)
NS_PER_S = 1_000_000_000


def capture_path(out_dir: Path, partition: int, window_start_ns: int) -> Path:
    """Capture's default naming: `<partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro`."""
    moment = datetime.fromtimestamp(window_start_ns // NS_PER_S, tz=timezone.utc)
    return (
        out_dir / str(partition) / f"{moment.year:04d}" / f"{moment.month:02d}" / f"{moment.day:02d}"
        / f"{moment.hour:02d}" / f"{moment.minute:02d}" / f"{moment.second:02d}.avro"
    )


class _PartitionFiles:
    """The open Avro file of each partition; rolls over when the capture window changes."""

    def __init__(self, out_dir: Path, window_ns: int, codec: str) -> None:
        self._out_dir = out_dir
        self._window_ns = window_ns
        self._codec = codec
        self._open: dict[int, tuple[int, IO[bytes], Writer]] = {}
        self.files = 0

    def writer(self, partition: int, enqueued_ns: int) -> Writer:
        window = enqueued_ns - enqueued_ns % self._window_ns
        current = self._open.get(partition)
        if current is not None and current[0] == window:
            return current[2]
        if current is not None:
            self._close(partition)
        path = capture_path(self._out_dir, partition, window)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "wb")
        writer = Writer(handle, _PARSED, codec=self._codec)
        self._open[partition] = (window, handle, writer)
        self.files += 1
        return writer

    def _close(self, partition: int) -> None:
        _, handle, writer = self._open.pop(partition)
        writer.flush()
        handle.close()

    def close(self) -> None:
        for partition in list(self._open):
            self._close(partition)


def write_capture_recording(
    out_dir: Path | str,
    config: SimulatorConfig,
    window_s: int = 300,
    codec: str = "null",
    overwrite: bool = False,
    progress: PhaseProgress | None = None,
) -> RecordingSummary:
    """Write the run as Capture-style Avro files (one directory per partition) and `labels.json`."""
    if window_s < 1:
        raise ValueError("capture window must be >= 1 s")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    prepare_output_dir(out_dir, ("*/*/*/*/*/*/*.avro", LABELS_FILE), overwrite)
    progress = progress or PhaseProgress(enabled=False)
    progress.phase("preparing the fleet and its anomalies", unit="")
    simulation = Simulation.prepare(config)
    progress.phase(f"writing readings to {out_dir}", expected_readings(config))
    files = _PartitionFiles(out_dir, window_s * NS_PER_S, codec)
    keys = simulation.fleet.device_keys
    messages = readings = malformed = 0
    capture_times: dict[int, str] = {}
    try:
        for chunk in simulation.chunks():
            messages += len(chunk)
            readings += chunk.readings
            malformed += chunk.malformed
            if len(capture_times) > 100_000:
                capture_times.clear()
            bodies = message_bodies(chunk, simulation.texts)
            columns = zip(
                chunk.partition.tolist(), chunk.sequence_number.tolist(), chunk.offset.tolist(),
                chunk.enqueued_ns.tolist(), chunk.key_device.tolist(), bodies, strict=True,
            )
            for partition, sequence, offset, enqueued, key_device, body in columns:
                second = enqueued // NS_PER_S
                capture_time = capture_times.get(second)
                if capture_time is None:  # many messages share a second: format each second once
                    capture_time = capture_times[second] = format_capture_time(enqueued)
                system = {
                    "x-opt-sequence-number": sequence,
                    "x-opt-offset": str(offset),
                    "x-opt-enqueued-time": enqueued // 1_000_000,
                }
                if key_device >= 0:
                    system["x-opt-partition-key"] = keys[key_device]
                files.writer(partition, enqueued).write(
                    {
                        "SequenceNumber": sequence,
                        "Offset": str(offset),
                        "EnqueuedTimeUtc": capture_time,
                        "SystemProperties": system,
                        "Properties": {},
                        "Body": body,
                    }
                )
            progress.advance(chunk.readings)
    finally:
        files.close()
    progress.phase("writing labels.json", unit="")
    labels = simulation.labels
    write_labels(out_dir / LABELS_FILE, labels)
    finish_output_dir(out_dir)
    written = sum(p.stat().st_size for p in out_dir.glob("*/*/*/*/*/*/*.avro"))
    progress.close()
    return RecordingSummary(
        out_dir, messages, readings, malformed, len(labels), config.messages.partitions, written,
        time.perf_counter() - started,
    )

"""Shared helpers for simulator tests: configs and a strict reader of recordings."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from sensorflow.simulator import (
    AnomalySpec,
    DeliverySpec,
    FleetSpec,
    MessageSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    parse_start,
)

START_NS = parse_start("2026-01-01T00:00:00Z", 0)
NS_PER_S = 1_000_000_000

# A string-id realistic fleet with anomalies and every delivery fault: `fleet_config(**FAULTY)`.
FAULTY = dict(
    fleet=FleetSpec(devices=8, tags=4, ids="str"),
    signal=SignalSpec("realistic"),
    anomalies=AnomalySpec(rate_per_sensor_hour=6.0),
    delivery=DeliverySpec(
        out_of_order_fraction=0.05, max_delay_ns=8_000_000_000, duplicate_fraction=0.02, malformed_fraction=0.02
    ),
)


@dataclass(frozen=True)
class Line:
    """One envelope line of a recording, with its body bytes."""

    file_partition: str
    envelope: dict
    body: bytes


def read_recording(directory: Path) -> list[Line]:
    """Every envelope of every `partition-<id>.jsonl`, in file order (strict json parser)."""
    lines = []
    for path in sorted(directory.glob("partition-*.jsonl")):
        partition = path.stem.removeprefix("partition-")
        for text in path.read_bytes().splitlines():
            envelope = json.loads(text)
            raw = envelope["body"]
            body = base64.b64decode(raw["base64"]) if isinstance(raw, dict) else raw.encode("utf-8")
            lines.append(Line(partition, envelope, body))
    return lines


def parse_reading(body: bytes) -> dict | list | None:
    """The body's JSON, or None if it is not strict JSON text."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject)
    except (UnicodeDecodeError, ValueError):
        return None


def _reject(token: str) -> None:
    raise ValueError(f"not strict JSON: {token}")


def fleet_config(**changes) -> SimulatorConfig:
    """A small fleet at 1 reading/s per sensor; keyword groups replace the defaults."""
    base = dict(
        timing=TimingSpec(
            start_ns=START_NS, duration_ns=600 * NS_PER_S, interval_ns=NS_PER_S, sampling="every_sensor", jitter=0.5
        ),
        fleet=FleetSpec(devices=6, tags=5),
        signal=SignalSpec("uniform"),
        anomalies=AnomalySpec(),
        delivery=DeliverySpec(),
        messages=MessageSpec(),
        seed=11,
    )
    base.update(changes)
    return SimulatorConfig(**base)

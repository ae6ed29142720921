"""Sensor simulator: the seed's fleet and larger ones, with labelled anomalies.

Library entry points:
- `generate(config)`: message chunks, in order;
- `write_jsonl_recording(out_dir, config)`: a JSON Lines recording + labels.json;
- `write_capture_recording(out_dir, config)`: Capture-style Avro + labels.json.
The Event Hubs output is in `simulator.eventhubs` (needs azure-eventhub).
"""

from simulator.anomalies import Label
from simulator.capture import write_capture_recording
from simulator.config import (
    ANOMALY_KINDS,
    AnomalySpec,
    DeliverySpec,
    FleetSpec,
    MessageSpec,
    SignalSpec,
    SimulatorConfig,
    TimingSpec,
    parse_duration,
    parse_start,
)
from simulator.fleet import partition_for_key
from simulator.malformed import MALFORMED_KINDS
from simulator.messages import MessageChunk
from simulator.recording import RecordingSummary, write_jsonl_recording
from simulator.stream import Simulation, generate

__all__ = [
    "ANOMALY_KINDS",
    "AnomalySpec",
    "DeliverySpec",
    "FleetSpec",
    "Label",
    "MALFORMED_KINDS",
    "MessageChunk",
    "MessageSpec",
    "RecordingSummary",
    "SignalSpec",
    "Simulation",
    "SimulatorConfig",
    "TimingSpec",
    "generate",
    "parse_duration",
    "parse_start",
    "partition_for_key",
    "write_capture_recording",
    "write_jsonl_recording",
]

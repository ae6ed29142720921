"""Sensor simulator: the seed's fleet and larger ones, with labelled anomalies.

Library entry points:
- `generate(config)`: message chunks, in order;
- `write_jsonl_recording(out_dir, config)`: a JSON Lines recording + labels.json;
- `write_capture_recording(out_dir, config)`: Capture-style Avro + labels.json.
Benches that need window rows, labels and the training split call
`sensorflow.simulator.windows.simulate_windows(bench_config(signal, ...))`.
The Event Hubs output is in `sensorflow.simulator.eventhubs` (needs azure-eventhub).
"""

from sensorflow.simulator.anomalies import Label
from sensorflow.simulator.capture import write_capture_recording
from sensorflow.simulator.config import (
    ANOMALY_KINDS,
    SIGNAL_KINDS,
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
from sensorflow.simulator.fleet import partition_for_key
from sensorflow.simulator.malformed import MALFORMED_KINDS
from sensorflow.simulator.messages import MessageChunk
from sensorflow.simulator.recording import RecordingSummary, write_jsonl_recording
from sensorflow.simulator.stream import Simulation, generate

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
    "SIGNAL_KINDS",
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

"""The simulator as a library: config in, message chunks out.

`generate(config)` yields `MessageChunk`s in order; every output (JSON Lines
recording, Capture Avro, Event Hubs) consumes the same chunks, so they all
carry the same messages for the same config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sensorflow.simulator.anomalies import Label
from sensorflow.simulator.config import SimulatorConfig
from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.messages import MessageAssembler, MessageChunk
from sensorflow.simulator.readings import RunModel, generate_readings, run_model
from sensorflow.simulator.texts import ReadingTexts

__all__ = ["Simulation", "generate"]


@dataclass(frozen=True)
class Simulation:
    """A prepared run: the fleet, its text tables, sensor parameters and anomaly plan."""

    config: SimulatorConfig
    fleet: Fleet
    texts: ReadingTexts
    model: RunModel

    @classmethod
    def prepare(cls, config: SimulatorConfig) -> "Simulation":
        fleet = Fleet(config.fleet)
        return cls(config, fleet, ReadingTexts(fleet), run_model(config))

    @property
    def labels(self) -> list[Label]:
        return self.model.plan.labels(self.fleet)

    def chunks(self) -> Iterator[MessageChunk]:
        assembler = MessageAssembler(self.config, self.fleet, self.texts)
        for readings in generate_readings(self.config, self.model):
            yield assembler.assemble(readings)


def generate(config: SimulatorConfig) -> Iterator[MessageChunk]:
    """Yield the run's messages chunk by chunk (each sorted by partition, then enqueued time)."""
    return Simulation.prepare(config).chunks()

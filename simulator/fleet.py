"""The fleet: sensor numbering, id texts, partition keys and the stable partition hash.

Sensor index `s` is device-major: `s = device_index * tags + tag_index`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sensorflow.simulator.config import FleetSpec

__all__ = ["Fleet", "partition_for_key"]


def partition_for_key(key: str, partitions: int) -> int:
    """Partition of a partition key: crc32 of its UTF-8 bytes modulo the partition count.

    Stable across processes and Python versions (unlike `hash()`).
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return zlib.crc32(key.encode("utf-8")) % partitions


@dataclass(frozen=True)
class Fleet:
    """Ids and per-sensor lookup tables of a `FleetSpec`."""

    spec: FleetSpec

    @property
    def sensors(self) -> int:
        return self.spec.sensors

    @cached_property
    def device_ids(self) -> list[str | int]:
        """Device ids as they appear in messages (ints for `ids='int'`)."""
        n = self.spec.devices
        if self.spec.ids == "int":
            return list(range(1, n + 1))
        width = len(str(n))
        return [f"device-{i:0{width}d}" for i in range(1, n + 1)]

    @cached_property
    def tag_ids(self) -> list[str | int]:
        n = self.spec.tags
        if self.spec.ids == "int":
            return list(range(1, n + 1))
        width = len(str(n))
        return [f"tag-{i:0{width}d}" for i in range(1, n + 1)]

    @cached_property
    def device_keys(self) -> list[str]:
        """Partition key of each device: its id as a decimal or plain string (CONTRACTS: ids are strings)."""
        return [str(d) for d in self.device_ids]

    def device_of(self, sensor: np.ndarray) -> np.ndarray:
        return sensor // self.spec.tags

    def tag_of(self, sensor: np.ndarray) -> np.ndarray:
        return sensor % self.spec.tags

    def device_partitions(self, partitions: int) -> np.ndarray:
        """Partition of each device's key, as an int32 array indexed by device."""
        return np.array([partition_for_key(k, partitions) for k in self.device_keys], dtype=np.int32)

    def sensor_id_pair(self, sensor: int) -> tuple[str | int, str | int]:
        return self.device_ids[sensor // self.spec.tags], self.tag_ids[sensor % self.spec.tags]

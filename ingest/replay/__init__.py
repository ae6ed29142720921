"""Replay of recorded events: JSON Lines and Event Hubs Capture Avro."""

from sensorflow.ingest.replay.source import ReplaySource, discover_partitions

__all__ = ["ReplaySource", "discover_partitions"]

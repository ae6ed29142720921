"""The JSON blobs of a consumer group's resume data, and how a start is made from them (pure logic).

Under ``sensorflow/<namespace>/<hub>/<consumer group>/`` (lower case):

* ``resume/<partition>.json``, one per Event Hubs partition, written by the process whose
  lateness step keeps that partition's resume log: the restart position, the partition
  watermark there, the durable position, and the committed closure ``C`` they were computed
  with;
* ``shards/<shard>.json``, one per window shard, written by the process whose window sink
  committed that shard's windows: the largest committed window end. Every process reads them
  all to compute ``C`` across the cluster;
* ``resume.json``: the one blob of earlier versions (every partition, one ``C``); read, never
  written, and only for partitions that have no blob of their own.

Every blob names the window length and lateness it holds for; JSON only, never pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from sensorflow.windowing.resume.board import ResumePoint, ResumeStart

__all__ = [
    "CheckpointMismatch",
    "PartitionResume",
    "StreamIdentity",
    "decode_partition_resume",
    "decode_resume",
    "decode_shard_end",
    "encode_partition_resume",
    "encode_shard_end",
    "merge_resumes",
]

_FORMAT = 1


class CheckpointMismatch(ValueError):
    """A resume blob was written for other window settings, or cannot be read; the message says what to do."""


@dataclass(frozen=True)
class StreamIdentity:
    """Whose progress this is, and the window settings the resume data only holds for."""

    namespace: str
    eventhub: str
    consumer_group: str
    window_ns: int
    lateness_ns: int

    @property
    def prefix(self) -> str:
        return f"sensorflow/{self.namespace}/{self.eventhub}/{self.consumer_group}/".lower()

    @property
    def resume_blob(self) -> str:
        """The single resume blob of earlier versions."""
        return self.prefix + "resume.json"

    @property
    def partitions_prefix(self) -> str:
        return self.prefix + "resume/"

    def partition_blob(self, partition: str) -> str:
        return f"{self.partitions_prefix}{partition}.json".lower()

    @property
    def shards_prefix(self) -> str:
        return self.prefix + "shards/"

    def shard_blob(self, shard: int) -> str:
        return f"{self.shards_prefix}{shard}.json"


@dataclass(frozen=True)
class PartitionResume:
    """One partition's resume blob: its point, and the committed closure it was computed with."""

    partition: str
    closed_through: int
    point: ResumePoint


def _check_settings(doc: dict, identity: StreamIdentity, name: str) -> None:
    if doc.get("format") != _FORMAT:
        raise CheckpointMismatch(f"resume blob {name} has unknown format {doc.get('format')!r}")
    if (doc["window_ns"], doc["lateness_ns"]) != (identity.window_ns, identity.lateness_ns):
        raise CheckpointMismatch(
            f"resume blob {name} was written with window {doc['window_ns'] / 1e9:g} s and lateness "
            f"{doc['lateness_ns'] / 1e9:g} s, not {identity.window_ns / 1e9:g} s and {identity.lateness_ns / 1e9:g} s: "
            "use the same settings, or a new consumer group for the new ones"
        )


def _loads(data: bytes, identity: StreamIdentity, name: str) -> dict:
    try:
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        _check_settings(doc, identity, name)
        return doc
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointMismatch):
            raise
        raise CheckpointMismatch(f"resume blob {name} is not readable ({type(e).__name__}: {e})") from e


def _point(doc: Mapping) -> ResumePoint:
    return ResumePoint(int(doc["position"]), int(doc["watermark"]), int(doc["drop_before"]))


def decode_resume(data: bytes, identity: StreamIdentity) -> ResumeStart:
    """The single resume blob's content; CheckpointMismatch if unreadable or written for other window settings."""
    doc = _loads(data, identity, identity.resume_blob)
    try:
        points = {str(p): _point(v) for p, v in doc["partitions"].items()}
        return ResumeStart(int(doc["closed_through"]), points)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointMismatch(f"resume blob {identity.resume_blob} is not readable ({type(e).__name__}: {e})") from e


def encode_partition_resume(resume: PartitionResume, identity: StreamIdentity) -> bytes:
    point = resume.point
    return orjson.dumps(
        {
            "format": _FORMAT,
            "window_ns": identity.window_ns,
            "lateness_ns": identity.lateness_ns,
            "partition": resume.partition,
            "closed_through": resume.closed_through,
            "position": point.position,
            "watermark": point.watermark,
            "drop_before": point.drop_before,
            "written_at": datetime.now(UTC).isoformat(),
        }
    )


def decode_partition_resume(data: bytes, identity: StreamIdentity, name: str) -> PartitionResume:
    """One partition's resume blob ``name``; CheckpointMismatch if unreadable or for other window settings."""
    doc = _loads(data, identity, name)
    try:
        return PartitionResume(str(doc["partition"]), int(doc["closed_through"]), _point(doc))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointMismatch(f"resume blob {name} is not readable ({type(e).__name__}: {e})") from e


def merge_resumes(partitions: Iterable[PartitionResume], legacy: ResumeStart | None = None) -> ResumeStart | None:
    """One start for the whole cluster from every partition's blob (and the old single blob, if any).

    The start's ``C`` is the LARGEST of the blobs' closures: each was a committed closure when
    written, so every window ending at or before any of them is stored, and a point computed with
    a smaller ``C`` only re-reads more. One ``C`` for every partition is needed, not each blob's
    own: the window step opens every window after ``C`` again, and such a window must then get
    every one of its readings back, from every partition; a reading before a partition's durable
    position in a window at or before ``C`` is dropped as stored. A partition's own blob wins
    over the old single blob. None when there is nothing.
    """
    points = dict(legacy.partitions) if legacy is not None else {}
    closures = [legacy.closed_through] if legacy is not None else []
    for resume in partitions:
        points[resume.partition] = resume.point
        closures.append(resume.closed_through)
    if not closures:
        return None
    return ResumeStart(max(closures), points)


def encode_shard_end(shard: int, end: int, shards: int, identity: StreamIdentity) -> bytes:
    return orjson.dumps(
        {
            "format": _FORMAT,
            "window_ns": identity.window_ns,
            "shards": shards,
            "shard": shard,
            "committed_end": end,
            "written_at": datetime.now(UTC).isoformat(),
        }
    )


def decode_shard_end(data: bytes, identity: StreamIdentity, shards: int) -> tuple[int, int] | None:
    """(shard, committed window end) from a shard blob; None if it is unreadable or for another shard
    count or window length (its sensors or windows are not this run's: it counts as never published)."""
    try:
        doc = orjson.loads(data)
        if doc.get("format") != _FORMAT or doc.get("window_ns") != identity.window_ns or doc.get("shards") != shards:
            return None
        shard = int(doc["shard"])
        return (shard, int(doc["committed_end"])) if 0 <= shard < shards else None
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None

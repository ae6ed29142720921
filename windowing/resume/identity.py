"""What a Bytewax recovery directory's state was made from, and how two such records differ.

Bytewax's recovery state holds source positions (byte offsets, sequence numbers) and window
state (watermarks, open windows, what is closed) of one input, written to one store, for one
window length and lateness. Applied to anything else it is silently wrong: old byte offsets land
in the middle of new files, and an end-of-input watermark makes every new reading late. A
:class:`RecoveryIdentity` names what the state belongs to; ``sensorflow.windowing.resume.recovery_dir``
keeps it beside the state and refuses a run whose identity differs.

* A recording is identified per partition by each file's name, size and SHA-256 of its first
  and last :data:`BLOCK_BYTES`. A file that grew, shrank or was rewritten is another input:
  replays read to the end of a file, so state made from a shorter file has ended the partition
  and would make every appended reading late.
* A live input is the Event Hubs namespace, hub and consumer group.
* The store is its URL without secrets (``sqlite:///`` + the absolute path; an ODBC connection
  string with its password masked).
* Window length, lateness and the time source are part of the state's meaning, and so is
  ``max_message_bytes``: which messages were dead-lettered as ``too_large`` and which were read, and
  where a resumed replay's reader stands, depend on it. An identity written before it was recorded
  reads as the default (1 MiB), what such a run used unless it set the flag, so existing recovery
  directories resume after an upgrade instead of every pod needing ``--fresh`` (a run that had set
  another value and reruns with it is refused once and needs ``--fresh``).

JSON on disk, never pickle; :data:`IDENTITY_VERSION` is the record's shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from sensorflow.ingest.decode import MAX_MESSAGE_BYTES

__all__ = [
    "BLOCK_BYTES",
    "IDENTITY_VERSION",
    "EventHubIdentity",
    "FileIdentity",
    "IdentityUnreadable",
    "PartitionFiles",
    "RecordingIdentity",
    "RecoveryIdentity",
    "decode_identity",
    "differences",
    "encode_identity",
    "eventhub_identity",
    "file_identity",
    "recording_identity",
    "store_identity",
]

IDENTITY_VERSION = 1
BLOCK_BYTES = 1 << 16


@dataclass(frozen=True)
class FileIdentity:
    """One recording file: its name (relative to the recording), size and the hashes of its ends."""

    name: str
    size: int
    head_sha256: str
    tail_sha256: str


@dataclass(frozen=True)
class PartitionFiles:
    """One partition of a recording and its files, in read order."""

    partition: str
    files: tuple[FileIdentity, ...]


@dataclass(frozen=True)
class RecordingIdentity:
    """A recording (files replayed by ``--source PATH``)."""

    partitions: tuple[PartitionFiles, ...]
    kind: Literal["recording"] = "recording"

    def describe(self) -> str:
        return f"a recording of {len(self.partitions)} partition(s)"


@dataclass(frozen=True)
class EventHubIdentity:
    """A live Event Hub read by one consumer group."""

    namespace: str
    hub: str
    consumer_group: str
    kind: Literal["eventhubs"] = "eventhubs"

    def describe(self) -> str:
        return f"event hub {self.hub!r} on {self.namespace}, consumer group {self.consumer_group!r}"


@dataclass(frozen=True)
class RecoveryIdentity:
    """What one recovery directory's state belongs to."""

    input: RecordingIdentity | EventHubIdentity
    store: str
    window_ns: int
    lateness_ns: int
    time_source: str
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """The decode setting; the default in an identity written before it was recorded."""
    version: int = IDENTITY_VERSION


class IdentityUnreadable(ValueError):
    """The identity record cannot be read as this release's :class:`RecoveryIdentity`."""


_CODEC: TypeAdapter[RecoveryIdentity] = TypeAdapter(RecoveryIdentity)


def encode_identity(identity: RecoveryIdentity) -> bytes:
    return _CODEC.dump_json(identity, indent=1) + b"\n"


def decode_identity(data: bytes) -> RecoveryIdentity:
    """The identity in ``data``; :class:`IdentityUnreadable` if it is not one of :data:`IDENTITY_VERSION`."""
    try:
        identity = _CODEC.validate_json(data)
    except ValidationError as e:
        raise IdentityUnreadable(f"not a sensorflow recovery identity of version {IDENTITY_VERSION}") from e
    if identity.version != IDENTITY_VERSION:
        raise IdentityUnreadable(f"identity version {identity.version}, this release reads {IDENTITY_VERSION}")
    return identity


def file_identity(path: Path, name: str) -> FileIdentity:
    """``path``'s size and the SHA-256 of its first and last :data:`BLOCK_BYTES` (reads at most two blocks)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        head = hashlib.sha256(f.read(BLOCK_BYTES)).hexdigest()
        f.seek(max(0, size - BLOCK_BYTES))
        tail = hashlib.sha256(f.read(BLOCK_BYTES)).hexdigest()
    return FileIdentity(name, size, head, tail)


def recording_identity(partitions: Mapping[str, Sequence[Path]], root: Path) -> RecordingIdentity:
    """The identity of a recording: each partition's files, named relative to ``root``."""
    root = Path(root)

    def name(path: Path) -> str:
        return path.name if path == root else str(Path(path).relative_to(root))

    return RecordingIdentity(tuple(
        PartitionFiles(pid, tuple(file_identity(path, name(path)) for path in files))
        for pid, files in sorted(partitions.items())
    ))


def eventhub_identity(namespace: str, hub: str, consumer_group: str) -> EventHubIdentity:
    return EventHubIdentity(namespace.lower(), hub.lower(), consumer_group.lower())


def store_identity(url: str) -> str:
    """The store ``url`` without secrets: SQLite by absolute path; ODBC with its password masked.

    Raises ``StoreError`` for a URL the store would refuse too.
    """
    if url.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    from sensorflow.store.odbc_connect import parse_store_url

    scheme = url.split(":", 1)[0]
    return f"{scheme}:{parse_store_url(url).describe()}"


def differences(saved: RecoveryIdentity, current: RecoveryIdentity) -> list[str]:
    """What differs between the state's identity and this run's, each as a short phrase; [] if none."""
    found: list[str] = []
    if saved.input != current.input:
        found.append(_input_difference(saved.input, current.input))
    if saved.store != current.store:
        found.append(f"store {saved.store} -> {current.store}")
    if saved.window_ns != current.window_ns:
        found.append(f"window {saved.window_ns / 1e9:g} s -> {current.window_ns / 1e9:g} s")
    if saved.lateness_ns != current.lateness_ns:
        found.append(f"lateness {saved.lateness_ns / 1e9:g} s -> {current.lateness_ns / 1e9:g} s")
    if saved.time_source != current.time_source:
        found.append(f"time source {saved.time_source} -> {current.time_source}")
    if saved.max_message_bytes != current.max_message_bytes:
        found.append(f"max_message_bytes {_bytes(saved.max_message_bytes)} -> {_bytes(current.max_message_bytes)}")
    return found


def _bytes(limit: int) -> str:
    return f"{limit:,}"


def _input_difference(saved: RecordingIdentity | EventHubIdentity, current: RecordingIdentity | EventHubIdentity) -> str:
    if isinstance(saved, RecordingIdentity) and isinstance(current, RecordingIdentity):
        return "input: " + _recording_difference(saved, current)
    return f"input {saved.describe()} -> {current.describe()}"


def _recording_difference(saved: RecordingIdentity, current: RecordingIdentity) -> str:
    before = {p.partition: p.files for p in saved.partitions}
    after = {p.partition: p.files for p in current.partitions}
    if before.keys() != after.keys():
        return f"partitions {_names(before)} -> {_names(after)}"
    changed = sorted(pid for pid in before if before[pid] != after[pid])
    first = changed[0]
    old = {f.name: f for f in before[first]}
    new = {f.name: f for f in after[first]}
    if old.keys() != new.keys():
        what = f"partition {first}: files {_names(old)} -> {_names(new)}"
    else:
        name = next(n for n in sorted(old) if old[n] != new[n])
        a, b = old[name], new[name]
        if a.size != b.size:
            what = f"{name} is {b.size:,} bytes, was {a.size:,}"
        else:
            what = f"{name} has other content (same size)"
    more = f" (and {len(changed) - 1} more partition(s))" if len(changed) > 1 else ""
    return what + more


def _names(keys: Mapping[str, object]) -> str:
    names = sorted(keys)
    shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
    return "[" + shown + "]"

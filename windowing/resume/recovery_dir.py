"""A Bytewax recovery directory that belongs to one run: checked, and made if need be, before Bytewax opens it.

What a recovery directory holds: Bytewax's partitions ``part-<i>.sqlite3`` (with SQLite's
``-wal``, ``-shm`` and ``-journal`` files beside them) and :data:`IDENTITY_FILE`, the JSON
:class:`~sensorflow.windowing.resume.identity.RecoveryIdentity` of the state. ``lost+found`` (a
filesystem's own directory, when a volume is mounted right there) and ``.init-*`` (the pod init
step's scratch directories) are left alone. Anything else is refused with a message: it is not
ours, and ``--fresh`` never deletes what it does not know.

:func:`own_recovery_dir`, before every run that has a recovery directory:

1. ``fresh``: deletes the partitions and the identity, nothing else;
2. refuses foreign entries, and partitions Bytewax cannot use (a 0-byte ``part-0.sqlite3`` left
   by an interrupted start, a partition missing from a set);
3. makes the partitions when there are none (``make_partitions``; a pod of a cluster gets its
   share from its init step);
4. if a partition holds a committed epoch, the identity must be there and equal this run's, or
   the run is refused naming what differs. State without an identity (written before identities
   existed) is refused too: what it belongs to cannot be known, so ``--fresh`` is the way on.
   Without a committed epoch there is nothing to misapply: the identity is (re)written.

Reads only Bytewax's ``parts`` and ``commits`` tables (integers), never its pickled snapshots.
Every error is :class:`RecoveryDirError`, one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bytewax.recovery import init_db_dir

from sensorflow.windowing.resume.identity import (
    IdentityUnreadable,
    RecoveryIdentity,
    decode_identity,
    differences,
    encode_identity,
)

__all__ = ["IDENTITY_FILE", "RecoveryDirError", "own_recovery_dir"]

log = logging.getLogger(__name__)

IDENTITY_FILE = "sensorflow-identity.json"
_IDENTITY_TEMPORARY = f".{IDENTITY_FILE}.tmp"
_PART_PREFIX, _PART_SUFFIX = "part-", ".sqlite3"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_FRESH = "rerun with --fresh to start over"


class RecoveryDirError(ValueError):
    """The recovery directory cannot be used for this run; the message is one line saying what to do."""


@dataclass(frozen=True)
class _Partition:
    name: str
    index: int | None  # None: not a usable Bytewax partition
    count: int | None
    committed: bool
    problem: str | None = None


def own_recovery_dir(
    directory: Path, identity: RecoveryIdentity, workers: int, *, make_partitions: bool = True, fresh: bool = False
) -> bool:
    """Make ``directory`` this run's recovery state, or refuse; True if it holds committed state to resume.

    ``workers`` is the number of partitions made when there are none (``make_partitions``).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RecoveryDirError(f"recovery directory {directory} is not a directory: give --recovery-dir a directory of its own")
    directory.mkdir(parents=True, exist_ok=True)
    if fresh:
        if not make_partitions:
            raise RecoveryDirError(
                "--fresh cannot remake the recovery partitions of a cluster's pod (its init step makes them): "
                "delete the recovery volumes of every pod to start over (docs/deploy.md)"
            )
        _clear(directory)
    _refuse_foreign(directory)
    partitions = [_read_partition(path) for path in sorted(directory.glob(f"{_PART_PREFIX}*{_PART_SUFFIX}"))]
    broken = next((p for p in partitions if p.problem is not None), None)
    if broken is not None:
        raise RecoveryDirError(
            f"recovery directory {directory}: {broken.name} is not a usable Bytewax recovery partition "
            f"({broken.problem}; left by an interrupted start?): {_FRESH}"
        )
    if make_partitions:
        _refuse_incomplete(directory, partitions)
    if not partitions and make_partitions:
        _make_partitions(directory, max(1, workers))
    committed = any(p.committed for p in partitions)
    if committed:
        _check_identity(directory, identity)
    else:
        _write_identity(directory, identity)
    return committed


def _make_partitions(directory: Path, count: int) -> None:
    """Bytewax's empty partitions; ``OSError`` (one line) if it cannot write them, a full disk say."""
    try:
        init_db_dir(directory, count)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # Bytewax panics on a SQLite error (PanicException, which is no Exception)
        log.debug("making the recovery partitions failed", exc_info=e)
        raise OSError(f"cannot make the recovery partitions in {directory}: {e}") from None
    log.info("initialised %d recovery partition(s) in %s", count, directory)


def _clear(directory: Path) -> None:
    removed = 0
    for path in directory.iterdir():
        if path.is_file() and _is_ours(path.name):
            path.unlink()
            removed += 1
    if removed:
        log.warning("--fresh: removed the recovery state in %s (%d file(s))", directory, removed)


def _is_ours(name: str) -> bool:
    """A partition, a SQLite file beside one, the identity or its half-written copy."""
    if name in (IDENTITY_FILE, _IDENTITY_TEMPORARY):
        return True
    return name.startswith(_PART_PREFIX) and any(name.endswith(_PART_SUFFIX + side) for side in ("", *_SQLITE_SIDE_FILES))


def _refuse_foreign(directory: Path) -> None:
    foreign = sorted(
        path.name for path in directory.iterdir()
        if not (_is_ours(path.name) or path.name == "lost+found" or path.name.startswith(".init-"))
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RecoveryDirError(
            f"recovery directory {directory} holds {shown}, which is not recovery state: give --recovery-dir a "
            f"directory of its own (e.g. {directory / 'state'}), or move that away"
        )


def _read_partition(path: Path) -> _Partition:
    if path.stat().st_size == 0:
        return _Partition(path.name, None, None, False, "0 bytes")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT part_index, part_count FROM parts").fetchall()
            committed = con.execute("SELECT 1 FROM commits LIMIT 1").fetchone() is not None
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return _Partition(path.name, None, None, False, f"SQLite says: {e}")
    if len(rows) != 1:
        return _Partition(path.name, None, None, False, "no partition record in it")
    index, count = rows[0]
    return _Partition(path.name, index, count, committed)


def _refuse_incomplete(directory: Path, partitions: list[_Partition]) -> None:
    """A whole set: what Bytewax would stop on (Missing/InconsistentPartitionsError), said before it starts."""
    if not partitions:
        return
    counts = {p.count for p in partitions}
    if len(counts) > 1:
        raise RecoveryDirError(
            f"recovery directory {directory} mixes partitions of sets of {sorted(counts)}: it holds state of "
            f"different runs; {_FRESH}"
        )
    count = counts.pop()
    missing = sorted(set(range(count)) - {p.index for p in partitions})
    if missing:
        raise RecoveryDirError(
            f"recovery directory {directory} lacks partition(s) {missing} of {count}: restore them from where they "
            f"were copied, or {_FRESH}"
        )


def _check_identity(directory: Path, identity: RecoveryIdentity) -> None:
    path = directory / IDENTITY_FILE
    try:
        saved = decode_identity(path.read_bytes())
    except FileNotFoundError:
        raise RecoveryDirError(
            f"recovery directory {directory} holds state that does not record what input and store it was made "
            f"from (an older sensorflow release wrote it): {_FRESH}, or use another --recovery-dir"
        ) from None
    except IdentityUnreadable as e:
        raise RecoveryDirError(f"recovery directory {directory}: {IDENTITY_FILE} is unreadable ({e}): {_FRESH}") from e
    found = differences(saved, identity)
    if found:
        raise RecoveryDirError(
            f"recovery state in {directory} belongs to another run ({'; '.join(found)}): resume it with the same "
            f"input, store and window settings, {_FRESH}, or use another --recovery-dir"
        )


def _write_identity(directory: Path, identity: RecoveryIdentity) -> None:
    path = directory / IDENTITY_FILE
    temporary = directory / _IDENTITY_TEMPORARY
    with open(temporary, "wb") as f:
        f.write(encode_identity(identity))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)

"""What a running dataflow has done so far, read from outside it: how kill/restart tests pick their moment.

Integers only: Bytewax's ``commits`` table and row counts, never a pickled snapshot. Every
reader tolerates a file that is being created or written (it answers "nothing yet").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

__all__ = ["committed_epoch", "resume_positions", "sqlite_rows"]


def committed_epoch(partitions: Iterable[Path]) -> int:
    """The newest epoch committed to any of these Bytewax recovery partitions (0: none yet)."""
    newest = 0
    for path in partitions:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as con:
                newest = max(newest, con.execute("SELECT COALESCE(MAX(commit_epoch), 0) FROM commits").fetchone()[0])
        except sqlite3.Error:  # not made yet, busy or mid-checkpoint: look again next time
            continue
    return newest


def sqlite_rows(db: Path, table: str = "SensorValues") -> int:
    """Rows in ``table`` of a SQLite store (0 while the store or the table does not exist yet)."""
    if not Path(db).exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # a constant name, not a value
    except sqlite3.Error:
        return 0


def resume_positions(connection_string: str, container: str) -> dict[str, int]:
    """Each partition's position in its live resume blob on Blob storage (what a start from Blob
    checkpoints begins after); {} before the first checkpoint made the container."""
    import orjson
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    positions = {}
    with ContainerClient.from_connection_string(connection_string, container) as client:
        try:
            for blob in client.list_blobs(name_starts_with="sensorflow/"):
                if "/resume/" in blob.name:
                    doc = orjson.loads(client.download_blob(blob.name).readall())
                    positions[str(doc["partition"])] = int(doc["position"])
        except ResourceNotFoundError:
            return {}
    return positions

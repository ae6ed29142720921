"""Marks a recording directory carries besides its partitions (docs/recordings.md)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["INCOMPLETE", "incomplete_marker"]

INCOMPLETE = "INCOMPLETE"
"""A file of this name in a recording directory: its writer stopped before the end."""


def incomplete_marker(path: Path | str) -> Path | None:
    """The ``INCOMPLETE`` marker of the recording at ``path`` (a directory, or a file in one), if there is one.

    ``sensorflow simulate`` writes it before the first message and removes it
    after ``labels.json``: a recording that still has it was interrupted (its
    partitions end early, its labels are missing).
    """
    path = Path(path)
    marker = (path if path.is_dir() else path.parent) / INCOMPLETE
    return marker if marker.is_file() else None

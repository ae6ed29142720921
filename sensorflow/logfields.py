"""The ``extra`` fields of a log record (what ``log.info(..., extra={...})`` added), as JSON values.

Shared by the JSON log format and the receiver process, which forwards its records to the
dataflow's logging; imports nothing heavy, so that process starts fast.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["record_extra"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def record_extra(record: logging.LogRecord) -> dict[str, Any]:
    """Fields beyond the standard ones; values that are not JSON scalars become their ``str``."""
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }

"""Time texts: .NET round-trip `TS`, envelope `enqueued_time`, Capture's `EnqueuedTimeUtc`.

The vectorized writers fill fixed-width byte fields straight from lookup
tables (day text, time-of-day text, digit groups), because formatting a
million timestamps one by one costs more than generating them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cache

import numpy as np

from sensorflow.simulator.rows import FieldFill

__all__ = [
    "ENQUEUED_WIDTH",
    "TS_WIDTH",
    "digit_table",
    "enqueued_fills",
    "format_capture_time",
    "format_enqueued_time",
    "format_ts",
    "second_prefixes",
    "ts_fills",
]

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86400 * NS_PER_S
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TS_WIDTH = 28  # 2018-04-06T20:59:55.7096564Z
ENQUEUED_WIDTH = 24  # 2018-04-06T20:59:55.709Z


def _moment(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def format_ts(ns: int) -> str:
    """Event time in .NET round-trip form: 7 fractional digits and `Z`."""
    seconds, rest = divmod(ns, NS_PER_S)
    return _moment(seconds * NS_PER_S).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 100:07d}Z"


def format_enqueued_time(ns: int) -> str:
    """Enqueued time with milliseconds, as Event Hubs reports it."""
    seconds, rest = divmod(ns, NS_PER_S)
    return _moment(seconds * NS_PER_S).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1_000_000:03d}Z"


def format_capture_time(ns: int) -> str:
    """Capture's `EnqueuedTimeUtc`, e.g. `9/25/2018 10:12:45 PM` (no sub-second part)."""
    moment = _moment(ns - ns % NS_PER_S)
    hour12 = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return f"{moment.month}/{moment.day}/{moment.year} {hour12}:{moment.minute:02d}:{moment.second:02d} {half}"


@cache
def digit_table(width: int, suffix: bytes = b"") -> np.ndarray:
    """Zero-padded decimal texts of 0 .. 10**width - 1, each followed by `suffix`."""
    numbers = np.arange(10**width, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((numbers[:, None] // powers) % 10 + ord("0")).astype(np.uint8)
    if suffix:
        tail = np.broadcast_to(np.frombuffer(suffix, dtype=np.uint8), (numbers.shape[0], len(suffix)))
        digits = np.concatenate([digits, tail], axis=1)
    return np.ascontiguousarray(digits).view(f"S{width + len(suffix)}")[:, 0]


@cache
def _time_of_day_table() -> np.ndarray:
    seconds = np.arange(86400)
    rows = np.empty((86400, 9), dtype=np.uint8)
    two = digit_table(2).view(np.uint8).reshape(100, 2)
    rows[:, 0:2] = two[seconds // 3600]
    rows[:, 3:5] = two[seconds // 60 % 60]
    rows[:, 6:8] = two[seconds % 60]
    rows[:, 2] = rows[:, 5] = ord(":")
    rows[:, 8] = ord(".")
    return rows.view("S9")[:, 0]


def second_prefixes(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table of `YYYY-MM-DDTHH:MM:SS.` texts, index of each of `seconds` into it)."""
    if seconds.shape[0] == 0:
        return np.zeros(1, dtype="S20"), np.zeros(0, dtype=np.int64)
    low, high = int(seconds.min()), int(seconds.max())
    if high - low < 4 * seconds.shape[0] + 1024:
        distinct = np.arange(low, high + 1, dtype=np.int64)
        index = seconds - low
    else:
        distinct, index = np.unique(seconds, return_inverse=True)
    days = distinct // 86400
    first_day = int(days.min())
    day_texts = np.array(
        [(_EPOCH + timedelta(days=d)).strftime("%Y-%m-%dT").encode() for d in range(first_day, int(days.max()) + 1)],
        dtype="S11",
    )
    rows = np.empty((distinct.shape[0], 20), dtype=np.uint8)
    rows[:, :11] = day_texts.view(np.uint8).reshape(-1, 11)[days - first_day]
    rows[:, 11:] = _time_of_day_table().view(np.uint8).reshape(-1, 9)[distinct % 86400]
    return rows.view("S20")[:, 0], index


def ts_fills(column: int, ns: np.ndarray) -> list[FieldFill]:
    """Fills writing the 28-byte .NET round-trip TS of each `ns` at `column`."""
    table, index = second_prefixes(ns // NS_PER_S)
    ticks = (ns % NS_PER_S) // 100
    return [
        FieldFill(column, table, index),
        FieldFill(column + 20, digit_table(3), ticks // 10_000),
        FieldFill(column + 23, digit_table(4, b"Z"), ticks % 10_000),
    ]


def enqueued_fills(column: int, ns: np.ndarray) -> list[FieldFill]:
    """Fills writing the 24-byte millisecond enqueued time of each `ns` at `column`."""
    ms = ns // 1_000_000
    if ms.shape[0] and int(ms.max()) - int(ms.min()) < ms.shape[0]:
        # Dense in milliseconds (many readings per ms): one whole-text table, one lookup per row.
        low = int(ms.min())
        every_ms = np.arange(low, int(ms.max()) + 1, dtype=np.int64)
        prefixes, prefix_index = second_prefixes(every_ms // 1000)
        rows = np.empty((every_ms.shape[0], ENQUEUED_WIDTH), dtype=np.uint8)
        rows[:, :20] = prefixes.view(np.uint8).reshape(-1, 20)[prefix_index]
        rows[:, 20:] = digit_table(3, b"Z").view(np.uint8).reshape(-1, 4)[every_ms % 1000]
        return [FieldFill(column, rows.view(f"S{ENQUEUED_WIDTH}")[:, 0], ms - low)]
    table, index = second_prefixes(ns // NS_PER_S)
    return [
        FieldFill(column, table, index),
        FieldFill(column + 20, digit_table(3, b"Z"), (ns % NS_PER_S) // 1_000_000),
    ]

"""What a store was made with, recorded in it and checked by every command that writes or reads its windows.

A store's ``StoreSettings`` table (schema.py) records at creation the window
length, the time source and the schema version. A run with another window
length or time source is refused (:class:`StoreSettingsMismatch`, one line
naming the stored and the requested value): its windows would interleave
with the stored ones (Count 5 and Count 10 rows side by side) and nothing
downstream could tell them apart. The sidecar and ``evaluate`` check the
window length they were given the same way, and record nothing.

A store made before the table existed has none of these rows. If it holds no
windows, the first run records its own settings. If it holds windows, their
length is read from the rows: window ends align to multiples of the window
length, so the greatest common divisor of the window ends of a sample of
sensors (each sensor's first and newest window, and its windows in the first
hour) is the length, or a multiple of it if every sampled window sits on a
longer grid. Only an exact match is accepted (and then recorded); anything
else is refused, naming the length the rows show. The time source leaves no
trace in the rows: a run on such a store records its own and says so in a
warning, once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

from sensorflow.records.timeparse import parse_time_array
from sensorflow.store.base import Store, StoreError, WindowReader

__all__ = [
    "SCHEMA_VERSION",
    "StoreSettings",
    "StoreSettingsMismatch",
    "check_store_settings",
    "prepare_window_store",
    "window_text",
]

SCHEMA_VERSION = 2
"""1: the tables before ``StoreSettings`` and ``Incidents``; 2: with them."""

_LOG = logging.getLogger("sensorflow.store")
_NS_PER_S = 1_000_000_000
_SAMPLE_SENSORS = 16
_SAMPLE_SPAN_NS = 3600 * _NS_PER_S


class StoreSettingsMismatch(StoreError):
    """The store was made with other settings than a command asks for; the message is one line."""


@dataclass(frozen=True)
class StoreSettings:
    """What a command asks of a store: its window length and (for ``run``) its time source (None: not asked)."""

    window_ns: int
    time_source: str | None = None


def window_text(window_ns: int) -> str:
    """A window length in seconds as the table records it: ``5``, ``0.25``."""
    if window_ns % _NS_PER_S == 0:
        return str(window_ns // _NS_PER_S)
    return format(Decimal(window_ns) / _NS_PER_S, "f").rstrip("0")


def _window_ns(text: str) -> int:
    return int(Decimal(text) * _NS_PER_S)


def check_store_settings(
    store: Store, wanted: StoreSettings, *, record: bool, flag: str = "--window-seconds"
) -> dict[str, str]:
    """Compare ``wanted`` with what ``store`` was made with; returns what it records after.

    Call it after ``create_schema`` (the tables exist, and this code's schema version is then
    recorded). ``record``: this command writes windows (``run``): settings not recorded yet are
    recorded, for a store without windows or whose rows show the same window length. Raises
    :class:`StoreSettingsMismatch` on any difference, and for a schema newer than this code's.
    ``flag`` names the option a user changes, in the message.
    """
    recorded = store.read_settings()
    version = int(recorded.get("schema_version", "1"))
    if version > SCHEMA_VERSION:
        raise StoreSettingsMismatch(
            f"the store has schema version {version}, newer than this sensorflow's {SCHEMA_VERSION}: upgrade sensorflow"
        )
    _compare(recorded, wanted, flag)
    new: dict[str, str] = {}
    if "window_seconds" not in recorded:
        shown = _window_in_rows(store)
        if shown is not None and shown != wanted.window_ns:
            raise StoreSettingsMismatch(
                f"the store holds windows ending on multiples of {window_text(shown)} s (read from its rows: it was "
                f"made before stores recorded their settings), not {window_text(wanted.window_ns)} s (window_seconds): "
                f"use {flag} {window_text(shown)}, or another store"
            )
        new["window_seconds"] = window_text(wanted.window_ns)
        if shown is not None and wanted.time_source is not None and record:
            _LOG.warning(
                "the store was made before stores recorded their settings, and its rows do not show their time "
                "source: recorded as %s, this run's", wanted.time_source,
            )
    if wanted.time_source is not None and "time_source" not in recorded:
        new["time_source"] = wanted.time_source
    if record and new:
        recorded = store.record_settings(new)
    if version < SCHEMA_VERSION:  # create_schema has just made this version's tables
        recorded = store.record_settings({"schema_version": str(SCHEMA_VERSION)}, replace=True)
    _compare(recorded, wanted, flag)  # another writer may have recorded its own first
    return recorded


def prepare_window_store(store: Store, window_ns: int, time_source: str) -> dict[str, str]:
    """A run's start: the tables made if missing, then its window length and time source checked and recorded."""
    store.create_schema()
    return check_store_settings(store, StoreSettings(window_ns, time_source), record=True)


def _compare(recorded: dict[str, str], wanted: StoreSettings, flag: str) -> None:
    window = recorded.get("window_seconds")
    if window is not None and _window_ns(window) != wanted.window_ns:
        raise StoreSettingsMismatch(
            f"the store holds {window} s windows, not {window_text(wanted.window_ns)} s (window_seconds): "
            f"use {flag} {window}, or another store"
        )
    source = recorded.get("time_source")
    if wanted.time_source is not None and source is not None and source != wanted.time_source:
        raise StoreSettingsMismatch(
            f"the store holds windows by time source {source}, not {wanted.time_source} (time_source): "
            f"use --time-source {source}, or another store"
        )


def _window_in_rows(store: WindowReader) -> int | None:
    """The window length the stored windows show (see the module docstring); None without windows."""
    sensors = store.sensors_written_since(0)[:_SAMPLE_SENSORS]
    if not sensors:
        return None if store.summary().windows == 0 else _window_in_rows_without_sensor_writes(store)
    ends: set[int] = set()
    for sensor, (first, newest) in store.window_bounds(sensors).items():
        ends.update((first, newest))
        ends.update(store.read_windows([sensor], first - 1, first + _SAMPLE_SPAN_NS)["ts"].to_pylist())
    return math.gcd(*ends) if ends else None


def _window_in_rows_without_sensor_writes(store: WindowReader) -> int:
    """A store older than SensorWrites: its first and last window ends are what the summary shows."""
    summary = store.summary()
    ns, _ = parse_time_array(pa.array([summary.first_window, summary.last_window], pa.string()))
    return math.gcd(*(int(x) for x in ns))

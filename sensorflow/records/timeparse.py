"""Timestamps to int64 nanoseconds since the Unix epoch, UTC.

Accepted forms: ISO-8601 (the seed's .NET round-trip form with 7 fractional
digits and ``Z``, other fraction lengths, offsets, or no zone meaning UTC),
Event Hubs Capture's ``M/D/YYYY h:mm:ss AM`` form, and epoch numbers, whose
magnitude gives the unit (below 1e11 seconds, below 1e14 milliseconds, below
1e17 microseconds, else nanoseconds).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "NS_PER_S",
    "MISSING",
    "parse_time",
    "parse_time_array",
    "epoch_to_ns",
    "epoch_array_to_ns",
    "format_iso",
    "format_ms",
    "parse_duration",
]

NS_PER_S = 1_000_000_000
MISSING = np.iinfo(np.int64).min
"""Marker for 'no time' in int64 time columns."""

_MIN_NS = int(MISSING)
_MAX_NS = int(np.iinfo(np.int64).max)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ISO = re.compile(  # reduced precision (hours only) and hour-only offsets are ISO-8601 too, and Arrow takes them
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
_CAPTURE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?: ?([AaPp][Mm]))?")
_UTC_TS = pa.timestamp("ns", tz="UTC")


def _civil_to_ns(year, month, day, hour, minute, second, fraction: str, offset_s: int) -> int | None:
    try:
        whole = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    seconds = (whole - _EPOCH) // _ONE_SECOND - offset_s
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    total = seconds * NS_PER_S + nanos
    return total if _MIN_NS < total <= _MAX_NS else None


_ONE_SECOND = datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc) - _EPOCH


def _offset_seconds(zone: str | None) -> int:
    if not zone or zone in ("Z", "z"):
        return 0
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:] or 0) * 60)


def parse_time(text: str) -> int | None:
    """Parse one timestamp string; None when it is not a time we accept."""
    text = text.strip()
    match = _ISO.fullmatch(text)
    if match:
        y, mo, d, h, mi, s, frac, zone = match.groups()
        return _civil_to_ns(
            int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), frac or "", _offset_seconds(zone)
        )
    match = _CAPTURE.fullmatch(text)
    if match:
        mo, d, y, h, mi, s, ampm = match.groups()
        hour = int(h)
        if ampm:
            if not 1 <= hour <= 12:
                return None
            hour = hour % 12 + (12 if ampm.upper() == "PM" else 0)
        return _civil_to_ns(int(y), int(mo), int(d), hour, int(mi), int(s), "", 0)
    return None


def epoch_to_ns(value: float | int) -> int | None:
    """Epoch number to ns, the unit chosen by magnitude; None if not finite or negative."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    for limit, scale in ((1e11, NS_PER_S), (1e14, 1_000_000), (1e17, 1_000), (math.inf, 1)):
        if value < limit:
            ns = round(value * scale) if isinstance(value, float) else int(value) * scale
            return ns if ns <= _MAX_NS else None
    return None


def epoch_array_to_ns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`epoch_to_ns`: returns (ns, ok)."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        ints = values.astype(np.int64)
        scale = np.select([ints < 10**11, ints < 10**14, ints < 10**17], [NS_PER_S, 1_000_000, 1_000], 1)
        ok = (ints >= 0) & (ints <= np.iinfo(np.int64).max // scale)
        return np.where(ok, ints * np.where(ok, scale, 0), 0), ok
    values = values.astype(np.float64)
    ok = np.isfinite(values) & (values >= 0) & (values < 9.2e18)
    safe = np.where(ok, values, 0.0)
    scale = np.select([safe < 1e11, safe < 1e14, safe < 1e17], [1e9, 1e6, 1e3], 1.0)
    return np.round(safe * scale).astype(np.int64), ok


def parse_time_array(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parse a string array: returns (ns, ok); ns is MISSING where not ok.

    The whole array goes through Arrow's ISO-8601 cast when it can; only an
    array holding some other form falls back to parsing element by element.
    """
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    uniform = _parse_uniform_iso(values)
    if uniform is not None:
        return uniform, np.ones(len(uniform), dtype=bool)
    try:
        cast = pc.cast(values, _UTC_TS)
        ns = cast.cast(pa.int64()).fill_null(MISSING).to_numpy(zero_copy_only=False)
        return ns, ns != MISSING
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = np.full(len(values), MISSING, dtype=np.int64)
    for i, text in enumerate(values.to_pylist()):
        if text is not None:
            parsed = parse_time(text)
            if parsed is not None:
                out[i] = parsed
    return out, out != MISSING


# Offsets of the digits of "YYYY-MM-DDTHH:MM:SS"; decimal weights turn them into
# (year, month, day, hour, minute, second).
_DATE_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_FIELD_WEIGHTS = np.array(
    [[1000, 100, 10, 1] + [0] * 10, [0] * 4 + [10, 1] + [0] * 8, [0] * 6 + [10, 1] + [0] * 6,
     [0] * 8 + [10, 1] + [0] * 4, [0] * 10 + [10, 1, 0, 0], [0] * 12 + [10, 1]],
    dtype=np.float64,  # float matmul (exact below 2**53) is BLAS; int64 matmul is not
).T
_DAYS_BEFORE_MONTH = np.array([0, 306, 337, 0, 31, 61, 92, 122, 153, 184, 214, 245, 275], dtype=np.int64)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_NS_PER_DAY = 86_400 * NS_PER_S


def _parse_uniform_iso(values: pa.Array) -> np.ndarray | None:
    """The common case, vectorized: every string ``YYYY-MM-DDTHH:MM:SS[.f{1,9}][Z]`` of one width.

    That is how a fleet's clocks write times (the seed: 7 fractional digits),
    and Arrow's general ISO-8601 cast costs ~10x more. Returns None unless
    every element is such a string and a valid time within 1678..2261 (so
    int64 ns cannot overflow); the caller then takes the general path, so
    results never depend on which path ran.
    """
    n = len(values)
    if n == 0 or values.null_count or values.type != pa.string():
        return None
    offsets = np.frombuffer(values.buffers()[1], np.int32, n + 1, values.offset * 4)
    width = int(offsets[1] - offsets[0])
    if width < 19 or np.any(np.diff(offsets) != width):
        return None
    data, start = values.buffers()[2], int(offsets[0])
    chars = np.frombuffer(data, np.uint8, width * n, start).reshape(n, width)
    zone = chars[0, -1] in (ord("Z"), ord("z"))  # "Z", or no zone at all (UTC too; the stores' text form)
    digits = width - 20 - zone  # fractional digits
    if not (digits == -1 or 1 <= digits <= 9):
        return None
    tail_ok = ((chars[:, -1] == ord("Z")) | (chars[:, -1] == ord("z"))) if zone else np.ones(n, dtype=bool)
    fraction = np.zeros(n, dtype=np.int64)
    if digits > 0:
        tail_ok &= chars[:, 19] == ord(".")
        numeric = chars[:, 20 : 20 + digits] - np.uint8(ord("0"))  # bytes below '0' wrap above 9
        if not (numeric <= 9).all():
            return None
        weights = 10.0 ** np.arange(8, 8 - digits, -1)  # to nanoseconds
        fraction = (numeric.astype(np.float64) @ weights).astype(np.int64)
    if not tail_ok.all():
        return None
    # Readings of one batch share few distinct seconds: parse "YYYY-MM-DDTHH:MM:SS"
    # only where it differs from the row before (compared as 8-byte words).
    words = [np.ndarray((n,), "<u8", data, start + at, (width,)) for at in (0, 8, 11)]
    starts = np.ones(n, dtype=bool)
    for word in words:
        starts[1:] &= word[1:] == word[:-1]
    starts = ~starts
    starts[0] = True
    first = np.flatnonzero(starts)
    seconds = _civil_seconds_ns(chars[first])
    if seconds is None:
        return None
    return seconds[np.cumsum(starts) - 1] + fraction


def _civil_seconds_ns(chars: np.ndarray) -> np.ndarray | None:
    """Rows "YYYY-MM-DDTHH:MM:SS..." to ns since the epoch; None if any row is not a valid time."""
    separators_ok = (
        (chars[:, 4] == ord("-")) & (chars[:, 7] == ord("-")) & (chars[:, 13] == ord(":")) & (chars[:, 16] == ord(":"))
        & ((chars[:, 10] == ord("T")) | (chars[:, 10] == ord(" ")))
    )
    numeric = chars[:, _DATE_DIGITS] - np.uint8(ord("0"))
    if not (separators_ok.all() and (numeric <= 9).all()):
        return None
    year, month, day, hour, minute, second = (numeric.astype(np.float64) @ _FIELD_WEIGHTS).astype(np.int64).T
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    days_in_month = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    valid = (
        month_ok & (day >= 1) & (day <= days_in_month) & (hour <= 23) & (minute <= 59) & (second <= 59)
        & (year >= 1678) & (year <= 2261)
    )
    if not valid.all():
        return None
    # Days since the epoch from the civil date (H. Hinnant's days_from_civil; years here are positive).
    shifted = year - (month <= 2)
    era, year_of_era = np.divmod(shifted, 400)
    day_of_year = _DAYS_BEFORE_MONTH[month] + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468
    return days * _NS_PER_DAY + (hour * 3600 + minute * 60 + second) * NS_PER_S


_DURATION = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)?\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_NS = {"ms": 1_000_000, "s": NS_PER_S, "m": 60 * NS_PER_S, "h": 3600 * NS_PER_S, "d": 86_400 * NS_PER_S}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``250ms``, ``30m``, ``1h30m``, ``1.5h``, ``2d`` as ns (a bare number is seconds).

    ValueError ("bad duration ...") for anything else.
    """
    parts = _DURATION_PART.findall(text) if _DURATION.fullmatch(text) else []
    if not parts or (len(parts) > 1 and any(not unit for _, unit in parts)):  # a bare number stands alone
        raise ValueError(f"bad duration {text!r}: expected a number and a unit ms, s, m, h or d (e.g. 90s, 30m, 1h30m)")
    return round(sum(float(number) * _UNIT_NS[unit or "s"] for number, unit in parts))


def format_iso(ns: int) -> str:
    """One ns time as ISO-8601 UTC to the millisecond, ``YYYY-MM-DDTHH:MM:SS.fffZ`` (truncated)."""
    return f"{np.datetime_as_string(np.datetime64(int(ns) // 1_000_000, 'ms'), unit='ms')}Z"


def format_ms(ns: np.ndarray) -> list[str]:
    """Format ns times as ``YYYY-MM-DD HH:MM:SS.fff`` (the store's text form), truncating to ms."""
    ns = np.asarray(ns, dtype=np.int64)
    unique, inverse = np.unique(ns, return_inverse=True)
    text = np.datetime_as_string((unique // 1_000_000).astype("datetime64[ms]"), unit="ms")
    text = np.char.replace(text, "T", " ")
    return np.array(text.tolist(), dtype=object)[inverse].tolist()  # one str object per distinct time

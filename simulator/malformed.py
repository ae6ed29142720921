"""Malformed message bodies, for exercising dead-letter handling.

Each body is one message that a correct reader must turn into exactly one
dead letter (never zero, never several): no empty arrays, and no values a
lenient parser could coerce (a numeric string, an epoch-number TS, an
integer-valued float).
"""

from __future__ import annotations

import numpy as np

from sensorflow.simulator.timefmt import format_ts

__all__ = ["MALFORMED_KINDS", "malformed_body"]

MALFORMED_KINDS: tuple[str, ...] = (
    "truncated_json",
    "not_utf8",
    "missing_field",
    "wrong_type",
    "non_finite",
    "bad_timestamp",
    "not_object",
    "id_too_long",
    "empty",
)


def _object(ts: str, device: str, tag: str, value: str) -> bytes:
    return f'{{"TS": {ts}, "Device": {device}, "Tag": {tag}, "Value": {value}}}'.encode()


def malformed_body(kind: str, rng: np.random.Generator, device_json: str, tag_json: str, event_ns: int) -> bytes:
    """A malformed body of `kind` that looks like a reading of the given sensor at `event_ns`."""
    ts = f'"{format_ts(event_ns)}"'
    value = f"{rng.uniform(10, 110):.2f}"
    if kind == "truncated_json":
        whole = _object(ts, device_json, tag_json, value)
        return whole[: int(rng.integers(1, len(whole) - 1))]
    if kind == "not_utf8":
        return b'{"TS": "\xff\xfe' + bytes(rng.integers(128, 256, 8, dtype=np.uint8)) + b'"}'
    if kind == "missing_field":
        fields = {"TS": ts, "Device": device_json, "Tag": tag_json, "Value": value}
        del fields[("TS", "Device", "Tag", "Value")[int(rng.integers(0, 4))]]
        return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()
    if kind == "wrong_type":
        choice = int(rng.integers(0, 4))
        if choice == 0:
            return _object(ts, device_json, tag_json, '"high"')
        if choice == 1:
            return _object(ts, device_json, tag_json, "true")
        if choice == 2:
            return _object(ts, f"[{device_json}]", tag_json, value)
        return _object(ts, device_json, "null", value)
    if kind == "non_finite":
        return _object(ts, device_json, tag_json, ("NaN", "Infinity", "-Infinity", '"NaN"')[int(rng.integers(0, 4))])
    if kind == "bad_timestamp":
        bad = ('"2026-13-45T25:61:00Z"', '"yesterday"', "true", '""')[int(rng.integers(0, 4))]
        return _object(bad, device_json, tag_json, value)
    if kind == "not_object":
        return (b'"hello"', b"42", b"null", b"[42]")[int(rng.integers(0, 4))]
    if kind == "id_too_long":
        return _object(ts, '"' + "d" * 200 + '"', tag_json, value)
    if kind == "empty":
        return b""
    raise ValueError(f"unknown malformed kind {kind!r}")

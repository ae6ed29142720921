"""Dead letters: every element that did not become a windowed reading, with the reason why.

Kept as columns (``DEAD_LETTER_SCHEMA``) like everything else that crosses an operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa

__all__ = ["DEAD_LETTER_SCHEMA", "DeadLetter", "DeadLetterBatch", "ReasonCode"]


class ReasonCode(StrEnum):
    """Why an element became a dead letter: the stable first part of its ``reason``.

    A member is its value (a ``str``): the store keeps ``code`` or ``code: detail`` as text,
    exactly as before the codes were an enum.
    """

    BAD_JSON = "bad_json"
    BAD_UTF8 = "bad_utf8"
    EMPTY_MESSAGE = "empty_message"
    EMPTY_ARRAY = "empty_array"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_ID = "bad_id"
    BAD_TIMESTAMP = "bad_timestamp"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    FUTURE = "future"
    NO_ENQUEUED_TIME = "no_enqueued_time"
    BAD_ENVELOPE = "bad_envelope"
    MISSING_BODY = "missing_body"
    TOO_LARGE = "too_large"
    LATE = "late"

    def detail(self, text: str) -> str:
        """The reason ``code: text``."""
        return f"{self.value}: {text}"


DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("partition", pa.string()),
        ("position", pa.int64()),
        ("element", pa.int32()),
        ("reason", pa.string()),
        ("payload", pa.binary()),
        ("ts", pa.int64()),
        ("device", pa.string()),
        ("tag", pa.string()),
        ("value", pa.float64()),
    ]
)


@dataclass(frozen=True)
class DeadLetter:
    """One element that did not become a windowed reading, and why.

    ``reason`` is ``code`` or ``code: detail``; the code alone is stable
    (a :class:`ReasonCode`: ``bad_json``, ``missing_field``, ``late``, ...).
    """

    partition: str
    position: int
    element: int
    reason: str
    payload: bytes | None = None
    ts: int | None = None
    device: str | None = None
    tag: str | None = None
    value: float | None = None


@dataclass(frozen=True, eq=False)
class DeadLetterBatch:
    """Dead letters as columns (schema ``DEAD_LETTER_SCHEMA``)."""

    table: pa.Table = field(default_factory=DEAD_LETTER_SCHEMA.empty_table)

    @classmethod
    def from_records(cls, records: list[DeadLetter]) -> "DeadLetterBatch":
        if not records:
            return cls()
        columns = {name: [getattr(r, name) for r in records] for name in DEAD_LETTER_SCHEMA.names}
        return cls(pa.table(columns, schema=DEAD_LETTER_SCHEMA))

    @classmethod
    def late(cls, partition: str, readings: pa.Table, reason: str = ReasonCode.LATE) -> "DeadLetterBatch":
        """Readings refused by the lateness rule, keeping their values."""
        n = readings.num_rows
        table = pa.table(
            {
                "partition": pa.array([partition] * n, pa.string()),
                "position": readings["position"],
                "element": readings["element"],
                "reason": pa.array([reason] * n, pa.string()),
                "payload": pa.nulls(n, pa.binary()),
                "ts": readings["ts"],
                "device": readings["device"],
                "tag": readings["tag"],
                "value": readings["value"],
            },
            schema=DEAD_LETTER_SCHEMA,
        )
        return cls(table)

    def __len__(self) -> int:
        return self.table.num_rows

"""SQLite's dead-letter rows: TS formatted for the whole column gives what formatting each row alone gave."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.records.dead_letters import DEAD_LETTER_SCHEMA
from sensorflow.records.timeparse import format_ms
from sensorflow.store.sqlite import _dead_letter_rows

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def _letters(ts: list[int | None]) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "partition": [str(i % 3) for i in range(n)],
            "position": pa.array(range(n), pa.int64()),
            "element": pa.array([i % 2 for i in range(n)], pa.int32()),
            "reason": ["late" if t is not None else "bad_json: x" for t in ts],
            "payload": [None if t is not None else b"{" for t in ts],
            "ts": pa.array(ts, pa.int64()),
            "device": [None if t is None else f"d{i}" for i, t in enumerate(ts)],
            "tag": [None if t is None else "t" for t in ts],
            "value": [None if t is None else i / 3 for i, t in enumerate(ts)],
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def _row_by_row(table: pa.Table) -> list[tuple]:
    """What the store bound before: each row's TS formatted on its own."""
    return [
        (r["partition"], r["position"], r["element"], r["reason"], r["payload"],
         None if r["ts"] is None else format_ms([r["ts"]])[0], r["device"], r["tag"], r["value"])
        for r in table.to_pylist()
    ]


@pytest.mark.parametrize(
    "ts",
    [
        [],
        [None, None],
        [T0, T0 + 999_999, T0 + 1_000_000, T0 - 1],  # truncated to the millisecond, before the epoch's second too
        [None, T0 + 5 * S, None, T0 + 5 * S, -1, 0],
    ],
)
def test_dead_letter_rows_format_ts_as_each_row_alone_did(ts: list[int | None]):
    table = _letters(ts)
    assert _dead_letter_rows(table) == _row_by_row(table)


def test_dead_letter_rows_of_many_late_readings_in_chunks():
    rng = np.random.default_rng(3)
    ts = [None if rng.random() < 0.3 else int(T0 + rng.integers(0, 3600 * S)) for _ in range(2_000)]
    table = _letters(ts)
    chunked = pa.concat_tables([table.slice(0, 700), table.slice(700)])  # a concatenation of batches
    assert _dead_letter_rows(chunked) == _row_by_row(table)

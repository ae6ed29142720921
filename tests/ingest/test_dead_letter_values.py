"""A dead letter keeps the element's number only when it had one: a ``bad_type: Value`` letter stores Value
NULL, not 0.0 (issue 17, trap 7), in every store backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.records.readings import MessageBatch
from sensorflow.records.timeparse import MISSING
from tests.conftest import dead_letters_frame, run_flow, seed_message, write_recording
from tests.store.pg import pg_dead_letters

NOW = 1_800_000_000 * 10**9
TS = "2026-01-01T00:00:01Z"
NOT_NUMBERS = ['"high"', "true", "false", "[1.5]", '{"v": 1}', '""', '"12.5"']


def _body(value: str) -> bytes:
    return f'{{"TS": "{TS}", "Device": 1, "Tag": 2, "Value": {value}}}'.encode()


def _batch(bodies: list[bytes], joined: bool) -> MessageBatch:
    n = len(bodies)
    positions, enqueued = np.arange(1, n + 1, dtype=np.int64), np.full(n, MISSING, np.int64)
    if joined:  # as a receiver hands over bodies without line breaks: one block, Arrow's fast path first
        return MessageBatch("p0", None, positions, enqueued, joined=b"\n".join(bodies))
    return MessageBatch("p0", bodies, positions, enqueued)


@pytest.mark.parametrize("joined", [False, True], ids=["bodies", "joined"])
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_value_of_the_wrong_type_is_a_dead_letter_without_a_value(value: str, joined: bool):
    good = [seed_message(TS, 1, 2, 84.5)] * 20  # among good messages, as it comes
    decoded = decode_batch(_batch([*good, _body(value), *good], joined), DecodeConfig(), now_ns=NOW)
    letters = decoded.dead_letters.table.to_pylist()
    assert [(d["reason"], d["value"], d["device"], d["tag"]) for d in letters] == [("bad_type: Value", None, "1", "2")]
    assert orjson.loads(letters[0]["payload"])["Value"] == orjson.loads(value)  # what came is in the payload
    assert len(decoded.readings) == 40


def test_array_elements_of_the_wrong_type_too():
    body = orjson.dumps([{"TS": TS, "Device": 1, "Tag": 2, "Value": v} for v in ("high", True, 3.5)])
    decoded = decode_batch(_batch([body], joined=False), DecodeConfig(), now_ns=NOW)
    assert [(d["element"], d["value"]) for d in decoded.dead_letters.table.to_pylist()] == [(0, None), (1, None)]


def test_numbers_that_came_keep_their_value_in_the_dead_letter():
    """A letter for another reason (here an empty Device) still holds the reading's number."""
    decoded = decode_batch(_batch([b'{"TS": "%s", "Device": "", "Tag": 2, "Value": 7.25}' % TS.encode()], joined=False),
                           DecodeConfig(), now_ns=NOW)
    assert [(d["reason"], d["value"]) for d in decoded.dead_letters.table.to_pylist()] == [("bad_id: Device", 7.25)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_store_keeps_null_for_them(backend: str, tmp_path: Path, request):
    bodies = [seed_message(f"2026-01-01T00:00:{s:02d}Z", 1, 2, float(s)) for s in range(20)]
    bodies[5], bodies[9] = _body('"high"'), _body("true")
    source, db = write_recording(tmp_path / "rec", {"0": bodies}), tmp_path / "s.db"
    if backend == "sqlite":
        run_flow(source, db)
        dead = dead_letters_frame(db)
    else:  # PostgreSQL over ODBC: the code path Azure SQL takes too
        odbc = request.getfixturevalue("postgres_odbc")
        run_flow(source, db, store=f"postgresql+odbc:{odbc}")
        dead = pg_dead_letters(odbc)
    assert list(dead["Reason"]) == ["bad_type: Value"] * 2
    assert dead["Value"].isna().all(), dead

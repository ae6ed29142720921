"""A bad message costs only itself: it leaves the columnar path alone, with the answers of the slow path."""

from pathlib import Path
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sensorflow.ingest.decode as decode_module
import sensorflow.ingest.replay.jsonl as jsonl_module
from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.ingest.jsonblock import LEAF, Lines, isolate
from sensorflow.ingest.replay.jsonl import JsonlReader
from sensorflow.records.readings import MessageBatch
from sensorflow.records.timeparse import MISSING
from sensorflow.simulator.envelope import envelope_line
from sensorflow.simulator.malformed import MALFORMED_KINDS, malformed_body

NOW = 1_800_000_000 * 10**9
T0 = 1_767_225_600 * 10**9  # 2026-01-01


def good(i: int) -> bytes:
    return b'{"TS": "2026-01-01T00:%02d:%02d.5000000Z", "Device": %d, "Tag": %d, "Value": %d.25}' % (
        i // 60 % 60, i % 60, i % 97, i % 7, i
    )


def bad(kind: str, seed: int) -> bytes:
    return malformed_body(kind, np.random.default_rng(seed), "3", "4", T0 + seed * 10**9)


def list_batch(bodies: list[bytes]) -> MessageBatch:
    n = len(bodies)
    return MessageBatch("p", list(bodies), np.arange(1, n + 1, dtype=np.int64), np.full(n, MISSING, np.int64))


def joined_batch(bodies: list[bytes]) -> MessageBatch:
    n = len(bodies)
    return MessageBatch("p", None, np.arange(1, n + 1, dtype=np.int64), np.full(n, MISSING, np.int64),
                        joined=b"\n".join(bodies))


def slowly(batch: MessageBatch):
    """The reference: every message through the message-by-message path."""
    with mock.patch.object(decode_module, "_parse_arrays", lambda bodies: None), \
            mock.patch.object(decode_module, "_parse_fast_list", lambda bodies: None), \
            mock.patch.object(decode_module, "_parse_fast", lambda joined, n: None):
        return decode_batch(batch, DecodeConfig(), now_ns=NOW)


def assert_same(fast, slow):
    assert fast.readings.table.equals(slow.readings.table)
    assert fast.dead_letters.table.equals(slow.dead_letters.table)
    assert fast.elements == slow.elements


def spy_slow():
    real = decode_module._parse_slow
    seen: list[bytes] = []

    def spy(bodies):
        seen.extend(bodies)
        return real(bodies)

    return seen, mock.patch.object(decode_module, "_parse_slow", spy)


@pytest.mark.parametrize("make", [list_batch, joined_batch])
@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_one_bad_message_among_thousands_goes_alone_to_the_slow_path(kind, make):
    bodies = [good(i) for i in range(3000)]
    body = bad(kind, 1)
    if make is joined_batch and b"\n" in body:
        pytest.skip("a joined batch holds no line break in a body")
    bodies[1234] = body
    seen, patch = spy_slow()
    with patch:
        decoded = decode_batch(make(bodies), DecodeConfig(), now_ns=NOW)
    assert len(decoded.readings) + len(decoded.dead_letters) == 3000
    (dead,) = decoded.dead_letters.table.to_pylist()
    assert dead["position"] == 1235 and dead["payload"] in (body, b"42")  # [42]: the element is the payload
    assert seen in ([], [body])  # valid JSON the checks refuse never even leaves Arrow
    assert_same(decoded, slowly(make(bodies)))


def test_one_bad_message_costs_a_few_small_reads_not_a_reread_of_the_batch():
    bodies = [good(i) for i in range(4000)]
    # Valid JSON that looks plain but Arrow refuses (a string TS among times it reads as times).
    bodies[2500] = b'{"TS": "2026-02-30T00:00:00.5000000Z", "Device": 1, "Tag": 1, "Value": 1.25}'
    reads = []
    real = decode_module.read_object_lines

    def spy(block, lines, parse):
        reads.append(lines)
        return real(block, lines, parse)

    with mock.patch.object(decode_module, "read_object_lines", spy):
        decoded = decode_batch(joined_batch(bodies), DecodeConfig(), now_ns=NOW)
    assert decoded.dead_letters.table["reason"].to_pylist() == ["bad_timestamp"]
    assert len(decoded.readings) == 3999
    assert sum(reads) < 3 * 4000  # the whole batch twice (as times, as text), then pieces of an eighth
    assert_same(decoded, slowly(joined_batch(bodies)))


_good_bodies = st.integers(0, 10_000).map(good)
_bad_bodies = st.tuples(st.sampled_from(MALFORMED_KINDS), st.integers(0, 1000)).map(lambda ks: bad(*ks))
_arrays = st.lists(st.integers(0, 10_000).map(lambda i: orjson.loads(good(i))), min_size=1, max_size=4).map(orjson.dumps)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(_good_bodies, _good_bodies, _good_bodies, _bad_bodies, _arrays), min_size=1, max_size=200))
def test_mixed_batches_decode_as_the_slow_path_does_in_message_order(bodies):
    for make in (list_batch, joined_batch):
        if make is joined_batch and any(b"\n" in body for body in bodies):
            continue
        fast = decode_batch(make(bodies), DecodeConfig(), now_ns=NOW)
        assert_same(fast, slowly(make(bodies)))
        positions = fast.readings.table["position"].to_numpy()
        assert (np.diff(positions) >= 0).all()


def test_isolate_reads_pieces_around_the_refused_lines():
    refused = {17, 300, 301}
    index = np.arange(1000)
    parts, left = isolate(index, lambda lines: None if refused & set(lines.tolist()) else len(lines))
    assert set(left.tolist()) >= refused and len(left) <= 3 * 8
    got = np.concatenate([lines for lines, _ in parts] + [left])
    assert sorted(got.tolist()) == list(range(1000))
    assert [lines[0] for lines, _ in parts] == sorted(lines[0] for lines, _ in parts)  # in line order


def test_lines_join_takes_runs_of_lines():
    lines = Lines(b"a\nbb\n\nccc\nd", 5)
    assert lines.join(np.array([0, 1, 3])) == b"a\nbb\nccc"
    assert lines.take(np.array([2, 4])) == [b"", b"d"]
    assert lines.lengths.tolist() == [1, 2, 0, 3, 1]


# -- envelopes: one Arrow read for the plain ones, the odd ones unwrapped alone -------------------------


def envelope(seq: int, body: bytes) -> bytes:
    return envelope_line(0, seq, seq * 100, T0 + seq * 10**6, "7", body).rstrip(b"\n")


def read_everything(path: Path):
    reader = JsonlReader(path, "0")
    batches = []
    while True:
        batches.append(reader.read())
        if batches[-1].eof:
            return batches


def line_by_line(lines: list[bytes]) -> tuple[list[bytes], list[int], list[int], list[tuple[int, str]]]:
    bodies, positions, enqueued, rejects = [], [], [], []
    for number, line in enumerate(lines, start=1):
        envelope_ = jsonl_module._envelope(line)
        if envelope_ is None:
            bodies.append(line), positions.append(number), enqueued.append(MISSING)
        elif envelope_[0] is None:
            rejects.append((envelope_[1] if envelope_[1] is not None else number, "bad_envelope"))
        else:
            bodies.append(envelope_[0])
            positions.append(envelope_[1] if envelope_[1] is not None else number)
            enqueued.append(envelope_[2])
    return bodies, positions, enqueued, rejects


def test_odd_envelope_lines_are_unwrapped_alone_and_the_rest_stays_one_block(tmp_path: Path):
    lines = [envelope(seq, good(seq)) for seq in range(2000)]
    lines[100] = envelope(100, b"\xff\xfe not UTF-8")  # a base64 body
    lines[700] = b'{"body": 5, "sequence_number": 700}'  # bad_envelope
    lines[701] = b'{"sequence_number": 701, "body": "{\\"TS\\": 1}", "enqueued_time": "yesterday"}'
    lines[1500] = lines[1500][:-3]  # a broken envelope line: a raw (bad JSON) message
    lines[1600] = good(1600)  # a raw line among envelopes
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    unwrapped = []
    real = jsonl_module._envelope

    def spy(line):
        unwrapped.append(line)
        return real(line)

    with mock.patch.object(jsonl_module, "_envelope", spy):
        (batch,) = read_everything(path)
    odd = (100, 700, 701, 1500, 1600)
    assert len(unwrapped) <= len(odd) * LEAF  # a refused piece read line by line is at most LEAF lines
    assert batch.joined is not None  # no body holds a line break: still one block for the decoder
    bodies, positions, enqueued, rejects = line_by_line(lines)
    assert batch.bodies == bodies
    assert batch.positions.tolist() == positions
    assert batch.enqueued_ns.tolist() == enqueued
    assert [(r.position, r.reason) for r in batch.rejects] == rejects


def test_a_body_with_a_line_break_among_envelopes_keeps_its_bytes(tmp_path: Path):
    lines = [envelope(seq, good(seq)) for seq in range(50)]
    lines[20] = envelope(20, orjson.dumps(orjson.loads(good(20)), option=orjson.OPT_INDENT_2))
    lines[30] = envelope(30, b"\xff")
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    (batch,) = read_everything(path)
    bodies, positions, enqueued, _ = line_by_line(lines)
    assert batch.bodies == bodies and batch.positions.tolist() == positions and batch.enqueued_ns.tolist() == enqueued

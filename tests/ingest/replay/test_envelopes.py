"""Plain envelope lines cut apart without a parser pass: the same messages as the general path.

``envelopes.plain_envelopes`` only proves lines plain; every line it leaves goes to the reader's
general path (Arrow, then line by line). So the reference is the same reader with the plain
path switched off, on lines made to sit at the edges of "plain".
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sensorflow.ingest.replay.jsonl as jsonl_module
from sensorflow.ingest.replay.jsonl import JsonlReader
from sensorflow.records.timeparse import MISSING
from sensorflow.simulator.envelope import envelope_line

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def read_all(path: Path, block_bytes: int = 1 << 20) -> list:
    reader = JsonlReader(path, "0", block_bytes=block_bytes)
    batches = []
    while True:
        batches.append(reader.read())
        if batches[-1].eof:
            reader.close()
            return batches


def messages(batches: list) -> tuple[list, list, list, list]:
    return (
        [body for batch in batches for body in batch.bodies],
        [p for batch in batches for p in batch.positions.tolist()],
        [e for batch in batches for e in batch.enqueued_ns.tolist()],
        [(r.position, r.reason, r.payload) for batch in batches for r in batch.rejects],
    )


def without_plain_path(path: Path, block_bytes: int = 1 << 20) -> list:
    with mock.patch.object(jsonl_module, "plain_envelopes", lambda lines, keys: None):
        return read_all(path, block_bytes)


def body(seq: int) -> bytes:
    return b'{"TS": "2026-01-01T00:00:%02d.0000000Z", "Device": %d, "Tag": 3, "Value": %d.25}' % (seq % 60, seq % 7, seq)


def test_the_simulators_envelopes_take_no_parser_pass_and_read_as_line_by_line(tmp_path: Path):
    lines = [envelope_line(0, seq, seq * 77, T0 + seq * 10**6, str(seq % 5), body(seq)) for seq in range(3000)]
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(b"".join(lines))
    with mock.patch.object(jsonl_module, "read_object_lines") as arrow, mock.patch.object(jsonl_module, "_envelope") as alone:
        batches = read_all(path, block_bytes=64 << 10)
    assert not arrow.called and not alone.called
    assert all(batch.joined is not None for batch in batches)
    bodies, positions, enqueued, rejects = messages(batches)
    assert bodies == [body(seq) for seq in range(3000)]
    assert positions == list(range(3000))
    assert enqueued == [T0 + seq * 10**6 for seq in range(3000)]
    assert rejects == []


# Pieces of envelope lines at the edges of "plain": valid and invalid JSON, other types, escapes. (Not
# NaN nor Infinity: Arrow's reader takes them and the line-by-line fallback does not, so on the
# general path such a line's fate depends on its neighbours, with or without the plain path.)
SEQUENCES = [b"17", b"  17", b"-3", b"0", b"007", b"-0", b"1.0", b"1e3", b'"17"', b"null", b"true",
             b"12345678901234567", b"123456789012345678901", b"[1]", b"01"]
ENQUEUED = [b'"2026-01-01T00:00:01.250Z"', b'"2026-01-01T00:00:01Z"', b'"yesterday"', b'""', b"null", b"5",
            b'"2026-01-01 00:00:01"']
EXTRAS = [b'"partition":"0"', b'"partition_key":"12"', b'"offset":"000000000077"', b'"n":007', b'"n":-0.5e-3',
          b'"n":{"a":[1,2,{"b":null}]}', b'"k":"a\\"b"', b'"k":"\\n"', b'"k":"\t"', b'"sequence_number":5',
          b'"a":true', b'"a" : [ ]', b'"body1":2', b'"enqueued_time":"2026-01-02T00:00:00Z"', b'"x":"body"',
          b'"m":{"body":"x"}']
BODIES = [b'"' + body(5).replace(b'"', b'\\"') + b'"', b'"' + body(6).replace(b'"', b'\\"') + b'"', b'""',
          b'"{\\"TS\\": \\"a\\\\b\\"}"', b'"{\\"TS\\": 1}\\n"', b'"\\u00e9"', b'"caf\xc3\xa9"', b'"{"TS": 1}"',
          b'"a\\"', b'"\\"\\""', b'{"base64": "AAEC"}', b'5', b'"{\\"a\\": 1}", "z": 1', b'"x" }', b'"x"}}',
          b'"\\\\\\""', b'"{\\"TS\\": 1}', b'"[{\\"TS\\": 1}]"', b'"{\\"TS\\": 1}"\t']
TAILS = [b"", b"   ", b" \t", b"}", b" x"]


@st.composite
def envelope_lines(draw) -> bytes:
    pieces = []
    if draw(st.booleans()):
        pieces.append(b'"sequence_number":' + draw(st.sampled_from(SEQUENCES)))
    if draw(st.booleans()):
        pieces.append(b'"enqueued_time":' + draw(st.sampled_from(ENQUEUED)))
    pieces += draw(st.lists(st.sampled_from(EXTRAS), max_size=3))
    pieces = draw(st.permutations(pieces))
    separator = draw(st.sampled_from([b",", b", ", b" ,"]))
    body_key = draw(st.sampled_from([b'"body":', b'"body": ', b'"body" :']))
    head = b"{" + separator.join(pieces) + (separator if pieces else b"") + body_key
    line = draw(st.sampled_from([b"", b" ", b"\xef\xbb\xbf"])) + head + draw(st.sampled_from(BODIES)) + b"}" + draw(st.sampled_from(TAILS))
    return line if draw(st.integers(0, 9)) else body(draw(st.integers(0, 99)))  # now and then a raw line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(envelope_lines(), min_size=1, max_size=40), st.data())
def test_plain_or_not_every_line_reads_as_the_general_path_reads_it(tmp_path: Path, lines: list[bytes], data):
    plain = [envelope_line(0, seq, seq, T0 + seq, "1", body(seq)).rstrip(b"\n") for seq in range(data.draw(st.integers(0, 30)))]
    mixed = data.draw(st.permutations(plain + lines))
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(b"\n".join(mixed) + b"\n")
    block = data.draw(st.sampled_from([256, 4096, 1 << 20]))
    assert messages(read_all(path, block)) == messages(without_plain_path(path, block))


def test_a_long_run_of_plain_lines_with_odd_ones_keeps_every_message_in_place(tmp_path: Path):
    lines = [envelope_line(0, seq, seq * 77, T0 + seq * 10**6, "4", body(seq)).rstrip(b"\n") for seq in range(2000)]
    lines[10] = b'{"sequence_number": 10, "body": "{\\"TS\\": \\"\\u00e9\\"}", "enqueued_time": "x"}'
    lines[11] = b'{"sequence_number": 007, "body": "{}"}'
    lines[500] = lines[500].replace(b'"body":"', b'"k":"\\"","body":"')
    lines[900] = lines[900][:-2]
    lines[1999] = b"null"
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = messages(read_all(path))
    assert got == messages(without_plain_path(path))
    bodies, positions, enqueued, _ = got
    assert positions[:10] == list(range(10)) and positions[11] == 12  # line 12: an invalid line, a raw message
    assert bodies[11] == lines[11] and enqueued[11] == MISSING
    assert orjson.loads(bodies[1000]) == orjson.loads(body(1000))

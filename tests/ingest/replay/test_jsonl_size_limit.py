"""The JSON Lines reader and ``max_message_bytes``: huge lines are streamed past, never held."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.ingest.replay.jsonl import JsonlReader, held_line_bytes

LIMIT = 200


def read_all(reader: JsonlReader, max_messages: int | None = None) -> list:
    batches = []
    while True:
        batch = reader.read(max_messages)
        batches.append(batch)
        if batch.eof:
            return batches


def messages(batches) -> list[tuple[int, bytes]]:
    """(position, body) of every message handed out, rejects as (position, b"REJECT:" + reason)."""
    out = []
    for batch in batches:
        out += list(zip(batch.positions.tolist(), batch.bodies))
        out += [(r.position, b"REJECT:" + r.reason.encode()) for r in batch.rejects]
    return sorted(out)


def rejects(batches) -> list:
    return [r for batch in batches for r in batch.rejects]


def raw(size: int, fill: bytes = b"x") -> bytes:
    """A raw line of exactly ``size`` bytes (a JSON object: what decoding would see)."""
    head = b'{"Note": "'
    return head + fill * (size - len(head) - 2) + b'"}'


def envelope(sequence: int, body: bytes) -> bytes:
    return orjson.dumps({"partition": "0", "sequence_number": sequence, "offset": "0", "body": body.decode()})


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_a_raw_line_at_the_limit_passes_and_one_byte_over_is_rejected(tmp_path: Path, line_end: bytes):
    path = tmp_path / "p.jsonl"
    path.write_bytes(raw(LIMIT) + line_end + raw(LIMIT + 1) + line_end + b"{}" + line_end)
    batches = read_all(JsonlReader(path, "p", block_bytes=128, max_message_bytes=LIMIT))
    assert [(p, len(b)) for p, b in messages(batches) if not b.startswith(b"REJECT")] == [(1, LIMIT), (3, 2)]
    (reject,) = rejects(batches)
    assert reject.position == 2
    assert reject.reason == f"too_large: {LIMIT + 1} bytes > max_message_bytes {LIMIT}"
    assert reject.payload == raw(LIMIT + 1)  # shorter than the 1 KiB kept: all of it, without the \r


def test_a_line_spanning_many_blocks_is_streamed_past(tmp_path: Path):
    huge = b"[" + b",".join([b'{"TS": "2026-01-01T00:00:00Z", "Device": 1, "Tag": 1, "Value": 1.5}'] * 20_000) + b"]"
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"{}\n" + huge + b"\n{}\n")
    reader = JsonlReader(path, "p", block_bytes=4096, max_message_bytes=LIMIT)
    batches = read_all(reader)
    assert len(huge) > 300 * 4096 and len(huge) > held_line_bytes(LIMIT)
    (reject,) = rejects(batches)
    assert (reject.position, reject.payload) == (2, huge[:1024])
    assert reject.reason == f"too_large: {len(huge)} bytes > max_message_bytes {LIMIT}"
    assert [p for p, b in messages(batches) if not b.startswith(b"REJECT")] == [1, 3]
    assert reader.position == (path.stat().st_size, 3)
    assert not any(len(batch.bodies) and max(map(len, batch.bodies)) > 2 for batch in batches)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1, 5000, 200_000])
def test_a_last_line_without_newline(tmp_path: Path, size: int):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"{}\n" + raw(size))
    reader = JsonlReader(path, "p", block_bytes=128, max_message_bytes=LIMIT)
    batches = read_all(reader)
    assert batches[-1].eof
    assert reader.position == (path.stat().st_size, 2)
    if size <= LIMIT:
        assert messages(batches) == [(1, b"{}"), (2, raw(size))]
    else:
        (reject,) = rejects(batches)
        assert (reject.position, reject.reason.split(":")[1]) == (2, f" {size} bytes > max_message_bytes {LIMIT}")
        assert reject.payload == raw(size)[:1024]


def test_envelope_positions(tmp_path: Path):
    """A refused envelope line is positioned by its sequence number when its head names it before
    the body, else by its line number; an envelope whose body is at the limit passes (the line,
    escapes and all, is longer: decoding judges the body), and one a byte over is refused by decoding,
    at its sequence number."""
    body_at, body_over = raw(LIMIT), raw(LIMIT + 1)
    huge_body = raw(held_line_bytes(LIMIT))
    late_sequence = b'{"partition": "0", "body": "' + b"y" * held_line_bytes(LIMIT) + b'", "sequence_number": 40}'
    lines = [
        envelope(10, body_at),
        envelope(11, body_over),
        envelope(12, huge_body),  # longer than the reader holds: refused by the reader, sequence from the head
        late_sequence,  # longer than held, sequence_number after the body: its line number
        envelope(14, b"{}"),
    ]
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert len(lines[0]) > LIMIT
    for block in (128, 4096, 1 << 20):
        batches = read_all(JsonlReader(path, "p", block_bytes=block, max_message_bytes=LIMIT))
        assert [(r.position, r.reason.split(":")[0]) for r in rejects(batches)] == [(12, "too_large"), (4, "too_large")]
        assert rejects(batches)[0].payload == lines[2][:1024]
        assert [p for batch in batches for p in batch.positions.tolist()] == [10, 11, 14]
        decoded = [decode_batch(b, DecodeConfig(max_message_bytes=LIMIT)) for b in batches]
        dead = [(p, r.split(":")[0]) for d in decoded for p, r in zip(d.dead_letters.table["position"].to_pylist(),
                                                                    d.dead_letters.table["reason"].to_pylist())]
        assert sorted(dead) == [(4, "too_large"), (10, "missing_field"), (11, "too_large"), (12, "too_large"),
                                (14, "missing_field")]


def test_a_raw_line_with_body_in_it_is_judged_by_decoding(tmp_path: Path):
    """A raw line that merely holds "body" goes to decoding (it may be an envelope): refused there."""
    line = b'{"Inner": {"body": 5}, "Note": "' + b"z" * 2 * LIMIT + b'"}'
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"{}\n" + line + b"\n")
    (batch,) = read_all(JsonlReader(path, "p", block_bytes=1 << 16, max_message_bytes=LIMIT))
    assert batch.positions.tolist() == [1, 2] and not batch.rejects
    decoded = decode_batch(batch, DecodeConfig(max_message_bytes=LIMIT))
    reasons = dict(zip(decoded.dead_letters.table["position"].to_pylist(), decoded.dead_letters.table["reason"].to_pylist()))
    assert reasons[2] == f"too_large: {len(line)} bytes > max_message_bytes {LIMIT}"


def test_paced_reads_reach_the_refused_line_in_order(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"{}\n{}\n" + raw(3 * LIMIT) + b"\n{}\n")
    batches = read_all(JsonlReader(path, "p", block_bytes=1 << 16, max_message_bytes=LIMIT), max_messages=1)
    assert [(batch.positions.tolist(), [r.position for r in batch.rejects]) for batch in batches if batch.messages] == [
        ([1], []), ([2], []), ([], [3]), ([4], []),
    ]


LINES = st.lists(
    st.one_of(
        st.integers(1, 40).map(lambda n: b"{" + b"a" * n + b"}"),
        st.integers(LIMIT - 2, LIMIT + 2).map(raw),
        st.integers(held_line_bytes(LIMIT) - 2, held_line_bytes(LIMIT) + 3000).map(raw),
        st.integers(0, 3).map(lambda n: envelope(100 + n, raw(LIMIT + n - 1))),
        st.integers(0, 2).map(lambda n: envelope(200 + n, raw(held_line_bytes(LIMIT) // 2 + n * 3000, b"'"))),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(lines=LINES, cut=st.integers(0, 12), block=st.sampled_from([128, 1000, 4096, 1 << 16]),
       end=st.sampled_from([b"\n", b"\r\n"]), last_newline=st.booleans())
def test_positions_and_rejects_do_not_depend_on_blocks_or_where_a_replay_resumed(
    tmp_path_factory, lines, cut, block, end, last_newline
):
    """The same messages and rejects, at the same positions, whatever the block size, and a
    replay resumed after any message continues with exactly the rest."""
    path = tmp_path_factory.mktemp("r") / "p.jsonl"
    data = end.join(lines) + (end if last_newline else b"")
    path.write_bytes(data)
    reference = messages(read_all(JsonlReader(path, "p", block_bytes=1 << 22, max_message_bytes=LIMIT)))
    assert len(reference) == len(lines)
    whole = JsonlReader(path, "p", block_bytes=block, max_message_bytes=LIMIT)
    assert messages(read_all(whole)) == reference
    assert whole.position == (len(data), len(lines))
    first = JsonlReader(path, "p", block_bytes=block, max_message_bytes=LIMIT)
    taken = []
    while len(taken) < min(cut, len(lines)):
        taken += messages([first.read(max_messages=1)])
    rest = messages(read_all(JsonlReader(path, "p", first.position, block, LIMIT)))
    assert sorted(taken + rest) == reference

from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.ingest.replay.avro import CAPTURE_SCHEMA, AvroReader
from sensorflow.ingest.replay.jsonl import JsonlReader
from sensorflow.ingest.replay.source import RecordingError, ReplaySource, discover_partitions
from sensorflow.records.timeparse import MISSING

ENVELOPE = (
    b'{"partition": "3", "sequence_number": 17, "offset": "4096", "enqueued_time": "2026-01-01T00:00:01.250Z", '
    b'"partition_key": "7", "body": "{\\"TS\\": 1}"}'
)


def read_all(reader):
    batches = []
    while True:
        batch = reader.read()
        batches.append(batch)
        if batch.eof:
            return batches


def test_jsonl_envelopes_raw_lines_base64_and_crlf(tmp_path: Path):
    path = tmp_path / "partition-3.jsonl"
    path.write_bytes(
        b'{"Device": 1}\r\n' + ENVELOPE + b"\n" + b'{"body": {"base64": "//79"}, "sequence_number": 18}\n'
        b'{"body": 5, "sequence_number": 19}\n' + b"no newline at the end"
    )
    (batch,) = read_all(JsonlReader(path, "3"))
    assert batch.bodies == [b'{"Device": 1}', b'{"TS": 1}', b"\xff\xfe\xfd", b"no newline at the end"]
    assert batch.positions.tolist() == [1, 17, 18, 5]  # raw lines by line number, envelopes by sequence
    assert batch.enqueued_ns.tolist() == [MISSING, 1_767_225_601_250_000_000, MISSING, MISSING]
    assert [(r.position, r.reason) for r in batch.rejects] == [(19, "bad_envelope")]
    assert batch.eof


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"_")), max_size=30),
       cut=st.integers(0, 30), block=st.sampled_from([128, 256, 4096]))
def test_jsonl_resume_from_any_position_gives_the_rest_exactly(tmp_path_factory, lines, cut, block):
    path = tmp_path_factory.mktemp("r") / "p.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    whole = [b for batch in read_all(JsonlReader(path, "p", block_bytes=block)) for b in batch.bodies]
    first = JsonlReader(path, "p", block_bytes=block)
    taken = []
    while len(taken) < min(cut, len(lines)):
        taken += first.read(max_messages=1).bodies
    rest = [b for batch in read_all(JsonlReader(path, "p", first.position, block)) for b in batch.bodies]
    assert taken + rest == whole
    assert len(whole) == len(lines)


def write_capture(directory: Path, records: list[tuple[int, bytes | None]]) -> None:
    directory.mkdir(parents=True)
    for index in range(0, len(records), 3):
        rows = [
            {"SequenceNumber": seq, "Offset": str(seq * 100), "EnqueuedTimeUtc": "1/1/2026 12:00:01 AM",
             "SystemProperties": {}, "Properties": {}, "Body": body}
            for seq, body in records[index : index + 3]
        ]
        with open(directory / f"{index:04d}.avro", "wb") as f:
            fastavro.writer(f, fastavro.parse_schema(CAPTURE_SCHEMA), rows)


def test_capture_avro_partition_reads_in_file_order_and_resumes(tmp_path: Path):
    records = [(i, b'{"n": %d}' % i) for i in range(7)] + [(7, None)]
    write_capture(tmp_path / "cap" / "0", records)
    parts = discover_partitions(tmp_path / "cap")
    reader = AvroReader(parts["0"], "0", batch_records=2)
    first = reader.read()
    assert first.positions.tolist() == [0, 1]
    assert first.enqueued_ns.tolist() == [1_767_225_601_000_000_000] * 2
    rest = read_all(AvroReader(parts["0"], "0", reader.position, batch_records=2))
    assert [p for b in rest for p in b.positions.tolist()] == [2, 3, 4, 5, 6]
    assert [r.reason for b in rest for r in b.rejects] == ["missing_body"]


def test_discover_partitions(tmp_path: Path):
    (tmp_path / "partition-0.jsonl").write_text("")
    (tmp_path / "other.jsonl").write_text("")
    assert sorted(discover_partitions(tmp_path)) == ["0", "other"]
    assert list(discover_partitions(tmp_path / "other.jsonl")) == ["other"]
    with pytest.raises(RecordingError, match="not found"):
        discover_partitions(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="no recording"):
        discover_partitions(tmp_path / "empty")


def test_source_partition_snapshot_is_after_the_last_emitted_batch(tmp_path: Path):
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(b"".join(b'{"i": %d}\n' % i for i in range(100)))
    source = ReplaySource(tmp_path, block_bytes=128)
    part = source.build_part("read", "0", None)
    emitted = part.next_batch() + part.next_batch()
    resumed = source.build_part("read", "0", part.snapshot())
    rest = []
    while True:
        try:
            rest += resumed.next_batch()
        except StopIteration:
            break
    bodies = [b for batch in emitted + rest for b in batch.bodies]
    assert bodies == [b'{"i": %d}' % i for i in range(100)]
    assert rest[-1].eof


def test_paced_replay_holds_messages_until_due(tmp_path: Path):
    path = tmp_path / "partition-0.jsonl"
    reading = b'{"TS": "%s", "Device": 1, "Tag": 1, "Value": 1}\n'  # pacing follows the readings decoding accepts
    path.write_bytes(b"".join(reading % ts for ts in (b"2026-01-01T00:00:00Z", b"2026-01-01T00:00:00.1Z", b"2026-01-01T01:00:00Z")))
    part = ReplaySource(tmp_path, speed=1.0).build_part("read", "0", None)
    got = []
    for _ in range(50):
        got += [b for batch in part.next_batch() for b in batch.bodies]
    assert len(got) < 3  # the third message is an hour of replay time away
    assert part.next_awake() is not None


def test_envelope_blocks_read_in_one_go_match_a_line_by_line_reading(tmp_path: Path):
    import orjson

    path = tmp_path / "partition-0.jsonl"
    lines = []
    for seq in range(300):
        body = {"TS": f"2026-01-01T00:00:{seq % 60:02d}.5000000Z", "Device": seq % 7, "Tag": "t", "Value": seq / 3}
        lines.append(orjson.dumps({"partition": "0", "sequence_number": 1000 + seq, "offset": str(seq),
                                   "enqueued_time": f"2026-01-01T00:01:{seq % 60:02d}.250Z",
                                   "body": orjson.dumps(body, option=orjson.OPT_INDENT_2 if seq == 7 else 0).decode()}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = read_all(JsonlReader(path, "0", block_bytes=4096))
    bodies = [b for batch in got for b in batch.bodies]
    positions = [p for batch in got for p in batch.positions.tolist()]
    enqueued = [e for batch in got for e in batch.enqueued_ns.tolist()]
    expected = [orjson.loads(line) for line in lines]
    assert bodies == [e["body"].encode() for e in expected]
    assert positions == [e["sequence_number"] for e in expected]
    assert enqueued == [1_767_225_660_250_000_000 + (i % 60) * 1_000_000_000 for i in range(300)]
    assert any(b.joined is not None for b in got)  # the one-read path was taken


def test_a_null_line_among_envelopes_is_read_line_by_line(tmp_path: Path):
    path = tmp_path / "partition-0.jsonl"
    path.write_bytes(ENVELOPE + b"\nnull\n" + ENVELOPE + b"\n")
    (batch,) = read_all(JsonlReader(path, "0"))
    assert batch.bodies == [b'{"TS": 1}', b"null", b'{"TS": 1}']

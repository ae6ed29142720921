"""Capture-style Avro recordings: Event Hubs Capture's schema and layout, same messages as JSON Lines."""

from __future__ import annotations

import re
from collections import defaultdict

import fastavro

from sensorflow.simulator import DeliverySpec, MessageSpec, write_capture_recording, write_jsonl_recording
from tests.simulator.helpers import fleet_config, read_recording

CAPTURE_TIME = re.compile(r"^(1[0-2]|[1-9])/([1-9]|[12]\d|3[01])/\d{4} (1[0-2]|[1-9]):[0-5]\d:[0-5]\d (AM|PM)$")


def test_avro_files_follow_the_capture_schema_and_carry_the_recorded_messages(tmp_path):
    config = fleet_config(delivery=DeliverySpec(malformed_fraction=0.02), messages=MessageSpec(readings_per_message=3))
    summary = write_capture_recording(tmp_path / "avro", config, window_s=120)
    write_jsonl_recording(tmp_path / "jsonl", config)
    files = sorted((tmp_path / "avro").glob("*/*/*/*/*/*/*.avro"))
    assert (tmp_path / "avro" / "labels.json").exists()
    assert {f.relative_to(tmp_path / "avro").parts[0] for f in files} <= {"0", "1", "2", "3"}
    records = defaultdict(list)
    for path in files:
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle)
            schema = reader.writer_schema
            assert schema["name"] == "Microsoft.ServiceBus.Messaging.EventData"
            assert [f["name"] for f in schema["fields"]] == [
                "SequenceNumber", "Offset", "EnqueuedTimeUtc", "SystemProperties", "Properties", "Body",
            ]
            types = {f["name"]: f["type"] for f in schema["fields"]}
            assert types["SequenceNumber"] == "long" and types["Body"] == ["null", "bytes"]
            assert types["SystemProperties"]["values"] == ["long", "double", "string", "bytes"]
            for record in reader:
                assert CAPTURE_TIME.match(record["EnqueuedTimeUtc"]), record["EnqueuedTimeUtc"]
                records[path.relative_to(tmp_path / "avro").parts[0]].append(record)
    assert sum(len(r) for r in records.values()) == summary.messages
    jsonl = defaultdict(list)
    for line in read_recording(tmp_path / "jsonl"):
        jsonl[line.file_partition].append(line)
    assert set(jsonl) == set(records)
    for partition, partition_records in records.items():
        assert [r["SequenceNumber"] for r in partition_records] == list(range(len(partition_records)))
        assert [r["Body"] for r in partition_records] == [line.body for line in jsonl[partition]]
        offsets = [int(line.envelope["offset"]) for line in jsonl[partition]]
        assert [int(r["Offset"]) for r in partition_records] == offsets


def test_capture_windows_split_files_by_enqueued_time(tmp_path):
    write_capture_recording(tmp_path, fleet_config(), window_s=60)
    per_partition = defaultdict(list)
    for path in sorted(tmp_path.glob("*/*/*/*/*/*/*.avro")):
        per_partition[path.relative_to(tmp_path).parts[0]].append(path)
    for paths in per_partition.values():
        assert len(paths) == 10  # 600 s in 60 s windows
        assert [p.relative_to(tmp_path).parts[1:] for p in paths][0] == ("2026", "01", "01", "00", "00", "00.avro")

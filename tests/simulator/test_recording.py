"""JSON Lines recordings: determinism, partitioning, numbering, delivery faults, message shapes."""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from datetime import datetime

import pytest

from sensorflow.simulator import (
    DeliverySpec,
    FleetSpec,
    MessageSpec,
    partition_for_key,
    write_jsonl_recording,
)
from sensorflow.simulator.envelope import envelope_line
from tests.simulator.helpers import FAULTY, fleet_config, parse_reading, read_recording


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_same_config_and_seed_give_identical_bytes(tmp_path):
    config = fleet_config(**FAULTY)
    write_jsonl_recording(tmp_path / "a", config)
    write_jsonl_recording(tmp_path / "b", config)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(first) == {"labels.json", "partition-0.jsonl", "partition-1.jsonl", "partition-2.jsonl",
                          "partition-3.jsonl"}
    assert first == second
    write_jsonl_recording(tmp_path / "c", fleet_config(**FAULTY, seed=12))
    assert _files(tmp_path / "c") != first


def test_partition_key_hash_is_stable():
    # crc32 is fixed by its definition: these values never change between runs or machines
    assert [partition_for_key(k, 4) for k in ("1", "2", "3", "device-07")] == [
        zlib.crc32(k.encode()) % 4 for k in ("1", "2", "3", "device-07")
    ]
    assert partition_for_key("1", 4) == 3 and partition_for_key("2", 4) == 1 and partition_for_key("3", 4) == 3


def test_envelopes_match_their_partition_and_are_numbered_in_enqueued_order(tmp_path):
    write_jsonl_recording(tmp_path, fleet_config(**FAULTY, messages=MessageSpec(partitions=3)))
    by_file = defaultdict(list)
    for line in read_recording(tmp_path):
        by_file[line.file_partition].append(line)
    assert set(by_file) <= {"0", "1", "2"}
    devices_seen = defaultdict(set)
    for partition, lines in by_file.items():
        offset = 0
        for sequence, line in enumerate(lines):
            envelope = line.envelope
            assert set(envelope) == {"partition", "sequence_number", "offset", "enqueued_time", "partition_key", "body"}
            assert envelope["partition"] == partition
            assert envelope["partition_key"] is not None
            assert zlib.crc32(envelope["partition_key"].encode()) % 3 == int(partition)
            assert envelope["sequence_number"] == sequence
            assert int(envelope["offset"]) == offset
            offset += len(line.body)
            reading = parse_reading(line.body)
            if isinstance(reading, dict) and isinstance(reading.get("Device"), str) and len(reading["Device"]) <= 128:
                assert reading["Device"] == envelope["partition_key"]
            devices_seen[envelope["partition_key"]].add(partition)
        times = [line.envelope["enqueued_time"] for line in lines]
        assert times == sorted(times)
    assert all(len(partitions) == 1 for partitions in devices_seen.values())


def test_without_partition_key_messages_go_round_robin(tmp_path):
    write_jsonl_recording(tmp_path, fleet_config(messages=MessageSpec(partition_by_device=False)))
    lines = read_recording(tmp_path)
    assert all(line.envelope["partition_key"] is None for line in lines)
    counts = Counter(line.file_partition for line in lines)
    assert max(counts.values()) - min(counts.values()) <= 1


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def test_out_of_order_and_duplicates_rates(tmp_path):
    config = fleet_config(
        fleet=FleetSpec(devices=10, tags=10),
        delivery=DeliverySpec(out_of_order_fraction=0.1, max_delay_ns=5_000_000_000, duplicate_fraction=0.05),
    )
    write_jsonl_recording(tmp_path, config)
    lines = read_recording(tmp_path)
    delays, seen = [], Counter()
    for line in lines:
        reading = parse_reading(line.body)
        seen[reading["Device"], reading["Tag"], reading["TS"]] += 1
        delays.append(_ms(line.envelope["enqueued_time"]) - _ms(reading["TS"][:23] + "Z"))
    expected = 100 * 600
    assert sum(1 for n in seen.values() if n == 1) + sum(1 for n in seen.values() if n == 2) == expected
    duplicated = sum(1 for n in seen.values() if n == 2) / expected
    assert 0.04 < duplicated < 0.06
    assert min(delays) >= 0 and max(delays) <= 5000 + 1000 + 1
    late = sum(1 for d in delays if d > 1) / len(delays)
    assert 0.12 < late < 0.17  # delayed ones (10%) plus the duplicates (5% of readings, re-sent later)


def test_array_messages_hold_one_devices_readings(tmp_path):
    single, grouped = tmp_path / "single", tmp_path / "grouped"
    write_jsonl_recording(single, fleet_config())
    write_jsonl_recording(grouped, fleet_config(messages=MessageSpec(readings_per_message=7)))
    singles = sorted(tuple(parse_reading(line.body).values()) for line in read_recording(single))
    elements = []
    for line in read_recording(grouped):
        readings = parse_reading(line.body)
        assert isinstance(readings, list) and 1 <= len(readings) <= 7
        assert len({r["Device"] for r in readings}) == 1
        assert str(readings[0]["Device"]) == line.envelope["partition_key"]
        elements.extend(readings)
    assert sorted(tuple(e.values()) for e in elements) == singles


@pytest.mark.parametrize("body", [b'{"TS": 1}', b"\xff\xfe not utf-8", b""])
def test_slow_path_envelope_line(body):
    line = envelope_line(2, 17, 4096, 1_767_225_601_250_000_000, "7", body)
    import json

    envelope = json.loads(line)
    assert envelope["enqueued_time"] == "2026-01-01T00:00:01.250Z"
    assert envelope["offset"] == "000000004096" and envelope["sequence_number"] == 17
    assert envelope["partition"] == "2" and envelope["partition_key"] == "7"
    if body == b"\xff\xfe not utf-8":
        assert set(envelope["body"]) == {"base64"}
    else:
        assert envelope["body"] == body.decode()


def test_generate_yields_the_recorded_messages(tmp_path):
    from sensorflow.simulator import generate

    config = fleet_config(delivery=DeliverySpec(malformed_fraction=0.01))
    chunks = list(generate(config))
    summary = write_jsonl_recording(tmp_path, config)
    assert sum(len(c) for c in chunks) == summary.messages == len(read_recording(tmp_path))
    assert sum(c.readings for c in chunks) == summary.readings
    assert sum(c.malformed for c in chunks) == summary.malformed

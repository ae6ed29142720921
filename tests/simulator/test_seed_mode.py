"""The default mode reproduces the original simulator's messages."""

from __future__ import annotations

import re
from collections import Counter

from sensorflow.simulator import SimulatorConfig, write_jsonl_recording
from sensorflow.simulator.signals import SEED_TAG_RANGES
from sensorflow.simulator.timefmt import format_ts
from tests.simulator.helpers import NS_PER_S, START_NS, parse_reading, read_recording

TS_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


def test_seed_mode_values_ids_rounding_and_ts(tmp_path):
    config = SimulatorConfig.seed_default(START_NS, duration_ns=2 * 3600 * NS_PER_S, seed=3)
    summary = write_jsonl_recording(tmp_path, config)
    lines = read_recording(tmp_path)
    assert summary.readings == len(lines) == 3600  # one reading every 2 s
    sensors = Counter()
    for line in lines:
        reading = parse_reading(line.body)
        assert list(reading) == ["TS", "Device", "Tag", "Value"]
        assert TS_FORMAT.match(reading["TS"])
        assert reading["Device"] in (1, 2, 3) and reading["Tag"] in (1, 2, 3, 4, 5)
        low, high = SEED_TAG_RANGES[reading["Tag"] - 1]
        assert low <= reading["Value"] <= high
        assert round(reading["Value"], 2) == reading["Value"]
        sensors[reading["Device"], reading["Tag"]] += 1
    assert len(sensors) == 15  # every sensor gets picked


def test_seed_mode_body_is_the_seed_form(tmp_path):
    write_jsonl_recording(tmp_path, SimulatorConfig.seed_default(START_NS, duration_ns=20 * NS_PER_S))
    body = read_recording(tmp_path)[0].body.decode()
    assert re.fullmatch(
        r'\{"TS": "[0-9T:.-]{27}Z", "Device": [1-3], "Tag": [1-5], "Value": \d+\.\d\d\}', body
    ), body


def test_seed_mode_one_message_every_two_seconds(tmp_path):
    write_jsonl_recording(tmp_path, SimulatorConfig.seed_default(START_NS, duration_ns=60 * NS_PER_S))
    times = sorted(parse_reading(line.body)["TS"] for line in read_recording(tmp_path))
    assert times == [format_ts(START_NS + i * 2 * NS_PER_S) for i in range(30)]

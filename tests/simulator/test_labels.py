"""Labels are exact: injected readings lie inside their labelled spans, and nowhere else."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.simulator import AnomalySpec, write_jsonl_recording
from sensorflow.simulator.anomalies import AnomalyPlan, locate
from sensorflow.simulator.signals import SEED_TAG_RANGES
from tests.simulator.helpers import NS_PER_S, START_NS, fleet_config, parse_reading, read_recording

WINDOW_NS = 5 * NS_PER_S


def _readings(directory):
    """{(device, tag, TS): value} of the good readings of a recording."""
    found = {}
    for line in read_recording(directory):
        reading = parse_reading(line.body)
        if isinstance(reading, dict):
            found[str(reading["Device"]), str(reading["Tag"]), reading["TS"]] = reading["Value"]
    return found


def _ts_ns(ts: str) -> int:
    moment = datetime.fromisoformat(ts[:26] + "+00:00")
    whole = int(moment.replace(microsecond=0).timestamp()) * NS_PER_S
    return whole + int(ts[20:27]) * 100


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same fleet with and without anomalies (many of every kind)."""
    anomalous = fleet_config(anomalies=AnomalySpec(rate_per_sensor_hour=12.0))
    clean = fleet_config()
    a, b = tmp_path_factory.mktemp("anomalous"), tmp_path_factory.mktemp("clean")
    write_jsonl_recording(a, anomalous)
    write_jsonl_recording(b, clean)
    import json

    labels = json.loads((a / "labels.json").read_text())
    return labels, _readings(a), _readings(b)


def test_labels_file_follows_the_contract(runs):
    labels, _, _ = runs
    assert len(labels) > 20
    assert {label["kind"] for label in labels} == {"spike", "level_shift", "stuck", "noise", "drift", "dropout"}
    for label in labels:
        assert set(label) == {"device", "tag", "kind", "start", "end"}
        assert isinstance(label["device"], str) and isinstance(label["tag"], str)
        start, end = _ts_ns(label["start"][:-1] + "0000Z"), _ts_ns(label["end"][:-1] + "0000Z")
        assert start % WINDOW_NS == 0 and end % WINDOW_NS == 0 and start < end
        assert START_NS <= start and end <= START_NS + 600 * NS_PER_S
    spans = defaultdict(list)
    for label in labels:
        spans[label["device"], label["tag"]].append((label["start"], label["end"]))
    for sensor_spans in spans.values():
        sensor_spans.sort()
        for (_, end), (start, _) in zip(sensor_spans, sensor_spans[1:], strict=False):
            assert end < start  # disjoint, with a gap


def test_readings_outside_labels_are_untouched_and_inside_are_changed(runs):
    labels, anomalous, clean = runs
    spans = defaultdict(list)
    for label in labels:
        spans[label["device"], label["tag"]].append(
            (label["kind"], _ts_ns(label["start"][:-1] + "0000Z"), _ts_ns(label["end"][:-1] + "0000Z"))
        )

    def label_of(device, tag, ts):
        t = _ts_ns(ts)
        for kind, start, end in spans.get((device, tag), ()):
            if start <= t < end:
                return device, tag, kind, start
        return None

    inside = defaultdict(list)
    for key, value in clean.items():
        label = label_of(*key)
        if label is None:
            assert anomalous[key] == value, key  # identical outside every label
        else:
            inside[label].append((key, value))
    assert len(inside) == len(labels)  # every label covers some readings
    for (_, _, kind, _), members in inside.items():
        low, high = SEED_TAG_RANGES[int(members[0][0][1]) - 1]
        values = [anomalous.get(key) for key, _ in members]
        if kind == "dropout":
            assert all(v is None for v in values)  # silent for the whole span
            continue
        assert all(v is not None for v in values)
        if kind == "spike":
            assert all(not (low <= v <= high) for v in values)
        elif kind == "level_shift":
            assert all(v != clean_value for v, (_, clean_value) in zip(values, members, strict=True))
        elif kind == "stuck":
            assert len(set(values)) == 1
    # and nothing anomalous appears outside the labels or the clean run
    assert set(anomalous) <= set(clean)


@settings(max_examples=60, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(1, 6)), max_size=8),
    readings=st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 60)), min_size=1, max_size=60),
)
def test_locate_matches_a_brute_force_search(spans, readings):
    kept, last_end = [], {}
    for sensor, start, length in sorted(spans):
        if start > last_end.get(sensor, -1):
            kept.append((sensor, start, start + length))
            last_end[sensor] = start + length
    count = len(kept)
    plan = AnomalyPlan(
        np.array([k[0] for k in kept], dtype=np.int64),
        np.zeros(count, dtype=np.int8),
        np.array([k[1] for k in kept], dtype=np.int64),
        np.array([k[2] for k in kept], dtype=np.int64),
        np.zeros(count),
        np.zeros(count, dtype=np.int64),
    )
    sensor = np.array([r[0] for r in readings], dtype=np.int64)
    ns = np.array([r[1] for r in readings], dtype=np.int64)
    expected = [
        next((i for i, (s, a, b) in enumerate(kept) if s == rs and a <= rt < b), -1) for rs, rt in readings
    ]
    assert locate(plan, sensor, ns).tolist() == expected

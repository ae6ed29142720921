"""Malformed messages (rate, and each is really bad) and the table-driven text rendering."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.simulator import MALFORMED_KINDS, DeliverySpec, FleetSpec, write_jsonl_recording
from sensorflow.simulator.config import FleetSpec as Spec
from sensorflow.simulator.fleet import Fleet
from sensorflow.simulator.malformed import malformed_body
from sensorflow.simulator.texts import ReadingTexts
from sensorflow.simulator.timefmt import format_ts
from tests.simulator.helpers import fleet_config, parse_reading, read_recording

GOOD_KEYS = ["TS", "Device", "Tag", "Value"]


def _is_good_reading(body: bytes) -> bool:
    """A strict reading check: what a correct reader accepts as one reading."""
    parsed = parse_reading(body)
    if not isinstance(parsed, dict) or list(parsed) != GOOD_KEYS:
        return False
    ts, device, tag, value = (parsed[k] for k in GOOD_KEYS)
    ids_ok = all(
        (isinstance(i, int) and not isinstance(i, bool)) or (isinstance(i, str) and 0 < len(i) <= 128)
        for i in (device, tag)
    )
    ts_ok = isinstance(ts, str) and len(ts) == 28 and ts[4] == "-" and ts[-1] == "Z" and ts[5:7] <= "12"
    value_ok = isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)
    return ids_ok and ts_ok and value_ok


def test_every_malformed_kind_is_rejected_by_a_strict_reader():
    rng = np.random.default_rng(0)
    for kind in MALFORMED_KINDS:
        for _ in range(30):
            body = malformed_body(kind, rng, "2", '"tag-1"', 1_767_225_600_000_000_000)
            assert not _is_good_reading(body), (kind, body)


def test_malformed_rate_is_honoured(tmp_path):
    fraction = 0.03
    config = fleet_config(fleet=FleetSpec(devices=10, tags=10), delivery=DeliverySpec(malformed_fraction=fraction))
    summary = write_jsonl_recording(tmp_path, config)
    lines = read_recording(tmp_path)
    bad = sum(1 for line in lines if not _is_good_reading(line.body))
    assert bad == summary.malformed
    assert summary.readings == 100 * 600  # malformed messages come on top of the readings
    n = len(lines)
    sd = math.sqrt(n * fraction * (1 - fraction))
    assert abs(bad - n * fraction) < 5 * sd
    assert any("base64" in line.envelope["body"] for line in lines if isinstance(line.envelope["body"], dict))


def _reference_text(ts_ns: int, device, tag, cents: int) -> bytes:
    value = f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"
    ids = f'"Device": {json.dumps(device)}, "Tag": {json.dumps(tag)}'
    return f'{{"TS": "{format_ts(ts_ns)}", {ids}, "Value": {value}}}'.encode()


@settings(max_examples=40, deadline=None)
@given(
    ids=st.sampled_from(["int", "str"]),
    devices=st.integers(1, 120),
    readings=st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.integers(0, 4_102_444_800 * 10**7),  # up to the year 2100, in 100 ns ticks
            st.integers(-(10**9), 10**9),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_rendered_texts_match_a_reference(ids, devices, readings):
    fleet = Fleet(Spec(devices=devices, tags=12, ids=ids))
    texts = ReadingTexts(fleet)
    sensor = np.array([r[0] % fleet.sensors for r in readings], dtype=np.int64)
    ns = np.array([r[1] * 100 for r in readings], dtype=np.int64)
    cents = np.array([r[2] for r in readings], dtype=np.int64)
    rendered = texts.render(sensor, ns, cents)
    expected = [
        _reference_text(int(t), *fleet.sensor_id_pair(int(s)), int(c))
        for s, t, c in zip(sensor, ns, cents, strict=True)
    ]
    assert rendered == expected
    assert texts.text_lengths(sensor, cents).tolist() == [len(e) for e in expected]

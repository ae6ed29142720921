"""The real dataflow (replay source -> SQLite) against batch references, on generated inputs."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import dead_letters_frame, run_flow, seed_message, windows_frame, write_recording
from tests.support import window_reference as reference

START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
WINDOW_NS = 5_000_000_000
LATENESS_NS = 5_000_000_000


def _ts_text(ns: int) -> str:
    whole, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac // 100:07d}Z"  # the seed's .NET round-trip form


@st.composite
def partitioned_readings(draw):
    """Readings on 1-3 partitions; time mostly moves forward, sometimes jumps back (within or beyond lateness)."""
    partitions = draw(st.integers(1, 3))
    rows = []
    for p in range(partitions):
        now = START_NS + draw(st.integers(0, 3_000)) * 1_000_000
        for _ in range(draw(st.integers(0, 60))):
            step_ms = draw(st.one_of(st.integers(0, 2_500), st.integers(-12_000, 0)))
            now = max(START_NS, now + step_ms * 1_000_000)
            ts = now + draw(st.integers(0, 9_999)) * 100  # sub-ms ticks, like .NET's 100 ns
            device = draw(st.sampled_from(["1", "2", "dev-x"]))
            tag = draw(st.sampled_from(["1", "4"]))
            value = draw(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3)))
            rows.append((str(p), ts, device, tag, value))
    return pd.DataFrame(rows, columns=["partition", "ts", "device", "tag", "value"])


def _record(directory: Path, readings: pd.DataFrame, pad: int = 0) -> Path:
    """Seed-format lines; ``pad`` adds an ignored field so small blocks hold one message each."""
    partitions: dict[str, list[bytes]] = {}
    for pid, rows in readings.groupby("partition", sort=False):
        partitions[pid] = [
            seed_message(_ts_text(ts), int(d) if d.isdigit() else d, int(t), v, pad)
            for ts, d, t, v in zip(rows["ts"], rows["device"], rows["tag"], rows["value"])
        ]
    if not partitions:
        partitions["0"] = []
    return write_recording(directory, partitions)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readings=partitioned_readings(), block_bytes=st.sampled_from([128, 1 << 20]), pad=st.sampled_from([0, 200]))
def test_windows_equal_the_pandas_reference(readings: pd.DataFrame, block_bytes: int, pad: int) -> None:
    accepted, late = reference.accepted_and_late(readings, LATENESS_NS)
    expected = reference.windows(accepted, WINDOW_NS)
    with tempfile.TemporaryDirectory() as tmp:
        source = _record(Path(tmp) / "rec", readings, pad)
        db = Path(tmp) / "out.db"
        run_flow(source, db, block_bytes=block_bytes)
        got = windows_frame(db)
        dead = dead_letters_frame(db)

    assert len(got) == len(expected)
    if len(expected):
        pd.testing.assert_frame_equal(
            got.drop(columns="Value"), expected.drop(columns="Value"), check_dtype=False
        )
        np.testing.assert_allclose(got["Value"], expected["Value"], rtol=1e-9, atol=1e-9)
    # Late readings appear only as late dead letters, exactly the ones the rule names.
    assert set(dead["Reason"]) <= {"late"}
    assert len(dead) == len(late)
    got_late = sorted(zip(dead["Partition"], dead["Device"], dead["Value"]))
    want_late = sorted(zip(late["partition"], late["device"], late["value"]))
    assert got_late == want_late


def test_same_sensor_on_several_partitions_merges_into_one_window(tmp_path: Path) -> None:
    t = START_NS + 1_000_000_000
    source = write_recording(
        tmp_path / "rec",
        {
            "a": [seed_message(_ts_text(t), 1, 1, 10.0), seed_message(_ts_text(t + 10 * WINDOW_NS), 1, 1, 0.0)],
            "b": [seed_message(_ts_text(t + 1_000_000_000), 1, 1, 20.0)],
        },
    )
    run_flow(source, tmp_path / "out.db")
    got = windows_frame(tmp_path / "out.db")
    first = got.iloc[0]
    assert (first["TS"], first["Count"], first["Value"], first["Min"], first["Max"]) == (
        "2026-01-01 00:00:05.000", 2, 15.0, 10.0, 20.0
    )


def test_end_of_input_flushes_every_window(tmp_path: Path) -> None:
    source = write_recording(tmp_path / "rec", {"0": [seed_message(_ts_text(START_NS + 123), "d", "t", 1.5)]})
    report = run_flow(source, tmp_path / "out.db")
    assert report.store.windows == 1
    assert windows_frame(tmp_path / "out.db")["TS"].tolist() == ["2026-01-01 00:00:05.000"]


def test_counts_reconcile_with_malformed_input(tmp_path: Path) -> None:
    good = [seed_message(_ts_text(START_NS + i * 100_000_000), 1, 2, float(i)) for i in range(50)]
    bad = [b"{", b"[]", b'{"TS": "x", "Device": 1, "Tag": 1, "Value": 1}', b"\xff", b'[{"Device": 1}, 3]']
    source = write_recording(tmp_path / "rec", {"0": good[:25] + bad + good[25:]})
    report = run_flow(source, tmp_path / "out.db")
    stats, dead = report.stats, dead_letters_frame(tmp_path / "out.db")
    assert stats.elements == 50 + 6  # the array message holds two elements
    assert stats.readings + len(dead) == stats.elements
    assert windows_frame(tmp_path / "out.db")["Count"].sum() == 50


@pytest.mark.parametrize("time_source", ["ts", "enqueued"])
def test_time_source_setting(tmp_path: Path, time_source: str) -> None:
    # TS says 00:00:01, the envelope's enqueued time says 00:01:01: the setting picks the window.
    line = (
        b'{"partition": "0", "sequence_number": 0, "enqueued_time": "2026-01-01T00:01:01.000Z", '
        b'"body": "{\\"TS\\": \\"2026-01-01T00:00:01.0000000Z\\", \\"Device\\": 1, \\"Tag\\": 1, \\"Value\\": 2}"}\n'
    )
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "partition-0.jsonl").write_bytes(line)
    run_flow(tmp_path / "rec", tmp_path / "out.db", time_source=time_source)
    expected = "2026-01-01 00:00:05.000" if time_source == "ts" else "2026-01-01 00:01:05.000"
    assert windows_frame(tmp_path / "out.db")["TS"].tolist() == [expected]


@pytest.mark.parametrize("extra", [{"writer": "inline"}, {"processes": 2}, {"workers": 2}])
def test_other_execution_modes_write_the_same_table(tmp_path: Path, extra: dict) -> None:
    rng = np.random.default_rng(4)
    partitions = {
        str(p): [
            seed_message(_ts_text(START_NS + int(t)), int(rng.integers(0, 5)), 1, float(rng.normal()))
            for t in np.sort(rng.integers(0, 60_000_000_000, 400))
        ]
        for p in range(3)
    }
    source = write_recording(tmp_path / "rec", partitions)
    run_flow(source, tmp_path / "default.db", block_bytes=2048)
    run_flow(source, tmp_path / "other.db", block_bytes=2048, **extra)
    want, got = windows_frame(tmp_path / "default.db"), windows_frame(tmp_path / "other.db")
    assert len(got) == len(want) > 0
    assert got.drop(columns="Value").equals(want.drop(columns="Value"))
    np.testing.assert_allclose(got["Value"], want["Value"], rtol=1e-9)

"""Quality figures (recall, window precision, false flags, episodes, worst units) on hand-made predictions and labels."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from sensorflow.batch_jobs.quality import LabelSpan, evaluate, read_labels
from sensorflow.simulator import Label

W = 5_000_000_000
T0 = 1_800_000_000 * 10**9
DAY = 86_400 * 10**9


def predictions(flags: dict[tuple[str, str], list[int]], slots: int = 100) -> pa.Table:
    """Every window slot 1..slots of each sensor, flagged where its slot number is listed."""
    rows = [(T0 + W * k, d, t, k in flagged) for (d, t), flagged in flags.items() for k in range(1, slots + 1)]
    ts, device, tag, flag = zip(*rows)
    return pa.table({"ts": pa.array(ts, pa.int64()), "device": device, "tag": tag, "is_anomaly": flag})


def span(start_slot: float, end_slot: float, kind: str = "spike", sensor=("a", "1")) -> LabelSpan:
    return LabelSpan(sensor[0], sensor[1], kind, int(T0 + W * start_slot), int(T0 + W * end_slot))


# A window named by slot k ends at T0 + k W and covers [T0 + (k-1) W, T0 + k W).
@pytest.mark.parametrize(
    ("flagged", "label", "found", "false_windows"),
    [
        ([11], span(10, 11), 1, 0),          # the one window whose readings are the label's
        ([10], span(10, 11), 0, 1),          # ends where the label starts: outside
        ([12], span(10, 11), 0, 1),          # starts where the label ends: outside
        ([11, 12], span(10, 11), 1, 1),      # the window after the label is a false alarm
        ([11], span(10.5, 11.2), 1, 0),      # unaligned label: a window meeting it lies inside
        ([12], span(10.5, 11.2), 1, 0),
        ([13], span(10.5, 11.2), 0, 1),
        ([], span(10, 11), 0, 0),
    ],
)
def test_window_inside_label(flagged, label, found, false_windows):
    report = evaluate(predictions({("a", "1"): flagged}), [label], W)
    assert (report.found, report.false_alarm_windows) == (found, false_windows)


def test_figures_of_a_small_fleet():
    labels = [span(10, 11), span(40, 52, "level_shift"), span(60, 66, "dropout", ("b", "1"))]
    flags = {
        ("a", "1"): [11, 20, 21, 22, 30],     # spike found at once; false alarms 20-22 (one event) and 30
        ("b", "1"): [50],                     # a's level shift flagged on b: a false alarm, not a find
        ("c", "1"): [],
    }
    report = evaluate(predictions(flags), labels, W, scored_range=(T0, T0 + DAY))
    assert (report.labelled, report.found, report.false_alarm_events, report.false_alarm_windows) == (3, 1, 3, 5)
    assert report.flagged_windows == 6 and report.sensors == 3
    # Window precision: 1 of 6 flagged windows lies inside a label of its sensor.
    assert report.precision == pytest.approx(1 / 6) and report.recall == pytest.approx(1 / 3)
    assert report.f1 == pytest.approx(2 * (1 / 6) * (1 / 3) / (1 / 6 + 1 / 3))
    # The event-level figures of before: found / (found + false-flag episodes).
    assert report.event_precision == pytest.approx(1 / 4)
    assert report.event_f1 == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert report.sensor_days == pytest.approx(3.0) and report.false_alarms_per_sensor_day == pytest.approx(1.0)
    assert report.false_flags_per_sensor_day == pytest.approx(5 / 3) and report.episodes_per_sensor_day == pytest.approx(1.0)
    assert report.flagged_episodes == 4  # 11, 20-22, 30 on a; 50 on b
    assert [(u.device, u.count) for u in report.worst_false] == [("a", 4), ("b", 1)]
    assert [(u.device, u.tag, u.count) for u in report.worst_missed] == [("a", "1", 1), ("b", "1", 1)]
    assert [(u.device, u.count) for u in report.worst_flagged] == [("a", 5), ("b", 1)]
    kinds = {k.kind: k for k in report.kinds}
    assert (kinds["spike"].found, kinds["spike"].median_delay_s) == (1, 5.0)
    assert (kinds["level_shift"].labelled, kinds["level_shift"].found, kinds["level_shift"].median_delay_s) == (
        1, 0, None)


def test_delay_is_first_flagged_window_end_minus_start():
    report = evaluate(predictions({("a", "1"): [45, 47]}), [span(40, 52, "level_shift")], W)
    assert report.kinds[0].median_delay_s == 25.0 and report.false_alarm_events == 0


def test_scored_range_keeps_labels_and_windows_in_it():
    labels = [span(10, 11), span(49, 50), span(50, 51), span(60, 61), span(99, 120)]
    flags = {("a", "1"): [11, 20, 61]}  # 11 finds a label and 20 is a false alarm, both outside the range
    report = evaluate(predictions(flags), labels, W, scored_range=(T0 + 50 * W, T0 + 100 * W))
    assert (report.labelled, report.found, report.false_alarm_events, report.flagged_windows) == (3, 1, 0, 1)


def test_sensor_days_without_a_range_run_from_first_to_last_window():
    report = evaluate(predictions({("a", "1"): [], ("b", "2"): []}, slots=17_280), [], W)
    assert report.sensor_days == pytest.approx(2.0) and report.precision == report.recall == report.f1 == 0.0


def test_labels_json_frame_and_simulator_labels(tmp_path: Path):
    label = Label("a", "1", "spike", "2027-01-15T08:00:00.000Z", "2027-01-15T08:00:05.000Z")
    path = tmp_path / "labels.json"
    path.write_text(json.dumps([label.to_json()]))
    start = pd.Timestamp("2027-01-15T08:00:00")
    frame = pd.DataFrame({  # the Predictions table as read back: TS as datetimes, CamelCase names
        "TS": [start + pd.Timedelta(seconds=5), start + pd.Timedelta(seconds=15)],
        "Device": ["a", "a"], "Tag": ["1", "1"], "IsAnomaly": [True, True],
    })
    from_file, from_objects = evaluate(frame, path, W), evaluate(frame, [label], W)
    assert from_file == from_objects
    assert (from_file.found, from_file.false_alarm_events) == (1, 1)
    assert read_labels(path)[0].end - read_labels(path)[0].start == W


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([{"device": "a", "tag": "1", "kind": "spike", "start": "2027-01-15T08:00:05Z", "end": "2027-01-15T08:00:00Z"}],
         "ends before it starts"),
        ([{"device": "a", "tag": "1", "kind": "spike", "start": "yesterday", "end": "2027-01-15T08:00:00Z"}],
         "bad label time 'yesterday'"),
        ([{"device": "a", "kind": "spike", "start": "2027-01-15T08:00:00Z", "end": "2027-01-15T08:00:05Z"}],
         "lacks 'tag'"),
    ],
)
def test_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        evaluate(predictions({("a", "1"): []}), labels, W)


def test_predictions_without_a_flag_column():
    with pytest.raises(ValueError, match="predictions lack column"):
        evaluate(pa.table({"ts": [T0], "device": ["a"], "tag": ["1"]}), [], W)


# ---- window precision, episodes, scopes, worst lists ------------------------------------------------


@pytest.mark.parametrize(
    ("flagged", "labels", "expected"),
    [
        # (found, flagged windows, false-flag windows, false-flag episodes, precision)
        ([11, 12, 13], [span(10, 13)], (1, 3, 0, 0, 1.0)),                 # a 3-window label flagged whole
        ([11, 14, 15, 16], [span(10, 13)], (1, 4, 3, 1, 1 / 4)),           # stuck in alarm after it: one episode
        ([5, 7, 9], [], (0, 3, 3, 3, 0.0)),                                # three separate false flags
        ([20, 21, 23, 24], [], (0, 4, 4, 2, 0.0)),                         # two runs of two
        ([11, 12], [span(10.5, 11.2)], (1, 2, 0, 0, 1.0)),                 # unaligned: both windows meet it
        ([11, 12, 13], [span(10.5, 11.2)], (1, 3, 1, 1, 2 / 3)),
        ([13], [span(10, 11), span(12, 13)], (1, 1, 0, 0, 1.0)),           # two labels, the second found
        ([11, 12, 13], [span(10, 11), span(12, 13)], (2, 3, 1, 1, 2 / 3)),  # 12 lies between them: false
    ],
)
def test_window_precision_and_false_flag_episodes(flagged, labels, expected):
    report = evaluate(predictions({("a", "1"): flagged}), labels, W)
    got = (report.found, report.flagged_windows, report.false_flag_windows, report.false_flag_episodes, report.precision)
    assert got[:4] == expected[:4] and got[4] == pytest.approx(expected[4])


D1, D2 = ("d", "1"), ("d", "2")


@pytest.mark.parametrize(
    ("flags", "labels", "scope", "expected"),
    [
        # expected: (labelled, found, flagged windows, false-flag windows, false-flag episodes)
        # A label on tag 1 flagged only by tag 2: missed per sensor, found per device.
        ({D1: [], D2: [11]}, [span(10, 11, sensor=D1)], "sensor", (1, 0, 1, 1, 1)),
        ({D1: [], D2: [11]}, [span(10, 11, sensor=D1)], "device", (1, 1, 1, 0, 0)),
        # Both tags flag the same window times: two flagged windows each per sensor, one per device.
        ({D1: [11, 30], D2: [11, 30]}, [span(10, 11, sensor=D1)], "sensor", (1, 1, 4, 3, 3)),
        ({D1: [11, 30], D2: [11, 30]}, [span(10, 11, sensor=D1)], "device", (1, 1, 2, 1, 1)),
        # A device-wide incident labelled on both tags: twice per sensor, once per device.
        ({D1: [11], D2: []}, [span(10, 11, sensor=D1), span(10, 11, sensor=D2)], "sensor", (2, 1, 1, 0, 0)),
        ({D1: [11], D2: []}, [span(10, 11, sensor=D1), span(10, 11, sensor=D2)], "device", (1, 1, 1, 0, 0)),
        # Tags' flags interleave into one device episode (30 on tag 1, 31 on tag 2).
        ({D1: [30], D2: [31]}, [], "sensor", (0, 0, 2, 2, 2)),
        ({D1: [30], D2: [31]}, [], "device", (0, 0, 2, 2, 1)),
    ],
)
def test_scopes(flags, labels, scope, expected):
    report = evaluate(predictions(flags), labels, W, scope=scope)
    got = (report.labelled, report.found, report.flagged_windows, report.false_flag_windows, report.false_flag_episodes)
    assert got == expected
    assert report.scope == scope and report.units == (1 if scope == "device" else 2)


def test_device_scope_units_and_days():
    flags = {("a", "1"): [], ("a", "2"): [], ("b", "1"): [40, 41]}
    report = evaluate(predictions(flags), [], W, scored_range=(T0, T0 + DAY), scope="device")
    assert (report.units, report.sensor_days) == (2, pytest.approx(2.0))
    assert report.false_flags_per_sensor_day == pytest.approx(1.0) and report.episodes_per_sensor_day == pytest.approx(0.5)
    assert [(u.device, u.tag, u.count) for u in report.worst_false] == [("b", "", 2)]


@pytest.mark.parametrize("top", [1, 2, 10])
def test_worst_lists_rank_by_count_then_name_and_stop_at_top(top):
    flags = {("a", "1"): [1, 2, 3], ("b", "1"): [5], ("c", "1"): [7, 9], ("d", "1"): []}
    labels = [span(50, 51, sensor=("d", "1")), span(60, 61, sensor=("d", "1")), span(50, 51, sensor=("b", "1"))]
    report = evaluate(predictions(flags), labels, W, top=top)
    assert [(u.device, u.count) for u in report.worst_false] == [("a", 3), ("c", 2), ("b", 1)][:top]
    assert [(u.device, u.count) for u in report.worst_missed] == [("d", 2), ("b", 1)][:top]


def test_only_flagged_rows_with_the_scored_sensors_give_the_same_report():
    flags = {("a", "1"): [11, 30, 31], ("b", "1"): [], ("c", "1"): [60]}
    table = predictions(flags)
    labels = [span(10, 11)]
    scored = (T0, T0 + 100 * W)
    full = evaluate(table, labels, W, scored_range=scored)
    only_flagged = evaluate(table.filter(table["is_anomaly"]), labels, W, scored_range=scored, sensors=list(flags))
    assert full == only_flagged and full.units == 3
    with pytest.raises(ValueError, match="sensors need a scored_range"):
        evaluate(table, labels, W, sensors=list(flags))


def test_flagged_missing_slots_are_flagged_windows():
    table = pa.table({"ts": pa.array([T0 + 11 * W, T0 + 40 * W], pa.int64()), "device": ["a", "a"], "tag": ["1", "1"],
                      "value": pa.array([None, None], pa.float64()), "is_anomaly": [True, True]})
    report = evaluate(table, [span(10, 11, "dropout")], W)
    assert (report.found, report.flagged_windows, report.false_flag_windows, report.precision) == (1, 2, 1, 0.5)


def test_unknown_scope():
    with pytest.raises(ValueError, match="scope must be one of sensor, device"):
        evaluate(predictions({("a", "1"): []}), [], W, scope="fleet")

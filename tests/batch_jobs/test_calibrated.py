"""calibrated, the default detector: each anomaly kind found, quiet on normal data, sound on quantized,
zero-heavy and constant training data, robust to a training outlier, training warnings, the episode bridge,
the sensitivity setting and the no-pickle round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sensorflow.batch_jobs.detectors import DEFAULT_DETECTOR, get_detector, load_model, save_model
from sensorflow.batch_jobs.detectors.calibrated import FEATURES, Calibrated, Calibration, _cleaned, _episodes
from sensorflow.batch_jobs.detectors.base import SensorWindows
from sensorflow.batch_jobs.detectors.features import median_of_medians, sliding_median, true_runs, upper_quantiles
from tests.batch_jobs.test_detectors import AT, SCORED, TRAIN, T0, W, readings_windows, windows


def fitted(seed: int = 0):
    return get_detector("calibrated").fit(readings_windows(TRAIN, 0, seed=seed))


def test_calibrated_is_the_default():
    assert DEFAULT_DETECTOR == "calibrated"


@pytest.mark.parametrize(
    ("anomaly", "length", "features"),
    [
        ("spike", 1, {"trend"}),
        ("level_shift", 30, {"trend", "shift", "drift"}),
        ("drift", 120, {"trend", "shift", "drift"}),
        ("noise", 6, {"spread", "trend", "shift"}),
        ("stuck", 12, {"stuck"}),
        ("dropout", 6, {"gap"}),
        ("low_count", 6, {"low_count"}),
    ],
)
def test_finds_each_kind_and_nothing_else(anomaly, length, features):
    model = fitted()
    scored = readings_windows(SCORED, TRAIN, anomaly, length, seed=1)
    full, evidence = model.evidence(scored)
    flagged = evidence.max(axis=0) >= 1.0
    inside = (np.arange(full.ts.shape[0]) >= AT) & (np.arange(full.ts.shape[0]) < AT + length + model.calibration.history)
    assert flagged[AT:AT + length + 1].any(), f"{anomaly} not found"
    assert not flagged[~inside].any(), f"{anomaly}: flags outside the anomaly at {np.flatnonzero(flagged & ~inside)}"
    firing = {FEATURES[row] for row in range(len(FEATURES)) if (evidence[row] >= 1.0).any()}
    assert firing and firing <= features


@pytest.mark.parametrize(("anomaly", "length"), [("level_shift", 30), ("drift", 120)])
def test_coming_back_is_not_a_shift(anomaly, length):
    """Once the value is back, the median of the last windows (still holding the anomaly) does not flag it."""
    model = fitted()
    full, evidence = model.evidence(readings_windows(SCORED, TRAIN, anomaly, length, seed=1))
    shift = evidence[FEATURES.index("shift")]
    assert (shift[AT:AT + length] >= 1.0).any(), "the shift itself is evidence"
    assert not (shift[AT + length:] >= 1.0).any(), np.flatnonzero(shift[AT + length:] >= 1.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quiet_on_normal_data(seed):
    scores = fitted().score(readings_windows(SCORED, TRAIN, seed=seed))
    assert not scores.is_anomaly.any()
    assert np.isfinite(scores.score).all() and scores.score.max() < 1.0


def test_score_means_one_at_the_threshold():
    """IsAnomaly is exactly Score >= 1, whatever fired."""
    scores = fitted().score(readings_windows(SCORED, TRAIN, "level_shift", 30, seed=1))
    assert (scores.is_anomaly == (scores.score >= 1.0)).all()


def _zero_heavy(n, rng, burst_at=None):
    """Event counts: mostly 0, now and then 1-3 (normal); ``burst_at``: 40 events in one window."""
    values = np.where(rng.random(n) < 0.08, rng.integers(1, 4, n), 0).astype(np.float64)
    if burst_at is not None:
        values[burst_at] = 40.0
    return values


def test_zero_heavy_training_does_not_flood():
    """A training MAD of 0 (mostly zero counts): ordinary counts stay quiet, a burst far above them fires."""
    rng = np.random.default_rng(5)
    train = windows(_zero_heavy(TRAIN, rng), counts=np.ones(TRAIN))
    model = get_detector("calibrated").fit(train)
    normal = model.score(windows(_zero_heavy(SCORED, rng), counts=np.ones(SCORED),
                                 ts=T0 + W * np.arange(TRAIN + 1, TRAIN + SCORED + 1), range_from=T0 + TRAIN * W))
    assert normal.is_anomaly.sum() <= 1  # 360 windows of ordinary counts: no flood (robust-window flagged thousands)
    burst = model.score(windows(_zero_heavy(SCORED, rng, burst_at=100), counts=np.ones(SCORED),
                                ts=T0 + W * np.arange(TRAIN + 1, TRAIN + SCORED + 1), range_from=T0 + TRAIN * W))
    flagged = np.flatnonzero(burst.is_anomaly)
    # the burst, and the windows whose forecast or median still holds it: one episode right after it
    assert flagged[0] == 100 and flagged[-1] < 100 + model.calibration.history


def test_quantized_steps_are_not_anomalies():
    """Two-level (on/off) sensor: switching between its levels is what it does; a third level is not."""
    rng = np.random.default_rng(2)
    levels = np.repeat(rng.integers(0, 2, TRAIN // 10 + SCORED // 10), 10).astype(np.float64) * 4.0
    model = get_detector("calibrated").fit(windows(levels[:TRAIN]))
    scored = windows(levels[TRAIN:], ts=T0 + W * np.arange(TRAIN + 1, TRAIN + SCORED + 1), range_from=T0 + TRAIN * W)
    assert not model.score(scored).is_anomaly.any()
    stepped = levels[TRAIN:].copy()
    stepped[200:230] = 40.0
    flagged = model.score(windows(stepped, ts=scored.ts, range_from=scored.range_from)).is_anomaly
    assert flagged[200:231].any() and not flagged[:200].any()


def test_constant_training_gives_finite_limits():
    model = get_detector("calibrated").fit(windows(np.full(100, 3.0)))
    limits = model.to_arrays()
    assert all(np.isfinite(a).all() for a in limits.values())
    scored = model.score(windows(np.r_[np.full(50, 3.0), np.full(50, 4.0)], ts=T0 + W * np.arange(101, 201),
                                 range_from=T0 + 100 * W))
    assert np.isfinite(scored.score).all()
    assert scored.is_anomaly[50] and not scored.is_anomaly[:50].any()


def test_a_training_outlier_does_not_hide_later_anomalies():
    """One gross spike in training is capped by the tail rule; a later level shift still fires."""
    clean = readings_windows(TRAIN, 0, seed=0)
    value = clean.value.copy()
    value[300] += 500.0
    dirty = windows(value, ts=clean.ts, range_from=clean.range_from, range_to=clean.range_to)
    model = get_detector("calibrated").fit(dirty)
    scored = model.score(readings_windows(SCORED, TRAIN, "level_shift", 30, seed=1))
    assert scored.is_anomaly[AT:AT + 31].any()


def test_warnings_for_a_stuck_or_missing_training_range():
    rng = np.random.default_rng(0)
    value = 50 + rng.normal(0, 1, TRAIN)
    value[: TRAIN // 2] = 50.0
    stuck = windows(value, spreads=np.where(np.arange(TRAIN) < TRAIN // 2, 0.0, 2.0))
    assert any("stuck" in w for w in get_detector("calibrated").fit(stuck).warnings())
    sparse_ts = T0 + W * np.arange(1, 4 * TRAIN, 4)
    sparse = windows(50 + rng.normal(0, 1, sparse_ts.shape[0]), ts=sparse_ts, spreads=np.full(sparse_ts.shape[0], 2.0))
    assert any("missing" in w for w in get_detector("calibrated").fit(sparse).warnings())
    assert fitted().warnings() == []


@pytest.mark.parametrize(
    ("ratios", "bridge", "expected"),
    [
        ([1.0, 0.2, 0.3, 1.5], 3, [1.0, 1.0, 1.0, 1.5]),
        ([1.0, 0.2, 0.3, 0.1, 0.1, 1.5], 3, [1.0, 0.2, 0.3, 0.1, 0.1, 1.5]),
        ([0.1, 2.0, 0.5, 2.0, 0.1], 1, [0.1, 2.0, 1.0, 2.0, 0.1]),
        ([0.1, 2.0, 0.5], 3, [0.1, 2.0, 0.5]),
        ([1.0, 0.2, 1.0], 0, [1.0, 0.2, 1.0]),
    ],
)
def test_episode_bridge(ratios, bridge, expected):
    assert _episodes(np.array(ratios), bridge).tolist() == expected


def test_threshold_scale_divides_scores():
    scored = readings_windows(SCORED, TRAIN, "level_shift", 30, seed=1)
    plain = get_detector("calibrated").fit(readings_windows(TRAIN, 0)).evidence(scored)[1].max(axis=0)
    model = get_detector("calibrated", threshold_scale=2.0).fit(readings_windows(TRAIN, 0))
    assert model.calibration.threshold_scale == 2.0
    scores = model.score(scored)
    raw = dict(zip(scored.ts.tolist(), plain.tolist()))
    unbridged = scores.score[scores.score != 1.0]
    expected = np.array([raw[t] / 2.0 for t in scores.ts[scores.score != 1.0].tolist()])
    assert np.allclose(unbridged, expected)
    with pytest.raises(ValueError, match="fixed threshold"):
        get_detector("seed-ocsvm", threshold_scale=2.0)


def test_round_trip_scores_identically_and_uses_the_training_tail():
    model = fitted()
    again = load_model(save_model(model))
    scored = readings_windows(SCORED, TRAIN, "spike", 1, seed=1)
    a, b = model.score(scored), again.score(scored)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.is_anomaly, b.is_anomaly)
    early = readings_windows(SCORED, TRAIN, seed=1)
    value = early.value.copy()
    value[2] += 40.0  # the third window of the range: judged against the end of the training range
    spiked = windows(value, counts=early.count, ts=early.ts, range_from=early.range_from, range_to=early.range_to)
    assert model.score(spiked).is_anomaly[2]


def test_refuses_bad_calibration():
    with pytest.raises(ValueError, match="window counts"):
        Calibration(trend_windows=1)
    with pytest.raises(ValueError, match="> 0"):
        Calibrated(Calibration(trend=0.0))


def test_a_sparse_sensor_keeps_its_training_tail():
    """One reading every 60 slots (a 5-minute sensor in 5 s windows): the first scored windows are judged too."""
    rng = np.random.default_rng(3)
    every = 60
    train_ts = T0 + W * every * np.arange(1, 201, dtype=np.int64)
    train = windows(50 + rng.normal(0, 1, 200), counts=np.ones(200), ts=train_ts, range_to=int(train_ts[-1]))
    model = get_detector("calibrated").fit(train)
    score_ts = int(train_ts[-1]) + W * every * np.arange(1, 61, dtype=np.int64)
    value = 50 + rng.normal(0, 1, 60)
    value[1] += 40.0  # the second window of the range: only the training tail can judge it
    scored = windows(value, counts=np.ones(60), ts=score_ts, range_from=int(train_ts[-1]), range_to=int(score_ts[-1]))
    scores = model.score(scored)
    flagged = scores.ts[scores.is_anomaly]
    assert score_ts[1] in flagged
    assert not np.isin(flagged, score_ts[3:]).any(), "the regular 59-slot gaps are not dropouts"


def test_a_long_outage_is_one_alarm():
    """An outage of 200 slots is flagged once, where it passes the gap limit, with its length / limit as score."""
    model = fitted()
    scored = readings_windows(SCORED, TRAIN, seed=1)
    keep = (np.arange(len(scored)) < AT) | (np.arange(len(scored)) >= AT + 200)
    holed = windows(scored.value[keep], counts=scored.count[keep], ts=scored.ts[keep],
                    range_from=scored.range_from, range_to=scored.range_to)
    scores = model.score(holed)
    flagged = scores.ts[scores.is_anomaly]
    limit = model.limits.gap_limit
    assert flagged.tolist() == [int(scored.ts[AT + int(np.ceil(limit)) - 1])]
    assert scores.score[scores.is_anomaly][0] == pytest.approx(200 / limit)


@pytest.mark.parametrize("k", [3, 4, 5, 7])
def test_sliding_median_is_exact(k):
    """The min/max networks for 3 and 5 give np.median's values, ties and short input included."""
    rng = np.random.default_rng(k)
    for values in (rng.normal(size=500), rng.integers(0, 3, 500).astype(float), np.ones(k), np.arange(k - 1.0)):
        expected = np.median(np.lib.stride_tricks.sliding_window_view(values, k), axis=1) if len(values) >= k else []
        assert np.array_equal(sliding_median(values, k), expected)


def test_the_sensitivity_setting_scales_the_low_count_rule_too():
    """Half the usual count flags at scale 1; at scale 2 it takes a quarter (the rule is not all-or-nothing);
    a window with the usual count is never low evidence (it was 0.5: every window flagged at scale 0.5)."""
    train = readings_windows(TRAIN, 0, seed=0)
    scored = readings_windows(SCORED, TRAIN, seed=1)
    counts = scored.count.copy()
    counts[AT], counts[AT + 40] = 2, 1  # the usual count is 5
    thin = windows(scored.value, counts=counts, ts=scored.ts, range_from=scored.range_from, range_to=scored.range_to)
    for scale, expected in ((1.0, {AT, AT + 40}), (2.0, {AT + 40})):
        scores = get_detector("calibrated", threshold_scale=scale).fit(train).score(thin)
        flagged = {int(i) for i in np.flatnonzero(scores.is_anomaly)}
        assert flagged == expected, (scale, flagged)
    _, evidence = get_detector("calibrated", threshold_scale=0.5).fit(train).evidence(thin)
    low = evidence[FEATURES.index("low_count")]
    assert set(np.flatnonzero(low > 0).tolist()) == {AT, AT + 40}, "a window with the usual count is never low"


def from_readings(readings: np.ndarray, first_slot: int) -> SensorWindows:
    """5 readings per 5 s window (rows), consecutive slots from ``first_slot``."""
    readings = readings.round(2)
    n = readings.shape[0]
    ts = T0 + W * (first_slot + 1 + np.arange(n, dtype=np.int64))
    return SensorWindows(
        "7", "3", ts, readings.mean(axis=1), np.full(n, 5), readings.min(axis=1), readings.max(axis=1),
        int(T0 + W * first_slot), int(T0 + W * (first_slot + n)), W,
    )


def noisy(n: int, seed: int) -> np.ndarray:
    return 50 + np.random.default_rng(seed).normal(0, 1, (n, 5))


def test_the_second_look_compares_with_what_came_before_a_flagged_run():
    """Flagged runs are replaced by the median of the windows before them in the second look's reference."""
    series = np.array([1.0, 2.0, 3.0, 40.0, 41.0, 4.0, 5.0, 50.0])
    flagged = np.array([False, False, False, True, True, False, False, True])
    assert _cleaned(series, flagged, 3).tolist() == [1.0, 2.0, 3.0, 2.0, 2.0, 4.0, 5.0, 4.0]
    assert _cleaned(series, np.ones(8, dtype=bool), 3).tolist() == series.tolist(), "nothing before: unchanged"


def test_the_second_look_only_lowers_evidence():
    model = fitted()
    scored = readings_windows(SCORED, TRAIN, "noise", 30, seed=1)
    _, evidence = model.evidence(scored)
    moves = model._moves(np.concatenate((model.tail_value[-model.calibration.history:], scored.value)), 0)
    first = np.vstack([np.nan_to_num(moves[name])[-SCORED:] for name in ("trend", "shift", "drift")])
    rows = [FEATURES.index(name) for name in ("trend", "shift", "drift")]
    assert (evidence[rows] <= first + 1e-12).all()
    assert (evidence[rows] < first - 1e-9).any(), "windows after the burst are judged against what came before it"


@pytest.mark.parametrize("anomaly", ["level_shift", "noise"])
def test_an_anomaly_inside_the_training_range_is_found_again(anomaly):
    """A level shift or noise burst in training is a run of high training scores: it sets no limit."""
    def add(readings, at, rng):
        if anomaly == "level_shift":
            readings[at:at + 40] += 6
        else:
            readings[at:at + 40] += rng.normal(0, 5, (40, 5))

    rng = np.random.default_rng(7)
    training = noisy(TRAIN, 0)
    add(training, 300, rng)
    model = get_detector("calibrated").fit(from_readings(training, 0))
    scored = noisy(SCORED, 1)
    add(scored, AT, rng)
    flagged = model.score(from_readings(scored, TRAIN)).is_anomaly
    assert flagged[AT:AT + 40].any(), f"{anomaly} in training hid the same {anomaly} later"
    assert not flagged[:AT].any()


def test_a_stuck_run_inside_the_training_range_is_found_again():
    training = noisy(TRAIN, 0)
    training[300:360] = 50.37  # stuck for 5 minutes in training
    model = get_detector("calibrated").fit(from_readings(training, 0))
    scored = noisy(SCORED, 1)
    scored[AT:AT + 12] = 49.81
    flagged = model.score(from_readings(scored, TRAIN)).is_anomaly
    assert flagged[AT:AT + 12].any()
    assert not flagged[:AT].any() and not flagged[AT + 12 + model.calibration.bridge:].any()


def test_a_slow_drift_is_found_by_the_drift_feature():
    """A ramp of 12 reading SDs over 20 minutes moves too little per shift lag; the long-lag medians see it."""
    model = get_detector("calibrated").fit(from_readings(noisy(TRAIN, 0), 0))
    readings = noisy(AT + 240, 1)
    readings[AT:] += np.linspace(0, 12, 240)[:, None]
    full, evidence = model.evidence(from_readings(readings, TRAIN))
    firing = evidence.max(axis=0) >= 1.0
    assert firing[AT:].any()
    assert (evidence[FEATURES.index("drift"), AT:] >= 1.0).any()
    assert not (evidence[FEATURES.index("shift"), AT:] >= 1.0).any(), "the shorter shift feature alone would see it"
    assert not firing[:AT].any()


def test_a_model_fitted_before_the_drift_feature_still_loads_and_scores():
    model = fitted()
    arrays = {name: array for name, array in model.to_arrays().items() if name != "drift_limit"}
    params = {name: value for name, value in model.params().items() if not name.startswith(("drift", "episode", "lone"))}
    old = type(model).from_arrays(arrays, params)
    scores = old.score(readings_windows(SCORED, TRAIN, "level_shift", 30, seed=1))
    assert scores.is_anomaly[AT:AT + 31].any() and np.isfinite(scores.score).all()


def test_true_runs():
    starts, ends = true_runs(np.array([True, True, False, True, False, False, True]))
    assert starts.tolist() == [0, 3, 6] and ends.tolist() == [1, 3, 6]
    assert [a.tolist() for a in true_runs(np.zeros(3, dtype=bool))] == [[], []]


def test_quantized_training_scores_set_no_episode_cap():
    """A pump switching on for ~12 s every ~65 s: its scores take a few values (90th percentile = median),
    so its ordinary switching is no training episode, and the same behaviour later is quiet."""
    def pump(n, seed):
        rng = np.random.default_rng(seed)
        seconds = np.arange(5 * n)
        starts = np.cumsum(rng.integers(60, 70, 5 * n // 60 + 2))
        phase = seconds - starts[np.searchsorted(starts, seconds, side="right") - 1].clip(min=0)
        on = (phase >= 0) & (phase < 12)
        return np.where(on, 46.0, 30.0).reshape(n, 5)

    model = get_detector("calibrated").fit(from_readings(pump(TRAIN, 0), 0))
    flagged = model.score(from_readings(pump(SCORED, 1), TRAIN)).is_anomaly
    assert flagged.sum() <= 3, np.flatnonzero(flagged)


def test_median_of_medians_stands_in_for_a_long_sliding_median():
    rng = np.random.default_rng(3)
    v = rng.normal(0, 1, 400)
    levels = median_of_medians(v, 12)
    assert levels.shape == (400 - 12 + 1,)
    assert np.abs(levels - sliding_median(v, 12)).max() < 1.0  # close to the median of the same 12 values
    spiked = v.copy()
    spiked[[100, 107]] += 1e6  # two outliers in one window of 12 move neither
    assert np.abs(median_of_medians(spiked, 12) - levels).max() < 2.0
    assert median_of_medians(np.full(30, 4.0), 12).tolist() == [4.0] * 19
    assert upper_quantiles(np.arange(101.0), 0.5, 0.9) == (50.0, 90.0)
    with pytest.raises(ValueError):
        median_of_medians(v, 5)


def test_the_second_look_replaces_the_unflagged_rest_of_a_flagged_anomaly():
    """A level shift flagged only at its start: its plateau is replaced too, up to where the values come back."""
    series = np.array([1.0, 2.0, 3.0, 40.0, 41.0, 39.0, 40.0, 3.0, 2.0, 60.0, 1.0])
    flagged = np.array([False, False, False, True, False, False, False, False, False, True, False])
    assert _cleaned(series, flagged, 3).tolist() == [1.0, 2.0, 3.0, 2.0, 2.0, 2.0, 2.0, 3.0, 2.0, 2.0, 1.0]



@pytest.mark.parametrize("anomaly", ["level_shift", "noise", "flicker"])
def test_a_sparse_sensor_is_judged_like_a_dense_one(anomaly):
    """A sensor with one window in 60 (read every 5 minutes, 5 s windows) flags the same windows as the same
    readings back to back: every feature but the gap counts windows with readings, the episode guard too
    (flicker: five spikes two windows apart, one episode), and no empty slot is flagged by the guard."""
    def sparse(w, every=60):
        return dataclasses.replace(
            w, ts=T0 + (w.ts - T0) * every, range_from=T0 + (w.range_from - T0) * every,
            range_to=T0 + (w.range_to - T0) * every)

    if anomaly == "flicker":
        readings = noisy(SCORED, 1)
        readings[AT:AT + 10:2] += 40
        scored = from_readings(readings, TRAIN)
    else:
        scored = readings_windows(SCORED, TRAIN, anomaly, 30, seed=1)
    training = readings_windows(TRAIN, 0)
    dense = get_detector("calibrated").fit(training).score(scored)
    spread_out = get_detector("calibrated").fit(sparse(training)).score(sparse(scored))
    assert dense.is_anomaly.any()
    assert spread_out.ts.tolist() == sparse(scored).ts.tolist(), "only windows with readings are scored"
    assert spread_out.is_anomaly.tolist() == dense.is_anomaly.tolist()


def test_a_training_range_too_short_for_the_drift_sets_no_drift_limit():
    """Fewer than drift_lag drift scores (history 131 + 120 windows): the few would set a limit the ordinary
    wander of the long scored range crosses. The other features still have limits."""
    c = Calibration()
    short = get_detector("calibrated").fit(readings_windows(c.history + c.drift_lag - 1, 0)).limits
    enough = get_detector("calibrated").fit(readings_windows(c.history + c.drift_lag, 0)).limits
    assert short.drift_limit >= 1e300 and enough.drift_limit < 1e300
    assert short.shift_limit < 1e300 and short.trend_limit < 1e300

"""Detectors: the window container, the registry, seed-ocsvm against scikit-learn, the no-pickle codec."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.batch_jobs.detectors import (
    DEFAULT_DETECTOR,
    DETECTORS,
    ModelFormatError,
    SensorWindows,
    UnknownDetectorError,
    get_detector,
    iter_sensor_windows,
    load_model,
    model_class,
    save_model,
)
from sensorflow.batch_jobs.detectors.robust_window import _NEVER, FEATURES
from sensorflow.batch_jobs.detectors.seed_ocsvm import GAMMA, NU, SeedOcsvmModel
from tests.support import builders

W = 5_000_000_000
T0 = 1_800_000_000 * 10**9  # a multiple of W


def windows(values, counts=None, spreads=None, ts=None, device="1", tag="1", range_from=None, range_to=None):
    """One sensor's windows: consecutive slots from T0 + W unless ``ts`` is given."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    ts = np.asarray(ts, dtype=np.int64) if ts is not None else T0 + W * np.arange(1, n + 1, dtype=np.int64)
    counts = np.full(n, 5, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    half = np.zeros(n) if spreads is None else np.asarray(spreads, dtype=np.float64) / 2
    return SensorWindows(
        device, tag, ts, values, counts, values - half, values + half,
        T0 if range_from is None else range_from, int(ts[-1]) if range_to is None else range_to, W,
    )


def window_table(rows: list[tuple[int, str, str, float, int, float, float]]) -> pa.Table:
    return builders.window_table(*map(list, zip(*rows)), read=True)


# ---- SensorWindows ---------------------------------------------------------------------------------------------


def test_from_table_sorts_and_types():
    table = window_table([(T0 + 2 * W, "d", "t", 2.0, 3, 1.0, 3.0), (T0 + W, "d", "t", 1.0, 1, 1.0, 1.0)])
    w = SensorWindows.from_table(table, "d", "t", T0, T0 + 2 * W, W)
    assert w.ts.tolist() == [T0 + W, T0 + 2 * W]
    assert w.value.tolist() == [1.0, 2.0] and w.count.tolist() == [1, 3] and w.max.tolist() == [1.0, 3.0]
    assert w.ts.dtype == np.int64 and w.count.dtype == np.int64 and w.value.dtype == np.float64


@pytest.mark.parametrize(
    ("ts", "range_from", "range_to", "message"),
    [
        ([T0 + W, T0 + W], T0, T0 + W, "strictly increasing"),
        ([T0 + 2 * W, T0 + W], T0, T0 + 2 * W, "strictly increasing"),
        ([T0], T0, T0 + W, "outside"),  # the range is half-open: range_from itself is excluded
        ([T0 + 2 * W], T0, T0 + W, "outside"),
        ([T0 + W], T0 + W, T0, "empty range"),
    ],
)
def test_bad_windows_are_refused(ts, range_from, range_to, message):
    with pytest.raises(ValueError, match=message):
        windows(np.ones(len(ts)), ts=ts, range_from=range_from, range_to=range_to)


def test_with_missing_slots_fills_count_zero():
    w = windows([1.0, 3.0], counts=[2, 4], ts=[T0 + W, T0 + 3 * W], range_from=T0 - W, range_to=T0 + 4 * W)
    full = w.with_missing_slots()
    assert full.ts.tolist() == [T0 + k * W for k in range(5)]
    assert full.count.tolist() == [0, 2, 0, 4, 0]
    np.testing.assert_array_equal(full.value, [np.nan, 1.0, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(full.min, [np.nan, 1.0, np.nan, 3.0, np.nan])
    assert full.with_missing_slots() is full


def test_with_missing_slots_of_no_rows():
    empty = SensorWindows("d", "t", *(np.zeros(0, dtype=t) for t in (np.int64, float, np.int64, float, float)),
                          T0, T0 + 3 * W, W)
    assert empty.with_missing_slots().count.tolist() == [0, 0, 0]


def test_iter_sensor_windows_splits_a_chunk():
    rows = [
        (T0 + 2 * W, "b", "1", 5.0, 1, 5.0, 5.0),
        (T0 + W, "a", "1", 1.0, 1, 1.0, 1.0),
        (T0 + W, "b", "1", 4.0, 1, 4.0, 4.0),
        (T0 + 2 * W, "a", "2", 9.0, 1, 9.0, 9.0),
    ]
    got = {(w.device, w.tag): (w.ts.tolist(), w.value.tolist()) for w in
           iter_sensor_windows(window_table(rows), T0, T0 + 2 * W, W)}
    assert got == {
        ("b", "1"): ([T0 + W, T0 + 2 * W], [4.0, 5.0]),
        ("a", "1"): ([T0 + W], [1.0]),
        ("a", "2"): ([T0 + 2 * W], [9.0]),
    }


@pytest.mark.parametrize(
    "rows",
    [
        [("b", "1", 1), ("b", "1", 2), ("a", "1", 1), ("a", "2", 2)],  # ordered by sensor then ts: split in place
        [("b", "1", 1), ("a", "1", 1), ("b", "1", 2), ("a", "2", 2)],  # interleaved: sorted first
        [("b", "1", 2), ("b", "1", 1), ("a", "1", 1), ("a", "2", 2)],  # ts out of order within a sensor
    ],
    ids=["ordered", "interleaved", "ts-unordered"],
)
def test_iter_sensor_windows_orders(rows):
    table = window_table([(T0 + slot * W, d, t, float(slot), 1, 0.0, 0.0) for d, t, slot in rows])
    got = {(w.device, w.tag): w.ts.tolist() for w in iter_sensor_windows(table, T0, T0 + 2 * W, W)}
    assert got == {("b", "1"): [T0 + W, T0 + 2 * W], ("a", "1"): [T0 + W], ("a", "2"): [T0 + 2 * W]}


def test_iter_sensor_windows_keeps_store_order():
    table = window_table([(T0 + W, d, "1", 0.0, 1, 0.0, 0.0) for d in ("z", "y", "x")])
    assert [w.device for w in iter_sensor_windows(table, T0, T0 + W, W)] == ["z", "y", "x"]


# ---- registry --------------------------------------------------------------------------------------------------


def test_registry_names_and_default():
    assert DEFAULT_DETECTOR in DETECTORS
    for name in DETECTORS:
        assert get_detector(name).name == name
        assert model_class(name).detector == name


def test_unknown_detector_lists_known_names():
    with pytest.raises(UnknownDetectorError, match="unknown detector 'nope': known detectors are .*seed-ocsvm"):
        get_detector("nope")


# ---- seed-ocsvm ------------------------------------------------------------------------------------------------


def _sklearn_pipeline(values: np.ndarray):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM

    return Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu=NU, kernel="rbf", gamma=GAMMA))]).fit(
        values.reshape(-1, 1)
    )


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).uniform(10, 15, 700).round(2),
        np.random.default_rng(2).normal(100, 3, 300),
        np.r_[np.random.default_rng(3).uniform(60, 65, 400), [90.0, 20.0]],
        np.full(50, 7.5),  # constant: the scaler's scale is 1
    ],
    ids=["seed-uniform", "normal", "with-outliers", "constant"],
)
def test_seed_decision_function_equals_sklearn(values):
    w = windows(values)
    model = get_detector("seed-ocsvm").fit(w)
    pipeline = _sklearn_pipeline(values)
    probe = np.r_[values, np.linspace(values.min() - 20, values.max() + 20, 101)]
    np.testing.assert_allclose(model.decision_function(probe), pipeline.decision_function(probe.reshape(-1, 1)),
                               rtol=0, atol=1e-9)
    scores = model.score(w)
    assert scores.is_anomaly.tolist() == (pipeline.predict(values.reshape(-1, 1)) == -1).tolist()
    np.testing.assert_array_equal(scores.score, -model.decision_function(values))


def test_seed_flags_far_values():
    values = np.random.default_rng(4).uniform(10, 15, 500)
    model = get_detector("seed-ocsvm").fit(windows(values))
    assert model.decision_function(np.array([12.5, 200.0])).tolist()[0] > 0 > model.decision_function(
        np.array([200.0]))[0]


def test_seed_round_trip_scores_identically():
    values = np.random.default_rng(5).uniform(30, 40, 400)
    w = windows(values)
    model = get_detector("seed-ocsvm").fit(w)
    loaded = load_model(save_model(model))
    assert isinstance(loaded, SeedOcsvmModel) and loaded.params() == model.params()
    before, after = model.score(w), loaded.score(w)
    np.testing.assert_array_equal(before.score, after.score)
    np.testing.assert_array_equal(before.is_anomaly, after.is_anomaly)
    assert all(np.array_equal(a, loaded.to_arrays()[k]) for k, a in model.to_arrays().items())


def test_too_few_windows_is_a_clear_error():
    with pytest.raises(ValueError, match="seed-ocsvm needs at least 2 windows, 1/1 has 1"):
        get_detector("seed-ocsvm").fit(windows([1.0]))


# ---- codec -----------------------------------------------------------------------------------------------------


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _meta(detector: str = "seed-ocsvm", fmt: int = 1) -> np.ndarray:
    return np.frombuffer(f'{{"format": {fmt}, "detector": "{detector}", "params": {{}}}}'.encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip", "not a model archive"),
        (_npz(x=np.array([1.0])), "no __model__ member"),
        (_npz(x=np.array([{"a": 1}], dtype=object), __model__=_meta()), "non-numeric array"),
        (_npz(x=np.array(["s"]), __model__=_meta()), "dtype <U1"),
        (_npz(__model__=_meta(fmt=9)), "unsupported model format 9"),
        (_npz(__model__=_meta(detector="nope")), "unknown detector 'nope'"),
        (_npz(__model__=_meta()), "missing array"),
    ],
    ids=["garbage", "no-meta", "object-array", "string-array", "format", "detector", "incomplete"],
)
def test_load_refuses(data, message):
    with pytest.raises(ModelFormatError, match=message):
        load_model(data)


def test_save_refuses_non_numeric_arrays():
    class Odd(SeedOcsvmModel):
        def to_arrays(self):
            return {"names": np.array(["a"])}

    with pytest.raises(ValueError, match="only numbers"):
        save_model(Odd(0.0, 1.0, np.array([0.0]), np.array([1.0]), -0.5))


# ---- robust-window ---------------------------------------------------------------------------------------------

TRAIN, SCORED, AT = 720, 360, 150  # windows: one hour of training, half an hour scored, anomaly from window AT


def readings_windows(n: int, first_slot: int, anomaly: str | None = None, length: int = 0, seed: int = 0):
    """A 1 Hz sensor (level 50, reading SD 1, a slow cycle) as 5 s windows, ``anomaly`` over ``length`` windows.

    Magnitudes are the simulator's in units of a tag range of width 20
    (reading SD 1 = 0.05 width): spike +2 widths, level shift -1, drift +1
    at its end, noise +0.5 width SD, stuck at the level, dropout: no readings,
    low_count: 1 reading of 5 left.
    """
    rng = np.random.default_rng(seed)
    slot = first_slot + np.arange(n)
    readings = 50 + 3 * np.sin(slot / 2000)[:, None] + rng.normal(0, 1, (n, 5))
    counts = np.full(n, 5)
    inside = slice(AT, AT + length)
    if anomaly == "spike":
        readings[inside] += 40
    elif anomaly == "level_shift":
        readings[inside] -= 20
    elif anomaly == "drift":
        readings[inside] += np.linspace(0, 20, length)[:, None]
    elif anomaly == "noise":
        readings[inside] += rng.normal(0, 10, (length, 5))
    elif anomaly == "stuck":
        readings[inside] = round(float(readings[AT - 1].mean()), 2)
    elif anomaly == "low_count":
        counts[inside] = 1
    readings = readings.round(2)
    mask = np.arange(5)[None, :] < counts[:, None]
    present = np.ones(n, dtype=bool)
    if anomaly == "dropout":
        present[inside] = False
    ts = T0 + W * (slot + 1)
    filled = np.where(mask, readings, np.nan)
    return SensorWindows(
        "7", "3", ts[present], np.nanmean(filled, axis=1)[present], counts[present],
        np.nanmin(filled, axis=1)[present], np.nanmax(filled, axis=1)[present],
        int(T0 + W * first_slot), int(T0 + W * (first_slot + n)), W,
    )


def fitted(seed: int = 0):
    return get_detector("robust-window").fit(readings_windows(TRAIN, 0, seed=seed))


@pytest.mark.parametrize(
    ("anomaly", "length", "features"),
    [
        ("spike", 1, {"jump", "level"}),
        ("level_shift", 30, {"jump", "trend", "level"}),
        ("drift", 120, {"trend", "jump", "level"}),
        ("noise", 6, {"spread"}),
        ("stuck", 12, {"stuck"}),
        ("dropout", 6, {"gap"}),
        ("low_count", 6, {"low_count"}),
    ],
)
def test_robust_window_finds_each_kind_and_nothing_else(anomaly, length, features):
    model = fitted()
    scored = readings_windows(SCORED, TRAIN, anomaly, length, seed=1)
    scores = model.score(scored)
    slots = (scores.ts - T0) // W - 1 - TRAIN
    flagged = set(slots[scores.is_anomaly].tolist())
    assert flagged, f"{anomaly} not found"
    assert flagged <= set(range(AT, AT + length)), f"false alarms at {sorted(flagged - set(range(AT, AT + length)))}"
    assert (scores.score[scores.is_anomaly] >= 1).all() and (scores.score[~scores.is_anomaly] < 1).all()
    _, evidence = model.evidence(scored)
    strongest = {FEATURES[i] for i in evidence[:, evidence.max(axis=0) >= 1].argmax(axis=0).tolist()}
    assert strongest <= features, f"{anomaly} flagged by {strongest}"


def test_robust_window_is_quiet_on_normal_data():
    model = fitted()
    flagged = sum(int(model.score(readings_windows(SCORED, TRAIN, seed=seed)).is_anomaly.sum()) for seed in range(1, 21))
    assert flagged == 0


def test_robust_window_scores_missing_slots_only_when_anomalous():
    model = fitted()
    scores = model.score(readings_windows(SCORED, TRAIN, "dropout", 6, seed=1))
    missing = np.isnan(scores.value)
    assert missing.sum() == 6 and scores.is_anomaly[missing].all()
    assert len(scores) == SCORED


def test_robust_window_learns_that_a_sparse_sensor_has_gaps():
    """The seed's fleet: each sensor reads every ~30 s, so most slots are empty and that is normal."""
    rng = np.random.default_rng(3)

    def sparse(first_slot: int, n: int) -> SensorWindows:
        slots = first_slot + np.flatnonzero(rng.random(n) < 1 / 6)
        values = rng.uniform(10, 15, slots.shape[0]).round(2)
        return windows(values, counts=np.ones(slots.shape[0]), ts=T0 + W * (slots + 1),
                       range_from=T0 + W * first_slot, range_to=T0 + W * (first_slot + n))

    model = get_detector("robust-window").fit(sparse(0, 720))
    assert not model.score(sparse(720, 720)).is_anomaly.any()
    gap = sparse(1440, 720)
    keep = (gap.ts <= T0 + W * 1800) | (gap.ts > T0 + W * 2000)  # 200 silent slots
    silent = windows(gap.value[keep], counts=gap.count[keep], ts=gap.ts[keep], range_from=gap.range_from,
                     range_to=gap.range_to)
    assert model.score(silent).is_anomaly.any()


def _uniform(first_slot: int, n: int, shift_from: int | None = None, shift: float = 0.0, seed: int = 4):
    """A sensor of the seed's fleet signal: one reading per window, uniform in [10, 15]."""
    values = np.random.default_rng(seed).uniform(10, 15, n).round(2)
    if shift_from is not None:
        values[shift_from:] += shift
    return windows(values, counts=np.ones(n), ts=T0 + W * (first_slot + 1 + np.arange(n)),
                   range_from=T0 + W * first_slot, range_to=T0 + W * (first_slot + n))


def test_robust_window_support_catches_shifts_of_bounded_noise():
    """Uniform noise of width 5: a shift of one width is under 3 robust SDs, but outside the support."""
    model = get_detector("robust-window").fit(_uniform(0, 720))
    assert model.stats.support_limit < _NEVER
    assert not model.score(_uniform(720, 720, seed=5)).is_anomaly.any()
    _, evidence = model.evidence(_uniform(720, 720, shift_from=600, shift=6.0, seed=5))
    flagged = evidence.max(axis=0) >= 1
    assert flagged[600:].any() and not flagged[:600].any()
    assert {FEATURES[i] for i in evidence[:, flagged].argmax(axis=0).tolist()} == {"support"}


def test_robust_window_support_is_off_for_gaussian_or_moving_sensors():
    assert fitted().stats.support_limit == _NEVER
    ramp = _uniform(0, 720)
    moving = windows(ramp.value + np.linspace(0, 20, 720), counts=ramp.count, ts=ramp.ts,
                     range_from=ramp.range_from, range_to=ramp.range_to)
    assert get_detector("robust-window").fit(moving).stats.support_limit == _NEVER


def test_robust_window_level_limit_widens_away_from_training():
    model = fitted()
    limit = model.stats.level_limit
    level = model.stats.level
    near = windows(np.r_[np.full(30, level), level + 1.5 * limit], ts=T0 + W * (TRAIN + 1 + np.arange(31)))
    far = windows(np.r_[np.full(30, level), level + 1.5 * limit], ts=T0 + W * (3 * TRAIN + 1 + np.arange(31)))
    # The last window ends 31 slots after training (720 slots long), or 2 x 720 + 31 slots after.
    assert model.evidence(near)[1][FEATURES.index("level"), -1] == pytest.approx(1.5 / (1 + 31 / TRAIN))
    assert model.evidence(far)[1][FEATURES.index("level"), -1] == pytest.approx(1.5 / (3 + 31 / TRAIN))


def test_robust_window_round_trip_scores_identically():
    model = fitted()
    loaded = load_model(save_model(model))
    assert type(loaded) is type(model) and loaded.params() == model.params()
    scored = readings_windows(SCORED, TRAIN, "level_shift", 30, seed=2)
    before, after = model.score(scored), loaded.score(scored)
    for name in ("ts", "value", "score", "is_anomaly"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))


def test_robust_window_fits_on_windows_with_missing_slots_too():
    w = readings_windows(TRAIN, 0, "dropout", 6)
    plain = get_detector("robust-window").fit(w).to_arrays()
    assert plain["gap_limit"][0] == 1.0  # one dropout in training does not make gaps normal
    assert {k: a.tolist() for k, a in plain.items()} == {
        k: a.tolist() for k, a in get_detector("robust-window").fit(w.with_missing_slots()).to_arrays().items()
    }


def test_robust_window_constant_training_data_scores_finite():
    model = get_detector("robust-window").fit(windows(np.full(100, 3.0), counts=np.full(100, 5)))
    scores = model.score(windows(np.r_[np.full(10, 3.0), [4.0]], counts=np.full(11, 5), spreads=np.r_[np.zeros(10), 1.0]))
    assert np.isfinite(scores.score).all() and scores.is_anomaly[-1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (b'{"bogus": 1}', "unknown robust-window parameter"),
        (b'{"k": 1}', "k >= 2"),
        (b'{"lag": 2.5}', "int lag >= 0"),
        (b'{"jump": 0}', "must be > 0: jump"),
    ],
)
def test_robust_window_refuses_bad_params(params, message):
    meta = b'{"format": 1, "detector": "robust-window", "params": ' + params + b"}"
    with pytest.raises(ModelFormatError, match=message):
        load_model(_npz(**fitted().to_arrays(), __model__=np.frombuffer(meta, dtype=np.uint8)))


def test_robust_window_refuses_bad_statistics():
    arrays = fitted().to_arrays()
    arrays["level"] = np.array([np.nan])
    with pytest.raises(ModelFormatError, match="must be finite: level"):
        load_model(_npz(**arrays, __model__=np.frombuffer(
            b'{"format": 1, "detector": "robust-window", "params": {}}', dtype=np.uint8)))


@pytest.mark.parametrize("detector", ["calibrated", "robust-window", "seed-ocsvm"])
def test_format_1_models_still_load_and_score_the_same(detector):
    """Models saved before the scalars were packed (format 1: a compressed member per array) load as they were."""
    model = get_detector(detector).fit(readings_windows(TRAIN, 0))
    meta = json.dumps({"format": 1, "detector": detector, "params": model.params()}).encode()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **model.to_arrays(), __model__=np.frombuffer(meta, dtype=np.uint8))
    scored = readings_windows(SCORED, TRAIN, "level_shift", 30, seed=1)
    assert np.array_equal(load_model(buffer.getvalue()).score(scored).score, model.score(scored).score)
    packed = load_model(save_model(model))
    assert np.array_equal(packed.score(scored).score, model.score(scored).score)
    assert {k: v.tolist() for k, v in packed.to_arrays().items()} == {k: v.tolist() for k, v in model.to_arrays().items()}


def test_format_2_refuses_scalars_that_do_not_match_their_names():
    model = fitted()
    arrays = {name: a for name, a in model.to_arrays().items() if np.shape(a) != (1,)}
    meta = json.dumps({"format": 2, "detector": "robust-window", "params": model.params(), "scalars": ["level"]}).encode()
    with pytest.raises(ModelFormatError, match="__scalars__"):
        load_model(_npz(**arrays, __scalars__=np.array([1.0, 2.0]), __model__=np.frombuffer(meta, dtype=np.uint8)))
    with pytest.raises(ModelFormatError, match="__scalars__"):
        load_model(_npz(**arrays, __model__=np.frombuffer(meta, dtype=np.uint8)))

"""Signal profiles: each one's defining property, anomalies sized by its own variation, training anomalies."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import numpy as np
import pytest

from sensorflow.simulator import AnomalySpec, FleetSpec, SignalSpec, SimulatorConfig, TimingSpec, write_jsonl_recording
from sensorflow.simulator.anomalies import KIND_INDEX, AnomalyPlan
from sensorflow.simulator.profiles import MIXED_PROFILES, PROFILE_NAMES
from sensorflow.simulator.readings import RunModel, generate_readings, run_model
from sensorflow.simulator.windows import bench_config, simulate_windows
from tests.simulator.helpers import FAULTY, NS_PER_S, START_NS, fleet_config

HOUR_NS = 3600 * NS_PER_S
WINDOW_NS = 5 * NS_PER_S


def _config(signal: str, *, seconds: int = 1800, period_ns: int = HOUR_NS, **anomalies) -> SimulatorConfig:
    return fleet_config(
        timing=TimingSpec(
            start_ns=START_NS, duration_ns=seconds * NS_PER_S, interval_ns=NS_PER_S, sampling="every_sensor", jitter=0.5
        ),
        fleet=FleetSpec(devices=10, tags=6),
        signal=SignalSpec(signal, period_ns=period_ns),
        anomalies=AnomalySpec(**anomalies),
        seed=5,
    )


def _readings(config: SimulatorConfig, model: RunModel | None = None):
    """(sensor, ns, value) of every reading, sorted by sensor then time."""
    chunks = list(generate_readings(config, model))
    sensor = np.concatenate([c.sensor for c in chunks])
    ns = np.concatenate([c.event_ns for c in chunks])
    cents = np.concatenate([c.cents for c in chunks])
    order = np.lexsort((ns, sensor))
    return sensor[order], ns[order], cents[order]


def _clean_and_anomalous(config: SimulatorConfig):
    """The run's model, its readings without any anomaly, and with them (same values outside labels)."""
    model = run_model(config)
    empty = model.plan.subset(np.zeros(len(model.plan), dtype=bool))
    return model, _readings(config, RunModel(model.params, empty, model.profiles)), _readings(config, model)


def _kurtosis(x: np.ndarray) -> float:
    z = x - x.mean()
    return float((z**4).mean() / (z**2).mean() ** 2)


def _ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(moment.timestamp()) * NS_PER_S + moment.microsecond * 1000


# --- the default signals are unchanged ----------------------------------------------------------------------------

def _recording_digest(directory) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("config", "digest"),
    [
        # Digests of recordings made before the profiles existed: the seed and realistic signals stay byte-identical.
        (SimulatorConfig.seed_default(START_NS, seed=3),
         "d6b6285b7f13c8a0fe3823348b8c5bc2708cf2cf31e23b1cbf7591f82986e074"),
        (fleet_config(anomalies=AnomalySpec(rate_per_sensor_hour=12.0)),
         "0e998d97c92a5967189c6e68d00798821fbe74f97637199bfe9762a660df92db"),
    ],
    ids=["seed", "uniform-fleet-with-anomalies"],
)
def test_default_signals_give_the_same_bytes_as_before_the_profiles(tmp_path, config, digest):
    write_jsonl_recording(tmp_path, config)
    assert _recording_digest(tmp_path) == digest


def test_realistic_signal_gives_the_same_bytes_as_before_the_profiles(tmp_path):
    config = fleet_config(**FAULTY)
    write_jsonl_recording(tmp_path, config)
    assert _recording_digest(tmp_path) == "3153c31072b59994f5760173b20b71bd28db36ae16564087c118f0dc4028b210"


# --- each profile's defining property -----------------------------------------------------------------------------

def test_quantized_values_lie_on_the_grid_and_on_off_sensors_have_two_levels():
    config = _config("quantized")
    model = run_model(config)
    profiles = model.profiles
    sensor, _, cents = _readings(config)
    step_cents = np.rint(profiles.step * 100).astype(np.int64)
    assert (step_cents > 0).all()
    assert (cents % step_cents[sensor] == 0).all()
    two_level = np.flatnonzero(profiles.two_level)
    assert 0 < two_level.shape[0] < profiles.sensors
    for s in two_level.tolist():
        levels = set(np.unique(cents[sensor == s]).tolist())
        assert levels == {round(profiles.level[s] * 100), round(profiles.high[s] * 100)}
    grid = np.flatnonzero(~profiles.two_level)
    # noise is below half a step: most readings of a grid sensor repeat a neighbour's value
    repeats = [np.mean(np.diff(cents[sensor == s]) == 0) for s in grid.tolist()]
    assert np.median(repeats) > 0.5


def test_quantized_training_mad_is_zero_for_a_good_share_of_sensors():
    run = simulate_windows(bench_config("quantized", devices=10, tags=6, rate=0.0, seed=3))
    table = run.table.to_pandas()
    train = table[table.ts <= run.times[1]]
    mad = train.groupby(["device", "tag"])["value"].agg(lambda v: np.median(np.abs(v - np.median(v))))
    assert (mad == 0).mean() >= 0.3


def test_counts_are_mostly_zero_non_negative_integers_with_normal_bursts():
    config = _config("counts")
    sensor, _, cents = _readings(config)
    assert (cents % 100 == 0).all() and (cents >= 0).all()
    assert np.mean(cents == 0) > 0.8
    zero_share = np.array([np.mean(cents[sensor == s] == 0) for s in range(60)])
    assert (zero_share > 0.6).all()
    assert np.mean(cents >= 300) > 0.0005  # bursts: a few readings of 3 events and more


def test_heavy_noise_has_kurtosis_well_above_a_gaussian():
    config = _config("heavy")
    model = run_model(config)
    sensor, ns, cents = _readings(config)
    slow = model.profiles.level[sensor] + model.profiles.drift_per_period[sensor] * (ns - START_NS) / HOUR_NS
    residual = cents / 100 - slow
    kurtosis = [_kurtosis(residual[sensor == s]) for s in range(60)]
    assert np.median(kurtosis) > 10  # a Gaussian's is 3
    realistic = _readings(_config("daily"))
    assert _kurtosis(np.diff(realistic[2][realistic[0] == 0]).astype(float)) < 4


def test_daily_cycle_has_the_set_period_and_an_amplitude_of_several_noise_sds():
    period = 20 * 60 * NS_PER_S
    config = _config("daily", seconds=3600, period_ns=period)
    model = run_model(config)
    p = model.profiles
    assert (p.amplitude >= 4 * p.noise).all()
    sensor, ns, cents = _readings(config)
    seconds = (ns - START_NS) // NS_PER_S  # 1 Hz: one reading per second per sensor
    for s in range(0, 60, 7):
        mine = sensor == s
        values = np.zeros(3600)
        values[seconds[mine]] = cents[mine] / 100
        lag = period // NS_PER_S
        same_phase = values[lag:] - values[:-lag]
        half_phase = values[lag // 2:] - values[:-(lag // 2)]
        assert np.sqrt(np.mean(same_phase**2)) < 0.5 * np.sqrt(np.mean(half_phase**2))


def test_mixed_gives_every_profile_an_equal_share_deterministically_per_seed():
    config = _config("mixed")
    names = run_model(config).profiles.names()
    assert sorted(set(names)) == sorted(MIXED_PROFILES)
    assert all(names.count(p) == 12 for p in MIXED_PROFILES)
    assert run_model(config).profiles.names() == names
    other = run_model(SimulatorConfig(**{**config.__dict__, "seed": 6})).profiles.names()
    assert other != names and sorted(other) == sorted(names)
    assert set(PROFILE_NAMES) >= set(names)


@pytest.mark.parametrize("signal", ["daily", "quantized", "counts", "heavy", "mixed"])
def test_profiles_are_deterministic_per_seed(tmp_path, signal):
    config = _config(signal, seconds=300, rate_per_sensor_hour=20.0, train_anomalies=0.2)
    write_jsonl_recording(tmp_path / "a", config)
    write_jsonl_recording(tmp_path / "b", config)
    assert _recording_digest(tmp_path / "a") == _recording_digest(tmp_path / "b")
    write_jsonl_recording(tmp_path / "c", SimulatorConfig(**{**config.__dict__, "seed": 99}))
    assert _recording_digest(tmp_path / "c") != _recording_digest(tmp_path / "a")


# --- anomalies, sized by the profile's own variation ----------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_run():
    config = _config("mixed", seconds=3600, rate_per_sensor_hour=8.0)
    return config, *_clean_and_anomalous(config)


def test_anomalous_readings_change_only_inside_labels_and_stay_on_the_profiles_grid(mixed_run):
    config, model, clean, anomalous = mixed_run
    p, plan = model.profiles, model.plan
    assert {PROFILE_NAMES[c] for c in p.code[plan.sensor].tolist()} == set(MIXED_PROFILES)
    key = lambda r: r[0] * 10**13 + (r[1] - START_NS)  # noqa: E731
    index = np.searchsorted(key(clean), key(anomalous))
    assert (key(clean)[index] == key(anomalous)).all()  # dropouts only remove readings
    changed = clean[2][index] != anomalous[2]
    from sensorflow.simulator.anomalies import locate

    inside = locate(plan, anomalous[0], anomalous[1]) >= 0
    assert not (changed & ~inside).any()
    sensor, cents = anomalous[0], anomalous[2]
    step = np.rint(p.step * 100).astype(np.int64)
    quantized = step[sensor] > 0
    assert (cents[quantized] % step[sensor[quantized]] == 0).all()
    counts = p.code[sensor] == PROFILE_NAMES.index("counts")
    assert (cents[counts] >= 0).all() and (cents[counts] % 100 == 0).all()


def _spans(plan: AnomalyPlan, kind: str):
    return [
        (int(s), int(a), int(b), float(m))
        for s, k, a, b, m in zip(plan.sensor, plan.kind, plan.start_ns, plan.end_ns, plan.magnitude, strict=True)
        if k == KIND_INDEX[kind]
    ]


def test_spikes_exceed_each_profiles_normal_variation(mixed_run):
    _, model, clean, anomalous = mixed_run
    p = model.profiles
    spikes = _spans(model.plan, "spike")
    assert len(spikes) > 30
    checked = set()
    for s, start, end, magnitude in spikes:
        profile = PROFILE_NAMES[p.code[s]]
        normal = clean[2][clean[0] == s] / 100
        inside = anomalous[2][(anomalous[0] == s) & (anomalous[1] >= start) & (anomalous[1] < end)] / 100
        if profile == "heavy":
            # beyond 99.9 % of the sensor's normal deviations from its median
            assert abs(magnitude) > np.quantile(np.abs(normal - np.median(normal)), 0.999)
        elif profile == "counts":
            assert magnitude > 0 and inside.mean() > normal.max()  # far above a normal burst
        elif profile == "quantized":
            assert abs(magnitude) > 1.4 * (p.high[s] - p.level[s] if p.two_level[s] else 2 * p.step[s])
        elif profile == "daily":
            assert abs(magnitude) >= 6 * p.noise[s]
        checked.add(profile)
    assert checked >= {"heavy", "counts", "quantized", "daily"}


def test_level_shifts_exceed_the_daily_cycles_local_movement(mixed_run):
    _, model, _, _ = mixed_run
    p = model.profiles
    for s, _, _, magnitude in _spans(model.plan, "level_shift"):
        if PROFILE_NAMES[p.code[s]] == "daily":
            slope_per_window = 2 * np.pi * p.amplitude[s] / p.period_ns * WINDOW_NS
            assert abs(magnitude) > 3 * slope_per_window and abs(magnitude) >= 4 * p.noise[s]


def test_stuck_counts_repeat_a_non_zero_value_and_stuck_on_off_sensors_stay_on(mixed_run):
    _, model, _, anomalous = mixed_run
    p = model.profiles
    seen = set()
    for s, start, end, _ in _spans(model.plan, "stuck"):
        profile = PROFILE_NAMES[p.code[s]]
        values = set(anomalous[2][(anomalous[0] == s) & (anomalous[1] >= start) & (anomalous[1] < end)].tolist())
        assert len(values) == 1
        if profile == "counts":
            assert values.pop() > 0
        elif profile == "quantized" and p.two_level[s]:
            assert values.pop() == round(p.high[s] * 100)
        seen.add(profile)
    assert "counts" in seen


# --- anomalies inside the training range ----------------------------------------------------------------------------

@pytest.mark.parametrize("signal", ["realistic", "mixed"])
def test_training_anomalies_lie_inside_the_training_range_and_reach_labels_json(tmp_path, signal):
    config = _config(signal, seconds=3600, rate_per_sensor_hour=2.0, train_anomalies=0.3, train_range=0.5)
    start, end = START_NS, START_NS + 3600 * NS_PER_S
    train_end = config.anomalies.training_end_ns(config.timing)
    assert train_end == START_NS + 1800 * NS_PER_S
    plan = run_model(config).plan
    placed = plan.subset(plan.in_training)
    assert len(placed) == 18  # 30 % of 60 sensors, one each
    assert (placed.start_ns >= start).all() and (placed.end_ns <= train_end).all()
    assert (placed.start_ns % WINDOW_NS == 0).all() and (placed.end_ns % WINDOW_NS == 0).all()
    stuck = placed.kind == KIND_INDEX["stuck"]
    assert stuck.any() and ((placed.end_ns - placed.start_ns)[stuck] >= 0.3 * (train_end - start) - WINDOW_NS).all()
    assert ((plan.start_ns >= start) & (plan.end_ns <= end)).all()
    # spans of a sensor stay disjoint with a free window between them
    for s in np.unique(plan.sensor).tolist():
        mine = plan.sensor == s
        assert (plan.start_ns[mine][1:] >= plan.end_ns[mine][:-1] + WINDOW_NS).all()
    write_jsonl_recording(tmp_path, config)
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels) == len(plan)
    in_range = [label for label in labels if _ns(label["end"]) <= train_end]
    assert len(in_range) >= 18
    assert all(start <= _ns(label["start"]) < _ns(label["end"]) <= end for label in labels)


def test_training_anomalies_change_the_readings_they_label():
    config = _config("mixed", seconds=1200, train_anomalies=0.5)
    model, clean, anomalous = _clean_and_anomalous(config)
    placed = model.plan.subset(model.plan.in_training)
    assert len(placed) == 30 and len(model.plan) == 30  # no Poisson anomalies at rate 0
    for s, kind, start, end in zip(placed.sensor, placed.kind, placed.start_ns, placed.end_ns, strict=True):
        before = clean[2][(clean[0] == s) & (clean[1] >= start) & (clean[1] < end)]
        after = anomalous[2][(anomalous[0] == s) & (anomalous[1] >= start) & (anomalous[1] < end)]
        if kind == KIND_INDEX["dropout"]:
            assert after.shape[0] == 0
        elif kind == KIND_INDEX["stuck"]:
            assert np.unique(after).shape[0] == 1
        else:
            assert (before != after).any()


# --- the bench's library call -----------------------------------------------------------------------------------------

def test_simulate_windows_gives_window_rows_labels_times_and_profiles():
    config = bench_config("mixed", devices=4, tags=5, train_hours=0.25, score_hours=0.5, rate=4.0, train_anomalies=0.25)
    run = simulate_windows(config, train_keep=0.0)
    start, train_end, end = run.times
    assert train_end - start == 900 * NS_PER_S and end - start == 2700 * NS_PER_S
    ts = run.table.column("ts").to_numpy()
    assert (ts % WINDOW_NS == 0).all() and ts.min() > start and ts.max() <= end + WINDOW_NS
    counts = run.table.column("count").to_numpy()
    assert counts.max() <= 6  # 1 Hz with jitter: 5 readings a window, 6 at most
    assert sorted(set(run.profiles.values())) == sorted(MIXED_PROFILES)
    assert len(run.profiles) == 20
    inside_training = [label for label in run.labels if _ns(label.end) <= train_end]
    assert len(inside_training) == 5  # train_keep=0 removes the Poisson ones there; the placed ones stay
    assert simulate_windows(config, train_keep=0.0).table.equals(run.table)


# --- the command line -----------------------------------------------------------------------------------------------

def test_cli_signal_period_and_training_anomalies(tmp_path, capsys):
    import argparse

    from sensorflow.simulator.cli import add_subcommand

    parser = argparse.ArgumentParser(prog="sensorflow")
    add_subcommand(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(["simulate", *argv])
        return args.func(args)

    common = ["--profile", "fleet", "--devices", "4", "--tags", "5", "--duration", "20m",
              "--start", "2026-01-01T00:00:00Z", "--signal", "mixed", "--period", "10m"]
    assert run("--out", str(tmp_path / "rec"), *common, "--train-anomalies", "0.5", "--train-range", "0.5") == 0
    labels = json.loads((tmp_path / "rec" / "labels.json").read_text())
    assert len(labels) == 10 and "stuck" in {label["kind"] for label in labels}
    assert all(_ns(label["end"]) <= START_NS + 600 * NS_PER_S for label in labels)
    assert run("--out", str(tmp_path / "bad"), *common, "--period", "0s") == 2
    assert "period must be >= 1 s" in capsys.readouterr().err

"""Parity: seed-ocsvm gives the original's predictions on the original's own windows table.

The original (SEED_FACTS.md) trained at minute 0 of every hour on the last
hour and predicted at minute 10 on the last hour, one sensor at a time, with
``TS BETWEEN ts_from AND ts_to`` (inclusive on both ends) and a scikit-learn
``Pipeline([StandardScaler(), OneClassSVM(nu=0.0001, kernel='rbf',
gamma=0.01)])`` on the ``Value`` column; ``predict() == -1`` became
Prediction 1. Our ranges are half-open on the window end, ``from < TS <= to``;
TS values sit on the millisecond grid, so the seed's ``[a, b]`` is our
``(a - 1 ms, b]``: the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sensorflow.batch_jobs.detectors import SensorWindows, get_detector, load_model, save_model
from tests.support.builders import window_table

WINDOW_NS = 5_000_000_000
MS = 1_000_000
HOUR = pd.Timedelta(hours=1)


def _seed_schedule(first: pd.Timestamp, last: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]]:
    """(train_from, train_to=model time, score_to) for each hourly training run the seed data covers."""
    runs = []
    at = first.floor("h") + HOUR
    while at <= last.ceil("h"):
        runs.append((at - HOUR, at, at + pd.Timedelta(minutes=10)))
        at += HOUR
    return runs


def _original(frame: pd.DataFrame, device: int, tag: int, train: tuple, score: tuple) -> pd.DataFrame:
    """The seed's train job then predict job for one sensor: pandas selection + the scikit-learn pipeline."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM

    sensor = frame[(frame["Device"] == device) & (frame["Tag"] == tag)]
    training = sensor[(sensor["TS"] >= train[0]) & (sensor["TS"] <= train[1])]
    model = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(nu=0.0001, kernel="rbf", gamma=0.01))])
    model.fit(training[["Value"]].values)
    scoring = sensor[(sensor["TS"] >= score[0]) & (sensor["TS"] <= score[1])]
    predictions = model.predict(scoring[["Value"]].values)
    return pd.DataFrame(
        {"TS": scoring["TS"].values, "Val": scoring["Value"].values, "Prediction": (predictions == -1).astype(int)}
    )


def _ours(table: pa.Table, device: str, tag: str, train: tuple, score: tuple) -> pd.DataFrame:
    """The same through SensorWindows -> Detector -> bytes -> Model, on the seed's ranges as half-open ones."""

    def sensor_windows(span: tuple) -> SensorWindows:
        range_from, range_to = span[0].value - MS, span[1].value
        ts = table.column("ts").to_numpy()
        mask = (
            (table.column("device").to_numpy(zero_copy_only=False) == device)
            & (table.column("tag").to_numpy(zero_copy_only=False) == tag)
            & (ts > range_from) & (ts <= range_to)
        )
        return SensorWindows.from_table(table.filter(pa.array(mask)), device, tag, range_from, range_to, WINDOW_NS)

    model = load_model(save_model(get_detector("seed-ocsvm").fit(sensor_windows(train))))
    scores = model.score(sensor_windows(score))
    return pd.DataFrame(
        {"TS": pd.to_datetime(scores.ts), "Val": scores.value, "Prediction": scores.is_anomaly.astype(int)}
    )


@pytest.fixture
def seed_frame(seed_csv: Path) -> pd.DataFrame:
    frame = pd.read_csv(seed_csv)
    frame["TS"] = pd.to_datetime(frame["TS"], format="%Y-%m-%d %H:%M:%S.%f")
    return frame


def _window_table(frame: pd.DataFrame) -> pa.Table:
    """The seed rows as our windows (the seed kept only the mean: count 1, min = max = value)."""
    ts = frame["TS"].to_numpy("datetime64[ns]").astype(np.int64)
    return window_table(ts, frame["Device"].astype(str), frame["Tag"].astype(str), frame["Value"].to_numpy(np.float64), read=True)


def test_seed_ocsvm_predicts_like_the_original(seed_frame: pd.DataFrame):
    table = _window_table(seed_frame)
    schedule = _seed_schedule(seed_frame["TS"].min(), seed_frame["TS"].max())
    sensors = sorted(set(zip(seed_frame["Device"], seed_frame["Tag"])))
    assert len(sensors) == 15 and len(schedule) == 5  # models at 00:00 .. 04:00
    compared = flagged = 0
    for device, tag in sensors:
        for train_from, model_time, score_to in schedule:
            train, score = (train_from, model_time), (score_to - HOUR, score_to)
            want = _original(seed_frame, device, tag, train, score)
            got = _ours(table, str(device), str(tag), train, score)
            pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=f"sensor {device}/{tag} at {score_to}")
            compared += len(want)
            flagged += int(want["Prediction"].sum())
    # All but the first ten minutes of the sample are scored, and both verdicts occur.
    assert compared > 0.9 * len(seed_frame)
    assert 0 < flagged < compared, (flagged, compared)

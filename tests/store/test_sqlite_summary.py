"""The SQLite store's summary: per-sensor index seeks, and a store without SensorWrites rows."""

import pyarrow as pa

from sensorflow.store import open_store
from tests.support.builders import window_table

S = 5_000_000_000
BASE = 1_800_000_000 * 10**9


def windows(ends: list[int], sensors: list[tuple[str, str]]) -> pa.Table:
    rows = [(BASE + e * S, d, t) for e in ends for d, t in sensors]
    ends_ns, devices, tags = zip(*rows)
    return window_table(ends_ns, devices, tags)


def test_summary_spans_every_sensor_and_does_without_sensor_writes(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.create_schema()
        store.upsert_windows(windows([1, 2], [("1", "a"), ("2", "b")]))
        store.upsert_windows(windows([0, 7], [("2", "b")]))
        expected = (6, 2, "2027-01-15 08:00:00.000", "2027-01-15 08:00:35.000")
        summary = store.summary()
        assert (summary.windows, summary.sensors, summary.first_window, summary.last_window) == expected
        store._db.execute("DELETE FROM SensorWrites")  # as in a store written before that table
        summary = store.summary()
        assert (summary.windows, summary.sensors, summary.first_window, summary.last_window) == expected

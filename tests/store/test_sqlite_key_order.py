"""The SQLite window transaction's row order: by (device, tag, window_end) as SQLite compares them."""

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorflow.store.sqlite import _in_key_order
from tests.support.builders import window_table

ids = st.sampled_from(["0", "1", "10", "9", "a", "B", "é", "z\u00e9", "日本", "", " x"])


def windows(rows: list[tuple[int, str, str]]) -> pa.Table:
    ends, devices, tags = zip(*rows)
    return window_table(ends, devices, tags, np.arange(len(rows), dtype=np.float64), 1, 1.0, 1.0)


def by_bytes(table: pa.Table) -> list[tuple]:
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: (r["device"].encode(), r["tag"].encode(), r["window_end"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62), 2**62), ids, ids), min_size=1, max_size=60, unique=True))
def test_rows_come_in_key_order_with_their_ids(rows):
    table = windows(rows)
    ordered, device, tag = _in_key_order(table)
    assert ordered.to_pylist() == by_bytes(table)  # UTF-8 byte order, SQLite's BINARY collation
    assert device.tolist() == ordered["device"].to_pylist()
    assert tag.tolist() == ordered["tag"].to_pylist()


def test_a_key_too_wide_for_int64_falls_back_to_arrow_sort(monkeypatch):
    monkeypatch.setattr("sensorflow.store.sqlite._MAX_KEY", 3)  # as if ranks multiplied past int64
    table = windows([(5, "b", "x"), (1, "b", "x"), (9, "a", "y"), (2, "é", "a"), (3, "a", "y")])
    ordered, device, tag = _in_key_order(table)
    assert ordered.to_pylist() == by_bytes(table)
    assert (device.tolist(), tag.tolist()) == (ordered["device"].to_pylist(), ordered["tag"].to_pylist())

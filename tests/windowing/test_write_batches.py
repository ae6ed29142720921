"""When closed windows go to the store: WriteBatchLogic's rule."""

from datetime import timedelta

import numpy as np

from sensorflow.records.windows import WindowBatch
from sensorflow.windowing.operators import WriteBatchLogic
from tests.support.builders import window_table

S = 5_000_000_000


def windows(end: int, sensors: int) -> WindowBatch:
    """One closed window (ending at ``end`` windows) for ``sensors`` sensors."""
    return WindowBatch(window_table(np.full(sensors, end * S), [str(i) for i in range(sensors)], "t"))


def logic(state=None, handed=True) -> WriteBatchLogic:
    """``handed``: as after the first batch (which goes at ``min_rows``, see below)."""
    w = WriteBatchLogic(min_rows=100, max_rows=1_000, min_windows=3, max_wait=timedelta(seconds=60), state=state)
    w.handed = handed
    return w


def rows(out) -> list[int]:
    return [len(b) for b in out[0]]


def test_a_batch_goes_once_it_spans_enough_windows_and_rows():
    w = logic()
    assert rows(w.on_batch([windows(1, 60)])) == []
    assert rows(w.on_batch([windows(2, 60)])) == []  # 120 rows, but 2 windows
    assert rows(w.on_batch([windows(3, 60)])) == [180]
    assert w.tables == [] and w.notify_at() is None


def test_the_first_batch_goes_at_min_rows_whatever_it_spans():
    w = logic(handed=False)
    assert rows(w.on_batch([windows(1, 60)])) == []  # fewer than min_rows
    assert rows(w.on_batch([windows(2, 60)])) == [120]  # 2 windows: the writer had nothing yet
    assert rows(w.on_batch([windows(3, 60)])) == []  # from then on, min_windows counts again
    assert rows(w.on_batch([windows(4, 60)])) == []
    assert rows(w.on_batch([windows(5, 60)])) == [180]
    assert rows(logic(handed=False).on_batch([windows(1, 100)])) == [100]


def test_few_rows_wait_even_over_many_windows():
    w = logic()
    for end in range(1, 6):
        assert rows(w.on_batch([windows(end, 10)])) == []  # 5 windows, 50 rows < min_rows
    assert rows(w.on_notify()) == [50]  # until the wall-time wait is over


def test_a_wide_fleet_goes_at_max_rows_whatever_the_windows():
    w = logic()
    assert rows(w.on_batch([windows(1, 600)])) == []
    assert rows(w.on_batch([windows(1, 600)])) == [1_200]


def test_end_of_input_flushes_and_state_survives_a_snapshot():
    w = logic()
    w.on_batch([windows(1, 60), windows(2, 60)])
    restored = logic(w.snapshot())
    assert restored.rows == 120 and restored.ends == {S, 2 * S}
    assert rows(restored.on_batch([windows(3, 1)])) == [121]
    restored.on_batch([windows(4, 5)])
    assert rows(restored.on_eof()) == [5]

"""The per-sensor detector interface: window rows in, a fitted model, scores out.

A ``Detector`` fits one sensor's ``SensorWindows`` into a ``Model``; a model
scores windows of the same sensor and describes itself as named numeric
arrays plus JSON-able parameters (``to_arrays``/``params``), so it can be
stored without pickle (see ``sensorflow.batch_jobs.detectors.codec``). Nothing here
knows of SQL, Blob storage or tasks.

Times are int64 ns since the epoch (UTC); a window's ``ts`` is its END, and
a sensor's range is half-open on the window end: ``range_from < ts <= range_to``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.sensors import sensor_pairs

__all__ = [
    "Detector",
    "Model",
    "Scores",
    "SensorWindows",
    "iter_sensor_windows",
    "params_from",
    "scalars_from_arrays",
    "scalars_to_arrays",
]


@dataclass(frozen=True, eq=False)
class SensorWindows:
    """One sensor's window rows over ``(range_from, range_to]``, ordered by ``ts``.

    ``ts`` (int64 ns, window ends) is strictly increasing and inside the
    range; ``value`` (mean), ``min`` and ``max`` are float64 and ``count``
    int64, all of the same length. A window slot without readings has no
    row, unless ``with_missing_slots`` added it (count 0, NaN values).
    """

    device: str
    tag: str
    ts: np.ndarray
    value: np.ndarray
    count: np.ndarray
    min: np.ndarray
    max: np.ndarray
    range_from: int
    range_to: int
    window_ns: int

    def __post_init__(self) -> None:
        n = self.ts.shape[0]
        if self.window_ns <= 0:
            raise ValueError(f"window_ns must be > 0, got {self.window_ns}")
        if self.range_from >= self.range_to:
            raise ValueError(f"empty range: range_from {self.range_from} >= range_to {self.range_to}")
        for name in ("value", "count", "min", "max"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, ts has ({n},)")
        if n and (self.ts[0] <= self.range_from or self.ts[-1] > self.range_to):
            raise ValueError(f"windows of {self.device}/{self.tag} fall outside (range_from, range_to]")
        if n > 1 and not bool((self.ts[1:] > self.ts[:-1]).all()):
            raise ValueError(f"window ends of {self.device}/{self.tag} are not strictly increasing")

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_table(
        cls, table: pa.Table, device: str, tag: str, range_from: int, range_to: int, window_ns: int
    ) -> SensorWindows:
        """Windows of one sensor from a table with ``WINDOW_READ_SCHEMA`` columns, sorted by ``ts`` here."""
        ts = _column(table, "ts", np.int64)
        order = None if ts.shape[0] < 2 or bool((ts[1:] > ts[:-1]).all()) else np.argsort(ts, kind="stable")
        columns = {
            "ts": ts,
            "value": _column(table, "value", np.float64),
            "count": _column(table, "count", np.int64),
            "min": _column(table, "min", np.float64),
            "max": _column(table, "max", np.float64),
        }
        if order is not None:
            columns = {name: array[order] for name, array in columns.items()}
        return cls(str(device), str(tag), range_from=range_from, range_to=range_to, window_ns=window_ns, **columns)

    def slot_ends(self) -> np.ndarray:
        """Every window end in ``(range_from, range_to]``: multiples of ``window_ns``."""
        first = (self.range_from // self.window_ns + 1) * self.window_ns
        return np.arange(first, self.range_to + 1, self.window_ns, dtype=np.int64)

    def with_missing_slots(self) -> SensorWindows:
        """Every window slot of the range; slots without a row get count 0 and NaN value/min/max."""
        slots = self.slot_ends()
        if self.ts.shape[0] == slots.shape[0]:
            return self  # strictly increasing, inside the range and aligned: nothing is missing
        if self.ts.shape[0] and bool((self.ts % self.window_ns != 0).any()):
            raise ValueError(f"window ends of {self.device}/{self.tag} are not multiples of window_ns {self.window_ns}")
        at = (self.ts - slots[0]) // self.window_ns if slots.shape[0] else np.zeros(0, dtype=np.int64)
        full = {name: np.full(slots.shape[0], np.nan) for name in ("value", "min", "max")}
        count = np.zeros(slots.shape[0], dtype=np.int64)
        count[at] = self.count
        for name, array in full.items():
            array[at] = getattr(self, name)
        return SensorWindows(
            self.device, self.tag, slots, full["value"], count, full["min"], full["max"],
            self.range_from, self.range_to, self.window_ns,
        )


def _column(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null(s)")
    return np.asarray(column.to_numpy(), dtype=dtype)


def _runs(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Ends (exclusive row numbers) and values of the runs of equal consecutive strings."""
    encoded = pc.run_end_encode(column.combine_chunks())
    return encoded.run_ends.to_numpy().astype(np.int64), encoded.values.to_pylist()


def _sensor_runs(table: pa.Table, ts: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str]]] | None:
    """Row bounds and sensors of a table ordered by sensor then ``ts``; None if it is not so ordered."""
    device_ends, devices = _runs(table.column("device"))
    tag_ends, tags = _runs(table.column("tag"))
    ends = np.union1d(device_ends, tag_ends)
    starts = np.r_[0, ends[:-1]]
    sensors = list(zip(
        (devices[i] for i in np.searchsorted(device_ends, starts, side="right").tolist()),
        (tags[i] for i in np.searchsorted(tag_ends, starts, side="right").tolist()),
        strict=True,
    ))
    rising = np.diff(ts) > 0
    rising[ends[:-1] - 1] = True  # a new sensor may start at any time
    if len(set(sensors)) != len(sensors) or not bool(rising.all()):
        return None
    return np.r_[starts, ends[-1]], sensors


def _sorted_by_sensor(table: pa.Table, columns: dict[str, np.ndarray]):
    """Sort rows by (device, tag, ts): row bounds, sensors and the reordered columns."""
    key, device_names, tag_names = sensor_pairs(table.column("device"), table.column("tag"))
    devices, tags = device_names.to_pylist(), tag_names.to_pylist()
    order = np.lexsort((columns["ts"], key))
    key = key[order]
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
    sensors = [(devices[k // len(tags)], tags[k % len(tags)]) for k in key[bounds[:-1]].tolist()]
    return bounds, sensors, {name: array[order] for name, array in columns.items()}


def iter_sensor_windows(
    table: pa.Table, range_from: int, range_to: int, window_ns: int
) -> Iterator[SensorWindows]:
    """Split a many-sensor ``WINDOW_READ_SCHEMA`` table into one ``SensorWindows`` per sensor.

    A table ordered by sensor then ``ts`` (as ``Store.read_windows`` returns
    it) is split where the sensor changes, in its order, without copying;
    any other table is sorted by (device, tag, ts) first. Whole-column work,
    then a few array slices per sensor.
    """
    if table.num_rows == 0:
        return
    columns = {
        "ts": _column(table, "ts", np.int64),
        "value": _column(table, "value", np.float64),
        "count": _column(table, "count", np.int64),
        "min": _column(table, "min", np.float64),
        "max": _column(table, "max", np.float64),
    }
    runs = _sensor_runs(table, columns["ts"])
    bounds, sensors, columns = (*runs, columns) if runs else _sorted_by_sensor(table, columns)
    for (lo, hi), (device, tag) in zip(pairwise(bounds.tolist()), sensors, strict=True):
        yield SensorWindows(
            device, tag, range_from=range_from, range_to=range_to, window_ns=window_ns,
            **{name: array[lo:hi] for name, array in columns.items()},
        )


@dataclass(frozen=True, eq=False)
class Scores:
    """A model's verdict on each scored window, aligned arrays.

    ``ts`` int64 window ends, ``value`` float64 (NaN for a missing slot),
    ``score`` float64 (higher = more anomalous; comparable only within one
    detector), ``is_anomaly`` bool.
    """

    ts: np.ndarray
    value: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray

    def __post_init__(self) -> None:
        n = self.ts.shape[0]
        for name in ("value", "score", "is_anomaly"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, ts has ({n},)")

    def __len__(self) -> int:
        return int(self.ts.shape[0])


class Model(ABC):
    """A fitted per-sensor model: scores windows and serializes without pickle."""

    detector: ClassVar[str]

    @abstractmethod
    def score(self, windows: SensorWindows) -> Scores:
        """Score ``windows`` (the same sensor the model was fitted on)."""

    def warnings(self) -> list[str]:
        """What looked anomalous in the training range (none unless a detector says so)."""
        return []

    @abstractmethod
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named numeric (bool/int/float) arrays."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyperparameters and metadata, JSON-able."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> Model:
        """The model ``to_arrays``/``params`` describe; raises ValueError if they do not fit."""


class Detector(ABC):
    """Fits one sensor's windows into a ``Model``."""

    name: ClassVar[str]
    min_windows: ClassVar[int]
    scalable: ClassVar[bool] = False
    """True when the constructor takes ``threshold_scale`` (``get_detector`` passes it)."""
    """Fewer window rows than this: the task skips the sensor with a reason."""

    @abstractmethod
    def fit(self, windows: SensorWindows) -> Model:
        """A model of ``windows``; raises ValueError with fewer than ``min_windows`` rows."""

    def _check_enough(self, windows: SensorWindows) -> None:
        if len(windows) < self.min_windows:
            raise ValueError(
                f"{self.name} needs at least {self.min_windows} windows, "
                f"{windows.device}/{windows.tag} has {len(windows)}"
            )

    def _readings(self, windows: SensorWindows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The windows with readings (also when given the missing slots): value, count, ts and max - min.

        ValueError with fewer than ``min_windows`` of them.
        """
        self._check_enough(windows)
        rows = windows.count > 0
        value, count, ts = windows.value[rows], windows.count[rows], windows.ts[rows]
        if value.shape[0] < self.min_windows:
            raise ValueError(f"{self.name} needs at least {self.min_windows} windows with readings, "
                             f"{windows.device}/{windows.tag} has {value.shape[0]}")
        return value, count, ts, windows.max[rows] - windows.min[rows]


def scalars_to_arrays(scalars: Any) -> dict[str, np.ndarray]:
    """A dataclass of floats (fitted statistics) as one-number float64 arrays by field name."""
    return {name: np.array([value], dtype=np.float64) for name, value in asdict(scalars).items()}


def scalars_from_arrays(cls: type, arrays: dict[str, np.ndarray], detector: str, what: str) -> Any:
    """The dataclass ``cls`` that ``scalars_to_arrays`` stored; ValueError naming missing or malformed arrays."""
    names = [f.name for f in fields(cls)]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"{detector} model is missing array(s): {', '.join(missing)}")
    if any(np.asarray(arrays[name]).shape != (1,) for name in names):
        raise ValueError(f"{detector} {what} must each be one number")
    return cls(**{name: float(arrays[name][0]) for name in names})


def params_from(cls: type, params: dict[str, Any], detector: str) -> Any:
    """The hyperparameter dataclass ``cls`` from a model's JSON params; ValueError naming unknown ones."""
    unknown = set(params) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {detector} parameter(s): {', '.join(sorted(unknown))}")
    return cls(**params)

"""Arrow tables to the ODBC store's JSON parameters, and fetched rows back to Arrow.

A write sends rows as one JSON array of objects keyed by column name
(times as ISO-8601 text to the millisecond, bytes as base64), which the
server expands into a rowset: one parameter whatever the row count, so no
statement meets SQL Server's 2,100-parameter limit.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.store.base import StoreError
from sensorflow.store.dialects import Dialect
from sensorflow.store.schema import ID_LENGTH, TableSpec

__all__ = ["from_ns", "json_rows", "ms_text", "rows_to_table", "to_ns"]

_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)

Array = pa.Array | pa.ChunkedArray


def to_ns(value: datetime) -> int:
    """A naive UTC datetime from the driver as ns since the epoch."""
    return (value - _EPOCH) // _US * 1000


def from_ns(ns: int) -> datetime:
    """ns since the epoch as a naive UTC datetime (to the microsecond) for a parameter."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def ms_text(value: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.fff``: the store's text form of a time (as SQLite stores it)."""
    return value.isoformat(sep=" ", timespec="milliseconds")


def json_rows(spec: TableSpec, columns: Mapping[str, Array], dialect: Dialect) -> str:
    """The rows of ``columns`` (named by ``spec``'s columns) as the JSON text of one parameter.

    ``ts`` columns hold int64 ns; ids longer than the id columns allow are a StoreError.
    """
    values: dict[str, list] = {}
    for name, array in columns.items():
        kind = spec.column(name).kind
        if kind == "id":
            _check_id_length(spec.name, name, array, dialect)
        if kind == "float" and pc.all(pc.is_finite(array)).as_py() is False:  # None: no values, or only nulls
            # JSON has no NaN or infinity, and SQL Server's FLOAT cannot hold them either.
            raise StoreError(f"{spec.name}.{name} holds NaN or an infinity: the server store takes finite numbers only")
        if kind == "ts":
            values[name] = _iso_ms(array)
        elif kind == "bytes":
            values[name] = [None if b is None else base64.b64encode(b).decode() for b in array.to_pylist()]
        else:
            values[name] = array.to_pylist()
    names = list(values)
    return orjson.dumps([dict(zip(names, row)) for row in zip(*values.values())]).decode()


def rows_to_table(batches: Iterable[list[tuple]], schema: pa.Schema) -> pa.Table:
    """Fetched rows (first column a datetime) as a table of ``schema`` (first column int64 ns)."""
    tables = []
    for rows in batches:
        columns = [list(c) for c in zip(*rows)]
        arrays = [pa.array(columns[0], pa.timestamp("us")).cast(pa.timestamp("ns")).cast(pa.int64())]
        for column, kind in zip(columns[1:], schema.types[1:]):
            arrays.append(pa.array([bool(x) for x in column] if kind == pa.bool_() else column, kind))
        tables.append(pa.table(arrays, schema=schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _iso_ms(ns: Array) -> list[str | None]:
    """int64 ns as ``YYYY-MM-DDTHH:MM:SS.fff`` (ISO 8601, read the same under any server language), floored to ms."""
    ns = ns.combine_chunks() if isinstance(ns, pa.ChunkedArray) else ns
    ms = ns.fill_null(0).to_numpy(zero_copy_only=False) // 1_000_000
    stamps = pa.array(ms.astype("datetime64[ms]"), mask=ns.is_null().to_numpy(zero_copy_only=False))
    # A batch holds few distinct window ends: format each once.
    distinct = stamps.dictionary_encode()
    text = pc.strftime(distinct.dictionary, format="%Y-%m-%dT%H:%M:%S")
    return text.take(distinct.indices).to_pylist()


def _check_id_length(table: str, column: str, ids: Array, dialect: Dialect) -> None:
    lengths = pc.binary_length(ids)
    longest = pc.max(lengths).as_py() or 0
    if longest <= ID_LENGTH:  # UTF-8 bytes bound both characters and UTF-16 units
        return
    for value in ids.filter(pc.greater(lengths, ID_LENGTH)).to_pylist():
        if dialect.id_length(value) > ID_LENGTH:
            raise StoreError(
                f"{table}.{column} value {value[:40]!r}... is longer than {ID_LENGTH} "
                f"{dialect.id_length_unit}: it cannot be a key"
            )

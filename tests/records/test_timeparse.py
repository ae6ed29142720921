import numpy as np
import pyarrow as pa
import pytest

from sensorflow.records.timeparse import (
    MISSING,
    epoch_array_to_ns,
    epoch_to_ns,
    format_ms,
    parse_time,
    parse_time_array,
)

BASE = 1_523_048_395_000_000_000  # 2018-04-06T20:59:55Z


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2018-04-06T20:59:55.7096564Z", BASE + 709_656_400),  # the seed's .NET round-trip form
        ("2018-04-06T20:59:55Z", BASE),
        ("2018-04-06T20:59:55.123456789Z", BASE + 123_456_789),
        ("2018-04-06 20:59:55.123", BASE + 123_000_000),  # no zone: UTC
        ("2018-04-06T22:59:55+02:00", BASE),
        ("2018-04-06T18:59:55-0200", BASE),
        ("4/6/2018 8:59:55 PM", BASE),  # Event Hubs Capture's EnqueuedTimeUtc
        ("2018-02-30T00:00:00Z", None),
        ("2018-04-06T25:00:00Z", None),
        ("yesterday", None),
        ("", None),
        ("9999-12-31T23:59:59Z", None),  # beyond int64 ns
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_parse_time_array_agrees_with_scalar_on_mixed_forms():
    texts = ["2018-04-06T20:59:55.7096564Z", "2018-04-06 20:59:55.123", "junk", None]
    ns, ok = parse_time_array(pa.array(texts, pa.string()))
    assert ok.tolist() == [True, True, False, False]
    assert ns[0] == parse_time(texts[0]) and ns[1] == parse_time(texts[1]) and ns[2] == MISSING


@pytest.mark.parametrize(
    "value, expected",
    [
        (1_523_048_395, BASE),  # seconds
        (1_523_048_395.5, BASE + 500_000_000),
        (1_523_048_395_000, BASE),  # milliseconds
        (1_523_048_395_000_000, BASE),  # microseconds
        (BASE, BASE),  # nanoseconds
        (-1, None),
        (float("nan"), None),
    ],
)
def test_epoch_to_ns(value, expected):
    assert epoch_to_ns(value) == expected
    if expected is not None and isinstance(value, int):
        ns, ok = epoch_array_to_ns(np.array([value]))
        assert ok[0] and ns[0] == expected


def test_format_ms_is_the_store_text_form():
    assert format_ms(np.array([BASE + 709_656_400, BASE])) == ["2018-04-06 20:59:55.709", "2018-04-06 20:59:55.000"]


# -- the vectorized path for uniform ISO strings must agree with the scalar parser ------

from datetime import datetime, timedelta, timezone  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sensorflow.records.timeparse import _parse_uniform_iso  # noqa: E402

_times = st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31))


def _iso(moment: datetime, digits: int, separator: str = "T", zone: str = "Z") -> str:
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}{moment.microsecond % 997:03d}"[:digits]
    return text + zone


@settings(max_examples=200, deadline=None)
@given(st.lists(_times, min_size=1, max_size=60), st.integers(0, 9), st.sampled_from(["T", " "]), st.sampled_from(["Z", "z", ""]))
def test_uniform_iso_path_equals_the_scalar_parser(moments, digits, separator, zone):
    texts = [_iso(m, digits, separator, zone) for m in sorted(moments)]  # sorted: seconds repeat, as in fleets
    fast = _parse_uniform_iso(pa.array(texts))
    assert fast is not None
    assert fast.tolist() == [parse_time(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.lists(_times, min_size=1, max_size=20), st.data())
def test_a_corrupted_element_gives_the_scalar_answer_for_every_element(moments, data):
    texts = [_iso(m, 7) for m in moments]
    i = data.draw(st.integers(0, len(texts) - 1))
    at = data.draw(st.integers(0, len(texts[i]) - 1))
    texts[i] = texts[i][:at] + data.draw(st.sampled_from("0X9:-.T /\u00e9")) + texts[i][at + 1 :]
    ns, ok = parse_time_array(pa.array(texts))
    expected = [parse_time(t) for t in texts]
    assert [int(x) if good else None for x, good in zip(ns, ok)] == expected


@pytest.mark.parametrize(
    "texts",
    [
        ["2018-02-29T00:00:00Z"],  # not a leap year
        ["2016-02-29T00:00:00Z", "2018-13-01T00:00:00Z"],
        ["2018-04-06T24:00:00Z"],
        ["2018-04-06T20:59:60Z"],
        ["2018-04-06T20:59:55.1234567Z", "2018-04-06T20:59:55.123456Z"],  # widths differ
        ["2018-04-06T20:59:55.1234567+"],
        ["2300-01-01T00:00:00Z"],  # beyond int64 ns
        ["2018-04-06T20:59:55.123", "2018-04-06T20:59:55.12Z"],  # zone on some only
        ["2018-04-06T20:59:5"],
    ],
)
def test_uniform_path_declines_what_it_cannot_vouch_for(texts):
    assert _parse_uniform_iso(pa.array(texts)) is None
    ns, ok = parse_time_array(pa.array(texts))
    assert [int(x) if good else None for x, good in zip(ns, ok)] == [parse_time(t) for t in texts]


def test_uniform_path_on_a_sliced_array():
    base = datetime(2018, 4, 6, 20, 59, 55, tzinfo=timezone.utc)
    texts = [_iso(base + timedelta(milliseconds=700 * k), 7) for k in range(10)]
    sliced = pa.array(texts).slice(3, 5)
    assert _parse_uniform_iso(sliced).tolist() == [parse_time(t) for t in texts[3:8]]


# -- Arrow's JSON reader reads TS as a time on the decoder's fast path: it must never accept a
# string that ``parse_time`` refuses, nor give it another value ---------------------------------

import io  # noqa: E402

import orjson  # noqa: E402
import pyarrow.json as pa_json  # noqa: E402

from sensorflow.ingest.decode import _TIMED_PARSE  # noqa: E402

_pieces = st.tuples(
    st.sampled_from(["2018-04-06", "2016-02-29", "2018-02-29", "2018-13-01", "2018-4-06", "1677-09-21", "2262-04-12"]),
    st.sampled_from(["", "T", " ", "t", "_"]),
    st.sampled_from(["", "20", "20:59", "20:59:55", "2059", "24:00:00", "20:59:60", "20:60:00", "7:59:55"]),
    st.sampled_from(["", ".7", ".7096564", ".123456789", ".1234567890", ",5", "."]),
    st.sampled_from(["", "Z", "z", "+02:00", "-0200", "+02", "+2", "+02:0", " Z", "UTC"]),
)


def _arrow_reads(text: str) -> int | None:
    try:
        table = pa_json.read_json(io.BytesIO(orjson.dumps({"TS": text})), parse_options=_TIMED_PARSE)
    except pa.ArrowInvalid:
        return None
    return table.column("TS").cast(pa.int64())[0].as_py()


@settings(max_examples=500, deadline=None)
@given(_pieces)
def test_what_arrow_reads_as_a_time_parse_time_reads_the_same(pieces):
    text = "".join(pieces)
    by_arrow = _arrow_reads(text)
    if by_arrow is not None:
        assert parse_time(text) == by_arrow, text


@pytest.mark.parametrize(
    "text", ["2018-04-06T20", "2018-04-06T22+02", "2018-04-06 20:59:55.1234567+02", "2018-04-06T20:59:55.7096564Z"]
)
def test_reduced_precision_and_hour_offsets_are_read(text):
    assert _arrow_reads(text) is not None
    assert parse_time(text) == _arrow_reads(text)

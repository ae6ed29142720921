import numpy as np
import pyarrow as pa
import pytest

from ingest.timeparse import MISSING, epoch_array_to_ns, epoch_to_ns, format_ms, parse_time, parse_time_array

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

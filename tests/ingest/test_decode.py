from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sensorflow.ingest.decode as decode_module
from sensorflow.ingest.decode import DecodeConfig, decode_batch
from sensorflow.records.readings import MessageBatch
from sensorflow.records.timeparse import MISSING, parse_time

NOW = 1_800_000_000 * 10**9  # 2027-01-15
GOOD = b'{"TS": "2018-04-06T20:59:55.7096564Z", "Device": 2, "Tag": 4, "Value": 84.92}'


def batch(bodies, enqueued=None):
    n = len(bodies)
    enq = np.full(n, MISSING, np.int64) if enqueued is None else np.array(enqueued, np.int64)
    return MessageBatch("p0", list(bodies), np.arange(1, n + 1, dtype=np.int64), enq)


def joined_batch(bodies):
    """``bodies`` as a receiver hands them over when none holds a line break: one joined block."""
    n = len(bodies)
    assert not any(b"\n" in body for body in bodies)
    return MessageBatch("p0", None, np.arange(1, n + 1, dtype=np.int64), np.full(n, MISSING, np.int64), joined=b"\n".join(bodies))


def reasons(bodies, **config):
    decoded = decode_batch(batch(bodies), DecodeConfig(**config), now_ns=NOW)
    return [r.split(":")[0] for r in decoded.dead_letters.table["reason"].to_pylist()]


def test_seed_object():
    decoded = decode_batch(batch([GOOD]), DecodeConfig(), now_ns=NOW)
    row = decoded.readings.table.to_pylist()[0]
    assert row == {
        "position": 1, "element": 0, "ts": 1_523_048_395_709_656_400, "device": "2", "tag": "4", "value": 84.92
    }


def test_array_message_yields_one_reading_per_element():
    body = orjson.dumps([orjson.loads(GOOD), {**orjson.loads(GOOD), "Device": "pump-7", "Tag": "t"}])
    table = decode_batch(batch([body]), DecodeConfig(), now_ns=NOW).readings.table
    assert table["element"].to_pylist() == [0, 1]
    assert table["device"].to_pylist() == ["2", "pump-7"]


def test_int_and_string_ids_are_the_same_sensor():
    bodies = [GOOD, GOOD.replace(b'"Device": 2', b'"Device": "2"').replace(b'"Tag": 4', b'"Tag": "4"')]
    table = decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW).readings.table
    assert set(zip(table["device"].to_pylist(), table["tag"].to_pylist())) == {("2", "4")}


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1', "bad_json"),
        (b"\xff\xfe{}", "bad_utf8"),
        (b"", "empty_message"),
        (b"[]", "empty_array"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),  # crashed Arrow's JSON reader (segfault) before the guard
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1} null', "bad_json"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1}{}', "bad_json"),
        (b'{"Device": 1, "Tag": 1, "Value": 1}', "missing_field"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Tag": 1, "Value": 1}', "missing_field"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Value": 1}', "missing_field"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1}', "missing_field"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": "84"}', "bad_type"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": true, "Tag": 1, "Value": 1}', "bad_type"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1.5, "Tag": 1, "Value": 1}', "bad_type"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": "", "Tag": 1, "Value": 1}', "bad_id"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": "' + b"x" * 129 + b'", "Tag": 1, "Value": 1}', "bad_id"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": NaN}', "not_finite"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": Infinity}', "not_finite"),
        (b'{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1e999}', "not_finite"),
        (b'{"TS": "not a time", "Device": 1, "Tag": 1, "Value": 1}', "bad_timestamp"),
        (b'{"TS": true, "Device": 1, "Tag": 1, "Value": 1}', "bad_type"),
        (b'{"TS": "1970-01-01T00:00:01Z", "Device": 1, "Tag": 1, "Value": 1}', "out_of_range"),
        (b'{"TS": "2030-01-01T00:00:00Z", "Device": 1, "Tag": 1, "Value": 1}', "future"),
        (b'[{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1}, 7]', "not_an_object"),
    ],
)
def test_malformed_input_is_a_dead_letter_with_its_reason(body, reason):
    # Alone, and inside a batch of good messages (the fast path must agree with the slow one).
    assert reasons([body]) == [reason]
    assert reasons([GOOD] * 600 + [body] + [GOOD] * 10) == [reason]


def test_dead_letter_carries_payload_and_position():
    decoded = decode_batch(batch([GOOD, b"oops", GOOD]), DecodeConfig(), now_ns=NOW)
    (dead,) = decoded.dead_letters.table.to_pylist()
    assert (dead["partition"], dead["position"], dead["element"], dead["payload"]) == ("p0", 2, 0, b"oops")


def test_enqueued_time_source():
    enqueued = [1_600_000_000 * 10**9, MISSING]
    decoded = decode_batch(batch([GOOD, GOOD], enqueued), DecodeConfig(time_source="enqueued"), now_ns=NOW)
    assert decoded.readings.table["ts"].to_pylist() == [1_600_000_000 * 10**9]
    assert decoded.dead_letters.table["reason"].to_pylist() == ["no_enqueued_time"]


def test_epoch_number_timestamps():
    body = b'{"TS": 1523048395.5, "Device": 1, "Tag": 1, "Value": 1}'
    table = decode_batch(batch([body] * 3), DecodeConfig(), now_ns=NOW).readings.table
    assert table["ts"].to_pylist() == [1_523_048_395_500_000_000] * 3


def test_pretty_printed_bodies_are_fine():
    body = orjson.dumps(orjson.loads(GOOD), option=orjson.OPT_INDENT_2)
    assert len(decode_batch(batch([body, GOOD]), DecodeConfig(), now_ns=NOW).readings) == 2


_elements = st.one_of(
    st.just(orjson.loads(GOOD)),
    st.fixed_dictionaries(
        {
            "TS": st.one_of(st.just("2018-04-06T20:59:55Z"), st.text(max_size=5), st.integers(-(2**62), 2**62), st.none()),
            "Device": st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans(), st.none()),
            "Tag": st.one_of(st.integers(0, 3), st.text(max_size=2)),
            "Value": st.one_of(st.floats(allow_nan=True), st.integers(-(2**62), 2**62), st.text(max_size=2), st.none()),
        }
    ),
)
_bodies = st.one_of(
    st.just(GOOD),
    _elements.map(orjson.dumps),
    st.lists(_elements, max_size=3).map(orjson.dumps),
    st.binary(max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_bodies, max_size=40))
def test_counts_reconcile_and_nothing_raises(bodies):
    decoded = decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW)
    expected = 0
    for body in bodies:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            expected += 1
            continue
        expected += len(parsed) if isinstance(parsed, list) and parsed else 1
    assert decoded.elements == expected == len(decoded.readings) + len(decoded.dead_letters)
    # Decoding each message alone (slow path) gives the same readings as the batch.
    alone = [decode_batch(batch([b]), DecodeConfig(), now_ns=NOW) for b in bodies]
    assert sum(len(a.readings) for a in alone) == len(decoded.readings)


# -- messages carrying arrays of readings: one Arrow read, same answers as one by one ---------



def _decode_slowly(bodies: list[bytes]):
    with mock.patch.object(decode_module, "_parse_arrays", lambda bodies: None), \
            mock.patch.object(decode_module, "_parse_fast_list", lambda bodies: None):
        return decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW)


def test_array_messages_take_the_columnar_path():
    element = orjson.loads(GOOD)
    bodies = [orjson.dumps([{**element, "Tag": t, "Value": v} for t in range(50)]) for v in range(20)]
    with mock.patch.object(decode_module, "_parse_slow", side_effect=AssertionError("slow path used")):
        decoded = decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW)
        joined = decode_batch(joined_batch(bodies), DecodeConfig(), now_ns=NOW)
    assert joined.readings.table.equals(decoded.readings.table)
    table = decoded.readings.table
    assert len(table) == 1000 and decoded.elements == 1000
    assert table["element"].to_pylist()[:3] == [0, 1, 2] and table["element"].to_pylist()[-1] == 49
    assert table["position"].to_pylist()[49:51] == [1, 2]  # message positions, one per array
    assert table["tag"].to_pylist()[:2] == ["0", "1"]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'[{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1}, null]',
        b'[{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1}], "r": [7]',
        b'[{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1}], "x": 1',
        b'[[{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": 1}]]',
        b'[{"TS": "2018-04-06T20:59:55Z", "Device": 1, "Tag": 1, "Value": "7"}]',
        b'[{"TS": "2018-04-06T20:59:55Z",\n "Device": 1, "Tag": 1, "Value": 2}]',
    ],
)
def test_odd_arrays_give_the_answers_of_the_slow_path(body):
    good = orjson.dumps([orjson.loads(GOOD)] * 3)
    bodies = [good, body, good]
    fast, slow = decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW), _decode_slowly(bodies)
    assert fast.readings.table.equals(slow.readings.table)
    assert fast.dead_letters.table.equals(slow.dead_letters.table)
    if b"\n" not in body:
        joined = decode_batch(joined_batch(bodies), DecodeConfig(), now_ns=NOW)
        assert joined.readings.table.equals(slow.readings.table)
        assert joined.dead_letters.table.equals(slow.dead_letters.table)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_elements, min_size=1, max_size=5).map(orjson.dumps), min_size=1, max_size=20))
def test_array_batches_decode_as_the_slow_path_does(bodies):
    fast, slow = decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW), _decode_slowly(bodies)
    assert fast.readings.table.equals(slow.readings.table)
    assert fast.dead_letters.table.equals(slow.dead_letters.table)
    assert fast.elements == slow.elements
    joined = decode_batch(joined_batch(bodies), DecodeConfig(), now_ns=NOW)  # orjson writes no line breaks
    assert joined.readings.table.equals(slow.readings.table)
    assert joined.dead_letters.table.equals(slow.dead_letters.table)


def test_times_read_by_arrow_equal_times_read_as_text():
    """A block Arrow reads with TS as times, and the same block read with TS as text, agree."""
    texts = ["2018-04-06T20:59:55.7096564Z", "2018-04-06 20:59:56", "2018-04-06T22:59:57+02:00", "2018-04-06T21+01"]
    bodies = [orjson.dumps({"TS": t, "Device": 1, "Tag": k, "Value": 1.5}) for k, t in enumerate(texts)]
    reads = []

    def spy(block, lines, parse):
        table = real(block, lines, parse)
        reads.append((parse is decode_module._TIMED_PARSE, table is not None))
        return table

    real = decode_module.read_object_lines
    with mock.patch.object(decode_module, "read_object_lines", spy):
        timed = decode_batch(batch(bodies), DecodeConfig(), now_ns=NOW)
    assert reads == [(True, True)]  # Arrow read every TS as a time
    # A Capture-form time Arrow does not read as ISO-8601 sends the whole block the text way.
    capture = orjson.dumps({"TS": "4/6/2018 8:59:55 PM", "Device": 1, "Tag": 9, "Value": 1.5})
    as_text = decode_batch(batch([*bodies, capture]), DecodeConfig(), now_ns=NOW)
    assert timed.readings.table["ts"].to_pylist() == [parse_time(t) for t in texts]
    assert as_text.readings.table["ts"].to_pylist() == [*(parse_time(t) for t in texts), parse_time("2018-04-06T20:59:55Z")]

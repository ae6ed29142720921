"""Dead-letter reason codes: an enum whose values are the strings the store has always kept."""

import pyarrow as pa

from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch, ReasonCode
from sensorflow.records.readings import READING_SCHEMA


def test_codes_are_the_stored_strings():
    assert [code.value for code in ReasonCode] == [
        "bad_json", "bad_utf8", "empty_message", "empty_array", "not_an_object", "missing_field", "bad_type",
        "bad_id", "bad_timestamp", "not_finite", "out_of_range", "future", "no_enqueued_time", "bad_envelope",
        "missing_body", "too_large", "late",
    ]
    assert ReasonCode("late") is ReasonCode.LATE and ReasonCode.LATE == "late" and f"{ReasonCode.LATE}" == "late"
    assert ReasonCode.MISSING_FIELD.detail("TS") == "missing_field: TS"


def test_reasons_reach_arrow_as_plain_text():
    readings = pa.table({"position": [7], "element": [0], "ts": [1], "device": ["d"], "tag": ["t"], "value": [1.0]},
                        schema=READING_SCHEMA)
    late = DeadLetterBatch.late("0", readings)
    assert late.table["reason"].type == pa.string() and late.table["reason"].to_pylist() == ["late"]
    records = DeadLetterBatch.from_records(
        [DeadLetter("0", 1, 0, ReasonCode.BAD_TYPE.detail("Value")), DeadLetter("0", 2, 0, ReasonCode.BAD_JSON)]
    )
    assert records.table["reason"].to_pylist() == ["bad_type: Value", "bad_json"]

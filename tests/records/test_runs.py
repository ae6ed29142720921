"""Run kinds and states: enums whose values are the text the ``Runs`` table and task specs keep."""

import pytest

from sensorflow.records.runs import RunKind, RunRecord, RunStatus


def test_values_are_the_stored_text():
    assert [k.value for k in RunKind] == ["train", "score"]
    assert [s.value for s in RunStatus] == ["running", "succeeded", "partial", "failed", "interrupted"]


def test_a_record_read_as_text_holds_the_members():
    run = RunRecord("r", "score", "partial", 0)
    assert run.kind is RunKind.SCORE and run.status is RunStatus.PARTIAL
    assert run == RunRecord("r", RunKind.SCORE, RunStatus.PARTIAL, 0)
    with pytest.raises(ValueError):
        RunRecord("r", "predict", "running", 0)

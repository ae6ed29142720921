"""A received SDK batch: one message batch, and unchanged across the receiver process boundary."""

from __future__ import annotations

import pytest

from sensorflow.ingest.eventhubs.received import NOT_DATA, Received
from sensorflow.ingest.eventhubs.source import to_message_batch
from sensorflow.ingest.eventhubs.wire import decode_batch, encode_batch
from sensorflow.records.readings import Reject
from sensorflow.records.timeparse import MISSING

S = 1_000_000_000


def test_a_received_batch_is_one_message_batch_joined_unless_a_body_has_a_newline():
    received = Received.of([b'{"a":1}', b'{"b":2}'], [7, 8], [1 * S, 2 * S], [b"70", b"80"])
    batch = to_message_batch("3", received)
    assert (batch.partition, batch.positions.tolist(), batch.joined) == ("3", [7, 8], b'{"a":1}\n{"b":2}')
    split = to_message_batch("3", Received.of([b"x\ny", b"", b"z\n"], [1, 2, 3], [0, 0, 0], [b"1", b"2", b"3"]))
    assert split.joined is None and split.bodies == [b"x\ny", b"", b"z\n"]


@pytest.mark.parametrize(
    "received",
    [
        Received.of([b'{"a":1}', b"\xff\xfe not utf-8"], [7, 8], [S, MISSING], [b"70", b""]),
        Received.of([b"x\ny", b"", b"\n"], [1, 2, 5], [3, 4, 5], [b"1", b"2", b"5"], 7,
                    (Reject(3, NOT_DATA, b""), Reject(6, NOT_DATA, b"\x00\x01"))),
        Received.of([], [], [], [], 12, (Reject(11, NOT_DATA, b""),)),
    ],
    ids=["clean", "newlines-and-rejects", "rejects-only"],
)
def test_a_received_batch_crosses_the_process_boundary_unchanged(received):
    index, back = decode_batch(b"".join(bytes(part) for part in encode_batch(5, received)))
    assert index == 5
    assert (back.bodies, back.clean, back.next_sequence, back.rejects) == (received.bodies, received.clean, received.next_sequence, received.rejects)
    assert back.sequence_numbers.tolist() == received.sequence_numbers.tolist()
    assert back.enqueued_ns.tolist() == received.enqueued_ns.tolist()
    assert list(back.offsets) == list(received.offsets)
    batch = to_message_batch("0", back)
    assert (batch.bodies, batch.rejects, batch.messages) == (received.bodies, received.rejects, len(received) + len(received.rejects))


def test_the_receiver_process_imports_no_pyarrow():
    # Its start-up is on the way to the first reading (it lists the partitions); pyarrow and its
    # compute functions were ~0.1-0.15 s of it, for types it needs only on a rare event.
    import subprocess
    import sys

    probe = "import sys, sensorflow.ingest.eventhubs.child; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_events_without_data_or_enqueued_time_get_the_records_types():
    class Message:  # the pyamqp message's shape (see _event_fields)
        def __init__(self, seq, data, enqueued=None):
            self.data, self.message_annotations = data, {b"x-opt-sequence-number": seq, b"x-opt-offset": b"%d" % seq}
            if enqueued is not None:
                self.message_annotations[b"x-opt-enqueued-time"] = enqueued

    from sensorflow.ingest.eventhubs.received import received_from_events

    received = received_from_events([Message(4, [b"a"], 1_000), Message(5, None, 2_000), Message(6, [b"b", b"c"])])
    assert received.bodies == [b"a", b"bc"] and received.sequence_numbers.tolist() == [4, 6]
    assert received.enqueued_ns.tolist() == [1_000 * 1_000_000, MISSING]
    assert received.rejects == (Reject(5, NOT_DATA, b""),) and received.next_sequence == 7

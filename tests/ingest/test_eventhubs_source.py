"""The Event Hubs source and its parts: config, receivers on the real SDK against the test broker, Blob checkpoints on Azurite, the service endpoints."""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from pydantic import SecretStr

from sensorflow.ingest.eventhubs.config import (
    EventHubsConnection,
    ReceiveOptions,
    parse_starting_position,
)
from sensorflow.ingest.eventhubs.host import ReceiverError
from sensorflow.ingest.eventhubs.received import NOT_DATA, Received
from sensorflow.ingest.eventhubs.receiver import PartitionReceiver, PartitionStatus
from sensorflow.ingest.eventhubs.source import EventHubsSource, to_message_batch
from sensorflow.ingest.eventhubs.wire import decode_batch, encode_batch
from sensorflow.records.readings import Reject
from sensorflow.records.timeparse import MISSING
from sensorflow.windowing.resume.board import ResumePoint, ResumeStart
from sensorflow.windowing.resume.checkpoints import (
    BlobCheckpoints,
    CheckpointLocation,
    CheckpointMismatch,
    StreamIdentity,
    decode_resume,
)
from sensorflow.windowing.resume.offsets import OffsetBook
from sensorflow.windowing.service import JsonFormatter, MetricsServer, RunCollector
from sensorflow.windowing.stats import RunStats

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("earliest", "earliest"),
        ("LATEST", "latest"),
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T01:00:00+01:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01 00:00", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_starting_positions(text, expected):
    assert parse_starting_position(text) == expected


def test_bad_starting_position_is_one_line():
    with pytest.raises(ValueError, match="earliest, latest or an ISO time"):
        parse_starting_position("yesterday")


def test_connection_reads_namespace_and_hub_and_never_shows_the_secret():
    secret = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET;EntityPath=readings"
    connection = EventHubsConnection(connection_string=SecretStr(secret))
    assert (connection.namespace, connection.hub) == ("ns.servicebus.windows.net", "readings")
    assert "TOPSECRET" not in repr(connection)
    with pytest.raises(ValueError, match="no EntityPath"):
        EventHubsConnection(connection_string=SecretStr("Endpoint=sb://ns/;SharedAccessKey=x"))
    with pytest.raises(ValueError, match="exactly one"):
        EventHubsConnection(eventhub_name="h")
    with pytest.raises(ValueError, match="hub name"):
        EventHubsConnection(fully_qualified_namespace="ns.servicebus.windows.net")


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


def test_offset_book_finds_offsets_until_forgotten():
    book = OffsetBook()
    book.add(np.array([10, 11, 12]), [b"100", b"110", b"120"])
    book.add(np.array([13, 14]), [b"130", b""])
    assert [book.offset(s) for s in (9, 10, 12, 13, 14, 15)] == [None, "100", "120", "130", None, None]
    book.forget_before(13)
    assert (book.offset(12), book.offset(13)) == (None, "130")


def encode_resume(start: ResumeStart, identity: StreamIdentity) -> bytes:
    """The single resume blob earlier versions wrote (this one only reads it)."""
    return orjson.dumps({
        "format": 1, "window_ns": identity.window_ns, "lateness_ns": identity.lateness_ns,
        "closed_through": start.closed_through,
        "partitions": {
            p: {"position": pt.position, "watermark": pt.watermark, "drop_before": pt.drop_before}
            for p, pt in sorted(start.partitions.items())
        },
        "written_at": "2026-11-01T00:00:00+00:00",
    })


def test_resume_blob_round_trips_and_refuses_other_window_settings():
    identity = StreamIdentity("ns", "hub", "$Default", 5 * S, 5 * S)
    start = ResumeStart(60 * S, {"0": ResumePoint(10, 50 * S, 20), "1": ResumePoint(0, -(2**63), 0)})
    assert decode_resume(encode_resume(start, identity), identity) == start
    other = StreamIdentity("ns", "hub", "$Default", 10 * S, 5 * S)
    with pytest.raises(CheckpointMismatch, match="window 5 s"):
        decode_resume(encode_resume(start, identity), other)
    with pytest.raises(CheckpointMismatch, match="not readable"):
        decode_resume(b"{", identity)


def _options(**extra) -> ReceiveOptions:
    return ReceiveOptions(max_wait_seconds=0.05, retry_initial_seconds=0.2, retry_max_seconds=0.5, **extra)


def _drain(partition, want: int, timeout: float = 30) -> list:
    batches, deadline = [], time.monotonic() + timeout
    while sum(len(b) for b in batches) < want and time.monotonic() < deadline:
        batches.extend(partition.next_batch())
        time.sleep(0.01)
    return batches


@pytest.mark.parametrize("sdk_retries", [0, 3], ids=["our-reconnect", "sdk-retry"])
def test_source_reads_every_event_once_in_order_across_dropped_connections(eventhubs_broker, sdk_retries, caplog):
    caplog.set_level(logging.INFO)
    bodies = [f'{{"n": {i}}}'.encode() for i in range(3000)]
    eventhubs_broker.publish("1", bodies[:1000])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(batch_size=100, sdk_retries=sdk_retries), eventhubs_broker.partition_ids, progress=True)
    part = source.build_part("read", "1", None)
    try:
        got = _drain(part, 1000)
        eventhubs_broker.drop_connections()
        eventhubs_broker.publish("1", bodies[1000:])
        got += _drain(part, 2000)
        if sdk_retries == 0:  # the SDK gives up at once: our receiver reconnects after the last event
            assert source.status["1"].reconnects >= 1
            # logged in the receiver process, logged here with where it happened
            reconnect = next(r for r in caplog.records if "reconnecting" in r.getMessage())
            assert (reconnect.name, reconnect.partition, reconnect.position) == ("sensorflow.ingest.eventhubs.receiver", "1", 1000)
    finally:
        part.close()
    positions = np.concatenate([b.positions for b in got])
    assert positions.tolist() == list(range(3000))
    assert [body for b in got for body in b.bodies] == bodies
    assert all(len(b) <= 100 for b in got)
    assert source.final_positions["1"] == 3000 and part.snapshot() == 3000
    stored = eventhubs_broker.events("1")
    # Each batch carries its events' offsets, for the Event Hubs checkpoints of whoever keeps the partition's resume log.
    assert all(b.progress.sequence_numbers is b.positions for b in got)
    assert [o.decode() for b in got for o in b.progress.offsets] == [e.offset for e in stored]
    assert source.status["1"].hub_last_sequence >= 999  # polled from the hub for "events behind"


def test_a_resumed_partition_starts_at_its_sequence_number(eventhubs_broker):
    eventhubs_broker.publish("0", [b"%d" % i for i in range(50)])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    part = EventHubsSource(connection, _options(), ["0"]).build_part("read", "0", 42)
    try:
        got = _drain(part, 8)
    finally:
        part.close()
    assert np.concatenate([b.positions for b in got]).tolist() == list(range(42, 50))


@pytest.mark.parametrize("direct", [True, False], ids=["consumer", "receive_batch"])
def test_a_partition_taken_over_by_a_higher_owner_level_is_reported(eventhubs_broker, caplog, direct):
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    first = PartitionReceiver(connection, _options(owner_level=1), "2", None, PartitionStatus("2"), lambda r: None, direct=direct).start()
    second = PartitionReceiver(connection, _options(owner_level=2), "2", None, PartitionStatus("2"), lambda r: None)
    try:
        deadline = time.monotonic() + 20
        while not first.status.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        second.start()
        while not first.status.stolen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.stop()
        second.stop()
    assert first.status.stolen
    assert any("higher owner level" in r.getMessage() for r in caplog.records)


def test_bodies_of_several_data_sections_non_utf8_and_value_bodies_arrive_as_sent(eventhubs_broker):
    from azure.eventhub import EventData, EventHubProducerClient
    from azure.eventhub.amqp import AmqpAnnotatedMessage

    sent = [b'{"n": 0}', b"\xff\xfe\x00 not utf-8", b'{"a":\n 1}', b""]
    with EventHubProducerClient.from_connection_string(eventhubs_broker.connection_string) as producer:
        batch = producer.create_batch(partition_id="3")
        batch.add(EventData(sent[0]))
        batch.add(AmqpAnnotatedMessage(data_body=[b"\xff\xfe", b"\x00 not", b" utf-8"]))  # three data sections
        batch.add(AmqpAnnotatedMessage(value_body={"not": "data"}))
        batch.add(EventData(sent[2]))
        batch.add(EventData(sent[3]))
        producer.send_batch(batch)
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(), eventhubs_broker.partition_ids)
    part = source.build_part("read", "3", None)
    try:
        got = _drain(part, 4)
    finally:
        part.close()
    assert [body for b in got for body in b.bodies] == sent
    assert np.concatenate([b.positions for b in got]).tolist() == [0, 1, 3, 4]
    assert [r for b in got for r in b.rejects] == [Reject(2, NOT_DATA, b"")]
    assert source.final_positions["3"] == 5
    stored = eventhubs_broker.events("3")
    assert np.concatenate([b.enqueued_ns for b in got]).tolist() == [stored[i].enqueued_time_ms * 1_000_000 for i in (0, 1, 3, 4)]


def test_the_direct_consumer_and_the_public_receive_batch_deliver_the_same_batches(eventhubs_broker):
    eventhubs_broker.publish("2", [b'{"n": %d}' % i for i in range(700)] + [b"\xff", b"a\nb"])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    got = {}
    for direct in (True, False):
        batches: list[Received] = []
        receiver = PartitionReceiver(connection, _options(batch_size=300), "2", 1, PartitionStatus("2"), batches.append, direct=direct)
        receiver.start()
        deadline = time.monotonic() + 30
        while sum(len(b) for b in batches) < 701 and time.monotonic() < deadline:
            time.sleep(0.02)
        receiver.stop()
        got[receiver.path] = (
            [body for b in batches for body in b.bodies],
            np.concatenate([b.sequence_numbers for b in batches]).tolist(),
            np.concatenate([b.enqueued_ns for b in batches]).tolist(),
            [o for b in batches for o in b.offsets],
            all(len(b) <= 300 for b in batches),
        )
    assert set(got) == {"consumer", "receive_batch"}
    assert got["consumer"] == got["receive_batch"]
    stored = eventhubs_broker.events("2")[1:]
    assert got["consumer"][:4] == (
        [e.body for e in stored], list(range(1, 702)), [e.enqueued_time_ms * 1_000_000 for e in stored], [e.offset.encode() for e in stored]
    )


def test_a_partition_has_at_most_queue_batches_in_flight(eventhubs_broker):
    eventhubs_broker.publish("0", [b"%d" % i for i in range(2000)])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(batch_size=50, queue_batches=3), ["0"])
    part = source.build_part("read", "0", None)
    try:
        deadline = time.monotonic() + 30
        while source.status["0"].received_events < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the receiver would go on here if it were not held back
        assert source.status["0"].received_events == 150
        got = _drain(part, 2000)  # taking them lets it go on, to the end
    finally:
        part.close()
    assert np.concatenate([b.positions for b in got]).tolist() == list(range(2000))


def test_a_receiver_process_that_dies_stops_the_source_with_a_clear_error(eventhubs_broker):
    eventhubs_broker.publish("0", [b"1", b"2"])
    connection = EventHubsConnection(connection_string=SecretStr(eventhubs_broker.connection_string))
    source = EventHubsSource(connection, _options(), ["0"])
    part = source.build_part("read", "0", None)
    try:
        assert len(_drain(part, 2)) >= 1
        source._host._process.kill()
        with pytest.raises(ReceiverError, match="receiver process exited unexpectedly"):
            _drain(part, 1, timeout=10)
        assert not source.status["0"].connected
    finally:
        part.close()


def test_an_unreachable_hub_stops_the_service_with_one_line_naming_it(tmp_path):
    import socket

    from sensorflow.assembly import run_live
    from sensorflow.settings import RunSettings, load_settings
    from sensorflow.windowing.live import LiveSourceError

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=x;EntityPath=hub;UseDevelopmentEmulator=true"
    settings = load_settings(RunSettings, {
        "source": "eventhubs", "eventhub_connection_string": secret, "store": f"sqlite:///{tmp_path}/x.db", "progress_seconds": 0,
    })
    with pytest.raises(LiveSourceError, match=r"^cannot read the partitions of event hub 'hub' on 127\.0\.0\.1: ConnectError: ") as error:
        run_live(settings)
    assert "\n" not in str(error.value) and "SharedAccessKey" not in str(error.value)


def test_blob_checkpoints_are_what_event_hubs_tooling_reads(azurite):
    import asyncio

    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    identity = StreamIdentity("ns.example", "readings", "$Default", 5 * S, 5 * S)
    location = CheckpointLocation("checkpoints-test", SecretStr(azurite.connection_string))
    store = BlobCheckpoints(location, identity)
    try:
        assert store.load() is None
        start = ResumeStart(30 * S, {"0": ResumePoint(11, 20 * S, 15), "1": ResumePoint(4, 22 * S, 4)})
        store.save(start, {"0": (10, "1000"), "1": (3, "300")})
        assert store.load() == start
    finally:
        store.close()

    async def tooling_view():
        async with BlobCheckpointStore.from_connection_string(azurite.connection_string, "checkpoints-test") as cs:
            return await cs.list_checkpoints("ns.example", "readings", "$Default")

    seen = {c["partition_id"]: (c["sequence_number"], c["offset"]) for c in asyncio.run(tooling_view())}
    assert seen == {"0": (10, "1000"), "1": (3, "300")}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_health_and_readiness_endpoints():
    import pyarrow as pa

    stats = RunStats()
    stats.add_decoded(10, 12, 11)
    stats.add_dead_letters(2, pa.array(["late", "bad_json"]))
    stats.observe_write(0.02)
    status = {"0": PartitionStatus("0", last_sequence=41, last_enqueued_ns=time.time_ns() - 2 * S, hub_last_sequence=50)}
    readiness = {"ok": (False, "partitions not connected: 0")}
    with MetricsServer(RunCollector(stats, status), lambda: readiness["ok"], port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        code, text = _get(base + "/metrics")
        assert code == 200
        for line in ('sensorflow_readings_total 11.0', 'sensorflow_dead_letters_total{reason="late"} 1.0',
                     'sensorflow_partition_last_sequence_number{partition="0"} 41.0',
                     'sensorflow_partition_events_behind{partition="0"} 9.0', "sensorflow_store_write_seconds_count 1.0"):
            assert line in text
        lag = float(next(ln for ln in text.splitlines() if ln.startswith("sensorflow_partition_enqueued_lag_seconds")).split()[-1])
        assert 1.5 < lag < 60
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz") == (503, "partitions not connected: 0\n")
        readiness["ok"] = (True, "ready")
        assert _get(base + "/readyz")[0] == 200


def test_json_log_lines_name_partition_and_position():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    try:
        logger.warning("receiver failed", extra={"partition": "3", "position": 17})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert (line["level"], line["message"], line["partition"], line["position"]) == ("WARNING", "receiver failed", "3", 17)

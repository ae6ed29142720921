"""A local Azure Event Hubs broker for tests: an AMQP 1.0 server the real azure-eventhub SDK talks to.

Test fixture, not product code. It runs python-qpid-proton's protocol engine (``Connection``,
``Transport``, ``Collector``) from its own select loop in one background thread and speaks the
subset of Event Hubs the SDK uses over plain AMQP (the connection string says
``UseDevelopmentEmulator=true``):

* SASL ANONYMOUS, then a CBS ``put-token`` on ``$cbs`` that is always accepted;
* ``$management`` READ of ``com.microsoft:eventhub`` and ``com.microsoft:partition``;
* producers sending to ``<hub>`` (a whole message or batch goes to one partition: by a hash of
  ``x-opt-partition-key``, else round-robin) or to ``<hub>/Partitions/N``; batches (format
  0x80013700, one data section per encoded event) are split and every event is stored and
  stamped on its own. Proton does not show a delivery's message format, so a message whose data
  sections all parse as whole AMQP messages is taken for a batch;
* consumers on ``<hub>/ConsumerGroups/<cg>/Partitions/N`` with the selector filter on offset,
  sequence number or enqueued time (``>`` or ``>=``, and ``'@latest'``), pre-settled deliveries
  within the link credit, and owner levels (``com.microsoft:epoch``): a higher or equal one
  detaches the current owner with ``amqp:link:stolen``.

Offsets are byte positions (strings), sequence numbers start at 0 in every partition.

The SDK's pure-Python AMQP decoder reads performative fields by position, while proton leaves out
trailing null fields; so every outgoing frame is padded with nulls to the performative's full
arity (:func:`~tests.support.eventhubs_codec.pad_frame`) before it reaches the socket.

Use the ``eventhubs_broker`` fixture, or ``EventHubsBroker().start()`` ... ``stop()``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import select
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pytest
from cproton import pn_delivery, pn_delivery_settle, pn_link_advance, pn_link_send
from proton import (
    Collector,
    Condition,
    Connection,
    Delivery,
    Described,
    Endpoint,
    Event,
    Link,
    Message,
    Transport,
    symbol,
    timestamp,
)

from tests.support.eventhubs_codec import (
    FramePadder,
    data_message,
    partition_key_of,
    split_batch,
    stamp,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 1024 * 1024  # announced on producer links; the SDK sizes its batches from it
RECEIVE_CREDIT = 1000  # credit kept open on producer links
PUMP_BATCH = 500  # deliveries per consumer link per loop turn, so that one link cannot starve the rest


# --------------------------------------------------------------------------- store
@dataclass(frozen=True)
class StoredEvent:
    """One event as the broker stored it (what :meth:`EventHubsBroker.events` returns)."""

    sequence_number: int
    offset: str
    enqueued_time_ms: int
    body: bytes | None  # the data sections joined; None for an AMQP value/sequence body
    partition_key: str | None = None
    wire: bytes = field(default=b"", repr=False)  # the encoded message as delivered


class _Partition:
    def __init__(self, pid: str) -> None:
        self.pid = pid
        self.events: list[StoredEvent] = []
        self._offsets: list[int] = []
        self._next_offset = 0

    def append(self, raw: bytes, enqueued_ms: int | None, partition_key: str | None) -> StoredEvent:
        """Stamp and store one encoded message; the caller holds the broker's lock."""
        seq, offset = len(self.events), self._next_offset
        when = int(time.time() * 1000) if enqueued_ms is None else enqueued_ms
        wire, body = stamp(raw, seq, str(offset), when, partition_key)
        event = StoredEvent(seq, str(offset), when, body, partition_key, wire)
        self._next_offset += max(1, len(raw))
        self._offsets.append(offset)
        self.events.append(event)
        return event

    def start_index(self, selector: str | None) -> int:
        """Index of the first event a consumer with this selector filter receives."""
        if not selector:
            return 0
        m = _SELECTOR.search(selector)
        if m is None:
            raise ValueError(f"unsupported filter {selector!r}")
        name, op, value = m.groups()
        if value == "@latest":
            return len(self.events)
        v = int(value)
        if name == "x-opt-offset":
            return (bisect.bisect_right if op == ">" else bisect.bisect_left)(self._offsets, v)
        if name == "x-opt-sequence-number":
            return max(0, v + 1 if op == ">" else v)
        for i, event in enumerate(self.events):
            if event.enqueued_time_ms > v or (op == ">=" and event.enqueued_time_ms == v):
                return i
        return len(self.events)


_SELECTOR = re.compile(
    r"amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=|>)\s*'([^']*)'"
)


# --------------------------------------------------------------------------- connections
@dataclass(eq=False)
class _Consumer:
    client: _Client
    link: Link
    partition: _Partition
    group: str
    epoch: int | None
    index: int  # of the next event to deliver; doubles as the delivery tag


class _Client:
    """One accepted socket with its own proton engine."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.transport = Transport(Transport.SERVER)
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.padder = FramePadder()
        self.out = bytearray()
        self.links: dict[tuple[str, bool], object] = {}  # (name, is_sender) -> what the link is for
        self.consumers: list[_Consumer] = []
        self.nodes: dict[str, Link] = {}  # "$cbs"/"$management" -> the link replies go out on
        self.replies: dict[str, deque[bytes]] = {"$cbs": deque(), "$management": deque()}
        self.reply_tags = itertools.count()

    def push(self, data: bytes) -> None:
        """Feed received bytes to the engine, no more at a time than it can take."""
        view = memoryview(data)
        while view:
            room = self.transport.capacity()
            if room <= 0:
                return  # input side closed: the rest is dropped, as the peer is going away
            self.transport.push(bytes(view[:room]))
            view = view[room:]

    def pull(self) -> None:
        """Move the engine's output, padded frame by frame, to the socket buffer."""
        while True:
            pending = self.transport.pending()
            if pending <= 0:
                return
            data = self.transport.peek(pending)
            self.transport.pop(pending)
            self.out += self.padder.feed(data)

    @property
    def finished(self) -> bool:
        return self.transport.pending() < 0 and not self.out


def _node_name(address: str | None) -> str:
    """'$cbs', '$management', or the path of an entity address ('hub/Partitions/0')."""
    if not address:
        return ""
    path = urlparse(address).path if "://" in address else address
    return path.strip("/")


def _selector(link: Link) -> str | None:
    """The selector-filter expression the consumer attached with, if any."""
    data = link.remote_source.filter
    data.rewind()
    filters = data.get_object() if data.next() is not None else None
    for value in (filters or {}).values() if isinstance(filters, dict) else ():
        value = value.value if isinstance(value, Described) else value
        if isinstance(value, str) and "amqp.annotation." in value:
            return value
    return None


class EventHubsBroker:
    """In-process Event Hubs stand-in on 127.0.0.1 for the real SDK (see the module docstring)."""

    def __init__(self, hub: str = "hub", partitions: int = 4) -> None:
        self.hub = hub
        self.partition_ids = [str(i) for i in range(partitions)]
        self._partitions = {pid: _Partition(pid) for pid in self.partition_ids}
        self._created_ms = int(time.time() * 1000)
        self._lock = threading.Lock()  # appends to the partitions
        self._round_robin = itertools.cycle(self.partition_ids)
        self._clients: list[_Client] = []
        self._owners: dict[tuple[str, str], list[_Consumer]] = {}
        self._calls: deque[tuple[Callable[[], None], threading.Event]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.errors: list[BaseException] = []  # unexpected errors in the broker thread
        self.delivered = 0  # events sent to consumers so far, every partition and consumer (redeliveries too)
        self.port = 0

    # ------------------------------------------------------------------ public API
    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=k;SharedAccessKey=secret;"
            f"EntityPath={self.hub};UseDevelopmentEmulator=true"
        )

    def start(self) -> EventHubsBroker:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=f"eventhubs-broker-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(10)
        self._thread = None
        for client in self._clients:
            client.sock.close()
        self._clients.clear()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def publish(
        self,
        partition: str,
        bodies: list[bytes],
        enqueued_time_ms: int | None = None,
        partition_key: str | None = None,
    ) -> None:
        """Append events with these data bodies to a partition, as if a producer had sent them."""
        target = self._partitions[str(partition)]
        with self._lock:
            for body in bodies:
                target.append(data_message(body), enqueued_time_ms, partition_key)
        self._wake()

    def events(self, partition: str) -> list[StoredEvent]:
        with self._lock:
            return list(self._partitions[str(partition)].events)

    def drop_connections(self) -> None:
        """Abruptly close every client socket (RST, no AMQP close), to exercise reconnects."""

        def drop() -> None:
            for client in list(self._clients):
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._discard(client)

        self._call(drop)

    # ------------------------------------------------------------------ loop
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the broker thread and wait for it."""
        done = threading.Event()
        self._calls.append((fn, done))
        self._wake()
        if not done.wait(10):
            raise TimeoutError("the broker thread did not answer")

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._step()
            except Exception as exc:  # keep serving; the tests can look at .errors
                log.exception("event hubs broker loop")
                self.errors.append(exc)
                time.sleep(0.01)  # no hot loop if the error repeats

    def _step(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        for client in self._clients:
            deadline = client.transport.tick(now)
            if deadline:
                timeout = min(timeout, max(0.0, deadline - now))
        if any(self._can_send(c) for c in self._consumers()):
            timeout = 0.0
        readers = [self._listener, self._wake_r] + [c.sock for c in self._clients]
        writers = [c.sock for c in self._clients if c.out]
        readable, _writable, _ = select.select(readers, writers, [], timeout)
        for sock in readable:
            if sock is self._listener:
                self._accept()
            elif sock is self._wake_r:
                try:
                    self._wake_r.recv(4096)
                except BlockingIOError:
                    pass
        while self._calls:
            fn, done = self._calls.popleft()
            try:
                fn()
            finally:
                done.set()
        by_sock = {c.sock: c for c in self._clients}
        for sock in readable:
            client = by_sock.get(sock)
            if client is not None:
                self._guard(client, self._receive, client)
        for client in list(self._clients):
            self._guard(client, self._process, client)
        self._pump()
        for client in list(self._clients):
            self._guard(client, self._flush, client)

    def _guard(self, client: _Client, fn: Callable[[_Client], None], arg: _Client) -> None:
        """Run one step for one client; an error costs that client its connection, not the broker."""
        if client not in self._clients:
            return  # discarded earlier in this turn
        try:
            fn(arg)
        except Exception as exc:
            log.exception("event hubs broker: dropping a connection")
            self.errors.append(exc)
            self._discard(client)

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._clients.append(_Client(sock))

    def _receive(self, client: _Client) -> None:
        try:
            data = client.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            client.push(data)
        else:
            client.transport.close_tail()

    def _flush(self, client: _Client) -> None:
        client.pull()
        if client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._discard(client)
                return
            del client.out[:sent]
        if client.finished:
            self._discard(client)

    def _discard(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.remove(client)
        for consumer in list(client.consumers):
            self._disown(consumer)
        client.sock.close()

    # ------------------------------------------------------------------ AMQP events
    def _process(self, client: _Client) -> None:
        collector = client.collector
        while True:
            event = collector.peek()
            if event is None:
                return
            self._on_event(client, event)
            collector.pop()

    def _on_event(self, client: _Client, event: Event) -> None:
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN:
            event.connection.container = "sensorflow-eventhubs-test-broker"
            event.connection.open()
        elif kind == Event.SESSION_REMOTE_OPEN:
            event.session.open()
        elif kind == Event.LINK_REMOTE_OPEN:
            self._attach(client, event.link)
        elif kind in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH):
            self._detached(client, event.link)
        elif kind == Event.SESSION_REMOTE_CLOSE:
            if event.session.state & Endpoint.LOCAL_ACTIVE:
                event.session.close()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            if event.connection.state & Endpoint.LOCAL_ACTIVE:
                event.connection.close()
        elif kind == Event.DELIVERY and event.link.is_receiver:
            self._on_message(client, event.link, event.delivery)

    def _attach(self, client: _Client, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        if link.is_sender:  # the client receives
            link.snd_settle_mode = Link.SND_SETTLED
            address = link.source.address or ""
            if not link.target.address:
                link.target.address = "client"
        else:
            link.max_message_size = MAX_MESSAGE_SIZE
            address = link.target.address or ""
            if not link.source.address:
                link.source.address = "client"
        name = _node_name(address)
        key = (link.name, link.is_sender)
        link.open()
        try:
            if name in ("$cbs", "$management"):
                client.links[key] = name
                if link.is_sender:
                    client.nodes[name] = link
            else:
                self._attach_entity(client, link, name.split("/"))
        except LookupError as exc:
            self._reject(link, "amqp:not-found", str(exc))
        except ValueError as exc:
            self._reject(link, "amqp:invalid-field", str(exc))
        if link.is_receiver and link.state & Endpoint.LOCAL_ACTIVE:
            link.flow(RECEIVE_CREDIT)

    def _attach_entity(self, client: _Client, link: Link, parts: list[str]) -> None:
        if not parts or parts[0] != self.hub:
            raise LookupError(f"no event hub at {'/'.join(parts)!r}")
        rest = parts[1:]
        if link.is_receiver:  # a producer
            if not rest:
                client.links[(link.name, False)] = None  # route each message
                return
            if len(rest) == 2 and rest[0].lower() == "partitions":
                client.links[(link.name, False)] = self._partition(rest[1])
                return
            raise LookupError(f"cannot send to {'/'.join(parts)!r}")
        if len(rest) != 4 or rest[0].lower() != "consumergroups" or rest[2].lower() != "partitions":
            raise LookupError(f"cannot receive from {'/'.join(parts)!r}")
        partition = self._partition(rest[3])
        epoch = (link.remote_properties or {}).get(symbol("com.microsoft:epoch"))
        consumer = _Consumer(client, link, partition, rest[1], epoch, partition.start_index(_selector(link)))
        owners = self._owners.setdefault((partition.pid, consumer.group), [])
        # Owner levels: the highest wins and a newcomer with an equal one takes over; a receiver
        # without one cannot join while an owner holds the partition.
        if any(o.epoch is not None and (epoch is None or o.epoch > epoch) for o in owners):
            held = max(o.epoch for o in owners if o.epoch is not None)
            self._reject(link, "amqp:link:stolen", f"partition {partition.pid} is held at owner level {held}")
            return
        if epoch is not None:
            for other in list(owners):
                self._reject(other.link, "amqp:link:stolen", f"owner level {epoch} took partition {partition.pid}")
                self._disown(other)
        owners.append(consumer)
        client.consumers.append(consumer)
        client.links[(link.name, True)] = consumer

    def _partition(self, pid: str) -> _Partition:
        try:
            return self._partitions[pid]
        except KeyError:
            raise LookupError(f"no partition {pid!r} in {self.hub!r}") from None

    @staticmethod
    def _reject(link: Link, condition: str, description: str) -> None:
        link.condition = Condition(condition, description)
        link.close()

    def _disown(self, consumer: _Consumer) -> None:
        owners = self._owners.get((consumer.partition.pid, consumer.group), [])
        if consumer in owners:
            owners.remove(consumer)
        if consumer in consumer.client.consumers:
            consumer.client.consumers.remove(consumer)

    def _detached(self, client: _Client, link: Link) -> None:
        what = client.links.pop((link.name, link.is_sender), None)
        if isinstance(what, _Consumer):
            self._disown(what)
        if isinstance(what, str) and client.nodes.get(what) is link:
            del client.nodes[what]
        if link.state & Endpoint.LOCAL_ACTIVE:
            link.close()

    # ------------------------------------------------------------------ messages in
    def _on_message(self, client: _Client, link: Link, delivery: Delivery) -> None:
        if not delivery.readable or delivery.partial:
            return
        data = link.recv(delivery.pending)
        link.advance()
        what = client.links.get((link.name, False), "unknown")
        try:
            if what == "$cbs":  # put-token: any token will do
                request = Message()
                request.decode(data)
                self._reply(client, "$cbs", request, None)
            elif what == "$management":
                self._manage(client, data)
            elif what is None or isinstance(what, _Partition):
                self._produce(what, data)
            else:
                raise ValueError("message on an unknown link")
            delivery.update(Delivery.ACCEPTED)
        except Exception as exc:  # noqa: BLE001 - the client sees it as a rejected delivery
            log.warning("event hubs broker rejected a message: %s", exc)
            delivery.local.condition = Condition("amqp:internal-error", str(exc))
            delivery.update(Delivery.REJECTED)
        delivery.settle()
        if link.credit < RECEIVE_CREDIT // 2:
            link.flow(RECEIVE_CREDIT - link.credit)

    def _produce(self, partition: _Partition | None, data: bytes) -> None:
        if len(data) > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {len(data)} bytes is over {MAX_MESSAGE_SIZE}")
        events = split_batch(data) or [data]
        outer_key = partition_key_of(data)
        if partition is None:
            if outer_key is not None:
                pid = self.partition_ids[zlib.crc32(outer_key.encode()) % len(self.partition_ids)]
            else:
                pid = next(self._round_robin)
            partition = self._partitions[pid]
        with self._lock:
            for raw in events:
                partition.append(raw, None, partition_key_of(raw) or outer_key)

    def _manage(self, client: _Client, data: bytes) -> None:
        request = Message()
        request.decode(data)
        props = {str(k): v for k, v in (request.properties or {}).items()}
        kind, name = props.get("type"), props.get("name")
        status, body = 200, None
        if props.get("operation") != "READ" or name != self.hub:
            status = 404
        elif kind == "com.microsoft:eventhub":
            body = {"name": self.hub, "created_at": timestamp(self._created_ms), "partition_ids": self.partition_ids}
        elif kind == "com.microsoft:partition" and str(props.get("partition")) in self._partitions:
            pid = str(props.get("partition"))
            events = self._partitions[pid].events
            last = events[-1] if events else None
            body = {
                "name": self.hub,
                "partition": pid,
                "begin_sequence_number": 0,
                "last_enqueued_sequence_number": last.sequence_number if last else -1,
                "last_enqueued_offset": last.offset if last else "-1",
                "last_enqueued_time_utc": timestamp(last.enqueued_time_ms if last else 0),
                "is_partition_empty": not events,
            }
        else:
            status = 404
        self._reply(client, "$management", request, body, status)

    def _reply(self, client: _Client, node: str, request: Message, body: object, status: int = 200) -> None:
        reply = Message(
            body=body,
            correlation_id=request.id,
            properties={"status-code": status, "status-description": "OK" if status < 300 else "Not Found"},
        )
        client.replies[node].append(reply.encode())

    # ------------------------------------------------------------------ messages out
    def _consumers(self) -> Iterator[_Consumer]:
        for client in self._clients:
            yield from client.consumers

    @staticmethod
    def _can_send(consumer: _Consumer) -> bool:
        return (
            consumer.index < len(consumer.partition.events)
            and len(consumer.client.out) < 4 * MAX_MESSAGE_SIZE
            and consumer.link.credit > 0
        )

    def _pump(self) -> None:
        for client in self._clients:
            for node, queue in client.replies.items():
                link = client.nodes.get(node)
                while queue and link is not None and link.credit > 0:
                    self._send(link, b"r%d" % next(client.reply_tags), queue.popleft())
            for consumer in list(client.consumers):
                if not self._can_send(consumer):
                    continue
                events = consumer.partition.events
                start = consumer.index
                stop = min(len(events), start + consumer.link.credit, start + PUMP_BATCH)
                impl = consumer.link._impl
                for seq in range(start, stop):
                    delivery = pn_delivery(impl, b"%d" % seq)
                    pn_link_send(impl, events[seq].wire)
                    pn_link_advance(impl)
                    pn_delivery_settle(delivery)
                consumer.index = stop
                self.delivered += stop - start

    @staticmethod
    def _send(link: Link, tag: bytes, payload: bytes) -> None:
        delivery = link.delivery(tag)
        link.stream(payload)
        link.advance()
        delivery.settle()


@pytest.fixture
def eventhubs_broker() -> Iterator[EventHubsBroker]:
    """A started :class:`EventHubsBroker` (hub 'hub', 4 partitions), stopped afterwards."""
    broker = EventHubsBroker().start()
    try:
        yield broker
    finally:
        broker.stop()

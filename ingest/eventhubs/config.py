"""Typed, checked configuration of the Event Hubs source: where to connect, how to receive.

Built at the edge (the CLI's settings) and handed down; nothing here reads the environment.
azure-eventhub (and azure-identity for Entra ID sign-in) are imported only when a client is
opened; without them the error names the extra to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr

from sensorflow.backoff import Backoff

__all__ = [
    "EventHubsConnection",
    "MissingDependency",
    "ReceiveOptions",
    "StartingPosition",
    "parse_starting_position",
]

_AZURE_HINT = "pip install 'sensorflow[azure]'"

StartingPosition = Literal["earliest", "latest"] | datetime
"""Where a partition with no checkpoint starts: its oldest retained event, new events only, or an enqueued time."""


class MissingDependency(RuntimeError):
    """An optional dependency is not installed; the message says what to install."""


def parse_starting_position(text: str) -> StartingPosition:
    """``earliest``, ``latest`` or an ISO-8601 enqueued time (no zone means UTC); ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in ("earliest", "latest"):
        return lowered  # type: ignore[return-value]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"starting position must be earliest, latest or an ISO time, not {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _connection_fields(connection_string: str) -> dict[str, str]:
    fields = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


@dataclass(frozen=True)
class EventHubsConnection:
    """A connection string, or a fully qualified namespace + hub signed in with DefaultAzureCredential."""

    eventhub_name: str | None = None
    connection_string: SecretStr | None = None
    fully_qualified_namespace: str | None = None

    def __post_init__(self) -> None:
        if self.connection_string is not None and not isinstance(self.connection_string, SecretStr):
            raise TypeError("connection_string must be a pydantic SecretStr")
        if (self.connection_string is None) == (self.fully_qualified_namespace is None):
            raise ValueError("give exactly one of an Event Hubs connection string or a fully qualified namespace")
        if self.connection_string is not None:
            fields = _connection_fields(self.connection_string.get_secret_value())
            if "endpoint" not in fields:
                raise ValueError("the Event Hubs connection string has no Endpoint=sb://...")
            if not (self.eventhub_name or fields.get("entitypath")):
                raise ValueError("the Event Hubs connection string has no EntityPath: give the event hub name too")
        elif not self.eventhub_name:
            raise ValueError("an event hub name is needed with a namespace")

    def __repr__(self) -> str:  # never show the secret, even by accident
        return f"EventHubsConnection(namespace={self.namespace!r}, eventhub={self.hub!r})"

    @property
    def namespace(self) -> str:
        """The namespace host (what checkpoint blob names use)."""
        if self.fully_qualified_namespace is not None:
            return self.fully_qualified_namespace
        endpoint = _connection_fields(self.connection_string.get_secret_value())["endpoint"]
        return endpoint.split("://", 1)[-1].strip("/").split(":", 1)[0]

    @property
    def hub(self) -> str:
        if self.eventhub_name:
            return self.eventhub_name
        return _connection_fields(self.connection_string.get_secret_value())["entitypath"]

    def consumer(self, consumer_group: str, **options: Any) -> Any:
        """A new ``EventHubConsumerClient`` (imports azure lazily)."""
        return self._client("EventHubConsumerClient", "the Event Hubs source", consumer_group=consumer_group, **options)

    def producer(self, **options: Any) -> Any:
        """A new ``EventHubProducerClient`` (imports azure lazily)."""
        return self._client("EventHubProducerClient", "the Event Hubs output", **options)

    def _client(self, kind: str, needed_by: str, **options: Any) -> Any:
        """An SDK client class ``kind`` by connection string, or by namespace + hub with DefaultAzureCredential."""
        try:
            import azure.eventhub as sdk
        except ImportError as error:
            raise MissingDependency(f"{needed_by} needs azure-eventhub: {_AZURE_HINT}") from error
        client = getattr(sdk, kind)
        if self.connection_string is not None:
            return client.from_connection_string(
                self.connection_string.get_secret_value(), eventhub_name=self.eventhub_name, **options
            )
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as error:
            raise MissingDependency(f"signing in with a namespace needs azure-identity: {_AZURE_HINT}") from error
        return client(
            fully_qualified_namespace=self.fully_qualified_namespace, eventhub_name=self.hub,
            credential=DefaultAzureCredential(), **options,
        )


@dataclass(frozen=True)
class ReceiveOptions:
    """How partitions are received.

    ``batch_size`` events at most per received batch (one dataflow item each), delivered after
    ``max_wait_seconds`` even when smaller; ``queue_batches`` received batches may wait per
    partition before the receiver pauses (back-pressure). A receiver that fails after the SDK's
    own ``sdk_retries``, or cannot connect at all, reconnects from the next event after a wait
    of ~``retry_initial_seconds``, doubling up to ``retry_max_seconds``, jittered
    (:meth:`backoff`); the waits start over once a connection stayed up ``healthy_seconds``. ``owner_level`` makes receivers exclusive (a higher level steals
    the partition).
    """

    consumer_group: str = "$default"
    starting_position: StartingPosition = "earliest"
    batch_size: int = 500
    max_wait_seconds: float = 0.2
    prefetch: int = 1000
    queue_batches: int = 32
    owner_level: int | None = None
    sdk_retries: int = 3
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 30.0
    healthy_seconds: float = 30.0
    lag_poll_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.consumer_group:
            raise ValueError("consumer_group must not be empty")
        if not isinstance(self.starting_position, datetime) and self.starting_position not in ("earliest", "latest"):
            raise ValueError("starting_position must be 'earliest', 'latest' or a datetime")
        if self.batch_size < 1 or self.prefetch < 1 or self.queue_batches < 1:
            raise ValueError("batch_size, prefetch and queue_batches must be >= 1")
        if self.max_wait_seconds <= 0 or self.retry_initial_seconds <= 0 or self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("max_wait_seconds and retry_initial_seconds must be > 0, retry_max_seconds >= retry_initial_seconds")
        if self.owner_level is not None and self.owner_level < 0:
            raise ValueError("owner_level must be >= 0")
        if self.sdk_retries < 0 or self.lag_poll_seconds < 0 or self.healthy_seconds < 0:
            raise ValueError("sdk_retries, lag_poll_seconds and healthy_seconds must be >= 0")

    def backoff(self) -> Backoff:
        """How long a receiver waits between connection attempts (capped exponential, jittered)."""
        return Backoff(first=self.retry_initial_seconds, cap=self.retry_max_seconds)

    def sdk_position(self) -> tuple[str | datetime, bool]:
        """The cold-start position as the SDK takes it: (position, inclusive)."""
        if self.starting_position == "earliest":
            return "-1", False
        if self.starting_position == "latest":
            return "@latest", False
        return self.starting_position, True

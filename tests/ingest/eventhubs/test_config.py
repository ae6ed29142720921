"""Event Hubs connection and receive settings: starting positions, connection strings that never show their secret."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from sensorflow.ingest.eventhubs.config import (
    EventHubsConnection,
    parse_starting_position,
)


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

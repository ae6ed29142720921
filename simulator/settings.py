"""Event Hubs settings read at the edge (the CLI): flags first, then the environment."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sensorflow.simulator.eventhubs import EventHubTarget

__all__ = ["EventHubSettings"]


class EventHubSettings(BaseSettings):
    """`SENSORFLOW_EVENTHUB_CONNECTION_STRING`, `..._NAMESPACE`, `..._NAME`; the secret stays a SecretStr."""

    model_config = SettingsConfigDict(env_prefix="SENSORFLOW_EVENTHUB_", frozen=True, extra="ignore")

    connection_string: SecretStr | None = None
    namespace: str | None = None
    name: str | None = None

    def target(self) -> EventHubTarget:
        """The target these settings describe; ValueError says what is missing."""
        if self.connection_string is None and self.namespace is None:
            raise ValueError(
                "no Event Hubs connection: set SENSORFLOW_EVENTHUB_CONNECTION_STRING (or --connection-string), "
                "or --namespace with --eventhub"
            )
        if self.connection_string is not None:
            return EventHubTarget(eventhub_name=self.name, connection_string=self.connection_string)
        return EventHubTarget(eventhub_name=self.name, fully_qualified_namespace=self.namespace)

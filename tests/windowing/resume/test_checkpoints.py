"""Blob checkpoints on Azurite: what Event Hubs tooling reads."""

from __future__ import annotations

from pydantic import SecretStr

from sensorflow.windowing.resume.board import ResumePoint, ResumeStart
from sensorflow.windowing.resume.checkpoints import (
    BlobCheckpoints,
    CheckpointLocation,
    StreamIdentity,
)

S = 1_000_000_000


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

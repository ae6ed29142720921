"""Live runs: what the service does before and around the flow."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


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


def test_bytewax_state_is_found_only_where_an_epoch_was_committed(tmp_path):
    from sensorflow.windowing.live import has_bytewax_state
    from tests.conftest import run_flow

    assert not has_bytewax_state(None, 1)
    fresh = tmp_path / "fresh"
    assert not has_bytewax_state(fresh, 2)
    assert sorted(p.name for p in fresh.glob("*.sqlite3")) == ["part-0.sqlite3", "part-1.sqlite3"]  # initialised
    assert not has_bytewax_state(fresh, 2)  # initialised, but nothing committed yet

    resumed = tmp_path / "resumed"
    run_flow(REPO / "samples" / "seed", tmp_path / "x.db", recovery_dir=str(resumed))  # a replay commits its epochs
    assert has_bytewax_state(resumed, 1)

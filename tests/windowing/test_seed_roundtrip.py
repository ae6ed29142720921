"""The original's own windows table, replayed as readings, comes back unchanged."""

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.conftest import run_flow, seed_message, windows_frame, write_recording


def test_seed_sample_round_trips(seed_csv: Path, tmp_path: Path):
    seed = pd.read_csv(seed_csv, dtype={"Device": str, "Tag": str})
    bodies = []
    for ts, device, tag, value in zip(seed["TS"], seed["Device"], seed["Tag"], seed["Value"]):
        start = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f") - timedelta(seconds=5)
        # One reading at each window's start, in the seed's event format (int ids, .NET TS).
        bodies.append(seed_message(start.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"), int(device), int(tag), value))
    run_flow(write_recording(tmp_path / "rec", {"0": bodies}), tmp_path / "out.db")

    got = windows_frame(tmp_path / "out.db")
    want = seed.sort_values(["Device", "Tag", "TS"]).reset_index(drop=True)
    assert len(got) == len(want) == 17_768
    pd.testing.assert_frame_equal(got[["TS", "Device", "Tag", "Value"]], want, check_dtype=False)
    assert (got["Count"] == 1).all()

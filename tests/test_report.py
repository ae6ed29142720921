"""Looking at results: ``sensorflow incidents`` and ``sensorflow report``, the page rendered in headless Chromium.

Chromium is Debian's package (``apt-get install chromium``, installed by .ci/test-deps.sh as the
other servers are). Without it these tests FAIL, saying so: the report is only checked in a real
browser.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sensorflow.batch_jobs.tasks import TaskSpec, run_task
from sensorflow.cli import main
from sensorflow.records.predictions import INCIDENT_SCHEMA
from sensorflow.store import open_store
from tests.support.builders import T0, W, window_table

CHROMIUM = "/usr/bin/chromium"
DETECTOR = "mad-z"  # a window's score is its own: the incidents below follow from the spikes alone
SENSORS = [("pump-1", "pressure"), ("pump-1", "flow"), ("pump-2", "pressure")]
N = 240
TRAIN_TO = T0 + 60 * W
SPIKES = {("pump-1", "pressure"): [100, 101, 102, 180], ("pump-1", "flow"): [238, 239], ("pump-2", "pressure"): []}
MISSING = [150, 151, 152]  # slots without readings


def end(i: int) -> int:
    return T0 + (i + 1) * W


def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: the report is checked in headless Chromium; install Debian's package "
                    "(apt-get install chromium, as .ci/test-deps.sh does)")
    return CHROMIUM


def render(page: Path, shot: Path | None = None, size: str = "1280,2000") -> str:
    """The DOM Chromium builds from ``page`` (a file:// URL, no network); with ``shot``, a screenshot too."""
    browser = chromium()
    base = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
            "--disable-extensions", f"--user-data-dir={page.parent / 'chromium-profile'}", f"--window-size={size}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    if shot is not None:
        subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
        assert shot.is_file(), "chromium wrote no screenshot"
    return dom.stdout


class _Page(HTMLParser):
    """What the assertions look at in a rendered DOM: incident rows, images, every URL-valued attribute."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self._in_incidents = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "action", "data", "poster"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if tag == "table" and attrs.get("id") == "incidents":
            self._in_incidents = True
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if self._in_incidents and tag == "tr" and attrs.get("class") in ("open", "closed"):
            self.rows.append([])
        if self._in_incidents and tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_incidents = False
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(dom: str) -> _Page:
    page = _Page()
    page.feed(dom)
    return page


def not_blank(shot: Path) -> float:
    """The share of the screenshot's pixels that are not (near) white."""
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    return float(np.mean(pixels.min(axis=2) < 0.9))


@pytest.fixture
def scored_store(tmp_path) -> str:
    """A SQLite store with three sensors' windows (spikes, missing slots), trained and scored: incidents written."""
    url = f"sqlite:///{tmp_path / 'sf.db'}"
    rng = np.random.default_rng(5)
    ends, devices, tags, values = [], [], [], []
    for device, tag in SENSORS:
        value = rng.normal(20.0, 0.5, N)
        value[SPIKES[(device, tag)]] += 30.0
        keep = np.ones(N, bool)
        keep[MISSING] = False
        ends.append(end(0) + np.arange(N, dtype=np.int64)[keep] * W)
        values.append(value[keep])
        devices += [device] * int(keep.sum())
        tags += [tag] * int(keep.sum())
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(window_table(np.concatenate(ends), devices, tags, np.concatenate(values), 5,
                                          np.concatenate(values) - 1, np.concatenate(values) + 1))
    models = str(tmp_path / "models")
    for kind, ts_from, ts_to in (("train", T0, TRAIN_TO), ("score", TRAIN_TO, end(N - 1))):
        result = run_task(TaskSpec(f"{kind}-0", "run", kind, tuple(SENSORS), ts_from, ts_to, DETECTOR, url, models))
        assert result.error == "" and all(o.status == "ok" for o in result.outcomes), result
    (tmp_path / "labels.json").write_text(json.dumps([
        {"device": "pump-1", "tag": "pressure", "kind": "spike", "start": "2026-01-01T00:08:25Z", "end": "2026-01-01T00:08:40Z"},
        {"device": "pump-2", "tag": "pressure", "kind": "drift", "start": "2026-01-01T00:10:00Z", "end": "2026-01-01T00:12:00Z"},
    ]))
    return url


EXPECTED = [  # newest Start first: (device, tag, start, end, windows, open)
    ["pump-1", "flow", "2026-01-01 00:19:55.000", "2026-01-01 00:20:00.000", "2", "open"],
    ["pump-1", "pressure", "2026-01-01 00:15:05.000", "2026-01-01 00:15:05.000", "1", ""],
    ["pump-1", "pressure", "2026-01-01 00:08:25.000", "2026-01-01 00:08:35.000", "3", ""],
]


def test_incidents_lists_newest_first_as_a_table_or_json_lines(scored_store, capsys):
    assert main(["incidents", "--store", scored_store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["device", "tag", "detector"]
    assert [line.split()[:2] for line in lines[1:4]] == [["pump-1", "flow"], ["pump-1", "pressure"], ["pump-1", "pressure"]]
    assert lines[-1].startswith("3 incident(s), 1 open")

    assert main(["incidents", "--store", scored_store, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["device"], r["tag"], r["start"], r["end"], r["flagged_windows"], r["open"]) for r in rows] == [
        ("pump-1", "flow", "2026-01-01T00:19:55.000Z", "2026-01-01T00:20:00.000Z", 2, True),
        ("pump-1", "pressure", "2026-01-01T00:15:05.000Z", "2026-01-01T00:15:05.000Z", 1, False),
        ("pump-1", "pressure", "2026-01-01T00:08:25.000Z", "2026-01-01T00:08:35.000Z", 3, False),
    ]
    assert all(r["detector"] == DETECTOR and r["peak_score"] >= 1.0 for r in rows)

    assert main(["incidents", "--store", scored_store, "--json", "--open"]) == 0
    assert [json.loads(x)["tag"] for x in capsys.readouterr().out.splitlines()] == ["flow"]
    assert main(["incidents", "--store", scored_store, "--json", "--since", "10m"]) == 0  # ending in the newest 10 min
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["incidents", "--store", scored_store, "--json", "--since", "2026-01-01T00:19:00Z"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["incidents", "--store", scored_store, "--detector", "calibrated"]) == 0
    assert capsys.readouterr().out.startswith("no incidents")
    assert main(["incidents", "--store", scored_store, "--since", "yesterday"]) == 2
    assert "bad --since 'yesterday'" in capsys.readouterr().err


def test_the_report_renders_in_chromium_with_incidents_plots_and_nothing_fetched(scored_store, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", "--store", scored_store, "--labels", str(tmp_path / "labels.json"), "--out", str(page)]) == 0
    assert "wrote" in capsys.readouterr().out
    dom = render(page, tmp_path / "report.png")
    found = parse(dom)
    assert [[r[0], r[1], r[3], r[4], r[5], r[7]] for r in found.rows] == EXPECTED
    assert [r[2] for r in found.rows] == [DETECTOR] * 3
    assert len(found.images) == 2  # the two sensors with incidents, nothing for the quiet one
    assert all(src.startswith("data:image/png;base64,") for src in found.images)
    assert all(url.startswith("data:") for url in found.urls), found.urls  # nothing from a network or a file
    assert not re.search(r"https?://|url\(|@import|<script|<link", dom, re.I)  # no fetch from CSS, no script either
    assert "labelled anomalies with an incident" in dom and "1 of 2" in dom
    assert "window rows" in dom and f"{3 * (N - len(MISSING)):,}" in dom
    assert not_blank(tmp_path / "report.png") > 0.02  # text, tables and plots drawn, not an empty page


def test_a_report_of_an_empty_store_says_so_with_the_stores_window_length(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with open_store(url) as store:
        store.create_schema()
        store.record_settings({"window_seconds": "10"})  # what a run with --window-seconds 10 records
    page = tmp_path / "empty.html"
    assert main(["report", "--store", url, "--out", str(page)]) == 0
    dom = render(page)
    assert "No incidents in this range." in dom and "<img" not in dom
    assert "<td>window length</td><td>10 s</td>" in dom  # the store's own, not the 5 s default
    assert main(["report", "--store", url, "--out", str(tmp_path / "missing-dir" / "r.html")]) == 2
    assert "directory does not exist" in capsys.readouterr().err


def test_from_make_run_to_a_report_as_the_readme_says(tmp_path):
    """README "Looking at results": the demo's store (what `make run` leaves) -> incidents -> report -> browser."""
    demo = tmp_path / "demo"
    command = [sys.executable, "-m", "sensorflow"]
    ran = subprocess.run([*command, "demo", "--out", str(demo), "--devices", "6", "--tags", "2", "--minutes", "12",
                          "--anomaly-rate", "20", "--task-processes", "1"], check=True, capture_output=True, text=True,
                         timeout=600)
    store = f"sqlite:///{demo / 'sensorflow.db'}"
    assert f"sensorflow report --store {store} --labels {demo / 'recording-2' / 'labels.json'}" in ran.stdout  # says how
    listed = subprocess.run([*command, "incidents", "--store", store, "--json"], check=True, capture_output=True,
                            text=True, timeout=120)
    incidents = [json.loads(line) for line in listed.stdout.splitlines()]
    assert incidents and all(i["detector"] == "calibrated" for i in incidents)
    page = tmp_path / "report.html"
    wrote = subprocess.run([*command, "report", "--store", store, "--labels", str(demo / "recording-2" / "labels.json"),
                            "--out", str(page)], check=True, capture_output=True, text=True, timeout=300)
    assert f"({len(incidents):,} incident(s)" in wrote.stdout
    found = parse(render(page, tmp_path / "demo.png"))
    assert len(found.rows) == min(len(incidents), 50) and 1 <= len(found.images) <= 6
    assert not_blank(tmp_path / "demo.png") > 0.02


def test_a_missing_store_is_refused_and_not_created_and_an_older_store_gets_its_incidents_table(tmp_path, capsys):
    """Reading must not leave an empty database behind; a store made before the Incidents table lists none."""
    missing = tmp_path / "typo.db"
    for command in (["incidents"], ["report", "--out", str(tmp_path / "r.html")]):
        assert main([*command, "--store", f"sqlite:///{missing}"]) == 2
        assert f"no store at {missing}" in capsys.readouterr().err
        assert not missing.exists()
    older = tmp_path / "older.db"
    with open_store(f"sqlite:///{older}") as store:
        store.create_schema()
    with sqlite3.connect(older) as db:
        db.execute('DROP TABLE "Incidents"')  # as the code before incidents made it
    assert main(["incidents", "--store", f"sqlite:///{older}"]) == 0
    assert capsys.readouterr().out.startswith("no incidents")


def test_the_test_dependencies_install_chromium():
    script = Path(__file__).resolve().parents[1] / ".ci" / "test-deps.sh"
    assert re.search(r"need_apt\+=\(chromium\)", script.read_text()), "test-deps.sh must install Debian's chromium"
    assert shutil.which("chromium") or Path(CHROMIUM).is_file(), "chromium missing: run .ci/test-deps.sh"


def test_your_own_replay_to_a_report_as_the_readme_says(tmp_path):
    """README "Your own replay": simulate -> run -> evaluate (train the first hour, score the rest) -> incidents -> report."""
    command = [sys.executable, "-m", "sensorflow"]
    rec, store = tmp_path / "rec", f"sqlite:///{tmp_path / 'mine.db'}"

    def step(*args: str, timeout: float = 600) -> str:
        return subprocess.run([*command, *args], check=True, capture_output=True, text=True, timeout=timeout,
                              cwd=tmp_path).stdout

    step("simulate", "--out", str(rec), "--profile", "fleet", "--devices", "3", "--tags", "4", "--duration", "7200",
         "--anomaly-rate", "2", "--start", "2026-01-01T00:00:00Z")
    step("run", "--source", str(rec), "--store", store)
    step("evaluate", "--store", store, "--train-to=-1h", "--labels", str(rec / "labels.json"), "--task-processes", "1")
    incidents = [json.loads(x) for x in step("incidents", "--store", store, "--detector", "eval:calibrated", "--json").splitlines()]
    assert incidents and all(i["start"] > "2026-01-01T01:00:00" for i in incidents)  # the scored hour only
    page = tmp_path / "mine.html"
    step("report", "--store", store, "--labels", str(rec / "labels.json"), "--out", str(page))
    found = parse(render(page))
    assert len(found.rows) == min(len(incidents), 50) and {r[2] for r in found.rows} == {"eval:calibrated"}
    assert found.images


def test_incidents_and_report_on_postgresql_mask_the_password(postgres_odbc, tmp_path, capsys):
    url = f"postgresql+odbc:{postgres_odbc};PWD=hunter2"  # trust auth here: the server ignores it, the page must not show it
    with open_store(url) as store:
        store.create_schema()
        store.upsert_windows(window_table([end(i) for i in range(20)], "pump-9", "temp", 21.0, 5))
        store.replace_incidents(DETECTOR, {("pump-9", "temp"): 0}, pa.table({
            "device": ["pump-9"], "tag": ["temp"], "detector": [DETECTOR], "start": [end(10)], "end": [end(12)],
            "peak_score": [3.5], "flagged_windows": [3], "open": [False], "updated_at": [end(20)]}, schema=INCIDENT_SCHEMA))
    assert main(["incidents", "--store", url, "--json"]) == 0
    assert [json.loads(x)["start"] for x in capsys.readouterr().out.splitlines()] == ["2026-01-01T00:00:55.000Z"]
    page = tmp_path / "pg.html"
    assert main(["report", "--store", url, "--out", str(page)]) == 0
    dom = render(page)
    assert [r[:2] for r in parse(dom).rows] == [["pump-9", "temp"]] and len(parse(dom).images) == 1
    assert "hunter2" not in page.read_text() and "PWD=***" in dom

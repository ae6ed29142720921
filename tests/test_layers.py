"""The import rules of docs/architecture.md, read from the code's own imports (ast).

Every module of the distribution belongs to one unit (``sensorflow.store``, ``sensorflow.ingest``,
...). Units sit on numbered layers; a module may import its own unit and any unit on a LOWER
layer, nothing beside it or above it. No set of modules may import each other in a circle
(function-level imports included: a lazy import hides a circle, it does not remove it).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest layer first. This table is the one written statement of what may import what.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sensorflow", "sensorflow.records", "sensorflow.logfields", "sensorflow.lifecycle", "sensorflow.imports", "sensorflow.exposition"),  # records: what flows; imports nothing of ours
    ("sensorflow.store", "sensorflow.ingest"),  # where data leaves / enters; neither knows the other
    ("sensorflow.windowing", "sensorflow.batch_jobs", "sensorflow.simulator"),  # the pipelines; none knows another
    ("sensorflow.settings",),  # one frozen settings object per command
    ("sensorflow.assembly",),  # settings -> typed configs and jobs
    ("sensorflow.batch_commands", "sensorflow.incidents_command"),  # sidecar and task commands; listing incidents
    ("sensorflow.demo", "sensorflow.evaluate", "sensorflow.report", "sensorflow.serve"),  # commands built on those; none knows another
    ("sensorflow.cli",),
    ("sensorflow.__main__",),
)
OLD_TOP_LEVEL = {"ingest", "windowing", "batch_jobs", "simulator"}


@dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module} imports {self.imported}: {self.why}"


def package_dirs(pyproject: Path = REPO / "pyproject.toml") -> dict[str, Path]:
    """Import name -> folder, as setuptools' ``package-dir`` maps them."""
    config = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    return {name: pyproject.parent / folder for name, folder in config["package-dir"].items()}


def modules(dirs: Mapping[str, Path]) -> dict[str, Path]:
    """Every module of the mapped packages: dotted name -> file."""
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if any(name == other or name.startswith(other + ".") for other in dirs if other != package and other.startswith(package + ".")):
                continue  # a folder mapped under another name
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules ``name`` imports, anywhere in the file, resolved to the deepest known module."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def unit_of(module: str) -> str | None:
    best = None
    for layer in LAYERS:
        for unit in layer:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best)):
                best = unit
    return best


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def violations(graph: Mapping[str, set[str]]) -> list[Violation]:
    """Imports that point up or sideways between units, or that use an old top-level name."""
    found = []
    for module, imported in sorted(graph.items()):
        own = unit_of(module)
        for target in sorted(imported):
            if target.split(".")[0] in OLD_TOP_LEVEL:
                found.append(Violation(module, target, "an old top-level name; everything imports under sensorflow."))
                continue
            if not target.startswith("sensorflow"):
                continue
            theirs = unit_of(target)
            if own is None or theirs is None:
                found.append(Violation(module, target, "a module outside the layer table (add its unit to LAYERS)"))
            elif theirs != own and theirs != "sensorflow" and layer_of(theirs) >= layer_of(own):
                where = "beside" if layer_of(theirs) == layer_of(own) else "above"
                found.append(Violation(module, target, f"{theirs} is {where} {own}, not below it"))
    return found


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Sets of modules that import each other, directly or through others (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph(dirs: Mapping[str, Path]) -> dict[str, set[str]]:
    found = modules(dirs)
    return {name: imports_of(name, path, found) - {name} for name, path in found.items()}


def test_every_import_points_down_a_layer():
    problems = violations(import_graph(package_dirs()))
    assert not problems, "\n".join(map(str, problems))


def test_no_modules_import_each_other_in_a_circle():
    found = circles(import_graph(package_dirs()))
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_every_package_of_the_tree_is_in_the_distribution():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {name for name, path in modules(package_dirs()).items() if path.name == "__init__.py"}
    assert set(config["packages"]) == on_disk


def test_tests_and_benches_use_only_the_one_namespace():
    old = []
    for folder in ("tests", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for target in imports_of("tests.x", path, ()):
                if target.split(".")[0] in OLD_TOP_LEVEL:
                    old.append(f"{path.relative_to(REPO)}: {target}")
    assert not old, old


# ---- the check itself can fail ------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"sensorflow": tmp_path / "sensorflow", "sensorflow.ingest": tmp_path / "ingest", "sensorflow.windowing": tmp_path / "windowing"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # ingest reaching up into windowing
            {"ingest/source.py": "from sensorflow.windowing.tumbling import window_ends\n"},
            ["sensorflow.ingest.source imports sensorflow.windowing.tumbling: sensorflow.windowing is above sensorflow.ingest, not below it"],
        ),
        (  # the ground floor importing a pipeline, inside a function
            {"sensorflow/records/rows.py": "def f():\n    import sensorflow.windowing.tumbling\n"},
            ["sensorflow.records.rows imports sensorflow.windowing.tumbling: sensorflow.windowing is above sensorflow.records, not below it"],
        ),
        (  # a pipeline reading the CLI's settings
            {"windowing/runner.py": "from sensorflow.settings import RunSettings\n"},
            ["sensorflow.windowing.runner imports sensorflow.settings: sensorflow.settings is above sensorflow.windowing, not below it"],
        ),
        (  # an old top-level name
            {"windowing/dataflow.py": "from ingest.decode import decode_batch\n"},
            ["sensorflow.windowing.dataflow imports ingest.decode: an old top-level name; everything imports under sensorflow."],
        ),
        (  # a downward import is fine
            {"windowing/dataflow.py": "from sensorflow.ingest.decode import decode_batch\n", "ingest/decode.py": ""},
            [],
        ),
    ],
)
def test_the_layer_check_reports_imports_that_point_up(tmp_path: Path, files: dict[str, str], expected: list[str]):
    files = {"sensorflow/__init__.py": "", "ingest/__init__.py": "", "windowing/__init__.py": "", **files}
    assert [str(v) for v in violations(import_graph(_tree(tmp_path, files)))] == expected


def test_the_circle_check_finds_a_lazy_circle(tmp_path: Path):
    dirs = _tree(tmp_path, {
        "sensorflow/__init__.py": "", "ingest/__init__.py": "", "windowing/__init__.py": "",
        "windowing/runner.py": "from sensorflow.windowing.cluster import run_local_cluster\n",
        "windowing/cluster.py": "def child():\n    from sensorflow.windowing.runner import prepare_flow\n",
        "windowing/sink.py": "from sensorflow.windowing import runner\n",
    })
    assert circles(import_graph(dirs)) == [["sensorflow.windowing.cluster", "sensorflow.windowing.runner"]]

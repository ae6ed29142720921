"""The Dockerfile, read statically (no Docker engine here): slim Python base, dependencies from
the hashed lock, the package installed, no build tools and a non-root user in the final stage;
and the lock files themselves: complete for pyproject.toml, pinned, hashed, and what is installed."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[a-z0-9.+-]+-dev)\b")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item else "") for item in logical]


def _stages() -> tuple[dict[str, str], list[Stage]]:
    args, stages = {}, []
    for keyword, rest in _instructions((REPO / "Dockerfile").read_text()):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            stages.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else ""))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """package -> (pinned version, hashes) from a pip-compile lock file."""
    entries, current = {}, None
    for line in (REPO / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            requirement = line.rstrip(" \\")
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", requirement), f"{name}: not pinned: {line}"
            package, version = requirement.split("==")
            current = canonicalize_name(package)
            entries[current] = (version, [])
        else:
            found = re.search(r"--hash=sha256:([0-9a-f]{64})", line)
            assert found and current, f"{name}: unexpected line {line!r}"
            entries[current][1].append(found.group(1))
    return entries


def test_two_stages_on_the_slim_python_311_base():
    args, stages = _stages()
    assert [s.name for s in stages] == ["build", "runtime"]
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
    assert args["PYTHON_IMAGE"] == stages[0].base == stages[1].base


def test_the_build_installs_the_hashed_lock_then_the_package_without_resolving_again():
    _, (build, _) = _stages()
    runs = build.all("RUN")
    assert "COPY requirements.lock /tmp/requirements.lock" in [f"COPY {c}" for c in build.all("COPY")]
    lock_install = [r for r in runs if "-r /tmp/requirements.lock" in r]
    assert len(lock_install) == 1 and "--require-hashes" in lock_install[0] and "--only-binary=:all:" in lock_install[0]
    package = [r for r in runs if re.search(r"pip install .*--no-deps .*\s\.(\s|$)", r)]
    assert len(package) == 1 and "--no-build-isolation" in package[0]
    assert runs.index(lock_install[0]) < runs.index(package[0])
    assert not any(BUILD_TOOLS.search(r) for r in runs if "apt-get" in r), "wheels only: no compiler in the build"


def test_the_image_copies_every_package_the_project_ships():
    _, (build, runtime) = _stages()
    copied = {shlex.split(c)[0] for c in build.all("COPY")}
    packages = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())  # the folders mapped into sensorflow
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "README.md"} <= {w for c in build.all("COPY") for w in shlex.split(c)[:-1]}
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context admits only what is listed"
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = {w for stage in (build, runtime) for c in stage.all("COPY") if not c.startswith("--from") for w in shlex.split(c)[:-1]}
    assert sources <= admitted, f".dockerignore leaves out {sources - admitted}"


def test_the_final_stage_has_no_build_tools_and_runs_as_a_numeric_non_root_user():
    _, (_, runtime) = _stages()
    runs = " ".join(runtime.all("RUN"))
    installs = " ".join(re.findall(r"apt-get install[^;&|]*", runs))
    assert "unixodbc" in installs and "odbc-postgresql" in installs
    assert not BUILD_TOOLS.search(installs), installs
    assert "pip install" not in runs, "the final stage takes the built virtualenv, it installs nothing from PyPI"
    assert runtime.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    users = runtime.all("USER")
    assert len(users) == 1 and runtime.instructions[-1][0] in ("ENTRYPOINT", "CMD")
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), "numeric, so runAsNonRoot can check it"
    assert [kw for kw, _ in runtime.instructions].index("USER") > max(
        i for i, (kw, _) in enumerate(runtime.instructions) if kw == "RUN"
    )
    assert runtime.all("ENTRYPOINT") == ['["sensorflow"]']
    # One image runs the dataflow, the sidecar and batch tasks: Kubernetes' probes judge health.
    assert not runtime.all("HEALTHCHECK")


def test_azure_sqls_odbc_driver_is_an_opt_in_build_argument():
    _, (_, runtime) = _stages()
    assert "MSODBCSQL18=false" in runtime.all("ARG")
    (run,) = [r for r in runtime.all("RUN") if "msodbcsql18" in r]
    assert 'if [ "$MSODBCSQL18" = "true" ]' in run and "ACCEPT_EULA=Y" in run
    assert "apt-get purge -y --auto-remove curl gpg" in run and "rm -rf /var/lib/apt/lists/*" in run


def test_the_locks_pin_every_dependency_with_hashes():
    runtime, test = _lock("requirements.lock"), _lock("requirements-test.lock")
    project = PYPROJECT["project"]
    wanted = {
        "requirements.lock": project["dependencies"] + project["optional-dependencies"]["azure"]
        + project["optional-dependencies"]["odbc"] + PYPROJECT["build-system"]["requires"],
        "requirements-test.lock": project["optional-dependencies"]["test"],
    }
    for name, requirements in wanted.items():
        lock = runtime if name == "requirements.lock" else test
        for text in requirements:
            requirement = Requirement(text)
            package = canonicalize_name(requirement.name)
            assert package in lock, f"{name} lacks {package}"
            assert requirement.specifier.contains(lock[package][0], prereleases=True), (name, text, lock[package][0])
    for package, (version, hashes) in {**runtime, **test}.items():
        assert hashes, f"{package} has no hash"
    for package, (version, _) in runtime.items():
        assert test[package][0] == version, f"the test lock moved {package}"


def test_the_environment_under_test_is_the_locked_one():
    """CI installs requirements-test.lock (Makefile), so what runs here is what is pinned."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {
        package: (version, installed[package])
        for package, (version, _) in _lock("requirements-test.lock").items()
        if package in installed and installed[package] != version and package not in ("setuptools", "wheel", "pip")
    }
    if drift:
        pytest.fail(f"installed versions differ from requirements-test.lock (run the Makefile's install): {drift}")

"""The Kubernetes manifests as data: read a base file, render an overlay with kubectl, and the
environment a container of the pod template would get (what the tests compare and run with)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra")

__all__ = [
    "BASE",
    "OVERLAYS",
    "base_docs",
    "container",
    "container_env",
    "find",
    "load_docs",
    "render",
    "workload_docs",
]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = ("small", "large")

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_docs() -> list[dict[str, Any]]:
    """Every resource file the base kustomization lists, read as it is on disk."""
    kustomization = load_docs(BASE / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in load_docs(BASE / name)]


def workload_docs() -> tuple[dict[str, Any], dict[str, str]]:
    """The base StatefulSet and the data of the base settings ConfigMap."""
    docs = base_docs()
    return find(docs, "StatefulSet", "sensorflow"), find(docs, "ConfigMap", "sensorflow-settings")["data"]


def render(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay (offline); fails with kubectl's message."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (Debian: kubernetes-client; .ci/test-deps.sh installs it)")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay}: {done.stderr.strip()}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"].startswith(name))]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(statefulset: dict[str, Any], name: str) -> dict[str, Any]:
    spec = statefulset["spec"]["template"]["spec"]
    matches = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(matches) == 1, f"no single container {name!r}"
    return matches[0]


def container_env(
    spec: dict[str, Any],
    configmaps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    fields: Mapping[str, str],
) -> dict[str, str]:
    """The variables Kubernetes would give ``spec``: envFrom first, then env in order, with
    ``$(NAME)`` expanded from what is defined before it, as the kubelet does."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            env.update(secrets[source["secretRef"]["name"]])
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = _REF.sub(lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env

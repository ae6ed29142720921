"""Two containers, one pod network: the dataflow and the sidecar each serve /metrics on a port of their own.

The ConfigMap's ``SENSORFLOW_METRICS_PORT`` (9100) reaches both containers (``envFrom``); the sidecar
reads that setting too since it serves metrics (issue 17), so its container sets its own port, or
it would fail to bind the dataflow's in the shared network namespace.
"""

from __future__ import annotations

import os

import pytest

from sensorflow.settings import RunSettings, SidecarSettings, load_settings
from tests.deploy.k8s import OVERLAYS, container, find, render
from tests.deploy.test_manifests import SECRET, _pod_env

pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_sidecar_and_the_dataflow_serve_metrics_on_different_ports(overlay, monkeypatch):
    docs = render(overlay)
    ports = {}
    for name, cls in (("dataflow", RunSettings), ("sidecar", SidecarSettings)):
        for key in list(os.environ):
            if key.startswith(("SENSORFLOW_", "BYTEWAX_")):
                monkeypatch.delenv(key)
        for key, value in _pod_env(docs, name, 0, SECRET[overlay]).items():
            monkeypatch.setenv(key, value)
        ports[name] = load_settings(cls, {}).metrics_port
    assert ports["dataflow"] == 9100 and ports["sidecar"] == 9101, ports
    statefulset = find(docs, "StatefulSet", "sensorflow")
    declared = {p["name"]: p["containerPort"] for p in container(statefulset, "sidecar")["ports"]}
    assert declared == {"sidecar-metrics": 9101}
    monitoring = [r for r in find(docs, "NetworkPolicy", "sensorflow")["spec"]["ingress"]
                  if "namespaceSelector" in str(r["from"])]
    assert sorted(p["port"] for p in monitoring[0]["ports"]) == [9100, 9101]

"""The Kubernetes manifests: every file and each overlay's rendering validate against the
Kubernetes schemas (offline, strict), the pods are locked down, and the Bytewax cluster
variables agree with the StatefulSet's name and replica count as our runner reads them."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest

from sensorflow.assembly import settings_for
from sensorflow.settings import RunSettings, SidecarSettings, load_settings
from sensorflow.windowing.cluster import member_from_env
from tests.deploy.k8s import (
    BASE,
    K8S,
    OVERLAYS,
    base_docs,
    container,
    container_env,
    find,
    load_docs,
    render,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")

# The oldest Kubernetes we support (persistentVolumeClaimRetentionPolicy is on by default from
# 1.27; 1.29 is the oldest AKS keeps) and the newest schema the validator ships.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version() + ".0")
NAMESPACE = "sensors"


def _validate_all(docs: list[dict]) -> None:
    for version in KUBE_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def _pod_env(docs: list[dict], container_name: str, ordinal: int, secrets: dict | None = None) -> dict[str, str]:
    statefulset = find(docs, "StatefulSet", "sensorflow")
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    fields = {"metadata.name": f"{statefulset['metadata']['name']}-{ordinal}", "metadata.namespace": NAMESPACE}
    secrets = {"sensorflow-secrets": secrets or {}}
    return container_env(container(statefulset, container_name), configmaps, secrets, fields)


# ---- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in sorted(BASE.glob("*.yaml")) if p.name != "kustomization.yaml"])
def test_every_base_manifest_validates(name: str):
    docs = base_docs()
    file_docs = load_docs(BASE / name)
    assert file_docs and all(d in docs for d in file_docs), f"{name} is not listed in the base kustomization"
    _validate_all(file_docs)


def test_each_overlay_renders_and_validates(rendered):
    overlay, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ServiceAccount", "ConfigMap", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"]
    ), overlay
    _validate_all(docs)


def test_the_validator_rejects_a_broken_statefulset(rendered):
    statefulset = copy.deepcopy(find(rendered[1], "StatefulSet", "sensorflow"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBE_VERSIONS[0], strict=True)
    statefulset = copy.deepcopy(find(rendered[1], "StatefulSet", "sensorflow"))
    statefulset["spec"]["replicas"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBE_VERSIONS[0], strict=True)


# ---- security ------------------------------------------------------------------------------


def test_pods_run_locked_down(rendered):
    overlay, docs = rendered
    pod = find(docs, "StatefulSet", "sensorflow")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] > 0 and context["runAsGroup"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v} | {"recovery"}
    containers = pod["initContainers"] + pod["containers"]
    assert [c["name"] for c in containers] == ["init", "dataflow", "sidecar"], overlay
    for c in containers:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert not sc.get("privileged"), c["name"]
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) >= {"cpu", "memory"}, (c["name"], kind)
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/tmp"]["name"] in writable, f"{c['name']}: a read-only root needs a writable /tmp"
        assert c["image"] == find(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_secrets_are_referenced_by_name_and_never_committed(rendered):
    overlay, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"]
    statefulset = find(docs, "StatefulSet", "sensorflow")
    for name in ("dataflow", "sidecar"):
        refs = [s["secretRef"]["name"] for s in container(statefulset, name)["envFrom"] if "secretRef" in s]
        assert refs == ["sensorflow-secrets"], (overlay, name)
    settings = find(docs, "ConfigMap", "sensorflow-settings")["data"]
    assert "SENSORFLOW_STORE" not in settings and not any("CONNECTION_STRING" in k for k in settings)


def test_no_credentials_anywhere_under_deploy():
    credential = re.compile(r"(AccountKey|SharedAccessKey|Password|Pwd)\s*=", re.IGNORECASE)
    files = [p for p in K8S.rglob("*") if p.is_file()]
    assert len(files) >= 10
    for path in files:
        text = path.read_text()
        assert not credential.search(text), path
        assert "kind: Secret" not in text, path


# ---- the Bytewax cluster -------------------------------------------------------------------


def test_bytewax_cluster_variables_match_the_statefulset(rendered, tmp_path: Path):
    overlay, docs = rendered
    statefulset = find(docs, "StatefulSet", "sensorflow")
    service = find(docs, "Service", "sensorflow")
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    cluster_port = {p["name"]: p["containerPort"] for p in container(statefulset, "dataflow")["ports"]}["cluster"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["cluster"] == cluster_port

    for ordinal in range(replicas):
        init = _pod_env(docs, "init", ordinal)
        dataflow = _pod_env(docs, "dataflow", ordinal)
        assert init["BYTEWAX_REPLICAS"] == str(replicas), overlay
        assert init["BYTEWAX_STATEFULSET_NAME"] == dataflow["BYTEWAX_STATEFULSET_NAME"] == name
        assert init["BYTEWAX_POD_NAME"] == dataflow["BYTEWAX_POD_NAME"] == f"{name}-{ordinal}"
        assert init["BYTEWAX_HOSTFILE_PATH"] == dataflow["BYTEWAX_HOSTFILE_PATH"]
        assert init["CLUSTER_DOMAIN"] == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        assert init["CLUSTER_PORT"] == str(cluster_port)

        # The init step's hostfile, read the way `sensorflow run` reads it.
        hostfile = tmp_path / f"hostfile-{ordinal}"
        subprocess.run(
            ["sh", str(BASE / "init-pod.sh"), "hostfile"],
            env={**init, "BYTEWAX_HOSTFILE_PATH": str(hostfile), "PATH": "/usr/bin:/bin"},
            check=True, capture_output=True,
        )
        member = member_from_env({**dataflow, "BYTEWAX_HOSTFILE_PATH": str(hostfile)})
        assert member is not None and member.process_id == ordinal
        assert member.addresses == tuple(
            f"{name}-{i}.{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{cluster_port}" for i in range(replicas)
        )
        settings = settings_for(member, RunSettings(source="unused"))
        assert (settings.processes, settings.workers) == (replicas, int(dataflow["BYTEWAX_WORKERS_PER_PROCESS"]))


def test_the_hostfile_volume_is_shared_by_the_init_step_and_the_dataflow(rendered):
    statefulset = find(rendered[1], "StatefulSet", "sensorflow")
    path = Path(_pod_env(rendered[1], "dataflow", 0)["BYTEWAX_HOSTFILE_PATH"])
    volumes = []
    for name in ("init", "dataflow"):
        mounts = [m for m in container(statefulset, name)["volumeMounts"] if path.is_relative_to(m["mountPath"])]
        assert len(mounts) == 1, name
        volumes.append(mounts[0]["name"])
    assert volumes[0] == volumes[1]
    assert volumes[0] in {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v}


def test_recovery_partitions_cover_the_cluster_and_live_on_each_pods_volume(rendered):
    overlay, docs = rendered
    statefulset = find(docs, "StatefulSet", "sensorflow")
    replicas = statefulset["spec"]["replicas"]
    dataflow, init = _pod_env(docs, "dataflow", 0), _pod_env(docs, "init", 0)
    partitions, holders = int(init["RECOVERY_PARTITIONS"]), int(init["RECOVERY_HOLDERS"])
    assert partitions >= replicas * int(dataflow["BYTEWAX_WORKERS_PER_PROCESS"]), overlay
    assert 1 <= holders <= replicas, f"{overlay}: partitions on pods that do not exist would be missing"
    assert init["SENSORFLOW_RECOVERY_DIR"] == dataflow["SENSORFLOW_RECOVERY_DIR"]
    claims = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    for name in ("init", "dataflow"):
        mounts = [
            m for m in container(statefulset, name)["volumeMounts"]
            if Path(dataflow["SENSORFLOW_RECOVERY_DIR"]).is_relative_to(m["mountPath"])
        ]
        assert [m["name"] for m in mounts] == ["recovery"], name
    assert claims["recovery"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    retention = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_overlays_differ_in_size():
    small = find(render("small"), "StatefulSet", "sensorflow")["spec"]["replicas"]
    large = find(render("large"), "StatefulSet", "sensorflow")["spec"]["replicas"]
    assert small == 1 and large >= 4


# ---- settings ------------------------------------------------------------------------------

# The Secret's keys as docs/deploy.md tells users to create it (fake values).
SECRET = {
    "small": {
        "SENSORFLOW_STORE": "mssql+odbc:Driver={ODBC Driver 18 for SQL Server};Server=tcp:db.example,1433;Uid=u;Pwd=<p>",
        "SENSORFLOW_EVENTHUB_CONNECTION_STRING": "Endpoint=sb://ns.example/;SharedAccessKeyName=listen;SharedAccessKey=<k>;EntityPath=sensors",
        "SENSORFLOW_CHECKPOINT_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=<k>",
        "SENSORFLOW_BLOB_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=<k>",
    },
    "large": {"SENSORFLOW_STORE": "postgresql+odbc:Driver={PostgreSQL Unicode};Server=db.example;Uid=u;Pwd=<p>"},
}


def test_the_configmap_and_the_documented_secret_make_valid_settings(rendered, monkeypatch):
    overlay, docs = rendered
    settings = find(docs, "ConfigMap", "sensorflow-settings")["data"]
    fields = set(RunSettings.model_fields) | set(SidecarSettings.model_fields)
    for key in settings:
        assert not key.startswith("SENSORFLOW_") or key[len("SENSORFLOW_"):].lower() in fields, f"unknown setting {key}"
    for name, cls in (("dataflow", RunSettings), ("sidecar", SidecarSettings)):
        for key in list(os.environ):
            if key.startswith(("SENSORFLOW_", "BYTEWAX_")):
                monkeypatch.delenv(key)
        for key, value in _pod_env(docs, name, 0, SECRET[overlay]).items():
            monkeypatch.setenv(key, value)
        loaded = load_settings(cls, {})
        if cls is RunSettings:
            assert loaded.live and loaded.metrics_port == 9100, overlay
            assert loaded.recovery_dir is not None
        else:
            assert loaded.store == SECRET[overlay]["SENSORFLOW_STORE"]


# ---- operations ----------------------------------------------------------------------------


def test_probes_scrape_annotations_and_grace_period(rendered):
    docs = rendered[1]
    statefulset = find(docs, "StatefulSet", "sensorflow")
    template = statefulset["spec"]["template"]
    dataflow = container(statefulset, "dataflow")
    env = _pod_env(docs, "dataflow", 0)
    ports = {p["name"]: p["containerPort"] for p in dataflow["ports"]}
    assert ports["metrics"] == int(env["SENSORFLOW_METRICS_PORT"])
    assert dataflow["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert dataflow["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert dataflow["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"
    # The final snapshot: one epoch, then the store commit behind it, with room to spare.
    assert template["spec"]["terminationGracePeriodSeconds"] >= 3 * float(env["SENSORFLOW_SNAPSHOT_INTERVAL_SECONDS"])
    assert dataflow["args"] == ["run"] and container(statefulset, "sidecar")["args"] == ["sidecar"]


def test_selectors_match_the_pods(rendered):
    docs = rendered[1]
    labels = find(docs, "StatefulSet", "sensorflow")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(find(docs, "StatefulSet")["spec"]["selector"]["matchLabels"])
    assert selects(find(docs, "Service")["spec"]["selector"])
    assert selects(find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(find(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
    assert find(docs, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1, "selector": find(docs, "PodDisruptionBudget")["spec"]["selector"]
    }


def test_network_policy_allows_only_what_the_pods_need(rendered):
    docs = rendered[1]
    policy = find(docs, "NetworkPolicy", "sensorflow")["spec"]
    own = find(docs, "StatefulSet", "sensorflow")["spec"]["template"]["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = {(r["ports"][0]["port"], str(r["from"])) for r in policy["ingress"]}
    assert ingress == {
        (9100, str([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])),
        (9999, str([{"podSelector": {"matchLabels": {k: own[k] for k in policy["podSelector"]["matchLabels"]}}}])),
    }
    for rule in policy["ingress"] + policy["egress"]:
        assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
    egress_ports = {(p["protocol"], p["port"]) for r in policy["egress"] for p in r["ports"]}
    assert egress_ports == {
        ("UDP", 53), ("TCP", 53), ("TCP", 9999), ("TCP", 443), ("TCP", 5671), ("TCP", 5672), ("TCP", 1433), ("TCP", 5432)
    }
    cluster_rule = [r for r in policy["egress"] if r["ports"] == [{"protocol": "TCP", "port": 9999}]]
    assert cluster_rule and "podSelector" in cluster_rule[0]["to"][0]


def test_workload_identity_only_in_the_large_overlay():
    for overlay, expected in (("small", False), ("large", True)):
        docs = render(overlay)
        labels = find(docs, "StatefulSet", "sensorflow")["spec"]["template"]["metadata"]["labels"]
        annotations = find(docs, "ServiceAccount", "sensorflow")["metadata"].get("annotations", {})
        assert (labels.get("azure.workload.identity/use") == "true") is expected, overlay
        assert ("azure.workload.identity/client-id" in annotations) is expected, overlay

"""Every kustomization in manifests/ and examples/ builds with ``kubectl kustomize`` (offline, as ``kubectl apply
-k`` would), and every object it produces is valid: built-in kinds against Kubernetes 1.37's schemas
(kubernetes-validate, strict), DisaggregatedAutoscalers with pdscale's own loader, Prometheus Operator objects
by group and kind (their specs are checked where they are used). kubectl comes from scripts/ensure-kubectl.sh (``make test``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from autoscaler.config import spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = sorted(p.parent for folder in ("manifests", "examples") for p in (ROOT / folder).rglob(
    "kustomization.yaml"))
# other projects' custom resources (no schema here): group -> kinds
THIRD_PARTY = {"monitoring.coreos.com": {"PodMonitor", "ServiceMonitor", "PrometheusRule"},
               "cert-manager.io": {"Certificate", "Issuer", "ClusterIssuer"}, "keda.sh": {"ScaledObject"}}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not on PATH: run scripts/ensure-kubectl.sh (make test does)", pytrace=False)
    return path


def build(folder: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {folder.relative_to(ROOT)}:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=[str(k.relative_to(ROOT)) for k in KUSTOMIZATIONS])
def test_kustomization_builds_and_every_object_is_valid(folder: Path) -> None:
    objects = build(folder)
    assert objects
    names = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "an object appears twice"
    for obj in objects:
        kind = obj["kind"]
        where = f"{folder.relative_to(ROOT)}: {kind}/{obj['metadata']['name']}"
        if kind == "DisaggregatedAutoscaler":
            spec_from_dict(obj["spec"], source=where)
        elif kind in THIRD_PARTY.get(obj["apiVersion"].split("/")[0], set()):
            assert obj["spec"], where
        else:
            try:
                kubernetes_validate.validate(obj, "1.37.0", strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message}")


def test_every_folder_with_manifests_is_built() -> None:
    """A new overlay or example without a kustomization.yaml would escape the check above."""
    for folder in ("manifests", "examples"):
        for path in (ROOT / folder).rglob("*.yaml"):
            if path.parent.name in ("scenarios",) or path.name == "kustomization.yaml":
                continue
            assert any(path.is_relative_to(k) for k in KUSTOMIZATIONS), f"{path.relative_to(ROOT)}: no kustomization"


def test_monitoring_overlay_includes_base_and_the_dashboard() -> None:
    objects = build(ROOT / "manifests" / "overlays" / "monitoring")
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "CustomResourceDefinition", "PodMonitor", "ServiceMonitor", "PrometheusRule"} <= kinds
    board = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "pdscale-grafana-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "pdscale.json" in board["data"]
    pod_monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_pdscale_io_role"], "targetLabel": "role",
            "action": "replace"} in relabel
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "pdscale-controller-metrics")
    service_monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service_monitor["spec"]["selector"]["matchLabels"].items())
    assert service_monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}

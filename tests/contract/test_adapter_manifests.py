"""manifests/metrics-adapter and its cert-manager overlay: ``kubectl kustomize`` builds them, every built-in object
validates strictly (Kubernetes 1.37), the pieces point at each other (APIService -> Service -> Deployment port,
ServiceAccount, the Lease the Role names), the CLI accepts the Deployment's arguments, RBAC grants exactly what
the adapter calls; the HPA and KEDA examples name metrics the adapter serves, with selectors it accepts and a
PromQL query promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from autoscaler.cli import build_parser
from metrics_adapter.provider import CATALOG
from metrics_adapter.selectors import parse_selector

ROOT = Path(__file__).resolve().parents[2] / "manifests"
CUSTOM_KINDS = {"Certificate", "Issuer", "ScaledObject"}


def kustomize(folder: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH (Debian package kubernetes-client); the manifest tests need it"
    built = subprocess.run([kubectl, "kustomize", str(ROOT / folder)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


@pytest.fixture(scope="module")
def plain() -> list[dict[str, Any]]:
    return kustomize("metrics-adapter")


@pytest.fixture(scope="module")
def with_cert_manager() -> list[dict[str, Any]]:
    return kustomize("metrics-adapter-cert-manager")


@pytest.mark.parametrize("folder", ["metrics-adapter", "metrics-adapter-cert-manager"])
def test_kustomization_lists_every_file(folder: str) -> None:
    kust = yaml.safe_load((ROOT / folder / "kustomization.yaml").read_text())
    local = {r for r in kust["resources"] if not r.startswith("..")}
    assert local == {p.name for p in (ROOT / folder).glob("*.yaml")} - {"kustomization.yaml"}


def test_built_objects_validate_strict(plain: list[dict[str, Any]], with_cert_manager: list[dict[str, Any]]) -> None:
    for doc in plain + with_cert_manager:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_the_pieces_fit(plain: list[dict[str, Any]]) -> None:
    api = one(plain, "APIService", "v1beta1.external.metrics.k8s.io")["spec"]
    assert (api["group"], api["version"]) == ("external.metrics.k8s.io", "v1beta1")
    assert api["insecureSkipTLSVerify"] is True and "caBundle" not in api, "self-signed by default, said plainly"
    service = one(plain, "Service", api["service"]["name"])
    assert service["metadata"]["namespace"] == api["service"]["namespace"]
    port = next(p for p in service["spec"]["ports"] if p["port"] == api["service"]["port"])
    deploy = one(plain, "Deployment", "pdscale-metrics-adapter")
    pod = deploy["spec"]["template"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    container = pod["spec"]["containers"][0]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert pod["spec"]["serviceAccountName"] == one(plain, "ServiceAccount")["metadata"]["name"]
    args = build_parser().parse_args(container["args"])  # the real CLI accepts them
    assert args.command == "adapter" and args.all_namespaces
    # Prometheus from the controller's ConfigMap (manifests/base/config.yaml), not from a flag
    assert container["envFrom"] == [{"configMapRef": {"name": "pdscale-controller"}}]
    assert not any(a.startswith("--prometheus") for a in container["args"])
    assert args.secure_port == next(p["containerPort"] for p in container["ports"] if p["name"] == "https")
    lease_ns, lease_name = args.controller_lease.split("/")
    role = one(plain, "Role", "pdscale-metrics-adapter-lease-reader")
    assert role["metadata"]["namespace"] == lease_ns and role["rules"][0]["resourceNames"] == [lease_name]
    assert {p["httpGet"]["scheme"] for p in (container["livenessProbe"], container["readinessProbe"])} == {"HTTPS"}
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), "room for the self-signed key"


def test_rbac_is_exactly_what_the_adapter_calls(plain: list[dict[str, Any]]) -> None:
    """metrics_adapter/refresh.py lists autoscalers and reads the Lease; metrics_adapter/auth.py reads the
    ConfigMap and creates TokenReviews and SubjectAccessReviews (system:auth-delegator)."""
    grants = {
        (doc["metadata"]["name"], group, res, verb)
        for doc in plain if doc["kind"] in ("ClusterRole", "Role")
        for rule in doc["rules"] for group in rule["apiGroups"] for res in rule["resources"] for verb in rule["verbs"]
    }  # fmt: skip
    assert grants == {
        ("pdscale-metrics-adapter", "pdscale.io", "disaggregatedautoscalers", "list"),
        ("pdscale-metrics-adapter-lease-reader", "coordination.k8s.io", "leases", "get"),
        ("pdscale-external-metrics-reader", "external.metrics.k8s.io", "*", "get"),
        ("pdscale-external-metrics-reader", "external.metrics.k8s.io", "*", "list"),
    }
    bindings = {(d["kind"], d["metadata"].get("namespace"), d["roleRef"]["name"],
                 tuple((s.get("namespace"), s["name"]) for s in d["subjects"]))
                for d in plain if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}  # fmt: skip
    adapter = (("pdscale-system", "pdscale-metrics-adapter"),)
    assert bindings == {
        ("ClusterRoleBinding", None, "pdscale-metrics-adapter", adapter),
        ("ClusterRoleBinding", None, "system:auth-delegator", adapter),
        ("RoleBinding", "kube-system", "extension-apiserver-authentication-reader", adapter),
        ("RoleBinding", "pdscale-system", "pdscale-metrics-adapter-lease-reader", adapter),
        ("ClusterRoleBinding", None, "pdscale-external-metrics-reader",
         (("kube-system", "horizontal-pod-autoscaler"),)),
    }  # fmt: skip


def test_cert_manager_overlay_verifies_the_adapter(with_cert_manager: list[dict[str, Any]]) -> None:
    api = one(with_cert_manager, "APIService")
    assert "insecureSkipTLSVerify" not in api["spec"]
    injected = api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    ns, name = injected.split("/")
    cert = one(with_cert_manager, "Certificate", name)
    assert cert["metadata"]["namespace"] == ns
    service = one(with_cert_manager, "Service")
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" in cert["spec"]["dnsNames"]
    assert one(with_cert_manager, "Issuer", cert["spec"]["issuerRef"]["name"])["spec"]["ca"]["secretName"] == (
        one(with_cert_manager, "Certificate", "pdscale-ca")["spec"]["secretName"])  # fmt: skip
    pod = one(with_cert_manager, "Deployment")["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "serving-cert")
    assert args.tls_cert_file == f"{mount['mountPath']}/tls.crt"
    assert args.tls_private_key_file == f"{mount['mountPath']}/tls.key"
    volume = next(v for v in pod["volumes"] if v["name"] == "serving-cert")
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]


def _example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "examples" / "external-metrics" / name).read_text()))


def test_hpa_example_names_a_served_metric() -> None:
    hpa = _example("hpa-desired-replicas.yaml")
    kubernetes_validate.validate(hpa, "1.37.0", strict=True)
    metric = hpa["spec"]["metrics"][0]["external"]
    assert metric["metric"]["name"] in CATALOG
    labels = metric["metric"]["selector"]["matchLabels"]
    selector = parse_selector(",".join(f"{k}={v}" for k, v in labels.items()))
    assert selector.matches({"autoscaler": "llama-8b", "pool": "prefill"})
    assert metric["target"] == {"type": "AverageValue", "averageValue": "1"}


def test_keda_example_query_is_valid_promql(tmp_path: Path) -> None:
    trigger = _example("keda-scaledobject.yaml")["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "1"
    query = trigger["metadata"]["query"]
    assert "pdscale_desired_replicas" in query and "pdscale_leader" in query
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH; install Debian's prometheus (scripts/ensure-prometheus.sh)"
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": [{"record": "keda:query", "expr": query}]}]}))
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

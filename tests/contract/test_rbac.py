"""RBAC from evidence: ``pdscale run`` (a subprocess, as deployed: ``--all-namespaces``, the Lease in
pdscale-system) goes through representative scenarios against the Kubernetes emulator and a real Prometheus;
every API request it makes is recorded by the emulator and turned into RBAC attributes
(tests/helpers/rbac.py). The test fails when manifests/base grants the controller's ServiceAccount less than it
used (a real API server would answer 403) or more than it needs (a grant no scenario exercised).

Scenarios: scale-up of Deployments; scale-down of a Deployment with pod-deletion-cost marks; a StatefulSet and
a LeaderWorkerSet target; an invalid spec (status + event); leader election (create, renew, release).

The External Metrics API adapter the same way (``pdscale adapter`` with its Deployment's arguments, ServiceAccount
pdscale-metrics-adapter): refreshes, then answers an aggregator request (front-proxy certificate, authorized by
SubjectAccessReview) and a bearer-token request (TokenReview): against manifests/metrics-adapter plus the
bootstrap roles it binds (system:auth-delegator, extension-apiserver-authentication-reader)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from autoscaler.kube import DELETION_COST
from tests.e2e.conftest import SCRAPE_S
from tests.helpers.live import DEPLOYMENT, export_model, put_autoscaler
from tests.helpers.pki import CA, extension_auth_configmap
from tests.helpers.rbac import Grants, RequestAttributes, request_attributes
from tests.helpers.vllm_exporter import VllmExporter
from workers.local.kube_emulator import CR, AccessRule, KubeEmulator
from workers.local.net import free_port
from workers.local.processes import ProcessRunner
from workers.local.prometheus import PrometheusServer, require_prometheus

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, SERVICE_ACCOUNT = "pdscale-system", "pdscale-controller"


def kustomize(folder: str) -> list[dict[str, Any]]:
    proc = subprocess.run(["kubectl", "kustomize", str(ROOT / folder)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def controller_args() -> list[str]:
    deploy = next(d for d in kustomize("manifests/base") if d["kind"] == "Deployment")
    return list(deploy["spec"]["template"]["spec"]["containers"][0]["args"])


@dataclass
class World:
    kube: KubeEmulator
    exporter: VllmExporter
    prometheus: PrometheusServer
    kubeconfig: Path
    runner: ProcessRunner
    base: Path

    def run_once(self, *extra: str) -> dict[str, Any]:
        args = [a for a in controller_args() if not a.startswith(("--tick-s", "--metrics-port"))]
        proc = subprocess.run(
            [sys.executable, "-m", "autoscaler.cli", *args, "--once", "--json", "--kubeconfig", str(self.kubeconfig),
             "--prometheus-url", self.prometheus.url, "--lease-namespace", NAMESPACE, "--identity", "rbac-test",
             "--kube-timeout-s", "2", "--prometheus-timeout-s", "2", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.stdout.strip(), proc.stderr
        return {r["autoscaler"]: r for r in json.loads(proc.stdout)["autoscalers"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_prometheus()
    base = tmp_path_factory.mktemp("rbac")
    runner = ProcessRunner(base / "proc-logs")
    with KubeEmulator() as kube, VllmExporter() as exporter:
        prometheus = PrometheusServer(runner, base / "prometheus", static_targets={"vllm": [exporter.target]},
                                      scrape_interval_s=SCRAPE_S)
        try:
            prometheus.start()
            yield World(kube, exporter, prometheus, kube.kubeconfig(base / "kubeconfig"), runner, base)
        finally:
            runner.stop_all()


@pytest.fixture(scope="module")
def calls(world: World) -> list[RequestAttributes]:
    """Every API request of every scenario, as RBAC attributes (the scenarios' own outcomes are checked, so a
    scenario that silently did nothing cannot pass)."""
    kube, exporter = world.kube, world.exporter
    # Deployments scaled up (TTFT 2.5 s against 1 s)
    export_model(exporter, "rb-up", "m-rb-up", ttft_s=2.5, itl_s=0.03)
    for name in ("prefill", "decode"):
        kube.add_deployment("rb-up", name, 2)
    put_autoscaler(kube, "rb-up", "llm", (*DEPLOYMENT, "prefill"), (*DEPLOYMENT, "decode"), "m-rb-up")
    # a Deployment scaled down, its least-busy pods marked with pod-deletion-cost first
    export_model(exporter, "rb-down", "m-rb-down", ttft_s=0.05, itl_s=0.005, pods=6, decode_running=0.0)
    kube.add_deployment("rb-down", "prefill", 1)
    kube.add_deployment("rb-down", "decode", 6)
    for i in range(6):
        kube.add_pod("rb-down", f"m-rb-down-d{i}", {"app": "decode"})
    put_autoscaler(kube, "rb-down", "llm", (*DEPLOYMENT, "prefill"), (*DEPLOYMENT, "decode"), "m-rb-down",
                   behavior={"scaleDown": {"stabilizationWindowSeconds": 0,
                                           "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}})
    # StatefulSet and LeaderWorkerSet targets (TTFT and ITL both breached)
    export_model(exporter, "rb-sts", "m-rb-sts", ttft_s=2.5, itl_s=0.2)
    kube.add_deployment("rb-sts", "prefill", 2, kind="StatefulSet")
    kube.add_deployment("rb-sts", "decode", 2, kind="LeaderWorkerSet")
    put_autoscaler(kube, "rb-sts", "llm", ("apps/v1", "StatefulSet", "prefill"),
                   ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "decode"), "m-rb-sts")
    # an invalid object: a status condition and an InvalidSpec event
    kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                  "metadata": {"name": "broken", "namespace": "rb-bad"},
                  "spec": {"prefill": {"minReplicas": 5, "maxReplicas": 2}}})
    world.prometheus.wait_for_scrapes("vllm", 4, timeout_s=30)

    start = len(kube.request_log())
    first = world.run_once()  # creates the Lease, releases it on exit
    second = world.run_once()  # the Lease exists: get and update
    log = kube.request_log()[start:]

    def replicas(resource: str, ns: str, name: str) -> int:
        obj = kube.get(resource, ns, name)
        assert obj is not None
        return int(obj["spec"]["replicas"])

    assert replicas("apps/v1/deployments", "rb-up", "prefill") > 2, first["rb-up/llm"]
    assert replicas("apps/v1/deployments", "rb-down", "decode") < 6, (first["rb-down/llm"], second["rb-down/llm"])
    marked = [p for p in kube.list("v1/pods", "rb-down") if DELETION_COST in (p["metadata"].get("annotations") or {})]
    assert marked, "no pod got a pod-deletion-cost"
    assert replicas("apps/v1/statefulsets", "rb-sts", "prefill") > 2, first["rb-sts/llm"]
    assert replicas("leaderworkerset.x-k8s.io/v1/leaderworkersets", "rb-sts", "decode") > 2, first["rb-sts/llm"]
    assert not first["rb-bad/broken"]["valid"]
    lease = kube.get("coordination.k8s.io/v1/leases", NAMESPACE, "pdscale-controller")
    assert lease is not None and lease["spec"].get("leaseTransitions", 0) >= 1
    return [request_attributes(m, p, q) for m, p, q in log]


@pytest.fixture(scope="module")
def grants() -> Grants:
    return Grants(kustomize("manifests/base"), NAMESPACE, SERVICE_ACCOUNT)


def _describe(a: RequestAttributes) -> str:
    where = f" in {a.namespace}" if a.namespace else " (cluster-wide)"
    return f"{a.verb} {a.group or 'core'}/{a.full_resource}{where} ({a.path})"


def test_manifests_grant_every_call_the_controller_makes(calls: list[RequestAttributes], grants: Grants) -> None:
    denied = sorted({_describe(a) for a in calls if not grants.allows(a)})
    assert denied == [], "a real API server would answer 403 to:\n" + "\n".join(denied)


def test_manifests_grant_nothing_the_controller_does_not_use(calls: list[RequestAttributes], grants: Grants) -> None:
    unused = grants.unused(calls)
    assert unused == [], "granted but never used:\n" + "\n".join(f"{s}: {v} {g or 'core'}/{r}" for s, g, r, v in unused)


def test_the_evidence_covers_each_kind_of_call(calls: list[RequestAttributes]) -> None:
    """The scenarios really exercise what RBAC is about (so an empty log cannot pass the two tests above)."""
    used = {(a.group, a.full_resource, a.verb) for a in calls if a.is_resource}
    for needed in [("pdscale.io", "disaggregatedautoscalers", "list"),
                   ("pdscale.io", "disaggregatedautoscalers/status", "patch"),
                   ("apps", "deployments", "list"), ("apps", "deployments/scale", "patch"),
                   ("apps", "statefulsets/scale", "patch"),
                   ("leaderworkerset.x-k8s.io", "leaderworkersets/scale", "patch"),
                   ("", "pods", "patch"), ("", "events", "create"),
                   ("coordination.k8s.io", "leases", "create"), ("coordination.k8s.io", "leases", "update")]:
        assert needed in used, needed


def test_the_check_catches_a_missing_grant(calls: list[RequestAttributes]) -> None:
    docs = kustomize("manifests/base")
    for doc in docs:
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "pdscale-controller":
            doc["rules"] = [r for r in doc["rules"] if "deployments/scale" not in r["resources"]]
    thinner = Grants(docs, NAMESPACE, SERVICE_ACCOUNT)
    assert any(not thinner.allows(a) for a in calls)


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/apps/v1/namespaces/a/deployments", "", ("list", "apps", "deployments", "", "a", "")),
        ("GET", "/apis/apps/v1/namespaces/a/deployments", "watch=true", ("watch", "apps", "deployments", "", "a", "")),
        ("GET", "/apis/apps/v1/namespaces/a/deployments/x/scale", "", ("get", "apps", "deployments", "scale", "a", "x")),
        ("PATCH", "/apis/pdscale.io/v1alpha1/namespaces/a/disaggregatedautoscalers/x/status", "",
         ("patch", "pdscale.io", "disaggregatedautoscalers", "status", "a", "x")),
        ("GET", "/apis/pdscale.io/v1alpha1/disaggregatedautoscalers", "",
         ("list", "pdscale.io", "disaggregatedautoscalers", "", "", "")),
        ("POST", "/api/v1/namespaces/a/events", "", ("create", "", "events", "", "a", "")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/s/leases/l", "", ("update", "coordination.k8s.io", "leases", "", "s", "l")),
        ("GET", "/apis/leaderworkerset.x-k8s.io/v1", "", ("get", "", "", "", "", "")),
    ],
)  # fmt: skip
def test_request_attributes(method: str, path: str, query: str, expected: tuple[str, ...]) -> None:
    a = request_attributes(method, path, query)
    assert (a.verb, a.group, a.resource, a.subresource, a.namespace, a.name) == expected


# ---------------------------------------------------------------- the External Metrics API adapter

ADAPTER_SA = "pdscale-metrics-adapter"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"


@pytest.fixture(scope="module")
def adapter_calls(world: World, calls: list[RequestAttributes]) -> list[RequestAttributes]:
    """``pdscale adapter`` as deployed, through a few refreshes and one request of each authentication kind."""
    kube, base = world.kube, world.base
    front_proxy, serving_ca = CA("front-proxy", base), CA("serving", base)
    serving = serving_ca.issue("pdscale-metrics-adapter", hosts=["127.0.0.1"], stem="serving")
    kube.put("v1/configmaps", extension_auth_configmap(front_proxy))
    kube.add_token("dashboard-token", "dashboard", ("system:authenticated",))
    kube.allow(AccessRule(users=(HPA_USER, "dashboard"), verbs=("list",), api_groups=("external.metrics.k8s.io",)))
    deploy = next(d for d in kustomize("manifests/metrics-adapter") if d["kind"] == "Deployment")
    args = [a for a in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
            if not a.startswith(("--refresh-s", "--secure-port"))]
    port = free_port()
    start = len(kube.request_log())
    proc = world.runner.start(
        [sys.executable, "-m", "autoscaler.cli", *args, "--kubeconfig", str(world.kubeconfig), "--prometheus-url",
         world.prometheus.url, "--refresh-s", "0.5", "--secure-port", str(port), "--bind-address", "127.0.0.1",
         "--tls-cert-file", str(serving.cert_path), "--tls-private-key-file", str(serving.key_path)],
        name="pdscale-adapter", env={"POD_NAMESPACE": NAMESPACE}, cwd=ROOT)
    url = f"https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/rb-up/pdscale_desired_replicas"
    answers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(answers) < 2:
        assert proc.running, proc.tail()
        try:
            aggregator = requests.get(url, cert=front_proxy.issue("front-proxy-client").pair, timeout=5,
                                      verify=str(serving_ca.path),
                                      headers={"X-Remote-User": HPA_USER, "X-Remote-Group": "system:authenticated"})
            dashboard = requests.get(url, headers={"Authorization": "Bearer dashboard-token"}, timeout=5,
                                     verify=str(serving_ca.path))
            answers = [aggregator.status_code, dashboard.status_code]
        except requests.ConnectionError:
            time.sleep(0.3)
    time.sleep(1.5)  # a few more refreshes
    assert proc.stop() == 0, proc.tail()
    assert answers and all(code not in (401, 403) for code in answers), (answers, proc.tail())
    return [request_attributes(m, p, q) for m, p, q in kube.request_log()[start:]]


@pytest.fixture(scope="module")
def adapter_grants() -> Grants:
    return Grants([*kustomize("manifests/base"), *kustomize("manifests/metrics-adapter")], NAMESPACE, ADAPTER_SA)


def test_adapter_manifests_grant_every_call_it_makes(adapter_calls: list[RequestAttributes],
                                                     adapter_grants: Grants) -> None:
    denied = sorted({_describe(a) for a in adapter_calls if not adapter_grants.allows(a)})
    assert denied == [], "a real API server would answer 403 to:\n" + "\n".join(denied)


def test_adapter_manifests_grant_nothing_it_does_not_use(adapter_calls: list[RequestAttributes],
                                                         adapter_grants: Grants) -> None:
    unused = adapter_grants.unused(adapter_calls)
    assert unused == [], "granted but never used:\n" + "\n".join(f"{s}: {v} {g or 'core'}/{r}" for s, g, r, v in unused)


def test_adapter_evidence_covers_authentication_and_authorization(adapter_calls: list[RequestAttributes]) -> None:
    used = {(a.group, a.full_resource, a.verb) for a in adapter_calls if a.is_resource}
    for needed in [("pdscale.io", "disaggregatedautoscalers", "list"), ("coordination.k8s.io", "leases", "get"),
                   ("authentication.k8s.io", "tokenreviews", "create"),
                   ("authorization.k8s.io", "subjectaccessreviews", "create")]:
        assert needed in used, needed
    assert any(a.resource == "configmaps" and a.namespace == "kube-system" for a in adapter_calls)

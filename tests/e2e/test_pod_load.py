"""Scale-down marks the least-loaded pods with a low ``controller.kubernetes.io/pod-deletion-cost``, their load
read from the real Prometheus (running requests per pod, one query) and the pods from the Kubernetes emulator."""

from __future__ import annotations

import pytest

from autoscaler.core.spec import AutoscalerSpec, PoolSpec, TargetRef
from autoscaler.core.types import Pool, PoolDecision
from autoscaler.kube import DELETION_COST, MARKED, KubeClient, KubeScaleTarget
from autoscaler.prometheus import PrometheusMetricsSource
from tests.e2e.conftest import Stack
from tests.helpers.vllm_exporter import ExportedPod, Load

NS = "cost"
# pod -> running requests exported; "cost-d3" runs in the cluster but has no series (counts as busiest);
# "cost-d.2" holds a regex metacharacter
RUNNING = {"cost-d0": 30.0, "cost-d1": 2.0, "cost-d.2": 15.0}
IN_CLUSTER = ["cost-d0", "cost-d1", "cost-d.2", "cost-d3"]


@pytest.mark.parametrize(
    ("remove", "expected_marked"),
    [(1, ["cost-d1"]), (2, ["cost-d1", "cost-d.2"]), (3, ["cost-d1", "cost-d.2", "cost-d0"])],
    ids=["remove-1", "remove-2", "remove-3-unknown-pod-kept"],
)
def test_least_loaded_pods_get_the_lowest_deletion_cost(stack: Stack, remove: int,
                                                         expected_marked: list[str]) -> None:
    for name, running in RUNNING.items():
        stack.exporter.add_pod(ExportedPod(name=name, role="decode", model_name="m", namespace=NS,
                                           load=Load(running=running)))
    stack.exporter.add_pod(ExportedPod(name="other-d0", role="decode", model_name="m", namespace="elsewhere",
                                       load=Load(running=100.0)))
    stack.kube.add_deployment(NS, "decode", len(IN_CLUSTER))
    for name in IN_CLUSTER:
        stack.kube.add_pod(NS, name, {"app": "decode"})
    stack.kube.add_pod(NS, "unrelated", {"app": "prefill"})
    stack.prometheus.wait_for_scrapes("vllm", 2, timeout_s=30)

    source = PrometheusMetricsSource(stack.prometheus.url, timeout_s=5.0)
    assert source.pod_load(NS, Pool.DECODE, IN_CLUSTER) == RUNNING  # one query, per pod
    assert source.pod_load("elsewhere", Pool.DECODE, IN_CLUSTER) == {}  # namespace-scoped

    ref = TargetRef("apps/v1", "Deployment", "decode")
    spec = AutoscalerSpec(prefill=PoolSpec(1, 10, target=TargetRef("apps/v1", "Deployment", "prefill")),
                          decode=PoolSpec(1, 10, target=ref))
    kube = KubeClient.from_config(str(stack.kubeconfig))
    target = KubeScaleTarget(kube, NS, spec, pod_load=source.pod_load)
    n = len(IN_CLUSTER)
    target.scale(PoolDecision(Pool.DECODE, n, n - remove, "ScaleDown", "test"))

    costs = {}
    for name in [*IN_CLUSTER, "unrelated"]:
        pod = stack.kube.get("v1/pods", NS, name)
        assert pod is not None
        ann = pod["metadata"].get("annotations") or {}
        if DELETION_COST in ann:
            assert ann[MARKED] == "true"
            costs[name] = int(ann[DELETION_COST])
    assert sorted(costs, key=costs.__getitem__) == expected_marked  # least loaded = lowest cost
    assert stack.kube.get("apps/v1/deployments", NS, "decode")["spec"]["replicas"] == n - remove  # type: ignore[index]

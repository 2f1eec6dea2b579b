"""autoscaler.run.Runner in-process against the emulator, with a scripted MetricsSource: the policy state survives
a controller restart through the CR status, followers never write, reports are JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client as k8s

from autoscaler.core.policy import PolicyState
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Signals
from autoscaler.kube import KubeClient, KubeSettings
from autoscaler.leader import LeaderElector, LeaseConfig
from autoscaler.run import Runner, RunOptions, make_policy
from tests.helpers.kube_emulator import CR, KubeEmulator


class ScriptedMetrics:
    """MetricsSource with ``refresh``/``view`` like PrometheusMetricsSource, returning fixed latencies."""

    def __init__(self, ttft_s: float | None, itl_s: float | None, error: str | None = None) -> None:
        self.ttft_s, self.itl_s, self.error = ttft_s, itl_s, error
        self.refreshed: list[list[str]] = []
        self.queries_last_refresh = 3

    def refresh(self, specs: Mapping[str, AutoscalerSpec], now_s: float) -> None:
        self.refreshed.append(sorted(specs))

    def view(self, key: str) -> ScriptedMetrics:
        return self

    def observe(self, spec: AutoscalerSpec, now_s: float) -> Signals:
        if self.error:
            return Signals(time_s=now_s, error=self.error)
        return Signals(time_s=now_s, ttft_s=self.ttft_s, itl_s=self.itl_s, ttft_mean_s=self.ttft_s,
                       itl_mean_s=self.itl_s, request_rate_per_s=4.0, prompt_tokens_per_s=4000.0,
                       output_tokens_per_s=800.0)


class RecordingPolicy:
    """The real policy, recording the state each decide() starts from."""

    def __init__(self, spec: AutoscalerSpec, seen: list[Any]) -> None:
        self.inner = make_policy(spec)
        self.name = self.inner.name
        self.seen = seen

    def initial_state(self, spec: AutoscalerSpec) -> Any:
        return self.inner.initial_state(spec)

    def decide(self, observation: Any, state: Any, spec: AutoscalerSpec) -> Any:
        self.seen.append(state)
        return self.inner.decide(observation, state, spec)


@pytest.fixture(scope="module")
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


@pytest.fixture
def kube(emu: KubeEmulator) -> KubeClient:
    cfg = k8s.Configuration()
    cfg.host = emu.url
    cfg.retries = False
    return KubeClient(k8s.ApiClient(cfg), KubeSettings(timeout_s=2.0))


def seed(emu: KubeEmulator, ns: str) -> None:
    emu.add_deployment(ns, "p", 2)
    emu.add_deployment(ns, "d", 2)
    emu.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                 "metadata": {"name": "a", "namespace": ns},
                 "spec": {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "p"},
                                      "minReplicas": 2, "maxReplicas": 8},
                          "decode": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                                     "minReplicas": 2, "maxReplicas": 8},
                          "podStartupSeconds": 30}})


def options(ns: str, **kw: Any) -> RunOptions:
    return RunOptions(namespace=ns, prometheus_url="http://unused", identity="me", lease_namespace=ns, **kw)


def test_policy_state_survives_a_restart(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "restart")
    seen: list[Any] = []
    first = Runner(options("restart"), kube, ScriptedMetrics(2.5, 0.03),
                   policy_factory=lambda spec: RecordingPolicy(spec, seen))
    reports = first.run_pass()
    assert reports[0]["applied"] == ["prefill"]
    persisted = emu.get(CR, "restart", "a")["status"]["policyState"]
    assert persisted["prefill"]["behavior"]["recommendations"]  # something was learned

    # a new process (or a newly elected leader) starts from the status, not from scratch
    second = Runner(options("restart"), kube, ScriptedMetrics(2.5, 0.03),
                    policy_factory=lambda spec: RecordingPolicy(spec, seen))
    second.run_pass()
    assert len(seen) == 2
    assert seen[0] == PolicyState()
    assert seen[1] == PolicyState.from_dict(persisted)


def test_follower_computes_but_never_writes(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "follower")
    other = LeaderElector(kube, LeaseConfig("follower", identity="other", lease_duration_s=30))
    assert other.step()
    me = LeaderElector(kube, LeaseConfig("follower", identity="me", lease_duration_s=30))
    runner = Runner(options("follower"), kube, ScriptedMetrics(2.5, 0.03), elector=me)
    before = emu.get(CR, "follower", "a")
    reports = runner.run_pass()
    assert reports[0]["decision"]["prefill"]["desired_replicas"] > 2  # it computed ...
    assert reports[0]["applied"] == [] and not reports[0]["leader"]
    assert emu.get("apps/v1/deployments", "follower", "p")["spec"]["replicas"] == 2  # ... and wrote nothing
    assert emu.get(CR, "follower", "a") == before
    assert emu.list("v1/events", "follower") == []
    json.dumps(reports)  # --once --json prints these


@pytest.mark.parametrize(
    ("metrics", "condition"),
    [(ScriptedMetrics(None, None, error="prometheus http://p:9090: connection refused"),
      ("ScalingActive", "False", "FailedGetMetrics")),
     (ScriptedMetrics(None, None), ("ScalingActive", "False", "MetricsUnavailable"))],
    ids=["prometheus-down", "no-samples"],
)
def test_missing_metrics_hold_replicas(emu: KubeEmulator, kube: KubeClient, metrics: ScriptedMetrics,
                                       condition: tuple[str, str, str]) -> None:
    ns = f"hold-{condition[2].lower()}"
    seed(emu, ns)
    reports = Runner(options(ns), kube, metrics).run_pass()
    assert reports[0]["applied"] == []
    assert emu.get("apps/v1/deployments", ns, "p")["spec"]["replicas"] == 2
    assert emu.get("apps/v1/deployments", ns, "d")["spec"]["replicas"] == 2
    conds = {c["type"]: c for c in emu.get(CR, ns, "a")["status"]["conditions"]}
    assert (condition[0], conds[condition[0]]["status"], conds[condition[0]]["reason"]) == condition
    assert metrics.refreshed == [[f"{ns}/a"]]  # one refresh for all autoscalers of the pass

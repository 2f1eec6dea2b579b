"""autoscaler.run.Runner in-process against the emulator, with a scripted MetricsSource: the policy state survives
a controller restart through the CR status, followers never write, reports are JSON."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.core.policy import PolicyState
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Pool, PoolDecision, Signals
from autoscaler.kube import KubeClient, KubeSettings
from autoscaler.leader import LeaderElector, LeaseConfig
from autoscaler.prometheus import PrometheusMetricsSource
from autoscaler.run import Runner, RunOptions, make_policy
from autoscaler.telemetry import ControllerTelemetry
from workers.local.kube_emulator import CR, KubeEmulator
from workers.local.net import free_port


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


class HoldPolicy:
    """Keeps every pool where it is, with no state: a pass changes nothing but timestamps."""

    name = "hold"

    def initial_state(self, spec: AutoscalerSpec) -> None:
        return None

    def decide(self, observation: Any, state: None, spec: AutoscalerSpec) -> tuple[Decision, None]:
        def hold(pool: Pool) -> PoolDecision:
            n = observation.replicas(pool).desired
            return PoolDecision(pool, n, n, "DesiredWithinRange", "hold")

        return Decision(observation.time_s, hold(Pool.PREFILL), hold(Pool.DECODE)), None


def seed_many(emu: KubeEmulator, ns: str, n: int) -> None:
    for i in range(n):
        emu.add_deployment(ns, f"p{i}", 2)
        emu.add_deployment(ns, f"d{i}", 2)
        emu.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                     "metadata": {"name": f"a{i}", "namespace": ns},
                     "spec": {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                             "name": f"p{i}"}, "minReplicas": 2, "maxReplicas": 8},
                              "decode": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                            "name": f"d{i}"}, "minReplicas": 2, "maxReplicas": 8},
                              "podStartupSeconds": 30}})


def calls_during(emu: KubeEmulator, action: Callable[[], Any]) -> Counter[str]:
    """Requests the emulator served while ``action`` ran, by 'METHOD kind' (list, scale, status, ...)."""
    before = len(list(emu.requests()))
    action()
    out: Counter[str] = Counter()
    for method, path in list(emu.requests())[before:]:
        if path.endswith("/scale"):
            what = "scale"
        elif path.endswith("/status"):
            what = "status"
        elif path.endswith("/deployments"):
            what = "list-deployments"
        elif path.endswith("/disaggregatedautoscalers"):
            what = "list-autoscalers"
        elif path.endswith(("/horizontalpodautoscalers", "/scaledobjects")):
            what = "list-owners"
        else:
            what = path.rsplit("/", 2)[-2]
        out[f"{method} {what}"] += 1
    return out


def test_one_list_per_kind_and_status_only_on_change(emu: KubeEmulator, kube: KubeClient) -> None:
    seed_many(emu, "informer", 3)
    metrics = ScriptedMetrics(0.3, 0.03)
    runner = Runner(options("informer", workers=4), kube, metrics, policy_factory=lambda spec: HoldPolicy())
    first = calls_during(emu, runner.run_pass)
    # replicas of 6 Deployments from ONE list, no GET of /scale or of the objects; a new status for each CR
    # plus one LIST of HPAs and one of ScaledObjects for the owner check, whatever the number of autoscalers
    assert first == {"GET list-autoscalers": 1, "GET list-deployments": 1, "GET list-owners": 2, "PATCH status": 3}, first
    assert (runner.last_pass.target_lists, runner.last_pass.status_writes) == (1, 3)

    second = calls_during(emu, runner.run_pass)  # nothing but the evaluation time changed: HPA writes nothing
    assert second == {"GET list-autoscalers": 1, "GET list-deployments": 1, "GET list-owners": 2}, second
    assert (runner.last_pass.status_writes, runner.last_pass.status_unchanged) == (0, 3)

    metrics.error = "prometheus http://p:9090: connection refused"  # a condition changes: written
    third = calls_during(emu, runner.run_pass)
    assert third["PATCH status"] == 3, third
    conds = {c["type"]: c["reason"] for c in emu.get(CR, "informer", "a1")["status"]["conditions"]}
    assert conds["ScalingActive"] == "FailedGetMetrics"


def test_scale_rereads_only_the_changed_target_and_persists_new_policy_state(
    emu: KubeEmulator, kube: KubeClient
) -> None:
    seed_many(emu, "changed", 2)
    runner = Runner(options("changed"), kube, ScriptedMetrics(2.5, 0.03))  # TTFT breach: prefill scales up
    calls = calls_during(emu, runner.run_pass)
    # per autoscaler: /scale of prefill re-read right before the write, then written; decode untouched
    assert (calls["GET scale"], calls["PATCH scale"], calls["GET list-deployments"]) == (2, 2, 1), calls
    assert [emu.get("apps/v1/deployments", "changed", f"p{i}")["spec"]["replicas"] > 2 for i in range(2)] == [
        True, True]
    # The next passes settle (current replicas and reasons catch up with the scale); then only the policy state
    # and observed values move every tick, and those are refreshed later, not every tick.
    writes = [calls_during(emu, runner.run_pass)["PATCH status"] for _ in range(3)]
    assert writes[-1] == 0, writes
    state = emu.get(CR, "changed", "a0")["status"]["policyState"]
    runner.options = dataclasses.replace(runner.options, status_refresh_s=1e-9)  # the refresh interval has passed
    calls = calls_during(emu, runner.run_pass)
    assert calls["PATCH status"] == 2 and emu.get(CR, "changed", "a0")["status"]["policyState"] != state


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("namespace", "n_autoscalers", "prometheus_up", "list_fails", "ready"),
    [("ready-empty-prom-down", 0, False, False, True),  # no autoscaler: Prometheus is not needed
     ("ready-empty-prom-up", 0, True, False, True),
     ("ready-one", 1, True, False, True),
     ("ready-prom-down", 1, False, False, False),
     ("ready-list-fails", 0, True, True, False)],
    ids=["zero-autoscalers-prometheus-down", "zero-autoscalers", "one-autoscaler", "prometheus-down",
         "listing-fails"],
)
def test_readiness_after_a_pass(emu: KubeEmulator, kube: KubeClient, namespace: str, n_autoscalers: int,
                                prometheus_up: bool, list_fails: bool, ready: bool) -> None:
    seed_many(emu, namespace, n_autoscalers)
    now = [1000.0]
    telemetry = ControllerTelemetry(ready_max_age_s=60.0, clock=lambda: now[0])
    metrics: Any = ScriptedMetrics(0.3, 0.03) if prometheus_up else PrometheusMetricsSource(
        closed_port_url(), timeout_s=0.5)
    if list_fails:
        emu.add_fault("GET", rf"/namespaces/{namespace}/disaggregatedautoscalers$", status=500)
    Runner(options(namespace), kube, metrics, telemetry=telemetry,
           policy_factory=lambda spec: HoldPolicy()).run_pass()
    assert telemetry.readiness()[0] is ready, telemetry.readiness()
    assert value_of(telemetry, "pdscale_tick_duration_seconds_count") == (0.0 if list_fails else 1.0)
    if ready:
        now[0] += 61.0  # no successful pass since: red
        assert telemetry.readiness() == (False, "last successful tick 61 s ago")


def test_readyz_endpoint_follows_passes(emu: KubeEmulator, kube: KubeClient) -> None:
    now = [1000.0]
    telemetry = ControllerTelemetry(port=0, host="127.0.0.1", ready_max_age_s=30.0, clock=lambda: now[0])
    try:
        url = f"http://127.0.0.1:{telemetry.server.port}/readyz"  # type: ignore[union-attr]
        assert http_status(url) == 503  # nothing done yet
        runner = Runner(options("readyz-empty"), kube, ScriptedMetrics(0.3, 0.03), telemetry=telemetry)
        runner.run_pass()  # zero autoscalers in the namespace
        assert http_status(url) == 200
        assert value_of(telemetry, "pdscale_prometheus_queries_per_tick") == 3.0
        now[0] += 31.0
        assert http_status(url) == 503
        runner.run_pass()
        assert http_status(url) == 200
    finally:
        telemetry.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def value_of(t: ControllerTelemetry, name: str) -> float | None:
    for family in text_string_to_metric_families(t.exposition().decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None

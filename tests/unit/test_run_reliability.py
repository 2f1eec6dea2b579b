"""``pdscale run`` under faults (issue 14 items 3-6), in process against the Kubernetes emulator (real HTTP, the
official client) with a scripted metrics source:

* fencing: a write that could still be in flight after the Lease may have passed to a successor is not sent;
* exit codes and readiness that tell the truth about what could not be evaluated;
* one owner per target (another DisaggregatedAutoscaler, an HPA, a KEDA ScaledObject), a target scaled to 0 by hand;
* timeouts on every call, and a failed status or event write that neither blocks nor undoes a scale.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from autoscaler.kube import KubeClient, KubeSettings
from autoscaler.leader import LeaderElector, LeaseConfig
from autoscaler.run import Runner, RunOptions, _run
from autoscaler.telemetry import ControllerTelemetry
from tests.unit.test_kube_run import HoldPolicy, ScriptedMetrics, seed
from workers.local.kube_emulator import CR, KubeEmulator

BREACH = (2.5, 0.03)  # TTFT p99 2.5 s against 1 s: prefill scales up at once
PREFILL = "apps/v1/deployments"


@pytest.fixture(scope="module")
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


@pytest.fixture
def kube(emu: KubeEmulator) -> Iterator[KubeClient]:
    emu.clear_faults()
    yield client(emu, 0.5)
    emu.clear_faults()


def client(emu: KubeEmulator, timeout_s: float) -> KubeClient:
    cfg = k8s.Configuration()
    cfg.host = emu.url
    cfg.retries = False
    return KubeClient(k8s.ApiClient(cfg), KubeSettings(timeout_s=timeout_s))


def options(ns: str, **kw: Any) -> RunOptions:
    return RunOptions(namespace=ns, prometheus_url="http://unused", identity="me", lease_namespace=ns, **kw)


def replicas(emu: KubeEmulator, ns: str, name: str) -> int:
    obj = emu.get(PREFILL, ns, name)
    assert obj is not None
    return int(obj["spec"]["replicas"])


def conditions(emu: KubeEmulator, ns: str, name: str = "a") -> dict[str, dict[str, Any]]:
    obj = emu.get(CR, ns, name)
    assert obj is not None
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def once(runner: Runner) -> tuple[int, dict[str, Any]]:
    """``pdscale run --once --json`` on an assembled Runner: (exit status, printed JSON)."""
    out = io.StringIO()
    rc = _run(runner, runner.options, runner.elector, out)
    return rc, json.loads(out.getvalue())


# ---------------------------------------------------------------- item 3: fencing


def test_a_write_that_could_outlive_the_lease_is_not_sent() -> None:
    """Leader A renews its 2.4 s Lease, then its reads are slow (0.9 s each, inside their 1 s timeout): when it
    comes to write, the Lease is surely held for less than the write's own timeout. A write sent then (and
    delayed 0.9 s like the reads) would land after a successor could have taken over. It must not be sent."""
    with KubeEmulator() as emu:
        kube = client(emu, 1.0)
        seed(emu, "fence")
        elector = LeaderElector(kube, LeaseConfig("fence", identity="a", lease_duration_s=2.4, retry_period_s=0.2,
                                                  safety_margin_s=0.2))
        renewed_at = time.monotonic()
        assert elector.step()
        for method, path in (("GET", r"/namespaces/fence/deployments$"), ("GET", r"/deployments/p/scale$"),
                             ("PATCH", r"/deployments/p/scale$")):
            emu.add_fault(method, path, status=None, delay_s=0.9)
        runner = Runner(options("fence"), kube, ScriptedMetrics(*BREACH), elector=elector)
        reports = runner.run_pass()

        deadline = renewed_at + 2.4  # from here on a successor may hold the Lease
        time.sleep(max(0.0, deadline + 1.0 - time.monotonic()))  # every delayed request has landed by now
        late = [w for w in emu.applied() if w[0] >= deadline]
        assert late == [], f"writes applied after the Lease could have passed on: {late}"
        assert replicas(emu, "fence", "p") == 2
        assert any("not written" in e and "Lease" in e for e in reports[0]["errors"]), reports[0]
        assert runner.last_pass.writes_fenced >= 1  # the status write was held back too
        assert emu.list("v1/events", "fence") == []


def test_timeouts_longer_than_the_lease_are_refused_at_start(emu: KubeEmulator, tmp_path: Any) -> None:
    """Every write would be fenced: the configuration is refused, naming both flags."""
    proc = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "run", "--kubeconfig", str(emu.kubeconfig(tmp_path / "kubeconfig")),
         "--namespace", "x", "--prometheus-url", "http://127.0.0.1:1", "--once", "--lease-duration-s", "3",
         "--kube-timeout-s", "5"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--kube-timeout-s 5" in proc.stderr and "--lease-duration-s 3" in proc.stderr


# ---------------------------------------------------------------- item 4: exit codes and readiness


@pytest.mark.parametrize(
    ("fault", "metrics", "kind", "text"),
    [
        (("GET", r"/namespaces/{ns}/disaggregatedautoscalers$", 500), ScriptedMetrics(0.3, 0.03), "list", "HTTP 500"),
        (None, ScriptedMetrics(None, None, error="prometheus http://p:9090: connection refused"), "metrics",
         "connection refused"),
        (("PATCH", r"/deployments/p/scale$", 500), ScriptedMetrics(*BREACH), "scale", "HTTP 500"),
        (("GET", r"/namespaces/{ns}/deployments$", 403), ScriptedMetrics(0.3, 0.03), "target", "HTTP 403"),
    ],
    ids=["list-failed", "metrics-failed", "scale-failed", "target-unreadable"],
)
def test_once_exits_non_zero_with_the_reason(emu: KubeEmulator, kube: KubeClient, fault: Any,
                                             metrics: ScriptedMetrics, kind: str, text: str) -> None:
    ns = f"exit-{kind}"
    seed(emu, ns)
    if fault is not None:
        emu.add_fault(fault[0], fault[1].format(ns=ns), status=fault[2], times=10)
    rc, out = once(Runner(options(ns, once=True, json_output=True), kube, metrics))
    assert rc == 1 and out["ok"] is False
    assert any(f["kind"] == kind and text in f["message"] for f in out["failures"]), out["failures"]


def test_once_exits_zero_when_everything_was_evaluated(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "exit-ok")
    rc, out = once(Runner(options("exit-ok", once=True, json_output=True), kube, ScriptedMetrics(*BREACH)))
    assert (rc, out["ok"], out["failures"]) == (0, True, [])
    assert out["autoscalers"][0]["applied"] == ["prefill"]


def test_readyz_turns_red_at_once_when_a_pass_fails(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "ready-red")
    now = [1000.0]
    telemetry = ControllerTelemetry(ready_max_age_s=300.0, clock=lambda: now[0])
    runner = Runner(options("ready-red"), kube, ScriptedMetrics(0.3, 0.03), telemetry=telemetry,
                    policy_factory=lambda spec: HoldPolicy())
    runner.run_pass()
    assert telemetry.readiness()[0] is True
    now[0] += 10.0  # well inside ready_max_age_s: only the failure itself can turn it red
    emu.add_fault("GET", r"/namespaces/ready-red/deployments$", status=500, times=10)  # no target readable
    runner.run_pass()
    ready, why = telemetry.readiness()
    assert not ready and "no autoscaler could be evaluated" in why and "ready-red/a" in why
    emu.clear_faults()
    runner.run_pass()
    assert telemetry.readiness()[0] is True


def test_one_broken_autoscaler_keeps_the_controller_ready_and_is_named(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "ready-one-bad")
    emu.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                 "metadata": {"name": "zero", "namespace": "ready-one-bad"},
                 "spec": {"prefill": {"minReplicas": 0}}})  # scale to zero: refused
    telemetry = ControllerTelemetry()
    runner = Runner(options("ready-one-bad"), kube, ScriptedMetrics(0.3, 0.03), telemetry=telemetry)
    reports = {r["autoscaler"]: r for r in runner.run_pass()}
    assert "scale to zero is not supported" in reports["ready-one-bad/zero"]["error"]
    ready, why = telemetry.readiness()
    assert ready and "1 not evaluated" in why and "ready-one-bad/zero: spec:" in why


# ---------------------------------------------------------------- item 5: one owner per target


def hpa(ns: str, name: str, target: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": 10}}


def test_an_hpa_on_the_target_stops_scaling_with_one_event(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "own-hpa")
    emu.put("autoscaling/v2/horizontalpodautoscalers", hpa("own-hpa", "llama-hpa", "p"))
    runner = Runner(options("own-hpa"), kube, ScriptedMetrics(*BREACH))
    for _ in range(3):
        report = runner.run_pass()[0]
    assert replicas(emu, "own-hpa", "p") == 2  # the breach would have scaled it
    assert report["failures"][0]["kind"] == "owner"
    conds = conditions(emu, "own-hpa")
    assert (conds["ExclusiveOwner"]["status"], conds["ExclusiveOwner"]["reason"]) == ("False", "AmbiguousOwner")
    assert "HorizontalPodAutoscaler llama-hpa" in conds["ExclusiveOwner"]["message"]
    assert conds["ScalingActive"]["reason"] == "AmbiguousOwner"
    events = [e for e in emu.list("v1/events", "own-hpa") if e["reason"] == "AmbiguousOwner"]
    assert len(events) == 1, "one event per new set of owners, not one per tick"


def test_two_autoscalers_on_one_target_both_stop_but_advisory_does_not_count(emu: KubeEmulator,
                                                                             kube: KubeClient) -> None:
    seed(emu, "own-two")
    twin = emu.get(CR, "own-two", "a")
    assert twin is not None
    twin = {"apiVersion": twin["apiVersion"], "kind": twin["kind"],
            "metadata": {"name": "b", "namespace": "own-two"}, "spec": twin["spec"]}
    emu.put(CR, twin)
    runner = Runner(options("own-two"), kube, ScriptedMetrics(*BREACH))
    reports = {r["autoscaler"]: r for r in runner.run_pass()}
    assert replicas(emu, "own-two", "p") == 2
    assert "DisaggregatedAutoscaler own-two/b" in reports["own-two/a"]["error"]
    assert "DisaggregatedAutoscaler own-two/a" in reports["own-two/b"]["error"]

    twin["spec"] = {**twin["spec"], "mode": "advisory"}  # b only reports: a owns the target alone
    emu.put(CR, twin)
    reports = {r["autoscaler"]: r for r in runner.run_pass()}
    assert reports["own-two/a"]["applied"] == ["prefill"] and reports["own-two/b"]["applied"] == []
    assert conditions(emu, "own-two")["ExclusiveOwner"]["status"] == "True"


def test_a_keda_scaled_object_on_the_target_stops_scaling(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "own-keda")
    emu.put("keda.sh/v1alpha1/scaledobjects", {  # KEDA's defaults: kind Deployment, apiVersion apps/v1
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "q", "namespace": "own-keda"},
        "spec": {"scaleTargetRef": {"name": "d"}, "triggers": [{"type": "prometheus"}]}})
    report = Runner(options("own-keda"), kube, ScriptedMetrics(*BREACH)).run_pass()[0]
    assert "decode target Deployment/d is also scaled by ScaledObject q" in report["error"]
    assert replicas(emu, "own-keda", "p") == 2


def test_without_keda_installed_the_check_degrades_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with KubeEmulator(absent=frozenset({"keda.sh/v1alpha1/scaledobjects"})) as emu:
        kube = client(emu, 0.5)
        seed(emu, "no-keda")
        runner = Runner(options("no-keda"), kube, ScriptedMetrics(*BREACH))
        with caplog.at_level(logging.INFO, logger="pdscale.owners"):
            for _ in range(3):
                runner.run_pass()
        assert replicas(emu, "no-keda", "p") > 2  # scaling goes on
        owner = conditions(emu, "no-keda")["ExclusiveOwner"]
        assert owner["status"] == "True" and "KEDA not installed" in owner["message"]
        asked = [p for m, p in emu.requests() if p.endswith("/scaledobjects")]
        assert len(asked) == 1, "a missing CRD is re-checked every few minutes, not every tick"
        assert len([r for r in caplog.records if "scaledobjects" in r.getMessage()]) == 1


def test_rbac_forbidding_hpa_reads_is_a_condition_not_a_crash(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "own-403")
    emu.add_fault("GET", r"/namespaces/own-403/horizontalpodautoscalers$", status=403, times=100)
    report = Runner(options("own-403"), kube, ScriptedMetrics(*BREACH)).run_pass()[0]
    assert report["applied"] == ["prefill"] and report["failures"] == []
    owner = conditions(emu, "own-403")["ExclusiveOwner"]
    assert (owner["status"], owner["reason"]) == ("Unknown", "OwnershipUnverified")
    assert "HTTP 403" in owner["message"] and "grant list on autoscaling/horizontalpodautoscalers" in owner["message"]


def test_a_target_scaled_to_zero_by_hand_is_left_alone(emu: KubeEmulator, kube: KubeClient) -> None:
    seed(emu, "zero")
    emu.add_deployment("zero", "p", 0)  # someone stopped the prefill pool
    runner = Runner(options("zero"), kube, ScriptedMetrics(*BREACH))
    for _ in range(2):
        report = runner.run_pass()[0]
    assert replicas(emu, "zero", "p") == 0 and replicas(emu, "zero", "d") == 2
    assert report["decision"]["prefill"]["reason"] == "ScalingDisabled" and report["failures"] == []
    active = conditions(emu, "zero")["ScalingActive"]
    assert (active["status"], active["reason"]) == ("False", "ScalingDisabled")
    assert "scaled to 0 by hand" in active["message"]

    emu.add_deployment("zero", "p", 2)  # scaled up again by hand: pdscale takes over
    assert runner.run_pass()[0]["applied"] == ["prefill"]


def test_opt_in_consent_annotation(emu: KubeEmulator, kube: KubeClient) -> None:
    """With --require-target-annotation an autoscaler scales only targets that name it in pdscale.io/autoscaler."""
    seed(emu, "consent")
    runner = Runner(options("consent", require_target_annotation=True), kube, ScriptedMetrics(*BREACH))
    report = runner.run_pass()[0]
    assert report["failures"][0]["kind"] == "owner" and replicas(emu, "consent", "p") == 2
    assert "not annotated pdscale.io/autoscaler=a" in report["error"]
    assert conditions(emu, "consent")["ExclusiveOwner"]["reason"] == "TargetNotConsenting"
    for name in ("p", "d"):
        obj = emu.get(PREFILL, "consent", name)
        assert obj is not None
        obj["metadata"]["annotations"] = {"pdscale.io/autoscaler": "a"}
        emu.put(PREFILL, obj)
    assert runner.run_pass()[0]["applied"] == ["prefill"]


# ---------------------------------------------------------------- item 6: timeouts everywhere

DELAY_S = 3.0  # six times the client's 0.5 s timeout


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [("PATCH", r"/deployments/p/scale$", "scale"),
     ("GET", r"/namespaces/{ns}/disaggregatedautoscalers$", "list"),
     ("GET", r"/namespaces/{ns}/deployments$", "target")],
    ids=["patch-scale", "list-autoscalers", "list-targets"],
)
def test_a_hanging_call_is_cut_at_its_timeout(emu: KubeEmulator, kube: KubeClient, method: str, path: str,
                                              kind: str) -> None:
    ns = f"slow-{kind}"
    seed(emu, ns)
    emu.add_fault(method, path.format(ns=ns), status=None, delay_s=DELAY_S, times=5)
    runner = Runner(options(ns), kube, ScriptedMetrics(*BREACH))
    started = time.monotonic()
    runner.run_pass()
    took_s = time.monotonic() - started
    assert took_s < DELAY_S, f"the pass waited {took_s:.1f} s on a call with a 0.5 s timeout"
    assert any(f["kind"] == kind for f in runner.last_pass.failures), runner.last_pass.failures


@pytest.mark.parametrize("method", ["GET", "PUT"], ids=["lease-get", "lease-update"])
def test_a_hanging_lease_call_is_cut_and_leadership_expires(emu: KubeEmulator, kube: KubeClient,
                                                            method: str) -> None:
    now = [100.0]
    elector = LeaderElector(kube, LeaseConfig("slow-lease", name=f"l-{method.lower()}", identity="a",
                                              lease_duration_s=10.0), monotonic=lambda: now[0])
    assert elector.step()
    emu.add_fault(method, rf"/leases/l-{method.lower()}$", status=None, delay_s=DELAY_S, times=5)
    started = time.monotonic()
    elector.step()
    assert time.monotonic() - started < DELAY_S
    assert elector.last_error is not None and "Timeout" in elector.last_error
    assert elector.is_leader()  # still inside the lease it renewed ...
    now[0] += 10.0
    assert not elector.is_leader() and not elector.step()  # ... and out of it once it could not renew


@pytest.mark.parametrize(
    ("method", "path", "status", "delay_s"),
    [("PATCH", r"/disaggregatedautoscalers/a/status$", 500, 0.0),
     ("PATCH", r"/disaggregatedautoscalers/a/status$", None, DELAY_S),
     ("POST", r"/namespaces/{ns}/events$", 500, 0.0),
     ("POST", r"/namespaces/{ns}/events$", None, DELAY_S)],
    ids=["status-500", "status-hangs", "event-500", "event-hangs"],
)
def test_a_failed_status_or_event_write_neither_blocks_nor_undoes_a_scale(
    emu: KubeEmulator, kube: KubeClient, method: str, path: str, status: int | None, delay_s: float
) -> None:
    ns = f"write-{method.lower()}-{status or 'slow'}"
    seed(emu, ns)
    emu.add_fault(method, path.format(ns=ns), status=status, delay_s=delay_s, times=2)
    runner = Runner(options(ns), kube, ScriptedMetrics(*BREACH))
    started = time.monotonic()
    report = runner.run_pass()[0]
    assert time.monotonic() - started < DELAY_S
    scaled_to = replicas(emu, ns, "p")
    assert report["applied"] == ["prefill"] and scaled_to > 2
    runner.metrics = ScriptedMetrics(0.3, 0.03)  # the breach is over
    report = runner.run_pass()[0]  # the next pass: nothing undone, nothing redone
    assert replicas(emu, ns, "p") == scaled_to and report["applied"] == []

"""autoscaler.kube against the kmock-based emulator over HTTP, driven by the official kubernetes client."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client as k8s

from autoscaler.controller import TickResult
from autoscaler.core.spec import SLO, AutoscalerSpec, Mode, PoolSpec, TargetRef
from autoscaler.core.types import (
    Decision,
    Observation,
    Pool,
    PoolDecision,
    PoolReplicas,
    PoolSignals,
    Signals,
)
from autoscaler.kube import (
    DELETION_COST,
    MARKED,
    AutoscalerObject,
    EventRecorder,
    KubeClient,
    KubeScaleTarget,
    KubeSettings,
    ScaleError,
    StaleDecisionError,
    StatusStateStore,
    TargetCache,
    build_status,
    list_autoscalers,
    status_changed,
    status_write_due,
    write_status,
)
from metrics_adapter.selectors import parse_selector
from workers.local.kube_emulator import CR, KubeEmulator

NS = "llm"
KINDS = {
    "Deployment": ("apps/v1", "apps/v1/deployments"),
    "StatefulSet": ("apps/v1", "apps/v1/statefulsets"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io/v1", "leaderworkerset.x-k8s.io/v1/leaderworkersets"),
    "ModelPool": ("serving.example.com/v1alpha1", "serving.example.com/v1alpha1/modelpools"),  # via discovery
}


@pytest.fixture(scope="module")
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


@pytest.fixture
def kube(emu: KubeEmulator) -> KubeClient:
    emu.clear_faults()
    cfg = k8s.Configuration()
    cfg.host = emu.url
    cfg.retries = False
    return KubeClient(k8s.ApiClient(cfg), KubeSettings(timeout_s=1.0, conflict_retries=3, retry_base_s=0.001))


def spec_for(kind: str, prefill: str, decode: str) -> AutoscalerSpec:
    api = KINDS[kind][0]
    return AutoscalerSpec(
        prefill=PoolSpec(min_replicas=1, max_replicas=10, target=TargetRef(api, kind, prefill)),
        decode=PoolSpec(min_replicas=1, max_replicas=10, target=TargetRef(api, kind, decode)),
    )


def pool_decision(pool: Pool, current: int, desired: int) -> PoolDecision:
    return PoolDecision(pool, current, desired, "TTFTAboveTarget", "test")


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_read_and_scale_each_kind(emu: KubeEmulator, kube: KubeClient, kind: str) -> None:
    p, d = f"{kind.lower()}-p", f"{kind.lower()}-d"
    emu.add_deployment(NS, p, 2, kind=kind, ready=1)
    emu.add_deployment(NS, d, 3, kind=kind)
    target = KubeScaleTarget(kube, NS, spec_for(kind, p, d))
    assert target.read_replicas() == {Pool.PREFILL: PoolReplicas(2, 1), Pool.DECODE: PoolReplicas(3, 3)}
    target.scale(pool_decision(Pool.PREFILL, 2, 5))
    assert emu.get(KINDS[kind][1], NS, p)["spec"]["replicas"] == 5
    assert target.read_replicas()[Pool.PREFILL].desired == 5


def test_unknown_kind_is_an_error_naming_it(emu: KubeEmulator, kube: KubeClient) -> None:
    spec = AutoscalerSpec(prefill=PoolSpec(target=TargetRef("serving.example.com/v1alpha1", "Nope", "x")),
                          decode=PoolSpec(target=TargetRef("serving.example.com/v1alpha1", "Nope", "x")))
    with pytest.raises(ScaleError, match=r"kind Nope not served by serving\.example\.com/v1alpha1"):
        KubeScaleTarget(kube, NS, spec).read_replicas()


@pytest.mark.parametrize(("namespace", "expected"), [(NS, ["llm/bad", "llm/good"]), (None, ["llm/bad", "llm/good",
                                                                                           "other/elsewhere"])],
                         ids=["one-namespace", "all-namespaces"])
def test_list_autoscalers_parses_each_and_isolates_errors(emu: KubeEmulator, kube: KubeClient,
                                                          namespace: str | None, expected: list[str]) -> None:
    for ns, name, spec in (
        (NS, "good", {"prefill": {"maxReplicas": 3}}),
        (NS, "bad", {"decode": {"minReplicas": 4, "maxReplicas": 2}}),
        ("other", "elsewhere", {}),
    ):
        emu.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                     "metadata": {"name": name, "namespace": ns}, "spec": spec})
    objs = [o for o in list_autoscalers(kube, namespace) if o.name in ("good", "bad", "elsewhere")]
    assert [o.key for o in objs] == expected
    by_name = {o.name: o for o in objs}
    assert by_name["good"].spec is not None and by_name["good"].spec.prefill.max_replicas == 3
    assert by_name["bad"].spec is None
    assert by_name["bad"].error is not None and "spec.decode.minReplicas" in by_name["bad"].error
    assert "DisaggregatedAutoscaler llm/bad" in by_name["bad"].error


def _scale_writes(emu: KubeEmulator, name: str) -> int:
    return sum(1 for m, path in emu.requests() if m in ("PATCH", "PUT") and path.endswith(f"/{name}/scale"))


@pytest.mark.parametrize(
    ("conflicts", "ok"), [(1, True), (3, True), (4, False)], ids=["one-409", "three-409", "retries-exhausted"]
)
def test_conflict_retry_is_bounded(emu: KubeEmulator, kube: KubeClient, conflicts: int, ok: bool) -> None:
    name = f"conflict-{conflicts}"
    emu.add_deployment(NS, name, 2)
    emu.add_fault("PATCH", rf"/deployments/{name}/scale$", status=409, times=conflicts)
    sleeps: list[float] = []
    target = KubeScaleTarget(
        kube, NS, spec_for("Deployment", name, name), rng=random.Random(1), sleep=sleeps.append
    )
    if ok:
        target.scale(pool_decision(Pool.PREFILL, 2, 4))
        assert emu.get("apps/v1/deployments", NS, name)["spec"]["replicas"] == 4
        assert target.conflicts == conflicts
    else:
        with pytest.raises(ScaleError, match="409"):
            target.scale(pool_decision(Pool.PREFILL, 2, 4))
        assert emu.get("apps/v1/deployments", NS, name)["spec"]["replicas"] == 2
    # full jitter within the doubling bound
    assert all(0 <= s <= 0.001 * 2**i for i, s in enumerate(sleeps))


def test_real_resource_version_conflict_is_retried(emu: KubeEmulator, kube: KubeClient) -> None:
    """Another writer bumps the resourceVersion between our read and our write (not an injected 409)."""
    name = "rv-race"
    emu.add_deployment(NS, name, 2)
    target = KubeScaleTarget(kube, NS, spec_for("Deployment", name, name), sleep=lambda s: None)
    real_write = target._write_scale
    raced: list[bool] = []

    def racing_write(ref: TargetRef, replicas: int, rv: str) -> None:
        if not raced:
            raced.append(True)
            obj = emu.get("apps/v1/deployments", NS, name)
            obj["metadata"]["labels"]["touched"] = "yes"  # same replicas, new resourceVersion
            emu.put("apps/v1/deployments", obj)
        real_write(ref, replicas, rv)

    target._write_scale = racing_write  # type: ignore[method-assign]
    target.scale(pool_decision(Pool.PREFILL, 2, 3))
    assert target.conflicts == 1
    assert emu.get("apps/v1/deployments", NS, name)["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("on_target", "decided_from", "desired", "error", "writes"),
    [
        (4, 2, 4, None, 0),  # someone (a previous leader) already did it: nothing written twice
        (3, 2, 4, StaleDecisionError, 0),  # moved elsewhere: decision is stale, dropped
        (2, 2, 4, None, 1),
    ],
    ids=["already-at-desired", "stale-decision", "normal"],
)
def test_never_scales_twice(
    emu: KubeEmulator,
    kube: KubeClient,
    on_target: int,
    decided_from: int,
    desired: int,
    error: type[Exception] | None,
    writes: int,
) -> None:
    name = f"twice-{on_target}-{decided_from}"
    emu.add_deployment(NS, name, on_target)
    target = KubeScaleTarget(kube, NS, spec_for("Deployment", name, name))
    before = _scale_writes(emu, name)
    if error:
        with pytest.raises(error):
            target.scale(pool_decision(Pool.PREFILL, decided_from, desired))
    else:
        target.scale(pool_decision(Pool.PREFILL, decided_from, desired))
    assert _scale_writes(emu, name) - before == writes


@pytest.mark.parametrize(
    ("method", "status", "delay_s", "match"),
    [("GET", 500, 0.0, "HTTP 500"), ("PATCH", 500, 0.0, "HTTP 500"), ("GET", None, 2.5, "Timeout")],
    ids=["get-500", "patch-500", "get-timeout"],
)
def test_api_failures_raise_scale_error(
    emu: KubeEmulator, kube: KubeClient, method: str, status: int | None, delay_s: float, match: str
) -> None:
    name = f"fail-{method.lower()}-{status}"
    emu.add_deployment(NS, name, 2)
    emu.add_fault(method, rf"/deployments/{name}/scale$", status=status, delay_s=delay_s, times=3)
    target = KubeScaleTarget(kube, NS, spec_for("Deployment", name, name))
    with pytest.raises(ScaleError, match=match):
        target.scale(pool_decision(Pool.PREFILL, 2, 4))
    emu.clear_faults()


def test_scale_down_marks_least_loaded_pods(emu: KubeEmulator, kube: KubeClient) -> None:
    name = "cost"
    emu.add_deployment(NS, name, 4)
    loads = {"cost-a": 7.0, "cost-b": 0.0, "cost-c": 3.0, "cost-d": 1.0}
    for pod in loads:
        emu.add_pod(NS, pod, {"app": name})
    emu.add_pod(NS, "unrelated", {"app": "other"})
    stale = emu.get("v1/pods", NS, "cost-a")
    stale["metadata"]["annotations"] = {DELETION_COST: "-1000", MARKED: "true"}  # ours, from an earlier attempt
    emu.put("v1/pods", stale)
    users = emu.get("v1/pods", NS, "cost-c")
    users["metadata"]["annotations"] = {DELETION_COST: "-5"}  # a user's own preference: left alone
    emu.put("v1/pods", users)
    seen: list[tuple[str, Pool, list[str]]] = []

    def pod_load(ns: str, pool: Pool, pods: list[str]) -> dict[str, float]:
        seen.append((ns, pool, sorted(pods)))
        return {p: loads[p] for p in pods}

    target = KubeScaleTarget(kube, NS, spec_for("Deployment", name, name), pod_load=pod_load)
    target.scale(pool_decision(Pool.PREFILL, 4, 2))
    assert seen == [(NS, Pool.PREFILL, sorted(loads))]
    costs = {
        p: (emu.get("v1/pods", NS, p)["metadata"].get("annotations") or {}).get(DELETION_COST) for p in loads
    }
    assert costs == {"cost-b": "-1000", "cost-d": "-999", "cost-a": None, "cost-c": "-5"}
    marked = {p for p in loads if MARKED in (emu.get("v1/pods", NS, p)["metadata"].get("annotations") or {})}
    assert marked == {"cost-b", "cost-d"}
    assert emu.get("apps/v1/deployments", NS, name)["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("starting", "desired", "marked"),
    [(2, 4, set()), (1, 3, {"pods-b"}), (2, 3, {"pods-b"}), (0, 2, {"pods-b", "pods-d"})],
    ids=["cancel-only-starting", "one-starting-one-ready", "two-starting-one-ready", "none-starting"],
)
def test_scale_down_marks_only_what_the_starting_pods_do_not_cover(
    emu: KubeEmulator, kube: KubeClient, starting: int, desired: int, marked: set[str]
) -> None:
    """The ReplicaSet removes pods that are not ready before any ready pod, whatever their deletion cost: a
    scale-down that cancels starting pods must not mark ready ones (their marks would pick the wrong victims of
    a later scale-down), and one that goes further marks only the difference."""
    name = f"pods-{starting}-{desired}"
    emu.add_deployment(NS, name, 4 + starting)
    loads = {"pods-a": 7.0, "pods-b": 0.0, "pods-c": 3.0, "pods-d": 1.0}
    for pod in loads:
        emu.add_pod(NS, f"{pod}-{name}", {"app": name})
    for i in range(starting):
        emu.add_pod(NS, f"new-{i}-{name}", {"app": name}, ready=False)
    asked: list[list[str]] = []

    def pod_load(ns: str, pool: Pool, pods: list[str]) -> dict[str, float]:
        asked.append(sorted(pods))
        return {p: loads[p.removesuffix(f"-{name}")] for p in pods if p.startswith("pods-")}

    target = KubeScaleTarget(kube, NS, spec_for("Deployment", name, name), pod_load=pod_load)
    target.scale(pool_decision(Pool.PREFILL, 4 + starting, desired))
    got = {
        p["metadata"]["name"].removesuffix(f"-{name}")
        for p in emu.list("v1/pods", NS)
        if MARKED in (p["metadata"].get("annotations") or {}) and p["metadata"]["name"].endswith(f"-{name}")
    }
    assert got == marked
    assert all(not any(n.startswith("new-") for n in pods) for pods in asked)  # starting pods are never ranked
    assert emu.get("apps/v1/deployments", NS, name)["spec"]["replicas"] == desired


def _obj(emu: KubeEmulator, name: str, status: dict | None = None) -> AutoscalerObject:
    raw = emu.put(
        CR,
        {
            "apiVersion": "pdscale.io/v1alpha1",
            "kind": "DisaggregatedAutoscaler",
            "metadata": {"name": name, "namespace": NS},
            "spec": {},
            "status": status or {},
        },
    )
    return AutoscalerObject(NS, name, raw["metadata"]["uid"], 1, raw, AutoscalerSpec())


def _result(
    ttft: float | None,
    itl: float | None,
    *,
    error: str | None = None,
    reasons: tuple[str, str] = ("WithinTarget", "WithinTarget"),
    applied: tuple[Pool, ...] = (),
    errors: tuple[str, ...] = (),
) -> TickResult:
    sig = Signals(
        time_s=100.0,
        ttft_s=ttft,
        itl_s=itl,
        request_rate_per_s=5.0,
        error=error,
        decode=PoolSignals(running_requests=12.0),
    )
    obs = Observation(100.0, sig, PoolReplicas(2, 2), PoolReplicas(3, 2))
    dec = Decision(
        100.0,
        PoolDecision(Pool.PREFILL, 2, 4 if Pool.PREFILL in applied else 2, reasons[0], "m"),
        PoolDecision(Pool.DECODE, 3, 3, reasons[1], "m"),
    )
    return TickResult(obs, dec, applied, errors)


def _conds(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            _result(0.5, 0.02),
            {
                "AbleToScale": ("True", "ReadyForNewScale"),
                "ScalingActive": ("True", "ValidMetricFound"),
                "ScalingLimited": ("False", "DesiredWithinRange"),
                "SLOMet": ("True", "WithinTarget"),
            },
        ),
        (
            _result(2.0, 0.02, reasons=("TTFTAboveTarget", "WithinTarget"), applied=(Pool.PREFILL,)),
            {"AbleToScale": ("True", "SucceededRescale"), "SLOMet": ("False", "TTFTAboveTarget")},
        ),
        (_result(0.5, 0.09), {"SLOMet": ("False", "ITLAboveTarget")}),
        (
            _result(
                None,
                None,
                error="prometheus http://x: connection refused",
                reasons=("MetricsUnavailable",) * 2,
            ),
            {"ScalingActive": ("False", "FailedGetMetrics"), "SLOMet": ("Unknown", "MetricsUnavailable")},
        ),
        (_result(None, None), {"ScalingActive": ("False", "MetricsUnavailable")}),
        (
            _result(0.5, 0.02, reasons=("TooManyReplicas", "WithinTarget")),
            {"ScalingLimited": ("True", "TooManyReplicas")},
        ),
        (
            _result(0.5, 0.02, reasons=("CappedByBudget", "CappedByBudget")),
            {"ScalingLimited": ("True", "CappedByBudget")},
        ),
        (_result(0.5, 0.02, errors=("prefill: HTTP 500",)), {"AbleToScale": ("False", "FailedUpdateScale")}),
        (
            _result(0.5, 0.02, reasons=("ScaleDownStabilized", "WithinTarget")),
            {"AbleToScale": ("True", "ScaleDownStabilized")},
        ),
    ],
    ids=[
        "healthy",
        "scaled-up",
        "itl-breach",
        "prometheus-down",
        "no-samples",
        "at-max",
        "budget",
        "write-failed",
        "stabilized",
    ],
)
def test_status_conditions(
    emu: KubeEmulator, result: TickResult, expected: dict[str, tuple[str, str]]
) -> None:
    status = build_status(_obj(emu, "conds"), result=result, scaled=bool(result.applied), now_iso="T1")
    got = _conds(status)
    assert {k: got[k] for k in expected} == expected
    assert set(got) == {"AbleToScale", "ScalingActive", "ScalingLimited", "SLOMet", "ExclusiveOwner"}
    assert status["prefill"]["desiredReplicas"] == result.decision.prefill.desired_replicas
    assert status["decode"] == {
        "currentReplicas": 3,
        "readyReplicas": 2,
        "desiredReplicas": 3,
        "reason": result.decision.decode.reason,
        "message": "m",
    }
    assert ("lastScaleTime" in status) == bool(result.applied)


def test_condition_transition_time_kept_while_status_unchanged(emu: KubeEmulator) -> None:
    first = build_status(_obj(emu, "trans"), result=_result(0.5, 0.02), now_iso="T1")
    second = build_status(_obj(emu, "trans", first), result=_result(0.5, 0.02), now_iso="T2")
    third = build_status(_obj(emu, "trans", second), result=_result(3.0, 0.02), now_iso="T3")
    slo = [next(c for c in s["conditions"] if c["type"] == "SLOMet") for s in (first, second, third)]
    assert [c["lastTransitionTime"] for c in slo] == ["T1", "T1", "T3"]
    assert [c["status"] for c in slo] == ["True", "True", "False"]


@pytest.mark.parametrize(
    ("spec", "error", "reason"),
    [
        (None, "spec.prefill.maxReplicas: must be >= minReplicas", "InvalidSpec"),
        (AutoscalerSpec(), "get Deployment/x scale: HTTP 500", "FailedGetScale"),
    ],
    ids=["invalid-spec", "scale-read-failed"],
)
def test_status_without_result(
    emu: KubeEmulator, spec: AutoscalerSpec | None, error: str, reason: str
) -> None:
    raw = _obj(emu, "noresult").raw
    obj = AutoscalerObject(NS, "noresult", "u", 3, raw, spec, error if spec is None else None)
    status = build_status(obj, result=None, error=error)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["AbleToScale"]["status"] == "False"
    assert conds["AbleToScale"]["reason"] == reason
    assert error in conds["AbleToScale"]["message"]
    assert conds["AbleToScale"]["observedGeneration"] == 3


def test_status_and_policy_state_persist_through_the_api(emu: KubeEmulator, kube: KubeClient) -> None:
    from autoscaler.core.latency import LatencyProfile  # noqa: F401  (the policy needs a profile type)
    from autoscaler.core.policy import PolicyState

    class FakePolicy:  # a policy whose state offers to_dict/from_dict, as PdscalePolicy's does
        def initial_state(self, spec: AutoscalerSpec) -> PolicyState:
            return PolicyState()

    state = PolicyState(missing_since_s=42.0)
    store = StatusStateStore(FakePolicy(), AutoscalerSpec(), None)
    store.save(state)
    obj = _obj(emu, "persist")
    write_status(kube, obj, build_status(obj, result=_result(0.5, 0.02), state=store.to_dict()))
    stored = emu.get(CR, NS, "persist")
    assert stored["spec"] == {}  # the status subresource touches status only
    restored = StatusStateStore(FakePolicy(), AutoscalerSpec(), stored["status"]["policyState"]).load()
    assert restored == state


def test_events_one_per_scaled_pool_and_failure(emu: KubeEmulator, kube: KubeClient) -> None:
    obj = _obj(emu, "events")
    before = len(emu.list("v1/events", NS))
    sent = EventRecorder(kube, "me").for_tick(
        obj,
        _result(
            2.0,
            0.02,
            reasons=("TTFTAboveTarget", "WithinTarget"),
            applied=(Pool.PREFILL,),
            errors=("decode: HTTP 500",),
        ),
    )
    events = emu.list("v1/events", NS)[before:]
    assert sent == 2
    assert [(e["type"], e["reason"]) for e in events] == [
        ("Normal", "SuccessfulRescale"),
        ("Warning", "FailedRescale"),
    ]
    assert "TTFTAboveTarget" in events[0]["message"] and "new size 4" in events[0]["message"]
    assert events[0]["involvedObject"]["kind"] == "DisaggregatedAutoscaler"


def test_advisory_mode_reported(emu: KubeEmulator) -> None:
    obj = _obj(emu, "adv")
    obj = AutoscalerObject(NS, "adv", obj.uid, 1, obj.raw, AutoscalerSpec(mode=Mode.ADVISORY))
    status = build_status(obj, result=_result(0.5, 0.02), dry_run=True)
    assert _conds(status)["AbleToScale"] == ("True", "Advisory")


def test_slo_message_names_percentiles(emu: KubeEmulator) -> None:
    obj = _obj(emu, "pct")
    spec = AutoscalerSpec(ttft=SLO(0.95, 0.8), itl=SLO(0.9, 0.04))
    obj = AutoscalerObject(NS, "pct", obj.uid, 1, obj.raw, spec)
    slo = next(c for c in build_status(obj, result=_result(0.5, 0.02))["conditions"] if c["type"] == "SLOMet")
    assert "TTFT p95" in slo["message"] and "ITL p90" in slo["message"]


# ---- the emulator's label selectors (the scale selector is matched by them)


@pytest.mark.parametrize(
    ("selector", "labels", "ok"),
    [
        ("app=a", {"app": "a"}, True),
        ("app==a,role=prefill", {"app": "a", "role": "decode"}, False),
        ("app!=a", {"app": "b"}, True),
        ("app in (a, b),!canary", {"app": "b"}, True),
        ("app notin (a,b)", {"app": "b"}, False),
        ("tier", {}, False),
        ("", {"x": "y"}, True),
    ],
    ids=["eq", "and", "neq", "set-in-not-exists", "notin", "exists", "empty"],
)
def test_selector_semantics(selector: str, labels: dict[str, str], ok: bool) -> None:
    assert parse_selector(selector).matches(labels) is ok


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]([a-z0-9.-]{0,7}[a-z0-9])?", fullmatch=True),  # apimachinery: ends alphanumeric
        st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True),
        max_size=5,
    )
)
def test_selector_of_labels_matches_them(labels: dict[str, str]) -> None:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    assert parse_selector(selector).matches(labels)
    if labels:
        k = next(iter(labels))
        assert not parse_selector(selector).matches({**labels, k: labels[k] + "x"})


@pytest.mark.parametrize(
    ("param", "selector", "named"),
    [("labelSelector", "app in (a", "missing ')'"), ("labelSelector", "a.=b", "a."),
     ("fieldSelector", "status.phase~Running", "status.phase~Running")],
    ids=["unclosed-set", "bad-key", "bad-field-term"],
)
def test_bad_selector_is_a_400_naming_it(emu: KubeEmulator, kube: KubeClient, param: str, selector: str,
                                         named: str) -> None:  # fmt: skip
    """As the API server answers: the client's mistake is a 400 with the reason, not a 500 or a broken watch."""
    for watch in (False, True):
        resp = requests.get(f"{emu.url}/api/v1/namespaces/{NS}/pods",
                            params={param: selector, **({"watch": "true"} if watch else {})}, timeout=5)  # fmt: skip
        assert resp.status_code == 400, (watch, resp.status_code, resp.text)
        assert named in resp.json()["message"]


@pytest.mark.parametrize(
    ("previous", "new", "changed"),
    [({"lastEvaluationTime": "t1", "a": 1}, {"lastEvaluationTime": "t2", "a": 1}, False),
     ({"a": 1}, {"a": 2}, True),
     ({"a": 1, "kept": 3}, {"a": 1}, False),  # keys not written are left alone by a merge patch
     ({"c": [{"x": 1}]}, {"c": ({"x": 1},)}, False),  # tuples compare as the stored lists
     ({}, {"lastEvaluationTime": "t"}, False),
     ({"policyState": {"t": 1.0}}, {"policyState": {"t": 2.0}}, True)],
    ids=["timestamp-only", "value", "unwritten-key", "tuple-vs-list", "only-timestamp-new", "policy-state"],
)
def test_status_changed(previous: dict, new: dict, changed: bool) -> None:
    assert status_changed(previous, new) is changed


T0 = "2026-01-01T00:00:00Z"
T0_S = 1767225600.0


@pytest.mark.parametrize(
    ("previous", "new", "age_s", "due"),
    [({"lastEvaluationTime": T0, "a": 1}, {"lastEvaluationTime": "t2", "a": 1}, 500.0, False),
     ({"lastEvaluationTime": T0, "a": 1}, {"lastEvaluationTime": "t2", "a": 2}, 1.0, True),
     ({"lastEvaluationTime": T0, "observed": {"ttftSeconds": 0.4}},
      {"lastEvaluationTime": "t2", "observed": {"ttftSeconds": 0.5}}, 10.0, False),
     ({"lastEvaluationTime": T0, "observed": {"ttftSeconds": 0.4}},
      {"lastEvaluationTime": "t2", "observed": {"ttftSeconds": 0.5}}, 60.0, True),
     ({"lastEvaluationTime": T0, "policyState": {"t": 1.0}},
      {"lastEvaluationTime": "t2", "policyState": {"t": 2.0}}, 10.0, False),
     ({"lastEvaluationTime": T0, "prefill": {"desiredReplicas": 3, "message": "a"}},
      {"lastEvaluationTime": "t2", "prefill": {"desiredReplicas": 3, "message": "b"}}, 10.0, False),
     ({"lastEvaluationTime": T0, "prefill": {"desiredReplicas": 3, "message": "a"}},
      {"lastEvaluationTime": "t2", "prefill": {"desiredReplicas": 4, "message": "b"}}, 1.0, True),
     ({"policyState": {"t": 1.0}}, {"lastEvaluationTime": "t2", "policyState": {"t": 2.0}}, 0.0, True)],
    ids=["timestamp-only-old", "value-at-once", "observed-fresh", "observed-stale", "policy-state-fresh",
         "message-only", "desired-at-once", "never-written-before"],
)
def test_status_write_due(previous: dict, new: dict, age_s: float, due: bool) -> None:
    assert status_write_due(previous, new, now_s=T0_S + age_s, refresh_s=60.0) is due


def test_target_cache_lists_once_per_kind_and_namespace(emu: KubeEmulator, kube: KubeClient) -> None:
    emu.add_deployment("cache", "p", 3, ready=2)
    emu.add_deployment("cache", "d", 4)
    emu.add_deployment("cache", "mp", 5, kind="ModelPool", ready=1)  # a CRD: /scale may map any path
    cache = TargetCache(kube)
    spec = AutoscalerSpec(prefill=PoolSpec(1, 10, target=TargetRef("apps/v1", "Deployment", "p")),
                          decode=PoolSpec(1, 10, target=TargetRef("apps/v1", "Deployment", "d")))
    crd = spec_for("ModelPool", "mp", "mp")
    before = len(list(emu.requests()))
    got = KubeScaleTarget(kube, "cache", spec, cache=cache).read_replicas()
    again = KubeScaleTarget(kube, "cache", spec, cache=cache).read_replicas()
    from_crd = KubeScaleTarget(kube, "cache", crd, cache=cache).read_replicas()
    served = [path for _, path in list(emu.requests())[before:]]
    assert got == again == {Pool.PREFILL: PoolReplicas(3, 2), Pool.DECODE: PoolReplicas(4, 4)}
    assert from_crd[Pool.DECODE] == PoolReplicas(5, 1)
    assert served.count("/apis/apps/v1/namespaces/cache/deployments") == 1 and cache.lists == 1
    assert not any(p.startswith("/apis/apps/") and p.endswith("/scale") for p in served)
    assert any(p.endswith("/modelpools/mp/scale") for p in served)  # the CRD is read through /scale


def test_target_cache_list_failure_fails_each_target_with_one_request(emu: KubeEmulator, kube: KubeClient) -> None:
    emu.add_deployment("cachefail", "p", 2)
    emu.add_fault("GET", r"/namespaces/cachefail/deployments$", status=500, times=5)
    cache = TargetCache(kube)
    for name in ("p", "missing"):
        with pytest.raises(ScaleError, match="list Deployment in cachefail: HTTP 500"):
            cache.get(TargetRef("apps/v1", "Deployment", name), "cachefail")
    assert cache.lists == 1
    emu.clear_faults()
    with pytest.raises(ScaleError, match="HTTP 404"):
        TargetCache(kube).get(TargetRef("apps/v1", "Deployment", "missing"), "cachefail")

"""``hpa``: a stock Kubernetes HorizontalPodAutoscaler per pool, on a percentile External metric.

What a cluster admin gets today with an HPA per Deployment and an external-metrics adapter that serves the
SLO percentile: prefill on the user-visible TTFT pX, decode on ITL pX, each with a ``Value`` target equal to the
SLO target. The arithmetic is kubernetes/kubernetes' (``replica_calculator.go``, ``horizontal.go``; reference
kubernetes-autoscaling.md §1-§4), re-expressed:

* External ``Value``: ratio = metric / target in milli-units (``MilliValue`` rounds up); inside the tolerance
  band (0.1) nothing changes; otherwise ``ceil(ratio × ready pods)``. The band and the zero case use spec
  replicas, the product uses Ready pods (a starting GPU pod is not Ready, so it contributes nothing).
* External ``AverageValue`` (what KEDA creates): ``ceil(Σ / target)``, the band on Σ / (target × status replicas).
* A failed or empty metric is an error: that sync does not scale at all (never down on missing data).
* Every sync (15 s) the proposal is normalized by ``autoscaler.core.behavior``: with ``spec.behavior`` (the
  autoscaling/v2 defaults here: up max(4 pods, 100 %) per 15 s, down 100 % per 15 s after a 300 s window) or,
  with ``behavior=None``, the legacy path (max over 300 s, up to max(2 × current, 4)).
* Spec replicas outside [min, max] are brought inside without reading metrics; the first sync seeds the
  recommendation history with the current count (no scale-down in the first 300 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from autoscaler.core.behavior import (
    TOO_FEW_REPLICAS,
    TOO_MANY_REPLICAS,
    BehaviorState,
    normalize_legacy,
    normalize_with_behavior,
    record_scale_event,
    seeded_state,
)
from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import AutoscalerSpec, Behavior
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision
from sim.policies import register_policy

DEFAULT_TOLERANCE = 0.1
DEFAULT_SYNC_PERIOD_S = 15.0
FAILED_GET_EXTERNAL_METRIC = "FailedGetExternalMetric"
SCALING_DISABLED = "ScalingDisabled"
NOT_SYNCED = "WaitingForSync"


def milli_value(value: float) -> int:
    """``resource.Quantity.MilliValue()`` of a metric value: milli-units, rounded up.

    Values are first rounded to nano-units, as a Quantity carries them, so 0.05 is 50m and not 51m."""
    if not math.isfinite(value):
        raise ValueError(f"metric value must be finite, got {value}")
    nanos = round(value * 1e9)
    return -((-nanos) // 1_000_000)


def external_value_replicas(
    *, spec_replicas: int, ready_pods: int, usage: float, target: float, tolerance: float = DEFAULT_TOLERANCE
) -> int:
    """``GetExternalMetricReplicas`` with a ``Value`` target (via ``getUsageRatioReplicaCount``)."""
    target_m = milli_value(target)
    if target_m <= 0:
        raise ValueError(f"external metric target must be positive, got {target}")
    ratio = milli_value(usage) / target_m
    if spec_replicas == 0:
        return math.ceil(ratio)
    if abs(1.0 - ratio) <= tolerance:
        return spec_replicas
    return math.ceil(ratio * ready_pods)


def external_average_value_replicas(
    *, status_replicas: int, usage: float, target_per_pod: float, tolerance: float = DEFAULT_TOLERANCE
) -> int:
    """``GetExternalPerPodMetricReplicas``: an ``AverageValue`` target over the summed series."""
    target_m = milli_value(target_per_pod)
    if target_m <= 0:
        raise ValueError(f"external metric target must be positive, got {target_per_pod}")
    usage_m = milli_value(usage)
    if status_replicas > 0:
        ratio = usage_m / (target_m * status_replicas)
        if abs(1.0 - ratio) <= tolerance:
            return status_replicas
    return math.ceil(usage_m / target_m)


@dataclass(frozen=True)
class HPAPoolState:
    """The HPA controller's in-memory history for one pool (one HPA object)."""

    behavior: BehaviorState = field(default_factory=BehaviorState)
    initialized: bool = False
    last_sync_s: float | None = None


@dataclass(frozen=True)
class HPAState:
    prefill: HPAPoolState = field(default_factory=HPAPoolState)
    decode: HPAPoolState = field(default_factory=HPAPoolState)

    def pool(self, pool: Pool) -> HPAPoolState:
        return self.prefill if pool is Pool.PREFILL else self.decode

    def with_pool(self, pool: Pool, state: HPAPoolState) -> HPAState:
        return replace(self, prefill=state) if pool is Pool.PREFILL else replace(self, decode=state)


# (observation, pool, spec replicas) -> proposed replicas, or an error message when the metric is missing.
ProposalFn = Callable[[Observation, Pool, int], "int | str"]


def hpa_sync(
    pool_state: HPAPoolState,
    *,
    pool: Pool,
    observation: Observation,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior | None,
    propose: ProposalFn,
    sync_period_s: float,
    label: str,
) -> tuple[PoolDecision, HPAPoolState]:
    """One ``reconcileAutoscaler`` of one HPA: bounds, metric, normalization, scale-event bookkeeping."""
    now_s = observation.time_s
    current = observation.replicas(pool).desired

    def hold(reason: str, message: str, state: HPAPoolState) -> tuple[PoolDecision, HPAPoolState]:
        return PoolDecision(pool, current, current, reason, f"{label}: {message}"), state

    if pool_state.last_sync_s is not None and now_s - pool_state.last_sync_s < sync_period_s - 1e-9:
        return hold(NOT_SYNCED, f"next sync {pool_state.last_sync_s + sync_period_s:.0f}s", pool_state)
    state = replace(pool_state, last_sync_s=now_s)
    if current == 0 and min_replicas > 0:
        return hold(
            SCALING_DISABLED, "scaling is disabled since the replica count of the target is zero", state
        )
    if current > max_replicas or current < min_replicas:
        desired = max_replicas if current > max_replicas else min_replicas
        reason = TOO_MANY_REPLICAS if current > max_replicas else TOO_FEW_REPLICAS
        if behavior is not None:
            state = replace(
                state,
                behavior=record_scale_event(state.behavior, now_s, desired - current, behavior=behavior),
            )
        return PoolDecision(
            pool,
            current,
            desired,
            reason,
            f"{label}: replicas outside [{min_replicas}, {max_replicas}], rescaling to {desired}",
        ), state
    if not state.initialized:
        state = replace(state, behavior=seeded_state(current, now_s), initialized=True)
    proposed = propose(observation, pool, current)
    if isinstance(proposed, str):
        return hold(FAILED_GET_EXTERNAL_METRIC, proposed, state)
    if behavior is None:
        desired, reason, bstate = normalize_legacy(
            proposed=proposed,
            current=current,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            state=state.behavior,
            now_s=now_s,
        )
    else:
        desired, reason, bstate = normalize_with_behavior(
            proposed=proposed,
            current=current,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            behavior=behavior,
            state=state.behavior,
            now_s=now_s,
        )
        bstate = record_scale_event(bstate, now_s, desired - current, behavior=behavior)
    message = f"{label}: metric proposes {proposed}, {reason} -> {desired}"
    return PoolDecision(pool, current, desired, reason, message), replace(state, behavior=bstate)


@dataclass(frozen=True)
class HPAPolicy:
    """Two independent HPAs (prefill on TTFT pX, decode on ITL pX), each an External ``Value`` target."""

    name: str = "hpa"
    behavior: Behavior | None = field(default_factory=Behavior)
    tolerance: float = DEFAULT_TOLERANCE
    sync_period_s: float = DEFAULT_SYNC_PERIOD_S

    def initial_state(self, spec: AutoscalerSpec) -> HPAState:
        return HPAState()

    def _propose(self, spec: AutoscalerSpec) -> ProposalFn:
        def propose(observation: Observation, pool: Pool, current: int) -> int | str:
            signals = observation.signals
            if signals.error is not None:
                return f"unable to get external metric: {signals.error}"
            value = signals.ttft_s if pool is Pool.PREFILL else signals.itl_s
            target = spec.ttft.target_s if pool is Pool.PREFILL else spec.itl.target_s
            metric = "ttft" if pool is Pool.PREFILL else "itl"
            if value is None or not math.isfinite(value):
                return f"no metrics returned from external metrics API ({metric} p{spec.ttft.percentile * 100:g})"
            return external_value_replicas(
                spec_replicas=current,
                ready_pods=observation.replicas(pool).ready,
                usage=value,
                target=target,
                tolerance=self.tolerance,
            )

        return propose

    def decide(
        self, observation: Observation, state: HPAState, spec: AutoscalerSpec
    ) -> tuple[Decision, HPAState]:
        return sync_both_pools(
            observation, state, spec,
            behavior=self.behavior, propose=self._propose(spec), sync_period_s=self.sync_period_s, name="hpa",
        )  # fmt: skip


def sync_both_pools(
    observation: Observation,
    state: HPAState,
    spec: AutoscalerSpec,
    *,
    behavior: Behavior | None,
    propose: ProposalFn,
    sync_period_s: float,
    name: str,
) -> tuple[Decision, HPAState]:
    """One HPA object per pool, each synced on its own metric proposal (the hpa and keda-queue baselines)."""
    decisions: dict[Pool, PoolDecision] = {}
    for pool in (Pool.PREFILL, Pool.DECODE):
        pool_spec = spec.pool(pool)
        decisions[pool], pool_state = hpa_sync(
            state.pool(pool),
            pool=pool,
            observation=observation,
            min_replicas=pool_spec.min_replicas,
            max_replicas=pool_spec.max_replicas,
            behavior=behavior,
            propose=propose,
            sync_period_s=sync_period_s,
            label=f"{name}/{pool.value}",
        )
        state = state.with_pool(pool, pool_state)
    return Decision(observation.time_s, decisions[Pool.PREFILL], decisions[Pool.DECODE]), state


def make_hpa(profile: LatencyProfile, spec: AutoscalerSpec, **params: Any) -> HPAPolicy:
    """Params: ``tolerance`` (0.1), ``sync_period_s`` (15), ``legacy`` (False: no spec.behavior),
    ``behavior`` (a ``Behavior``; default the autoscaling/v2 defaults)."""
    unknown = set(params) - {"tolerance", "sync_period_s", "legacy", "behavior"}
    if unknown:
        raise ValueError(f"hpa policy: unknown parameters {', '.join(sorted(unknown))}")
    behavior: Behavior | None = params.get("behavior", Behavior())
    if params.get("legacy", False):
        behavior = None
    return HPAPolicy(
        behavior=behavior,
        tolerance=float(params.get("tolerance", DEFAULT_TOLERANCE)),
        sync_period_s=float(params.get("sync_period_s", DEFAULT_SYNC_PERIOD_S)),
    )


register_policy("hpa", make_hpa)

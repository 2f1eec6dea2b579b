"""HPA v2 replica normalization: stabilization windows, rate-limit policies and min/max clamping.

A faithful, pure re-expression of ``normalizeDesiredReplicasWithBehaviors`` and the legacy
``normalizeDesiredReplicas`` of kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal.go``
(facts from the upstream algorithm; the code is ours). pdscale's policy and the ``hpa``/``keda-queue``
baselines share it, so "HPA-style behavior" means exactly what the HPA controller does:

* stabilization: the up recommendation is the minimum of the proposals stored inside the scale-up window plus
  the new one, the down recommendation the maximum inside the scale-down window plus the new one; the result
  starts from the current count, is raised to the up recommendation and lowered to the down recommendation.
  A proposal older than both windows has its slot reused (the last such slot), as upstream does.
* rate limits: per policy, ``base = current − added in the last period_s + removed in it``; up: Pods
  ``base + v``, Percent ``ceil(base × (1 + v/100))``; down: Pods ``base − v``, Percent
  ``trunc(base × (1 − v/100))``. ``Max`` picks the largest change, ``Min`` the smallest, ``Disabled`` forbids
  that direction. A limit on the wrong side of current yields current.
* clamp to ``[min_replicas, max_replicas]`` with the HPA's ``ScalingLimited`` reasons.

Times are seconds on any monotonic clock the caller uses (the simulator's or the wall clock); nothing here
reads a clock. Windows compare strictly (``t > now − window``), like Go's ``After(cutoff)``.

Defaults, as ``autoscaling/v2`` applies them when ``spec.behavior`` is set: a ``None`` stabilization window
means 0 s up and 300 s down; empty ``policies`` mean the direction's default policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autoscaler.core.spec import (
    Behavior,
    PolicyType,
    ScalingRules,
    SelectPolicy,
    default_scale_down,
    default_scale_up,
)

DEFAULT_SCALE_UP_WINDOW_S = 0.0
DEFAULT_SCALE_DOWN_WINDOW_S = 300.0  # the controller flag --horizontal-pod-autoscaler-downscale-stabilization
LEGACY_SCALE_UP_LIMIT_FACTOR = 2.0  # horizontal.go scaleUpLimitFactor (its unit tests raise it to 8)
LEGACY_SCALE_UP_LIMIT_MINIMUM = 4.0  # horizontal.go scaleUpLimitMinimum

# HPA condition reasons (AbleToScale / ScalingLimited) returned next to the replica count.
SCALE_UP_STABILIZED = "ScaleUpStabilized"
SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
SCALE_UP_LIMIT = "ScaleUpLimit"
SCALE_DOWN_LIMIT = "ScaleDownLimit"
TOO_MANY_REPLICAS = "TooManyReplicas"
TOO_FEW_REPLICAS = "TooFewReplicas"
DESIRED_WITHIN_RANGE = "DesiredWithinRange"


@dataclass(frozen=True)
class BehaviorState:
    """What the HPA controller keeps in memory per autoscaler (and loses on restart).

    ``recommendations``: (time_s, proposed replicas) in slot order. ``scale_events``: (time_s, change), change
    > 0 for replicas added, < 0 for replicas removed, in slot order.
    """

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[tuple[float, int], ...] = ()


def up_window_s(rules: ScalingRules) -> float:
    w = rules.stabilization_window_s
    return DEFAULT_SCALE_UP_WINDOW_S if w is None else w


def down_window_s(rules: ScalingRules) -> float:
    w = rules.stabilization_window_s
    return DEFAULT_SCALE_DOWN_WINDOW_S if w is None else w


def _up_rules(rules: ScalingRules) -> ScalingRules:
    return rules if rules.policies else replace(rules, policies=default_scale_up().policies)


def _down_rules(rules: ScalingRules) -> ScalingRules:
    return rules if rules.policies else replace(rules, policies=default_scale_down().policies)


def replicas_change_in_period(
    events: tuple[tuple[float, int], ...], *, period_s: float, now_s: float, scale_up: bool
) -> int:
    """Replicas added (``scale_up``) or removed (as a positive number) strictly within the last ``period_s``."""
    cutoff_s = now_s - period_s
    total = 0
    for t_s, change in events:
        if t_s > cutoff_s and ((change > 0) if scale_up else (change < 0)):
            total += abs(change)
    return total


def scale_up_limit(
    current: int, events: tuple[tuple[float, int], ...], rules: ScalingRules, now_s: float
) -> int:
    """``calculateScaleUpLimitWithScalingRules``: the highest count the scale-up policies allow now."""
    rules = _up_rules(rules)
    if rules.select_policy is SelectPolicy.DISABLED:
        return current
    proposals: list[int] = []
    for policy in rules.policies:
        added = replicas_change_in_period(events, period_s=policy.period_s, now_s=now_s, scale_up=True)
        removed = replicas_change_in_period(events, period_s=policy.period_s, now_s=now_s, scale_up=False)
        base = current - added + removed
        if policy.type is PolicyType.PODS:
            proposals.append(base + policy.value)
        else:  # rounded up, or a small Percent could never add a pod
            proposals.append(math.ceil(base * (1 + policy.value / 100)))
    return min(proposals) if rules.select_policy is SelectPolicy.MIN else max(proposals)


def scale_down_limit(
    current: int, events: tuple[tuple[float, int], ...], rules: ScalingRules, now_s: float
) -> int:
    """``calculateScaleDownLimitWithBehaviors``: the lowest count the scale-down policies allow now."""
    rules = _down_rules(rules)
    if rules.select_policy is SelectPolicy.DISABLED:
        return current
    proposals: list[int] = []
    for policy in rules.policies:
        added = replicas_change_in_period(events, period_s=policy.period_s, now_s=now_s, scale_up=True)
        removed = replicas_change_in_period(events, period_s=policy.period_s, now_s=now_s, scale_up=False)
        base = current - added + removed
        if policy.type is PolicyType.PODS:
            proposals.append(base - policy.value)
        else:  # Go's int32(float64) conversion truncates toward zero
            proposals.append(math.trunc(base * (1 - policy.value / 100)))
    # Min = smallest change = the highest count; Max = largest change = the lowest count.
    return max(proposals) if rules.select_policy is SelectPolicy.MIN else min(proposals)


def stabilize_recommendation(
    *, proposed: int, current: int, behavior: Behavior, state: BehaviorState, now_s: float
) -> tuple[int, str, BehaviorState]:
    """``stabilizeRecommendationWithBehaviors``: (stabilized count, stabilization reason, state with the raw
    proposal stored, reusing the last slot older than both windows)."""
    up_cutoff_s = now_s - up_window_s(behavior.scale_up)
    down_cutoff_s = now_s - down_window_s(behavior.scale_down)
    up_rec = proposed
    down_rec = proposed
    old_index: int | None = None
    for i, (t_s, rec) in enumerate(state.recommendations):
        if t_s > up_cutoff_s:
            up_rec = min(up_rec, rec)
        if t_s > down_cutoff_s:
            down_rec = max(down_rec, rec)
        if t_s < up_cutoff_s and t_s < down_cutoff_s:
            old_index = i
    stabilized = current
    if stabilized < up_rec:
        stabilized = up_rec
    if stabilized > down_rec:
        stabilized = down_rec
    recs = list(state.recommendations)
    if old_index is not None:
        recs[old_index] = (now_s, proposed)
    else:
        recs.append((now_s, proposed))
    reason = SCALE_UP_STABILIZED if proposed >= current else SCALE_DOWN_STABILIZED
    return stabilized, reason, replace(state, recommendations=tuple(recs))


def convert_with_behavior_rate(
    *,
    desired: int,
    current: int,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior,
    events: tuple[tuple[float, int], ...],
    now_s: float,
) -> tuple[int, str]:
    """``convertDesiredReplicasWithBehaviorRate``: apply the rate policies and the min/max bounds."""
    if desired > current:
        up_limit = max(scale_up_limit(current, events, behavior.scale_up, now_s), current)
        if max_replicas > up_limit:
            allowed, reason = up_limit, SCALE_UP_LIMIT
        else:
            allowed, reason = max_replicas, TOO_MANY_REPLICAS
        if desired > allowed:
            return allowed, reason
    elif desired < current:
        down_limit = min(scale_down_limit(current, events, behavior.scale_down, now_s), current)
        if min_replicas < down_limit:
            allowed, reason = down_limit, SCALE_DOWN_LIMIT
        else:
            allowed, reason = min_replicas, TOO_FEW_REPLICAS
        if desired < allowed:
            return allowed, reason
    return desired, DESIRED_WITHIN_RANGE


def normalize_with_behavior(
    *,
    proposed: int,
    current: int,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior,
    state: BehaviorState,
    now_s: float,
) -> tuple[int, str, BehaviorState]:
    """``normalizeDesiredReplicasWithBehaviors``: stabilize, rate-limit and clamp one proposal.

    Returns (desired, reason, state with the proposal recorded). The reason is the limiting one when the rate
    or bounds changed the stabilized count, else the stabilization reason when stabilization changed the
    proposal, else ``DesiredWithinRange``. A current count already outside [min, max] is brought inside, as the
    HPA controller does before it reads any metric.
    """
    _check_bounds(min_replicas, max_replicas)
    stabilized, stab_reason, new_state = stabilize_recommendation(
        proposed=proposed, current=current, behavior=behavior, state=state, now_s=now_s
    )
    desired, limit_reason = convert_with_behavior_rate(
        desired=stabilized,
        current=current,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        behavior=behavior,
        events=state.scale_events,
        now_s=now_s,
    )
    if desired > max_replicas:
        return max_replicas, TOO_MANY_REPLICAS, new_state
    if desired < min_replicas:
        return min_replicas, TOO_FEW_REPLICAS, new_state
    if desired != stabilized:
        return desired, limit_reason, new_state
    if stabilized != proposed:
        return desired, stab_reason, new_state
    return desired, DESIRED_WITHIN_RANGE, new_state


def longest_policy_period_s(rules: ScalingRules, *, scale_up: bool) -> float:
    """``getLongestPolicyPeriod``: events older than this no longer influence any rate limit."""
    rules = _up_rules(rules) if scale_up else _down_rules(rules)
    return max(p.period_s for p in rules.policies)


def record_scale_event(
    state: BehaviorState, now_s: float, change: int, *, behavior: Behavior | None = None
) -> BehaviorState:
    """``storeScaleEvent``: remember a rescale of ``change`` replicas (+ added, − removed) at ``now_s``.

    With ``behavior`` given, the last same-direction event older than that direction's longest policy period
    has its slot reused (upstream's bounded memory); without it the event is appended. A zero change is not an
    event.
    """
    if change == 0:
        return state
    events = list(state.scale_events)
    reuse: int | None = None
    if behavior is not None:
        up = change > 0
        rules = behavior.scale_up if up else behavior.scale_down
        cutoff_s = now_s - longest_policy_period_s(rules, scale_up=up)
        for i, (t_s, c) in enumerate(events):
            if (c > 0) == up and t_s < cutoff_s:
                reuse = i
    if reuse is not None:
        events[reuse] = (now_s, change)
    else:
        events.append((now_s, change))
    return replace(state, scale_events=tuple(events))


# ---- legacy path (an HPA without spec.behavior) ----


def legacy_scale_up_limit(current: int, *, factor: float = LEGACY_SCALE_UP_LIMIT_FACTOR) -> int:
    """``calculateScaleUpLimit``: max(factor × current, 4), truncated."""
    return int(max(factor * current, LEGACY_SCALE_UP_LIMIT_MINIMUM))


def convert_with_rules(
    *,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    scale_up_limit_factor: float = LEGACY_SCALE_UP_LIMIT_FACTOR,
) -> tuple[int, str]:
    """``convertDesiredReplicasWithRules``: legacy bounds, scale-up capped at max(2 × current, 4)."""
    up_limit = legacy_scale_up_limit(current, factor=scale_up_limit_factor)
    if max_replicas > up_limit:
        allowed, reason = up_limit, SCALE_UP_LIMIT
    else:
        allowed, reason = max_replicas, TOO_MANY_REPLICAS
    if desired < min_replicas:
        return min_replicas, TOO_FEW_REPLICAS
    if desired > allowed:
        return allowed, reason
    return desired, DESIRED_WITHIN_RANGE


def legacy_stabilize(
    *, proposed: int, state: BehaviorState, now_s: float, window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
) -> tuple[int, BehaviorState]:
    """``stabilizeRecommendation``: the maximum of the proposals not older than the downscale window."""
    cutoff_s = now_s - window_s
    best = proposed
    old_index: int | None = None
    for i, (t_s, rec) in enumerate(state.recommendations):
        if t_s < cutoff_s:
            old_index = i
        elif rec > best:
            best = rec
    recs = list(state.recommendations)
    if old_index is not None:
        recs[old_index] = (now_s, proposed)
    else:
        recs.append((now_s, proposed))
    return best, replace(state, recommendations=tuple(recs))


def normalize_legacy(
    *,
    proposed: int,
    current: int,
    min_replicas: int,
    max_replicas: int,
    state: BehaviorState,
    now_s: float,
    downscale_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S,
    scale_up_limit_factor: float = LEGACY_SCALE_UP_LIMIT_FACTOR,
) -> tuple[int, str, BehaviorState]:
    """``normalizeDesiredReplicas``: stabilize downscales, then the legacy bounds. No scale events are kept."""
    _check_bounds(min_replicas, max_replicas)
    stabilized, new_state = legacy_stabilize(
        proposed=proposed, state=state, now_s=now_s, window_s=downscale_window_s
    )
    desired, reason = convert_with_rules(
        current=current,
        desired=stabilized,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_up_limit_factor=scale_up_limit_factor,
    )
    if desired == stabilized and stabilized != proposed:
        reason = SCALE_DOWN_STABILIZED
    return desired, reason, new_state


def _check_bounds(min_replicas: int, max_replicas: int) -> None:
    if min_replicas < 0 or max_replicas < min_replicas:
        raise ValueError(f"replica bounds need 0 <= min <= max, got min={min_replicas} max={max_replicas}")


def seeded_state(current: int, now_s: float) -> BehaviorState:
    """``maybeInitScaleDownStabilizationWindow``: a new autoscaler's history starts with the current count, so
    its first sync cannot scale down (TestScaleDownStabilizeInitialSize)."""
    return BehaviorState(recommendations=((now_s, current),))

"""pdscale's policy: one named case per Reason it can emit, plus invariants as hypothesis properties."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core import forecast as fc
from autoscaler.core.capacity import (
    Load,
    PrefillModel,
    decode_replicas_needed,
    prefill_queue_service_s,
    prefill_replicas_needed,
    ttft_floor_s,
)
from autoscaler.core.policy import PdscalePolicy, PolicyState, make_pdscale_policy
from autoscaler.core.spec import (
    AutoscalerSpec,
    Behavior,
    PolicyType,
    PoolSpec,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    pdscale_default_scale_down,
)
from autoscaler.core.types import Observation, Pool, PoolDecision, PoolReplicas, PoolSignals, Reason, Signals
from tests.unit.test_capacity import PROFILE

# The cases below were worked out at the prior headroom of x1.10 up / x1.30 down (the default until the prior was
# raised to x1.35 / x1.45, see PdscalePolicy.load_headroom): they test reasons and mechanisms, not the prior, so they
# keep it; test_unmeasured_workload_is_sized_at_the_cautious_prior checks the default.
POLICY = PdscalePolicy(profile=PROFILE, load_headroom=0.1, load_headroom_down=0.3)
# No scale-down window and no scale-up rate limit, so a case shows the policy's own reason; the HPA defaults
# (AutoscalerSpec()) appear in the cases about behavior.
NO_DOWN_WINDOW = Behavior(
    scale_up=ScalingRules(0.0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PODS, 100, 15.0),)),
    scale_down=ScalingRules(stabilization_window_s=0.0),
)
SPEC = AutoscalerSpec(behavior=NO_DOWN_WINDOW)
LOAD = Load(100.0, 1000.0, 200.0)
P_NEED = prefill_replicas_needed(PROFILE, LOAD.scaled(1.1), 0.85, 0.99, 64)  # headroom 0.1, margin_up 0.15
D_NEED = decode_replicas_needed(PROFILE, LOAD.scaled(1.1), 0.0425, 0.99, 64)


def sig(
    t: float,
    load: Load | None = LOAD,
    ttft: float | None = 0.3,
    itl: float | None = 0.02,
    kv: float | None = None,  # None: no KV gauge (the decode context is then the means' model)
    d_waiting: float = 0.0,
    d_running: float = 50.0,
    p_waiting: float = 0.0,
    error: str | None = None,
) -> Signals:
    if error is not None:
        return Signals(time_s=t, error=error)
    return Signals(
        time_s=t,
        ttft_s=ttft,
        itl_s=itl,
        request_rate_per_s=None if load is None else load.request_rate_per_s,
        prompt_tokens_per_s=None if load is None else load.request_rate_per_s * load.mean_prompt_tokens,
        output_tokens_per_s=None if load is None else load.request_rate_per_s * load.mean_output_tokens,
        prefill=PoolSignals(waiting_requests=p_waiting),
        decode=PoolSignals(waiting_requests=d_waiting, running_requests=d_running, kv_usage_fraction=kv),
    )


def obs(
    t: float, s: Signals, p: tuple[int, int] = (P_NEED, P_NEED), d: tuple[int, int] = (D_NEED, D_NEED)
) -> Observation:
    return Observation(t, s, PoolReplicas(*p), PoolReplicas(*d))


@dataclass(frozen=True)
class Case:
    history: tuple[Observation, ...]  # earlier ticks (their decisions are not applied, only the state kept)
    last: Observation
    pool: Pool
    reason: Reason
    desired: int | None = None  # exact desired, when the case pins it
    direction: int = 0  # sign of desired - current when desired is not pinned
    spec: AutoscalerSpec = SPEC
    policy: PdscalePolicy = POLICY


BIG = Load(400.0, 1000.0, 200.0)
P_BIG = prefill_replicas_needed(PROFILE, BIG.scaled(1.1), 0.85, 0.99, 64)
D_BIG = decode_replicas_needed(PROFILE, BIG.scaled(1.1), 0.0425, 0.99, 64)
SMALL = Load(20.0, 1000.0, 200.0)

CASES = {
    "within-target": Case((), obs(0, sig(0)), Pool.PREFILL, Reason.WITHIN_TARGET, desired=P_NEED),
    "predicted-load-increase-prefill": Case(
        (),
        obs(0, sig(0, BIG), p=(P_NEED, P_NEED), d=(D_BIG, D_BIG)),
        Pool.PREFILL,
        Reason.PREDICTED_LOAD_INCREASE,
        desired=P_BIG,
    ),
    "predicted-load-increase-decode": Case(
        (),
        obs(0, sig(0, BIG), p=(P_BIG, P_BIG), d=(D_NEED, D_NEED)),
        Pool.DECODE,
        Reason.PREDICTED_LOAD_INCREASE,
        desired=D_BIG,
    ),
    "ttft-above-target": Case(
        (), obs(0, sig(0, ttft=1.6)), Pool.PREFILL, Reason.TTFT_ABOVE_TARGET, direction=1
    ),
    "ttft-above-target-load-unknown-is-proportional": Case(
        (),
        obs(0, sig(0, load=None, ttft=1.6)),
        Pool.PREFILL,
        Reason.TTFT_ABOVE_TARGET,
        desired=math.ceil(P_NEED * 1.6),
    ),
    "itl-above-target": Case((), obs(0, sig(0, itl=0.08)), Pool.DECODE, Reason.ITL_ABOVE_TARGET, direction=1),
    "kv-cache-pressure": Case(
        (),
        # 0.97 of the pods' KV held by sequences of the load's context (prompt + output/2): the measured context
        # agrees with the model, only the fill is high
        obs(0, sig(0, kv=0.97, d_running=0.97 * PROFILE.kv_capacity_tokens * D_NEED / 1100.0)),
        Pool.DECODE,
        Reason.KV_CACHE_PRESSURE,
        direction=1,
    ),
    "decode-waiting-is-kv-pressure": Case(
        (),
        obs(0, sig(0, d_waiting=6000.0, d_running=256.0 * D_NEED)),  # 100 req/s more to drain in 60 s
        Pool.DECODE,
        Reason.KV_CACHE_PRESSURE,
        direction=1,
    ),
    "decode-few-waiting-is-normal": Case(
        (), obs(0, sig(0, d_waiting=5.0, d_running=40.0)), Pool.DECODE, Reason.WITHIN_TARGET, desired=D_NEED
    ),
    "ttft-breach-caused-by-decode-backlog-leaves-prefill": Case(
        (),
        obs(0, sig(0, ttft=2.5, d_waiting=6000.0, d_running=256.0 * D_NEED)),
        Pool.PREFILL,
        Reason.WITHIN_TARGET,
        desired=P_NEED,
    ),
    "ttft-breach-caused-by-decode-backlog-scales-decode": Case(
        (),
        obs(0, sig(0, ttft=2.5, d_waiting=6000.0, d_running=256.0 * D_NEED)),
        Pool.DECODE,
        Reason.KV_CACHE_PRESSURE,
        direction=1,
    ),
    "breach-covered-by-starting-pods": Case(
        (),
        obs(0, sig(0, ttft=1.3), p=(2 * P_NEED, P_NEED)),
        Pool.PREFILL,
        Reason.WAITING_FOR_STARTING_PODS,
        desired=2 * P_NEED,
    ),
    "scale-down": Case((), obs(0, sig(0, SMALL)), Pool.PREFILL, Reason.SCALE_DOWN, direction=-1),
    # pdscale's default rate (25 % per minute) without the window: 20 replicas may go to 15 at most
    "scale-down-rate-limited-by-behavior": Case(
        (),
        obs(0, sig(0, SMALL), p=(20, 20)),
        Pool.PREFILL,
        Reason.SCALE_DOWN_LIMIT,
        desired=15,
        spec=AutoscalerSpec(
            behavior=replace(
                NO_DOWN_WINDOW, scale_down=replace(pdscale_default_scale_down(), stabilization_window_s=0.0)
            )
        ),
    ),
    "scale-down-stabilized-by-behavior": Case(
        (obs(0, sig(0)),),
        obs(200, sig(200, SMALL, ttft=0.2)),
        Pool.PREFILL,
        Reason.SCALE_DOWN_STABILIZED,
        desired=P_NEED,
        spec=AutoscalerSpec(),
    ),
    "scale-up-stabilized-by-behavior": Case(
        (obs(0, sig(0)),),
        obs(15, sig(15, BIG)),
        Pool.PREFILL,
        Reason.SCALE_UP_STABILIZED,
        desired=P_NEED,
        spec=AutoscalerSpec(behavior=Behavior(scale_up=ScalingRules(stabilization_window_s=60.0))),
    ),
    "scale-up-limited-by-behavior": Case(
        (),
        obs(0, sig(0, BIG), p=(1, 1)),
        Pool.PREFILL,
        Reason.SCALE_UP_LIMIT,
        desired=5,
        spec=AutoscalerSpec(),
    ),
    "too-many-replicas": Case(
        (),
        obs(0, sig(0, BIG), p=(2, 2)),
        Pool.PREFILL,
        Reason.TOO_MANY_REPLICAS,
        desired=3,
        spec=AutoscalerSpec(prefill=PoolSpec(max_replicas=3), behavior=NO_DOWN_WINDOW),
    ),
    "too-few-replicas": Case(
        (),
        obs(0, sig(0, SMALL), p=(1, 1)),
        Pool.PREFILL,
        Reason.TOO_FEW_REPLICAS,
        desired=4,
        spec=AutoscalerSpec(prefill=PoolSpec(min_replicas=4), behavior=NO_DOWN_WINDOW),
    ),
    "capped-by-budget": Case(
        (),
        obs(0, sig(0, BIG, ttft=2.0), d=(D_NEED, D_NEED)),
        Pool.DECODE,
        Reason.CAPPED_BY_BUDGET,
        desired=D_BIG - 1,  # prefill breaches (pressure 2.0) and gets all it wants
        spec=AutoscalerSpec(gpu_budget=P_BIG + D_BIG - 1, behavior=NO_DOWN_WINDOW),
    ),
    "metrics-error": Case(
        (),
        obs(0, sig(0, error="connection refused"), p=(7, 7)),
        Pool.PREFILL,
        Reason.METRICS_UNAVAILABLE,
        desired=7,
    ),
    "metrics-missing-load": Case(
        (), obs(0, sig(0, load=None, ttft=0.1), d=(9, 9)), Pool.DECODE, Reason.METRICS_UNAVAILABLE, desired=9
    ),
    "metrics-stale": Case(
        (),
        obs(500, sig(100, SMALL), p=(P_NEED + 5, P_NEED + 5)),
        Pool.PREFILL,
        Reason.METRICS_UNAVAILABLE,
        desired=P_NEED + 5,
    ),
    # signals that understate the load: the model says "fewer", the policy holds
    "requests-failing-holds": Case(
        (),
        obs(0, replace(sig(0, SMALL), failed_request_rate_per_s=0.5 * SMALL.request_rate_per_s)),
        Pool.PREFILL,
        Reason.REQUESTS_FAILING,
        desired=P_NEED,
    ),
    "partial-scrape-holds": Case(
        (),
        obs(0, replace(sig(0, SMALL), decode=PoolSignals(running_requests=50.0, pods_reporting=D_NEED - 1))),
        Pool.PREFILL,
        Reason.PARTIAL_METRICS,
        desired=P_NEED,
    ),
    "metrics-nan": Case(
        (),
        obs(0, replace(sig(0, SMALL), request_rate_per_s=math.nan), p=(9, 9)),
        Pool.PREFILL,
        Reason.METRICS_UNAVAILABLE,
        desired=9,
    ),
}


def run(case: Case) -> tuple[int, int, str, str, PolicyState]:
    state = case.policy.initial_state(case.spec)
    for o in case.history:
        _, state = case.policy.decide(o, state, case.spec)
    decision, state = case.policy.decide(case.last, state, case.spec)
    pd = decision.pool(case.pool)
    return pd.current_replicas, pd.desired_replicas, pd.reason, pd.message, state


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_reason_table(case: Case) -> None:
    current, desired, reason, message, _ = run(case)
    assert reason == case.reason.value, message
    if case.desired is not None:
        assert desired == case.desired, message
    else:
        assert (desired > current) - (desired < current) == case.direction, message
    assert any(ch.isdigit() for ch in message)
    # events, logs and the demo print "reason: message"; the message must not say the reason again
    assert reason not in message, message


def test_every_reason_but_static_is_covered() -> None:
    """ScalingDisabled is the Controller's (a target at 0 is never handed to the policy): test_controller.py."""
    emitted = {c.reason for c in CASES.values()}
    assert emitted == set(Reason) - {Reason.STATIC, Reason.SCALING_DISABLED}


@pytest.mark.parametrize(
    ("failed_fraction", "pods", "held"),
    [(0.04, None, False), (0.06, None, True), (1.0, None, True), (0.0, D_NEED, False), (0.0, D_NEED - 1, True)],
    ids=["failing-4pct-below-threshold", "failing-6pct", "all-failing", "all-pods-report", "one-pod-missing"],
)
def test_scale_down_hold_threshold(failed_fraction: float, pods: int | None, held: bool) -> None:
    s = replace(sig(0, SMALL), failed_request_rate_per_s=failed_fraction * SMALL.request_rate_per_s,
                decode=PoolSignals(running_requests=50.0, pods_reporting=pods))
    d, _ = POLICY.decide(obs(0, s), POLICY.initial_state(SPEC), SPEC)
    assert (d.prefill.desired_replicas == P_NEED) == held, d.prefill.message
    assert (d.decode.desired_replicas == D_NEED) == held, d.decode.message


def test_failing_requests_still_scale_up() -> None:
    """The hold forbids shrinking only: a breach on the requests that are served still adds replicas."""
    s = replace(sig(0, ttft=2.5), failed_request_rate_per_s=0.5 * LOAD.request_rate_per_s)
    d, _ = POLICY.decide(obs(0, s), POLICY.initial_state(SPEC), SPEC)
    assert d.prefill.desired_replicas > P_NEED and d.prefill.reason == Reason.TTFT_ABOVE_TARGET


@pytest.mark.parametrize("observed_s", [1.2, 3.0, 80.0], ids=["mild", "bad", "overloaded"])
def test_breach_orders_at_once_but_bounded(observed_s: float) -> None:
    """A breach orders at least one more replica and at most breach_max_factor x ready, in one decision."""
    d, _ = POLICY.decide(obs(0, sig(0, ttft=observed_s)), POLICY.initial_state(SPEC), SPEC)
    assert P_NEED + 1 <= d.prefill.desired_replicas <= math.ceil(P_NEED * POLICY.breach_max_factor)


def test_breach_message_has_numbers() -> None:
    *_, message, _ = run(CASES["ttft-above-target"])
    assert "TTFT p99 1.6s > 1s target" in message and "req/s" in message


def test_no_scale_down_into_a_rising_load() -> None:
    """Load ramps up but is still small: the model would allow fewer replicas now, the trend says no."""
    state = POLICY.initial_state(SPEC)
    ramp = [Load(5.0 + 0.2 * t, 1000.0, 200.0) for t in range(0, 300, 15)]
    d = None
    for i, load in enumerate(ramp):
        d, state = POLICY.decide(obs(15.0 * i, sig(15.0 * i, load), p=(10, 10)), state, SPEC)
    assert d is not None
    assert d.prefill.desired_replicas == 10, d.prefill.message
    assert "rising load" in d.prefill.message



@pytest.mark.parametrize(("p_waiting", "scales_down"), [(0.0, True), (1.0, False), (11.0, False)])
def test_a_waiting_prompt_vetoes_a_prefill_scale_down_and_says_so(p_waiting: float, scales_down: bool) -> None:
    """Prefill at 10 ready pods for a load that needs fewer scales down only with no prompt waiting; held, the
    decision names the waiting prompts and the count it would otherwise verify."""
    d, _ = POLICY.decide(obs(0, sig(0, SMALL, p_waiting=p_waiting), p=(10, 10)), POLICY.initial_state(SPEC), SPEC)
    assert (d.prefill.desired_replicas < 10) is scales_down, d.prefill.message
    if not scales_down:
        assert f"not scaling down with {p_waiting:.0f} prompts queued" in d.prefill.message


def test_the_optional_queue_veto_holds_only_a_rising_load_or_a_queue_of_its_own() -> None:
    """With ``queue_veto_rising_fraction`` set, a prompt or two waiting on a flat load no longer holds 10 prefill
    pods; a queue of the pool's own (more waiting than ready pods) still does, and so does a waiting prompt while
    the load rises by more than the fraction within a start-up."""
    relaxed = replace(POLICY, queue_veto_rising_fraction=0.03)
    for p_waiting, holds in ((1.0, False), (11.0, True)):
        d, _ = relaxed.decide(obs(0, sig(0, SMALL, p_waiting=p_waiting), p=(10, 10)), relaxed.initial_state(SPEC), SPEC)
        assert (d.prefill.desired_replicas == 10) is holds, d.prefill.message
    state = relaxed.initial_state(SPEC)
    for i in range(40):  # +5 % within each start-up: below rising_fraction, above the veto's 3 %
        load = SMALL.scaled(1.0 + 0.05 * 15.0 * i / SPEC.pod_startup_s)
        d, state = relaxed.decide(obs(15.0 * i, sig(15.0 * i, load, p_waiting=1.0), p=(10, 10)), state, SPEC)
    assert relaxed._rising(Pool.PREFILL, state, SPEC, 0.03) and not relaxed._rising(Pool.PREFILL, state, SPEC)
    assert d.prefill.desired_replicas == 10 and "not scaling down with 1 prompts queued" in d.prefill.message


def _drain_run(policy: PdscalePolicy) -> tuple[list[float], int]:
    """100 req/s arrive throughout; prefill's queue builds to 3,000 prompts (t 105-120 s) and drains by 180 s.
    The served rate is what a 60 s rate window then reads: arrivals - the queue's change over the window (75, 50,
    ... up to 150 req/s while it drains). Returns the Holt level of the request rate per tick and the most prefill
    pods wanted from the first drain tick on."""
    queue = {105.0: 1500.0, 120.0: 3000.0, 135.0: 2250.0, 150.0: 1500.0, 165.0: 750.0}
    state, levels, most = policy.initial_state(SPEC), [], 0
    for i in range(17):
        t = 15.0 * i
        served = LOAD.request_rate_per_s - (queue.get(t, 0.0) - queue.get(t - 60.0, 0.0)) / 60.0
        s = sig(t, Load(served, 1000.0, 200.0), p_waiting=queue.get(t, 0.0))
        d, state = policy.decide(obs(t, s, p=(P_NEED, P_NEED)), state, SPEC)
        assert state.request_rate.level is not None
        levels.append(state.request_rate.level)
        if t >= 165.0:
            most = max(most, d.prefill.desired_replicas)
    return levels, most


def test_a_draining_queue_is_not_read_as_demand() -> None:
    """The served rate while a backlog drains is the arrivals plus the drain; the policy reads the arrivals (the
    level never passes the 100 req/s that arrive) and orders fewer prefill pods than one reading the drain as
    demand, which the trend extrapolates into a surge."""
    levels, most = _drain_run(POLICY)
    old_levels, old_most = _drain_run(replace(POLICY, drain_is_not_demand=False))
    assert max(levels) <= LOAD.request_rate_per_s + 1e-6
    assert max(old_levels) > 1.2 * LOAD.request_rate_per_s  # without the rule the drain reads as a surge
    assert most < old_most


def _burst_onset(policy: PdscalePolicy, waiting: float) -> PoolDecision:
    """LOAD for two minutes on P_NEED prefill pods, then a burst: ``waiting`` prompts queue within one tick while
    the 60 s served rate has seen only +10 % of it."""
    state = policy.initial_state(SPEC)
    for i in range(9):
        _, state = policy.decide(obs(15.0 * i, sig(15.0 * i)), state, SPEC)
    d, _ = policy.decide(obs(135.0, sig(135.0, LOAD.scaled(1.1), p_waiting=waiting)), state, SPEC)
    return d.prefill


def test_a_saturated_pool_is_sized_for_what_it_serves_plus_its_queue() -> None:
    """A queue of its own that grows means the ready pods serve all they can: the demand is at least their capacity
    plus the growth, though the rate window still reads the minutes before. Sized for that (no headroom on a
    measured rate), the first order is larger than the lagging rate asks for, and the message says why; a queue no
    longer than the ready pods is no evidence of saturation."""
    off = replace(POLICY, saturated_demand_floor=False)
    burst, burst_off = _burst_onset(POLICY, 300.0), _burst_onset(off, 300.0)
    saturated = P_NEED / prefill_queue_service_s(PROFILE, LOAD.mean_prompt_tokens, POLICY.prefill_model.prompt_scv)
    assert saturated > LOAD.request_rate_per_s * 1.1 * (1 + POLICY.load_headroom)  # the floor is what binds here
    assert burst.desired_replicas > burst_off.desired_replicas > P_NEED
    assert f"saturated: {P_NEED} ready pods serve {saturated:.1f}" in burst.message
    assert "saturated" not in burst_off.message
    small, small_off = _burst_onset(POLICY, float(P_NEED)), _burst_onset(off, float(P_NEED))
    assert small.desired_replicas == small_off.desired_replicas and "saturated" not in small.message


def test_metrics_fallback_after_outage() -> None:
    policy = PdscalePolicy(profile=PROFILE, missing_fallback_replicas=12, missing_fallback_after_s=60.0)
    state = policy.initial_state(SPEC)
    decisions = []
    for t in (0.0, 30.0, 60.0, 90.0):
        d, state = policy.decide(obs(t, sig(t, error="down"), p=(3, 3)), state, SPEC)
        decisions.append(d.prefill.desired_replicas)
    assert decisions == [3, 3, 12, 12]


def test_state_round_trips_through_json() -> None:
    """After the forecaster warmed (surprise filed), a scale event, a queue and a measured decode context."""
    case = CASES["scale-down-rate-limited-by-behavior"]
    state = POLICY.initial_state(case.spec)
    for i in range(14):
        t = 15.0 * i
        s = sig(t, SMALL if i == 13 else LOAD, p_waiting=50.0 if i == 3 else 0.0, kv=0.3)
        _, state = POLICY.decide(obs(t, s, p=(20, 20)), state, case.spec)
    assert state.prefill.behavior.scale_events and state.prompt_tokens_surprise.pending
    assert state.prefill.queued_time_s == 45.0 and state.decode_context_time_s == 195.0
    again = PolicyState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


def test_restart_continues_identically() -> None:
    """A controller restart (state saved to JSON and loaded) decides exactly as an uninterrupted one."""
    seq = [
        obs(15.0 * i, sig(15.0 * i, Load(50.0 + 10 * i, 1000.0, 200.0), ttft=0.4 + 0.02 * i))
        for i in range(12)
    ]
    a = b = POLICY.initial_state(SPEC)
    for o in seq:
        da, a = POLICY.decide(o, a, SPEC)
        db, b = POLICY.decide(o, PolicyState.from_dict(json.loads(json.dumps(b.to_dict()))), SPEC)
        assert da == db


def _on_off(policy: PdscalePolicy, minutes: int, replicas: int) -> int:
    """Prefill replicas after ``minutes`` of a load that alternates between 3x and 1x every minute, ending in a
    lull, with no behavior window (the policy's own scale-down decision shows)."""
    state = policy.initial_state(SPEC)
    desired = replicas
    for i in range(4 * minutes):
        t = 15.0 * i
        big = (i // 4) % 2 == 1 and i < 4 * minutes - 4
        load = Load(LOAD.request_rate_per_s * (3.0 if big else 1.0), 1000.0, 200.0)
        d, state = policy.decide(obs(t, sig(t, load, ttft=0.3), p=(replicas, replicas)), state, SPEC)
        desired = d.prefill.desired_replicas
    return desired


def test_a_lull_in_a_bursty_load_keeps_capacity_for_the_next_burst() -> None:
    """After on/off bursts of 3x, the lull's small load does not release the replicas the bursts need: the
    forecasts filed in lulls were overshot by the next burst, so the adaptive headroom is large; the same lull
    with the fixed headroom (``surprise=None``) releases them."""
    big_need = prefill_replicas_needed(PROFILE, LOAD.scaled(3.3), 0.85, 0.99, 64)
    adaptive = _on_off(POLICY, 16, big_need)
    fixed = _on_off(replace(POLICY, surprise=None), 16, big_need)
    assert fixed < adaptive
    # a 1x lull after bursts of 3x: verified at the capped headroom, 1 + headroom_cap times the lull's load
    cap = 1.0 + POLICY.headroom_cap
    assert adaptive >= prefill_replicas_needed(PROFILE, LOAD.scaled(cap), 0.65, 0.99, 64)


def test_a_burst_is_not_sized_beyond_the_peak_seen() -> None:
    """On/off bursts of 3x leave a large measured overshoot (each lull's forecast was overshot by the next burst).
    On top of a burst that would size for 3x the load times the capped headroom, though the load never went above
    3x within the overshoot's memory: while the load is not rising, the headroom stops at the peak seen plus
    ``headroom_peak_margin``. Rising (the ceiling's exemption) or switched off, the measured headroom applies (rising,
    the overshoot of the forecasts filed while rising once there are enough: see the next tests)."""
    assert POLICY.headroom_peak_margin is not None

    def load_at(i: int) -> Load:
        return LOAD.scaled(3.0 if i >= 64 or (i // 4) % 2 == 1 else 1.0)

    state = _feed(POLICY, 64 + 24, load_at)  # 16 on/off minutes, then 6 at the burst's level
    assert not POLICY._rising(Pool.PREFILL, state, SPEC)
    burst_tokens_per_s = 3.0 * LOAD.request_rate_per_s * LOAD.mean_prompt_tokens
    up, source = POLICY._headroom(Pool.PREFILL, state, down=False, forecast_tokens_per_s=burst_tokens_per_s)
    assert up == pytest.approx(1.0 + max(POLICY.headroom_floor_up, POLICY.headroom_peak_margin))
    assert "peak seen" in source
    overall = replace(POLICY, headroom_rising_measured=False)  # rising: not the overshoot measured while rising
    rising, _ = overall._headroom(Pool.PREFILL, state, False, forecast_tokens_per_s=burst_tokens_per_s, rising=True)
    off = replace(POLICY, headroom_peak_margin=None)
    measured, _ = off._headroom(Pool.PREFILL, state, down=False, forecast_tokens_per_s=burst_tokens_per_s)
    assert rising == measured >= 2.0
    # in a lull the peak is far above the forecast: the measured headroom keeps the capacity the bursts need
    lull, _ = POLICY._headroom(Pool.PREFILL, state, False, forecast_tokens_per_s=burst_tokens_per_s / 3.0)
    assert lull == measured


def test_a_moderate_rise_keeps_the_peak_ceiling() -> None:
    """After on/off bursts, a climb at the bursts' level that adds ~15 % per start-up is rising for the
    scale-down's test (``rising_fraction`` 0.1) but not past the ceiling's exemption
    (``headroom_peak_rising_fraction`` 0.2): the trend's extrapolation sizes it, not the bursts' overshoot. Exempt
    at 0.1 (the old default) it orders more prefill pods."""
    assert POLICY.headroom_peak_rising_fraction is not None
    assert POLICY.rising_fraction < 0.15 < POLICY.headroom_peak_rising_fraction

    def load_at(i: int) -> Load:
        if i < 64:
            return LOAD.scaled(3.0 if (i // 4) % 2 == 1 else 1.0)
        return LOAD.scaled(3.0 * (1.0 + 0.15 * 15.0 * (i - 64) / SPEC.pod_startup_s))

    def prefill_wanted(policy: PdscalePolicy) -> int:
        state = _feed(policy, 64 + 20, load_at)
        t = 15.0 * (64 + 20)
        d, _ = policy.decide(obs(t, sig(t, load_at(64 + 20))), state, SPEC)
        return d.prefill.desired_replicas

    state = _feed(POLICY, 64 + 20, load_at)
    assert POLICY._rising(Pool.PREFILL, state, SPEC)
    assert not POLICY._rising(Pool.PREFILL, state, SPEC, POLICY.headroom_peak_rising_fraction)
    assert POLICY._rising(Pool.PREFILL, state, SPEC, 0.1)
    assert prefill_wanted(POLICY) < prefill_wanted(replace(POLICY, headroom_peak_rising_fraction=None))


def _overshooting(overshoot: float, ticks: int, params: fc.SurpriseParams) -> fc.SurpriseState:
    """A series whose forecasts (1000 tok/s, filed every 15 s) are each overshot by ``overshoot``."""
    state = fc.SurpriseState()
    for i in range(ticks):
        state = fc.surprise_update(params, state, 15.0 * i, 1000.0 * (1 + overshoot), 1000.0, 150.0)
    return state


def test_a_rise_is_sized_with_the_overshoot_measured_while_rising() -> None:
    """The overshoot of all forecasts is x2 (a bursty load's lulls); those filed while the load rose were overshot
    by 10 %. Rising, once the rising ones hold a pod start-up of evidence, the scale-up headroom is theirs; with
    less evidence, not rising, for a scale-down, or with the rule off, it is the overall one."""
    assert POLICY.surprise is not None and POLICY.headroom_rising_measured
    params = POLICY.surprise
    overall = _overshooting(1.0, 80, params)  # 20 min: past min_evidence_s
    state = replace(
        PolicyState(), prompt_tokens_surprise=overall, prompt_tokens_surprise_rising=_overshooting(0.1, 30, params)
    )
    startup = SPEC.pod_startup_s
    assert state.prompt_tokens_surprise_rising.evidence_s >= startup
    rising, source = POLICY._headroom(Pool.PREFILL, state, down=False, rising=True, pod_startup_s=startup)
    assert rising < 1.25 and "while rising" in source
    measured, _ = POLICY._headroom(Pool.PREFILL, state, down=False, rising=False, pod_startup_s=startup)
    assert measured >= 2.0
    off = replace(POLICY, headroom_rising_measured=False)
    assert off._headroom(Pool.PREFILL, state, down=False, rising=True, pod_startup_s=startup)[0] == measured
    down, _ = POLICY._headroom(Pool.PREFILL, state, down=True, rising=True, pod_startup_s=startup)
    assert down >= measured
    thin = replace(state, prompt_tokens_surprise_rising=_overshooting(0.1, 12, params))
    assert thin.prompt_tokens_surprise_rising.evidence_s < startup
    assert POLICY._headroom(Pool.PREFILL, thin, down=False, rising=True, pod_startup_s=startup)[0] == measured


def test_a_climb_is_not_sized_beyond_where_its_steepest_rise_reaches() -> None:
    """The overshoot of all forecasts is x2 (a lull's, say), so the measured headroom is at its cap; then the load
    climbs past the peak at 20 tok/s per second. Rising, the scale-up headroom sizes the forecast up to no more than
    where the steepest rise seen would take the load now within a pod start-up, plus ``headroom_peak_margin``
    (suite lull-surge: 25 prefill / 35 decode pods ordered where 8 / 8 were needed). Not rising, the peak ceiling
    applies; with the rule off (or no start-up to reach over), the measured headroom."""
    assert POLICY.surprise is not None and POLICY.headroom_climb_ceiling and POLICY.headroom_peak_margin
    params = POLICY.surprise
    series = _overshooting(1.0, 80, params)  # 20 min at 2000 tok/s, each forecast overshot x2
    t0 = 15.0 * 80
    for k in range(1, 9):  # two minutes climbing at 20 tok/s per second
        value = 2000.0 + 20.0 * 15.0 * k
        series = fc.surprise_update(params, series, t0 + 15.0 * (k - 1), value, value, 150.0)
    assert series.last_value == pytest.approx(4400.0) and series.rise_per_s == pytest.approx(20.0)
    state = replace(PolicyState(), prompt_tokens_surprise=series)
    startup = SPEC.pod_startup_s
    up, source = POLICY._headroom(Pool.PREFILL, state, False, 4400.0, rising=True, pod_startup_s=startup)
    assert up == pytest.approx((4400.0 + 20.0 * startup) * (1 + POLICY.headroom_peak_margin) / 4400.0)
    assert up < 1.0 + POLICY.headroom_cap and "steepest climb" in source
    off = replace(POLICY, headroom_climb_ceiling=False)
    assert off._headroom(Pool.PREFILL, state, False, 4400.0, rising=True, pod_startup_s=startup)[0] == pytest.approx(
        1.0 + POLICY.headroom_cap
    )
    assert POLICY._headroom(Pool.PREFILL, state, False, 4400.0, rising=True)[0] == pytest.approx(
        1.0 + POLICY.headroom_cap
    )
    level, source = POLICY._headroom(Pool.PREFILL, state, False, 4400.0, rising=False, pod_startup_s=startup)
    assert level == pytest.approx(1.0 + POLICY.headroom_peak_margin) and "peak seen" in source


def test_decode_catching_up_is_forecast_from_the_demand_not_its_throughput() -> None:
    """Decode drains a backlog onto new pods: it finishes up to 2x the requests prefill serves, and its output
    tokens/s are up to 2x the demand's. The output forecast follows the demand (prefill's requests x the mean output
    of the requests decode finished), so the throughput's climb is not extrapolated into a decode order; with the
    rule off it is."""
    assert POLICY.output_forecast_from_demand

    def catching_up(t: float, i: int) -> Signals:
        s = sig(t, LOAD)
        if i < 20:
            return s
        finished = LOAD.request_rate_per_s * (1.0 + min(1.0, (i - 19) / 8.0))  # decode's completions climb to 2x
        return replace(
            s,
            output_tokens_per_s=finished * LOAD.mean_output_tokens,
            decode=replace(s.decode, request_rate_per_s=finished),
        )

    def run(policy: PdscalePolicy) -> tuple[float, int]:
        state = policy.initial_state(SPEC)
        d = None
        for i in range(28):
            t = 15.0 * i
            d, state = policy.decide(obs(t, catching_up(t, i)), state, SPEC)
        assert d is not None and state.output_tokens_rate.level is not None
        return state.output_tokens_rate.level, d.decode.desired_replicas

    demand = LOAD.request_rate_per_s * LOAD.mean_output_tokens
    level, desired = run(POLICY)
    assert level == pytest.approx(demand, rel=0.01)
    throughput_level, throughput_desired = run(replace(POLICY, output_forecast_from_demand=False))
    assert throughput_level > 1.5 * demand
    assert desired < throughput_desired


def _steady(policy: PdscalePolicy, minutes: int, noise: float) -> tuple[float, float]:
    """Prefill (up, down) headroom after ``minutes`` of a load alternating +-``noise`` around LOAD each tick."""
    state = policy.initial_state(SPEC)
    for i in range(4 * minutes):
        t = 15.0 * i
        load = Load(LOAD.request_rate_per_s * (1 + (noise if i % 2 else -noise)), 1000.0, 200.0)
        _, state = policy.decide(obs(t, sig(t, load, ttft=0.3), p=(P_NEED, D_NEED)), state, SPEC)
    return policy._headroom(Pool.PREFILL, state, down=False)[0], policy._headroom(Pool.PREFILL, state, down=True)[0]


def test_headroom_follows_the_measured_overshoot() -> None:
    """Unmeasured: the fixed headroom. A steady load pays its noise (floors apply); a noisier one pays more."""
    assert _steady(POLICY, 5, 0.02) == (1.0 + POLICY.load_headroom, 1.0 + POLICY.load_headroom_down)
    quiet_up, quiet_down = _steady(POLICY, 40, 0.01)
    assert quiet_up == pytest.approx(1.0 + POLICY.headroom_floor_up)
    assert quiet_down == pytest.approx(1.0 + max(POLICY.headroom_floor_down, POLICY.headroom_floor_up
                                                 + POLICY.headroom_gap))  # fmt: skip
    noisy_up, noisy_down = _steady(POLICY, 40, 0.1)
    assert 1.1 <= noisy_up <= 1.25 and noisy_down >= noisy_up + POLICY.headroom_gap


def test_correction_rises_when_model_underpredicts() -> None:
    state = POLICY.initial_state(SPEC)
    for i in range(30):  # stable ready count, observed TTFT far above what the model says at this load
        _, state = POLICY.decide(obs(15.0 * i, sig(15.0 * i, ttft=0.9), p=(P_NEED, P_NEED)), state, SPEC)
    assert state.prefill.correction > 1.05


def _prompt_with_floor(floor_s: float) -> float:
    """The mean prompt (tokens) whose tail prompt's own prefill, by the policy's model, takes ``floor_s``."""
    lo, hi = 1.0, 1e6
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ttft_floor_s(PROFILE, Load(1.0, mid, 200.0), 0.99) < floor_s else (lo, mid)
    return lo


@pytest.mark.parametrize(("tolerance", "raised"), [(None, True), (0.15, False)])
def test_a_percentile_the_service_time_explains_does_not_raise_the_correction(
    tolerance: float | None, raised: bool
) -> None:
    """Prefill far from saturation: the observed TTFT p99 (3 s) lies in vLLM's (2.5, 5] s bucket, and a tail prompt
    alone takes 2.3 s by the model. Within the model's fidelity that is service time: no replica count lowers it,
    so the correction must not turn it into load (it had held x1.3-1.7 on very-long-prompts)."""
    policy = replace(POLICY, correction_floor_tolerance=tolerance)
    spec = replace(SPEC, ttft=replace(SPEC.ttft, target_s=5.0))
    load = Load(2.0, _prompt_with_floor(2.3), 200.0)
    state = policy.initial_state(spec)
    for i in range(30):
        _, state = policy.decide(obs(15.0 * i, sig(15.0 * i, load, ttft=3.0), p=(40, 40)), state, spec)
    assert (state.prefill.correction > 1.05) is raised, state.prefill.correction


def test_correction_waits_for_ready_count_to_settle() -> None:
    state = POLICY.initial_state(SPEC)
    for i in range(4):  # ready changes every tick: the percentile belongs to another pool size
        _, state = POLICY.decide(
            obs(15.0 * i, sig(15.0 * i, ttft=0.95), p=(P_NEED + i, P_NEED + i)), state, SPEC
        )
    assert state.prefill.correction == 1.0


def test_factory_rejects_unknown_params() -> None:
    with pytest.raises(ValueError, match="unknown parameters nope"):
        make_pdscale_policy(PROFILE, SPEC, nope=1)
    assert make_pdscale_policy(PROFILE, SPEC, forecaster="last").forecaster is not None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"margin_up": 0.5, "margin_down": 0.2}, id="margins-inverted"),
        pytest.param({"correction_max": 0.5}, id="correction-max-below-1"),
        pytest.param({"breach_max_factor": 0.5}, id="breach-factor-below-1"),
    ],
)
def test_policy_params_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PdscalePolicy(profile=PROFILE, **bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- properties

load_st = st.builds(Load, st.floats(0.0, 600.0), st.floats(10.0, 6000.0), st.floats(1.0, 800.0))
reps_st = st.tuples(st.integers(0, 30), st.integers(0, 30)).map(lambda t: (max(t), min(t)))
lat_st = st.one_of(st.none(), st.floats(0.0, 20.0))
spec_st = st.builds(
    lambda pmin, pmax, dmin, dmax, budget, g: AutoscalerSpec(
        prefill=PoolSpec(min_replicas=pmin, max_replicas=pmin + pmax, gpus_per_replica=g),
        decode=PoolSpec(min_replicas=dmin, max_replicas=dmin + dmax),
        gpu_budget=budget,
    ),
    st.integers(0, 3),
    st.integers(0, 20),
    st.integers(0, 3),
    st.integers(0, 20),
    st.one_of(st.none(), st.integers(0, 40)),
    st.integers(1, 2),
)


@settings(max_examples=60, deadline=None)
@given(spec=spec_st, load=load_st, p=reps_st, d=reps_st, ttft=lat_st, itl=lat_st, kv=st.floats(0, 1))
def test_bounds_and_budget_always_respected(
    spec: AutoscalerSpec,
    load: Load,
    p: tuple[int, int],
    d: tuple[int, int],
    ttft: float | None,
    itl: float | None,
    kv: float,
) -> None:
    decision, _ = POLICY.decide(
        obs(0.0, sig(0.0, load, ttft, itl, kv), p, d), POLICY.initial_state(spec), spec
    )
    for pool in Pool:
        pd = decision.pool(pool)
        assert spec.pool(pool).min_replicas <= pd.desired_replicas <= spec.pool(pool).max_replicas
        assert pd.reason in {r.value for r in Reason}
    if spec.gpu_budget is not None:
        used = (
            decision.prefill.desired_replicas * spec.prefill.gpus_per_replica
            + decision.decode.desired_replicas * spec.decode.gpus_per_replica
        )
        floor = spec.prefill.min_replicas * spec.prefill.gpus_per_replica + spec.decode.min_replicas
        assert used <= max(spec.gpu_budget, floor)


@settings(max_examples=60, deadline=None)
@given(
    load=load_st,
    p=reps_st,
    d=reps_st,
    lat=st.floats(0.0, 5.0),
    worse=st.floats(0.0, 5.0),
    warm=st.integers(0, 6),
    pool=st.sampled_from(list(Pool)),
)
def test_worse_latency_never_fewer_replicas(
    load: Load, p: tuple[int, int], d: tuple[int, int], lat: float, worse: float, warm: int, pool: Pool
) -> None:
    scale = 1.0 if pool is Pool.PREFILL else 0.05
    state = POLICY.initial_state(SPEC)
    for i in range(warm):  # some history so the correction is live
        _, state = POLICY.decide(obs(15.0 * i, sig(15.0 * i, load, 0.5, 0.03), p, d), state, SPEC)
    t = 15.0 * warm

    def desired(x: float) -> int:
        s = sig(
            t,
            load,
            ttft=x * scale if pool is Pool.PREFILL else 0.5,
            itl=x * scale if pool is Pool.DECODE else 0.03,
        )
        decision, _ = POLICY.decide(obs(t, s, p, d), state, SPEC)
        return decision.pool(pool).desired_replicas

    assert desired(lat + worse) >= desired(lat)


@settings(max_examples=60, deadline=None)
@given(
    load=load_st,
    p=reps_st,
    d=reps_st,
    kind=st.sampled_from(["error", "none", "nan", "stale"]),
    warm=st.integers(0, 4),
)
def test_missing_data_never_scales_down(
    load: Load, p: tuple[int, int], d: tuple[int, int], kind: str, warm: int
) -> None:
    spec = AutoscalerSpec(
        behavior=NO_DOWN_WINDOW, prefill=PoolSpec(max_replicas=64), decode=PoolSpec(max_replicas=64)
    )
    state = POLICY.initial_state(spec)
    for i in range(warm):
        _, state = POLICY.decide(obs(15.0 * i, sig(15.0 * i, SMALL), p, d), state, spec)
    t = 15.0 * warm + 15.0
    bad = {
        "error": sig(t, error="timeout"),
        "none": sig(t, load=None),
        "nan": replace(sig(t, load), output_tokens_per_s=math.nan),
        "stale": sig(t - 600.0, load),
    }[kind]
    decision, _ = POLICY.decide(obs(t, bad, p, d), state, spec)
    for pool in Pool:
        pd = decision.pool(pool)
        assert pd.desired_replicas >= max(pd.current_replicas, spec.pool(pool).min_replicas)


def test_decode_context_is_measured_not_the_means() -> None:
    """Long prompts with short answers beside chat traffic: the means say 4k tokens of context per decoding
    sequence, the KV gauge shows 1.2k running; decode is sized for what runs (and for the means without a gauge)."""
    load = Load(300.0, 4000.0, 100.0)
    pods = 8
    running = 400.0
    kv_short = running * 1200.0 / (PROFILE.kv_capacity_tokens * pods)  # 1.2k tokens per running sequence
    needs = {}
    for name, kv in (("gauge", kv_short), ("no gauge", None)):
        state = POLICY.initial_state(SPEC)
        for i in range(6):
            t = 15.0 * i
            s = sig(t, load, kv=kv, d_running=running)
            d, state = POLICY.decide(obs(t, s, d=(pods, pods)), state, SPEC)
        needs[name] = d.decode.desired_replicas
        if kv is not None:
            assert state.decode_context_scale == pytest.approx(1200.0 / 4050.0, rel=1e-6)
            assert "decode context 1200 tok" in d.decode.message, d.decode.message
    assert needs["gauge"] < needs["no gauge"], needs


def test_decode_orders_ahead_for_prompts_queued_at_prefill() -> None:
    """A prefill queue growing 30 req/s reaches decode once prefill catches up: decode orders for it now."""
    state = POLICY.initial_state(SPEC)
    for i, waiting in enumerate((0.0, 450.0, 900.0)):
        t = 15.0 * i
        d, state = POLICY.decide(obs(t, sig(t, p_waiting=waiting)), state, SPEC)
    assert d.decode.desired_replicas > D_NEED, d.decode.message
    assert "prompts queued at prefill reach decode" in d.decode.message


def test_unreachable_ttft_target_is_said_and_not_answered_with_the_maximum() -> None:
    """Prompts so long that one alone takes longer than the TTFT target: more prefill pods cannot help, so the
    policy sizes for the no-queue floor, and its message says why it stops there."""
    long_prompts = Load(2.0, 20_000.0, 200.0)
    floor_s = ttft_floor_s(PROFILE, long_prompts, SPEC.ttft.percentile)
    assert floor_s > SPEC.ttft.target_s  # the premise: a tail prompt alone misses the target
    d, _ = POLICY.decide(obs(0, sig(0, long_prompts, ttft=None), p=(2, 2)), POLICY.initial_state(SPEC), SPEC)
    assert d.prefill.desired_replicas < SPEC.prefill.max_replicas
    assert "no count reaches the target" in d.prefill.message and f"{floor_s:.3g}s" in d.prefill.message


def test_decode_is_not_sized_for_requests_a_new_prefill_pod_served_unscraped() -> None:
    """A prefill pod that just became ready serves requests before Prometheus first scrapes it, so its pool's
    request rate reads low for a window while decode's tokens and finished requests do not: decode's mean output
    per request must come from counts of the same requests, not grow with the missing ones (live surge run:
    decode 2 -> 5 on a mean output of 118 tokens where 55 ran)."""
    spec = AutoscalerSpec(behavior=NO_DOWN_WINDOW, decode=PoolSpec(max_replicas=64))

    def signals(t: float, prefill_rate: float) -> Signals:  # the prefill pool's prompt tokens are short alike
        s = sig(t, LOAD)
        return replace(s, prompt_tokens_per_s=prefill_rate * LOAD.mean_prompt_tokens,
                       prefill=replace(s.prefill, request_rate_per_s=prefill_rate),
                       decode=replace(s.decode, request_rate_per_s=LOAD.request_rate_per_s))  # fmt: skip

    desired = {}
    for name, undercount in (("all scraped", 1.0), ("new prefill pods unscraped", 0.5)):
        state = POLICY.initial_state(spec)
        for i in range(8):
            t = 15.0 * i
            rate = LOAD.request_rate_per_s * (undercount if i == 7 else 1.0)
            d, state = POLICY.decide(obs(t, signals(t, rate), d=(D_NEED, D_NEED)), state, spec)
        desired[name] = d.decode.desired_replicas
        assert f"output {LOAD.mean_output_tokens:.0f} tok" in d.decode.message, d.decode.message
    assert desired["new prefill pods unscraped"] <= desired["all scraped"] == D_NEED, desired


def test_decode_context_is_not_measured_before_a_request_rate() -> None:
    """The first window can see decode sequences running before any request has finished anywhere (no request
    rate, so no mean prompt or output): the KV context per sequence is not compared with means that do not exist
    (it was, against 1.5 tokens, and the context scale sat at its 3x bound for a minute)."""
    state = POLICY.initial_state(SPEC)
    no_rate = replace(sig(0.0, LOAD, kv=0.2, d_running=400.0), request_rate_per_s=0.0)
    _, state = POLICY.decide(obs(0.0, no_rate), state, SPEC)
    assert state.decode_context_time_s is None and state.decode_context_scale == 1.0


def _length_buckets(lengths: list[float], rate_per_s: float) -> tuple[tuple[float, float], ...]:
    """Cumulative requests/s per ``le`` of a prompt-length histogram whose requests have ``lengths`` equally."""
    from autoscaler.core.buckets import PROMPT_TOKENS_BUCKETS

    each = rate_per_s / len(lengths)
    bounds = [*PROMPT_TOKENS_BUCKETS, math.inf]
    return tuple((b, each * sum(1 for x in lengths if x <= b)) for b in bounds)


def test_measured_prompt_mix_sizes_prefill_and_is_named() -> None:
    """A long-tailed prompt mix at the same mean needs more prefill than a narrow one (E[L²] and the tail prompt's
    own prefill); the decision says which mix it used, and falls back to the assumed one, naming why."""
    import numpy as np

    rng = np.random.default_rng(5)
    wide = list(np.clip(rng.lognormal(math.log(4000) - 0.72, 1.2, 2000), 1, 131072))
    wide = [x * 4000 / float(np.mean(wide)) for x in wide]
    narrow = [4000.0] * 2000
    load = Load(100.0, 4000.0, 200.0)

    def decide(buckets: tuple[tuple[float, float], ...] | None) -> tuple[int, str]:
        s = replace(sig(100.0, load=load), prompt_length_buckets=buckets)
        decision, _ = POLICY.decide(obs(100.0, s, (1, 1)), POLICY.initial_state(SPEC), SPEC)
        return decision.prefill.desired_replicas, decision.prefill.message

    n_narrow, m_narrow = decide(_length_buckets(narrow, 100.0))
    n_wide, m_wide = decide(_length_buckets(wide, 100.0))
    assert n_wide > n_narrow, (n_wide, n_narrow)
    assert "prompt mix measured: SCV 0.0" in m_narrow and "prompt mix measured: SCV" in m_wide
    n_none, m_none = decide(None)
    assert "prompt mix assumed (no prompt-length histogram)" in m_none
    assert n_narrow <= n_none, "the assumed mix (SCV 1, tail 3x) is wider than a fixed length"
    assert "only 6 requests in the window" in decide(_length_buckets(narrow, 0.1))[1]
    assert "no requests in the window" in decide(_length_buckets(narrow, 0.0))[1]
    off = replace(POLICY, measure_prompt_mix=False)
    s = replace(sig(100.0, load=load), prompt_length_buckets=_length_buckets(wide, 100.0))
    decision, _ = off.decide(obs(100.0, s, (1, 1)), off.initial_state(SPEC), SPEC)
    assert decision.prefill.desired_replicas == n_none and "prompt mix" not in decision.prefill.message


def _arriving(s: Signals, rate_per_s: float | None, prompt_tokens: float | None) -> Signals:
    """``s`` with the proxy's arrival counters reading ``rate_per_s`` requests of ``prompt_tokens`` each."""
    return replace(s, arrived_request_rate_per_s=rate_per_s,
                   arrived_prompt_tokens_per_s=None if rate_per_s is None or prompt_tokens is None
                   else rate_per_s * prompt_tokens)  # fmt: skip


def test_demand_is_read_where_requests_arrive() -> None:
    """The prompts grow 3x while served work still shows the old ones (prefill counts a prompt when it is done):
    read at arrival, the new prompts size prefill at once; from served work they do not. The message says which."""
    s = sig(0.0, LOAD)
    on = replace(POLICY, read_arrivals=True)
    arrived, _ = on.decide(obs(0.0, _arriving(s, 100.0, 3000.0)), on.initial_state(SPEC), SPEC)
    served, _ = on.decide(obs(0.0, s), on.initial_state(SPEC), SPEC)
    assert served.prefill.desired_replicas == P_NEED
    need = prefill_replicas_needed(PROFILE, Load(100.0, 3000.0, 200.0).scaled(1.1), 0.85, 0.99, 64)
    assert arrived.prefill.desired_replicas == need > P_NEED, arrived.prefill.message
    assert "demand read at arrival: 100.0 req/s, prompt 3000 tok" in arrived.prefill.message
    assert "demand read from served work (no arrival counter)" in served.prefill.message
    off = replace(POLICY, read_arrivals=False)
    d, _ = off.decide(obs(0.0, _arriving(s, 100.0, 3000.0)), off.initial_state(SPEC), SPEC)
    assert d.prefill.desired_replicas == P_NEED and "demand read" not in d.prefill.message


@pytest.mark.parametrize(
    ("rate", "prompt", "why"),
    [(math.nan, 1000.0, "arrival rate not a number"), (0.0, 1000.0, "nothing arrived in the window"),
     (100.0, None, "no arrival counter")],
)  # fmt: skip
def test_unusable_arrival_counters_fall_back_to_served_work(rate: float, prompt: float | None, why: str) -> None:
    on = replace(POLICY, read_arrivals=True)
    d, _ = on.decide(obs(0.0, _arriving(sig(0.0, LOAD), rate, prompt)), on.initial_state(SPEC), SPEC)
    assert d.prefill.desired_replicas == P_NEED
    assert f"demand read from served work ({why})" in d.prefill.message, d.prefill.message


def test_queue_growth_is_not_added_to_an_arrival_rate_that_holds_it() -> None:
    """Under a backlog served work is throughput and the queue's growth is the rest of the demand; the arrival
    rate already holds that growth, so it is not added twice: both readings size for the same rate (the headroom
    then applies to all of the arrivals, so the arrival reading may order a pod more, never the growth twice)."""
    served_rate, growth = 100.0, 30.0
    sized, desired = {}, {}
    on = replace(POLICY, read_arrivals=True)
    for name, arrivals in (("served + growth", None), ("arrivals", served_rate + growth)):
        state = on.initial_state(SPEC)
        for i, waiting in enumerate((0.0, 450.0, 900.0)):
            t = 15.0 * i
            s = _arriving(sig(t, p_waiting=waiting), arrivals, LOAD.mean_prompt_tokens)
            d, state = on.decide(obs(t, s), state, SPEC)
        desired[name] = d.prefill.desired_replicas
        sized[name] = float(d.prefill.message.split(" req/s")[0].rsplit(" at ", 1)[1])
    assert abs(sized["arrivals"] - sized["served + growth"]) < growth / 2, sized
    assert P_NEED < desired["served + growth"] <= desired["arrivals"] <= desired["served + growth"] + 1, desired


def _feed(
    policy: PdscalePolicy, ticks: int, load_at: Callable[[int], Load] | None = None, p_waiting: float = 0.0
) -> PolicyState:
    """``ticks`` 15 s ticks at LOAD (or ``load_at(i)``), prefill and decode at their need."""
    state = policy.initial_state(SPEC)
    for i in range(ticks):
        t = 15.0 * i
        load = LOAD if load_at is None else load_at(i)
        _, state = policy.decide(obs(t, sig(t, load, p_waiting=p_waiting)), state, SPEC)
    return state


def test_overshoot_is_filed_only_once_the_trend_is_warm() -> None:
    """The rate window (trend held at 0) plus one trend time constant: a cold trend's misses are not the load's."""
    warm_s = SPEC.metrics.window_s + POLICY.forecast_params.trend_time_constant_s
    cold = _feed(POLICY, int(warm_s // 15))  # the last tick just before warm_s
    assert cold.prompt_tokens_surprise.pending == () and cold.output_tokens_surprise.pending == ()
    warm = _feed(POLICY, int(warm_s // 15) + 1)
    assert len(warm.prompt_tokens_surprise.pending) == 1 and len(warm.output_tokens_surprise.pending) == 1
    # with the old rule (filed once the rate window filled) the cold ticks were filed too
    old = _feed(replace(POLICY, surprise_warmup_trend_constants=0.0), int(warm_s // 15))
    assert len(old.prompt_tokens_surprise.pending) > 1


def test_a_pool_with_its_own_queue_files_no_forecast() -> None:
    """Prefill queued (more waiting than ready pods): its rates are capped throughput, no prefill forecast is
    filed; decode (no backlog) still files. Switched off, the queued prefill files as before."""
    queued = _feed(POLICY, 20, p_waiting=10.0 * P_NEED)
    assert queued.prompt_tokens_surprise.pending == () and queued.output_tokens_surprise.pending
    filed = _feed(replace(POLICY, surprise_skip_queued=False), 20, p_waiting=10.0 * P_NEED)
    assert filed.prompt_tokens_surprise.pending


def _drop(i: int) -> Load:
    """15 min at LOAD, a drop to 8 % of it over one 60 s rate window, then a lull with +-5 % noise."""
    if i < 60:
        return LOAD
    fraction = max(0.08, 1.0 - 0.23 * (i - 59)) * (1.05 if i % 2 else 0.95)
    return Load(LOAD.request_rate_per_s * fraction, LOAD.mean_prompt_tokens, LOAD.mean_output_tokens)


def test_a_drop_does_not_raise_the_headroom_with_the_level_within_sample() -> None:
    """After a sudden drop, classic Holt's level extrapolates the drop below the lull's samples, the forecasts
    filed for the overshoot fall near zero and the headroom goes toward its cap; with ``level_within_sample`` the
    filed forecasts are the lull's load and the headroom its noise."""
    bounded = replace(POLICY, forecast_params=replace(POLICY.forecast_params, level_within_sample=True))
    headroom = {}
    for name, policy in (("bounded", bounded), ("classic", POLICY)):
        state = _feed(policy, 110, _drop)
        filed = [f for _, f, _ in state.prompt_tokens_surprise.pending]
        lull = LOAD.request_rate_per_s * LOAD.mean_prompt_tokens * 0.08
        if name == "bounded":
            assert min(filed) >= 0.9 * lull
        headroom[name] = [policy._headroom(pool, state, down=False)[0] for pool in (Pool.PREFILL, Pool.DECODE)]
    assert all(h <= 1.25 for h in headroom["bounded"])
    assert all(h >= 1.5 for h in headroom["classic"])  # x1.85 prefill, x2.50 (the cap) decode


def test_an_overshoot_seen_raises_the_headroom_before_the_evidence_is_complete() -> None:
    """Before min_evidence_s, a load that jumped to 2x its forecast raises the headroom above the fixed one
    (``headroom_early``), trusted in proportion to the evidence behind it: more as more forecasts are checked,
    never beyond the cap; a steady load keeps the fixed one; switched off, the jump is ignored until then."""
    fixed_up = 1.0 + POLICY.load_headroom
    assert POLICY.surprise is not None

    def jump(i: int) -> Load:
        return LOAD.scaled(2.0) if i >= 16 else LOAD

    steady = _feed(POLICY, 26)
    assert steady.prompt_tokens_surprise.evidence_s < POLICY.surprise.min_evidence_s
    assert POLICY._headroom(Pool.PREFILL, steady, down=False) == (fixed_up, "fixed")
    early, later = _feed(POLICY, 26, jump), _feed(POLICY, 38, jump)
    assert later.prompt_tokens_surprise.evidence_s < POLICY.surprise.min_evidence_s
    up, source = POLICY._headroom(Pool.PREFILL, early, down=False)
    up_later, _ = POLICY._headroom(Pool.PREFILL, later, down=False)
    assert fixed_up < up < up_later < 1.0 + POLICY.headroom_cap and "so far" in source
    down, _ = POLICY._headroom(Pool.PREFILL, later, down=True)
    assert down >= up_later + POLICY.headroom_gap
    off = replace(POLICY, headroom_early=False)
    assert off._headroom(Pool.PREFILL, _feed(off, 38, jump), down=False) == (fixed_up, "fixed")


def test_unmeasured_workload_is_sized_at_the_cautious_prior() -> None:
    """A fresh policy has checked no forecast yet, so it sizes at the default prior, x1.35: one start-up of an
    unmeasured load's rise is not yet known to be small (pdscale missed diurnal's and the Azure traces' first
    minutes at x1.10). The pinned cases above keep x1.10, which sizes for less."""
    default = PdscalePolicy(profile=PROFILE)
    assert (default.load_headroom, default.load_headroom_down) == (0.35, 0.45)
    d, _ = default.decide(obs(0.0, sig(0.0, BIG)), default.initial_state(SPEC), SPEC)
    need = prefill_replicas_needed(PROFILE, BIG.scaled(1.35), 0.85, 0.99, 64)
    assert d.prefill.desired_replicas == need > P_BIG, d.prefill.message
    assert "headroom x1.35" in d.prefill.message


def _decode_sized_rate(message: str) -> float:
    found = re.search(r"model needs \d+ at ([\d.]+) req/s", message)
    assert found, message
    return float(found.group(1))


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("prompt_tokens", [12_000.0, 36_000.0, 100_000.0])
def test_a_backlog_of_few_long_prompts_orders_no_more_pods_than_prompts(k: int, prompt_tokens: float) -> None:
    """A prompt is prefilled by one pod (chunked prefill splits it into steps, not across pods): k waiting prompts
    keep at most k more pods busy and drain no faster than one prompt's prefill, whatever their tokens over the
    drain deadline add up to. k long prompts to drain within 0.1 s (shorter than one's prefill) order at most
    the arrivals' pods + k, the message gives the prompt's prefill time as the drain time, and decode is told
    the backlog arrives no faster. Switched off, the token sum over 0.1 s is ordered (more pods)."""
    long_prompts = Load(2.0, prompt_tokens, 400.0)
    spec = replace(SPEC, ttft=replace(SPEC.ttft, target_s=20.0))
    policy = replace(POLICY, backlog_drain_s=0.1, backlog_tolerated=False)  # the queue is to drain, all of it
    arrivals_need = prefill_replicas_needed(PROFILE, long_prompts.scaled(1.1), 17.0, 0.99, 64)
    service_s = prefill_queue_service_s(PROFILE, prompt_tokens, PrefillModel().prompt_scv)
    assert service_s > policy.backlog_drain_s  # the premise: the deadline is shorter than one prompt's prefill
    desired, decode_rate = {}, {}
    for name, bounded in (("bounded", True), ("unbounded", False)):
        pol = replace(policy, backlog_pods_per_prompt=bounded)
        state = pol.initial_state(spec)
        for i in range(3):  # a steady queue of k: no growth, so k prompts when new pods are ready
            t = 15.0 * i
            o = obs(t, sig(t, long_prompts, ttft=5.0, p_waiting=k), p=(arrivals_need, arrivals_need))
            d, state = pol.decide(o, state, spec)
        desired[name] = d.prefill.desired_replicas
        decode_rate[name] = _decode_sized_rate(d.decode.message)
        assert (f"(drained in {service_s:.3g}s)" in d.prefill.message) is bounded, d.prefill.message
    assert desired["bounded"] <= arrivals_need + k < desired["unbounded"], desired
    assert decode_rate["bounded"] == pytest.approx(decode_rate["unbounded"] - k / 0.1 + k / service_s, abs=0.1)


@pytest.mark.parametrize(("waiting", "tolerated"), [(80.0, True), (400.0, False)])
def test_a_backlog_the_ttft_target_tolerates_is_not_drained_by_new_pods(waiting: float, tolerated: bool) -> None:
    """Long prompts (36k tokens, 6 req/s) under a 20 s TTFT target: 80 queued prompts wait ~13 s (Little's law),
    which the target less a tail prompt's own prefill (~2 s) tolerates, so the order is the arrivals' alone, where
    with the rule off the queue is drained within backlog_drain_s on top. 400 queued prompts (67 s) are drained
    either way, less the part the target tolerates."""
    long_prompts = Load(6.0, 36_000.0, 400.0)
    spec = replace(SPEC, ttft=replace(SPEC.ttft, target_s=20.0))
    arrivals_need = prefill_replicas_needed(PROFILE, long_prompts.scaled(1.1), 17.0, 0.99, 64)
    desired = {}
    for on in (True, False):
        pol = replace(POLICY, backlog_tolerated=on)
        state = pol.initial_state(spec)
        for i in range(3):  # a steady queue: no growth
            t = 15.0 * i
            o = obs(t, sig(t, long_prompts, ttft=5.0, p_waiting=waiting), p=(arrivals_need, arrivals_need))
            d, state = pol.decide(o, state, spec)
        desired[on] = d.prefill.desired_replicas
        if on:
            message = d.prefill.message
    if tolerated:
        assert desired[True] == arrivals_need < desired[False], desired
    else:
        assert arrivals_need < desired[True] <= desired[False], desired
        assert re.search(r"400 when new pods are ready \(\d+ within the TTFT target, the rest drained in", message)


def test_a_large_backlog_of_short_prompts_is_not_bounded_by_its_count() -> None:
    """The bound is the prompts' count: a queue of 900 chat prompts orders what draining them takes, as before."""
    state = POLICY.initial_state(SPEC)
    for i, waiting in enumerate((0.0, 450.0, 900.0)):
        t = 15.0 * i
        d, state = POLICY.decide(obs(t, sig(t, p_waiting=waiting)), state, SPEC)
    off = replace(POLICY, backlog_pods_per_prompt=False)
    state = off.initial_state(SPEC)
    for i, waiting in enumerate((0.0, 450.0, 900.0)):
        t = 15.0 * i
        d_off, state = off.decide(obs(t, sig(t, p_waiting=waiting)), state, SPEC)
    assert d.prefill.desired_replicas == d_off.prefill.desired_replicas > P_NEED, d.prefill.message
    assert "more pods" not in d.prefill.message


def test_decode_receives_prefills_queue_no_faster_than_prefill_can_finish_it() -> None:
    """Prefill held at its maximum with a queue growing 30 req/s: decode is told the queue reaches it at most as
    fast as the pods prefill will have finish prompts beyond the arrivals, not as fast as the queue asks to be
    drained. Switched off, decode is told the whole drain rate."""
    spec = replace(SPEC, prefill=replace(SPEC.prefill, max_replicas=P_NEED))
    service_s = prefill_queue_service_s(PROFILE, LOAD.mean_prompt_tokens, PrefillModel().prompt_scv)
    spare_per_s = P_NEED / service_s - LOAD.request_rate_per_s
    upstream = {}
    for name, bounded in (("bounded", True), ("unbounded", False)):
        pol = replace(POLICY, backlog_pods_per_prompt=bounded)
        rates = []
        for waiting in ((0.0, 0.0, 0.0), (0.0, 450.0, 900.0)):
            state = pol.initial_state(spec)
            for i, w in enumerate(waiting):
                t = 15.0 * i
                d, state = pol.decide(obs(t, sig(t, p_waiting=w)), state, spec)
            rates.append(_decode_sized_rate(d.decode.message))
        upstream[name] = rates[1] - rates[0]
    assert 0 < spare_per_s < upstream["unbounded"] - 1, (spare_per_s, upstream)
    assert upstream["bounded"] == pytest.approx(spare_per_s, abs=0.1), upstream


def test_a_ramp_at_the_start_is_ordered_for_sooner_with_the_young_trend_corrected() -> None:
    """A load flat through the first rate window (the trend's warm-up), then rising by 2 % of it every 15 s (suite
    conv-s2's start is flat for a minute, then ramps): the trend's bias correction
    (``ForecastParams.trend_bias_correction``) reads the young trend at its weight, so prefill is ordered for the
    ramp ticks earlier than with the plain trend, never later, and once the trend is old both size alike."""
    base = LOAD.scaled(6.0)
    p_need = prefill_replicas_needed(PROFILE, base.scaled(1.1), 0.85, 0.99, 64)
    d_need = decode_replicas_needed(PROFILE, base.scaled(1.1), 0.0425, 0.99, 64)

    def desired(policy: PdscalePolicy, ticks: int) -> list[int]:
        state, out = policy.initial_state(SPEC), []
        for i in range(ticks):
            t = 15.0 * i
            load = base.scaled(1.0 + 0.02 * max(0, i - 4))
            decision, state = policy.decide(obs(t, sig(t, load), p=(p_need, p_need), d=(d_need, d_need)), state, SPEC)
            out.append(decision.prefill.desired_replicas)
        return out

    plain = replace(POLICY, forecast_params=replace(POLICY.forecast_params, trend_bias_correction=False))
    assert POLICY.forecast_params.trend_bias_correction
    corrected_desired, plain_desired = desired(POLICY, 30), desired(plain, 30)
    assert all(c >= p for c, p in zip(corrected_desired, plain_desired, strict=True))
    assert any(c > p for c, p in zip(corrected_desired, plain_desired, strict=True))
    assert corrected_desired[-1] == plain_desired[-1] > p_need


def _measured_state(policy: PdscalePolicy, ticks: int = 80) -> PolicyState:
    """Both pools' overshoot measured (by default 20 minutes of forecasts, each overshot by 10 %)."""
    assert policy.surprise is not None
    measured = _overshooting(0.1, ticks, policy.surprise)
    return replace(PolicyState(), prompt_tokens_surprise=measured, output_tokens_surprise=measured)


def test_the_measured_overshoot_sizes_before_it_may_cut() -> None:
    """Between ``SurpriseParams.min_evidence_s`` and ``cut_min_evidence_s`` of checked forecasts the measured
    overshoot sizes the headroom, but the peak ceiling does not yet cap it (nor are starting pods cancelled, see the
    next test): a few minutes of a bursty load do not yet show how high its next burst goes. Past
    ``cut_min_evidence_s`` the ceiling applies."""
    assert POLICY.surprise is not None
    early, late = _overshooting(1.0, 35, POLICY.surprise), _overshooting(1.0, 80, POLICY.surprise)
    assert POLICY.surprise.min_evidence_s <= early.evidence_s < POLICY.cut_min_evidence_s <= late.evidence_s
    at_peak = 2000.0  # the load at the highest it has been (each forecast of 1000 was overshot to 2000)
    headroom = {}
    for name, series in (("early", early), ("late", late)):
        state = replace(PolicyState(), prompt_tokens_surprise=series)
        headroom[name] = POLICY._headroom(Pool.PREFILL, state, down=False, forecast_tokens_per_s=at_peak)
    (early_up, early_source), (late_up, late_source) = headroom["early"], headroom["late"]
    assert "so far" not in early_source and "peak seen" not in early_source, early_source
    assert early_up >= 1.0 + 0.9  # the overshoot measured: x2
    assert "peak seen" in late_source
    assert late_up == pytest.approx(1.0 + max(POLICY.headroom_floor_up, POLICY.headroom_peak_margin or 0.0))


@pytest.mark.parametrize(
    "case", ["cancelled", "rule off", "unmeasured", "too little evidence to cut", "queued", "above the ready pods"]
)
def test_starting_pods_no_longer_needed_are_cancelled(case: str) -> None:
    """Eight prefill pods are starting on top of the P_NEED ready ones, and the load is steady at what P_NEED
    serves: the starting pods are withdrawn at once, past the scale-down stabilization window (HPA defaults here),
    and stay withdrawn on the next tick. Never below the ready pods; not with the rule off, not before the
    workload's overshoot holds ``cut_min_evidence_s`` of evidence (on bursty loads the next burst finds them), not
    while prompts are queued."""
    spec = AutoscalerSpec()  # the default 300 s scale-down window
    policy = replace(POLICY, cancel_unneeded_starting=case != "rule off")
    if case == "unmeasured":
        state = policy.initial_state(spec)
    else:
        state = _measured_state(policy, 35 if case == "too little evidence to cut" else 80)
    ready = P_NEED + 3 if case == "above the ready pods" else P_NEED
    waiting = 40.0 if case == "queued" else 0.0
    t0 = 1500.0
    o = obs(t0, sig(t0, p_waiting=waiting), p=(P_NEED + 8, ready))
    d, state = policy.decide(o, state, spec)
    if case in ("rule off", "unmeasured", "too little evidence to cut", "queued"):
        assert d.prefill.desired_replicas == P_NEED + 8, d.prefill.message
        assert "cancelled" not in d.prefill.message
        return
    assert d.prefill.desired_replicas == ready < P_NEED + 8, d.prefill.message
    assert d.prefill.reason == Reason.SCALE_DOWN
    assert f"{P_NEED + 8 - ready} starting pods no longer needed: cancelled" in d.prefill.message
    o = obs(t0 + 15.0, sig(t0 + 15.0), p=(ready, ready))
    d, state = policy.decide(o, state, spec)
    assert d.prefill.desired_replicas == ready, d.prefill.message


@pytest.mark.parametrize("case", ["withdrawn", "rule off", "still queued"])
def test_an_order_the_next_tick_does_not_confirm_is_withdrawn(case: str) -> None:
    """Before the overshoot is measured: steady load, then one tick sees 300 prompts queued and orders pods for
    them; on the next tick the queue is gone and the pods still starting are withdrawn (never below the ready pods),
    unless the rule is off or prompts are still queued."""
    policy = replace(POLICY, withdraw_unconfirmed=case != "rule off")
    state = policy.initial_state(SPEC)
    t = 0.0
    for _ in range(10):  # the rate window fills at a steady load
        _, state = policy.decide(obs(t, sig(t)), state, SPEC)
        t += 15.0
    d, state = policy.decide(obs(t, sig(t, p_waiting=300.0)), state, SPEC)
    ordered = d.prefill.desired_replicas
    assert ordered > P_NEED, d.prefill.message
    t += 15.0
    after = 5.0 if case == "still queued" else 0.0
    d, state = policy.decide(obs(t, sig(t, p_waiting=after), p=(ordered, P_NEED)), state, SPEC)
    if case == "withdrawn":
        assert P_NEED <= d.prefill.desired_replicas < ordered, d.prefill.message
        assert "starting pods ordered on the tick before and not confirmed by this one: cancelled" in d.prefill.message
    else:
        assert d.prefill.desired_replicas == ordered, d.prefill.message

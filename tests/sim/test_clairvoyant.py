"""The clairvoyant bound: pdscale's capacity model on the true load of each window, ordered one start-up ahead."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.capacity import Load
from autoscaler.core.policy import PdscalePolicy
from autoscaler.core.spec import AutoscalerSpec, PoolSpec
from autoscaler.core.types import Observation, Pool, PoolReplicas, Signals
from autoscaler.profiles import load_profile
from sim.clairvoyant import ClairvoyantPolicy, ClairvoyantSchedule, clairvoyant_schedule, window_loads
from sim.workload import Workload, generate

PROFILE = load_profile("llama-3.1-8b-h100-tp1")
SPEC = AutoscalerSpec(prefill=PoolSpec(max_replicas=32), decode=PoolSpec(max_replicas=32), pod_startup_s=120.0)


def _policy(needs: list[int], lookahead_s: float = 135.0) -> ClairvoyantPolicy:
    schedule = ClairvoyantSchedule(60.0, tuple(needs), tuple(needs), tuple(float(n) for n in needs))
    return ClairvoyantPolicy(schedule, lookahead_s)


@pytest.mark.parametrize(
    ("time_s", "expected"),
    [
        pytest.param(0.0, 1, id="peak-beyond-lookahead"),  # windows 0-2 begin before 135 s
        pytest.param(60.0, 5, id="orders-a-start-up-ahead"),  # window 3 (180 s) begins before 195 s
        pytest.param(200.0, 5, id="holds-through-the-peak"),
        pytest.param(240.0, 2, id="releases-after-it"),  # windows 4-6: the peak window 3 is over
        pytest.param(10_000.0, 2, id="past-the-end-keeps-the-last"),
    ],
)
def test_want_covers_every_window_a_later_order_could_not(time_s: float, expected: int) -> None:
    assert _policy([1, 1, 1, 5, 2, 2, 2]).want(Pool.PREFILL, time_s) == expected


def test_decide_orders_the_want_without_looking_at_metrics() -> None:
    policy = _policy([1, 1, 1, 5, 2, 2, 2])
    obs = Observation(60.0, Signals(60.0, error="no metrics at all"), PoolReplicas(1, 1), PoolReplicas(1, 1))
    decision, state = policy.decide(obs, policy.initial_state(SPEC), SPEC)
    assert state is None
    assert decision.prefill.desired_replicas == decision.decode.desired_replicas == 5
    assert "135s" in decision.prefill.message


def test_window_loads_are_the_truth() -> None:
    w = Workload("w", np.array([1.0, 2.0, 61.0]), np.array([100, 300, 50]), np.array([10, 30, 5]), 180.0)
    loads = window_loads(w, 60.0)
    # prompts 100 and 300: SCV (100² + 300²)/2 / 200² - 1 = 0.25; decode context Σo(p + o/2)/Σo = 262.5 tokens,
    # 1.25x the means' 200 + 20/2
    assert loads[0] == Load(2 / 60.0, 200.0, 20.0, pytest.approx(1.25), prompt_scv=pytest.approx(0.25))
    assert loads[1] == Load(1 / 60.0, 50.0, 5.0, 1.0, prompt_scv=0.0)
    assert loads[2].request_rate_per_s == 0.0  # no arrivals
    with_tail = window_loads(w, 60.0, 0.99)
    assert with_tail[0].tail_prompt_tokens == pytest.approx(298.0)  # numpy's linear quantile of (100, 300)
    assert with_tail[1].tail_prompt_tokens == 50.0
    assert with_tail[1].arrival_scv is None  # one arrival: no dispersion
    # arrival variability = variance / mean of the counts in 1 s bins: 3 at once and 2 at once in 60 bins give
    # E[c] = 5/60, E[c²] = 13/60, so (13/60 - 25/3600) / (5/60) = 755/300; evenly spread arrivals give 0
    bursty = Workload("b", np.array([0.0, 0.0, 0.0, 30.0, 30.0]), np.full(5, 100), np.full(5, 10), 60.0)
    assert window_loads(bursty, 60.0, 0.99)[0].arrival_scv == pytest.approx(755 / 300)
    even = Workload("e", np.arange(60) + 0.5, np.full(60, 100), np.full(60, 10), 60.0)
    assert window_loads(even, 60.0, 0.99)[0].arrival_scv == pytest.approx(0.0)


def test_schedule_sizes_each_window_with_the_policy_model() -> None:
    """A load step: the schedule is the policy's own sizing of each window's true load at target x (1 - margin)."""
    w = generate("step:rate=5,to=40,at=300,duration=600,prompt=lognormal(2000,0.5),output=exp(200)", seed=1)
    policy = PdscalePolicy(profile=PROFILE)
    schedule = clairvoyant_schedule(w, policy, SPEC, 60.0)
    loads = window_loads(w, 60.0, SPEC.ttft.percentile)
    for i, load in enumerate(loads):
        p = policy.needed(Pool.PREFILL, load, SPEC.ttft.target_s * (1 - policy.margin_up), SPEC)
        d = policy.needed(Pool.DECODE, load, SPEC.itl.target_s * (1 - policy.margin_up), SPEC)
        assert schedule.prefill[i] == max(1, p) and schedule.decode[i] == max(1, d)
    assert max(schedule.prefill[:5]) < min(schedule.prefill[5:])

"""``dynamo-sla``: Dynamo's G2 SLA planner formulas on a hand-checkable profile."""

from __future__ import annotations

import math

import pytest

from autoscaler.core.latency import LatencyProfile, PolyModel
from autoscaler.core.spec import SLO, AutoscalerSpec, PoolSpec
from autoscaler.core.types import Observation, PoolReplicas, Signals
from sim.baselines.dynamo import (
    ADJUSTED,
    ROLLING_OUT,
    SKIPPED,
    WAITING,
    DecodeInterpolator,
    IntervalMetrics,
    PrefillInterpolator,
    make_dynamo_sla,
    plan_replicas,
    prefill_ttft_s,
)
from sim.policies import policy_names

# prefill: 10 ms + 0.1 ms/token (linear); decode: 10 ms + 1 us per context token + 0.1 ms per sequence
PROFILE = LatencyProfile(
    name="toy",
    source="test",
    step=PolyModel(0.01, 1e-4, 0.0, 0.01, 1e-6, 1e-4),
    gpus_per_replica=1,
    kv_bytes_per_token=1,
    kv_capacity_tokens=100_000,
    max_num_seqs=256,
    max_num_batched_tokens=8192,
)
SPEC = AutoscalerSpec(prefill=PoolSpec(1, 50), decode=PoolSpec(1, 50), itl=SLO(0.99, 0.05))


def test_registered() -> None:
    assert "dynamo-sla" in policy_names()


def test_prefill_profile_is_chunked_batch_one() -> None:
    assert prefill_ttft_s(PROFILE, 1000) == pytest.approx(0.01 + 0.1)
    assert prefill_ttft_s(PROFILE, 10000) == pytest.approx((0.01 + 0.8192) + (0.01 + 0.1808))


def test_prefill_interpolator_matches_profile_and_clamps() -> None:
    interp = PrefillInterpolator.from_profile(PROFILE)
    assert interp.interpolate_ttft_s(1000) == pytest.approx(0.11, rel=1e-3)
    assert interp.interpolate_thpt_per_gpu(1000) == pytest.approx(1000 / 0.11, rel=1e-3)
    assert interp.interpolate_ttft_s(1e9) == pytest.approx(interp.interpolate_ttft_s(32768))


def test_decode_best_throughput_scans_from_high_kv() -> None:
    interp = DecodeInterpolator.from_profile(PROFILE)
    loose = interp.find_best_throughput_per_gpu(1.0, 1000)
    tight = interp.find_best_throughput_per_gpu(0.02, 1000)
    assert loose > tight > 0
    # index lookup truncates ctx 1000 to grid column 2 (ctx 64 + 2 × 330.3 = 724.6):
    # 0.01 + B × (724.6e-6 + 1e-4) <= 0.02 -> B <= 12
    ctx = 64 + 2 * (32768 - 64) / 99
    assert tight == pytest.approx(12 / (0.01 + 12 * (ctx * 1e-6 + 1e-4)), rel=1e-6)
    assert interp.find_best_throughput_per_gpu(1e-6, 1000) == float(interp.thpt_per_gpu[0, 2])


METRICS = IntervalMetrics(num_req=1800, isl=1000, osl=200, ttft_s=0.11, itl_s=0.02, request_duration_s=4.0)


@pytest.mark.parametrize(
    ("metrics", "budget", "expected_p"),
    [
        # rate 10/s × 1000 tokens / (1000/0.11 tok/s) = 1.1 -> 2 prefill engines
        pytest.param(METRICS, None, 2, id="profile-ttft-matches-p-corr-1"),
        pytest.param(
            IntervalMetrics(1800, 1000, 200, 0.055, 0.02, 4.0), None, 1, id="fast-ttft-shrinks-prefill"
        ),
        pytest.param(
            IntervalMetrics(1800, 1000, 200, 5.0, 0.02, 4.0), None, 2, id="slow-ttft-cannot-grow-min-1"
        ),
    ],
)
def test_prefill_formula(metrics: IntervalMetrics, budget: int | None, expected_p: int) -> None:
    num_p, _, p_corr, _ = plan_replicas(
        metrics,
        prefill=PrefillInterpolator.from_profile(PROFILE),
        decode=DecodeInterpolator.from_profile(PROFILE),
        interval_s=180,
        ready_decode=2,
        itl_target_s=0.05,
        gpus_per_engine=1,
        gpu_budget=budget,
    )
    assert num_p == expected_p
    assert p_corr == pytest.approx(metrics.ttft_s / 0.11, rel=1e-3)


def test_decode_grows_when_observed_itl_exceeds_profile() -> None:
    args = dict(
        prefill=PrefillInterpolator.from_profile(PROFILE),
        decode=DecodeInterpolator.from_profile(PROFILE),
        interval_s=180.0,
        ready_decode=2,
        itl_target_s=0.05,
        gpus_per_engine=1,
    )
    _, d_ok, _, _ = plan_replicas(METRICS, **args)  # type: ignore[arg-type]
    slow = IntervalMetrics(1800, 1000, 200, 0.11, 0.2, 40.0)
    _, d_slow, _, d_corr = plan_replicas(slow, **args)  # type: ignore[arg-type]
    assert d_corr > 1
    assert d_slow > d_ok >= 1


def test_budget_clamp_is_proportional() -> None:
    big = IntervalMetrics(180 * 100, 4000, 400, 0.5, 0.03, 12.0)
    kwargs = dict(
        prefill=PrefillInterpolator.from_profile(PROFILE),
        decode=DecodeInterpolator.from_profile(PROFILE),
        interval_s=180.0,
        ready_decode=4,
        itl_target_s=0.05,
        gpus_per_engine=1,
    )
    p, d, _, _ = plan_replicas(big, **kwargs)  # type: ignore[arg-type]
    assert p + d > 10
    pb, db, _, _ = plan_replicas(big, gpu_budget=10, **kwargs)  # type: ignore[arg-type]
    assert pb + db == 10
    assert pb == max(1, round(p * 10 / (p + d)))


def obs(
    t: float, rate: float | None = 10.0, p: tuple[int, int] = (3, 3), d: tuple[int, int] = (3, 3)
) -> Observation:
    sig = Signals(
        t,
        ttft_mean_s=0.11 if rate else None,
        itl_mean_s=0.02 if rate else None,
        request_rate_per_s=rate,
        prompt_tokens_per_s=None if rate is None else rate * 1000,
        output_tokens_per_s=None if rate is None else rate * 200,
    )
    return Observation(t, sig, PoolReplicas(*p), PoolReplicas(*d))


def run(policy, observations):  # type: ignore[no-untyped-def]
    state = policy.initial_state(SPEC)
    out = []
    for o in observations:
        decision, state = policy.decide(o, state, SPEC)
        out.append(decision)
    return out


def test_adjusts_every_interval_only() -> None:
    policy = make_dynamo_sla(PROFILE, SPEC)
    decisions = run(policy, [obs(t) for t in range(0, 375, 15)])
    reasons = [d.prefill.reason for d in decisions]
    assert reasons.count(ADJUSTED) == 2
    assert [i * 15 for i, r in enumerate(reasons) if r == ADJUSTED] == [180, 360]
    assert all(r == WAITING for r in reasons[:12])
    assert decisions[12].prefill.desired_replicas == math.ceil(10 * 0.11)


def test_missing_metric_skips_the_whole_interval() -> None:
    policy = make_dynamo_sla(PROFILE, SPEC)
    observations = [obs(t, rate=None if t == 90 else 10.0) for t in range(0, 195, 15)]
    decisions = run(policy, observations)
    assert decisions[-1].prefill.reason == SKIPPED
    assert not decisions[-1].prefill.changes


def test_does_not_act_while_rolling_out() -> None:
    policy = make_dynamo_sla(PROFILE, SPEC)
    decisions = run(policy, [obs(t, p=(5, 3)) for t in range(0, 195, 15)])
    assert decisions[-1].prefill.reason == ROLLING_OUT


def test_unknown_param() -> None:
    with pytest.raises(ValueError, match="bogus"):
        make_dynamo_sla(PROFILE, SPEC, bogus=1)

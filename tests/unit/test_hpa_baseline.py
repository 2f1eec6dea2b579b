"""The ``hpa`` baseline: replica-calculator cases ported from kubernetes' replica_calculator_test.go and
horizontal_test.go (External metrics), plus the controller semantics the baseline relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.behavior import BehaviorState
from autoscaler.core.spec import SLO, AutoscalerSpec, PoolSpec
from autoscaler.core.types import Observation, Pool, PoolReplicas, Signals
from sim.baselines.hpa import (
    FAILED_GET_EXTERNAL_METRIC,
    HPAPoolState,
    HPAState,
    external_average_value_replicas,
    external_value_replicas,
    make_hpa,
    milli_value,
)
from sim.policies import make_policy, policy_names


class TestMilliValue:
    @pytest.mark.parametrize(
        ("value", "milli"),
        [
            pytest.param(0.05, 50, id="0.05-is-50m-not-51m"),
            pytest.param(8.6, 8600, id="8.6"),
            pytest.param(0.0001, 1, id="rounds-up-below-1m"),
            pytest.param(0.0312, 32, id="rounds-up"),
            pytest.param(0.0, 0, id="zero"),
        ],
    )
    def test_case(self, value: float, milli: int) -> None:
        assert milli_value(value) == milli

    def test_rejects_nan(self) -> None:
        with pytest.raises(ValueError, match="finite"):
            milli_value(float("nan"))


class TestReplicaCalcExternalValue:
    @pytest.mark.parametrize(
        ("spec", "ready", "usage", "target", "expected"),
        [
            pytest.param(1, 1, 8.6, 4.4, 2, id="ScaleUpCMExternal"),
            pytest.param(3, 1, 8.6, 4.4, 2, id="ScaleUpCMExternalIgnoresUnreadyPods"),
            pytest.param(5, 5, 8.6, 14.334, 3, id="ScaleDownCMExternal"),
            pytest.param(3, 3, 8.6, 8.888, 3, id="ToleranceCMExternal"),
            pytest.param(3, 3, 8.6, 6.666, 4, id="horizontal-TestScaleUpCMExternal"),
            pytest.param(5, 5, 8.6, 14.4, 3, id="horizontal-TestScaleDownCMExternal"),
            pytest.param(0, 0, 8.6, 4.4, 2, id="from-zero-ceil-ratio"),
            pytest.param(4, 0, 8.6, 4.4, 0, id="no-ready-pods-gives-zero-as-upstream"),
        ],
    )
    def test_case(self, spec: int, ready: int, usage: float, target: float, expected: int) -> None:
        assert (
            external_value_replicas(spec_replicas=spec, ready_pods=ready, usage=usage, target=target)
            == expected
        )

    def test_rejects_zero_target(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            external_value_replicas(spec_replicas=1, ready_pods=1, usage=1.0, target=0.0)


class TestReplicaCalcExternalAverageValue:
    @pytest.mark.parametrize(
        ("status", "usage", "per_pod", "expected"),
        [
            pytest.param(3, 8.6, 2.15, 4, id="ScaleUpPerPodCMExternal"),
            pytest.param(5, 8.6, 2.867, 3, id="ScaleDownPerPodCMExternal"),
            pytest.param(3, 8.6, 2.9, 3, id="TolerancePerPodCMExternal"),
            pytest.param(3, 8.6, 2.222, 4, id="horizontal-TestScaleUpPerPodCMExternal"),
            pytest.param(0, 12.0, 5.0, 3, id="zero-status-replicas"),
        ],
    )
    def test_case(self, status: int, usage: float, per_pod: float, expected: int) -> None:
        got = external_average_value_replicas(status_replicas=status, usage=usage, target_per_pod=per_pod)
        assert got == expected


SPEC = AutoscalerSpec(
    prefill=PoolSpec(min_replicas=1, max_replicas=20),
    decode=PoolSpec(min_replicas=1, max_replicas=20),
    ttft=SLO(0.99, 1.0),
    itl=SLO(0.99, 0.05),
)
READY = HPAState(HPAPoolState(initialized=True), HPAPoolState(initialized=True))


def obs(
    t_s: float,
    ttft: float | None,
    itl: float | None,
    p: tuple[int, int] = (4, 4),
    d: tuple[int, int] = (4, 4),
) -> Observation:
    return Observation(t_s, Signals(t_s, ttft_s=ttft, itl_s=itl), PoolReplicas(*p), PoolReplicas(*d))


class TestHPAPolicy:
    def test_registered(self) -> None:
        assert "hpa" in policy_names()
        assert make_policy("hpa", None, SPEC).name == "hpa"  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("ttft", "itl", "p_desired", "d_desired"),
        [
            pytest.param(2.0, 0.025, 8, 4, id="ttft-double-prefill-doubles-itl-half-stabilized"),
            pytest.param(1.05, 0.05, 4, 4, id="inside-tolerance"),
            pytest.param(9.0, 0.2, 8, 8, id="up-limited-to-100-percent-per-15s"),
        ],
    )
    def test_first_decisions(self, ttft: float, itl: float, p_desired: int, d_desired: int) -> None:
        policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
        decision, _ = policy.decide(obs(0.0, ttft, itl), policy.initial_state(SPEC), SPEC)
        assert (decision.prefill.desired_replicas, decision.decode.desired_replicas) == (p_desired, d_desired)

    def test_unready_pods_do_not_count(self) -> None:
        """ceil(2 × 2 ready) = 4 < 6 ordered: upstream proposes a scale-down while the SLO is breached; only the
        stabilization window (here seeded at 6) holds it."""
        policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
        decision, _ = policy.decide(obs(0.0, 2.0, 0.05, p=(6, 2)), READY, SPEC)
        assert decision.prefill.desired_replicas == 4
        decision, _ = policy.decide(obs(0.0, 2.0, 0.05, p=(6, 2)), policy.initial_state(SPEC), SPEC)
        assert (decision.prefill.desired_replicas, decision.prefill.reason) == (6, "ScaleDownStabilized")

    @pytest.mark.parametrize(
        ("ttft", "itl", "error"),
        [
            pytest.param(None, None, None, id="empty-metric"),
            pytest.param(float("nan"), float("nan"), None, id="nan-metric"),
            pytest.param(None, None, "prometheus unreachable", id="source-error"),
        ],
    )
    def test_missing_metric_never_scales(
        self, ttft: float | None, itl: float | None, error: str | None
    ) -> None:
        policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
        o = Observation(
            100.0, Signals(100.0, ttft_s=ttft, itl_s=itl, error=error), PoolReplicas(8, 8), PoolReplicas(8, 8)
        )
        decision, _ = policy.decide(o, READY, SPEC)
        for pd in (decision.prefill, decision.decode):
            assert pd.desired_replicas == 8
            assert pd.reason == FAILED_GET_EXTERNAL_METRIC

    def test_first_sync_seeds_history_so_no_early_scale_down(self) -> None:
        policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
        state = policy.initial_state(SPEC)
        decision, state = policy.decide(obs(0.0, 0.1, 0.005), state, SPEC)
        assert decision.prefill.desired_replicas == 4
        decision, state = policy.decide(obs(15.0, 0.1, 0.005), state, SPEC)
        assert decision.prefill.desired_replicas == 4
        assert decision.prefill.reason == "ScaleDownStabilized"
        decision, _ = policy.decide(obs(315.0, 0.1, 0.005), state, SPEC)
        assert decision.prefill.desired_replicas == 1  # ceil(0.1 × 4) = 1 once the 300 s window has passed

    def test_sync_period_gates_decisions(self) -> None:
        policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
        decision, state = policy.decide(obs(0.0, 2.0, 0.05), READY, SPEC)
        assert decision.prefill.desired_replicas == 8
        decision, _ = policy.decide(obs(5.0, 2.0, 0.05, p=(8, 4)), state, SPEC)
        assert not decision.prefill.changes

    def test_rate_limit_counts_recent_scale_events(self) -> None:
        """Default up policy: max(4 pods, 100 %) per 15 s; an event 10 s ago still counts at the next sync."""
        policy = make_hpa(None, SPEC, sync_period_s=10.0)  # type: ignore[arg-type]
        _, state = policy.decide(obs(0.0, 4.0, 0.05, p=(2, 2)), READY, SPEC)  # 2 -> max(2 + 4, 2 × 2) = 6
        assert state.prefill.behavior.scale_events == ((0.0, 4),)
        decision, _ = policy.decide(obs(10.0, 4.0, 0.05, p=(6, 6)), state, SPEC)
        assert (decision.prefill.desired_replicas, decision.prefill.reason) == (
            6,
            "ScaleUpLimit",
        )  # base 2 again
        decision, _ = policy.decide(obs(20.0, 4.0, 0.05, p=(6, 6)), state, SPEC)
        assert decision.prefill.desired_replicas == 12  # the event left the 15 s period: base 6, 100 %

    def test_replicas_outside_bounds_rescaled_without_metrics(self) -> None:
        policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
        decision, _ = policy.decide(obs(0.0, None, None, p=(30, 30), d=(0, 0)), READY, SPEC)
        assert (decision.prefill.desired_replicas, decision.prefill.reason) == (20, "TooManyReplicas")
        assert decision.decode.reason == "ScalingDisabled"

    def test_legacy_path(self) -> None:
        policy = make_hpa(None, SPEC, legacy=True)  # type: ignore[arg-type]
        decision, state = policy.decide(obs(0.0, 9.0, 0.05, p=(1, 1)), READY, SPEC)
        assert decision.prefill.desired_replicas == 4  # max(2 × 1, 4)
        assert state.prefill.behavior.scale_events == ()

    def test_unknown_param(self) -> None:
        with pytest.raises(ValueError, match="bogus"):
            make_hpa(None, SPEC, bogus=1)  # type: ignore[arg-type]


@given(
    spec_replicas=st.integers(1, 50),
    ready=st.integers(0, 50),
    a=st.floats(0.0, 100.0),
    b=st.floats(0.0, 100.0),
)
def test_worse_metric_never_fewer_replicas(spec_replicas: int, ready: int, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    ready = min(ready, spec_replicas)
    r_lo = external_value_replicas(spec_replicas=spec_replicas, ready_pods=ready, usage=lo, target=1.0)
    r_hi = external_value_replicas(spec_replicas=spec_replicas, ready_pods=ready, usage=hi, target=1.0)
    # the tolerance band returns spec replicas, which can exceed ceil(ratio × ready) with unready pods
    if ready == spec_replicas:
        assert r_lo <= r_hi


def test_behavior_state_is_kept_per_pool() -> None:
    policy = make_hpa(None, SPEC)  # type: ignore[arg-type]
    _, state = policy.decide(obs(0.0, 2.0, 0.05), READY, SPEC)
    assert state.pool(Pool.PREFILL).behavior.scale_events == ((0.0, 4),)
    assert state.pool(Pool.DECODE).behavior.scale_events == ()
    assert isinstance(state.pool(Pool.DECODE).behavior, BehaviorState)

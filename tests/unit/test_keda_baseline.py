"""``keda-queue``: KEDA's Prometheus scaler on waiting requests behind a KEDA-created (behavior-less) HPA."""

from __future__ import annotations

import pytest

from autoscaler.core.spec import AutoscalerSpec, PoolSpec
from autoscaler.core.types import Observation, PoolReplicas, PoolSignals, Signals
from sim.baselines.hpa import FAILED_GET_EXTERNAL_METRIC, HPAPoolState, HPAState
from sim.baselines.keda import make_keda_queue
from sim.policies import policy_names

SPEC = AutoscalerSpec(prefill=PoolSpec(1, 40), decode=PoolSpec(1, 40))
READY = HPAState(HPAPoolState(initialized=True), HPAPoolState(initialized=True))


def obs(
    t_s: float,
    p_wait: float | None,
    d_wait: float | None,
    p: tuple[int, int] = (4, 4),
    d: tuple[int, int] = (4, 4),
    error: str | None = None,
) -> Observation:
    signals = Signals(
        t_s,
        prefill=PoolSignals(waiting_requests=p_wait),
        decode=PoolSignals(waiting_requests=d_wait),
        error=error,
    )
    return Observation(t_s, signals, PoolReplicas(*p), PoolReplicas(*d))


def test_registered() -> None:
    assert "keda-queue" in policy_names()


@pytest.mark.parametrize(
    ("p_wait", "d_wait", "p_desired", "d_desired"),
    [
        pytest.param(40.0, 20.0, 8, 4, id="ceil-sum-over-threshold-5"),
        pytest.param(21.0, 19.0, 4, 4, id="inside-10-percent-band-of-status-replicas"),
        pytest.param(200.0, 20.0, 8, 4, id="legacy-scale-up-cap-2x"),
        pytest.param(0.0, 0.0, 1, 1, id="empty-queue-scales-to-min"),
        pytest.param(None, None, 1, 1, id="ignore-null-values-reads-zero"),
    ],
)
def test_decisions(p_wait: float | None, d_wait: float | None, p_desired: int, d_desired: int) -> None:
    policy = make_keda_queue(None, SPEC)  # type: ignore[arg-type]
    decision, _ = policy.decide(obs(0.0, p_wait, d_wait), READY, SPEC)
    assert (decision.prefill.desired_replicas, decision.decode.desired_replicas) == (p_desired, d_desired)


def test_no_null_values_holds_when_configured() -> None:
    policy = make_keda_queue(None, SPEC, ignore_null_values=False)  # type: ignore[arg-type]
    decision, _ = policy.decide(obs(0.0, None, None), READY, SPEC)
    assert decision.prefill.desired_replicas == 4
    assert decision.prefill.reason == FAILED_GET_EXTERNAL_METRIC


def test_prometheus_error_holds() -> None:
    policy = make_keda_queue(None, SPEC)  # type: ignore[arg-type]
    decision, _ = policy.decide(obs(0.0, None, None, error="connection refused"), READY, SPEC)
    assert not decision.prefill.changes and not decision.decode.changes


def test_scale_down_waits_for_the_300s_window() -> None:
    policy = make_keda_queue(None, SPEC)  # type: ignore[arg-type]
    state = policy.initial_state(SPEC)
    decision, state = policy.decide(obs(0.0, 0.0, 0.0, p=(6, 6)), state, SPEC)
    assert decision.prefill.desired_replicas == 6
    decision, state = policy.decide(obs(285.0, 0.0, 0.0, p=(6, 6)), state, SPEC)
    assert decision.prefill.desired_replicas == 6
    decision, _ = policy.decide(obs(315.0, 0.0, 0.0, p=(6, 6)), state, SPEC)
    assert decision.prefill.desired_replicas == 1


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        make_keda_queue(None, SPEC, threshold=0)  # type: ignore[arg-type]

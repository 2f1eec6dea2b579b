"""``keda-queue``: KEDA's Prometheus scaler on ``vllm:num_requests_waiting``, one ScaledObject per pool.

The setup vLLM production-stack ships (``tutorials/20-keda-autoscaling.md``; reference prior-art.md §4):
trigger ``sum(vllm:num_requests_waiting{pool})``, threshold 5, metricType ``AverageValue``, polling 15 s. KEDA
turns the ScaledObject into an HPA (``keda-hpa-<name>``) reading the External metric ``s0-prometheus``; with
``minReplicaCount`` ≥ 1 KEDA's own loop (activation, cooldown 300 s) only governs 0 ↔ 1 and never acts here,
so the replica arithmetic is the HPA's (``sim.baselines.hpa``): ``ceil(Σ waiting / 5)`` outside the 10 % band.

KEDA creates that HPA without ``spec.behavior`` unless ``advanced.horizontalPodAutoscalerConfig`` sets one, so
the legacy normalization applies (max over 300 s, scale-up capped at max(2 × current, 4) per sync).

Missing data follows KEDA's Prometheus scaler: ``ignoreNullValues`` (true by default) turns an empty result
into 0 (kedacore/keda #3064, #3065: production scale-downs at peak), while an unreachable Prometheus is a
scaler error and the HPA holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import AutoscalerSpec, Behavior
from autoscaler.core.types import Decision, Observation, Pool
from sim.baselines.hpa import (
    DEFAULT_SYNC_PERIOD_S,
    DEFAULT_TOLERANCE,
    HPAState,
    ProposalFn,
    external_average_value_replicas,
    sync_both_pools,
)
from sim.policies import register_policy

DEFAULT_THRESHOLD = 5.0
DEFAULT_POLLING_INTERVAL_S = 15.0  # production-stack's value; KEDA's own default is 30 s
DEFAULT_COOLDOWN_S = 300.0  # only for scaling to zero; documented, inert with minReplicaCount >= 1


@dataclass(frozen=True)
class KedaQueuePolicy:
    name: str = "keda-queue"
    threshold: float = DEFAULT_THRESHOLD
    polling_interval_s: float = DEFAULT_POLLING_INTERVAL_S
    cooldown_s: float = DEFAULT_COOLDOWN_S
    ignore_null_values: bool = True
    behavior: Behavior | None = None  # None: the HPA KEDA creates has no spec.behavior
    tolerance: float = DEFAULT_TOLERANCE

    def initial_state(self, spec: AutoscalerSpec) -> HPAState:
        return HPAState()

    def _propose(self) -> ProposalFn:
        def propose(observation: Observation, pool: Pool, current: int) -> int | str:
            signals = observation.signals
            if signals.error is not None:
                return f"error getting metric s0-prometheus: {signals.error}"
            waiting = observation.pool_signals(pool).waiting_requests
            if waiting is None:
                if not self.ignore_null_values:
                    return "prometheus query returned no value (ignoreNullValues=false)"
                waiting = 0.0
            return external_average_value_replicas(
                status_replicas=current,
                usage=waiting,
                target_per_pod=self.threshold,
                tolerance=self.tolerance,
            )

        return propose

    def decide(
        self, observation: Observation, state: HPAState, spec: AutoscalerSpec
    ) -> tuple[Decision, HPAState]:
        return sync_both_pools(
            observation, state, spec,
            behavior=self.behavior, propose=self._propose(),
            sync_period_s=max(self.polling_interval_s, DEFAULT_SYNC_PERIOD_S), name="keda-queue",
        )  # fmt: skip


def make_keda_queue(profile: LatencyProfile, spec: AutoscalerSpec, **params: Any) -> KedaQueuePolicy:
    """Params: ``threshold`` (5), ``polling_interval_s`` (15), ``ignore_null_values`` (True), ``behavior``."""
    known = {"threshold", "polling_interval_s", "ignore_null_values", "behavior", "tolerance"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"keda-queue policy: unknown parameters {', '.join(sorted(unknown))}")
    threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
    if threshold <= 0:
        raise ValueError(f"keda-queue policy: threshold must be positive, got {threshold}")
    return KedaQueuePolicy(
        threshold=threshold,
        polling_interval_s=float(params.get("polling_interval_s", DEFAULT_POLLING_INTERVAL_S)),
        ignore_null_values=bool(params.get("ignore_null_values", True)),
        behavior=params.get("behavior"),
        tolerance=float(params.get("tolerance", DEFAULT_TOLERANCE)),
    )


register_policy("keda-queue", make_keda_queue)

"""``static``: fixed prefill/decode replicas. Keeps whatever is ordered; the reference every policy is compared to."""

from __future__ import annotations

from typing import Any

from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, Reason
from sim.policies import register_policy


class StaticPolicy:
    """Stateless; a plain class so ``name`` satisfies the ``Policy`` protocol's attribute."""

    name: str = "static"

    def initial_state(self, spec: AutoscalerSpec) -> None:
        return None

    def decide(self, observation: Observation, state: None, spec: AutoscalerSpec) -> tuple[Decision, None]:
        def hold(pool: Pool) -> PoolDecision:
            current = observation.replicas(pool).desired
            return PoolDecision(
                pool, current, current, Reason.STATIC.value, f"static: holding {current} replicas"
            )

        return Decision(observation.time_s, hold(Pool.PREFILL), hold(Pool.DECODE)), None


def make_static(profile: LatencyProfile, spec: AutoscalerSpec, **params: Any) -> StaticPolicy:
    if params:
        raise ValueError(f"static policy takes no parameters, got {', '.join(sorted(params))}")
    return StaticPolicy()


register_policy("static", make_static)

"""``Controller.tick()``: observe, decide, act. The same object runs in the simulator and in the cluster."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from autoscaler.core.spec import AutoscalerSpec, Mode
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, Reason
from autoscaler.ports import Clock, MetricsSource, Policy, ScaleTarget, StateStore

S = TypeVar("S")
log = logging.getLogger("pdscale.controller")


@dataclass(frozen=True)
class TickResult:
    observation: Observation
    decision: Decision
    applied: tuple[Pool, ...]  # pools whose replicas were written this tick
    errors: tuple[str, ...] = ()


class MemoryStateStore(Generic[S]):
    """Keeps the policy state in memory (the simulator; tests)."""

    def __init__(self) -> None:
        self._state: S | None = None

    def load(self) -> S | None:
        return self._state

    def save(self, state: S) -> None:
        self._state = state


class Controller(Generic[S]):
    def __init__(
        self,
        name: str,
        spec: AutoscalerSpec,
        policy: Policy[S],
        metrics: MetricsSource,
        target: ScaleTarget,
        clock: Clock,
        store: StateStore[S] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.name = name
        self.spec = spec
        self.policy = policy
        self.metrics = metrics
        self.target = target
        self.clock = clock
        self.store: StateStore[S] = store if store is not None else MemoryStateStore()
        self.dry_run = dry_run

    def tick(self) -> TickResult:
        now_s = self.clock.now_s()
        replicas = self.target.read_replicas()
        signals = self.metrics.observe(self.spec, now_s)
        observation = Observation(
            time_s=now_s, signals=signals, prefill=replicas[Pool.PREFILL], decode=replicas[Pool.DECODE]
        )
        disabled = self._scaled_to_zero(observation)
        if disabled is not None:
            return TickResult(observation, disabled, ())
        state = self.store.load()
        if state is None:
            state = self.policy.initial_state(self.spec)
        decision, new_state = self.policy.decide(observation, state, self.spec)
        self.store.save(new_state)

        applied: list[Pool] = []
        errors: list[str] = []
        writes = not self.dry_run and self.spec.mode is Mode.ACTIVE
        for pool in (Pool.PREFILL, Pool.DECODE):
            pool_decision = decision.pool(pool)
            extra: dict[str, Any] = {
                "autoscaler": self.name,
                "pool": pool.value,
                "current": pool_decision.current_replicas,
                "desired": pool_decision.desired_replicas,
                "reason": pool_decision.reason,
            }
            if pool_decision.changes and writes:
                try:
                    self.target.scale(pool_decision)
                    applied.append(pool)
                    log.info("scaled %s: %s", pool.value, pool_decision.message, extra=extra)
                except Exception as exc:  # the target's own error text is what the user needs
                    errors.append(f"{pool.value}: {exc}")
                    log.warning("scale of %s failed: %s", pool.value, exc, extra=extra)
            else:
                log.debug("%s: %s", pool.value, pool_decision.message, extra=extra)
        return TickResult(observation, decision, tuple(applied), tuple(errors))

    def _scaled_to_zero(self, observation: Observation) -> Decision | None:
        """A target at 0 replicas whose pool may not be 0 (``min_replicas >= 1``; the loader refuses 0) was
        scaled to zero by hand: hands off until someone scales it up, as the HPA does (``ScalingDisabled``).
        The policy does not run, so its state does not learn from the outage either. None: scaling is on."""
        stopped = [p for p in (Pool.PREFILL, Pool.DECODE)
                   if observation.replicas(p).desired == 0 and self.spec.pool(p).min_replicas >= 1]
        if not stopped:
            return None
        names = " and ".join(f"{p.value} target" for p in stopped)
        message = (f"{names} scaled to 0 by hand: scaling disabled until it is scaled up again "
                   "(pdscale never scales a pool from 0)")

        def hold(pool: Pool) -> PoolDecision:
            n = observation.replicas(pool).desired
            return PoolDecision(pool, n, n, Reason.SCALING_DISABLED.value, message)

        log.info("%s: %s", self.name, message, extra={"autoscaler": self.name, "reason": Reason.SCALING_DISABLED})
        return Decision(observation.time_s, hold(Pool.PREFILL), hold(Pool.DECODE))

"""The ports the Controller is wired from. Live adapters: Prometheus, the Kubernetes API, the wall clock.
Simulated adapters: the simulated Prometheus view, the simulated cluster, the simulated clock."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, PoolReplicas, Signals

S = TypeVar("S")


class MetricsSource(Protocol):
    def observe(self, spec: AutoscalerSpec, now_s: float) -> Signals:
        """Signals for one autoscaler. Never raises for data problems: missing values are None and a failed
        source sets ``Signals.error``."""
        ...


class ScaleTarget(Protocol):
    def read_replicas(self) -> dict[Pool, PoolReplicas]: ...

    def scale(self, decision: PoolDecision) -> None:
        """Set the pool's replicas to ``decision.desired_replicas``; raise on failure."""
        ...


class StateStore(Protocol, Generic[S]):
    def load(self) -> S | None: ...

    def save(self, state: S) -> None: ...


class Clock(Protocol):
    def now_s(self) -> float: ...


class Policy(Protocol, Generic[S]):
    """A pure decision function plus its initial state. pdscale's policy and every baseline implement it."""

    name: str

    def initial_state(self, spec: AutoscalerSpec) -> S: ...

    def decide(self, observation: Observation, state: S, spec: AutoscalerSpec) -> tuple[Decision, S]: ...

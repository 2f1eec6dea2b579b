"""Configuration of one autoscaler as frozen dataclasses: the shape of the CRD spec and of scenario YAML.

Parsing and validation from dicts lives in ``autoscaler.config``; this module only holds the values and their
defaults, so the pure core can take them without touching YAML or the Kubernetes API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from autoscaler.core.types import Pool


class PolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


@dataclass(frozen=True)
class ScalingPolicy:
    """HPA ``HPAScalingPolicy``: at most ``value`` Pods or Percent of change per ``period_s``."""

    type: PolicyType
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """HPA ``HPAScalingRules`` for one direction. ``stabilization_window_s=None`` means the default."""

    stabilization_window_s: float | None = None
    select_policy: SelectPolicy = SelectPolicy.MAX
    policies: tuple[ScalingPolicy, ...] = ()


def default_scale_up() -> ScalingRules:
    """HPA v2 defaults for scale-up: no window; max of 4 Pods or 100 Percent per 15 s."""
    return ScalingRules(
        stabilization_window_s=0.0,
        select_policy=SelectPolicy.MAX,
        policies=(ScalingPolicy(PolicyType.PODS, 4, 15.0), ScalingPolicy(PolicyType.PERCENT, 100, 15.0)),
    )


def default_scale_down() -> ScalingRules:
    """HPA v2 defaults for scale-down: 300 s window; 100 Percent per 15 s."""
    return ScalingRules(
        stabilization_window_s=300.0,
        select_policy=SelectPolicy.MAX,
        policies=(ScalingPolicy(PolicyType.PERCENT, 100, 15.0),),
    )


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = field(default_factory=default_scale_up)
    scale_down: ScalingRules = field(default_factory=default_scale_down)


# pdscale's own scale-down rules. HPA's window is 300 s and its rate 100 % per 15 s. pdscale keeps a 240 s window
# and removes at most 25 % of a pool per minute (Azure conv and code traces at 50x, Llama-3.1-8B H100, 120 s
# start-up, bench/bench_policy_quality.py): 180 s held conv up to 180 s start-up but not at 300 s; 300 s costs more
# GPU-hours than the cheapest static allocation on conv.
PDSCALE_SCALE_DOWN_WINDOW_S = 240.0
PDSCALE_SCALE_DOWN_PERCENT = 25
PDSCALE_SCALE_DOWN_PERIOD_S = 60.0


def pdscale_default_behavior() -> Behavior:
    """What an autoscaler gets when its spec has no ``behavior``: HPA's rules, with pdscale's scale-down window
    and rate. (``Behavior()`` itself stays exactly HPA's defaults, which the ``hpa`` baseline uses.)"""
    return Behavior(scale_down=pdscale_default_scale_down())


def pdscale_default_scale_down() -> ScalingRules:
    return ScalingRules(
        stabilization_window_s=PDSCALE_SCALE_DOWN_WINDOW_S,
        select_policy=SelectPolicy.MAX,
        policies=(
            ScalingPolicy(PolicyType.PERCENT, PDSCALE_SCALE_DOWN_PERCENT, PDSCALE_SCALE_DOWN_PERIOD_S),
        ),
    )


@dataclass(frozen=True)
class SLO:
    """A percentile latency objective: the ``percentile`` quantile (0 < p < 1) must stay ≤ ``target_s``."""

    percentile: float
    target_s: float


@dataclass(frozen=True)
class TargetRef:
    """What to scale: anything with a ``/scale`` subresource."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class PoolSpec:
    min_replicas: int = 1
    max_replicas: int = 64
    gpus_per_replica: int = 1
    target: TargetRef | None = None


class Mode(StrEnum):
    ACTIVE = "active"
    ADVISORY = "advisory"  # compute and report, never write replicas


class Forecaster(StrEnum):
    LAST_VALUE = "last"
    HOLT = "holt"
    SEASONAL = "seasonal"


@dataclass(frozen=True)
class MetricsSpec:
    """Where the signals come from: a metric-source profile plus the label selector of this deployment."""

    source: str = "vllm"  # vllm | dynamo | llm-d | custom
    selector: tuple[tuple[str, str], ...] = ()  # equality matchers identifying this deployment's series
    window_s: float = 60.0  # rate()/histogram window
    proxy: bool = True  # prefer proxy/gateway histograms for user-visible TTFT
    custom_queries: tuple[tuple[str, str], ...] = ()  # signal name -> PromQL template (source == custom)
    # above this share of requests failing (5xx, no upstream, engine errors) replicas are held (RequestsFailing):
    # a healthy LLM service fails well under 1 %, and failing requests say nothing about the capacity needed
    max_failure_ratio: float = 0.05


@dataclass(frozen=True)
class AutoscalerSpec:
    prefill: PoolSpec = field(default_factory=PoolSpec)
    decode: PoolSpec = field(default_factory=PoolSpec)
    ttft: SLO = SLO(percentile=0.99, target_s=1.0)
    itl: SLO = SLO(percentile=0.99, target_s=0.05)
    gpu_budget: int | None = None  # total GPUs across both pools; None = unbounded
    pod_startup_s: float = 120.0
    behavior: Behavior = field(default_factory=pdscale_default_behavior)
    mode: Mode = Mode.ACTIVE
    forecaster: Forecaster = Forecaster.HOLT
    profile: str = "llama-3.1-8b-h100-tp1"  # built-in latency profile name or a file path
    metrics: MetricsSpec = field(default_factory=MetricsSpec)

    def pool(self, pool: Pool) -> PoolSpec:
        return self.prefill if pool is Pool.PREFILL else self.decode

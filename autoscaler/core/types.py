"""Values that cross the ports: what a MetricsSource observes, what a policy decides.

Every latency is in seconds, every rate per second; ``None`` means "missing" (absent, NaN, stale or empty),
never zero. A policy must not scale down on a missing signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Pool(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


class Reason(StrEnum):
    """Why a pool got its desired replica count. Reaches logs, conditions, events and a metric label."""

    TTFT_ABOVE_TARGET = "TTFTAboveTarget"
    ITL_ABOVE_TARGET = "ITLAboveTarget"
    KV_CACHE_PRESSURE = "KVCachePressure"
    PREDICTED_LOAD_INCREASE = "PredictedLoadIncrease"
    WAITING_FOR_STARTING_PODS = "WaitingForStartingPods"
    SCALE_DOWN = "LoadBelowCapacity"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
    SCALE_UP_STABILIZED = "ScaleUpStabilized"
    SCALE_UP_LIMIT = "ScaleUpLimit"
    SCALE_DOWN_LIMIT = "ScaleDownLimit"
    CAPPED_BY_BUDGET = "CappedByBudget"
    TOO_FEW_REPLICAS = "TooFewReplicas"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    REQUESTS_FAILING = "RequestsFailing"  # scale-down held: failing requests say nothing about capacity needed
    PARTIAL_METRICS = "PartialMetrics"  # scale-down held: fewer pods report metrics than are ready
    SCALING_DISABLED = "ScalingDisabled"  # a target scaled to 0 by hand: hands off, as the HPA does
    WITHIN_TARGET = "WithinTarget"
    STATIC = "Static"


@dataclass(frozen=True)
class PoolSignals:
    """Load signals of one pool, summed over its pods."""

    waiting_requests: float | None = None
    running_requests: float | None = None
    kv_usage_fraction: float | None = None  # mean over the pool's pods, 0..1
    request_rate_per_s: float | None = None
    pods_reporting: float | None = None  # distinct pods with fresh series (None: the source cannot tell)


@dataclass(frozen=True)
class Signals:
    """What a MetricsSource reads for one autoscaler at one time.

    ``ttft_s``/``itl_s`` are the user-visible percentiles at the SLO's percentile (proxy/gateway histograms
    when configured, worker histograms otherwise). Means are kept for baselines that use them (Dynamo's planner).
    ``error`` is set when the whole source failed (Prometheus unreachable): every field is then missing.
    ``request_rate_per_s`` counts every request (served, failed, aborted): failing traffic is demand.
    ``failed_request_rate_per_s`` is the part of it that failed on the server side (5xx, no upstream, engine
    errors; not client aborts or 4xx), from the same source.
    ``prompt_length_buckets``: the prompt-length histogram over the rate window (vLLM's
    ``vllm:request_prompt_tokens``, the prefill pool's when it has series, else decode's) as (upper bound ``le`` in
    tokens, cumulative requests/s) pairs, the last bound +inf; ``None`` when the source has no such series.
    ``prompt_mix.prompt_mix_from_buckets`` reads the mean, SCV and tail length from it.
    ``arrived_request_rate_per_s`` / ``arrived_prompt_tokens_per_s``: requests and their prompt tokens counted as
    they ARRIVE at the proxy (``pdscale_proxy_arrived_*_total``), not as they are served: under a backlog the served
    rates are throughput and fall short of the demand, and a served prompt mean lags a change of the prompt
    length by the queue's wait. ``None`` when the source has no arrival counter.
    """

    time_s: float
    ttft_s: float | None = None
    itl_s: float | None = None
    ttft_mean_s: float | None = None
    itl_mean_s: float | None = None
    request_rate_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    output_tokens_per_s: float | None = None
    failed_request_rate_per_s: float | None = None
    prompt_length_buckets: tuple[tuple[float, float], ...] | None = None
    arrived_request_rate_per_s: float | None = None
    arrived_prompt_tokens_per_s: float | None = None
    prefill: PoolSignals = PoolSignals()
    decode: PoolSignals = PoolSignals()
    error: str | None = None

    @property
    def mean_prompt_tokens(self) -> float | None:
        return _ratio(self.prompt_tokens_per_s, self.request_rate_per_s)

    @property
    def mean_output_tokens(self) -> float | None:
        return _ratio(self.output_tokens_per_s, self.request_rate_per_s)


@dataclass(frozen=True)
class PoolReplicas:
    """Replica counts of one pool as the scale target reports them."""

    desired: int  # the target's spec.replicas: what is ordered
    ready: int  # pods serving traffic

    @property
    def starting(self) -> int:
        """Ordered but not yet ready: capacity arriving within the pod startup time."""
        return max(0, self.desired - self.ready)


@dataclass(frozen=True)
class Observation:
    time_s: float
    signals: Signals
    prefill: PoolReplicas
    decode: PoolReplicas

    def replicas(self, pool: Pool) -> PoolReplicas:
        return self.prefill if pool is Pool.PREFILL else self.decode

    def pool_signals(self, pool: Pool) -> PoolSignals:
        return self.signals.prefill if pool is Pool.PREFILL else self.signals.decode


@dataclass(frozen=True)
class PoolDecision:
    pool: Pool
    current_replicas: int
    desired_replicas: int
    reason: str  # a Reason value for pdscale; baselines may use their own (e.g. HPA's)
    message: str

    @property
    def changes(self) -> bool:
        return self.desired_replicas != self.current_replicas


@dataclass(frozen=True)
class Decision:
    time_s: float
    prefill: PoolDecision
    decode: PoolDecision

    def pool(self, pool: Pool) -> PoolDecision:
        return self.prefill if pool is Pool.PREFILL else self.decode


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den

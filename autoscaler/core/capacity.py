"""Capacity model: load (request rate, prompt and output length) -> predicted percentiles -> replicas.

Prefill is a multi-server FCFS queue (c replicas, Poisson-ish arrivals) whose service time depends on the prompt
length through the profile's prefill step model. The wait-time quantile uses Erlang C (stable Erlang-B recursion)
with the Allen–Cunneen variability factor (c_a² + c_s²)/2 and the exponential-tail quantile
``t_p = k · ln(C / (1 − p)) / (cμ − λ)`` (exact for M/M/c; reference/queueing.md §4, §7).

Decode is continuous batching: per replica, Little's law gives the running batch N = r · t(N) where r is the
replica's output-token rate and t(N) the decode step at batch N and context N·E[ctx] (reference/queueing.md §5).
The number of sequences in flight fluctuates like a Poisson count, so the batch at percentile p is taken as
N + z_p·√N; the ITL percentile is the step time at that batch. Bounded by max_num_seqs and the KV capacity.

Every function is pure and works on any ``StepModel``; times in seconds, rates per second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist

from autoscaler.core.latency import LatencyProfile, prefill_time_s, prefill_tokens_per_s

_FIXED_POINT_ITERATIONS = 80
PredictFn = Callable[["Load", int], float]  # (load, replicas) -> predicted percentile, seconds

UNREACHABLE_TTFT_SLACK = 0.01
"""How close to the no-queue TTFT floor an unreachable target is served: the queueing share is then ≤ 1 % of it."""


@dataclass(frozen=True)
class Load:
    """Offered load of the whole deployment (both pools see the same requests).

    ``decode_context_scale``: the KV context of a decoding sequence relative to ``prompt + output/2`` of the
    means. A sequence holds its context for as many steps as it has output tokens, so the context decode carries
    is output-weighted, E[o·(p + o/2)] / E[o]; the means alone are right only when prompt and output lengths are
    uncorrelated (a burst of long prompts with 4-token answers barely touches decode: scale well below 1).

    ``prompt_scv``: the squared coefficient of variation of the prompt lengths, when known (the clairvoyant bound
    and the oracle know it from the trace); None: the ``PrefillModel``'s assumption. Prefill's attention work per
    prompt is mean²·(1 + SCV), so a long-tailed mix costs more than its mean says. ``tail_prompt_tokens``: the
    prompt length at the TTFT SLO's percentile, when known (the clairvoyant's window); None: from the
    ``PrefillModel``. ``arrival_scv``: the arrivals' variability c_a², when known (the clairvoyant measures the index of
    dispersion of counts over the TTFT target: ~1 on Poisson traffic and the Azure conv trace, 12 at the median
    window of the Azure code trace's batched submissions); None: the ``PrefillModel``'s. None of these three
    changes with ``scaled``.
    """

    request_rate_per_s: float
    mean_prompt_tokens: float
    mean_output_tokens: float
    decode_context_scale: float = 1.0
    prompt_scv: float | None = None
    tail_prompt_tokens: float | None = None
    arrival_scv: float | None = None

    def scaled(self, factor: float) -> Load:
        """The same request mix at ``factor`` times the rate (how the online correction is applied)."""
        return replace(self, request_rate_per_s=self.request_rate_per_s * factor)

    @property
    def mean_decode_context_tokens(self) -> float:
        """Mean KV context of a decoding sequence: the prompt plus half the output on average, times the
        output-weighting ``decode_context_scale``."""
        return (self.mean_prompt_tokens + self.mean_output_tokens / 2.0) * self.decode_context_scale


@dataclass(frozen=True)
class PrefillModel:
    """Knobs of the prefill queue approximation (dimensionless).

    ``arrival_scv``/``prompt_scv``: squared coefficients of variation of inter-arrival times and of prompt
    lengths (1.0 = Poisson / exponential-like lengths; the Azure traces measure 0.92-0.93, chat-like lognormal
    mixes 1.6, the suite's long prompts 1.7), used when the ``Load`` does not carry its own.
    ``prompt_tail_factor``: the prompt at the SLO percentile, as a multiple of the mean (its own service time is
    part of every TTFT), used when the ``Load`` does not carry its ``tail_prompt_tokens``; None: the quantile of a
    lognormal with the load's SCV (``lognormal_tail_factor``: 4.9 at p99 for SCV 1, 6.0 for 1.6). Measured p99/mean:
    3.6 on both Azure traces, 6.2 on the suite's chat mix (lognormal σ 1), 6.9 on its long prompts, 3.4 on its very
    long ones. On chat traffic at 100 req/s the fixed 3.0 makes the model 0.2 s optimistic on the p99 TTFT at 5-7
    prefill replicas, where the lognormal quantile is within 0.02 s of the simulator (0.80 / 0.47 / 0.41 s
    against 0.79 / 0.47 / 0.40). The policy reads the live mix from the prompt-length histogram
    (``prompt_mix``) and falls back to these (SCV 1, 3.0) only without one; the clairvoyant bound gives each
    window's true values.
    """

    arrival_scv: float = 1.0
    prompt_scv: float = 1.0
    prompt_tail_factor: float | None = 3.0


@dataclass(frozen=True)
class DecodeModel:
    """Knobs of the decode model: the KV fraction a replica may fill at the tail batch (the batch at the ITL SLO's
    percentile). A batch beyond the KV cache makes new sequences wait for admission; when that happens no more often
    than the percentile allows (1 % of the time at p99) the SLO tolerates it by definition, so the tail batch may fill
    the whole cache. 0.9 had kept a second margin on top of the policy's load headroom: 1.0 (measured with
    bench/bench_policy_variants.py, 120 s start-up, at adoption, 964f338; no window won or lost on the 13 suite
    workloads) cut train GPU-hours 150.96 -> 148.57 (flash-crowd 27.43 -> 26.53, long-prompts 42.54 -> 41.74),
    held-out 195.01 -> 192.73. (1.2 saved more, 146.0 / 189.0, but overfills the cache at the SLO's percentile: not
    a model, a tuning.)"""

    kv_max_fraction: float = 1.0


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Erlang-B blocking probability by the stable recursion B_k = a·B_{k−1} / (k + a·B_{k−1}) (no factorials)."""
    if servers < 0 or offered_erlangs < 0:
        raise ValueError("servers and offered_erlangs must be >= 0")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_erlangs * b / (k + offered_erlangs * b)
    return b


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """Probability of waiting in M/M/c (Erlang C): C = c·B / (c − a(1 − B)). 1.0 when unstable."""
    if servers <= 0 or offered_erlangs >= servers:
        return 1.0
    if offered_erlangs <= 0:
        return 0.0
    b = erlang_b(servers, offered_erlangs)
    return servers * b / (servers - offered_erlangs * (1.0 - b))


def wait_quantile_s(
    p: float, servers: int, arrival_rate_per_s: float, mean_service_s: float, variability: float = 1.0
) -> float:
    """Waiting-time quantile of a G/G/c queue: Erlang C, Allen–Cunneen factor, exponential tail.

    ``variability`` is (c_a² + c_s²)/2 (1.0 for M/M/c, where the result is exact). ``inf`` when ρ ≥ 1.
    """
    if arrival_rate_per_s <= 0:
        return 0.0
    if mean_service_s <= 0:
        return 0.0
    offered = arrival_rate_per_s * mean_service_s
    if servers <= 0 or offered >= servers:
        return math.inf
    c_wait = erlang_c(servers, offered)
    if c_wait <= 1.0 - p:
        return 0.0
    drain_rate_per_s = servers / mean_service_s - arrival_rate_per_s
    return variability * math.log(c_wait / (1.0 - p)) / drain_rate_per_s


def prefill_service_s(profile: LatencyProfile, prompt_tokens: float) -> float:
    """Time one prompt occupies a prefill replica: chunked into max_num_batched_tokens steps, as vLLM does."""
    return prefill_time_s(profile, max(prompt_tokens, 1.0))


def prefill_queue_service_s(profile: LatencyProfile, mean_prompt_tokens: float, prompt_scv: float = 0.0) -> float:
    """Mean time a prompt occupies a prefill replica *when a queue exists*: vLLM then packs waiting prompts into
    full ``max_num_batched_tokens`` steps (one fixed step overhead shared by several prompts), and the attention
    work of the prompts is E[L²] = mean²·(1 + ``prompt_scv``) each, not mean² (``latency.prefill_tokens_per_s``):
    a long-tailed mix (lognormal σ 1.07, SCV ~2) drains ~1.5x slower than its mean length alone would
    (tests/sim/test_prefill_drain.py replays packed queues through the simulator's scheduler). Packing never makes a
    replica slower than serving one prompt per step, for step models whose per-token cost falls with the step's
    size, so no separate unpacked case is needed."""
    mean = max(mean_prompt_tokens, 1.0)
    return mean / prefill_tokens_per_s(profile, prompt_tokens=mean, prompt_scv=prompt_scv)


def lognormal_tail_factor(scv: float, percentile: float) -> float:
    """The ``percentile`` quantile of a lognormal length with squared coefficient of variation ``scv``, as a
    multiple of its mean: exp(z·σ − σ²/2) with σ² = ln(1 + SCV)."""
    if scv <= 0:
        return 1.0
    sigma2 = math.log1p(scv)
    return math.exp(NormalDist().inv_cdf(percentile) * math.sqrt(sigma2) - sigma2 / 2.0)


def prefill_service_scv(profile: LatencyProfile, mean_prompt_tokens: float, prompt_scv: float) -> float:
    """SCV of the service time from the prompt-length SCV, linearising S(L) around the mean."""
    mean = max(mean_prompt_tokens, 1.0)
    s_mean = prefill_service_s(profile, mean)
    ds_dl = (prefill_service_s(profile, mean * 1.01) - s_mean) / (mean * 0.01)
    return (ds_dl * mean) ** 2 * prompt_scv / (s_mean * s_mean)


def predict_ttft_s(
    profile: LatencyProfile,
    load: Load,
    replicas: int,
    percentile: float,
    model: PrefillModel = PrefillModel(),
) -> float:
    """TTFT at ``percentile``: the queue's wait quantile plus the service time of a tail-length prompt, plus the
    host overheads the client sees on top of the engine (α0 + α1·prompt + α2, ``HostOverheads``), as the
    simulator and the workers charge them.

    Summing the two over-estimates the true convolution slightly; the online correction absorbs the rest.
    """
    scv = _prompt_scv(load, model)
    mean_service = prefill_queue_service_s(profile, load.mean_prompt_tokens, scv)
    arrival_scv = model.arrival_scv if load.arrival_scv is None else load.arrival_scv
    variability = (arrival_scv + prefill_service_scv(profile, load.mean_prompt_tokens, scv)) / 2
    wait = wait_quantile_s(percentile, replicas, load.request_rate_per_s, mean_service, variability)
    return wait + ttft_floor_s(profile, load, percentile, model)


def ttft_floor_s(profile: LatencyProfile, load: Load, percentile: float, model: PrefillModel = PrefillModel()) -> float:
    """TTFT at ``percentile`` with no queue at all (any number of replicas): a tail-length prompt's own prefill
    plus the host overheads. No replica count brings the TTFT below it."""
    tail_prompt = load.tail_prompt_tokens
    if tail_prompt is None:
        factor = model.prompt_tail_factor
        scv = _prompt_scv(load, model)
        tail_prompt = load.mean_prompt_tokens * (lognormal_tail_factor(scv, percentile) if factor is None else factor)
    return prefill_service_s(profile, tail_prompt) + profile.host.first_token_delay_s(tail_prompt)


def decode_batch(
    profile: LatencyProfile, output_tokens_per_s: float, mean_context_tokens: float
) -> float | None:
    """Little's-law fixed point N = r · t(N, N·ctx) of one decode replica; ``None`` if none exists (overload).

    Solved by bisection on f(N) = r·t(N) − N, which is positive at 0 and, for a stable load, crosses zero once
    below the batch cap.
    """
    if output_tokens_per_s <= 0:
        return 0.0
    cap = _decode_batch_cap(profile, mean_context_tokens)

    def excess(n: float) -> float:
        return output_tokens_per_s * _step_s(profile, n, mean_context_tokens) - n

    if excess(cap) > 0:
        return None
    lo, hi = 0.0, cap
    for _ in range(_FIXED_POINT_ITERATIONS):
        mid = (lo + hi) / 2
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def batch_quantile(mean_batch: float, percentile: float) -> float:
    """Batch size at ``percentile`` when sequences in flight are a Poisson count (normal approximation)."""
    if mean_batch <= 0:
        return 0.0
    z = NormalDist().inv_cdf(percentile)
    return mean_batch + z * math.sqrt(mean_batch)


@dataclass(frozen=True)
class DecodePrediction:
    mean_batch: float | None  # None: the replicas cannot keep up
    tail_batch: float
    itl_s: float  # ITL at the percentile; inf when overloaded
    kv_fraction: float  # KV fill at the tail batch, of the replica's capacity

    def fits(self, profile: LatencyProfile, model: DecodeModel) -> bool:
        return (
            self.mean_batch is not None
            and self.tail_batch <= profile.max_num_seqs
            and self.kv_fraction <= model.kv_max_fraction
        )


def predict_decode(profile: LatencyProfile, load: Load, replicas: int, percentile: float) -> DecodePrediction:
    """Decode batch, ITL percentile and KV fill per replica when ``replicas`` share the load evenly."""
    ctx = load.mean_decode_context_tokens
    if replicas <= 0:
        return DecodePrediction(None, math.inf, math.inf, math.inf)
    rate = load.request_rate_per_s * load.mean_output_tokens / replicas
    mean_batch = decode_batch(profile, rate, ctx)
    if mean_batch is None:
        return DecodePrediction(None, math.inf, math.inf, math.inf)
    tail = batch_quantile(mean_batch, percentile)
    itl = profile.host.client_gap_s(_step_s(profile, max(tail, 1.0), ctx))  # + α2: what the client sees
    return DecodePrediction(mean_batch, tail, itl, tail * ctx / profile.kv_capacity_tokens)


def predict_itl_s(profile: LatencyProfile, load: Load, replicas: int, percentile: float) -> float:
    return predict_decode(profile, load, replicas, percentile).itl_s


def prefill_replicas_needed(
    profile: LatencyProfile,
    load: Load,
    target_s: float,
    percentile: float,
    limit: int,
    model: PrefillModel = PrefillModel(),
) -> int:
    """Smallest c ≤ ``limit`` whose predicted TTFT percentile ≤ ``target_s``; ``limit`` + 1 if none does.

    When the target is below ``ttft_floor_s`` (the tail prompt's own prefill takes longer than the target), no
    count reaches it and more replicas only buy queueing that is already gone: the need is then the smallest c
    within ``UNREACHABLE_TTFT_SLACK`` of the floor. A target within that slack above the floor is served the same
    way (reaching it exactly would take ever more pods for the last fraction of a percent). Without this, a mean prompt one percent longer (2,750
    tokens instead of 2,725 at 2.75 req/s on a 1.275 s target, a live run's single tick) turned a need of 5
    into the pool's maximum (bench/sim_vs_live_inputs.py).
    """
    if load.request_rate_per_s <= 0:
        return 0
    service_s = prefill_queue_service_s(profile, load.mean_prompt_tokens, _prompt_scv(load, model))
    start = max(1, math.ceil(load.request_rate_per_s * service_s))
    goal_s = max(target_s, ttft_floor_s(profile, load, percentile, model) * (1.0 + UNREACHABLE_TTFT_SLACK))
    for c in range(start, limit + 1):
        if predict_ttft_s(profile, load, c, percentile, model) <= goal_s:
            return c
    return limit + 1


def decode_replicas_needed(
    profile: LatencyProfile,
    load: Load,
    target_s: float,
    percentile: float,
    limit: int,
    model: DecodeModel = DecodeModel(),
) -> int:
    """Smallest n ≤ ``limit`` whose ITL percentile ≤ ``target_s`` within batch and KV caps; ``limit`` + 1 if none."""
    if load.request_rate_per_s <= 0 or load.mean_output_tokens <= 0:
        return 0
    for n in range(1, limit + 1):
        pred = predict_decode(profile, load, n, percentile)
        if pred.fits(profile, model) and pred.itl_s <= target_s:
            return n
    return limit + 1


def load_multiplier_matching(
    predict: PredictFn, load: Load, replicas: int, observed_s: float, lo: float, hi: float
) -> float:
    """The factor m in [lo, hi] such that the model at m × load predicts ``observed_s`` (bisection; monotone).

    This is the online correction: burstiness, routing imbalance and model error all show up as the extra
    load the model would need to see to explain the observed percentile.
    """
    if predict(load.scaled(lo), replicas) >= observed_s:
        return lo
    if predict(load.scaled(hi), replicas) <= observed_s:
        return hi
    a, b = lo, hi
    for _ in range(40):
        mid = (a + b) / 2
        if predict(load.scaled(mid), replicas) < observed_s:
            a = mid
        else:
            b = mid
    return (a + b) / 2


def _prompt_scv(load: Load, model: PrefillModel) -> float:
    return model.prompt_scv if load.prompt_scv is None else load.prompt_scv


def _decode_batch_cap(profile: LatencyProfile, mean_context_tokens: float) -> float:
    kv_cap = profile.kv_capacity_tokens / max(mean_context_tokens, 1.0)
    return float(min(profile.max_num_seqs, kv_cap)) * 4.0  # bisection bracket; feasibility is checked later


def _step_s(profile: LatencyProfile, batch: float, mean_context_tokens: float) -> float:
    """Decode step at a (fractional) batch: linear interpolation between integer batches."""
    lo = math.floor(batch)
    frac = batch - lo
    t_lo = profile.step.decode_step_s(lo, lo * mean_context_tokens)
    if frac == 0:
        return t_lo
    t_hi = profile.step.decode_step_s(lo + 1, (lo + 1) * mean_context_tokens)
    return t_lo + frac * (t_hi - t_lo)

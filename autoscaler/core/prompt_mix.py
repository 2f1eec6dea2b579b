"""The prompt-length mix of the live traffic, from vLLM's ``vllm:request_prompt_tokens`` histogram buckets.

The capacity model needs more than the mean prompt: prefill's attention work per prompt is E[L²] =
mean²·(1 + SCV), and every TTFT percentile includes a tail-length prompt's own prefill (``capacity.Load``).
vLLM exposes the prompt lengths only as a classic histogram with 1-2-5 edges up to ``max_model_len``
(``buckets.buckets_1_2_5``): 1, 2, 5, 10, ..., 50000, 100000 (reference/vllm-metrics.md §2). Over a rate
window, ``sum by (le) (rate(vllm:request_prompt_tokens_bucket[w]))`` gives the requests per second in each
bucket; this module turns those into the mean, the SCV and a tail percentile.

How, and how well: inside a bucket (a, b] the lengths are taken as log-uniform (density ∝ 1/L, which is how a
lognormal-ish mix looks across a factor-2-2.5 bucket on its right flank): E[L] = (b − a)/ln(b/a) and
E[L²] = (b² − a²)/(2·ln(b/a)); the lowest bucket (0, 1] is a point mass at 1, and the +Inf bucket is log-uniform
from the last edge to ``overflow_cap_tokens`` (a vLLM server refuses prompts above ``max_model_len``, which lies
below the next 1-2-5 value: the suite's very long prompts put 2.3 % of requests there and their p99, 121k, in it).
The mean and the SCV both come from these bucket moments (self-consistent: the bucket-shape error partly
cancels in E[L²]/E[L]²); the tail interpolates log-linearly inside its bucket (the same shape; Prometheus'
``histogram_quantile`` interpolates linearly, which reads 1-8 % higher on these mixes).

Measured against exact sample statistics (tests/unit/test_prompt_mix.py's mixes, 20,000 prompts, seeds 7-9): the
factor (1 + SCV) the model uses reads +7 to +12 % high on lognormal mixes of σ 1 (means 300, 2,000, 7,000 tokens)
and on exponential lengths, +9 % on a narrow one (σ 0.5), +4 % on very long prompts (mean 36k, clipped at 128k);
the p99 +3 to +14 %, +22 % on the narrow mix, within 1 % on the very long one; the mean +3 to +8 %. A very heavy
tail (σ 1.5) reads low (-28 % at mean 2,000, 200,000 prompts): its sample SCV rests on a few extreme prompts the
buckets blur. A constant length on an edge reads SCV 0.04 instead of 0. The policy takes the mean from the
prompt-token counter, not from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptMix:
    """Prompt lengths over a rate window: mean, squared coefficient of variation, the length at a percentile,
    and how many requests per second the histogram counted (``requests_per_s`` × window = its sample size)."""

    mean_tokens: float
    scv: float
    tail_tokens: float
    percentile: float
    requests_per_s: float

    @property
    def tail_factor(self) -> float:
        """The tail length as a multiple of the mean (what the policy carries onto a forecast load's mean)."""
        return self.tail_tokens / self.mean_tokens


def overflow_cap_tokens(last_bound: float) -> float:
    """Where the +Inf bucket is taken to end. vLLM's last edge is the largest 1-2-5 value not above
    ``max_model_len``, so the prompts above it lie between it and the next 1-2-5 value (which ``max_model_len``
    is below); with ``max_model_len`` unknown, the bucket ends at the geometric middle of that range (141k after
    100k: a 128k model's 131k is 8 % below). A last bound that is not a 1-2-5 value: twice it, the same way."""
    if last_bound <= 0:
        return last_bound
    scale = 10.0 ** math.floor(math.log10(last_bound))
    mantissa = last_bound / scale
    step = {1: 2.0, 2: 2.5, 5: 2.0}.get(round(mantissa), 2.0) if abs(mantissa - round(mantissa)) < 1e-9 else 2.0
    return last_bound * math.sqrt(step)


def _bucket_moments(lo: float, hi: float) -> tuple[float, float]:
    """E[L] and E[L²] of a length log-uniform on (lo, hi]; a point mass at ``hi`` when the bucket has no width
    or starts at 0."""
    if lo <= 0 or hi <= lo:
        return hi, hi * hi
    log_ratio = math.log(hi / lo)
    return (hi - lo) / log_ratio, (hi * hi - lo * lo) / (2.0 * log_ratio)


def prompt_mix_from_buckets(
    buckets: Sequence[tuple[float, float]], percentile: float
) -> PromptMix | None:
    """The prompt mix of ``buckets``: (upper bound ``le`` in tokens, cumulative count or rate), the last bound
    +inf, as ``sum by (le) (rate(..._bucket[w]))`` gives them. ``None`` when nothing was observed.

    Cumulative counts that decrease (a series reset between two pods' rates) are carried forward, as
    Prometheus' ``histogram_quantile`` does. Raises ValueError on malformed buckets (no +inf bound, a NaN or
    negative count, a percentile outside (0, 1))."""
    if not 0 < percentile < 1:
        raise ValueError(f"percentile must be in (0, 1), got {percentile!r}")
    if not buckets:
        return None
    ordered = sorted((float(le), float(c)) for le, c in buckets)
    for le, count in ordered:
        if math.isnan(le) or not math.isfinite(count) or count < 0:
            raise ValueError(f"prompt-length bucket le={le!r}: count {count!r} must be finite and >= 0")
    if ordered[-1][0] != math.inf:
        raise ValueError(f"prompt-length buckets: the highest bound must be +inf, got {ordered[-1][0]!r}")
    if len(ordered) < 2:
        return None  # only +Inf: no length scale at all
    bounds: list[float] = []
    per_bucket: list[float] = []
    prev_cum = 0.0
    for le, cum in ordered:
        cum = max(cum, prev_cum)
        if bounds and bounds[-1] == le:
            per_bucket[-1] += cum - prev_cum
        else:
            bounds.append(le)
            per_bucket.append(cum - prev_cum)
        prev_cum = cum
    total = prev_cum
    if total <= 0:
        return None
    last_finite = bounds[-2]
    lows = [0.0, *bounds[:-1]]
    highs = [*bounds[:-1], overflow_cap_tokens(last_finite)]
    first = second = 0.0
    for n, lo, hi in zip(per_bucket, lows, highs, strict=True):
        if n > 0:
            m1, m2 = _bucket_moments(lo, hi)
            first += n * m1
            second += n * m2
    mean = first / total
    scv = max(0.0, second / total / (mean * mean) - 1.0)
    return PromptMix(mean, scv, _tail(per_bucket, lows, highs, total, percentile), percentile, total)


def _tail(per_bucket: list[float], lows: list[float], highs: list[float], total: float, percentile: float) -> float:
    rank = percentile * total
    below = 0.0
    for n, lo, hi in zip(per_bucket, lows, highs, strict=True):
        if n > 0 and below + n >= rank:
            fraction = (rank - below) / n
            if lo <= 0 or hi <= lo:
                return hi
            return float(lo * (hi / lo) ** fraction)
        below += n
    return highs[-1]

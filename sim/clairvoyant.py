"""The clairvoyant bound: pdscale's own capacity model fed the true future load, ordering ahead by the start-up time.

It splits pdscale's distance from the hindsight oracle in two:

* pdscale ÷ clairvoyant is the cost of not knowing the future (forecast error and the safety held against it:
  headroom, scale-down verification, stabilization windows, reacting to a queue after it formed);
* clairvoyant ÷ oracle is the cost of the capacity model itself (its percentile approximations, the SLO margin it
  sizes to, whole replicas, one window's load at a time), since both know the load and neither waits for a pod.

For every window (60 s) the clairvoyant takes the load that will arrive in it (request rate, mean prompt and output
length of the window's requests: the truth, not a forecast), and sizes each pool with the policy's
``PdscalePolicy.needed`` at the target less ``margin_up``, correction 1 and no headroom. Pods start after the
start-up time, so at time t it orders the largest need of the windows that begin before t + start-up + one tick
(the soonest a later decision could add capacity), and releases pods as soon as no such window needs them.
It never looks at a metric: what it holds is what the model says the true load needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from autoscaler.core.capacity import Load
from autoscaler.core.policy import PdscalePolicy
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision
from sim.workload import Workload

NAME = "clairvoyant"


@dataclass(frozen=True)
class ClairvoyantSchedule:
    """Per window: the true load and what the capacity model needs for it."""

    window_s: float
    prefill: tuple[int, ...]
    decode: tuple[int, ...]
    rate_per_s: tuple[float, ...]

    def need(self, pool: Pool, index: int) -> int:
        series = self.prefill if pool is Pool.PREFILL else self.decode
        return series[min(max(index, 0), len(series) - 1)]


def window_loads(
    workload: Workload, window_s: float, tail_percentile: float | None = None, burst_timescale_s: float = 1.0
) -> list[Load]:
    """The true load of each window: arrivals in it, their mean prompt and output lengths, the prompts' SCV
    (prefill's attention work), the output-weighted KV context of decoding sequences and, with ``tail_percentile``,
    the prompt length at that percentile and the arrivals' dispersion over ``burst_timescale_s``
    (``dispersion_index``) (``Load``)."""
    end = max(workload.duration_s, float(workload.arrival_s[-1]) if len(workload) else 0.0)
    n = max(1, math.ceil(end / window_s - 1e-9))
    idx = np.clip((workload.arrival_s // window_s).astype(np.int64), 0, n - 1)
    count = np.bincount(idx, minlength=n).astype(np.float64)
    prompts = workload.prompt_tokens.astype(np.float64)
    prompt = np.bincount(idx, prompts, n)
    prompt2 = np.bincount(idx, prompts * prompts, n)
    outputs = workload.output_tokens.astype(np.float64)
    output = np.bincount(idx, outputs, n)
    # KV context a decoding sequence carries, averaged over its decode steps: Σ o·(p + o/2) / Σ o
    held = np.bincount(idx, outputs * (prompts + outputs / 2.0), n)
    loads = []
    for c, p, p2, o, h in zip(count, prompt, prompt2, output, held, strict=True):
        if c == 0:
            loads.append(Load(0.0, 1.0, 1.0))
            continue
        mean_p, mean_o = max(p / c, 1.0), max(o / c, 1.0)
        scv = max(0.0, p2 / c / (mean_p * mean_p) - 1.0)  # prefill's attention work is mean²·(1 + SCV) a prompt
        context_scale = (h / o) / (mean_p + mean_o / 2.0) if o > 0 else 1.0
        loads.append(Load(c / window_s, mean_p, mean_o, context_scale, prompt_scv=scv))
    if tail_percentile is None or not len(workload):
        return loads
    # per window: the prompt length at the TTFT percentile and the inter-arrival times' SCV
    order = np.argsort(workload.arrival_s, kind="stable")
    arrivals, window_of, sorted_prompts = workload.arrival_s[order], idx[order], prompts[order]
    bounds = np.searchsorted(window_of, np.arange(n + 1))
    for i, load in enumerate(loads):
        lo, hi = bounds[i], bounds[i + 1]
        if hi <= lo:
            continue
        tail = max(float(np.quantile(sorted_prompts[lo:hi], tail_percentile)), load.mean_prompt_tokens)
        loads[i] = replace(
            load,
            tail_prompt_tokens=tail,
            arrival_scv=dispersion_index(arrivals[lo:hi] - i * window_s, window_s, burst_timescale_s),
        )
    return loads


def dispersion_index(arrivals_s: np.ndarray, span_s: float, timescale_s: float) -> float | None:
    """Variance over mean of the arrival counts in ``timescale_s`` bins of [0, ``span_s``): the arrival
    variability c_a² a queue sees over that timescale (1 for Poisson; a batch-Poisson process tends to
    E[B²]/E[B]). The inter-arrival times' SCV misses correlated bursts: the Azure code trace's batched
    submissions measure 2 by gaps but 12 (median window) to 37 over 1 s bins, 40 to 165 over 5 s."""
    bins = max(1, int(span_s // timescale_s))
    if len(arrivals_s) < 2 or bins < 2:
        return None
    counts = np.bincount(np.clip((arrivals_s // timescale_s).astype(np.int64), 0, bins - 1), minlength=bins)
    return float(np.var(counts) / np.mean(counts))


def clairvoyant_schedule(
    workload: Workload, policy: PdscalePolicy, spec: AutoscalerSpec, window_s: float
) -> ClairvoyantSchedule:
    loads = window_loads(workload, window_s, spec.ttft.percentile, burst_timescale_s=spec.ttft.target_s)
    target_p = spec.ttft.target_s * (1 - policy.margin_up)
    target_d = spec.itl.target_s * (1 - policy.margin_up)
    prefill = tuple(
        _bounded(policy.needed(Pool.PREFILL, load, target_p, spec), Pool.PREFILL, spec) for load in loads
    )
    decode = tuple(
        _bounded(policy.needed(Pool.DECODE, load, target_d, spec), Pool.DECODE, spec) for load in loads
    )
    return ClairvoyantSchedule(window_s, prefill, decode, tuple(load.request_rate_per_s for load in loads))


def _bounded(need: int, pool: Pool, spec: AutoscalerSpec) -> int:
    p = spec.pool(pool)
    return min(max(need, p.min_replicas), p.max_replicas)


@dataclass(frozen=True)
class ClairvoyantPolicy:
    """Orders, at time t, the largest need of the windows starting before t + ``lookahead_s``."""

    schedule: ClairvoyantSchedule
    lookahead_s: float
    name: str = NAME

    def initial_state(self, spec: AutoscalerSpec) -> None:
        return None

    def want(self, pool: Pool, time_s: float) -> int:
        w = self.schedule.window_s
        first = int(time_s // w)
        last = max(first, math.ceil((time_s + self.lookahead_s) / w - 1e-9) - 1)
        return max(self.schedule.need(pool, i) for i in range(first, last + 1))

    def decide(self, observation: Observation, state: None, spec: AutoscalerSpec) -> tuple[Decision, None]:
        def pool_decision(pool: Pool) -> PoolDecision:
            current = observation.replicas(pool).desired
            want = self.want(pool, observation.time_s)
            return PoolDecision(
                pool, current, want, "Clairvoyant",
                f"clairvoyant: the next {self.lookahead_s:.0f}s of true load need {want}",
            )  # fmt: skip

        return Decision(observation.time_s, pool_decision(Pool.PREFILL), pool_decision(Pool.DECODE)), None


def make_clairvoyant(
    workload: Workload, policy: PdscalePolicy, spec: AutoscalerSpec, *, window_s: float, tick_s: float
) -> ClairvoyantPolicy:
    """The bound for ``workload`` with ``policy``'s capacity model, ordering ahead by start-up + one tick."""
    schedule = clairvoyant_schedule(workload, policy, spec, window_s)
    return ClairvoyantPolicy(schedule, spec.pod_startup_s + tick_s)

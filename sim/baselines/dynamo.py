"""``dynamo-sla``: NVIDIA Dynamo's SLA planner, generation 2, as published (reference prior-art.md §1).

ai-dynamo/dynamo ``components/planner/src/dynamo/planner/utils/planner_core.py`` and ``perf_interpolation.py``
(formulas re-expressed, no code copied):

* every adjustment interval I (180 s) it reads interval means of TTFT, ITL, request count, ISL, OSL and request
  duration; if any is missing or NaN the adjustment is skipped (the cause of the stuck-at-7P bug, #6985);
* correction factors: ``p_corr = TTFT_obs / TTFT_profile(ISL)``; ``d_corr = ITL_obs / ITL_profile(concurrency,
  ctx)`` with concurrency = num_req / N_decode × duration / I and ctx = ISL + OSL/2;
* load prediction with the ``constant`` predictor: next interval = last interval;
* prefill: ``ceil(num_req × ISL / I × min(1, p_corr) / thpt_per_gpu(ISL) / gpus_per_engine)``;
* decode: the best throughput per GPU whose profiled ITL meets ``ITL_target / d_corr`` at ctx, scanning KV usage
  from high to low; ``ceil(num_req × OSL / I / thpt / gpus_per_engine)``;
* at least ``min_endpoint`` (1) per pool; over the GPU budget both scale by budget/total, prefill rounded, decode
  gets the remainder (proportional, not SLA-aware);
* the Kubernetes connector does not act while a pool is still rolling out (ordered ≠ ready).

The profiler's interpolation data is synthesised from the scenario's ``LatencyProfile``, the way Dynamo's
profiler would have measured that engine: prefill TTFT at batch 1 over a grid of ISL (chunked at
``max_num_batched_tokens``), interpolated with a cubic spline clamped to the profiled range; decode ITL and
throughput per GPU on Dynamo's 100 × 100 (KV usage, context) grid, read by index as its interpolator does.
Evaluating the step model at the grid points stands in for griddata's fit of densely profiled points.
Interval means are the request-weighted average of the per-tick means the metrics source reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline  # type: ignore[import-untyped]

from autoscaler.core.latency import LatencyProfile, prefill_time_s
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision
from sim.policies import register_policy

DEFAULT_INTERVAL_S = 180.0
GRID_RESOLUTION = 100
SKIPPED = "MetricsUnavailable"
ADJUSTED = "SLAPlanner"
WAITING = "WaitingForInterval"
ROLLING_OUT = "DeploymentNotReady"


def prefill_ttft_s(profile: LatencyProfile, isl: float) -> float:
    """Batch-1 prefill time of one prompt, chunked as vLLM schedules it (what the profiler measures)."""
    return prefill_time_s(profile, max(float(isl), 1.0))


@dataclass(frozen=True, eq=False)
class PrefillInterpolator:
    """``PrefillInterpolator``: TTFT and throughput per GPU over ISL, cubic, clamped to the profiled range."""

    isl: np.ndarray
    ttft_s: np.ndarray
    gpus: int

    @classmethod
    def from_profile(cls, profile: LatencyProfile, max_isl: int = 32768) -> PrefillInterpolator:
        isl = np.unique(np.round(np.geomspace(16, max_isl, 40)))
        ttft = np.array([prefill_ttft_s(profile, x) for x in isl])
        return cls(isl, ttft, profile.gpus_per_replica)

    def _clamp(self, isl: float) -> float:
        return float(min(max(isl, self.isl[0]), self.isl[-1]))

    def interpolate_ttft_s(self, isl: float) -> float:
        return float(CubicSpline(self.isl, self.ttft_s)(self._clamp(isl)))

    def interpolate_thpt_per_gpu(self, isl: float) -> float:
        """Prompt tokens per second per GPU at batch 1."""
        thpt = self.isl / self.ttft_s / self.gpus
        return float(CubicSpline(self.isl, thpt)(self._clamp(isl)))


@dataclass(frozen=True, eq=False)
class DecodeInterpolator:
    """``DecodeInterpolator``: ITL and throughput per GPU on a (KV usage, context) grid, looked up by index."""

    itl_s: np.ndarray  # [kv index, context index]
    thpt_per_gpu: np.ndarray
    min_ctx: float
    max_ctx: float
    max_kv_tokens: int
    resolution: int = GRID_RESOLUTION

    @classmethod
    def from_profile(
        cls,
        profile: LatencyProfile,
        min_ctx: float = 64.0,
        max_ctx: float = 32768.0,
        resolution: int = GRID_RESOLUTION,
    ) -> DecodeInterpolator:
        kv = np.linspace(0.0, 1.0, resolution)
        ctx = np.linspace(min_ctx, max_ctx, resolution)
        itl = np.empty((resolution, resolution))
        thpt = np.empty((resolution, resolution))
        for j, c in enumerate(ctx):
            for i, u in enumerate(kv):
                # the profiler cannot run more than max_num_seqs; beyond that griddata's nearest fill repeats it
                conc = max(1, min(profile.max_num_seqs, int(u * profile.kv_capacity_tokens / c)))
                step = profile.step.decode_step_s(conc, conc * c)
                itl[i, j] = step
                thpt[i, j] = conc / step / profile.gpus_per_replica
        return cls(itl, thpt, min_ctx, max_ctx, profile.kv_capacity_tokens, resolution)

    def _iy(self, context_length: float) -> int:
        iy = int((context_length - self.min_ctx) / (self.max_ctx - self.min_ctx) * self.resolution)
        return max(0, min(iy, self.resolution - 1))

    def interpolate_itl_s(self, concurrency: float, context_length: float) -> float:
        kv_usage = concurrency * context_length / self.max_kv_tokens
        ix = max(0, min(int(kv_usage * self.resolution), self.resolution - 1))
        return float(self.itl_s[ix, self._iy(context_length)])

    def find_best_throughput_per_gpu(self, itl_s: float, context_length: float) -> float:
        """Highest KV usage whose ITL meets ``itl_s`` (scanned high to low: the surface may not be monotone)."""
        iy = self._iy(context_length)
        for ix in range(self.resolution - 1, -1, -1):
            if self.itl_s[ix, iy] <= itl_s:
                return float(self.thpt_per_gpu[ix, iy])
        return float(self.thpt_per_gpu[0, iy])


@dataclass(frozen=True)
class IntervalMetrics:
    """Interval means, as Dynamo reads them from increase(_sum[I]) / increase(_count[I])."""

    num_req: float
    isl: float
    osl: float
    ttft_s: float
    itl_s: float
    request_duration_s: float


@dataclass(frozen=True)
class DynamoState:
    interval_start_s: float | None = None
    # request-weighted accumulators over the interval's ticks: weight, Σw·isl, Σw·osl, Σw·ttft, Σw·itl
    acc: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    samples: int = 0
    missing: int = 0
    p_correction: float = 1.0
    d_correction: float = 1.0
    last: IntervalMetrics | None = None


def plan_replicas(
    metrics: IntervalMetrics,
    *,
    prefill: PrefillInterpolator,
    decode: DecodeInterpolator,
    interval_s: float,
    ready_decode: int,
    itl_target_s: float,
    gpus_per_engine: int,
    min_endpoint: int = 1,
    gpu_budget: int | None = None,
    no_correction: bool = False,
) -> tuple[int, int, float, float]:
    """One G2 adjustment: (num_p, num_d, p_correction, d_correction) from the last interval's means."""
    ctx = metrics.isl + metrics.osl / 2
    p_corr = metrics.ttft_s / prefill.interpolate_ttft_s(metrics.isl)
    concurrency = metrics.num_req / max(ready_decode, 1) * metrics.request_duration_s / interval_s
    d_corr = metrics.itl_s / decode.interpolate_itl_s(concurrency, ctx)
    if no_correction:
        p_corr = d_corr = 1.0
    # constant predictor: the next interval repeats the last one
    next_num_req, next_isl, next_osl = metrics.num_req, metrics.isl, metrics.osl
    pred_prefill_thpt = next_num_req * next_isl / interval_s * min(1.0, p_corr)
    num_p = math.ceil(pred_prefill_thpt / prefill.interpolate_thpt_per_gpu(next_isl) / gpus_per_engine)
    corrected_itl_s = itl_target_s / d_corr if d_corr > 0 else itl_target_s
    thpt_d = decode.find_best_throughput_per_gpu(corrected_itl_s, next_isl + next_osl / 2)
    num_d = math.ceil(next_num_req * next_osl / interval_s / thpt_d / gpus_per_engine)
    num_p, num_d = max(num_p, min_endpoint), max(num_d, min_endpoint)
    if gpu_budget is not None and (num_p + num_d) * gpus_per_engine > gpu_budget:
        scale = gpu_budget / ((num_p + num_d) * gpus_per_engine)
        num_p = max(min_endpoint, round(num_p * scale))
        num_d = max(min_endpoint, round((gpu_budget - num_p * gpus_per_engine) / gpus_per_engine))
    return num_p, num_d, p_corr, d_corr


@dataclass(frozen=True, eq=False)
class DynamoSLAPolicy:
    profile: LatencyProfile
    name: str = "dynamo-sla"
    interval_s: float = DEFAULT_INTERVAL_S
    min_endpoint: int = 1
    no_correction: bool = False
    prefill: PrefillInterpolator = field(init=False, repr=False)
    decode: DecodeInterpolator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefill", PrefillInterpolator.from_profile(self.profile))
        object.__setattr__(self, "decode", DecodeInterpolator.from_profile(self.profile))

    def initial_state(self, spec: AutoscalerSpec) -> DynamoState:
        return DynamoState()

    def _observe(self, observation: Observation, state: DynamoState) -> DynamoState:
        s = observation.signals
        values = (
            s.request_rate_per_s,
            s.mean_prompt_tokens,
            s.mean_output_tokens,
            s.ttft_mean_s,
            s.itl_mean_s,
        )
        if s.error is not None or any(v is None or not math.isfinite(v) for v in values):
            return replace(state, missing=state.missing + 1)
        rate, isl, osl, ttft, itl = (float(v) for v in values if v is not None)
        w, a_isl, a_osl, a_ttft, a_itl = state.acc
        acc = (w + rate, a_isl + rate * isl, a_osl + rate * osl, a_ttft + rate * ttft, a_itl + rate * itl)
        return replace(state, acc=acc, samples=state.samples + 1)

    def decide(
        self, observation: Observation, state: DynamoState, spec: AutoscalerSpec
    ) -> tuple[Decision, DynamoState]:
        now_s = observation.time_s
        pd, dd = observation.prefill, observation.decode

        def hold(reason: str, message: str, st: DynamoState) -> tuple[Decision, DynamoState]:
            return (
                Decision(
                    now_s,
                    PoolDecision(Pool.PREFILL, pd.desired, pd.desired, reason, f"dynamo-sla: {message}"),
                    PoolDecision(Pool.DECODE, dd.desired, dd.desired, reason, f"dynamo-sla: {message}"),
                ),
                st,
            )

        if state.interval_start_s is None:
            return hold(WAITING, "first observation", replace(state, interval_start_s=now_s))
        start_s = state.interval_start_s
        state = self._observe(observation, state)
        if now_s - start_s < self.interval_s - 1e-9:
            return hold(WAITING, f"next adjustment at {start_s + self.interval_s:.0f}s", state)
        fresh = DynamoState(
            interval_start_s=now_s,
            p_correction=state.p_correction,
            d_correction=state.d_correction,
            last=state.last,
        )
        w = state.acc[0]
        if state.missing > 0 or state.samples == 0 or w <= 0:
            return hold(
                SKIPPED, f"skipping adjustment: {state.missing} observation(s) had missing metrics", fresh
            )
        if pd.desired != pd.ready or dd.desired != dd.ready:
            return hold(ROLLING_OUT, "deployment is not ready (pods starting or terminating)", fresh)
        isl, osl, ttft, itl = (x / w for x in state.acc[1:])
        metrics = IntervalMetrics(
            num_req=w / state.samples * self.interval_s,
            isl=isl,
            osl=osl,
            ttft_s=ttft,
            itl_s=itl,
            request_duration_s=ttft + max(osl - 1.0, 0.0) * itl,
        )
        num_p, num_d, p_corr, d_corr = plan_replicas(
            metrics,
            prefill=self.prefill,
            decode=self.decode,
            interval_s=self.interval_s,
            ready_decode=dd.ready,
            itl_target_s=spec.itl.target_s,
            gpus_per_engine=self.profile.gpus_per_replica,
            min_endpoint=self.min_endpoint,
            gpu_budget=spec.gpu_budget,
            no_correction=self.no_correction,
        )
        num_p = min(max(num_p, spec.prefill.min_replicas), spec.prefill.max_replicas)
        num_d = min(max(num_d, spec.decode.min_replicas), spec.decode.max_replicas)
        msg = (
            f"num_req={metrics.num_req:.0f} isl={isl:.0f} osl={osl:.0f} ttft={ttft:.3f}s itl={itl * 1e3:.1f}ms "
            f"p_corr={p_corr:.2f} d_corr={d_corr:.2f}"
        )
        fresh = replace(fresh, p_correction=p_corr, d_correction=d_corr, last=metrics)
        return (
            Decision(
                now_s,
                PoolDecision(Pool.PREFILL, pd.desired, num_p, ADJUSTED, f"dynamo-sla: {msg} -> {num_p}P"),
                PoolDecision(Pool.DECODE, dd.desired, num_d, ADJUSTED, f"dynamo-sla: {msg} -> {num_d}D"),
            ),
            fresh,
        )


def make_dynamo_sla(profile: LatencyProfile, spec: AutoscalerSpec, **params: Any) -> DynamoSLAPolicy:
    """Params: ``interval_s`` (180), ``min_endpoint`` (1), ``no_correction`` (False)."""
    unknown = set(params) - {"interval_s", "min_endpoint", "no_correction"}
    if unknown:
        raise ValueError(f"dynamo-sla policy: unknown parameters {', '.join(sorted(unknown))}")
    interval_s = float(params.get("interval_s", DEFAULT_INTERVAL_S))
    if not interval_s > 0:
        raise ValueError(f"dynamo-sla policy: interval_s must be positive, got {interval_s}")
    return DynamoSLAPolicy(
        profile,
        interval_s=interval_s,
        min_endpoint=int(params.get("min_endpoint", 1)),
        no_correction=bool(params.get("no_correction", False)),
    )


register_policy("dynamo-sla", make_dynamo_sla)

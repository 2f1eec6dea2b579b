"""Hindsight references for the benchmark: the per-window ``oracle`` and the ``static-best`` allocation.

``oracle``: for every window (60 s) the fewest prefill and decode replicas that meet the SLO for the requests
arriving in that window, with perfect knowledge of them and no startup delay. Found by **short simulations per
window** (not the capacity model, whose error would leak into the bound): the window's requests are replayed
alone on warm, static pools (the same engine, profile, router and seed as the benchmark) and judged exactly as
``sim.summary`` judges a window (TTFT and ITL quantiles at the SLO percentiles, unfinished requests infinitely
late). Prefill is searched first with a generous decode pool, then decode with that prefill, then prefill again with
that decode, always on the joint criterion (decode shortage shows up as TTFT: the first token waits for a decode
slot). Searches start from a throughput estimate and gallop/bisect, assuming latency never
improves with fewer replicas. Requests still in flight from the previous window are ignored (a window starts
empty), which can only make the oracle cheaper. Its GPU-hours, Σ (P_w + D_w) × window × GPUs, is the lower
bound the benchmark divides by; it is not strictly below a policy that misses the SLO in some windows.

``static-best``: the cheapest fixed (P, D) whose full replay (static policy, pods warm from t=0) has
window_compliance ≥ the target (0.99). Coordinate search from the oracle's peak: the smallest P with a large D,
then the smallest D with that P, evaluations cached and pruned by monotonicity (if (P, D) passes, every
(P' ≥ P, D' ≥ D) passes; if it fails, every (P' ≤ P, D' ≤ D) fails).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from autoscaler.core.latency import LatencyProfile, prefill_tokens_per_s
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision
from sim.scenario import Scenario
from sim.summary import quantile, request_latencies
from sim.workload import Workload

DEFAULT_WINDOW_S = 60.0
DEFAULT_COMPLIANCE_TARGET = 0.99
WINDOW_DRAIN_S = 600.0  # horizon after a window's last arrival; anything later counts as infinitely late


@dataclass(frozen=True)
class SimSettings:
    """What a hindsight simulation shares with the benchmark's replays."""

    profile: LatencyProfile
    spec: AutoscalerSpec
    mode: str = "disagg"
    router: str = "least-outstanding-tokens"
    seed: int = 0
    max_prefill: int = 64
    max_decode: int = 64

    @classmethod
    def of(cls, scenario: Scenario) -> SimSettings:
        return cls(
            scenario.profile,
            scenario.spec,
            scenario.mode,
            scenario.router,
            scenario.seed,
            scenario.spec.prefill.max_replicas,
            scenario.spec.decode.max_replicas,
        )


def _run_static(
    workload: Workload, settings: SimSettings, prefill: int, decode: int, horizon_s: float
) -> Any:
    from sim.engine import Engine, EngineConfig

    config = EngineConfig(
        profile=settings.profile,
        mode=settings.mode,
        router=settings.router,
        startup_s=0.0,
        seed=settings.seed,
    )
    engine = Engine(workload, config, prefill, decode)
    engine.finish(max_time_s=horizon_s)
    return engine


def judge(records: Any, spec: AutoscalerSpec) -> tuple[bool, bool, float, float]:
    """(TTFT ok, ITL ok, TTFT quantile, ITL quantile) of one group of requests, as ``sim.summary`` judges it."""
    ttft, itl, has_itl = request_latencies(records)
    t_q = quantile(ttft, spec.ttft.percentile)
    i_w = itl[has_itl]
    i_q = quantile(i_w, spec.itl.percentile) if i_w.size else 0.0
    ttft_ok = bool(ttft.size == 0 or t_q <= spec.ttft.target_s)
    itl_ok = bool(i_w.size == 0 or i_q <= spec.itl.target_s)
    return ttft_ok, itl_ok, t_q, i_q


def lowest_passing(ok: Callable[[int], bool], guess: int, lo: int, hi: int) -> int | None:
    """Smallest x in [lo, hi] with ok(x), for a monotone ok (False…False True…True); None if even hi fails.

    Gallops from ``guess`` (doubling steps) to bracket the edge, then bisects: two calls when the guess is exact.
    """
    if hi < lo:
        return None
    x = min(max(guess, lo), hi)
    if ok(x):
        good, bad, step = x, lo - 1, 1
        while good - step >= lo:
            y = good - step
            if ok(y):
                good, step = y, step * 2
            else:
                bad = y
                break
    else:
        bad, step, good = x, 1, -1
        while good < 0:
            y = min(bad + step, hi)
            if ok(y):
                good = y
            elif y == hi:
                return None
            else:
                bad, step = y, step * 2
    while good - bad > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def prefill_guess(workload: Workload, profile: LatencyProfile, span_s: float) -> int:
    """Replicas whose prefill throughput (full chunks of packed prompts) covers the prompt tokens at 85 % utilisation."""
    prompts = workload.prompt_tokens.astype(np.float64)
    mean_prompt = max(float(np.mean(prompts)), 1.0) if len(workload) else 1.0
    scv = float(np.var(prompts)) / mean_prompt**2 if len(workload) else 0.0
    per_token_s = 1.0 / prefill_tokens_per_s(profile, prompt_tokens=mean_prompt, prompt_scv=scv)  # packed chunks
    busy_s = float(np.sum(workload.prompt_tokens)) * per_token_s
    return max(1, math.ceil(busy_s / max(span_s, 1e-9) / 0.85))


def decode_guess(workload: Workload, profile: LatencyProfile, spec: AutoscalerSpec, span_s: float) -> int:
    """Replicas whose token rate at the largest batch meeting 80 % of the ITL target covers the output rate."""
    if len(workload) == 0:
        return 1
    ctx = float(np.mean(workload.prompt_tokens) + np.mean(workload.output_tokens) / 2)
    cap = int(min(profile.max_num_seqs, max(1.0, profile.kv_capacity_tokens * 0.9 / max(ctx, 1.0))))
    best = 1
    for b in range(1, cap + 1):
        if profile.step.decode_step_s(b, b * ctx) <= 0.8 * spec.itl.target_s:
            best = b
    rate_per_replica = best / profile.step.decode_step_s(best, best * ctx)
    out_rate = float(np.sum(workload.output_tokens)) / max(span_s, 1e-9)
    return max(1, math.ceil(out_rate / rate_per_replica))


@dataclass(frozen=True)
class WindowNeed:
    """The oracle's answer for one window: replicas per pool (0 prefill in aggregated mode)."""

    start_s: float
    arrivals: int
    prefill: int
    decode: int
    feasible: bool
    simulations: int
    ttft_q_s: float = math.nan
    itl_q_s: float = math.nan


def window_need(workload: Workload, start_s: float, span_s: float, settings: SimSettings) -> WindowNeed:
    """Fewest replicas meeting the SLO for one window's requests (``workload`` already cut and re-zeroed)."""
    if len(workload) == 0:
        return WindowNeed(start_s, 0, 0 if settings.mode == "agg" else 1, 1, True, 0)
    horizon_s = span_s + WINDOW_DRAIN_S
    cache: dict[tuple[int, int], tuple[bool, bool, float, float]] = {}

    def evaluate(p: int, d: int) -> tuple[bool, bool, float, float]:
        if (p, d) not in cache:
            cache[(p, d)] = judge(_run_static(workload, settings, p, d, horizon_s).records(), settings.spec)
        return cache[(p, d)]

    d0 = decode_guess(workload, settings.profile, settings.spec, span_s)
    if settings.mode == "agg":
        d0 += prefill_guess(workload, settings.profile, span_s)
        d = lowest_passing(lambda n: all(evaluate(0, n)[:2]), d0, 1, settings.max_decode)
        feasible = d is not None
        d = settings.max_decode if d is None else d
        r = evaluate(0, d)
        return WindowNeed(start_s, len(workload), 0, d, feasible, len(cache), r[2], r[3])
    d_big = min(settings.max_decode, max(2 * d0, d0 + 4))

    def joint(p: int, d: int) -> bool:
        t_ok, i_ok, _, _ = evaluate(p, d)
        return t_ok and i_ok

    # TTFT includes the KV hand-off and admission on a decode pod, so every search uses the joint criterion.
    p_guess = prefill_guess(workload, settings.profile, span_s)
    p = lowest_passing(lambda n: joint(n, d_big), p_guess, 1, settings.max_prefill)
    if p is None:
        p, d = settings.max_prefill, settings.max_decode
        r = evaluate(p, d)
        return WindowNeed(start_s, len(workload), p, d, r[0] and r[1], len(cache), r[2], r[3])
    d = lowest_passing(lambda n: joint(p, n), d0, 1, d_big)
    assert d is not None  # (p, d_big) passes
    p2 = lowest_passing(lambda n: joint(n, d), p, 1, p)
    assert p2 is not None
    r = evaluate(p2, d)
    return WindowNeed(start_s, len(workload), p2, d, True, len(cache), r[2], r[3])


def _window_task(args: tuple[Workload, float, float, SimSettings]) -> WindowNeed:
    return window_need(*args)


@dataclass(frozen=True)
class OracleSchedule:
    window_s: float
    windows: tuple[WindowNeed, ...]
    gpus_per_replica: int

    def replicas_at(self, pool: Pool, t_s: float) -> int:
        i = min(max(int(t_s // self.window_s), 0), len(self.windows) - 1)
        w = self.windows[i]
        return w.prefill if pool is Pool.PREFILL else w.decode

    @property
    def gpu_hours(self) -> float:
        """The lower bound: Σ (P_w + D_w) × window × GPUs per replica."""
        return (
            sum(w.prefill + w.decode for w in self.windows) * self.window_s * self.gpus_per_replica / 3600.0
        )

    @property
    def peak(self) -> tuple[int, int]:
        return max(w.prefill for w in self.windows), max(w.decode for w in self.windows)

    @property
    def infeasible_windows(self) -> int:
        return sum(not w.feasible for w in self.windows)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            "start_s": np.array([w.start_s for w in self.windows]),
            "prefill": np.array([w.prefill for w in self.windows]),
            "decode": np.array([w.decode for w in self.windows]),
        }


def oracle_schedule(
    workload: Workload,
    settings: SimSettings,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    executor: Executor | None = None,
) -> OracleSchedule:
    """Per-window hindsight minimum over the whole workload (windows are independent: mapped on ``executor``)."""
    n = max(1, math.ceil(max(workload.duration_s, float(workload.arrival_s[-1]) if len(workload) else 0.0)
                         / window_s - 1e-9))  # fmt: skip
    tasks = []
    for i in range(n):
        lo, hi = i * window_s, (i + 1) * window_s
        a, b = np.searchsorted(workload.arrival_s, [lo, hi], side="left")
        part = Workload(
            f"{workload.name}[w{i}]",
            workload.arrival_s[a:b] - lo,
            workload.prompt_tokens[a:b],
            workload.output_tokens[a:b],
        )
        tasks.append((part, lo, window_s, settings))
    mapper: Callable[..., Iterable[WindowNeed]] = executor.map if executor is not None else map
    needs = tuple(mapper(_window_task, tasks))
    return OracleSchedule(window_s, needs, settings.profile.gpus_per_replica)


@dataclass(frozen=True)
class SchedulePolicy:
    """Replays a per-window schedule (the oracle's): each tick orders the current window's counts."""

    schedule: OracleSchedule
    name: str = "oracle"

    def initial_state(self, spec: AutoscalerSpec) -> None:
        return None

    def decide(self, observation: Observation, state: None, spec: AutoscalerSpec) -> tuple[Decision, None]:
        def pool_decision(pool: Pool) -> PoolDecision:
            current = observation.replicas(pool).desired
            want = self.schedule.replicas_at(pool, observation.time_s)
            if spec.pool(pool).max_replicas == 0:
                want = current
            return PoolDecision(pool, current, want, "Oracle", f"oracle: window needs {want}")

        return Decision(observation.time_s, pool_decision(Pool.PREFILL), pool_decision(Pool.DECODE)), None


# ---- static-best ----


@dataclass(frozen=True)
class StaticEval:
    prefill: int
    decode: int
    window_compliance: float
    windows_ok: int
    windows_total: int


@dataclass
class StaticSearch:
    """Cached, monotonicity-pruned evaluations of fixed allocations on one workload."""

    workload: Workload
    settings: SimSettings
    window_s: float = DEFAULT_WINDOW_S
    target: float = DEFAULT_COMPLIANCE_TARGET
    drain_s: float = 900.0
    evaluations: dict[tuple[int, int], StaticEval] = field(default_factory=dict)
    simulations: int = 0

    def compliance(self, prefill: int, decode: int) -> StaticEval:
        from sim.summary import window_table

        key = (prefill, decode)
        if key in self.evaluations:
            return self.evaluations[key]
        horizon_s = self.workload.duration_s + self.drain_s
        engine = _run_static(self.workload, self.settings, prefill, decode, horizon_s)
        self.simulations += 1
        scenario = Scenario(
            workload=self.workload,
            profile=self.settings.profile,
            spec=self.settings.spec,
            mode=self.settings.mode,
            initial_prefill=prefill,
            initial_decode=decode,
            window_s=self.window_s,
            seed=self.settings.seed,
            router=self.settings.router,
        )
        table = window_table(engine.records(), scenario, None, engine.pods(), horizon_s)
        counted = int(table["counted"].sum())
        ok = int(table["ok"].sum())
        result = StaticEval(prefill, decode, ok / counted if counted else 1.0, ok, counted)
        self.evaluations[key] = result
        return result

    def passes(self, prefill: int, decode: int) -> bool:
        for (p, d), e in self.evaluations.items():
            passed = e.window_compliance >= self.target
            if passed and p <= prefill and d <= decode:
                return True
            if not passed and p >= prefill and d >= decode:
                return False
        return self.compliance(prefill, decode).window_compliance >= self.target

    def search(self, start: tuple[int, int]) -> StaticEval | None:
        """Cheapest passing (P, D) found by coordinate search from ``start`` (grown until it passes)."""
        agg = self.settings.mode == "agg"
        p_max = 0 if agg else self.settings.max_prefill
        d_max = self.settings.max_decode
        p, d = (0 if agg else max(1, start[0])), max(1, start[1])
        while not self.passes(p, d):
            if (agg or p >= p_max) and d >= d_max:
                return None
            p = p if agg else min(p_max, p + max(1, p // 4))
            d = min(d_max, d + max(1, d // 4))
        if not agg:
            best_p = lowest_passing(lambda x: self.passes(x, d), p, 1, p)
            assert best_p is not None
            p = best_p
        best_d = lowest_passing(lambda x: self.passes(p, x), d, 1, d)
        assert best_d is not None
        d = best_d
        if not agg:  # one more pass on P now that D is tight
            best_p = lowest_passing(lambda x: self.passes(x, d), p, 1, p)
            assert best_p is not None
            p = best_p
        return self.compliance(p, d)


def static_best(
    workload: Workload,
    settings: SimSettings,
    *,
    start: tuple[int, int],
    window_s: float = DEFAULT_WINDOW_S,
    target: float = DEFAULT_COMPLIANCE_TARGET,
) -> tuple[StaticEval | None, StaticSearch]:
    search = StaticSearch(workload, settings, window_s, target)
    return search.search(start), search


def with_initial(scenario: Scenario, prefill: int, decode: int) -> Scenario:
    """The scenario started at (prefill, decode) warm replicas."""
    if scenario.mode == "agg":
        return replace(scenario, initial_prefill=0, initial_decode=max(1, decode))
    return replace(scenario, initial_prefill=max(1, prefill), initial_decode=max(1, decode))

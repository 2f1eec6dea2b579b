"""``pdscale bench``: every policy on the same traces, seeds, profile, SLOs and pod startup time, one table per trace.

Policies: ``static-best`` (cheapest fixed P/D meeting window_compliance ≥ 0.99, by search), ``hpa``,
``keda-queue``, ``dynamo-sla``, ``pdscale`` and the per-window hindsight ``oracle`` (``sim.oracle``). Every
autoscaled run starts warm, from the cheapest fixed allocation that holds every window before a first ordered pod
could be ready (``warm_start_continuous``), so no policy is punished or flattered by the starting point. The oracle's GPU-hours is its lower bound
Σ (P_w + D_w) × window; its other columns come from replaying its schedule with instant startup.

Load scaling: ``--rate-scale K`` multiplies the trace's request rate. The default ``--scale-mode replicate``
keeps the trace's length and minute-scale shape: K copies of the trace (a fractional K adds a seeded random subset),
each shifted as a whole by a seeded offset within ±``--replicate-spread-s``/2 (default 300 s, wrapped around the
trace's span; see ``sim.workload.replicate`` for why), so the 1 h Azure traces stay 1 h at K × their rate. Shifting whole copies keeps each copy's own
bursts (the code trace's batched submissions) at their real size instead of stacking K of them at one instant,
as K independent tenants with the same traffic shape would look. ``--scale-mode compress`` is the simulator's usual meaning (time divided by K, as
``pdscale sim run --rate-scale`` does), which shortens a 1 h trace to 3600/K seconds.

Runs are independent and spread over ``--jobs`` worker processes (the oracle's windows too).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import SLO, AutoscalerSpec, PoolSpec
from sim.bench_cli import ALL_POLICIES, DEFAULT_POLICIES, DEFAULT_TRACES, SUITE_POLICIES, default_rate_scale
from sim.oracle import (
    DEFAULT_COMPLIANCE_TARGET,
    OracleSchedule,
    SchedulePolicy,
    SimSettings,
    StaticSearch,
    WindowNeed,
    window_need,
)
from sim.scenario import Scenario
from sim.suite import Surge
from sim.workload import REPLICATE_SPREAD_S, Workload, generate, load_trace, replicate

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE_DIR = REPO_ROOT.parent / "shared" / "traces"
TIMELINE_KEEP = ("time_s", "prefill_desired", "prefill_ready", "decode_desired", "decode_ready")
WINDOW_KEEP = ("start_s", "ttft_slo_s", "itl_slo_s", "ok", "counted")
UNSERVED_RATIO = 1e4  # where a window with an infinite quantile is drawn
VARYING_ORACLE_RATIO = (
    0.8  # a workload "varies" when the hindsight oracle needs < 0.8x the best fixed allocation
)
ORACLE_TARGET_RATIO = 1.2  # where it varies, the policy should spend <= 1.2x the oracle's GPU-hours


class BenchError(Exception):
    """A bad flag or input: one line on stderr, exit status 2."""


@dataclass(frozen=True)
class BenchConfig:
    traces: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    rate_scale: float = 50.0
    scale_mode: str = "replicate"
    replicate_spread_s: float = REPLICATE_SPREAD_S
    duration_s: float | None = None
    profile: str = "llama-3.1-8b-h100-tp1"
    ttft_p99_s: float = 1.0
    itl_p99_s: float = 0.05
    startups_s: tuple[float, ...] = (120.0,)
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seed: int = 0
    suite: str | None = None  # a named suite (sim.suite) instead of traces/generators
    suite_workloads: tuple[str, ...] = ()  # only these entries of the suite (all when empty)
    suite_role: str | None = None  # only the suite's "train" or "held-out" entries
    jobs: int = 1
    max_replicas: int = 64
    window_s: float = 60.0
    compliance_target: float = DEFAULT_COMPLIANCE_TARGET
    mode: str = "disagg"


# ---------------------------------------------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------------------------------------------


def resolve_traces(traces: Sequence[str], generators: Sequence[str]) -> list[str]:
    if traces or generators:
        return list(traces)
    missing = [n for n in DEFAULT_TRACES if not (DEFAULT_TRACE_DIR / n).exists()]
    if missing:
        raise BenchError(
            f"default traces not found in {DEFAULT_TRACE_DIR} (missing {', '.join(missing)}); "
            "pass --traces FILE... or --generator SPEC"
        )
    return [str(DEFAULT_TRACE_DIR / n) for n in DEFAULT_TRACES]


@dataclass(frozen=True)
class Case:
    """One workload of a bench run with its SLO and engine seed (the config's, or a suite entry's own)."""

    label: str
    workload: Workload
    ttft_p99_s: float
    itl_p99_s: float
    seed: int
    role: str | None = None
    surges: tuple[Surge, ...] = ()


def load_cases(cfg: BenchConfig) -> list[Case]:
    """The bench's workloads: a suite's entries (each with its own SLO, seed and surges), or the traces and
    generator specs, scaled and cut as configured."""
    if cfg.suite is not None:
        cases = _suite_cases(cfg)
    else:
        cases = [
            Case(label, w, cfg.ttft_p99_s, cfg.itl_p99_s, cfg.seed) for label, w in _plain_workloads(cfg)
        ]
    if cfg.duration_s is not None:
        cases = [replace(c, workload=_cut(c.workload, cfg.duration_s)) for c in cases]
    for c in cases:
        if len(c.workload) == 0:
            raise BenchError(f"{c.label}: workload has no requests")
    return cases


def load_workloads(cfg: BenchConfig) -> list[tuple[str, Workload]]:
    """(label, workload) per trace file and generator spec (or suite entry), scaled and cut as configured."""
    return [(c.label, c.workload) for c in load_cases(cfg)]


def _suite_cases(cfg: BenchConfig) -> list[Case]:
    from sim.suite import select, suite

    try:
        all_entries = suite(cfg.suite or "")
        entries = select(all_entries, cfg.suite_workloads, cfg.suite_role)
    except KeyError as exc:
        raise BenchError(f"--suite: {exc.args[0]}") from None
    if not entries:
        named = ", ".join(f"{e.name} is {e.role}" for e in all_entries if e.name in cfg.suite_workloads)
        why = f": --role {cfg.suite_role} excludes every workload named ({named})" if named else ""
        raise BenchError(f"--suite {cfg.suite}: no workload selected{why}")
    cases = []
    for e in entries:
        if e.trace is not None and not (DEFAULT_TRACE_DIR / e.trace).exists():
            raise BenchError(f"--suite {cfg.suite}: {e.name} needs {DEFAULT_TRACE_DIR / e.trace}, not found")
        try:
            w = e.workload(DEFAULT_TRACE_DIR)
        except ValueError as exc:
            raise BenchError(f"--suite {cfg.suite}: {e.name}: {exc}") from None
        cases.append(Case(e.name, w, e.ttft_p99_s, e.itl_p99_s, e.seed, e.role, e.surges))
    return cases


def _plain_workloads(cfg: BenchConfig) -> list[tuple[str, Workload]]:
    out: list[tuple[str, Workload]] = []
    for path in resolve_traces(cfg.traces, cfg.generators):
        try:
            if cfg.scale_mode == "compress":
                w = load_trace(path, rate_scale=cfg.rate_scale)
            else:
                w = replicate(
                    load_trace(path), cfg.rate_scale, spread_s=cfg.replicate_spread_s, seed=cfg.seed
                )
        except ValueError as exc:  # TraceError names file, line and field
            raise BenchError(str(exc)) from None
        out.append((Path(path).stem, w))
    for spec in cfg.generators:
        try:
            w = generate(spec, seed=cfg.seed)
        except ValueError as exc:
            raise BenchError(f"--generator: {exc}") from None
        if cfg.rate_scale != 1.0:
            w = (
                w.scaled(cfg.rate_scale)
                if cfg.scale_mode == "compress"
                else replicate(w, cfg.rate_scale, spread_s=cfg.replicate_spread_s, seed=cfg.seed)
            )
        out.append((w.name if len(cfg.generators) == 1 else f"gen{len(out)}", w))
    return out


def _cut(w: Workload, duration_s: float) -> Workload:
    keep = w.arrival_s < duration_s
    return Workload(w.name, w.arrival_s[keep], w.prompt_tokens[keep], w.output_tokens[keep], duration_s)


def base_scenario(
    cfg: BenchConfig, workload: Workload, profile: LatencyProfile, startup_s: float, case: Case | None = None
) -> Scenario:
    """The scenario every policy of a bench run shares; ``case`` gives a suite entry's own SLO and seed."""
    pool = PoolSpec(min_replicas=1, max_replicas=cfg.max_replicas, gpus_per_replica=profile.gpus_per_replica)
    spec = AutoscalerSpec(
        prefill=pool,
        decode=pool,
        ttft=SLO(0.99, cfg.ttft_p99_s if case is None else case.ttft_p99_s),
        itl=SLO(0.99, cfg.itl_p99_s if case is None else case.itl_p99_s),
        pod_startup_s=startup_s,
        profile=cfg.profile,
    )
    return Scenario(
        workload=workload,
        profile=profile,
        spec=spec,
        mode=cfg.mode,
        initial_prefill=1,
        initial_decode=1,
        startup_s=startup_s,
        window_s=cfg.window_s,
        seed=cfg.seed if case is None else case.seed,
        name=workload.name,
    )


# ---------------------------------------------------------------------------------------------------------------
# tasks (top-level functions: they run in worker processes)
# ---------------------------------------------------------------------------------------------------------------


def _compact(result: Any) -> dict[str, Any]:
    windows = {k: np.asarray(result.windows[k]).tolist() for k in WINDOW_KEEP if k in result.windows}
    timeline = {k: np.asarray(result.timeline[k]).tolist() for k in TIMELINE_KEEP if k in result.timeline}
    counted = np.asarray(result.windows["counted"], dtype=bool)
    worst: dict[str, float | bool | None] = {}
    for key in ("ttft_p99_s", "itl_p99_s"):
        vals = np.asarray(result.windows[key], dtype=np.float64)[counted]
        vals = vals[~np.isnan(vals)]
        top = float(vals.max()) if vals.size else math.nan
        # a window whose requests never got a first token (or never finished) has an infinite quantile: JSON has
        # no infinity, so the value is null and the flag says why
        worst[f"worst_window_{key}"] = top if math.isfinite(top) else None
        worst[f"worst_window_{key}_unserved"] = top == math.inf
    summary: dict[str, Any] = {k: v for k, v in result.summary.items() if not isinstance(v, np.ndarray)}
    summary.update(worst)
    return {"summary": summary, "windows": windows, "timeline": timeline}


def _replay_task(scenario: Scenario, policy_name: str, schedule: OracleSchedule | None) -> dict[str, Any]:
    from sim.policies import make_policy
    from sim.replay import replay

    if policy_name == "oracle":
        assert schedule is not None
        policy: Any = SchedulePolicy(schedule)
    elif policy_name == "clairvoyant":
        from autoscaler.core.policy import PdscalePolicy
        from sim.clairvoyant import make_clairvoyant

        model = make_policy("pdscale", scenario.profile, scenario.spec)
        assert isinstance(model, PdscalePolicy)
        policy = make_clairvoyant(
            scenario.workload, model, scenario.spec, window_s=scenario.window_s, tick_s=scenario.tick_s
        )
    else:
        policy = make_policy(policy_name, scenario.profile, scenario.spec)
    return _compact(replay(scenario, policy))


def _static_best_task(scenario: Scenario, start: tuple[int, int], target: float) -> dict[str, Any]:
    from sim.replay import replay

    search = StaticSearch(scenario.workload, SimSettings.of(scenario), scenario.window_s, target)
    best = search.search(start)
    if best is None:
        p, d = scenario.spec.prefill.max_replicas, scenario.spec.decode.max_replicas
    else:
        p, d = best.prefill, best.decode
    out = _compact(replay(replace(scenario, initial_prefill=max(p, 1 if scenario.mode == "disagg" else 0),
                                  initial_decode=d, startup_s=0.0), None))  # fmt: skip
    out["summary"]["policy"] = "static-best"
    out["static_best"] = {
        "prefill": p,
        "decode": d,
        "found": best is not None,
        "simulations": search.simulations,
        "evaluated": sorted([k[0], k[1], e.window_compliance] for k, e in search.evaluations.items()),
    }
    return out


def _window_task(workload: Workload, start_s: float, span_s: float, settings: SimSettings) -> WindowNeed:
    return window_need(workload, start_s, span_s, settings)


class _SerialExecutor(Executor):
    """Runs each task at submit time (``--jobs 1``; tests)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # surfaced by fut.result()
            fut.set_exception(exc)
        return fut


# ---------------------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TraceResult:
    label: str
    requests: int
    duration_s: float
    oracle: OracleSchedule
    static_best: dict[str, Any] | None
    runs: list[dict[str, Any]] = field(default_factory=list)  # compact results, summary has policy/startup_s
    ttft_p99_s: float = 1.0
    itl_p99_s: float = 0.05
    role: str | None = None  # a suite entry's role (train / held-out)
    surges: tuple[Surge, ...] = ()
    surge_reports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BenchResult:
    config: BenchConfig
    traces: list[TraceResult]

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tr in self.traces:
            for run in tr.runs:
                out.append({"trace": tr.label, "role": tr.role, **run["summary"]})
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON payload; non-finite floats become null (JSON has no infinity or NaN)."""
        cfg = asdict(self.config)
        return finite_json(
            {
                "config": cfg,
                "runs": self.rows(),
                "oracle": {
                    tr.label: {
                        "gpu_hours": tr.oracle.gpu_hours,
                        "peak": list(tr.oracle.peak),
                        "infeasible_windows": tr.oracle.infeasible_windows,
                        **{k: v.tolist() for k, v in tr.oracle.as_arrays().items()},
                    }
                    for tr in self.traces
                },
                "static_best": {tr.label: tr.static_best for tr in self.traces},
                "workloads": {
                    tr.label: {
                        "role": tr.role,
                        "ttft_p99_s": tr.ttft_p99_s,
                        "itl_p99_s": tr.itl_p99_s,
                        "requests": tr.requests,
                        "duration_s": tr.duration_s,
                    }
                    for tr in self.traces
                },
                "targets": self.targets(),
                "surges": [row for tr in self.traces for row in tr.surge_reports],
            }
        )

    def targets(self, policy: str = "pdscale") -> list[dict[str, Any]]:
        """Per workload, at the first start-up time: ``policy`` against issue 16's targets (window compliance >=
        the target, GPU-hours <= static-best, <= 1.2x the oracle where the load varies: oracle/static-best < 0.8)
        and the clairvoyant decomposition (policy / clairvoyant: forecasting; clairvoyant / oracle: the model)."""
        startup = self.config.startups_s[0]
        out = []
        for tr in self.traces:
            runs = {r["summary"]["policy"]: r["summary"] for r in tr.runs
                    if r["summary"]["startup_s"] in (None, startup)}  # fmt: skip
            me, static, clair = runs.get(policy), runs.get("static-best"), runs.get("clairvoyant")
            if me is None:
                continue
            oracle_h = tr.oracle.gpu_hours
            static_h = static["gpu_hours"] if static else None
            varies = static_h is not None and oracle_h / static_h < VARYING_ORACLE_RATIO
            row: dict[str, Any] = {
                "trace": tr.label,
                "role": tr.role,
                "policy": policy,
                "window_compliance": me["window_compliance"],
                "gpu_hours": me["gpu_hours"],
                "static_best_gpu_hours": static_h,
                "oracle_gpu_hours": oracle_h,
                "vs_static_best": me["gpu_hours"] / static_h if static_h else None,
                "vs_oracle": me["gpu_hours"] / oracle_h if oracle_h > 0 else None,
                "oracle_vs_static_best": oracle_h / static_h if static_h else None,
                "varies": varies,
                "vs_clairvoyant": me["gpu_hours"] / clair["gpu_hours"] if clair else None,
                "clairvoyant_vs_oracle": clair["gpu_hours"] / oracle_h if clair and oracle_h > 0 else None,
                "clairvoyant_compliance": clair["window_compliance"] if clair else None,
            }
            compliance = me["window_compliance"]
            row["meets_compliance"] = compliance is not None and compliance >= self.config.compliance_target
            row["meets_static_best"] = None if static_h is None else me["gpu_hours"] <= static_h
            row["meets_oracle"] = (
                None if not varies or oracle_h <= 0 else me["gpu_hours"] <= ORACLE_TARGET_RATIO * oracle_h
            )
            out.append(row)
        return out


def finite_json(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and every non-finite float replaced by None."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [finite_json(v) for v in value.tolist()]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _split(label: str, w: Workload, window_s: float) -> list[tuple[Workload, float]]:
    end = max(w.duration_s, float(w.arrival_s[-1]))
    n = max(1, math.ceil(end / window_s - 1e-9))
    parts = []
    for i in range(n):
        lo, hi = i * window_s, (i + 1) * window_s
        a, b = np.searchsorted(w.arrival_s, [lo, hi], side="left")
        part = Workload(f"{label}[w{i}]", w.arrival_s[a:b] - lo, w.prompt_tokens[a:b], w.output_tokens[a:b])
        parts.append((part, lo))
    return parts


def run_bench(cfg: BenchConfig, *, progress: bool = False, executor: Executor | None = None) -> BenchResult:
    from autoscaler.profiles import load_profile

    unknown = [p for p in cfg.policies if p not in ALL_POLICIES]
    if unknown:
        raise BenchError(f"--policies: unknown {', '.join(unknown)}; known: {', '.join(ALL_POLICIES)}")
    try:
        profile = load_profile(cfg.profile)
    except (KeyError, ValueError, OSError) as exc:
        raise BenchError(f"--profile: {exc}") from None
    cases = load_cases(cfg)
    own = executor is None
    if executor is None:
        executor = _SerialExecutor() if cfg.jobs <= 1 else ProcessPoolExecutor(max_workers=cfg.jobs)
    bar = _Bar(progress)
    try:
        # phase 1: the oracle's windows (every later run starts from its first window)
        oracle_futs: dict[str, list[Future[WindowNeed]]] = {}
        scenarios: dict[str, Scenario] = {}
        for case in cases:
            label, w = case.label, case.workload
            sc = base_scenario(cfg, w, profile, cfg.startups_s[0], case)
            scenarios[label] = sc
            settings = SimSettings.of(sc)
            oracle_futs[label] = [
                executor.submit(_window_task, part, lo, cfg.window_s, settings)
                for part, lo in _split(label, w, cfg.window_s)
            ]
        bar.add(sum(len(f) for f in oracle_futs.values()), "oracle windows")
        for futs in oracle_futs.values():
            for f in as_completed(futs):
                f.result()
                bar.advance()
        results: list[TraceResult] = []
        for case in cases:
            label, w = case.label, case.workload
            sched = OracleSchedule(cfg.window_s, tuple(f.result() for f in oracle_futs[label]),
                                   profile.gpus_per_replica)  # fmt: skip
            results.append(TraceResult(label, len(w), w.duration_s, sched, None, ttft_p99_s=case.ttft_p99_s,
                                       itl_p99_s=case.itl_p99_s, role=case.role, surges=case.surges))  # fmt: skip
        # phase 2: where autoscaled runs start, per trace and start-up time (short prefix searches)
        starts_futs = {
            (tr.label, startup_s): executor.submit(
                warm_start_continuous, scenarios[tr.label], tr.oracle, startup_s, cfg.window_s
            )
            for tr in results
            for startup_s in cfg.startups_s
        }
        bar.add(len(starts_futs), "warm starts")
        for f in as_completed(starts_futs.values()):
            f.result()
            bar.advance()
        starts = {key: f.result() for key, f in starts_futs.items()}
        # phase 3: static-best search, the oracle's replay and every policy at every startup time
        jobs: list[tuple[TraceResult, str, float, Future[dict[str, Any]]]] = []
        for tr in results:
            sc = scenarios[tr.label]
            first = tr.oracle.windows[0]
            if "static-best" in cfg.policies:
                fut = executor.submit(_static_best_task, sc, tr.oracle.peak, cfg.compliance_target)
                jobs.append((tr, "static-best", 0.0, fut))
            if "oracle" in cfg.policies:
                osc = replace(sc, startup_s=0.0, initial_prefill=first.prefill, initial_decode=first.decode)
                jobs.append((tr, "oracle", 0.0, executor.submit(_replay_task, osc, "oracle", tr.oracle)))
            for startup_s in cfg.startups_s:
                start_p, start_d = starts[(tr.label, startup_s)]
                for name in cfg.policies:
                    if name in ("static-best", "oracle"):
                        continue
                    psc = replace(sc, startup_s=startup_s, spec=replace(sc.spec, pod_startup_s=startup_s),
                                  initial_prefill=start_p, initial_decode=start_d)  # fmt: skip
                    jobs.append((tr, name, startup_s, executor.submit(_replay_task, psc, name, None)))
        bar.add(len(jobs), "replays")
        by_future = {id(f): (tr, name, startup_s) for tr, name, startup_s, f in jobs}
        for done in as_completed([j[3] for j in jobs]):
            tr, name, startup_s = by_future[id(done)]
            out = done.result()
            out["summary"]["policy"] = name
            out["summary"]["startup_s"] = startup_s if name not in ("static-best", "oracle") else None
            if name == "static-best":
                tr.static_best = out.get("static_best")
            if name == "oracle":
                out["summary"]["gpu_hours_replay"] = out["summary"]["gpu_hours"]
                out["summary"]["gpu_hours"] = tr.oracle.gpu_hours
            tr.runs.append(out)
            bar.advance()
    finally:
        bar.close()
        if own:
            executor.shutdown()
    order = {name: i for i, name in enumerate(ALL_POLICIES)}
    for tr in results:
        tr.runs.sort(key=lambda r: (order[r["summary"]["policy"]], r["summary"]["startup_s"] or 0.0))
        oracle_h = tr.oracle.gpu_hours
        static_h = next((r["summary"]["gpu_hours"] for r in tr.runs if r["summary"]["policy"] == "static-best"),
                        None)  # fmt: skip
        clairvoyant_h = {
            r["summary"]["startup_s"]: r["summary"]["gpu_hours"]
            for r in tr.runs
            if r["summary"]["policy"] == "clairvoyant"
        }
        for r in tr.runs:
            s = r["summary"]
            s["gpu_hours_vs_oracle"] = s["gpu_hours"] / oracle_h if oracle_h > 0 else None
            s["gpu_hours_vs_static_best"] = s["gpu_hours"] / static_h if static_h else None
            c_h = clairvoyant_h.get(s["startup_s"])
            s["gpu_hours_vs_clairvoyant"] = s["gpu_hours"] / c_h if c_h else None
        if tr.surges:
            from sim.surges import surge_reports

            tr.surge_reports = surge_reports(tr, cfg.window_s, scenarios[tr.label])
    return BenchResult(cfg, results)


def _warm_windows(window_s: float, startup_s: float) -> int:
    """The windows that begin before the first ordered pod could be ready (t < startup_s + one window)."""
    return max(1, math.ceil((startup_s + window_s) / window_s))


def warm_start(oracle: OracleSchedule, startup_s: float) -> tuple[int, int]:
    """Per pool, the oracle's largest allocation over the windows no decision can change (``_warm_windows``):
    where the search for the warm start (``warm_start_continuous``) begins."""
    head = oracle.windows[: _warm_windows(oracle.window_s, startup_s)]
    return max(w.prefill for w in head), max(w.decode for w in head)


def warm_start_continuous(
    scenario: Scenario, oracle: OracleSchedule, startup_s: float, window_s: float
) -> tuple[int, int]:
    """Where every autoscaled run starts: the cheapest fixed (P, D) that holds every window no decision can
    change (``_warm_windows``), run continuously from t = 0. No policy can add capacity sooner, so starting any
    smaller would score the harness's starting point, not the policy. The oracle's per-window sizes are not
    enough: each is found from an empty system, while a ramp's queue carries over from one window into the next
    (conv x50 at 180 s start-up: the t = 180 s window failed at the oracle's 6P/5D held from t = 0)."""
    start = warm_start(oracle, startup_s)
    prefix = _cut(scenario.workload, _warm_windows(window_s, startup_s) * window_s)
    found = StaticSearch(prefix, SimSettings.of(scenario), window_s, target=1.0).search(start)
    return start if found is None else (found.prefill, found.decode)


class _Bar:
    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self._progress.start()
        self._task: Any = None

    def add(self, total: int, description: str) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# ---------------------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------------------


def _f(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def render(result: BenchResult, console: Any) -> None:
    from rich.table import Table

    cfg = result.config
    for tr in result.traces:
        role = f" ({tr.role})" if tr.role else ""
        title = (
            f"{tr.label}{role}: {tr.requests} requests over {tr.duration_s / 60:.0f} min, {cfg.profile}, "
            f"TTFT p99 ≤ {tr.ttft_p99_s:g} s, ITL p99 ≤ {tr.itl_p99_s * 1e3:g} ms"
        )
        has_clairvoyant = any(r["summary"]["policy"] == "clairvoyant" for r in tr.runs)
        table = Table(title=title, title_justify="left")
        for col, justify in (
            ("policy", "left"), ("startup s", "right"), ("window compliance", "right"),
            ("request SLO", "right"), ("worst-window TTFT p99 s", "right"), ("worst-window ITL p99 ms", "right"),
            ("GPU-h", "right"), ("÷ oracle", "right"), ("÷ static-best", "right"), ("÷ clairvoyant", "right"),
            ("scale events", "right"),
        ):  # fmt: skip
            if col == "÷ clairvoyant" and not has_clairvoyant:
                continue
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for run in tr.runs:
            s = run["summary"]
            itl = s.get("worst_window_itl_p99_s")
            ttft_cell = (
                "∞"
                if s.get("worst_window_ttft_p99_s_unserved")
                else _f(s.get("worst_window_ttft_p99_s"), ".2f")
            )
            itl_cell = (
                "∞"
                if s.get("worst_window_itl_p99_s_unserved")
                else _f(None if itl is None else itl * 1e3, ".1f")
            )
            cells = [
                s["policy"],
                _f(s.get("startup_s"), ".0f"),
                _f(s.get("window_compliance"), ".3f"),
                _f(s.get("request_slo_attainment"), ".4f"),
                ttft_cell,
                itl_cell,
                _f(s.get("gpu_hours"), ".2f"),
                _f(s.get("gpu_hours_vs_oracle"), ".2f"),
                _f(s.get("gpu_hours_vs_static_best"), ".2f"),
            ]
            if has_clairvoyant:
                cells.append(_f(s.get("gpu_hours_vs_clairvoyant"), ".2f"))
            table.add_row(*cells, str(s.get("scale_events", "-")))
        console.print(table)
        notes = [
            f"oracle: GPU-h is the lower bound Σ(P+D)×{cfg.window_s:g}s (peak {tr.oracle.peak[0]}P/"
            f"{tr.oracle.peak[1]}D); its other columns replay that schedule with instant startup, where a window "
            "inherits the previous one's backlog, so its compliance can be < 1"
        ]
        if tr.oracle.infeasible_windows:
            notes.append(f"{tr.oracle.infeasible_windows} window(s) infeasible even at max replicas")
        if tr.static_best:
            sb = tr.static_best
            notes.append(f"static-best {sb['prefill']}P/{sb['decode']}D ({sb['simulations']} search replays"
                         + ("" if sb["found"] else "; none met the target: max shown") + ")")  # fmt: skip
        console.print("  " + "; ".join(notes))
    if len(result.traces) > 1 or cfg.suite:
        render_targets(result, console)
    if any(tr.surge_reports for tr in result.traces):
        render_surges(result, console)
    if len(cfg.startups_s) > 1:
        sweep = Table(title="startup sweep: window compliance / GPU-h", title_justify="left")
        sweep.add_column("trace")
        sweep.add_column("policy")
        for s in cfg.startups_s:
            sweep.add_column(f"{s:g} s", justify="right")
        for tr in result.traces:
            for name in cfg.policies:
                if name in ("static-best", "oracle"):
                    continue
                cells = []
                for st in cfg.startups_s:
                    match = [
                        r
                        for r in tr.runs
                        if r["summary"]["policy"] == name and r["summary"]["startup_s"] == st
                    ]
                    s = match[0]["summary"] if match else {}
                    cells.append(f"{_f(s.get('window_compliance'), '.3f')} / {_f(s.get('gpu_hours'), '.1f')}")
                sweep.add_row(tr.label, name, *cells)
        console.print(sweep)


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def render_targets(result: BenchResult, console: Any, policy: str = "pdscale") -> None:
    """One row per workload: the policy against the targets, and the clairvoyant decomposition."""
    from rich.table import Table

    rows = result.targets(policy)
    if not rows:
        return
    cfg = result.config
    table = Table(
        title=f"{policy} per workload at {cfg.startups_s[0]:g} s start-up (✓/✗: compliance ≥ {cfg.compliance_target:g}, "
        f"GPU-h ≤ static-best, ≤ {ORACLE_TARGET_RATIO:g}× oracle where oracle/static-best < {VARYING_ORACLE_RATIO:g})",
        title_justify="left",
    )
    for col in (
        "workload",
        "role",
        "compliance",
        "GPU-h",
        "÷ static-best",
        "÷ oracle",
        "oracle ÷ static-best",
        f"{policy} ÷ clairvoyant (forecast)",
        "clairvoyant ÷ oracle (model)",
        "clairvoyant compliance",
    ):
        table.add_column(col, justify="left" if col in ("workload", "role") else "right")  # fmt: skip
    for r in rows:
        table.add_row(
            r["trace"],
            r["role"] or "-",
            _f(r["window_compliance"], ".3f") + _mark(r["meets_compliance"]),
            _f(r["gpu_hours"], ".2f"),
            _f(r["vs_static_best"], ".2f") + _mark(r["meets_static_best"]),
            _f(r["vs_oracle"], ".2f") + _mark(r["meets_oracle"]),
            _f(r["oracle_vs_static_best"], ".2f"),
            _f(r["vs_clairvoyant"], ".2f"),
            _f(r["clairvoyant_vs_oracle"], ".2f"),
            _f(r["clairvoyant_compliance"], ".3f"),
        )
    console.print(table)


def render_surges(result: BenchResult, console: Any) -> None:
    """Each labelled surge: when the policy first ordered, what, and minutes above target vs the physical minimum."""
    from rich.table import Table

    table = Table(
        title="surges: minutes above target vs the physical minimum (start-up + draining the backlog with the "
        "capacity ordered at the first signal)",
        title_justify="left",
    )
    for col in (
        "workload",
        "surge",
        "policy",
        "pool",
        "work before → during /s",
        "first order after",
        "ready → ordered",
        "backlog then",
        "drain",
        "minutes above target",
        "physical minimum",
    ):
        table.add_column(col, justify="left" if col in ("workload", "surge", "policy", "pool") else "right")  # fmt: skip
    for tr in result.traces:
        for r in tr.surge_reports:
            table.add_row(
                r["trace"], r["surge"], r["policy"], r["pool"],
                f"{r['work_before_per_s'] / 1e3:.0f}k → {r['work_during_per_s'] / 1e3:.0f}k",
                "-" if r["detect_s"] is None else f"{r['detect_s']:.0f} s",
                "-" if r["ordered"] is None else f"{r['ready_before']} → {r['ordered']}",
                "-" if r["backlog_tokens"] is None else f"{r['backlog_tokens'] / 1e3:.0f}k tok",
                "-" if r["drain_s"] is None else ("never" if not math.isfinite(r["drain_s"]) else f"{r['drain_s']:.0f} s"),
                f"{r['minutes_above_target']:.0f}",
                "-" if r["physical_min_minutes"] is None else _f(r["physical_min_minutes"], ".1f"),
            )  # fmt: skip
    console.print(table)


def write_plots(result: BenchResult, out_dir: Path) -> list[Path]:
    """One PNG per trace: replicas over time per policy vs the oracle, and window p99s vs targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    written: list[Path] = []
    main_startup = cfg.startups_s[0]
    for tr in result.traces:
        fig, axes = plt.subplots(4, 1, figsize=(12, 13), sharex=True)
        sched = tr.oracle.as_arrays()
        edges = np.append(sched["start_s"], sched["start_s"][-1] + cfg.window_s) / 60
        for ax, pool in zip(axes[:2], ("prefill", "decode"), strict=True):
            ax.stairs(sched[pool], edges, color="black", linewidth=2, label="oracle (need)", baseline=None)
            ax.set_ylabel(f"{pool} replicas")
        for run in tr.runs:
            s = run["summary"]
            if s["policy"] == "oracle" or s.get("startup_s") not in (None, main_startup):
                continue
            t = np.asarray(run["timeline"].get("time_s", []), dtype=float) / 60
            for ax, pool in zip(axes[:2], ("prefill", "decode"), strict=True):
                ax.step(
                    t, run["timeline"].get(f"{pool}_desired", []), where="post", label=s["policy"], alpha=0.8
                )
            w = run["windows"]
            mid = (np.asarray(w["start_s"], dtype=float) + cfg.window_s / 2) / 60
            for ax, key, target in (
                (axes[2], "ttft_slo_s", cfg.ttft_p99_s),
                (axes[3], "itl_slo_s", cfg.itl_p99_s),
            ):
                ratio = np.asarray(w[key], dtype=float) / target
                # unserved windows (infinite quantile) are drawn at the top instead of vanishing from a log axis
                ax.plot(mid, np.where(np.isinf(ratio), UNSERVED_RATIO, ratio), ".-", label=s["policy"])
        for ax, name in ((axes[2], "TTFT p99 / target (1e4: unserved)"), (axes[3], "ITL p99 / target")):
            ax.axhline(1.0, color="red", linestyle="--", linewidth=1)
            ax.set_yscale("log")
            ax.set_ylabel(name)
        axes[0].legend(loc="upper left", fontsize=8, ncol=3)
        axes[2].legend(loc="upper left", fontsize=8, ncol=3)
        axes[-1].set_xlabel("time (min)")
        axes[0].set_title(f"{tr.label}: policies at startup {main_startup:g} s vs the per-window oracle")
        fig.tight_layout()
        path = out_dir / f"bench_{tr.label}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    rate_scale = default_rate_scale(args.rate_scale, args.traces, args.generator)
    for name in ("rate_scale", "ttft_p99", "itl_p99"):
        value = rate_scale if name == "rate_scale" else getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise BenchError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.duration_s is not None and not args.duration_s > 0:
        raise BenchError(f"--duration-s must be positive, got {args.duration_s}")
    if args.max_replicas < 1 or args.jobs < 1:
        raise BenchError("--max-replicas and --jobs must be >= 1")
    if args.replicate_spread_s < 0:
        raise BenchError("--replicate-spread-s must be >= 0")
    if args.suite is None and (args.workloads or args.role):
        raise BenchError("--workloads and --role select workloads of a --suite")
    if args.suite is not None and (args.traces or args.generator):
        raise BenchError("--suite replaces --traces and --generator: give one or the other")
    policies = args.policies or (SUITE_POLICIES if args.suite else DEFAULT_POLICIES)
    return BenchConfig(
        traces=tuple(args.traces),
        generators=tuple(args.generator),
        rate_scale=rate_scale,
        scale_mode=args.scale_mode,
        replicate_spread_s=args.replicate_spread_s,
        duration_s=args.duration_s,
        profile=args.profile,
        ttft_p99_s=args.ttft_p99,
        itl_p99_s=args.itl_p99,
        startups_s=args.startup_s,
        policies=policies,
        suite=args.suite,
        suite_workloads=tuple(args.workloads),
        suite_role=args.role,
        seed=args.seed,
        jobs=args.jobs,
        max_replicas=args.max_replicas,
    )


def bench_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.list:
        return _list_suite(args.suite)
    try:
        cfg = config_from_args(args)
        result = run_bench(cfg, progress=not args.json)
    except BenchError as exc:
        print(f"pdscale bench: {exc}", file=sys.stderr)
        return 2
    payload = result.to_json()
    if args.json:
        print(json.dumps(payload, default=_json_default))
    else:
        render(result, Console() if sys.stdout.isatty() else Console(width=200))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(
            json.dumps(payload, indent=1, default=_json_default) + "\n", encoding="utf-8"
        )
        paths = write_plots(result, out)
        if not args.json:
            Console(stderr=True).print(f"wrote {out / 'bench.json'} and {', '.join(str(p) for p in paths)}")
    return 0


def _list_suite(name: str | None) -> int:
    from sim.suite import describe_suite, suite

    if name is None:
        print("pdscale bench: --list lists the workloads of a --suite", file=sys.stderr)
        return 2
    try:
        entries = suite(name)
    except KeyError as exc:
        print(f"pdscale bench: --suite: {exc.args[0]}", file=sys.stderr)
        return 2
    for line in describe_suite(entries):
        print(line)
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

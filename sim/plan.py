"""``pdscale plan``: size a deployment for a workload and SLO, per latency profile.

For each profile it answers, by simulation with the same engine the benchmark uses:

* the cheapest **static disaggregated** (P, D) whose replay meets window_compliance ≥ 0.99
  (``sim.oracle.StaticSearch``, pods warm from t=0);
* the cheapest **static aggregated** replica count N (prefill and decode colocated);
* the GPU-hours to expect with **pdscale autoscaling** (a replay of the ``pdscale`` policy with the given pod
  startup time, starting from the oracle's first-window size) next to the per-window **oracle** lower bound;
* the **headroom** each leaves. Static: how much more load the busiest window (the oracle's largest P + D) can
  take before that window misses the SLO, found by replaying it at 1.05×, 1.10×, … its rate (time compressed).
  Autoscaled: its GPU-hours over the oracle's minus one (the average over-provisioning).

``--gpu-price-per-hour`` adds a cost column. The workload is a trace (``--trace``, scaled like ``pdscale bench``)
or a generator spec (``--generator``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoscaler.core.latency import LatencyProfile
from sim.bench import (
    BenchConfig,
    BenchError,
    _json_default,
    _replay_task,
    _SerialExecutor,
    _split,
    _window_task,
    base_scenario,
    finite_json,
    load_workloads,
)
from sim.bench_cli import default_rate_scale
from sim.oracle import OracleSchedule, SimSettings, StaticSearch, judge, lowest_passing
from sim.plan_cli import DEFAULT_PROFILE
from sim.workload import Workload

HEADROOM_STEP = 0.05
HEADROOM_MAX_STEPS = 40  # up to +200 %


@dataclass(frozen=True)
class PlanConfig:
    workload: BenchConfig
    profiles: tuple[str, ...]
    gpu_price_per_hour: float | None = None
    startup_s: float = 120.0
    jobs: int = 1


def peak_headroom(
    window: Workload, settings: SimSettings, prefill: int, decode: int, span_s: float
) -> float | None:
    """Extra load (fraction) the busiest window takes at (prefill, decode) before missing the SLO; None if it
    already misses at 1×."""
    from sim.oracle import WINDOW_DRAIN_S, _run_static

    def ok(k: int) -> bool:
        scale = 1.0 + HEADROOM_STEP * k
        w = window.scaled(scale)
        engine = _run_static(w, settings, prefill, decode, span_s / scale + WINDOW_DRAIN_S)
        t_ok, i_ok, _, _ = judge(engine.records(), settings.spec)
        return t_ok and i_ok

    if not ok(0):
        return None
    first_fail = lowest_passing(lambda k: not ok(k), 1, 1, HEADROOM_MAX_STEPS)
    steps = HEADROOM_MAX_STEPS if first_fail is None else first_fail - 1
    return steps * HEADROOM_STEP


def _static_plan_task(scenario: Any, mode: str, start: tuple[int, int], peak: tuple[Workload, float],
                      target: float) -> dict[str, Any]:  # fmt: skip
    settings = replace(SimSettings.of(scenario), mode=mode)
    search = StaticSearch(scenario.workload, settings, scenario.window_s, target)
    best = search.search(start)
    out: dict[str, Any] = {"mode": mode, "simulations": search.simulations, "found": best is not None}
    if best is None:
        return out
    hours = (
        (best.prefill + best.decode) * scenario.profile.gpus_per_replica * scenario.workload.duration_s / 3600
    )
    out.update(
        prefill=best.prefill,
        decode=best.decode,
        window_compliance=best.window_compliance,
        gpu_hours=hours,
        headroom=peak_headroom(peak[0], settings, best.prefill, best.decode, peak[1]),
    )
    return out


def run_plan(cfg: PlanConfig, executor: Executor | None = None) -> dict[str, Any]:
    from autoscaler.profiles import load_profile

    workloads = load_workloads(cfg.workload)
    if len(workloads) != 1:
        raise BenchError("plan takes exactly one workload (--trace FILE or --generator SPEC)")
    label, workload = workloads[0]
    own = executor is None
    if executor is None:
        executor = _SerialExecutor() if cfg.jobs <= 1 else ProcessPoolExecutor(max_workers=cfg.jobs)
    plans: list[dict[str, Any]] = []
    try:
        profiles: list[LatencyProfile] = []
        for name in cfg.profiles:
            try:
                profiles.append(load_profile(name))
            except (KeyError, ValueError, OSError) as exc:
                raise BenchError(f"--profile {name}: {exc}") from None
        window_s = cfg.workload.window_s
        staged: list[tuple[LatencyProfile, Any, OracleSchedule, list[Future[Any]]]] = []
        for profile in profiles:
            sc = base_scenario(cfg.workload, workload, profile, cfg.startup_s)
            settings = SimSettings.of(sc)
            parts = _split(label, workload, window_s)
            needs = [
                f.result()
                for f in [executor.submit(_window_task, p, lo, window_s, settings) for p, lo in parts]
            ]
            sched = OracleSchedule(window_s, tuple(needs), profile.gpus_per_replica)
            busiest = max(
                range(len(needs)), key=lambda i: (needs[i].prefill + needs[i].decode, needs[i].arrivals)
            )
            peak = (parts[busiest][0], window_s)
            first = needs[0]
            target = cfg.workload.compliance_target
            futs = [
                executor.submit(_static_plan_task, sc, "disagg", sched.peak, peak, target),
                executor.submit(_static_plan_task, sc, "agg", (0, sum(sched.peak)), peak, target),
                executor.submit(_replay_task, replace(sc, initial_prefill=first.prefill,
                                                      initial_decode=first.decode), "pdscale", None),
            ]  # fmt: skip
            staged.append((profile, sc, sched, futs))
        for profile, _sc, sched, futs in staged:
            disagg, agg, auto = (f.result() for f in futs)
            gpus = profile.gpus_per_replica
            for opt, res in (("static disaggregated", disagg), ("static aggregated", agg)):
                plans.append(
                    {
                        "profile": profile.name,
                        "option": opt,
                        "prefill": res.get("prefill"),
                        "decode": res.get("decode"),
                        "gpus": None if not res["found"] else (res["prefill"] + res["decode"]) * gpus,
                        "gpu_hours": res.get("gpu_hours"),
                        "window_compliance": res.get("window_compliance"),
                        "headroom": res.get("headroom"),
                        "found": res["found"],
                        "simulations": res["simulations"],
                    }
                )
            s = auto["summary"]
            plans.append(
                {
                    "profile": profile.name,
                    "option": "pdscale autoscaled",
                    "prefill": s.get("prefill_replicas_max"),
                    "decode": s.get("decode_replicas_max"),
                    "gpus": (s.get("prefill_replicas_max", 0) + s.get("decode_replicas_max", 0)) * gpus,
                    "gpu_hours": s["gpu_hours"],
                    "window_compliance": s.get("window_compliance"),
                    "headroom": s["gpu_hours"] / sched.gpu_hours - 1 if sched.gpu_hours > 0 else None,
                    "found": True,
                    "simulations": 1,
                }
            )
            plans.append(
                {
                    "profile": profile.name,
                    "option": "oracle (lower bound)",
                    "prefill": sched.peak[0],
                    "decode": sched.peak[1],
                    "gpus": sum(sched.peak) * gpus,
                    "gpu_hours": sched.gpu_hours,
                    "window_compliance": None,
                    "headroom": 0.0,
                    "found": True,
                    "simulations": sum(w.simulations for w in sched.windows),
                }
            )
    finally:
        if own:
            executor.shutdown()
    for p in plans:
        p["cost"] = (
            None
            if cfg.gpu_price_per_hour is None or p["gpu_hours"] is None
            else p["gpu_hours"] * cfg.gpu_price_per_hour
        )
    return finite_json(
        {
            "workload": {"label": label, "requests": len(workload), "duration_s": workload.duration_s},
            "slo": {"ttft_p99_s": cfg.workload.ttft_p99_s, "itl_p99_s": cfg.workload.itl_p99_s},
            "startup_s": cfg.startup_s,
            "gpu_price_per_hour": cfg.gpu_price_per_hour,
            "plans": plans,
        }
    )


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    wl, slo = result["workload"], result["slo"]
    table = Table(
        title=f"plan for {wl['label']} ({wl['requests']} requests, {wl['duration_s'] / 60:.0f} min): "
        f"TTFT p99 ≤ {slo['ttft_p99_s']:g} s, ITL p99 ≤ {slo['itl_p99_s'] * 1e3:g} ms",
        title_justify="left",
    )
    cols = ["profile", "option", "P", "D / N", "GPUs (peak)", "GPU-h", "window compliance", "headroom"]
    if result["gpu_price_per_hour"] is not None:
        cols.append("cost")
    for c in cols:
        table.add_column(c, justify="left" if c in ("profile", "option") else "right")
    for p in result["plans"]:
        agg = p["option"] == "static aggregated"

        def fmt(v: Any, spec: str) -> str:
            return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)

        head = p["headroom"]
        if p["option"].startswith("static"):
            head_s = (
                "misses at 1×"
                if head is None and p["found"]
                else fmt(None if head is None else head * 100, "+.0f")
            )
            head_s += "% load at peak" if head is not None else ""
        else:
            head_s = fmt(None if head is None else head * 100, "+.0f") + "% GPU-h vs oracle"
        row = [
            p["profile"],
            p["option"] + ("" if p["found"] else " (none met the SLO)"),
            "-" if agg else fmt(p["prefill"], "d"),
            fmt(p["decode"], "d"),
            fmt(p["gpus"], "d"),
            fmt(p["gpu_hours"], ".2f"),
            fmt(p["window_compliance"], ".3f"),
            head_s,
        ]
        if result["gpu_price_per_hour"] is not None:
            row.append(fmt(p["cost"], ",.2f"))
        table.add_row(*row)
    console.print(table)


def write_plot(result: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    plans = [p for p in result["plans"] if p["gpu_hours"] is not None]
    profiles = sorted({p["profile"] for p in plans})
    options = ["static disaggregated", "static aggregated", "pdscale autoscaled", "oracle (lower bound)"]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(options)
    for i, opt in enumerate(options):
        vals = [next((p["gpu_hours"] for p in plans if p["profile"] == pr and p["option"] == opt), 0.0)
                for pr in profiles]  # fmt: skip
        ax.bar(np.arange(len(profiles)) + i * width, vals, width, label=opt)
    ax.set_xticks(np.arange(len(profiles)) + 0.4 - width / 2, profiles)
    ax.set_ylabel("GPU-hours")
    ax.set_title(f"capacity plan: {result['workload']['label']}")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "plan.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plan_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    try:
        rate_scale = default_rate_scale(args.rate_scale, [args.trace] if args.trace else [],
                                        [args.generator] if args.generator else [])
        for name in ("rate_scale", "ttft_p99", "itl_p99"):
            v = rate_scale if name == "rate_scale" else getattr(args, name)
            if not (math.isfinite(v) and v > 0):
                raise BenchError(f"--{name.replace('_', '-')} must be a positive number, got {v}")
        if args.gpu_price_per_hour is not None and not args.gpu_price_per_hour >= 0:
            raise BenchError("--gpu-price-per-hour must be >= 0")
        if args.startup_s < 0 or args.jobs < 1 or args.max_replicas < 1:
            raise BenchError("--startup-s must be >= 0, --jobs and --max-replicas >= 1")
        wcfg = BenchConfig(
            traces=(args.trace,) if args.trace else (),
            generators=(args.generator,) if args.generator else (),
            rate_scale=rate_scale,
            scale_mode=args.scale_mode,
            duration_s=args.duration_s,
            ttft_p99_s=args.ttft_p99,
            itl_p99_s=args.itl_p99,
            seed=args.seed,
            max_replicas=args.max_replicas,
            jobs=args.jobs,
        )
        cfg = PlanConfig(wcfg, tuple(args.profile or (DEFAULT_PROFILE,)), args.gpu_price_per_hour,
                         args.startup_s, args.jobs)  # fmt: skip
        result = run_plan(cfg)
    except BenchError as exc:
        print(f"pdscale plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        render(result, Console() if sys.stdout.isatty() else Console(width=200))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_text(
            json.dumps(result, indent=1, default=_json_default) + "\n", encoding="utf-8"
        )
        write_plot(result, out)
    return 0

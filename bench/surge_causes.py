"""Why pdscale misses the windows it misses: one cause per missed 60 s window and pool (issue 16, item 4).

    .venv/bin/python bench/surge_causes.py --workloads flash-crowd,lull-surge,prompt-shift,diurnal --jobs 2

Each workload of ``pdscale bench --suite`` (default generalization) is replayed with pdscale from the bench's warm
start (found as ``pdscale bench`` finds it, from the oracle's first windows only), recording what the policy read
each tick. For every counted window that failed the SLO, the pool it failed on (TTFT: prefill, and decode as well
when requests waited for decode slots in it; ITL: decode) gets one cause, from the replicas that pool had ready in
the window against the clairvoyant's need for that window (the same capacity model fed the window's true load):

* ``model``: the pool had at least what the model says the window's true load needs, and no backlog from before:
  the capacity model (or its margin) was short, not the forecast;
* ``backlog``: it had enough for the window's own load, but a queue built before the window was still draining;
* ``start-up``: the true load needed more less than one pod start-up before the window began (no order placed
  after the rise could be ready in time; only forecasting the rise could have);
* ``under-read``: the load needed it a start-up before the window, and the policy had not ordered it then: it had
  ordered nothing beyond its ready pods (``detection``) or too little (``order-small``). The ratio it read then
  (``read/true``: the token rate the policy measured over the rate window ÷ the true arriving rate) says how
  far it under-read the demand: rates counted on completed work fall short of the arrivals while a queue grows.

Beside them, per workload, the unforeseeable windows: those whose need (the clairvoyant's) is above every window's
need in the 10 minutes that ended one start-up and one window before; a reactive policy that keeps the recent peak
need ready misses them. Numbers, not pass/fail; deterministic (the simulator is), so a run under load is only slower.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if str(REPO_ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_policy_variants import build_policy, parse_variant  # noqa: E402

from sim.bench import (  # noqa: E402
    BenchConfig,
    Case,
    _split,
    _warm_windows,
    _window_task,
    base_scenario,
    load_cases,
    warm_start_continuous,
)

MEMORY_S = 600.0  # the unforeseeable windows' look-back (see ``analyse``)
CAUSES = ("start-up", "detection", "order-small", "backlog", "model")
UNDER_READ = ("detection", "order-small")


class _Recorder:
    """pdscale's policy, recording per tick what it read (rates, queues) and what it ordered."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.name = policy, policy.name
        self.rows: list[tuple[float, float, float, float, str, str]] = []
        self.decisions: list[tuple[float, Any]] = []

    def initial_state(self, spec: Any) -> Any:
        return self.policy.initial_state(spec)

    def decide(self, observation: Any, state: Any, spec: Any) -> Any:
        decision, new_state = self.policy.decide(observation, state, spec)
        s = observation.signals
        self.decisions.append((observation.time_s, decision))
        self.rows.append((
            observation.time_s,
            float(s.prompt_tokens_per_s if s.prompt_tokens_per_s is not None else np.nan),
            float(s.output_tokens_per_s if s.output_tokens_per_s is not None else np.nan),
            float(s.request_rate_per_s if s.request_rate_per_s is not None else np.nan),
            decision.prefill.reason,
            decision.decode.reason,
        ))  # fmt: skip
        return decision, new_state


def warm_start_only(case: Case, cfg: BenchConfig, startup_s: float) -> tuple[int, int]:
    """``pdscale bench``'s warm start: it depends only on the oracle's windows no decision can change."""
    from autoscaler.profiles import load_profile
    from sim.oracle import OracleSchedule, SimSettings

    profile = load_profile(cfg.profile)
    sc = base_scenario(cfg, case.workload, profile, startup_s, case)
    settings = SimSettings.of(sc)
    head = _split(case.label, case.workload, cfg.window_s)[: _warm_windows(cfg.window_s, startup_s)]
    needs = [_window_task(part, lo, cfg.window_s, settings) for part, lo in head]
    oracle = OracleSchedule(cfg.window_s, tuple(needs), profile.gpus_per_replica)
    return warm_start_continuous(sc, oracle, startup_s, cfg.window_s)


def _true_rate(arrival_s: np.ndarray, tokens: np.ndarray, t: float, span_s: float) -> float:
    a, b = np.searchsorted(arrival_s, [t - span_s, t], side="right")
    return float(tokens[a:b].sum()) / span_s


def analyse(
    case: Case, cfg: BenchConfig, startup_s: float, overrides: dict[str, Any], trace: tuple[float, float] | None = None
) -> dict[str, Any]:
    from autoscaler.core.policy import PdscalePolicy
    from autoscaler.core.types import Pool
    from autoscaler.profiles import load_profile
    from sim.clairvoyant import clairvoyant_schedule
    from sim.replay import replay

    start = warm_start_only(case, cfg, startup_s)
    profile = load_profile(cfg.profile)
    sc = base_scenario(cfg, case.workload, profile, startup_s, case)
    sc = replace(sc, initial_prefill=start[0], initial_decode=start[1])
    policy = build_policy(profile, sc.spec, overrides)
    assert isinstance(policy, PdscalePolicy)
    schedule = clairvoyant_schedule(sc.workload, policy, sc.spec, sc.window_s)
    rec = _Recorder(policy)
    result = replay(sc, rec)
    w, tl = result.windows, result.timeline
    times = tl["time_s"]
    ticks = np.array([r[0] for r in rec.rows])
    read = {"prefill": np.array([r[1] for r in rec.rows]), "decode": np.array([r[2] for r in rec.rows])}
    wl = sc.workload
    tokens = {"prefill": wl.prompt_tokens.astype(np.float64), "decode": wl.output_tokens.astype(np.float64)}
    win = sc.window_s
    rows = []
    for i, (t0, ok, counted) in enumerate(zip(w["start_s"], w["ok"], w["counted"], strict=True)):
        if not counted or ok:
            continue
        t0 = float(t0)
        in_w = (times >= t0) & (times < t0 + win)
        pools = []
        if w["ttft_slo_s"][i] > sc.spec.ttft.target_s:
            pools.append("prefill")
            dwait = tl["decode_waiting"][in_w]
            if dwait.size and float(np.max(dwait)) > max(1.0, float(np.min(tl["decode_ready"][in_w]))):
                pools.append("decode")
        if w["itl_slo_s"][i] > sc.spec.itl.target_s and "decode" not in pools:
            pools.append("decode")
        for pool in pools:
            p = Pool(pool)
            need = schedule.need(p, i)
            ready_w = int(np.min(tl[f"{pool}_ready"][in_w])) if in_w.any() else 0
            row: dict[str, Any] = {"minute": int(t0 // 60), "pool": pool, "need": need, "ready": ready_w,
                                   "ttft_s": float(w["ttft_slo_s"][i]), "itl_s": float(w["itl_slo_s"][i])}  # fmt: skip
            if ready_w >= need:
                j = int(np.searchsorted(times, t0))
                waiting = float(tl[f"{pool}_waiting"][min(j, times.size - 1)])
                row["cause"] = "backlog" if waiting > max(1.0, ready_w) else "model"
                row["waiting_at_start"] = waiting
                rows.append(row)
                continue
            k = i
            while k > 0 and schedule.need(p, k - 1) >= need:
                k -= 1
            onset_s = k * win
            by_s = t0 - startup_s  # pods ordered later than this are not ready when the window begins
            row["onset_minute"] = onset_s / 60
            if onset_s > by_s:
                row["cause"] = "start-up"
                rows.append(row)
                continue
            j = max(0, int(np.searchsorted(times, by_s, side="right")) - 1)
            desired_then, ready_then = int(tl[f"{pool}_desired"][j]), int(tl[f"{pool}_ready"][j])
            jt = max(0, int(np.searchsorted(ticks, by_s, side="right")) - 1)
            truth = _true_rate(wl.arrival_s, tokens[pool], float(ticks[jt]), sc.spec.metrics.window_s)
            row.update(desired_then=desired_then, ready_then=ready_then,
                       read_over_true=float(read[pool][jt]) / truth if truth > 0 else float("nan"))  # fmt: skip
            if desired_then >= need:
                row["cause"] = "start-up"  # ordered in time; the pods came up during the window
            elif desired_then <= ready_then:
                row["cause"] = "detection"
            else:
                row["cause"] = "order-small"
            rows.append(row)
    # Unforeseeable windows: the need (either pool) is above every window's need in the ``MEMORY_S`` that ended one
    # start-up and one window before it (k windows). A policy that reads the load when a window ends and keeps the
    # peak need of the last ``MEMORY_S`` ready misses them; only capacity held beyond any recent
    # need (or foreknowledge) wins them. A property of the workload and the start-up, not of pdscale.
    k = 1 + math.ceil(startup_s / win - 1e-9)
    m = max(1, round(MEMORY_S / win))
    counted_idx = [i for i, c in enumerate(w["counted"]) if c]
    reactive_misses = [
        i for i in counted_idx
        if i >= k and any(schedule.need(p, i) > max(schedule.need(p, j) for j in range(max(0, i - k - m + 1), i - k + 1))
                          for p in (Pool.PREFILL, Pool.DECODE))
    ]  # fmt: skip
    s = result.summary
    from sim.bench import _compact
    from sim.surges import surge_report

    compact = _compact(result)
    surges = [row for surge in case.surges
              for row in surge_report(surge, compact, wl, profile, sc.spec, startup_s, win)]  # fmt: skip
    traced = [
        f"{t / 60:6.2f} {p.pool.value:7s} {p.current_replicas:3d} -> {p.desired_replicas:3d} {p.reason}: {p.message}"
        for t, d in rec.decisions
        if trace is not None and trace[0] * 60 <= t < trace[1] * 60
        for p in (d.prefill, d.decode)
    ]
    return {
        "unforeseeable_minutes": [int(i) for i in reactive_misses],
        "counted_windows": len(counted_idx),
        "surges": surges,
        "trace": traced,
        "label": case.label,
        "compliance": float(s["window_compliance"]),
        "gpu_hours": float(s["gpu_hours"]),
        "warm_start": list(start),
        "rows": rows,
    }


def _fmt_row(r: dict[str, Any]) -> str:
    extra = ""
    if "desired_then" in r:
        extra = (f" ordered {r['desired_then']} (ready {r['ready_then']}) a start-up before, "
                 f"read/true {r['read_over_true']:.2f}")  # fmt: skip
    elif "waiting_at_start" in r:
        extra = f" {r['waiting_at_start']:.0f} waiting at its start"
    onset = f" need since min {r['onset_minute']:.0f}" if "onset_minute" in r else ""
    return (f"  min {r['minute']:3d} {r['pool']:7s} {r['cause']:11s} ready {r['ready']:3d} vs need {r['need']:3d}"
            f"{onset}{extra}  (TTFT p99 {r['ttft_s']:.3g}s, ITL p99 {r['itl_s'] * 1e3:.0f}ms)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="generalization")
    ap.add_argument("--workloads", default="flash-crowd,lull-surge,prompt-shift,diurnal,conv-s0,code-s0")
    ap.add_argument("--startup-s", type=float, default=120.0)
    ap.add_argument("--variant", default="default", metavar="NAME:key=value,...",
                    help="PdscalePolicy overrides, as bench_policy_variants.py takes them")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json-out")
    ap.add_argument("--trace", metavar="FROM_MIN-TO_MIN", help="print every decision in these minutes")
    args = ap.parse_args(argv)
    cfg = BenchConfig(suite=args.suite, suite_workloads=tuple(filter(None, args.workloads.split(","))),
                      startups_s=(args.startup_s,))  # fmt: skip
    cases = load_cases(cfg)
    _, overrides = parse_variant(args.variant)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        span = None if not args.trace else tuple(float(x) for x in args.trace.split("-"))
        futures = [pool.submit(analyse, c, cfg, args.startup_s, overrides, span) for c in cases]
        results = [f.result() for f in futures]
    totals = dict.fromkeys(CAUSES, 0)
    for res in results:
        counts = dict.fromkeys(CAUSES, 0)
        for r in res["rows"]:
            counts[r["cause"]] += 1
            totals[r["cause"]] += 1
        print(f"\n== {res['label']}: compliance {res['compliance']:.3f}, {res['gpu_hours']:.2f} GPU-h, warm start "
              f"{res['warm_start']}; missed window x pool: "
              + ", ".join(f"{c} {n}" for c, n in counts.items() if n))  # fmt: skip
        rm, n_w = res["unforeseeable_minutes"], res["counted_windows"]
        print(f"  unforeseeable: {len(rm)} windows need more than any window of the {MEMORY_S / 60:.0f} min that "
              f"ended a start-up + one window before (a peak-holding reactive policy's compliance <= "
              f"{1 - len(rm) / n_w:.3f}), minutes {rm}")  # fmt: skip
        for r in res["rows"]:
            print(_fmt_row(r))
        for sr in res["surges"]:
            first = (f"first order {sr['detect_s']:.0f} s in, {sr['ready_before']} -> {sr['ordered']}, physical minimum "
                     f"{sr['physical_min_minutes']:.1f} min" if sr["first_order_s"] is not None else "no order")  # fmt: skip
            print(f"  surge {sr['surge']!r} {sr['pool']}: {sr['minutes_above_target']:.0f} min above target; {first}")
        for line in res["trace"]:
            print(line)
    n = sum(totals.values())
    print(f"\nall: {n} missed window x pool: " + ", ".join(f"{c} {v}" for c, v in totals.items())
          + f" (under-read: {sum(totals[c] for c in UNDER_READ)})")  # fmt: skip
    print(f"wall {time.perf_counter() - t0:.0f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

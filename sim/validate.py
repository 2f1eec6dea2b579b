"""The engine against exact queueing theory: ``pdscale sim validate``.

Each case configures the ENGINE itself as a textbook queue and compares it with ``sim.analytic``
(formulas and tolerances from queueing.md §2–§5 and §9):

* ``md1``: deterministic service 1 s, Poisson 0.7/s, one server;
* ``mm4``: exponential service (mean 1 s), four servers, Poisson 3.2/s, ``central-fcfs`` router;
* ``mg1-lognormal``: lognormal service (mean 1 s, c_s² = 2), Poisson 0.8/s, one server;
  each reports ``wq_mean_s`` and ``wq_p99_s``, Wq = prefill_start − arrival;
* ``decode-fixed-point``: Poisson 10/s, 200 output tokens, decode step 6 ms + 0.05 ms per sequence, one decode
  instance; reports ``batch_mean`` (time-average running batch) and ``itl_mean_s`` (mean over all gaps).

Service time is realised through the latency model: a request of S seconds has round(S·K) prompt tokens with
K = 2²⁰ tokens/s and ``prefill_step_s(T) = T/K`` (PolyModel a=0, b=1/K), ``max_num_seqs = 1`` and an unbounded
token budget, so each prefill step serves exactly one whole request (no batching, as the FCFS formulas assume).
Output is one token and KV transfer is free, so the decode side never feeds back into the prefill queue.

Tolerance: queueing.md §9 gives 3 % (means), 5 % (p99) and 2 % (decode fixed point) for runs of >= 1M arrivals;
seed-to-seed spread at ρ = 0.8 is itself about ±3 % there. A check passes when the relative error is within
``max(table tolerance, 2.58 × batch-means relative standard error)`` (a 99 % interval from 20 batches), so a short
run is judged by its own precision; the tolerance used is reported next to each result.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autoscaler.core.latency import LatencyProfile, PolyModel
from autoscaler.core.types import Pool
from sim import analytic
from sim.engine import Engine, EngineConfig
from sim.validate_cli import CASES, DEFAULT_REQUESTS
from sim.workload import Workload

TOKENS_PER_S = float(2**20)  # K: prompt tokens per second of service
TOL_MEAN, TOL_P99, TOL_FIXED_POINT = 0.03, 0.05, 0.02
N_BATCHES = 20
Z99 = 2.576


def _queue_profile() -> LatencyProfile:
    huge = 10**13
    step = PolyModel(0.0, 1.0 / TOKENS_PER_S, 0.0, 1e-6, 0.0, 0.0)
    return LatencyProfile(
        "validate-queue", "sim/validate.py: service = tokens / 2^20", step, 1, 0, huge, 1, huge
    )


def _decode_profile() -> LatencyProfile:
    step = PolyModel(1e-6, 0.0, 0.0, 0.006, 0.0, 0.00005)
    return LatencyProfile("validate-decode", "queueing.md §5 worked example", step, 1, 0, 10**9, 1024, 8192)


def _queue_case(
    lam: float, servers: int, service: Callable[[np.random.Generator, int], np.ndarray], n: int, seed: int
) -> np.ndarray:
    """Run the engine as an M/G/c FCFS queue; return Wq per request (arrival order)."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / lam, n))
    tokens = np.maximum(1, np.rint(service(rng, n) * TOKENS_PER_S)).astype(np.int64)
    w = Workload(f"validate-{servers}", arrival, tokens, np.ones(n, dtype=np.int64))
    cfg = EngineConfig(_queue_profile(), router="central-fcfs", kv_base_latency_s=0.0, seed=seed)
    e = Engine(w, cfg, servers, 1)
    e.finish()
    r = e.records()
    if not r.finished.all():
        raise RuntimeError("validation queue left requests unfinished")
    return r.prefill_start_s - r.arrival_s


def _row(
    case: str, metric: str, analytic_v: float, sim_v: float, tol: float, rel_se: float
) -> dict[str, Any]:
    rel = (sim_v - analytic_v) / analytic_v
    used = max(tol, Z99 * rel_se)
    return {
        "case": case,
        "metric": metric,
        "analytic": analytic_v,
        "simulated": sim_v,
        "rel_error": rel,
        "tolerance": used,
        "ok": bool(abs(rel) <= used),
    }


def _wait_rows(case: str, waits: list[np.ndarray], mean_a: float, p99_a: float) -> list[dict[str, Any]]:
    kept = [w[max(1000, w.size // 50) :] for w in waits]  # drop the warm-up prefix of each seed
    allw = np.concatenate(kept)
    # batches within seeds, then pooled: batch means stay independent across seeds
    per_seed_batches = [np.array_split(w, max(2, N_BATCHES // len(kept))) for w in kept]
    batches = [b for bs in per_seed_batches for b in bs]
    stacked = np.array([b.mean() for b in batches]), np.array([np.quantile(b, 0.99) for b in batches])
    se_mean = float(stacked[0].std(ddof=1) / math.sqrt(len(batches)) / max(stacked[0].mean(), 1e-300))
    se_p99 = float(stacked[1].std(ddof=1) / math.sqrt(len(batches)) / max(stacked[1].mean(), 1e-300))
    return [
        _row(case, "wq_mean_s", mean_a, float(allw.mean()), TOL_MEAN, se_mean),
        _row(case, "wq_p99_s", p99_a, float(np.quantile(allw, 0.99)), TOL_P99, se_p99),
    ]


def _lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
    s2 = math.log(3.0)
    return rng.lognormal(-s2 / 2, math.sqrt(s2), n)


def _md1(n: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    waits = [_queue_case(0.7, 1, lambda r, k: np.ones(k), n, s) for s in seeds]
    return _wait_rows(
        "md1", waits, analytic.md1_mean_wait(0.7, 1.0), analytic.md1_wait_quantile(0.7, 1.0, 0.99)
    )


def _mm4(n: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    waits = [_queue_case(3.2, 4, lambda r, k: r.exponential(1.0, k), n, s) for s in seeds]
    mean_a = analytic.mmc_mean_wait(3.2, 1.0, 4)
    return _wait_rows("mm4", waits, mean_a, analytic.mmc_wait_quantile(3.2, 1.0, 4, 0.99))


def _mg1_lognormal(n: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    from scipy import stats  # here, not at import: every `pdscale` command imports this module to register

    waits = [_queue_case(0.8, 1, _lognormal, n, s) for s in seeds]
    s2 = math.log(3.0)
    law = stats.lognorm(s=math.sqrt(s2), scale=math.exp(-s2 / 2))
    return _wait_rows(
        "mg1-lognormal",
        waits,
        analytic.mg1_mean_wait(0.8, 1.0, 2.0),
        analytic.mg1_wait_quantile(0.8, law, 0.99),
    )


def _decode_fixed_point(n: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    lam, out = 10.0, 200
    n = max(n // 20, 2000)  # each request is 200 decode steps of work; 1/20 of the queue cases suffices
    batch_est, itl_est = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        arrival = np.cumsum(rng.exponential(1.0 / lam, n))
        w = Workload("validate-decode", arrival, np.ones(n, dtype=np.int64), np.full(n, out, dtype=np.int64))
        e = Engine(w, EngineConfig(_decode_profile(), kv_base_latency_s=0.0, seed=seed), 1, 1)
        t_end = float(arrival[-1])
        edges = np.linspace(0.1 * t_end, t_end, N_BATCHES // len(seeds) + 2)  # first 10 % is warm-up
        prev = None
        for t in edges:
            e.run_until(float(t))
            area = sum(p.running_seq_s for p in e.pods(Pool.DECODE))
            cur = (float(t), area, e.proxy.itl.sum, e.proxy.itl.count)
            if prev is not None:
                batch_est.append((cur[1] - prev[1]) / (cur[0] - prev[0]))
                itl_est.append((cur[2] - prev[2]) / (cur[3] - prev[3]))
            prev = cur
    point = analytic.decode_fixed_point(lam, out, 0.006, 0.00005)
    b, i = np.array(batch_est), np.array(itl_est)
    rows = []
    for metric, est, ana in (("batch_mean", b, point.running_seqs), ("itl_mean_s", i, point.itl_s)):
        se = float(est.std(ddof=1) / math.sqrt(est.size) / est.mean())
        rows.append(_row("decode-fixed-point", metric, ana, float(est.mean()), TOL_FIXED_POINT, se))
    return rows


_RUNNERS: dict[str, Callable[[int, Sequence[int]], list[dict[str, Any]]]] = {
    "md1": _md1,
    "mm4": _mm4,
    "mg1-lognormal": _mg1_lognormal,
    "decode-fixed-point": _decode_fixed_point,
}


def run_validation(
    cases: Sequence[str] | None = None, n_requests: int = DEFAULT_REQUESTS, seeds: int = 1
) -> list[dict[str, Any]]:
    """Run the named cases (all by default) with ``n_requests`` arrivals per seed; one row per metric."""
    names = list(cases) if cases is not None else list(CASES)
    unknown = [c for c in names if c not in _RUNNERS]
    if unknown:
        raise ValueError(f"unknown validation case(s) {unknown}; choose from {list(CASES)}")
    if n_requests < 5000:
        raise ValueError(f"n_requests must be >= 5000 (warm-up and 20 batches), got {n_requests}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.extend(_RUNNERS[name](n_requests, list(range(seeds))))
    return rows


# ------------------------------------------------------------------ CLI (arguments: sim/validate_cli.py)


def validate_command(args: argparse.Namespace) -> int:
    try:
        rows = run_validation(args.case, n_requests=args.requests, seeds=args.seeds)
    except ValueError as exc:
        print(f"pdscale sim validate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=f"engine vs queueing theory ({args.requests} requests/case, {args.seeds} seed(s))"
        )
        for col in ("case", "metric", "analytic", "simulated", "rel error", "tolerance", "ok"):
            table.add_column(col, justify="left" if col in ("case", "metric") else "right", no_wrap=True)
        for r in rows:
            table.add_row(
                r["case"], r["metric"], f"{r['analytic']:.5g}", f"{r['simulated']:.5g}", f"{r['rel_error']:+.2%}",
                f"{r['tolerance']:.1%}", "[green]yes[/]" if r["ok"] else "[red]NO[/]",
            )  # fmt: skip
        Console().print(table)
    return 0 if all(r["ok"] for r in rows) else 1

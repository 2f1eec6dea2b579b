"""The same workload through the live emulated stack and through the simulator: TTFT and ITL p50/p90 side by side.

Live: ``pdscale worker`` prefill and decode processes behind ``pdscale proxy``, driven by ``pdscale loadgen``'s
client (the openai client, in this process). Simulated: ``sim.engine.Engine`` with the same latency profile,
router (least outstanding tokens) and pod counts, on the same requests. The two columns must agree within 10 %
(DESIGN.md "One model, two clocks": a difference is a bug in one of the views).

Workloads: Poisson arrivals at 3-4 loads (fractions of the prefill pool's capacity for the mean prompt, from
``autoscaler.core.latency.prefill_time_s``), with fixed lengths and with lengths resampled from an Azure trace.

Time compression, so that 2 cores keep up: the workers run with ``--time-scale K`` (every modelled duration x K:
K = 10 makes a 25 ms prefill take 250 ms of wall time) and loadgen sends arrivals K times sparser and divides
what it measures by K. Fewer tokens per wall second means less CPU per modelled second, so the processes' own
overheads (HTTP, JSON, the proxy hop, the client) shrink by K next to the modelled times. Live figures are
client-side (loadgen), in model seconds; simulated figures are the engine's user-visible first-token time and
every inter-token gap.

Usage: python bench/bench_workers.py [--loads 0.3,0.5,0.7,0.85] [--time-scale 10] [--requests 150] [--json]
Timing figures taken on a shared machine are noisy: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from autoscaler.core.latency import prefill_time_s  # noqa: E402
from autoscaler.profiles import load_profile  # noqa: E402
from sim.engine import Engine, EngineConfig  # noqa: E402
from sim.workload import Workload, generate  # noqa: E402
from tests.helpers.proxy_stack import start_proxy  # noqa: E402
from tests.helpers.workers import MODEL, start_worker  # noqa: E402
from workers.loadgen import Plan, Target, run_plan  # noqa: E402
from workers.local.processes import ProcessRunner  # noqa: E402

PROFILE = "llama-3.1-8b-h100-tp1"
TRACE = REPO.parent / "shared" / "traces" / "azure_llm_2023_conv.csv"
TOLERANCE = 0.10


@dataclass(frozen=True)
class Case:
    lengths: str  # label
    prompt_spec: str  # generator length keys
    mean_prompt_tokens: float
    load: float
    rate_per_s: float


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-th percentile (0-100) of ``values`` repeated ``weights`` times (the lower value at ties)."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order].astype(np.float64)
    cum = np.cumsum(w)
    rank = q / 100.0 * (cum[-1] - 1)
    return float(v[min(int(np.searchsorted(cum, rank + 1, side="left")), v.size - 1)])


def simulate(workload: Workload, prefill: int, decode: int) -> dict[str, float]:
    engine = Engine(workload, EngineConfig(load_profile(PROFILE), record_itl_gaps=True), prefill, decode)
    engine.finish()
    rec = engine.records()
    ttft = rec.ttft_s[rec.finished]
    _, gaps, counts = engine.itl_gaps()
    return {
        "ttft_p50_ms": float(np.percentile(ttft, 50)) * 1e3,
        "ttft_p90_ms": float(np.percentile(ttft, 90)) * 1e3,
        "itl_p50_ms": weighted_percentile(gaps, counts, 50) * 1e3,
        "itl_p90_ms": weighted_percentile(gaps, counts, 90) * 1e3,
    }


def live(workload: Workload, proxy_api_url: str, time_scale: float, seed: int) -> dict[str, float]:
    plan = Plan(workload.name, workload.prompt_tokens, workload.output_tokens, workload.arrival_s)
    records = asyncio.run(run_plan(plan, Target(proxy_api_url, MODEL, time_scale=time_scale), seed=seed))
    failed = [r for r in records if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} live requests failed, e.g. {failed[0].error}")
    ttft = np.array([r.ttft_s for r in records if r.ttft_s is not None])
    itl = np.array([x for r in records for x in r.itl_s])
    return {
        "ttft_p50_ms": float(np.percentile(ttft, 50)) * 1e3,
        "ttft_p90_ms": float(np.percentile(ttft, 90)) * 1e3,
        "itl_p50_ms": float(np.percentile(itl, 50)) * 1e3,
        "itl_p90_ms": float(np.percentile(itl, 90)) * 1e3,
    }


LENGTHS = {
    "fixed": ("fixed 1024/128", "prompt=const(1024),output=const(128)"),
    "azure": ("azure conv", f"lengths=empirical({TRACE}),max_prompt=4096,max_output=512"),
}


def cases(loads: list[float], prefill: int, requests: int, lengths: list[str]) -> list[tuple[Case, Workload]]:
    profile = load_profile(PROFILE)
    out = []
    for label, keys in (LENGTHS[name] for name in lengths):
        probe = generate(f"poisson:rate=50,duration=60,{keys}", seed=99)
        mean_prompt = float(np.mean(probe.prompt_tokens))
        capacity_per_s = prefill / prefill_time_s(profile, mean_prompt)
        for load in loads:
            rate = load * capacity_per_s
            w = generate(
                f"poisson:rate={rate:.6g},duration={requests / rate:.6g},{keys}", seed=int(load * 100)
            )
            out.append((Case(label, keys, mean_prompt, load, rate), w))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loads", default="0.3,0.5,0.7,0.85", help="fractions of the prefill pool's capacity")
    ap.add_argument(
        "--time-scale", type=float, default=10.0, help="workers' --time-scale K (wall = model x K)"
    )
    ap.add_argument("--requests", type=int, default=150, help="requests per load (about)")
    ap.add_argument(
        "--lengths", default="fixed,azure", help="length sets: fixed (1024/128), azure (conv trace)"
    )
    ap.add_argument("--prefill", type=int, default=1)
    ap.add_argument("--decode", type=int, default=1)
    ap.add_argument("--sim-only", action="store_true", help="print the simulator's column alone")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    loads = [float(x) for x in args.loads.split(",")]
    rows: list[dict[str, Any]] = []
    runner = ProcessRunner(Path("/tmp") / f"bench-workers-{int(time.time())}")
    try:
        proxy_url = ""
        if not args.sim_only:
            k = ["--time-scale", f"{args.time_scale:g}"]
            pre = [
                start_worker(runner, role="prefill", extra_args=k, name=f"prefill-{i}")
                for i in range(args.prefill)
            ]
            dec = [
                start_worker(runner, role="decode", extra_args=k, name=f"decode-{i}")
                for i in range(args.decode)
            ]
            proxy = start_proxy(runner, prefill=[w.url for w in pre], decode=[w.url for w in dec])
            proxy_url = proxy.api_url
        for case, workload in cases(loads, args.prefill, args.requests, args.lengths.split(",")):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"lengths": case.lengths, "load": case.load, "rate_per_s": case.rate_per_s,
                                   "requests": len(workload), "sim": simulate(workload, args.prefill, args.decode)}  # fmt: skip
            if not args.sim_only:
                row["live"] = live(workload, proxy_url, args.time_scale, seed=int(case.load * 100))
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print_row(row, file=sys.stderr)
    finally:
        runner.stop_all()
    if args.json:
        json.dump({"profile": PROFILE, "time_scale": args.time_scale, "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, args)
    if args.sim_only:
        return 0
    return 0 if all(within(r) for r in rows) else 1


def within(row: dict[str, Any]) -> bool:
    return all(abs(row["live"][k] / row["sim"][k] - 1) <= TOLERANCE for k in row["sim"])


def print_row(row: dict[str, Any], file: Any) -> None:
    live_part = row.get("live", {})
    print(f"{row['lengths']:>15} load {row['load']:.2f} ({row['rate_per_s']:.1f} req/s, {row['requests']} req): "
          + " ".join(f"{k} sim {v:.1f} live {live_part.get(k, float('nan')):.1f}" for k, v in row["sim"].items())
          + f"  [{row['wall_s']:.0f} s]", file=file)  # fmt: skip


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"live emulated stack vs simulator ({PROFILE}, {args.prefill}P/{args.decode}D, "
                        f"time scale {args.time_scale:g}), ms")  # fmt: skip
    for col in ("lengths", "load", "req/s"):
        table.add_column(col)
    for metric in ("TTFT p50", "TTFT p90", "ITL p50", "ITL p90"):
        table.add_column(f"{metric} sim / live", justify="right")
    for r in rows:
        cells = []
        for key in ("ttft_p50_ms", "ttft_p90_ms", "itl_p50_ms", "itl_p90_ms"):
            sim = r["sim"][key]
            if "live" in r:
                live_v = r["live"][key]
                cells.append(f"{sim:.1f} / {live_v:.1f} ({live_v / sim - 1:+.0%})")
            else:
                cells.append(f"{sim:.1f}")
        table.add_row(r["lengths"], f"{r['load']:.2f}", f"{r['rate_per_s']:.1f}", *cells)
    Console(width=170).print(table)


if __name__ == "__main__":
    sys.exit(main())

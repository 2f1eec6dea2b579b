"""``pdscale plan`` arguments. Light on purpose (see autoscaler/cli.py): the simulator is imported when the
command runs, not for ``--help``."""

from __future__ import annotations

import argparse
from typing import Any

from sim.bench_cli import RATE_SCALE_HELP, add_run_arguments

DEFAULT_PROFILE = "llama-3.1-8b-h100-tp1"
DESCRIPTION = (
    "Size a deployment for a workload and SLO, per latency profile, by simulation with the engine pdscale bench "
    "uses: the cheapest static disaggregated (P, D) meeting window compliance >= 0.99, the cheapest static "
    "aggregated count, the GPU-hours to expect with pdscale autoscaling next to the per-window oracle's lower "
    "bound, and the headroom each leaves. The workload is a trace (scaled like pdscale bench) or a generator spec."
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plan",
        help="cheapest static P/D, aggregated size and autoscaled GPU-hours for a workload and SLO",
        description=DESCRIPTION,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", metavar="FILE", help="trace file (Azure CSV, Mooncake JSONL, plain CSV)")
    src.add_argument(
        "--generator", metavar="SPEC", help='workload generator, e.g. "poisson:rate=20,duration=600"'
    )
    p.add_argument("--rate-scale", type=float, metavar="K", help=RATE_SCALE_HELP)
    p.add_argument("--scale-mode", choices=("replicate", "compress"), default="replicate",
                   help="replicate: K shifted copies, same length (default); compress: time / K")  # fmt: skip
    p.add_argument("--duration-s", type=float, metavar="S", help="keep only the first S seconds (after scaling)")
    p.add_argument("--profile", action="append", metavar="NAME|PATH",
                   help=f"latency profile; repeat to compare (default {DEFAULT_PROFILE})")  # fmt: skip
    p.add_argument("--ttft-p99", type=float, default=1.0, metavar="S", help="TTFT p99 target (default 1.0 s)")
    p.add_argument("--itl-p99", type=float, default=0.05, metavar="S", help="ITL p99 target (default 0.05 s)")
    p.add_argument(
        "--startup-s", type=float, default=120.0, metavar="S",
        help="pod startup for the autoscaled run (default 120 s)",
    )
    p.add_argument("--gpu-price-per-hour", type=float, metavar="USD", help="adds a cost column")
    add_run_arguments(p, json_help="print one JSON object instead of tables",
                      out_help="write plan.json and plan.png here")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sim.plan import plan_command

    return plan_command(args)

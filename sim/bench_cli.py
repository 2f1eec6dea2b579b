"""``pdscale bench`` arguments, and the ``--rate-scale`` rule ``pdscale plan`` shares. Light on purpose (see
autoscaler/cli.py): the simulator is imported when the command runs, not for ``--help``."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

ALL_POLICIES = ("static-best", "hpa", "keda-queue", "dynamo-sla", "pdscale", "clairvoyant", "oracle")
DEFAULT_POLICIES = ("static-best", "hpa", "keda-queue", "dynamo-sla", "pdscale", "oracle")
SUITE_POLICIES = ("static-best", "pdscale", "clairvoyant", "oracle")
DEFAULT_TRACES = ("azure_llm_2023_conv.csv", "azure_llm_2023_code.csv")
# --rate-scale defaults to 1 (the workload as recorded or specified) in bench and plan alike, except for bench's
# built-in workload, the Azure 2023 traces: their own rate keeps one Llama-3.1-8B P/D pair nearly idle, so the
# built-in benchmark replays them at 50x (README's bench).
BUILTIN_TRACES_RATE_SCALE = 50.0
RATE_SCALE_HELP = (
    "K x the workload's request rate (default 1; pdscale bench's built-in Azure traces: "
    f"{BUILTIN_TRACES_RATE_SCALE:g})"
)
# = sim.workload.REPLICATE_SPREAD_S (tests/unit/test_cli.py checks), spelled here so --help needs no numpy
REPLICATE_SPREAD_S = 300.0

DESCRIPTION = (
    "Every policy on the same traces, seeds, latency profile, SLOs and pod startup time, one table per trace: "
    "static-best (the cheapest fixed P/D meeting window compliance >= 0.99, by search), hpa, keda-queue, "
    "dynamo-sla, pdscale and the per-window hindsight oracle; clairvoyant on request (pdscale's capacity model "
    "fed the true load of each window, ordering one start-up ahead: pdscale / clairvoyant is the cost of "
    "forecasting, clairvoyant / oracle the cost of the capacity model). Every autoscaled run starts warm. "
    "--rate-scale K with the default --scale-mode replicate keeps a trace's length: K shifted copies of it, each "
    "moved as a whole within +-S/2 (--replicate-spread-s); compress divides time by K instead. "
    "--suite generalization runs issue 16's suite instead (--list shows it): flat traffic, diurnal ramps, a flash "
    "crowd, a lull followed by a surge, a prompt-length shift, long and very long prompts (seeded generators, "
    "sim/suite.py) and both Azure traces at 50x with copy-shift seeds 0-2, each with its own SLO and a role (train: "
    "the policy's parameters were chosen on it; held-out: only checked); it adds a per-workload targets table "
    "(compliance, GPU-hours vs static-best and the oracle, the clairvoyant ratios) and, for each labelled surge, "
    "the minutes above target vs the physical minimum (start-up + draining the backlog with the first order)."
)


def default_rate_scale(rate_scale: float | None, traces: Sequence[str], generators: Sequence[str]) -> float:
    """``--rate-scale`` as given; else BUILTIN_TRACES_RATE_SCALE for bench's built-in traces (neither traces nor
    generators named) and 1 for any named workload."""
    if rate_scale is not None:
        return rate_scale
    return 1.0 if traces or generators else BUILTIN_TRACES_RATE_SCALE


def positive_seconds_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative seconds, got {text!r}")
    return values


def policy_list(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected at least one policy")
    return names


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="compare every policy (static-best, hpa, keda-queue, dynamo-sla, pdscale, oracle) on traces",
        description=DESCRIPTION,
    )
    p.add_argument("--traces", nargs="+", default=(), metavar="FILE",
                   help=f"trace files (default: {', '.join(DEFAULT_TRACES)} in ../shared/traces)")  # fmt: skip
    p.add_argument(
        "--generator", action="append", default=[], metavar="SPEC", help="generated workload (repeatable)"
    )
    p.add_argument("--rate-scale", type=float, metavar="K", help=RATE_SCALE_HELP)
    p.add_argument("--scale-mode", choices=("replicate", "compress"), default="replicate",
                   help="replicate: K shifted copies, same length (default); compress: time / K")  # fmt: skip
    p.add_argument("--replicate-spread-s", type=float, default=REPLICATE_SPREAD_S, metavar="S",
                   help=f"replicate: each copy shifted within ±S/2 seconds (default {REPLICATE_SPREAD_S:g})")  # fmt: skip
    p.add_argument(
        "--duration-s", type=float, metavar="S", help="keep only the first S seconds (after scaling)"
    )
    p.add_argument("--profile", default="llama-3.1-8b-h100-tp1", metavar="NAME|PATH", help="latency profile")
    p.add_argument("--ttft-p99", type=float, default=1.0, metavar="S", help="TTFT p99 target (default 1.0 s)")
    p.add_argument("--itl-p99", type=float, default=0.05, metavar="S", help="ITL p99 target (default 0.05 s)")
    p.add_argument("--startup-s", type=positive_seconds_list, default=(120.0,), metavar="S[,S...]",
                   help="pod startup time(s); several give a sweep (default 120)")  # fmt: skip
    p.add_argument("--policies", type=policy_list, default=None, metavar="P[,P...]",
                   help=f"subset of {', '.join(ALL_POLICIES)} (default: {', '.join(DEFAULT_POLICIES)}; "
                   f"with --suite: {', '.join(SUITE_POLICIES)})")  # fmt: skip
    p.add_argument("--suite", metavar="NAME",
                   help="run a named workload suite instead of traces (generalization; --list shows it)")  # fmt: skip
    p.add_argument("--workloads", type=policy_list, default=(), metavar="W[,W...]",
                   help="with --suite: only these of its workloads")  # fmt: skip
    p.add_argument("--role", choices=("train", "held-out"),
                   help="with --suite: only the workloads the policy was tuned on (train) or checked on (held-out)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="with --suite: list its workloads and exit")
    add_run_arguments(p, json_help='print {"runs": [...]} instead of tables',
                      out_help="write bench.json and one PNG per trace here")
    p.set_defaults(func=_run)


def add_run_arguments(p: argparse.ArgumentParser, *, json_help: str, out_help: str) -> None:
    """The flags bench and plan share: search bound, seed, worker processes, output."""
    p.add_argument("--max-replicas", type=int, default=64, metavar="N",
                   help="per-pool maximum the searches and policies may use (default 64)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for scaling, generators and the engine (default 0)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: the CPU count)")  # fmt: skip
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--out", metavar="DIR", help=out_help)


def _run(args: argparse.Namespace) -> int:
    from sim.bench import bench_command

    return bench_command(args)

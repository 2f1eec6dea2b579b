"""``pdscale sim``: replay a workload through the simulated cluster under a policy and report what it achieved."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from sim import validate_cli

PROG = "pdscale sim run"


class UsageError(Exception):
    """A bad flag value or input file: one line on stderr, exit status 2."""


def register(subparsers: Any) -> None:
    sim = subparsers.add_parser("sim", help="simulate serving a workload under an autoscaling policy")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sim.set_defaults(func=lambda args: _help(sim))
    run = sim_sub.add_parser(
        "run",
        help="replay a scenario (or a trace / generated workload) and summarise SLOs and GPU cost",
        description="Replay a workload through the simulated prefill/decode cluster under a policy. Flags "
        "override the scenario file; with neither a scenario, --trace nor --generator the embedded default "
        "workload (Azure-conversation-like, 30 min) runs.",
    )
    run.add_argument(
        "scenario", nargs="?", metavar="SCENARIO.yaml", help="scenario file (see sim/scenario.py)"
    )
    src = run.add_mutually_exclusive_group()
    src.add_argument("--trace", metavar="PATH", help="trace file (Azure CSV, Mooncake JSONL, plain CSV)")
    src.add_argument(
        "--generator",
        metavar="SPEC",
        help='workload generator, e.g. "poisson:rate=5,duration=600", or a closed loop of N users '
        '"closed:users=8,duration=600,think_s=1" (requests=M bounds it by count)',
    )
    run.add_argument("--rate-scale", type=float, metavar="K", help="arrivals K times denser")
    run.add_argument(
        "--scale-mode",
        choices=("compress", "replicate"),
        help="how --rate-scale densifies: compress time by K (default; a 1 h trace lasts 1/K h) or replicate "
        "K shifted copies over the same span (keeps the hour for autoscaling studies, as pdscale bench does)",
    )
    run.add_argument("--profile", metavar="NAME|PATH", help="latency profile (built-in name or YAML file)")
    run.add_argument("--mode", choices=("disagg", "agg"), help="disaggregated P/D or aggregated serving")
    run.add_argument("--prefill", type=int, metavar="N", help="initial prefill replicas")
    run.add_argument("--decode", type=int, metavar="N", help="initial decode replicas")
    run.add_argument("--ttft-p99", type=float, metavar="S", help="TTFT p99 target, seconds")
    run.add_argument("--itl-p99", type=float, metavar="S", help="ITL p99 target, seconds")
    run.add_argument("--startup-s", type=float, metavar="S", help="pod startup time, seconds")
    run.add_argument("--seed", type=int, metavar="N", help="random seed (workload generator, startup jitter)")
    run.add_argument("--policy", metavar="NAME", help="policy (default: the scenario's, else static)")
    run.add_argument(
        "--tick-s", type=float, metavar="S", help="controller tick interval, seconds (default 15)"
    )
    run.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    run.add_argument(
        "--out", metavar="DIR", help="write requests.csv, windows.csv, summary.json and plots here"
    )
    run.set_defaults(func=run_command)
    validate_cli.register_validate(sim_sub)
    from sim.fidelity import register_fidelity  # light: its work is imported by its handler

    register_fidelity(sim_sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive number, got {value!r}")


def build_raw(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The scenario mapping: the file (if any) with the flags applied on top, and a name for error messages."""
    from sim.scenario import read_scenario_file

    _positive("--rate-scale", args.rate_scale)
    _positive("--ttft-p99", args.ttft_p99)
    _positive("--itl-p99", args.itl_p99)
    _positive("--tick-s", args.tick_s)
    if args.startup_s is not None and not (math.isfinite(args.startup_s) and args.startup_s >= 0):
        raise UsageError(f"--startup-s must be >= 0, got {args.startup_s!r}")
    for flag, value in (("--prefill", args.prefill), ("--decode", args.decode), ("--seed", args.seed)):
        if value is not None and value < 0:
            raise UsageError(f"{flag} must be >= 0, got {value}")
    raw: dict[str, Any] = read_scenario_file(args.scenario) if args.scenario else {"name": "cli"}
    if args.trace is not None:
        if not Path(args.trace).is_file():
            raise UsageError(f"--trace: no such file: {args.trace}")
        raw["workload"] = {"trace": args.trace}
    elif args.generator is not None:
        raw["workload"] = {"generator": args.generator}
    overrides = {
        "rateScale": args.rate_scale,
        "scaleMode": args.scale_mode,
        "profile": args.profile,
        "mode": args.mode,
        "prefill": args.prefill,
        "decode": args.decode,
        "startupSeconds": args.startup_s,
        "seed": args.seed,
        "policy": args.policy,
        "tickSeconds": args.tick_s,
    }
    for key, value in overrides.items():
        if value is not None:
            raw[key] = value
    if args.mode == "agg" and args.prefill is None:
        raw.pop("prefill", None)
    return raw, args.scenario or "flags"


def run_command(args: argparse.Namespace) -> int:
    from sim.policies import make_policy
    from sim.replay import replay
    from sim.scenario import build_scenario, with_slo_targets

    try:
        raw, source = build_raw(args)
        scenario = build_scenario(raw, source=source)
        scenario = with_slo_targets(scenario, ttft_p99_s=args.ttft_p99, itl_p99_s=args.itl_p99)
        policy = make_policy(scenario.policy, scenario.profile, scenario.spec, **dict(scenario.policy_params))
        result = replay(scenario, policy, progress=not args.json)
    except UsageError as exc:
        return _fail(str(exc))
    except KeyError as exc:  # unknown policy
        return _fail(str(exc.args[0]) if exc.args else str(exc))
    except ValueError as exc:  # ScenarioError, TraceError, SpecError, ProfileError, engine input checks
        return _fail(str(exc))
    if args.out:
        from sim.report import write_report

        try:
            write_report(result, args.out)
        except OSError as exc:
            return _fail(f"--out {args.out}: cannot write: {exc}")
    if args.json:
        print(json.dumps(result.summary, sort_keys=True))
    else:
        print_summary(result.summary, out_dir=args.out)
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if key.endswith(("attainment", "compliance")):
            return f"{100 * value:.2f} %"
        if key.endswith("_s") and value < 1:
            return f"{1000 * value:.1f} ms"
        if key.endswith("_s"):
            return f"{value:.3f} s"
        return f"{value:.3f}"
    return str(value)


def print_summary(summary: dict[str, Any], out_dir: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pdscale sim: {summary.get('scenario', '')} under {summary.get('policy', '')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, _fmt(key, value))
    console = Console()
    console.print(table)
    if out_dir:
        console.print(f"wrote results to {out_dir}")

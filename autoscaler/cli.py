"""The ``pdscale`` command.

Each subcommand lives in a module beside the code it drives, listed in ``COMMANDS`` with its one-line help.
``pdscale --help`` lists the table without importing any command module; ``pdscale CMD ...`` imports only CMD's
module and calls its ``register(subparsers)``. A command module's top-level imports are light (stdlib, argparse,
other light modules): numpy, scipy, kubernetes, aiohttp, requests, rich, matplotlib, yaml, ... are imported inside
its handler, so every ``--help`` answers at interpreter speed (tests/unit/test_cli.py checks both rules).

To add a command: write ``register(subparsers)`` in a light module (``subparsers.add_parser(NAME, help=...)``
with the same one-line help as its row here) and add the row.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from autoscaler import __version__


@dataclass(frozen=True)
class Command:
    module: str  # defines register(subparsers), which adds this command
    help: str  # the one-line help ``pdscale --help`` shows; register() uses the same text


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "sim.demo_cli",
        "watch pdscale scale a simulated P/D deployment through two surges (no cluster, no files)",
    ),
    "sim": Command("sim.cli", "simulate serving a workload under an autoscaling policy"),
    "bench": Command(
        "sim.bench_cli",
        "compare every policy (static-best, hpa, keda-queue, dynamo-sla, pdscale, oracle) on traces",
    ),
    "plan": Command(
        "sim.plan_cli", "cheapest static P/D, aggregated size and autoscaled GPU-hours for a workload and SLO"
    ),
    "run": Command("autoscaler.run_cli", "run the live controller against a Kubernetes cluster"),
    "promql": Command(
        "autoscaler.promql_cli",
        "print the PromQL pdscale sends for autoscaler specs; with --prometheus-url, run it",
    ),
    "adapter": Command(
        "metrics_adapter.command",
        "serve pdscale's metrics and recommendations on external.metrics.k8s.io (for HPA and KEDA)",
    ),
    "profiles": Command("autoscaler.profiles_cli", "list or show latency profiles"),
    "profile": Command(
        "workers.profile_cli", "measure prefill/decode step times on this machine and write a latency profile"
    ),
    "worker": Command("workers.worker_cli", "emulated vLLM worker (OpenAI API, vLLM metrics, P/D roles) or real vLLM"),
    "proxy": Command(
        "workers.proxy_cli",
        "prefill/decode proxy (vLLM's two-step P/D protocol) exporting user-visible TTFT/ITL histograms",
    ),
    "loadgen": Command(
        "workers.loadgen_cli",
        "replay a trace, generator or closed loop against an OpenAI-compatible server (vllm bench-style report)",
    ),
    "up": Command(
        "workers.local.up_cli",
        "pdscale on this machine: Kubernetes emulator, pods, Prometheus, proxy, controllers (no cluster)",
    ),
}


# what `pip install 'pdscale[sim]'` adds (setup.cfg); a command that needs one says so instead of a traceback
SIM_PACKAGES = frozenset({"numpy", "scipy", "rich", "matplotlib"})


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` invokes: its first word that is not an option (the top-level options take no
    values). None when there is none or it is not a known command (argparse then reports it)."""
    for token in argv:
        if token == "--":
            return None
        if token.startswith("-"):
            continue
        return token if token in COMMANDS else None
    return None


def build_parser(load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``pdscale`` parser. Commands named in ``load`` (default: every command) are registered by their
    modules; the others appear only by name and help, without importing anything."""
    wanted = set(COMMANDS) if load is None else set(load)
    parser = argparse.ArgumentParser(
        prog="pdscale",
        description="SLO-driven autoscaler for disaggregated prefill/decode LLM serving.",
    )
    parser.add_argument("--version", action="version", version=f"pdscale {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        if name not in wanted:
            subparsers.add_parser(name, help=command.help)
            continue
        importlib.import_module(command.module).register(subparsers)
        if name not in subparsers.choices:
            raise RuntimeError(f"{command.module}.register() did not add the {name!r} command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_in(argv)
    parser = build_parser(load=() if command is None else (command,))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SIM_PACKAGES:
            raise
        extra = "worker" if args.command == "worker" and exc.name == "numpy" else "sim"
        print(f"pdscale {args.command}: needs {exc.name}, which the {'worker' if extra == 'worker' else 'simulator'} "
              f"extra brings: pip install 'pdscale[{extra}]' (the controller image has only what pdscale run needs; "
              "make image-worker builds the worker's)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``pdscale`` command. Each subcommand lives beside the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from autoscaler import __version__

# Modules exposing ``register(subparsers)``; each adds one or more working subcommands.
COMMAND_MODULES: tuple[str, ...] = ("autoscaler.profiles_cli", "sim.cli", "autoscaler.run", "sim.bench", "sim.demo", "sim.plan", "autoscaler.prometheus", "metrics_adapter.command", "workers.worker_cli", "workers.proxy_cli", "workers.loadgen_cli", "workers.local.up_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdscale",
        description="SLO-driven autoscaler for disaggregated prefill/decode LLM serving.",
    )
    parser.add_argument("--version", action="version", version=f"pdscale {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    sys.exit(main())

"""``pdscale sim validate`` arguments (registered by sim/cli.py). Light on purpose (see autoscaler/cli.py): the
engine and scipy are imported when the command runs, not for ``--help``."""

from __future__ import annotations

import argparse
from typing import Any

CASES: tuple[str, ...] = ("md1", "mm4", "mg1-lognormal", "decode-fixed-point")
DEFAULT_REQUESTS = 1_000_000


def register_validate(sim_subparsers: Any) -> None:
    """Add ``validate`` under ``pdscale sim``."""
    p = sim_subparsers.add_parser(
        "validate",
        help="check the simulator engine against exact queueing theory",
        description="Configure the engine as M/D/1, M/M/4, M/G/1 (lognormal) queues and a continuously batched "
        "decode instance and compare with closed forms (queueing.md). Exit status 1 when a result is outside "
        "its tolerance.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"arrivals per case (default {DEFAULT_REQUESTS})",
    )
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="independent runs per case (default 1)")
    p.add_argument("--case", action="append", choices=CASES, help="run only this case (repeatable)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sim.validate import validate_command

    return validate_command(args)

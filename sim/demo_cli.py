"""``pdscale demo`` arguments. Light on purpose (see autoscaler/cli.py): the simulator is imported when the
command runs, not for ``--help``."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
pdscale scaling a simulated Llama-3.1-8B P/D deployment through two opposite surges, side by side with a stock
HPA and a fixed allocation on the same scenario.

No files and no cluster: the embedded demo workload (a prompt-heavy surge, then a generation-heavy one), the
built-in llama-3.1-8b-h100-tp1 profile, pods that take 120 s to start, and the pdscale policy in the real
Controller. The simulation itself takes a few seconds; the terminal view then plays the recorded run back at
--speed simulated seconds per wall second (live panels with pdscale's decisions and reasons on a terminal, one
line per decision otherwise). Meanwhile two worker processes replay the same scenario under the hpa baseline
(an HPA per pool on TTFT / ITL p99, autoscaling/v2 defaults) and under the cheapest fixed allocation meeting the
SLO in every window (found with hindsight). It ends with pdscale's summary, the side-by-side table (windows met,
request SLO, GPU-hours, minutes above target), pdscale's answer to each surge against the physical minimum, and
the paths of the PNG plots (pdscale's run, and comparison.png with all three).

--live runs a surge scenario on this machine instead (pdscale up's stack: Kubernetes emulator, pods as processes,
Prometheus, proxy, controller) and shows the same view and plots from what the live cluster does.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="watch pdscale scale a simulated P/D deployment through two surges (no cluster, no files)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second (default 60)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument("--no-live", action="store_true", help="print decision lines instead of the live view")
    p.add_argument("--out", metavar="DIR", help="folder for the PNG plots (default: a new temporary folder)")
    p.add_argument("--live", action="store_true",
                   help="run a 6-minute surge scenario live on this machine (pdscale up's cluster: Kubernetes "
                        "emulator, pods, Prometheus, proxy, controller) instead of simulating; about 8 minutes")
    p.add_argument("--workdir", metavar="DIR", help="--live: logs and data (default: a new temporary folder)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sim.demo import demo_command

    return demo_command(args)

"""The chaos run of tests/helpers/chaos.py, as long as you like: two controller replicas (Lease election), the
Kubernetes emulator and a real Prometheus on loopback, random API 409/500/timeouts, Prometheus restarts, leader
kills, failing traffic and scrape gaps, with the invariants (single writer per Lease term, replicas within [min,
max], no scale-down on bad data, a reason for every decision) checked after every pass.

    .venv/bin/python bench/bench_chaos.py --minutes 10 [--seed 3] [--tick-s 0.5] [--fault-every-s 1.5] [--json]
        [--log chaos.log]

Prints the faults injected by kind, the passes checked, the scale writes, Lease handovers and the violations; exits
1 if there was any violation. tests/e2e/test_chaos.py runs the same for 60 s in CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.helpers.chaos import ChaosConfig, chaos_world  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the chaos run (5)")
    parser.add_argument("--seed", type=int, default=0, help="fault schedule seed (0)")
    parser.add_argument("--tick-s", type=float, default=0.5, help="controller tick (0.5 s)")
    parser.add_argument("--fault-every-s", type=float, default=1.5, help="mean time between faults (1.5 s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--log", metavar="FILE", help="write the controllers' logs here (default: dropped; the "
                        "injected faults make them loud)")
    args = parser.parse_args(argv)
    root = logging.getLogger("pdscale")
    root.propagate = False
    root.addHandler(logging.FileHandler(args.log) if args.log else logging.NullHandler())
    root.setLevel(logging.INFO)
    if not (args.minutes > 0 and args.tick_s > 0 and args.fault_every_s > 0):
        parser.error("--minutes, --tick-s and --fault-every-s must be > 0")
    config = ChaosConfig(duration_s=60.0 * args.minutes, tick_s=args.tick_s, fault_every_s=args.fault_every_s,
                         seed=args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pdscale-chaos-") as tmp, chaos_world(Path(tmp), config) as chaos:
        report = chaos.run()
    summary = {**report.summary(), "minutes": args.minutes, "seed": args.seed, "tick_s": args.tick_s,
               "wall_s": round(time.monotonic() - started, 1),
               "ticks_at_15s_equivalent_minutes": round(report.passes * 15.0 / 60.0, 1)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"chaos run: {args.minutes:g} min, seed {args.seed}, tick {args.tick_s:g} s, "
              f"wall {summary['wall_s']} s")
        print(f"  faults injected: {summary['faults_total']}  " +
              ", ".join(f"{k} {v}" for k, v in summary["faults"].items()))
        print(f"  passes checked: {report.passes} (= {summary['ticks_at_15s_equivalent_minutes']} min of 15 s ticks)"
              f"; scale writes: {dict(report.scale_writes)}; Lease handovers: {report.handovers}")
        print(f"  invariant checks: {dict(report.checks)}")
        print(f"  violations: {len(report.violations)}")
        for line in report.violations[:20]:
            print(f"    {line}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

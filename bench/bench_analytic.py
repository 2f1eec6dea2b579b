"""How long the exact M/G/1 waiting-time law takes (``sim.analytic.mg1_wait_distribution``, Beneš by one FFT pair), in
CPU seconds.

    .venv/bin/python bench/bench_analytic.py [--repeats 7]

Prints the median and the spread of ``--repeats`` evaluations at ρ 0.8 with lognormal service (mean 1, c_s² 2) on
2^18 and 2^20 cells (the default). Figures, not pass/fail: speed lives here, not in a timed unit test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from scipy import stats

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sim.analytic import mg1_wait_distribution  # noqa: E402

SCV = 2.0
SERVICE = stats.lognorm(s=math.sqrt(math.log1p(SCV)), scale=math.exp(-math.log1p(SCV) / 2))  # mean 1, c_s² = 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed evaluations per size (default 7)")
    args = ap.parse_args(argv)
    print(f"{'cells':>8} {'median CPU s':>13} {'min-max CPU s':>15} {'p99 wait (x mean service)':>26}")
    for cells in (2**18, 2**20):
        times, p99 = [], math.nan
        for _ in range(args.repeats):
            t0 = time.process_time()
            p99 = mg1_wait_distribution(0.8, SERVICE, n_cells=cells).quantile(0.99)
            times.append(time.process_time() - t0)
        lo_hi = f"{min(times):.3f}-{max(times):.3f}"
        print(f"{cells:>8} {statistics.median(times):>13.3f} {lo_hi:>15} {p99:>26.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

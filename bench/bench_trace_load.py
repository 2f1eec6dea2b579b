"""How fast the trace readers load the shared Azure traces (``sim.workload.load_trace``), in CPU seconds.

    .venv/bin/python bench/bench_trace_load.py [--repeats 7]

Every ``pdscale bench``/``sim``/``plan`` run starts by reading its traces, so a reader that parses row by row in
Python would be felt on each of them. Prints, per trace, the rows, the median and the spread of the CPU time of
``--repeats`` loads (after one warm-up load for the page cache) and rows per CPU-second. Figures, not pass/fail: the
machine is shared and noisy, so speed lives here and not in a timed unit test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sim.workload import load_trace  # noqa: E402

TRACES = Path(os.environ.get("PDSCALE_TRACES", REPO_ROOT.parent / "shared" / "traces"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed loads per trace (default 7)")
    ap.add_argument("traces", nargs="*", type=Path, help="trace files (default: the two Azure 2023 traces)")
    args = ap.parse_args(argv)
    paths = args.traces or [TRACES / "azure_llm_2023_conv.csv", TRACES / "azure_llm_2023_code.csv"]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"bench_trace_load: no such trace file: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(f"{'trace':<28} {'rows':>8} {'median CPU s':>13} {'min-max CPU s':>15} {'rows / CPU-s':>13}")
    for path in paths:
        rows = len(load_trace(path))  # warm the page cache
        times = []
        for _ in range(args.repeats):
            t0 = time.process_time()
            load_trace(path)
            times.append(time.process_time() - t0)
        median = statistics.median(times)
        print(f"{path.name:<28} {rows:>8} {median:>13.3f} {min(times):>7.3f}-{max(times):<7.3f} {rows / median:>13,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

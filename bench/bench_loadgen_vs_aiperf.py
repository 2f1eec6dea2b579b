"""``pdscale loadgen`` against NVIDIA's aiperf on the same runs: one emulated worker, the same Poisson schedule of
fixed-length requests sent by each client in turn (aiperf with ``--fixed-schedule``; which client goes first
alternates between repeats), repeated; prints each
client's TTFT/TPOT/ITL and their ratio, with the median over repeats. Target: within 10 %.

Usage: python bench/bench_loadgen_vs_aiperf.py [--repeats 3] [--time-scale 4] [--requests 40] [--rate 2.5]
Needs .venv-aiperf (scripts/ensure-aiperf.sh, built on first use). Timing figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.aiperf import ensure_aiperf, same_run  # noqa: E402
from tests.helpers.workers import MODEL, start_worker  # noqa: E402
from workers.local.processes import ProcessRunner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-scale", type=float, default=4.0, help="the worker's --time-scale")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--rate", type=float, default=2.5, help="wall-clock requests per second")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    tool = ensure_aiperf()
    runs: list[dict[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = ProcessRunner(Path(tmp) / "logs")
        try:
            worker = start_worker(
                runner, role="aggregated", extra_args=["--time-scale", f"{args.time_scale:g}"]
            )
            for i in range(args.repeats):
                pairs = same_run(tool, worker_url=worker.url, model=MODEL, requests=args.requests,
                                 rate_per_s=args.rate, prompt_tokens=args.prompt_tokens,
                                 output_tokens=args.output_tokens, out_dir=Path(tmp) / f"run-{i}", seed=7 + i, aiperf_first=i % 2 == 1)  # fmt: skip
                runs.append(pairs)
                print(f"run {i + 1} ({'aiperf' if i % 2 else 'loadgen'} first): " + ", ".join(f"{k} {a:.1f}/{b:.1f} ms ({a / b - 1:+.1%})"
                                                   for k, (a, b) in pairs.items()), file=sys.stderr)  # fmt: skip
        finally:
            runner.stop_all()
    print(f"loadgen vs aiperf, {args.repeats} runs of {args.requests} requests "
          f"({args.prompt_tokens}/{args.output_tokens} tokens, {args.rate:g} req/s wall, worker time scale "
          f"{args.time_scale:g}); wall-clock ms, median over runs")  # fmt: skip
    print(f"{'metric':10s} {'loadgen':>9s} {'aiperf':>9s} {'ratio':>7s}")
    worst = 0.0
    for metric in runs[0]:
        a = statistics.median(r[metric][0] for r in runs)
        b = statistics.median(r[metric][1] for r in runs)
        worst = max(worst, abs(a / b - 1))
        print(f"{metric:10s} {a:9.2f} {b:9.2f} {a / b:7.3f}")
    return 0 if worst <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())

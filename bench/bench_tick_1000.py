"""Prometheus side of one controller tick for 10, 100 and 1,000 autoscalers (up to 2,000 pools).

Every autoscaler is a vLLM P/D deployment (model ``model-NNNN`` in one of 10 namespaces) with one prefill pod,
two decode pods and a proxy, all exported in vLLM format (tests/helpers/vllm_exporter.py) and scraped by the
real Prometheus every 15 s; the rate window is the spec default, 60 s. What is timed is
``PrometheusMetricsSource.refresh()`` for the first N autoscalers: the number of PromQL queries must not depend
on N, and the wall time at 1,000 should stay under 2 s.

Generating the 1,000-deployment exposition (~2*10^5 series, ~30 MB) costs seconds of Python CPU, so the
exporter regenerates it only during warm-up and then serves the last body unchanged (counters flat); every
refresh is evaluated at one fixed instant just after warm-up, where each series has >= 2 distinct samples in
its window, so the exporter takes no CPU from the timed part.

    .venv/bin/python bench/bench_tick_1000.py [--sizes 10 100 1000] [--repeats 5] [--json]

``run(n_autoscalers)`` (one size, its own Prometheus) and ``TickBench`` (one Prometheus, many sizes) are the
entry points for a bench that adds the Kubernetes side of the tick.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S  # noqa: E402
from autoscaler.core.spec import AutoscalerSpec, MetricsSpec  # noqa: E402
from autoscaler.prometheus import PrometheusMetricsSource  # noqa: E402
from tests.helpers.processes import ProcessRunner  # noqa: E402
from tests.helpers.prometheus import PrometheusServer  # noqa: E402
from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, LatencyMix, Load, VllmExporter  # noqa: E402

SCRAPE_INTERVAL_S = 15.0
WINDOW_S = 60.0
NAMESPACES = 10
PROXY_TTFT = LatencyMix(((0.1, 0.6), (0.6, 0.38), (4.0, 0.02)))
PROXY_ITL = LatencyMix(((0.03, 0.95), (0.2, 0.05)))
WORKER_TTFT = LatencyMix(((0.05, 0.5), (0.3, 0.45), (3.0, 0.05)))


def model_name(i: int) -> str:
    return f"model-{i:04d}"


def namespace(i: int) -> str:
    return f"ns-{i % NAMESPACES}"


def autoscaler_specs(n: int, proxy: bool = True) -> dict[str, AutoscalerSpec]:
    """N autoscalers selecting their deployment by namespace and model name (two selector labels).
    ``proxy=False`` ignores the proxies: TTFT/ITL come from the (larger) worker histograms, the worst case."""
    return {
        f"{namespace(i)}/{model_name(i)}": AutoscalerSpec(
            metrics=MetricsSpec(
                selector=(("namespace", namespace(i)), ("model_name", model_name(i))),
                window_s=WINDOW_S,
                proxy=proxy,
            )
        )
        for i in range(n)
    }


def build_exporter(n: int) -> VllmExporter:
    ex = VllmExporter()
    for i in range(n):
        m, ns = model_name(i), namespace(i)
        rate = 1.0 + (i % 7)
        ex.add_pod(ExportedPod(f"{m}-prefill-0", "prefill", m, namespace=ns, load=Load(
            rate, ttft=WORKER_TTFT, prompt_tokens_per_request=800, output_tokens_per_request=1,
            waiting=i % 5, running=2, kv_usage=0.3)))  # fmt: skip
        for j in range(2):
            ex.add_pod(ExportedPod(f"{m}-decode-{j}", "decode", m, namespace=ns, load=Load(
                rate / 2, ttft=WORKER_TTFT, itl=PROXY_ITL, itl_samples_per_request=150, prompt_tokens_per_request=800,
                output_tokens_per_request=151, waiting=0, running=20 + j, kv_usage=0.5)))  # fmt: skip
        ex.add_frontend(ExportedFrontend(f"{m}-proxy", m, namespace=ns, load=Load(
            rate, ttft=PROXY_TTFT, itl=PROXY_ITL, itl_samples_per_request=150)))  # fmt: skip
    return ex


class TickBench:
    """One exporter with ``n_max`` deployments, one Prometheus scraping it; ``run(n)`` times refreshes."""

    def __init__(self, n_max: int, *, workdir: Path | None = None, verbose: bool = True) -> None:
        self.n_max = n_max
        self.verbose = verbose
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-tick-") if workdir is None else None
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.runner = ProcessRunner(self.workdir / "logs")
        self.exporter = build_exporter(n_max)
        self.prom: PrometheusServer | None = None
        self.eval_at_s: float | None = None
        self.series_bytes = 0

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def start(self) -> TickBench:
        started = time.monotonic()
        self.series_bytes = self.exporter.hold_exposition()
        self.exporter.start()
        self.prom = PrometheusServer(
            self.runner, self.workdir / "prometheus", static_targets={"vllm": [self.exporter.target]},
            scrape_interval_s=SCRAPE_INTERVAL_S,
        ).start()  # fmt: skip
        self._say(f"exporter {self.series_bytes / 1e6:.1f} MB per scrape; warming up ...")
        # keep regenerating (counters advance) until Prometheus holds 3 scrapes, then freeze the body
        stop = threading.Event()

        def regenerate() -> None:
            while not stop.is_set():
                self.exporter.hold_exposition()

        thread = threading.Thread(target=regenerate, daemon=True)
        thread.start()
        try:
            self.prom.wait_for_scrapes("vllm", n=3, timeout_s=5 * SCRAPE_INTERVAL_S + 30, fresh=False)
        finally:
            stop.set()
            thread.join()
        self.eval_at_s = time.time() - 1.0
        self._say(f"warm-up {time.monotonic() - started:.0f} s")
        return self

    def stop(self) -> None:
        if self.prom is not None:
            self.prom.stop()
        self.runner.stop_all()
        self.exporter.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> TickBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(
        self, n_autoscalers: int, repeats: int = 5, max_concurrency: int = 4, proxy: bool = True
    ) -> dict[str, Any]:
        """Refresh the first ``n_autoscalers`` ``repeats`` times (after one untimed warm query); check answers."""
        if self.prom is None or self.eval_at_s is None:
            raise RuntimeError("TickBench.start() first")
        if not 1 <= n_autoscalers <= self.n_max:
            raise ValueError(f"n_autoscalers must be in 1..{self.n_max}, got {n_autoscalers}")
        specs = autoscaler_specs(n_autoscalers, proxy)
        source = PrometheusMetricsSource(self.prom.url, timeout_s=30.0, max_concurrency=max_concurrency)
        source.refresh(specs, self.eval_at_s)  # untimed: first touch of the data
        walls: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            source.refresh(specs, self.eval_at_s)
            walls.append(time.perf_counter() - t0)
        if proxy:
            expected_ttft = PROXY_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S)
        else:  # prefill-worker TTFT + decode-worker TTFT (same mix on both pools here)
            expected_ttft = 2 * WORKER_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S)  # type: ignore[operator]
        expected_itl = PROXY_ITL.bucketed_quantile(0.99, ITL_BUCKETS_S)
        wrong = errors = 0
        for key, spec in specs.items():
            sig = source.view(key).observe(spec, self.eval_at_s)
            errors += sig.error is not None
            ok = (
                sig.ttft_s is not None and abs(sig.ttft_s - expected_ttft) < 1e-6 * expected_ttft  # type: ignore[operator]
                and sig.itl_s is not None and abs(sig.itl_s - expected_itl) < 1e-6 * expected_itl  # type: ignore[operator]
                and sig.decode.running_requests == 41.0 and sig.prefill.running_requests == 2.0
            )  # fmt: skip
            wrong += not ok
        slowest = max(source.query_seconds_last_refresh, key=lambda kv: kv[1])
        return {
            "autoscalers": n_autoscalers,
            "max_concurrency": max_concurrency,
            "proxy": proxy,
            "pools": 2 * n_autoscalers,
            "pods": 3 * n_autoscalers,
            "queries_per_tick": source.queries_last_refresh,
            "tick_wall_s_median": statistics.median(walls),
            "tick_wall_s_min": min(walls),
            "tick_wall_s_max": max(walls),
            "slowest_query": {"kind": slowest[0], "wall_s": slowest[1]},
            "autoscalers_with_error": errors,
            "autoscalers_with_wrong_signals": wrong,
        }


def run(n_autoscalers: int, repeats: int = 5, max_concurrency: int = 4, proxy: bool = True) -> dict[str, Any]:
    """One size with its own exporter and Prometheus (slow to set up; prefer TickBench for several sizes)."""
    with TickBench(n_autoscalers, verbose=False) as bench:
        return bench.run(n_autoscalers, repeats, max_concurrency, proxy)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4], help="max concurrent queries (4)")
    parser.add_argument(
        "--proxy", choices=["on", "off", "both"], default="both",
        help="read TTFT/ITL from the proxies (on), from worker histograms (off), or both (default)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = parser.parse_args(argv)
    with TickBench(max(args.sizes)) as bench:
        proxies = {"on": [True], "off": [False], "both": [True, False]}[args.proxy]
        rows = [
            bench.run(n, args.repeats, c, p) for p in proxies for c in args.concurrency for n in args.sizes
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = ("autoscalers", "pools", "conc", "proxy", "queries/tick", "median s", "min s", "max s")
        print(" ".join(f"{h:>12}" for h in head), " slowest query")
        for r in rows:
            cells = (
                r["autoscalers"],
                r["pools"],
                r["max_concurrency"],
                str(r["proxy"]),
                r["queries_per_tick"],
            )
            times = (r["tick_wall_s_median"], r["tick_wall_s_min"], r["tick_wall_s_max"])
            slow = r["slowest_query"]
            print(" ".join(f"{c:>12}" for c in cells), " ".join(f"{t:>12.3f}" for t in times),
                  f" {slow['kind']} {slow['wall_s']:.3f} s")  # fmt: skip
        first = rows[0]
        for r in rows[1 : len(args.sizes)]:
            print(f"ratio {r['autoscalers']} / {first['autoscalers']} autoscalers: "
                  f"{r['tick_wall_s_median'] / first['tick_wall_s_median']:.1f}x wall, "
                  f"{r['queries_per_tick'] / first['queries_per_tick']:.1f}x queries")  # fmt: skip
    bad = [r for r in rows if r["autoscalers_with_error"] or r["autoscalers_with_wrong_signals"]]
    for r in bad:
        print(f"WRONG: {r}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

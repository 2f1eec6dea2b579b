"""Real vLLM pods on one machine with and without the pod runner's CPU placement, side by side in one run.

Each side starts the one-machine cluster (``workers.local.cluster.LocalCluster``) with real vLLM on CPU, the live
test's settings (``tests.helpers.real_vllm.real_vllm_cluster_spec``): one prefill and two decode pods joined by the NixlConnector (the shape of ``tests/e2e/test_live_vllm_loop.py`` after
its scale-up), a real Prometheus scraping them every second (1 s timeout), ``pdscale run``, and a Poisson trickle
of requests (128-token prompts, 48 output tokens) through the proxy. It then reads from Prometheus, per role,
the share of scrapes that succeeded (``up``), the median and worst scrape time, and the decode ITL p99 (vLLM's
histogram) and the TTFT p99 the proxy measured, and counts failed requests. Off: ``ClusterSpec.place_vllm_pods``
False. On: pinned threads moved to the pod's core and busy-polling threads SCHED_IDLE once the pod is Ready
(``workers/local/cpu_placement.py`` says why).

Usage (needs ``make vllm``; ~6 min on 2 cores):
  .venv/bin/python bench/bench_vllm_cpu_placement.py [--observe-s 90] [--rate 0.5]
Timing figures on a shared machine are noisy: run it a few times and quote medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(placed: bool, workdir: Path, observe_s: float, rate_per_s: float) -> dict[str, Any]:
    from tests.helpers.real_vllm import real_vllm_cluster_spec
    from workers.local.cluster import LocalCluster
    from workers.local.load import LoadProcess, failures

    spec = real_vllm_cluster_spec(decode_replicas=2, place_vllm_pods=placed,
                                  autoscaler={"prefill": {"maxReplicas": 1}, "decode": {"minReplicas": 2}})
    cluster = LocalCluster(spec, workdir)
    t0 = time.monotonic()
    cluster.start(wait_ready_s=420.0)
    out: dict[str, Any] = {"start_s": time.monotonic() - t0}
    try:
        time.sleep(10.0)  # every pod placed (a 1 s sample once Ready)
        load = LoadProcess(cluster.runner, cluster.workdir, url=cluster.proxy_url, model="tiny", seed=1,
                           max_requests=int(rate_per_s * observe_s), max_concurrency=4, timeout_s=180.0,
                           generator=f"poisson:rate={rate_per_s:g},duration={observe_s:g},"
                                     "prompt=const(128),output=const(48)")  # fmt: skip
        t1 = time.time()
        records = load.result(timeout_s=observe_s + 200.0)
        window = f"{max(1, int(time.time() - t1))}s"
        assert cluster.prometheus is not None
        query = cluster.prometheus.query_value

        for role in ("prefill", "decode"):
            out[f"{role}_up"] = query(f'avg(avg_over_time(up{{role="{role}"}}[{window}]))')
            out[f"{role}_scrape_p50_s"] = query(
                f'max(quantile_over_time(0.5, scrape_duration_seconds{{role="{role}"}}[{window}]))')
            out[f"{role}_scrape_max_s"] = query(f'max(max_over_time(scrape_duration_seconds{{role="{role}"}}[{window}]))')
        out["decode_itl_p99_s"] = query('histogram_quantile(0.99, sum by (le) (increase('
                                        f'vllm:inter_token_latency_seconds_bucket{{role="decode"}}[{window}])))')
        out["ttft_p99_s"] = query('histogram_quantile(0.99, sum by (le) (increase('
                                  f'pdscale_proxy_time_to_first_token_seconds_bucket[{window}])))')
        out["requests"] = len(records)
        out["failed"] = len(failures(records))
        out["placement"] = [e.detail for e in (cluster.pods.history if cluster.pods else []) if e.event == "placed"]
        out["load_average_1m"] = os.getloadavg()[0]
    finally:
        cluster.stop()
    return out


ROWS = [("prefill_up", "prefill scrapes up"), ("decode_up", "decode scrapes up"),
        ("prefill_scrape_p50_s", "prefill scrape p50 (s)"), ("decode_scrape_p50_s", "decode scrape p50 (s)"),
        ("decode_scrape_max_s", "decode scrape max (s)"), ("decode_itl_p99_s", "decode ITL p99 (s)"),
        ("ttft_p99_s", "TTFT p99 at the proxy (s)"), ("requests", "requests"), ("failed", "failed or short"),
        ("start_s", "cluster start (s)"), ("load_average_1m", "load average at the end")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--observe-s", type=float, default=90.0, help="seconds of traffic per side (90)")
    ap.add_argument("--rate", type=float, default=0.5, help="requests per second (0.5)")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as tmp:
        for placed in (False, True):
            name = "placed" if placed else "not placed"
            print(f"running: {name} ...", flush=True)
            results[name] = measure(placed, Path(tmp) / name.replace(" ", "-"), args.observe_s, args.rate)
    print(f"\n{'':28s} {'not placed':>12s} {'placed':>12s}")
    for key, label in ROWS:
        cells = []
        for name in ("not placed", "placed"):
            v = results[name].get(key)
            cells.append(f"{v:12.3g}" if isinstance(v, (int, float)) else f"{'n/a':>12s}")
        print(f"{label:28s} {cells[0]} {cells[1]}")
    print("\nplacement done once each pod was Ready:")
    for detail in results["placed"]["placement"]:
        print(f"  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

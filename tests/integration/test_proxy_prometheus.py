"""A real Prometheus scrapes emulated prefill/decode workers and ``pdscale proxy`` while ``pdscale loadgen``
drives them; ``autoscaler/prometheus.py``'s queries (``PrometheusMetricsSource``, the controller's own) read back
TTFT and ITL percentiles that agree with what the load generator measured, within one histogram bucket — from
the proxy's user-visible histograms and from the workers' own (the fallback without a proxy)."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable

import pytest

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S
from autoscaler.core.spec import SLO, AutoscalerSpec, MetricsSpec
from autoscaler.prometheus import PrometheusMetricsSource
from tests.helpers.proxy_stack import outcome, start_proxy
from tests.helpers.workers import MODEL, start_worker
from workers.loadgen import Target, build_plan, run_plan
from workers.loadgen_report import summarize
from workers.local.processes import ProcessRunner
from workers.local.prometheus import PrometheusServer

WINDOW_S = 60.0
WORKLOAD = "poisson:rate=6,duration=8,prompt=const(1500),output=const(40)"


def bucket_of(value: float, edges: tuple[float, ...]) -> tuple[float, float]:
    """The histogram bucket (lower, upper edge) holding ``value``."""
    i = bisect.bisect_left(edges, value)
    return (edges[i - 1] if i else 0.0, edges[i] if i < len(edges) else float("inf"))


def assert_within_a_bucket(
    read: float | None, measured_ms: float, edges: tuple[float, ...], what: str
) -> None:
    assert read is not None, f"{what}: Prometheus gave no value"
    measured = measured_ms / 1000.0
    lo, hi = bucket_of(measured, edges)
    width = hi - lo
    assert abs(read - measured) <= width, (
        f"{what}: Prometheus {read * 1000:.1f} ms vs loadgen {measured_ms:.1f} ms, more than one bucket "
        f"({lo * 1000:g}-{hi * 1000:g} ms) apart"
    )


def spec(proxy: bool) -> AutoscalerSpec:
    return AutoscalerSpec(
        ttft=SLO(0.9, 1.0),
        itl=SLO(0.5, 0.05),
        metrics=MetricsSpec(selector=(("model_name", MODEL),), window_s=WINDOW_S, proxy=proxy),
    )


def test_controller_queries_read_what_loadgen_measured(
    process_runner: ProcessRunner, prometheus: Callable[..., PrometheusServer]
) -> None:
    prefill = start_worker(process_runner, role="prefill")
    decode = start_worker(process_runner, role="decode")
    proxy = start_proxy(process_runner, prefill=[prefill.url], decode=[decode.url])

    def job(name: str, target: str, role: str | None) -> dict[str, object]:
        labels = {"role": role} if role else {}
        return {"job_name": name, "static_configs": [{"targets": [target], "labels": labels}]}

    prom = prometheus(scrape_configs=[
        job("prefill", prefill.url.removeprefix("http://"), "prefill"),
        job("decode", decode.url.removeprefix("http://"), "decode"),
        job("proxy", proxy.target, None),
    ])  # fmt: skip
    for name in ("prefill", "decode", "proxy"):
        prom.wait_for_scrapes(name, n=1, timeout_s=30)

    plan = build_plan(generator=WORKLOAD, seed=1)
    records = asyncio.run(run_plan(plan, Target(proxy.api_url, MODEL)))
    summary = summarize(records, percentiles=(50, 90))
    assert summary["failed"] == 0 and summary["completed"] == len(plan)
    assert outcome(proxy.url, "ok") == len(plan)
    time.sleep(2.5)  # two more scrapes: every finished request is in Prometheus
    now = time.time()

    source = PrometheusMetricsSource(prom.url, timeout_s=10.0)
    specs = {"proxy": spec(True), "workers": spec(False)}
    source.refresh(specs, now)
    assert source.last_error is None
    via_proxy = source.view("proxy").observe(specs["proxy"], now)
    via_workers = source.view("workers").observe(specs["workers"], now)
    assert via_proxy.error is None and via_workers.error is None

    assert_within_a_bucket(via_proxy.ttft_s, summary["ttft"]["p90_ms"], TTFT_BUCKETS_S, "proxy TTFT p90")
    assert_within_a_bucket(via_proxy.itl_s, summary["itl"]["p50_ms"], ITL_BUCKETS_S, "proxy ITL p50")
    # without the proxy: prefill-worker TTFT + decode-worker TTFT, decode-worker ITL
    assert_within_a_bucket(via_workers.ttft_s, summary["ttft"]["p90_ms"], TTFT_BUCKETS_S, "worker TTFT p90")
    assert_within_a_bucket(via_workers.itl_s, summary["itl"]["p50_ms"], ITL_BUCKETS_S, "worker ITL p50")
    # the request rate over the window counts every request the proxy answered
    assert via_proxy.request_rate_per_s is not None
    assert via_proxy.request_rate_per_s * WINDOW_S == pytest.approx(len(plan), rel=0.35)

"""The shared fixtures work: the real Prometheus scrapes a prometheus_client exporter, survives restarts,
follows file_sd changes; managed subprocesses are always ended."""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from tests.helpers.exporter import MetricsExporter
from workers.local.net import free_port
from workers.local.processes import ProcessRunner
from workers.local.prometheus import PrometheusQueryError, PrometheusServer

PrometheusFactory = Callable[..., PrometheusServer]
ExporterFactory = Callable[[CollectorRegistry], MetricsExporter]

BUCKETS = (0.1, 0.5, 1.0, 2.5)
# value -> how many observations; cumulative le counts: 0.1:10, 0.5:30, 1.0:40, 2.5:48, +Inf:50
OBSERVATIONS = {0.05: 10, 0.3: 20, 0.7: 10, 2.0: 8, 5.0: 2}
# Worked by hand: rank = q*50; interpolate linearly in the bucket whose cumulative count reaches the rank.
HAND_QUANTILES = [
    ("p50", 0.5, 0.1 + (0.5 - 0.1) * (25 - 10) / 20),  # 0.4
    ("p90", 0.9, 1.0 + (2.5 - 1.0) * (45 - 40) / 8),  # 1.9375
    ("p99", 0.99, 2.5),  # rank 49.5 lies in the +Inf bucket: highest finite bound
]


def _histogram_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    hist = Histogram("fixture_latency_seconds", "test latency", buckets=BUCKETS, registry=registry)
    for value, n in OBSERVATIONS.items():
        for _ in range(n):
            hist.observe(value)
    return registry


@pytest.fixture(scope="module")
def shared(module_prometheus: PrometheusFactory, module_metrics_exporter: ExporterFactory) -> PrometheusServer:
    """One server for the module: Prometheus 2.42 takes ~5 s after each (re)start before its first scrape
    (target discovery is throttled to 5 s), so tests share it. Jobs: a histogram exporter, a port nobody
    listens on, and a file_sd job that starts empty."""
    histograms = module_metrics_exporter(_histogram_registry())
    prom = module_prometheus(
        static_targets={"fixture": [histograms.target], "nobody": [f"127.0.0.1:{free_port()}"]},
        file_sd=["dynamic"],
        scrape_interval_s=1.0,
    )
    prom.wait_for_scrapes("fixture", 2, timeout_s=20)
    return prom


@pytest.fixture(scope="module")
def counter_target(module_metrics_exporter: ExporterFactory) -> str:
    counters = CollectorRegistry()
    Counter("fixture_requests", "requests", registry=counters).inc(7)
    return module_metrics_exporter(counters).target


@pytest.fixture
def scraped(shared: PrometheusServer) -> PrometheusServer:
    if not shared.running:  # a failed outage test must not take the others down with it
        shared.start()
        shared.wait_for_scrapes("fixture", 1, timeout_s=20)
    return shared


@pytest.mark.parametrize(("q", "expected"), [c[1:] for c in HAND_QUANTILES], ids=[c[0] for c in HAND_QUANTILES])
def test_histogram_quantile_of_scraped_exporter(scraped: PrometheusServer, q: float, expected: float) -> None:
    got = scraped.query_value(f'histogram_quantile({q}, fixture_latency_seconds_bucket{{job="fixture"}})')
    assert got == pytest.approx(expected, rel=1e-12)


def test_query_returns_series_with_labels(scraped: PrometheusServer) -> None:
    result = scraped.query('fixture_latency_seconds_bucket{job="fixture"}')
    by_le = {r["metric"]["le"]: float(r["value"][1]) for r in result}
    assert by_le == {"0.1": 10.0, "0.5": 30.0, "1.0": 40.0, "2.5": 48.0, "+Inf": 50.0}
    assert scraped.query_value("vector(1) + 1") == 2.0
    assert scraped.query("fixture_latency_seconds_bucket{le='nope'}") == []


def test_file_sd_targets_can_be_rewritten(scraped: PrometheusServer, counter_target: str) -> None:
    scraped.set_file_sd_targets("dynamic", [counter_target], labels={"pool": "decode"})
    scraped.wait_for_scrapes("dynamic", 1, timeout_s=20)
    assert scraped.query_value('fixture_requests_total{job="dynamic",pool="decode"}') == 7.0
    assert scraped.wait_for_scrapes(counter_target, 1, timeout_s=20) >= 1  # by instance, too


def test_down_target_counts_only_when_asked(scraped: PrometheusServer) -> None:
    assert scraped.wait_for_scrapes("nobody", 1, timeout_s=20, successful=False) >= 1
    with pytest.raises(TimeoutError, match="nobody: 0 of 1 scrapes"):
        scraped.wait_for_scrapes("nobody", 1, timeout_s=1.5)
    assert scraped.query_value('max_over_time(up{job="nobody"}[1h])') == 0.0


def test_outage_stop_kill_and_restart_keep_url_and_data(scraped: PrometheusServer) -> None:
    before = scraped.query_value('count_over_time(up{job="fixture"}[1h])')
    assert before is not None and before >= 2
    url = scraped.url
    scraped.stop()
    assert not scraped.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/-/ready", timeout=2.0)
    scraped.start()
    assert scraped.url == url and scraped.running
    scraped.kill()  # a crash this time: the WAL is replayed on start
    assert not scraped.running
    scraped.start()
    scraped.wait_for_scrapes("fixture", 1, timeout_s=20)
    after = scraped.query_value('count_over_time(up{job="fixture"}[1h])')
    assert after is not None and after >= before + 1  # samples from before the outage were kept
    assert scraped.query_value('fixture_latency_seconds_count{job="fixture"}') == 50.0


def test_bad_promql_raises_with_prometheus_error(scraped: PrometheusServer) -> None:
    with pytest.raises(PrometheusQueryError, match="bad_data"):
        scraped.query("sum(")
    nan = scraped.query_value("0/0")
    assert nan is not None and math.isnan(nan)


def test_missing_binary_fails_naming_the_script(
    prometheus: PrometheusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"scripts/ensure-prometheus\.sh"):
        prometheus(static_targets={})


def test_process_runner_captures_output_and_kills_stubborn_processes(process_runner: ProcessRunner) -> None:
    proc = process_runner.start(["sh", "-c", 'trap "" TERM; echo ready=$((6*7)); exec sleep 60'], name="stubborn")
    for _ in range(50):
        if "ready=42" in proc.output():
            break
        time.sleep(0.05)
    assert "ready=42" in proc.output()  # printed after the trap is set
    rc = proc.stop(timeout_s=0.5)
    assert rc == -9  # ignored SIGTERM, so SIGKILL ended it
    assert not proc.running
    again = process_runner.start(["sh", "-c", "echo second"], name="stubborn")
    assert again.name == "stubborn#1" and again.log_path != proc.log_path

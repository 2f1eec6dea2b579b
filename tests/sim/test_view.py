"""The simulated Prometheus reads what a real Prometheus would: extrapolated rates, bucket quantiles, visibility."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S
from autoscaler.core.histogram import histogram_quantile
from autoscaler.core.spec import SLO, AutoscalerSpec, MetricsSpec
from autoscaler.core.types import Pool, PoolDecision, PoolReplicas
from sim.counters import PodCounters
from sim.view import (
    ITL,
    KV_USAGE,
    REQUEST_SUCCESS,
    TTFT,
    WAITING,
    SimClock,
    SimMetricsSource,
    SimPrometheus,
    SimScaleTarget,
    extrapolated_rate,
)

# (id, sample times, values, range start, range end, is_counter, prometheus major, expected per-second rate)
# Expected values are worked by hand from promql/functions.go extrapolatedRate (see comments).
RATE_CASES = [
    # aligned, covers the range: increase 60 over 60 s
    ("aligned", [0, 15, 30, 45, 60], [0, 15, 30, 45, 60], 0, 60, True, 2, 1.0),
    # 8 s before the first and 7 s after the last sample, both < 1.1*15: extrapolate 45 -> 60 over 60 s
    ("misaligned", [15, 30, 45, 60], [100, 115, 130, 145], 7, 67, True, 2, 1.0),
    # start extrapolation clamped at the counter's zero point: 15 s -> 5 s; (45+5)/60
    ("zero-clamp", [15, 30, 45, 60], [5, 20, 35, 50], 0, 60, True, 2, 50 / 60),
    # 2.x: zero point (10 s) < 20 s first, then 10 < 16.5 keeps it; end 10 s: 30*(50/30)/60
    ("zero-clamp-v2-order", [20, 35, 50], [10, 25, 40], 0, 60, True, 2, 50 / 60),
    # 3.x: 20 s >= 16.5 -> 7.5 first, zero point 10 s is not shorter: (30+7.5+10)/60
    ("zero-clamp-v3-order", [20, 35, 50], [10, 25, 40], 0, 60, True, 3, 47.5 / 60),
    # reset 20 -> 5 adds 20: 25-10+20 = 35 over 60 s
    ("counter-reset", [0, 15, 30, 45, 60], [10, 20, 5, 15, 25], 0, 60, True, 2, 35 / 60),
    # series ends at 30 s (pod gone): end gap 30 s >= 16.5 -> extrapolate 7.5 s: 20*(37.5/30)/60
    ("series-ends", [0, 15, 30], [0, 10, 20], 0, 60, True, 2, 25 / 60),
    # a gauge may go down: no reset handling, no zero clamp
    ("gauge-down", [0, 15, 30], [10, 5, 0], 0, 30, False, 2, -10 / 30),
    # no increase: zero, not missing
    ("flat", [0, 15, 30], [7, 7, 7], 0, 30, True, 2, 0.0),
]


@pytest.mark.parametrize(
    ("times", "values", "start", "end", "counter", "major", "expected"),
    [c[1:] for c in RATE_CASES],
    ids=[c[0] for c in RATE_CASES],
)
def test_extrapolated_rate_matches_hand_computed(times, values, start, end, counter, major, expected):
    got = extrapolated_rate(
        np.array(times, float),
        np.array(values, float),
        start,
        end,
        is_counter=counter,
        prometheus_major=major,
    )
    assert got is not None
    assert got[0] == pytest.approx(expected, rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=30), min_size=2, max_size=12),
    steps=st.lists(st.integers(min_value=0, max_value=100), min_size=12, max_size=12),
    reset_at=st.integers(min_value=0, max_value=11),
    start_gap=st.integers(min_value=0, max_value=60),
    end_gap=st.integers(min_value=0, max_value=60),
    major=st.sampled_from([2, 3]),
)
def test_counter_rate_is_never_negative_and_bounded(gaps, steps, reset_at, start_gap, end_gap, major):
    """Counters with resets: the rate is >= 0, and the extrapolated increase never exceeds the observed increase
    stretched over the whole range (extrapolation is bounded by the range)."""
    times = np.cumsum(np.array(gaps, dtype=float))
    values = np.cumsum(np.array(steps[: times.size], dtype=float))
    if reset_at < times.size:
        values[reset_at:] -= values[reset_at]
    start, end = times[0] - start_gap, times[-1] + end_gap
    got = extrapolated_rate(times, values, start, end, prometheus_major=major)
    assert got is not None
    increase = (
        values[-1]
        - values[0]
        + sum(values[i - 1] for i in range(1, values.size) if values[i] < values[i - 1])
    )
    assert got[0] >= 0.0
    sampled = times[-1] - times[0]
    assert got[0] * (end - start) <= increase * (end - start) / sampled + 1e-9


def test_extrapolated_rate_needs_two_samples():
    assert extrapolated_rate(np.array([10.0]), np.array([5.0]), 0, 60) is None


@dataclass
class FakePod:
    name: str
    pool: Pool
    ready_s: float = 0.0
    gone_s: float = math.inf
    state: str = "ready"
    counters: PodCounters = field(default_factory=PodCounters)
    first_scrape_s: float | None = None


class FakeEngine:
    """Just the engine surface the view reads: pods() with counters and the proxy's counters."""

    def __init__(self, pods: list[FakePod]) -> None:
        self._pods = pods
        self.proxy = PodCounters()

    def pods(self, pool=None):
        return [p for p in self._pods if pool is None or p.pool is pool]


@pytest.mark.parametrize(
    ("major", "times", "values", "at", "window", "expected"),
    [
        (2, [0, 15, 30, 45, 60], [0, 15, 30, 45, 60], 60, 60, 1.0),
        (2, [15, 30, 45, 60], [5, 20, 35, 50], 60, 60, 50 / 60),
        # left-open range drops the sample at t=0; (15 s gap to start, 15 s to zero) -> 30/30
        (3, [0, 15, 30], [0, 15, 30], 30, 30, 1.0),
        (2, [0, 15, 30, 45, 60], [10, 20, 5, 15, 25], 60, 60, 35 / 60),
    ],
    ids=["aligned", "zero-clamp", "v3-left-open", "reset"],
)
def test_view_rate_through_scrapes(major, times, values, at, window, expected):
    pod = FakePod("p0", Pool.DECODE)
    prom = SimPrometheus(FakeEngine([pod]), prometheus_major=major)
    for t, v in zip(times, values, strict=True):
        pod.counters.request_success_total = v
        prom.scrape(t)
    assert prom.rate(REQUEST_SUCCESS, window, at, pool=Pool.DECODE) == pytest.approx(expected)
    assert prom.rate(REQUEST_SUCCESS, window, at, pool=Pool.PREFILL) is None  # no series: absent, not 0


def test_counter_rates_read_once_per_range_are_each_columns_own_rate():
    """A tick's many rate() reads over one range share one computation over the whole sample row: each must still
    be exactly the column's own extrapolated rate, counter resets included, and a scrape must bring new values."""
    pod = FakePod("p0", Pool.DECODE)
    prom = SimPrometheus(FakeEngine([pod]))
    rng = np.random.default_rng(3)
    times: list[float] = []
    cols: dict[str, list[float]] = {REQUEST_SUCCESS: [], f"{TTFT}_count": [], f"{ITL}_sum": []}
    for k in range(12):
        c = pod.counters
        c.request_success_total += int(rng.integers(0, 40))
        if k == 6:
            c.request_success_total = 3  # a reset
        c.ttft.observe(float(rng.uniform(0.01, 2.0)), int(rng.integers(1, 9)))
        c.itl.observe(float(rng.uniform(0.001, 0.1)), int(rng.integers(1, 99)))
        c.num_requests_waiting = int(rng.integers(0, 5))  # a gauge column in the same rows
        t = 15.0 * k
        prom.rate(REQUEST_SUCCESS, 60.0, t)  # read before this scrape: what the scrape adds must show after it
        prom.scrape(t)
        times.append(t)
        cols[REQUEST_SUCCESS].append(c.request_success_total)
        cols[f"{TTFT}_count"].append(c.ttft.count)
        cols[f"{ITL}_sum"].append(c.itl.sum)
        for window in (30.0, 60.0, 120.0):
            start = t - window
            sel = [i for i, x in enumerate(times) if start <= x <= t]
            for metric, values in cols.items():
                want = extrapolated_rate(np.array(times)[sel], np.array(values)[sel], start, t)
                got = prom.rate(metric, window, t)
                assert got == (None if want is None else float(want[0]))


def test_sum_by_pool_adds_series_of_that_pool_only():
    pods = [FakePod("p0", Pool.PREFILL), FakePod("p1", Pool.PREFILL), FakePod("d0", Pool.DECODE)]
    prom = SimPrometheus(FakeEngine(pods))
    for k in range(5):
        for i, p in enumerate(pods):
            p.counters.request_success_total = (i + 1) * 15 * k
        prom.scrape(15.0 * k)
    assert prom.rate(REQUEST_SUCCESS, 60, 60, pool=Pool.PREFILL) == pytest.approx(1 + 2)
    assert prom.rate(REQUEST_SUCCESS, 60, 60, pool=Pool.DECODE) == pytest.approx(3)
    assert prom.rate(REQUEST_SUCCESS, 60, 60) == pytest.approx(6)


@settings(max_examples=40, deadline=None)
@given(
    per_pod=st.lists(
        st.lists(st.floats(min_value=0.0005, max_value=3000.0), min_size=0, max_size=30),
        min_size=1,
        max_size=3,
    ),
    q=st.sampled_from([0.5, 0.9, 0.99]),
)
def test_quantile_equals_direct_histogram_quantile(per_pod, q):
    """Aligned scrapes from a zero start: bucket rates are increase/window, so the quantile is the counts'."""
    pods = [FakePod(f"d{i}", Pool.DECODE) for i in range(len(per_pod))]
    prom = SimPrometheus(FakeEngine(pods))
    prom.scrape(0.0)
    for k in range(1, 5):
        for pod, values in zip(pods, per_pod, strict=True):
            chunk = values[(k - 1) :: 4]
            pod.counters.ttft.observe_many(np.array(chunk, dtype=float))
        prom.scrape(15.0 * k)
    total = sum(p.counters.ttft.counts for p in pods)
    direct = histogram_quantile(q, (*TTFT_BUCKETS_S, math.inf), [float(x) for x in np.cumsum(total)])
    got = prom.quantile(q, TTFT, 60, 60, pool=Pool.DECODE)
    if direct is None:
        assert got is None
    else:
        assert got == pytest.approx(direct, rel=1e-9)


def test_pod_invisible_until_first_scrape_after_ready_and_stale_after_gone():
    early = FakePod("d0", Pool.DECODE)
    late = FakePod("d1", Pool.DECODE, ready_s=20.0, state="starting")
    early.counters.num_requests_waiting = 3
    late.counters.num_requests_waiting = 5
    prom = SimPrometheus(FakeEngine([early, late]))
    prom.scrape(0.0)
    prom.scrape(15.0)
    assert late.first_scrape_s is None
    assert prom.gauge(WAITING, 25.0, pool=Pool.DECODE) == 3  # ready at 20 but not scraped yet
    prom.scrape(30.0)
    assert late.first_scrape_s == 30.0 and early.first_scrape_s == 0.0
    assert prom.gauge(WAITING, 30.0, pool=Pool.DECODE) == 8
    assert prom.visible_pods(30.0) == ["d0", "d1"]
    early.gone_s = 50.0
    prom.scrape(45.0)
    prom.scrape(60.0)
    assert prom.gauge(WAITING, 55.0, pool=Pool.DECODE) == 8  # staleness is noticed at the 60 s scrape
    assert prom.gauge(WAITING, 60.0, pool=Pool.DECODE) == 5
    assert prom.visible_pods(60.0) == ["d1"]


def test_discovery_delay_hides_a_ready_pod_and_the_requests_it_serves_meanwhile():
    """A pod ready at a scrape instant is not scraped then when discovery takes a while (Prometheus' discovery
    manager hands new targets over every 5 s): the requests it finishes before its first scrape are in no rate."""
    pod = FakePod("p0", Pool.PREFILL, ready_s=15.0, state="starting")
    rates = {}
    for discovery_s in (0.0, 2.5):
        pod.counters, pod.first_scrape_s = PodCounters(), None
        prom = SimPrometheus(FakeEngine([pod]), scrape_interval_s=3.75, discovery_s=discovery_s)
        for k, done in enumerate((0, 5, 7, 9, 11)):  # a burst of 5 as it joins, then 2 per interval
            pod.counters.request_success_total = done
            prom.scrape(15.0 + 3.75 * k)
        rates[discovery_s] = (pod.first_scrape_s, prom.rate(REQUEST_SUCCESS, 15.0, 30.0, pool=Pool.PREFILL))
    assert rates[0.0] == (15.0, pytest.approx(11.0 / 15.0))
    # first sample 5 at 18.75 s: the increase 6 over 11.25 s is extrapolated to the window, the burst is lost
    assert rates[2.5] == (18.75, pytest.approx(8.0 / 15.0))
    with pytest.raises(ValueError, match="discovery_s"):
        SimPrometheus(FakeEngine([]), discovery_s=-1.0)


def test_pods_reporting_counts_scraped_pods_as_the_running_gauge_count_does():
    """``PoolSignals.pods_reporting`` as ``autoscaler.prometheus`` reads it (distinct pods with a fresh running
    gauge): a pod ready between two scrapes is not one yet, so the policy sees the partial scrape a live tick sees."""
    early = FakePod("d0", Pool.DECODE)
    late = FakePod("d1", Pool.DECODE, ready_s=20.0, state="starting")
    prom = SimPrometheus(FakeEngine([early, late]))
    source = SimMetricsSource(prom, mode="disagg")
    prom.scrape(0.0)
    prom.scrape(15.0)
    assert source.observe(_spec(False), 25.0).decode.pods_reporting == 1.0  # d1 ready at 20, first scraped at 30
    assert source.observe(_spec(False), 25.0).prefill.pods_reporting == 0.0  # no prefill pod reports
    prom.scrape(30.0)
    assert source.observe(_spec(False), 30.0).decode.pods_reporting == 2.0
    early.gone_s = 40.0
    prom.scrape(45.0)
    assert source.observe(_spec(False), 45.0).decode.pods_reporting == 1.0  # gone: stale


def test_gauge_lookback_and_average():
    pods = [FakePod("d0", Pool.DECODE), FakePod("d1", Pool.DECODE)]
    pods[0].counters.kv_cache_usage_perc = 0.2
    pods[1].counters.kv_cache_usage_perc = 0.6
    prom = SimPrometheus(FakeEngine(pods))
    prom.scrape(0.0)
    assert prom.gauge(KV_USAGE, 0.0, pool=Pool.DECODE, agg="avg") == pytest.approx(0.4)
    assert prom.gauge(KV_USAGE, 299.0, pool=Pool.DECODE) == pytest.approx(0.8)
    assert prom.gauge(KV_USAGE, 300.0, pool=Pool.DECODE) is None  # beyond the 5 min lookback
    assert prom.gauge(KV_USAGE, -1.0, pool=Pool.DECODE) is None  # nothing scraped yet


def test_retention_bounds_memory_and_keeps_recent_rates():
    pod = FakePod("d0", Pool.DECODE)
    prom = SimPrometheus(FakeEngine([pod]), retention_s=600.0)
    for k in range(2000):
        pod.counters.request_success_total = 2 * 15 * k
        prom.scrape(15.0 * k)
    target = prom._targets["d0"]
    assert target.hi - target.lo <= 128
    assert prom.rate(REQUEST_SUCCESS, 60, 15.0 * 1999, pool=Pool.DECODE) == pytest.approx(2.0)


def test_gone_pod_series_dropped_after_retention_but_rate_kept_meanwhile():
    gone, kept = FakePod("d0", Pool.DECODE, gone_s=100.0), FakePod("d1", Pool.DECODE)
    prom = SimPrometheus(FakeEngine([gone, kept]), retention_s=600.0)
    for k in range(60):
        for pod in (gone, kept):
            pod.counters.request_success_total = 15 * k
        prom.scrape(15.0 * k)
        if k == 8:  # 120 s: the gone pod's samples up to 90 s still count in a 60 s window ending at 120 s
            assert set(prom.rate_by_target(REQUEST_SUCCESS, 60, 120.0)) == {"d0", "d1"}
    assert set(prom._targets) == {"proxy", "d1"}


def test_scrape_rejects_going_back():
    prom = SimPrometheus(FakeEngine([]))
    prom.scrape(30.0)
    with pytest.raises(ValueError, match="before the previous scrape"):
        prom.scrape(15.0)


def _spec(proxy: bool) -> AutoscalerSpec:
    return AutoscalerSpec(
        ttft=SLO(0.99, 1.0), itl=SLO(0.5, 0.05), metrics=MetricsSpec(window_s=60.0, proxy=proxy)
    )


@pytest.mark.parametrize(
    ("proxy", "ttft", "ttft_mean"),
    [
        (True, 0.25 + 0.25 * 0.99, 0.3),  # proxy: 0.3 s lies in the (0.25, 0.5] bucket
        # workers: prefill (0.1, 0.25] plus decode (0.04, 0.06] percentiles, as autoscaler.prometheus adds them
        (False, (0.1 + 0.15 * 0.99) + (0.04 + 0.02 * 0.99), 0.2 + 0.05),
    ],
    ids=["proxy-histograms", "worker-histograms"],
)
def test_metrics_source_reads_percentiles_and_load(proxy, ttft, ttft_mean):
    pre, dec = FakePod("p0", Pool.PREFILL), FakePod("d0", Pool.DECODE)
    engine = FakeEngine([pre, dec])
    prom = SimPrometheus(engine)
    source = SimMetricsSource(prom, mode="disagg")
    empty = source.observe(_spec(proxy), 0.0)
    assert empty.ttft_s is None and empty.itl_s is None and empty.request_rate_per_s is None
    prom.scrape(0.0)
    for k in range(1, 5):
        engine.proxy.ttft.observe(0.3, 15)
        engine.proxy.itl.observe(0.02, 150)  # 0.01 < 0.02 <= 0.025
        pre.counters.ttft.observe(0.2, 15)
        dec.counters.ttft.observe(0.05, 15)
        dec.counters.itl.observe(0.02, 150)
        pre.counters.request_success_total += 15
        dec.counters.request_success_total += 15
        pre.counters.prompt_tokens_total += 15 * 1000
        dec.counters.generation_tokens_total += 15 * 100
        dec.counters.num_requests_running = 7
        dec.counters.num_requests_waiting, dec.counters.num_requests_waiting_deferred = 5, 3  # 3 await their KV
        prom.scrape(15.0 * k)
    sig = source.observe(_spec(proxy), 60.0)
    assert sig.ttft_s == pytest.approx(ttft)
    assert sig.itl_s == pytest.approx(0.01 + 0.015 * 0.5)
    assert sig.ttft_mean_s == pytest.approx(ttft_mean)
    assert sig.itl_mean_s == pytest.approx(0.02)
    assert sig.request_rate_per_s == pytest.approx(1.0)
    assert sig.mean_prompt_tokens == pytest.approx(1000)
    assert sig.output_tokens_per_s == pytest.approx(100)
    assert sig.decode.running_requests == 7
    assert sig.decode.waiting_requests == 2, "requests whose KV is still coming from prefill are no backlog"
    assert sig.prefill.request_rate_per_s == pytest.approx(1.0)
    assert sig.decode.request_rate_per_s == pytest.approx(1.0)
    # gauges older than the rate window are not served (autoscaler.prometheus filters on timestamp())
    assert source.observe(_spec(proxy), 120.0).decode.running_requests is None


def test_proxy_counts_requests_as_they_arrive_not_as_they_are_served():
    """The proxy's arrival counters are read from the arrival schedule at each scrape, so while nothing is served
    (a queue builds) the arrival rate still shows the demand and the arriving prompt mean, as the live proxy's
    ``pdscale_proxy_arrived_*_total`` do; a closed loop (no schedule given) has no such series: None."""
    dec = FakePod("d0", Pool.DECODE)
    arrival_s = np.arange(0.0, 120.0, 0.5)  # 2 req/s
    prompts = np.where(arrival_s < 60.0, 1000, 4000)  # the prompts grow 4x at t = 60 s
    prom = SimPrometheus(FakeEngine([dec]), arrivals=(arrival_s, prompts))
    for k in range(9):
        prom.scrape(15.0 * k)
    sig = SimMetricsSource(prom, mode="agg").observe(_spec(True), 120.0)
    assert sig.request_rate_per_s == 0.0, "nothing served: no first tokens at the proxy"
    assert sig.arrived_request_rate_per_s == pytest.approx(2.0, rel=0.01)  # 119 arrivals in (60, 120]
    assert sig.arrived_prompt_tokens_per_s == pytest.approx(2.0 * 4000, rel=0.01), "the new prompts, at once"
    assert SimMetricsSource(prom, mode="agg").observe(_spec(False), 120.0).arrived_request_rate_per_s is None
    blind = SimPrometheus(FakeEngine([dec]))
    for k in range(9):
        blind.scrape(15.0 * k)
    assert SimMetricsSource(blind, mode="agg").observe(_spec(True), 120.0).arrived_request_rate_per_s is None
    with pytest.raises(ValueError, match="sorted"):
        SimPrometheus(FakeEngine([]), arrivals=(np.array([2.0, 1.0]), np.array([1, 1])))


def test_worker_ttft_missing_when_one_pool_has_no_observations():
    pre, dec = FakePod("p0", Pool.PREFILL), FakePod("d0", Pool.DECODE)
    prom = SimPrometheus(FakeEngine([pre, dec]))
    for k in range(5):
        pre.counters.ttft.observe(0.2, 5)
        pre.counters.request_success_total += 5
        prom.scrape(15.0 * k)
    assert SimMetricsSource(prom, mode="disagg").observe(_spec(False), 60.0).ttft_s is None


def test_metrics_source_no_requests_in_window_gives_none():
    dec = FakePod("d0", Pool.DECODE)
    engine = FakeEngine([dec])
    prom = SimPrometheus(engine)
    dec.counters.itl.observe(0.02, 10)
    for k in range(10):
        prom.scrape(15.0 * k)
    sig = SimMetricsSource(prom, mode="agg").observe(_spec(False), 135.0)
    assert sig.itl_s is None  # bucket rates are all zero: no quantile, not 0
    assert sig.itl_mean_s is None
    assert sig.request_rate_per_s == 0.0  # a rate of zero is a real observation


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[Pool, int, float]] = []

    def replicas(self, pool):
        return PoolReplicas(desired=2, ready=1)

    def set_desired(self, pool, replicas, now_s):
        self.calls.append((pool, replicas, now_s))


def test_scale_target_uses_the_simulated_clock():
    engine, clock = RecordingEngine(), SimClock()
    target = SimScaleTarget(engine, clock, mode="disagg")
    clock.set(45.0)
    target.scale(PoolDecision(Pool.DECODE, 2, 4, "Static", ""))
    assert engine.calls == [(Pool.DECODE, 4, 45.0)]
    assert target.read_replicas()[Pool.PREFILL] == PoolReplicas(2, 1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(30.0)
    agg = SimScaleTarget(engine, clock, mode="agg")
    with pytest.raises(ValueError, match="no prefill pool"):
        agg.scale(PoolDecision(Pool.PREFILL, 0, 1, "Static", ""))


def test_itl_buckets_are_vllm_edges():
    prom = SimPrometheus(FakeEngine([FakePod("d0", Pool.DECODE)]))
    prom.scrape(0.0)
    prom.scrape(15.0)
    summed = prom.bucket_rates(ITL, 60, 15.0, pool=Pool.DECODE)
    assert summed is not None and summed[0] == (*ITL_BUCKETS_S, math.inf)


def _promtool_rates(cases: list[tuple[str, list[int], list[float], int, int]]) -> dict[str, float]:
    """Evaluate ``rate(s[window])`` with the real Prometheus engine (``promtool test rules``), one case per group.

    Every expected value is written as 0; promtool then reports what it got for each case."""
    import re
    import shutil
    import subprocess
    import tempfile

    import yaml

    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool not found: it ships with Debian's prometheus package (run scripts/ensure-prometheus.sh)"
    )
    tests = []
    for name, times, values, at, window in cases:
        parts, prev = [], -1
        for t, v in zip(times, values, strict=True):
            if t - prev > 1:
                parts.append(f"_x{t - prev - 1}")
            parts.append(repr(float(v)))
            prev = t
        tests.append(
            {
                "interval": "1s",
                "input_series": [{"series": f's{{case="{name}"}}', "values": " ".join(parts)}],
                "promql_expr_test": [
                    {
                        "expr": f"rate(s[{window}s])",
                        "eval_time": f"{at}s",
                        "exp_samples": [{"labels": f'{{case="{name}"}}', "value": 0}],
                    }
                ],
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rates.yml"
        path.write_text(yaml.safe_dump({"evaluation_interval": "1s", "tests": tests}))
        proc = subprocess.run(
            [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
    got = dict(re.findall(r'got: \{case="([^"]+)"\} (\S+)', proc.stdout + proc.stderr))
    return {k: float(v) for k, v in got.items()}


def test_rate_agrees_with_real_prometheus():
    """The installed Prometheus (Debian 2.42) is the oracle for ``prometheus_major=2``."""
    rng = np.random.default_rng(7)
    cases = [
        (c[0], [int(t) for t in c[1]], [float(v) for v in c[2]], int(c[4]), int(c[4] - c[3]))
        for c in RATE_CASES
        if c[5] and c[6] == 2 and c[7] != 0.0  # counters with a non-zero rate (promtool omits exact zeros)
    ]
    for i in range(25):  # jittered scrapes, resets, late starts, early ends
        times = np.cumsum(rng.integers(10, 20, size=int(rng.integers(2, 9)))) + int(rng.integers(0, 40))
        values = np.cumsum(rng.integers(0, 50, size=times.size)).astype(float) + float(rng.integers(0, 30))
        if i % 4 == 0 and times.size > 2:
            values[times.size // 2 :] -= values[times.size // 2 - 1]  # a counter reset
            values = np.maximum(values, 0.0)
        at = int(times[-1] + rng.integers(0, 30))
        window = int(rng.choice([30, 60, 120]))
        cases.append((f"rnd{i}", times.tolist(), values.tolist(), at, window))
    real = _promtool_rates(cases)
    compared = 0
    for name, times, values, at, window in cases:
        t = np.array(times, dtype=float)
        keep = (t >= at - window) & (t <= at)
        ours = extrapolated_rate(t[keep], np.array(values)[keep], at - window, at, prometheus_major=2)
        if ours is None or ours[0] == 0.0:
            assert name not in real, f"{name}: Prometheus has a rate, we have none"
            continue
        assert name in real, f"{name}: promtool gave no value"
        assert ours[0] == pytest.approx(real[name], rel=1e-12), name
        compared += 1
    assert compared >= 15


def test_prompt_length_buckets_come_from_the_prefill_pool_else_decode():
    """``vllm:request_prompt_tokens`` as the workers export it (1-2-5 edges): the source reads the prefill pool's
    bucket rates when that pool has series (P/D), the decode pool's otherwise (aggregated)."""
    from autoscaler.core.buckets import PROMPT_TOKENS_BUCKETS

    pre, dec = FakePod("p0", Pool.PREFILL), FakePod("d0", Pool.DECODE)
    engine = FakeEngine([pre, dec])
    prom = SimPrometheus(engine)
    for k in range(5):
        pre.counters.prompt_lengths.observe(3000.0, 12)  # (2000, 5000]
        pre.counters.prompt_lengths.observe(40000.0, 3)  # (20000, 50000]
        pre.counters.request_success_total += 15
        dec.counters.prompt_lengths.observe(700.0, 15)
        dec.counters.request_success_total += 15
        prom.scrape(15.0 * k)
    buckets = SimMetricsSource(prom, mode="disagg").observe(_spec(False), 60.0).prompt_length_buckets
    assert buckets is not None and [b for b, _ in buckets] == [*PROMPT_TOKENS_BUCKETS, math.inf]
    rates = dict(buckets)
    assert rates[2000.0] == 0.0 and rates[5000.0] == pytest.approx(0.8) and rates[math.inf] == pytest.approx(1.0)
    agg = SimMetricsSource(SimPrometheus(FakeEngine([dec])), mode="agg")
    for k in range(5):
        agg.prom.scrape(60.0 + 15.0 * k)
        dec.counters.prompt_lengths.observe(700.0, 15)
    rates = dict(agg.observe(_spec(False), 120.0).prompt_length_buckets or ())
    assert rates[500.0] == 0.0 and rates[1000.0] == pytest.approx(1.0) == rates[math.inf]

"""PrometheusMetricsSource against the real Prometheus scraping vLLM-format series with known distributions.

The exporter (tests/helpers/vllm_exporter.py) advances counters linearly in time, so each expected percentile is
known in closed form (core histogram_quantile over the distribution's bucket weights) and is also asked of
Prometheus directly with a hand-written query; the source's answer must equal Prometheus' own.
"""

from __future__ import annotations

import math
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from autoscaler.controller import TickResult
from autoscaler.core.buckets import ITL_BUCKETS_S, PROMPT_TOKENS_BUCKETS, TTFT_BUCKETS_S
from autoscaler.core.prompt_mix import prompt_mix_from_buckets
from autoscaler.core.spec import SLO, AutoscalerSpec, MetricsSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, PoolReplicas, Signals
from autoscaler.prometheus import PrometheusMetricsSource
from autoscaler.telemetry import ControllerTelemetry
from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, LatencyMix, Load, VllmExporter
from workers.local.prometheus import PrometheusServer

WINDOW_S = 5.0
W = "5s"
HOSTILE = 'a"} or vector(1) #'

PREFILL_TTFT = LatencyMix(((0.05, 0.5), (0.3, 0.45), (3.0, 0.05)))
DECODE_TTFT = LatencyMix(((0.03, 0.97), (0.2, 0.03)))
DECODE_ITL = LatencyMix(((0.02, 0.9), (0.06, 0.08), (0.12, 0.02)))
PROXY_TTFT = LatencyMix(((0.1, 0.6), (0.6, 0.38), (4.0, 0.02)))
PROXY_ITL = LatencyMix(((0.03, 0.95), (0.2, 0.05)))
# prompt lengths in tokens; the decode pods' differ, to tell which pool the source read
PREFILL_PROMPTS = LatencyMix(((300, 0.6), (3000, 0.35), (40000, 0.05)))
DECODE_PROMPTS = LatencyMix(((700, 1.0),))


def prefill_load(rate: float = 8.0) -> Load:
    return Load(rate, ttft=PREFILL_TTFT, prompt_tokens_per_request=500, output_tokens_per_request=1,
                waiting=4, running=2, kv_usage=0.4, prompt_lengths=PREFILL_PROMPTS)  # fmt: skip


def decode_load(rate: float = 8.0, running: float = 30) -> Load:
    return Load(rate, ttft=DECODE_TTFT, itl=DECODE_ITL, itl_samples_per_request=99, prompt_tokens_per_request=500,
                output_tokens_per_request=100, waiting=1, running=running, kv_usage=0.6,
                prompt_lengths=DECODE_PROMPTS)  # fmt: skip


def spec(model: str, **kw: Any) -> AutoscalerSpec:
    slo = {k: kw.pop(k) for k in ("ttft", "itl") if k in kw}
    return AutoscalerSpec(
        metrics=MetricsSpec(selector=(("model_name", model),), window_s=WINDOW_S, **kw), **slo
    )


@dataclass
class World:
    prom: PrometheusServer
    exporter: VllmExporter
    escaped: VllmExporter
    telemetry: ControllerTelemetry
    specs: dict[str, AutoscalerSpec]


SPECS = {
    "proxy": spec("pd-proxy"),
    "proxy-p90": spec("pd-proxy", ttft=SLO(0.9, 1.0), itl=SLO(0.5, 0.05)),
    "workers": spec("pd-workers"),
    "workers-2": spec("pd-workers", proxy=False),
    "agg": spec("agg"),
    "old-kv": spec("old-kv"),
    "idle": spec("idle"),
    "frozen": spec("frozen"),
    "gone": spec("gone"),
    "nothing": spec("no-such-model"),
    "hostile": spec(HOSTILE),
    "a": spec("a"),
    "dot": spec("llama-3.1"),
    "dotx": spec("llama-3x1"),
    "dynamo": spec("dyn", source="dynamo"),
    "llm-d": spec("llmd", source="llm-d"),
    "escaped": spec("escaped"),
    "kv-wait": spec("kv-wait"),
}


@pytest.fixture(scope="module")
def world(module_prometheus: Callable[..., PrometheusServer]) -> Iterator[World]:
    ex = VllmExporter()
    add = ex.add_pod
    add(ExportedPod("pp-p0", "prefill", "pd-proxy", prefill_load()))
    add(ExportedPod("pp-p1", "prefill", "pd-proxy", prefill_load(4.0)))
    add(ExportedPod("pp-d0", "decode", "pd-proxy", decode_load()))
    add(ExportedPod("pp-d1", "decode", "pd-proxy", decode_load(4.0, running=10)))
    ex.add_frontend(
        ExportedFrontend(
            "pp-proxy",
            "pd-proxy",
            Load(12.0, ttft=PROXY_TTFT, itl=PROXY_ITL, itl_samples_per_request=99, prompt_tokens_per_request=700),
            arrivals_metric="pdscale_proxy_arrived_requests",
            arrived_prompt_tokens_metric="pdscale_proxy_arrived_prompt_tokens",
        )
    )
    add(ExportedPod("pw-p0", "prefill", "pd-workers", prefill_load()))
    add(ExportedPod("pw-d0", "decode", "pd-workers", decode_load()))
    add(ExportedPod("agg-0", "decode", "agg", decode_load()))
    add(ExportedPod("old-0", "decode", "old-kv", decode_load(), kv_metric="vllm:gpu_cache_usage_perc"))
    add(ExportedPod("idle-p", "prefill", "idle", Load(0.0, waiting=0, running=0)))
    add(ExportedPod("idle-d", "decode", "idle", Load(0.0)))
    add(ExportedPod("frozen-d", "decode", "frozen", decode_load(), explicit_timestamps=True))
    add(ExportedPod("gone-d", "decode", "gone", decode_load()))
    add(ExportedPod("hostile-d", "decode", HOSTILE, decode_load(running=7)))
    add(ExportedPod("a-d", "decode", "a", decode_load(running=3)))
    add(ExportedPod("dot-d", "decode", "llama-3.1", decode_load(running=31)))
    add(ExportedPod("dotx-d", "decode", "llama-3x1", decode_load(running=13)))
    # decode pods of a P/D pair whose waiting requests are mostly waiting for their KV from prefill (NIXL): one
    # reports reasons (4 waiting, all deferred), one reports reasons (3 waiting, 1 deferred), one does not (2)
    add(ExportedPod("kvw-d0", "decode", "kv-wait", replace(decode_load(), waiting=4, waiting_deferred=4)))
    add(ExportedPod("kvw-d1", "decode", "kv-wait", replace(decode_load(), waiting=3, waiting_deferred=1)))
    add(ExportedPod("kvw-d2", "decode", "kv-wait", replace(decode_load(), waiting=2)))
    add(ExportedPod("dyn-p", "prefill", "dyn", prefill_load()))
    add(ExportedPod("dyn-d", "decode", "dyn", decode_load()))
    ex.add_frontend(ExportedFrontend("dyn-fe", "dyn", Load(9.0, ttft=PROXY_TTFT, itl=PROXY_ITL, itl_samples_per_request=99),
                                     ttft_metric="dynamo_frontend_time_to_first_token_seconds",
                                     itl_metric="dynamo_frontend_inter_token_latency_seconds",
                                     requests_metric="dynamo_frontend_requests", model_label="model"))  # fmt: skip
    add(ExportedPod("llmd-d", "decode", "llmd", decode_load()))
    ex.add_frontend(ExportedFrontend("llmd-gw", "llmd", Load(6.0, ttft=PROXY_TTFT, itl=PROXY_ITL, itl_samples_per_request=99),
                                     ttft_metric="inference_objective_request_ttft_seconds",
                                     itl_metric="inference_objective_request_tpot_seconds",
                                     requests_metric="inference_objective_request"))  # fmt: skip
    # a vLLM on a prometheus_client whose OpenMetrics output writes vllm_x for vllm:x (client_python #1177)
    escaped = VllmExporter(negotiate=True)
    escaped.add_pod(ExportedPod("esc-d", "decode", "escaped", decode_load(running=17)))
    telemetry = ControllerTelemetry(port=0, host="127.0.0.1")
    assert telemetry.server is not None
    ex.start()
    escaped.start()
    prom = module_prometheus(
        static_targets={
            "vllm": [ex.target],
            "escaped": [escaped.target],
            "pdscale": [f"127.0.0.1:{telemetry.server.port}"],
        }
    )
    try:
        prom.wait_for_scrapes("vllm", n=2, timeout_s=30)
        ex.freeze("frozen-d")
        ex.remove("gone-d")  # disappears: Prometheus marks its series stale at the next scrape
        prom.wait_for_scrapes("escaped", n=1, timeout_s=30)
        time.sleep(WINDOW_S + 1.5)  # the frozen pod's last sample is now older than the window
        yield World(prom, ex, escaped, telemetry, dict(SPECS))
    finally:
        telemetry.close()
        ex.stop()
        escaped.stop()


def refreshed(
    world: World, specs: dict[str, AutoscalerSpec] | None = None
) -> tuple[PrometheusMetricsSource, float]:
    source = PrometheusMetricsSource(world.prom.url, timeout_s=5.0)
    now = time.time() - 0.5  # a completed scrape interval; the same instant is used for the direct queries
    source.refresh(specs or world.specs, now)
    return source, now


def observe(source: PrometheusMetricsSource, key: str, now: float) -> Signals:
    sig = source.view(key).observe(SPECS[key], now)
    assert sig.error is None, sig.error
    return sig


def q(world: World, promql: str, at: float) -> float | None:
    value = world.prom.query_value(promql, at)
    return None if value is None or not math.isfinite(value) else value


def test_percentiles_equal_prometheus_own_answer(world: World) -> None:
    source, now = refreshed(world)
    assert source.last_error is None

    proxy = observe(source, "proxy", now)
    direct = q(world, f'histogram_quantile(0.99, sum by (le) (rate(pdscale_proxy_time_to_first_token_seconds_bucket{{model_name="pd-proxy"}}[{W}])))', now)  # fmt: skip
    assert proxy.ttft_s == pytest.approx(direct, rel=1e-9)
    assert proxy.ttft_s == pytest.approx(PROXY_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S), rel=1e-6)
    assert proxy.itl_s == pytest.approx(PROXY_ITL.bucketed_quantile(0.99, ITL_BUCKETS_S), rel=1e-6)
    assert proxy.ttft_mean_s == pytest.approx(PROXY_TTFT.mean_s, rel=1e-6)
    assert proxy.request_rate_per_s == pytest.approx(12.0, rel=0.02)

    p90 = observe(source, "proxy-p90", now)
    assert p90.ttft_s == pytest.approx(PROXY_TTFT.bucketed_quantile(0.9, TTFT_BUCKETS_S), rel=1e-6)
    assert p90.itl_s == pytest.approx(PROXY_ITL.bucketed_quantile(0.5, ITL_BUCKETS_S), rel=1e-6)

    # worker fallback: prefill TTFT (its whole request) + decode TTFT, pods summed per pool before the quantile
    workers = observe(source, "workers", now)
    pre = q(world, f'histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{model_name="pd-workers",role="prefill"}}[{W}])))', now)  # fmt: skip
    dec = q(world, f'histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{model_name="pd-workers",role="decode"}}[{W}])))', now)  # fmt: skip
    itl = q(world, f'histogram_quantile(0.99, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket{{model_name="pd-workers",role="decode"}}[{W}])))', now)  # fmt: skip
    assert pre is not None and dec is not None
    assert workers.ttft_s == pytest.approx(pre + dec, rel=1e-9)
    expected = PREFILL_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S) + DECODE_TTFT.bucketed_quantile(
        0.99, TTFT_BUCKETS_S
    )  # type: ignore[operator]
    assert workers.ttft_s == pytest.approx(expected, rel=1e-6)
    assert workers.itl_s == pytest.approx(itl, rel=1e-9)
    assert workers.itl_s == pytest.approx(DECODE_ITL.bucketed_quantile(0.99, ITL_BUCKETS_S), rel=1e-6)
    assert observe(source, "workers-2", now) == workers, "same selector, same signals"

    agg = observe(source, "agg", now)
    assert agg.ttft_s == pytest.approx(DECODE_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S), rel=1e-6)

    # two prefill pods at 8 and 4 req/s with the same mix: pooled quantile is the mix's
    pd = observe(source, "proxy", now)
    pooled = q(world, f'histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{model_name="pd-proxy",role="prefill"}}[{W}])))', now)  # fmt: skip
    assert pooled == pytest.approx(PREFILL_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S), rel=1e-6)
    assert pd.prefill.request_rate_per_s == pytest.approx(12.0, rel=0.02)


def test_pool_load_signals(world: World) -> None:
    source, now = refreshed(world)
    pd = observe(source, "proxy", now)
    assert (pd.prefill.waiting_requests, pd.prefill.running_requests) == (8.0, 4.0)
    assert (pd.decode.waiting_requests, pd.decode.running_requests) == (2.0, 40.0)
    assert pd.prefill.kv_usage_fraction == pytest.approx(
        0.4
    ) and pd.decode.kv_usage_fraction == pytest.approx(0.6)
    assert pd.prompt_tokens_per_s == pytest.approx(12 * 500, rel=0.02)
    assert pd.output_tokens_per_s == pytest.approx(12 * 100, rel=0.02)
    assert pd.decode.request_rate_per_s == pytest.approx(12.0, rel=0.02)
    # the proxy's arrival counters, read through the frontend rate query
    assert pd.arrived_request_rate_per_s == pytest.approx(12.0, rel=0.02)
    assert pd.arrived_prompt_tokens_per_s == pytest.approx(12 * 700, rel=0.02)
    assert observe(source, "workers-2", now).arrived_request_rate_per_s is None, "no proxy: no arrivals"
    old = observe(source, "old-kv", now)
    assert old.decode.kv_usage_fraction == pytest.approx(0.6), "pre-0.10 gpu_cache_usage_perc accepted"


def test_requests_waiting_for_their_kv_are_not_a_backlog(world: World) -> None:
    """vLLM counts a request whose KV is still coming from the prefill pod as waiting (reason "deferred"): only
    those waiting for capacity are queued; a pod without the by-reason series counts all its waiting requests."""
    source, now = refreshed(world)
    sig = observe(source, "kv-wait", now)
    assert q(world, 'sum(vllm:num_requests_waiting{model_name="kv-wait"})', now) == 9.0
    assert sig.decode.waiting_requests == 0.0 + 2.0 + 2.0


def test_prompt_length_buckets_per_pool(world: World) -> None:
    """The prompt-length histogram rides in the prompt-token query (label_join of the pool and ``le``): the
    prefill pool's buckets for P/D, the decode pool's when there is no prefill pool, none without series."""
    source, now = refreshed(world)
    pd = observe(source, "proxy", now).prompt_length_buckets
    assert pd is not None and [b for b, _ in pd] == [*PROMPT_TOKENS_BUCKETS, math.inf]
    expected = [12.0 * f for f in PREFILL_PROMPTS.cumulative_fractions(PROMPT_TOKENS_BUCKETS)]
    assert [r for _, r in pd] == pytest.approx(expected, rel=0.02, abs=1e-9), "prefill pool's, 8 + 4 req/s"
    mix = prompt_mix_from_buckets(pd, 0.99)
    assert mix is not None and 20000 < mix.tail_tokens <= 50000 and mix.scv > 3
    agg = observe(source, "agg", now).prompt_length_buckets
    assert agg is not None and dict(agg)[500.0] == 0.0 and dict(agg)[1000.0] == pytest.approx(8.0, rel=0.02)
    esc = observe(source, "escaped", now).prompt_length_buckets
    assert esc is not None and dict(esc)[math.inf] == pytest.approx(8.0, rel=0.02), "vllm_x spelling read too"
    idle = observe(source, "idle", now).prompt_length_buckets
    assert idle is not None and prompt_mix_from_buckets(idle, 0.99) is None, "no traffic: no mix"
    assert observe(source, "nothing", now).prompt_length_buckets is None


@pytest.mark.parametrize(
    "key",
    ["idle", "frozen", "gone", "nothing"],
    ids=["no-traffic-nan", "stale-older-than-window", "target-gone-stale-marker", "no-series-empty"],
)
def test_missing_is_none(world: World, key: str) -> None:
    source, now = refreshed(world)
    sig = observe(source, key, now)
    assert (sig.ttft_s, sig.itl_s, sig.ttft_mean_s, sig.itl_mean_s) == (None, None, None, None)
    if key == "idle":  # no requests: percentiles and means are NaN (missing), rates and gauges are a real 0
        assert sig.request_rate_per_s == 0.0 and sig.decode.waiting_requests == 0.0
        assert sig.prefill.running_requests == 0.0
    else:
        assert sig.request_rate_per_s is None and sig.decode.request_rate_per_s is None
        assert sig.decode.waiting_requests is None and sig.decode.kv_usage_fraction is None
    if key == "frozen":  # Prometheus itself still serves the old gauge through its 5-minute lookback
        assert q(world, 'vllm:num_requests_waiting{model_name="frozen"}', now) == 1.0


def test_hostile_and_regex_special_selector_values_match_only_themselves(world: World) -> None:
    source, now = refreshed(world)
    assert observe(source, "hostile", now).decode.running_requests == 7.0
    assert observe(source, "a", now).decode.running_requests == 3.0
    assert observe(source, "dot", now).decode.running_requests == 31.0, "'.' is not a wildcard"
    assert observe(source, "dotx", now).decode.running_requests == 13.0


def test_empty_selector_sums_everything(world: World) -> None:
    everything = {"all": AutoscalerSpec(metrics=MetricsSpec(window_s=WINDOW_S))}
    source, now = refreshed(world, everything)
    sig = source.view("all").observe(everything["all"], now)
    direct = q(world, 'sum(vllm:num_requests_running{role="decode"})', now)
    assert sig.error is None and direct is not None
    # the frozen pod (30 running, stale) is left out; the vllm_-named pod (17) is read
    assert sig.decode.running_requests == pytest.approx(direct - 30.0 + 17.0)
    assert sig.ttft_s is not None and sig.request_rate_per_s is not None


def test_dynamo_and_llm_d_profiles(world: World) -> None:
    source, now = refreshed(world)
    dyn = observe(source, "dynamo", now)
    assert dyn.ttft_s == pytest.approx(PROXY_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S), rel=1e-6)
    assert dyn.request_rate_per_s == pytest.approx(9.0, rel=0.02)
    assert dyn.decode.running_requests == 30.0
    llmd = observe(source, "llm-d", now)
    assert llmd.itl_s == pytest.approx(PROXY_ITL.bucketed_quantile(0.99, ITL_BUCKETS_S), rel=1e-6)
    assert llmd.request_rate_per_s == pytest.approx(6.0, rel=0.02)


def test_colon_escaped_series_are_read(world: World) -> None:
    source, now = refreshed(world)
    assert q(world, 'vllm_num_requests_running{model_name="escaped"}', now) == 17.0, "stored as vllm_*"
    esc = observe(source, "escaped", now)
    assert esc.decode.running_requests == 17.0
    assert esc.itl_s == pytest.approx(DECODE_ITL.bucketed_quantile(0.99, ITL_BUCKETS_S), rel=1e-6)


def test_query_count_is_constant(world: World) -> None:
    same_shape = {k: v for k, v in SPECS.items() if v.metrics.source == "vllm" and k != "proxy-p90"}
    s1, _ = refreshed(world, {"workers": SPECS["workers"]})
    s2, _ = refreshed(world, same_shape)
    assert s1.queries_last_refresh == s2.queries_last_refresh == 15
    s3, _ = refreshed(world, {"proxy": SPECS["proxy"]})
    assert s3.queries_last_refresh == 11, "proxy series everywhere: no worker latency queries"


def test_own_metrics_are_scraped(world: World) -> None:
    sig = Signals(time_s=1.0, ttft_s=0.5, itl_s=None, request_rate_per_s=3.0)
    obs = Observation(1.0, sig, PoolReplicas(2, 1), PoolReplicas(3, 3))
    dec = Decision(
        1.0,
        PoolDecision(Pool.PREFILL, 2, 4, "TTFTAboveTarget", "up"),
        PoolDecision(Pool.DECODE, 3, 3, "WithinTarget", "hold"),
    )
    world.telemetry.update("ns/x", TickResult(obs, dec, (Pool.PREFILL,)), None, SPECS["proxy"])
    world.prom.wait_for_scrapes("pdscale", n=1, timeout_s=15)
    at = time.time()
    assert q(world, 'pdscale_desired_replicas{autoscaler="ns/x",pool="prefill"}', at) == 4.0
    assert q(world, 'pdscale_decisions_total{autoscaler="ns/x",reason="TTFTAboveTarget"}', at) == 1.0
    assert q(world, 'pdscale_observed_latency_seconds{autoscaler="ns/x",signal="ttft"}', at) == 0.5
    assert world.prom.query('pdscale_observed_latency_seconds{autoscaler="ns/x",signal="itl"}', at) == []
    with urllib.request.urlopen(f"http://127.0.0.1:{world.telemetry.server.port}/readyz", timeout=5) as resp:  # type: ignore[union-attr]
        assert resp.status == 200


# ---------------------------------------------------------------------------------------------------------------
# failures


def test_killed_prometheus_gives_errors_and_recovers(prometheus: Callable[..., PrometheusServer]) -> None:
    with VllmExporter() as ex:
        ex.add_pod(ExportedPod("d", "decode", "m", decode_load(running=5)))
        prom = prometheus(static_targets={"vllm": [ex.target]})
        prom.wait_for_scrapes("vllm", n=2, timeout_s=30)
        specs = {"m": spec("m"), "other": spec("other")}
        source = PrometheusMetricsSource(prom.url, timeout_s=2.0)
        source.refresh(specs, time.time())
        assert source.view("m").observe(specs["m"], time.time()).decode.running_requests == 5.0

        prom.kill()
        source.refresh(specs, time.time())
        # only the queries already in flight when the first failure came back were sent
        assert 1 <= source.queries_last_refresh <= source.max_concurrency
        for key in specs:
            err = source.view(key).observe(specs[key], time.time()).error
            assert err == f"prometheus {prom.url}: connection refused"

        prom.start()
        prom.wait_for_scrapes("vllm", n=2, timeout_s=30)
        source.refresh(specs, time.time())
        back = source.view("m").observe(specs["m"], time.time())
        assert back.error is None and back.decode.running_requests == 5.0


def test_unresponsive_server_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        source = PrometheusMetricsSource(url, timeout_s=0.5)
        specs = {"m": spec("m")}
        started = time.monotonic()
        source.refresh(specs, time.time())
        elapsed = time.monotonic() - started
    assert (
        source.view("m").observe(specs["m"], time.time()).error == f"prometheus {url}: timed out after 0.5 s"
    )
    assert elapsed < 2.0, "one timeout per refresh, not one per query"


def test_bad_custom_query_is_reported_with_prometheus_message(world: World) -> None:
    bad = replace(
        SPECS["proxy"],
        metrics=MetricsSpec(source="custom", selector=(("model_name", "pd-proxy"),), custom_queries=(("ttft_s", "sum(rate(x{{selector}}[1m]"),)),
    )  # fmt: skip
    source, now = refreshed(world, {"bad": bad, "proxy": SPECS["proxy"]})
    err = source.view("bad").observe(bad, now).error
    assert err is not None and "HTTP 400: bad_data" in err and "custom_single" in err
    assert source.view("proxy").observe(SPECS["proxy"], now).error is None

"""The adapter's domain values: the series built from a tick or a status, the cache's lookup rules (unknown metric,
namespace without autoscalers, stale or unavailable series answer errors, never an old value), and the wire format
(Kubernetes quantities checked with the official client's parser, RFC 3339 times, Status, discovery)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity

from autoscaler.controller import TickResult
from autoscaler.core.spec import SLO, AutoscalerSpec, MetricsSpec
from autoscaler.core.types import (
    Decision,
    Observation,
    Pool,
    PoolDecision,
    PoolReplicas,
    PoolSignals,
    Signals,
)
from autoscaler.kube import AutoscalerObject
from metrics_adapter import wire
from metrics_adapter.provider import (
    CATALOG,
    DESIRED_REPLICAS,
    ITL,
    KV_USAGE,
    QUANTILES,
    REQUEST_RATE,
    TTFT,
    WAITING,
    AutoscalerSeries,
    ExternalMetricsCache,
    MetricUnavailableError,
    NamespaceNotServedError,
    Sample,
    Snapshot,
    UnknownMetricError,
    desired_entries,
    gaps,
    quantile_metric,
    signal_entries,
)
from metrics_adapter.refresh import ControllerFeed, LeaseState, desired_from_status
from metrics_adapter.selectors import parse_selector

NOW = 1_700_000_000.0
SPEC = AutoscalerSpec(ttft=SLO(0.95, 1.0), metrics=MetricsSpec(selector=(("model_name", "m"),), window_s=30.0))
PCT = {"ttft": {0.5: 0.2, 0.9: 0.5, 0.99: 0.9}, "itl": {0.5: 0.02, 0.9: 0.03, 0.99: 0.05}}
SIGNALS = Signals(
    time_s=NOW, ttft_s=0.75, itl_s=0.045, request_rate_per_s=12.5,
    prefill=PoolSignals(waiting_requests=4.0, running_requests=2.0, kv_usage_fraction=0.25),
    decode=PoolSignals(waiting_requests=0.0, running_requests=None, kv_usage_fraction=0.5),
)  # fmt: skip


def cache_with(*series: AutoscalerSeries, published: float = NOW, stale_after: float = 45.0) -> ExternalMetricsCache:
    cache = ExternalMetricsCache()
    cache.publish(Snapshot.build(series, published_at_s=published, stale_after_s=stale_after))
    return cache


def llama(name: str = "llama", namespace: str = "llm") -> AutoscalerSeries:
    entries = signal_entries(name, SPEC, SIGNALS, PCT, fresh_until_s=NOW + 45)
    entries += desired_entries(name, {Pool.PREFILL: 3, Pool.DECODE: 7}, timestamp_s=NOW, fresh_until_s=NOW + 45)
    return AutoscalerSeries(namespace, name, tuple(entries))


def values(cache: ExternalMetricsCache, metric: str, selector: str = "", ns: str = "llm",
           now: float = NOW + 1) -> list[tuple[dict[str, str], float]]:  # fmt: skip
    return sorted(((dict(s.labels), s.value) for s in cache.lookup(ns, metric, parse_selector(selector), now)),
                  key=lambda lv: sorted(lv[0].items()))  # fmt: skip


def test_catalog_names_are_what_users_write() -> None:
    assert {quantile_metric(s, q) for s in ("ttft", "itl") for q in QUANTILES} == {
        "pdscale_ttft_p50_seconds", "pdscale_ttft_p90_seconds", "pdscale_ttft_p99_seconds",
        "pdscale_itl_p50_seconds", "pdscale_itl_p90_seconds", "pdscale_itl_p99_seconds"}  # fmt: skip
    assert {m for m, info in CATALOG.items() if info.per_pool} == {
        DESIRED_REPLICAS, WAITING, KV_USAGE, "pdscale_running_requests"}  # fmt: skip
    for name in CATALOG:  # valid as a URL path segment and as a Prometheus metric name
        assert name.replace("_", "").isalnum() and name.startswith("pdscale_")


def test_series_of_one_autoscaler() -> None:
    cache = cache_with(llama(), llama("other"))
    assert values(cache, DESIRED_REPLICAS, "autoscaler=llama,pool=prefill") == [
        ({"autoscaler": "llama", "pool": "prefill"}, 3.0)]  # fmt: skip
    # no pool term: both pools (the HPA sums the items)
    assert [v for _, v in values(cache, DESIRED_REPLICAS, "autoscaler=llama")] == [7.0, 3.0]
    assert values(cache, TTFT, "autoscaler=llama") == [({"autoscaler": "llama", "quantile": "0.95"}, 0.75)]
    assert values(cache, ITL, "autoscaler=llama,quantile=0.99") == [({"autoscaler": "llama", "quantile": "0.99"},
                                                                      0.045)]  # fmt: skip
    assert values(cache, "pdscale_ttft_p90_seconds", "autoscaler=llama") == [({"autoscaler": "llama"}, 0.5)]
    assert values(cache, REQUEST_RATE, "autoscaler=llama") == [({"autoscaler": "llama"}, 12.5)]
    assert values(cache, KV_USAGE, "autoscaler=llama,pool=decode") == [({"autoscaler": "llama", "pool": "decode"},
                                                                         0.5)]  # fmt: skip
    assert values(cache, "pdscale_running_requests", "autoscaler=llama") == [
        ({"autoscaler": "llama", "pool": "prefill"}, 2.0)], "a missing value is left out, not zero"  # fmt: skip
    assert len(values(cache, WAITING)) == 4, "no selector: every autoscaler of the namespace"
    assert values(cache, WAITING, "autoscaler in (llama,nobody),pool!=prefill") == [
        ({"autoscaler": "llama", "pool": "decode"}, 0.0)]  # fmt: skip
    assert values(cache, WAITING, "autoscaler=nobody") == [], "a selector matching nothing: an empty list"
    samples = cache.lookup("llm", TTFT, parse_selector("autoscaler=llama"), NOW)
    assert samples[0].window_s == 30.0 and samples[0].timestamp_s == NOW
    assert cache.lookup("llm", WAITING, parse_selector("autoscaler=llama"), NOW)[0].window_s is None


def test_lookup_errors() -> None:
    cache = ExternalMetricsCache()
    with pytest.raises(MetricUnavailableError, match="first refresh"):
        cache.lookup("llm", TTFT, parse_selector(""), NOW)
    cache = cache_with(llama())
    with pytest.raises(UnknownMetricError, match="could not find the metric 'cpu'"):
        cache.lookup("llm", "cpu", parse_selector(""), NOW)
    with pytest.raises(NamespaceNotServedError, match="'prod': no DisaggregatedAutoscaler"):
        cache.lookup("prod", TTFT, parse_selector(""), NOW)
    with pytest.raises(MetricUnavailableError, match="last refreshed 46 s ago; the limit is 45 s"):
        cache.lookup("llm", TTFT, parse_selector(""), NOW + 46)


def test_stale_or_failed_series_are_never_served() -> None:
    old = AutoscalerSeries("llm", "old", tuple(desired_entries("old", {Pool.PREFILL: 2}, timestamp_s=NOW - 100,
                                                               fresh_until_s=NOW - 10)))  # fmt: skip
    failed = AutoscalerSeries("llm", "failed", tuple(
        signal_entries("failed", SPEC, Signals(time_s=NOW, error="prometheus down"), {}, fresh_until_s=NOW + 45)))
    cache = cache_with(llama(), old, failed)
    with pytest.raises(MetricUnavailableError, match=r"pdscale_desired_replicas \{autoscaler=old,pool=prefill\}: "
                                                     "last observed 101 s ago"):  # fmt: skip
        cache.lookup("llm", DESIRED_REPLICAS, parse_selector("autoscaler=old"), NOW + 1)
    with pytest.raises(MetricUnavailableError, match="prometheus down"):
        cache.lookup("llm", TTFT, parse_selector("autoscaler=failed"), NOW)
    with pytest.raises(MetricUnavailableError, match="prometheus down"):  # a partial sum would be a wrong number
        cache.lookup("llm", TTFT, parse_selector(""), NOW)
    assert values(cache, TTFT, "autoscaler=llama") != [], "the others still answer"
    # gaps carry the labels the series would have, so a selector that excludes them is not affected
    assert values(cache, TTFT, "quantile=0.95,autoscaler!=failed") == [({"autoscaler": "llama", "quantile": "0.95"},
                                                                         0.75)]  # fmt: skip


def test_custom_source_has_no_fixed_percentiles() -> None:
    custom = AutoscalerSpec(metrics=MetricsSpec(source="custom", custom_queries=(("ttft_s", "q{selector}"),)))
    entries = signal_entries("c", custom, SIGNALS, {}, fresh_until_s=NOW + 45)
    cache = cache_with(AutoscalerSeries("llm", "c", tuple(entries)))
    with pytest.raises(MetricUnavailableError, match="p90 is not available: a custom metric source has no histogram"):
        cache.lookup("llm", "pdscale_itl_p90_seconds", parse_selector("autoscaler=c"), NOW)
    assert values(cache, TTFT, "autoscaler=c") != []


def test_non_finite_values_are_left_out() -> None:
    sig = Signals(time_s=NOW, ttft_s=math.nan, itl_s=math.inf, request_rate_per_s=0.0)
    cache = cache_with(AutoscalerSeries("llm", "x", tuple(signal_entries("x", SPEC, sig, {}, fresh_until_s=NOW + 9))))
    assert values(cache, TTFT) == [] and values(cache, ITL) == []
    assert values(cache, REQUEST_RATE) == [({"autoscaler": "x"}, 0.0)], "zero is a value"


def _object(status: dict[str, Any] | None, generation: int = 2, spec: AutoscalerSpec | None = SPEC,
            error: str | None = None) -> AutoscalerObject:  # fmt: skip
    raw = {"metadata": {"namespace": "llm", "name": "llama", "generation": generation}, "status": status or {}}
    return AutoscalerObject("llm", "llama", "uid", generation, raw, spec, error)


GOOD_STATUS = {
    "observedGeneration": 2, "lastEvaluationTime": "2023-11-14T22:13:20Z",
    "prefill": {"desiredReplicas": 4}, "decode": {"desiredReplicas": 6},
    "conditions": [{"type": "AbleToScale", "status": "True", "reason": "Advisory"}],
}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "lease", "expected"),
    [
        (GOOD_STATUS, LeaseState(True), {"prefill": 4.0, "decode": 6.0}),
        (GOOD_STATUS, LeaseState(False, "controller Lease x/y has no holder"), "has no holder"),
        ({**GOOD_STATUS, "observedGeneration": 1}, LeaseState(True), "not evaluated generation 2"),
        ({k: v for k, v in GOOD_STATUS.items() if k != "lastEvaluationTime"}, LeaseState(True), "no decision"),
        ({**GOOD_STATUS, "decode": {}}, LeaseState(True), "status.decode.desiredReplicas is missing"),
        ({**GOOD_STATUS, "conditions": [{"type": "AbleToScale", "status": "False", "reason": "FailedGetScale",
                                         "message": "HTTP 500"}]}, LeaseState(True), "last tick failed: HTTP 500"),
    ],
    ids=["current", "controller-gone", "old-generation", "never-evaluated", "missing-pool", "failed-tick"],
)  # fmt: skip
def test_desired_replicas_from_status_only_while_current(status: dict[str, Any], lease: LeaseState,
                                                         expected: dict[str, float] | str) -> None:  # fmt: skip
    entries = desired_from_status(_object(status), lease, fresh_until_s=NOW + 45)
    cache = cache_with(AutoscalerSeries("llm", "llama", tuple(entries)))
    if isinstance(expected, str):
        with pytest.raises(MetricUnavailableError, match=expected):
            cache.lookup("llm", DESIRED_REPLICAS, parse_selector("autoscaler=llama"), NOW)
        return
    found = cache.lookup("llm", DESIRED_REPLICAS, parse_selector("autoscaler=llama"), NOW)
    assert {s.labels["pool"]: s.value for s in found} == expected
    assert all(s.timestamp_s == 1_700_000_000.0 for s in found), "timestamp: when the controller wrote it"


def _tick(ttft: float | None, desired: tuple[int, int], error: str | None = None) -> TickResult:
    sig = Signals(time_s=NOW, ttft_s=ttft, itl_s=0.03, error=error)
    return TickResult(
        Observation(NOW, sig, PoolReplicas(2, 2), PoolReplicas(3, 3)),
        Decision(NOW, PoolDecision(Pool.PREFILL, 2, desired[0], "TTFTAboveTarget", "m"),
                 PoolDecision(Pool.DECODE, 3, desired[1], "WithinTarget", "m")),
        (),
    )  # fmt: skip


def test_controller_feed_publishes_one_pass() -> None:
    cache = ExternalMetricsCache()
    seen: dict[str, Any] = {}
    feed = ControllerFeed(cache, percentiles=lambda key: PCT, stale_after_s=45, clock=lambda: NOW,
                          on_percentiles=seen.__setitem__)  # fmt: skip
    feed.record(_object(GOOD_STATUS), _tick(1.5, (5, 3)), None)
    broken = AutoscalerObject("llm", "broken", "u2", 1, {}, None, "spec.prefill.minReplicas: must be <= max")
    feed.record(broken, None, broken.error)
    failed = AutoscalerObject("other", "failed", "u3", 1, {}, SPEC)
    feed.record(failed, None, "HTTP 500 reading /scale")
    assert cache.snapshot is None, "nothing is visible before the pass ends"
    snapshot = feed.publish()
    assert snapshot.autoscalers == 3 and snapshot.namespaces == {"llm", "other"}
    assert values(cache, DESIRED_REPLICAS, "autoscaler=llama") == [
        ({"autoscaler": "llama", "pool": "decode"}, 3.0), ({"autoscaler": "llama", "pool": "prefill"}, 5.0)]
    assert values(cache, TTFT, "autoscaler=llama") == [({"autoscaler": "llama", "quantile": "0.95"}, 1.5)]
    assert values(cache, "pdscale_ttft_p99_seconds", "autoscaler=llama") == [({"autoscaler": "llama"}, 0.9)]
    assert seen == {"llm/llama": PCT}, "percentiles reach the telemetry hook"
    with pytest.raises(MetricUnavailableError, match=r"invalid spec: spec\.prefill\.minReplicas"):
        cache.lookup("llm", TTFT, parse_selector("autoscaler=broken"), NOW)
    with pytest.raises(MetricUnavailableError, match="tick failed: HTTP 500"):
        cache.lookup("other", DESIRED_REPLICAS, parse_selector(""), NOW)
    feed.publish()  # an empty pass: no autoscalers any more
    with pytest.raises(NamespaceNotServedError):
        cache.lookup("llm", TTFT, parse_selector(""), NOW)


def test_gaps_cover_every_label_set() -> None:
    found = gaps("a", SPEC, "why", [DESIRED_REPLICAS, TTFT, REQUEST_RATE])
    assert [dict(g.labels) for g in found] == [
        {"autoscaler": "a", "pool": "prefill"}, {"autoscaler": "a", "pool": "decode"},
        {"autoscaler": "a", "quantile": "0.95"}, {"autoscaler": "a"}]  # fmt: skip


# ---------------------------------------------------------------- wire


@pytest.mark.parametrize(
    ("value", "text"),
    [(3.0, "3"), (0.0, "0"), (0.35, "350m"), (1.5, "1500m"), (2000.0, "2000"), (0.0305, "30500u"),
     (0.0001, "100u"), (1e-9, "1n"), (12.5, "12500m"), (-0.25, "-250m"), (123456.789, "123456789m")],
)  # fmt: skip
def test_quantity_text(value: float, text: str) -> None:
    assert wire.quantity(value) == text


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_quantities_parse_back_with_the_kubernetes_client(value: float) -> None:
    text = wire.quantity(value)
    assert abs(parse_quantity(text) - Decimal(repr(value))) <= Decimal("0.5e-9") + abs(Decimal(value)) * Decimal("1e-15")
    with pytest.raises(ValueError):
        wire.quantity(math.nan)


def test_value_list_and_status_documents() -> None:
    doc = wire.value_list([Sample("pdscale_ttft_seconds", {"autoscaler": "a"}, 0.35, NOW, 60.0, NOW + 1),
                           Sample(DESIRED_REPLICAS, {"autoscaler": "a", "pool": "decode"}, 4.0, NOW, None, NOW)])
    assert doc["kind"] == "ExternalMetricValueList" and doc["apiVersion"] == "external.metrics.k8s.io/v1beta1"
    assert doc["items"][0] == {"metricName": "pdscale_ttft_seconds", "metricLabels": {"autoscaler": "a"},
                               "timestamp": "2023-11-14T22:13:20Z", "value": "350m", "window": 60}
    assert "window" not in doc["items"][1] and doc["items"][1]["value"] == "4"
    st_doc = wire.status(503, "stale")
    assert st_doc == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "stale",
                      "reason": "ServiceUnavailable", "code": 503}
    resources = wire.api_resource_list(CATALOG)["resources"]
    assert [r["name"] for r in resources] == list(CATALOG)
    assert all(r["namespaced"] and r["kind"] == "ExternalMetricValueList" and r["verbs"] == ["get"]
               for r in resources)  # fmt: skip
    group = wire.api_group()
    assert group["preferredVersion"] == {"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}
    assert wire.api_group_list()["groups"][0]["name"] == "external.metrics.k8s.io"


def test_openapi_documents_are_valid() -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator

    validate(wire.openapi_v2(), cls=OpenAPIV2SpecValidator)
    validate(wire.openapi_v3(), cls=OpenAPIV30SpecValidator)
    assert "apis/external.metrics.k8s.io/v1beta1" in wire.openapi_v3_index()["paths"]


def test_controller_telemetry_exports_the_fixed_percentiles() -> None:
    from autoscaler.telemetry import ControllerTelemetry

    telemetry = ControllerTelemetry()
    feed = ControllerFeed(ExternalMetricsCache(), percentiles=lambda key: PCT, clock=lambda: NOW,
                          on_percentiles=telemetry.observe_quantiles)  # fmt: skip
    feed.record(_object(GOOD_STATUS), _tick(1.5, (5, 3)), None)
    text = telemetry.exposition().decode()
    assert 'pdscale_observed_latency_quantile_seconds{autoscaler="llm/llama",quantile="0.9",signal="ttft"} 0.5' in text
    telemetry.observe_quantiles("llm/llama", {"itl": {0.99: None}})  # missing: the series goes, no zero
    assert 'quantile="0.99",signal="itl"' not in telemetry.exposition().decode()
    telemetry.forget("llm/llama")
    assert "llm/llama" not in telemetry.exposition().decode()

"""PromQL text, escaping, grouping and result splitting of autoscaler/prometheus.py, with canned API answers.

The integration test (tests/integration/test_prometheus_source.py) runs the same code against the real server.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.spec import SLO, AutoscalerSpec, MetricsSpec
from autoscaler.prometheus import (
    BUILTIN_PROFILES,
    FE_ITL_Q,
    FE_REQUESTS,
    FE_TTFT_MEAN,
    FE_TTFT_Q,
    W_ITL_Q,
    W_KV,
    W_OUTPUT,
    W_PROMPT,
    W_REQUESTS,
    W_RUNNING,
    W_TTFT_MEAN,
    W_TTFT_Q,
    W_WAITING,
    MetricProfile,
    PrometheusMetricsSource,
    build_query,
    label_matcher,
    parse_value,
    plan_queries,
    profiles_from_mapping,
    promql_duration,
    promql_string,
    query_keys,
    re2_escape,
    split_result,
    validate_label_name,
)

HOSTILE = 'a"} or vector(1) #'
URL = "http://prom.test:9090"


def spec_for(model: str, **metrics: Any) -> AutoscalerSpec:
    return AutoscalerSpec(metrics=MetricsSpec(selector=(("model_name", model),), **metrics))


# ---------------------------------------------------------------------------------------------------------------
# escaping


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("llama", '"llama"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\nlines", '"two\\nlines"'),
        (HOSTILE, '"a\\"} or vector(1) #"'),
        ("", '""'),
    ],
    ids=["plain", "quotes", "backslash", "newline", "hostile-injection", "empty"],
)
def test_promql_string(value: str, literal: str) -> None:
    assert promql_string(value) == literal


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("llama-3.1", "llama-3\\.1"),
        ("a|b", "a\\|b"),
        ("(x)*+?[]{}^$", "\\(x\\)\\*\\+\\?\\[\\]\\{\\}\\^\\$"),
        ("back\\slash", "back\\\\slash"),
        ("plain_name", "plain_name"),
    ],
    ids=["dot", "alternation", "all-specials", "backslash", "plain"],
)
def test_re2_escape(value: str, escaped: str) -> None:
    assert re2_escape(value) == escaped


@pytest.mark.parametrize(
    ("values", "matcher"),
    [
        (["m"], 'model_name="m"'),
        (["b", "a", "b"], 'model_name=~"a|b"'),
        ([HOSTILE], 'model_name="a\\"} or vector(1) #"'),
        (["x.y", HOSTILE], 'model_name=~"a\\"\\\\} or vector\\\\(1\\\\) #|x\\\\.y"'),
    ],
    ids=["one-value-equality", "several-sorted-deduplicated", "hostile-equality", "hostile-regex"],
)
def test_label_matcher(values: list[str], matcher: str) -> None:
    assert label_matcher("model_name", values) == matcher


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "a-b", "a.b", "__name__", "__reserved", 'x"}', "a b", "ünï"],
    ids=[
        "empty",
        "leading-digit",
        "dash",
        "dot",
        "metric-name-label",
        "reserved",
        "injection",
        "space",
        "unicode",
    ],
)
def test_invalid_label_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid label name"):
        validate_label_name(name, "spec.metrics.selector[0]")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "60s"), (5.0, "5s"), (7.5, "7500ms"), (0.25, "250ms")],
    ids=["minute", "whole", "half", "sub-second"],
)
def test_promql_duration(seconds: float, text: str) -> None:
    assert promql_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf], ids=["zero", "negative", "nan", "inf"])
def test_promql_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="window"):
        promql_duration(seconds)


def _unquote_promql(literal: str) -> str:
    """PromQL double-quoted strings use Go's escapes; for the escapes promql_string emits JSON's are the same."""
    value = json.loads(literal, strict=False)
    assert isinstance(value, str)
    return value


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_promql_string_round_trips(value: str) -> None:
    literal = promql_string(value)
    assert literal.startswith('"') and literal.endswith('"')
    # no unescaped quote can end the literal early
    assert re.search(r'(?<!\\)(\\\\)*"', literal[1:-1]) is None
    assert _unquote_promql(literal) == value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=6), st.text(max_size=12))
def test_regex_alternation_matches_exactly_the_values(values: list[str], probe: str) -> None:
    """What Prometheus does with ``label=~"..."``: anchored match of the unquoted pattern (RE2; Python's re
    agrees on escaped literals)."""
    pattern = "|".join(re2_escape(v) for v in values)
    assert (re.fullmatch(f"(?:{pattern})", probe, flags=re.DOTALL) is not None) == (probe in values)


# ---------------------------------------------------------------------------------------------------------------
# query text per profile

VLLM_TTFT_Q = (
    "histogram_quantile(0.99, sum by (le, model_name, role) (rate({"
    '__name__=~"vllm:time_to_first_token_seconds_bucket|vllm_time_to_first_token_seconds_bucket",'
    'model_name=~"a|b",role=~"decode|prefill"}[60s])))'
)
PROXY_TTFT_Q = (
    "histogram_quantile(0.95, sum by (le, model_name) "
    '(rate(pdscale_proxy_time_to_first_token_seconds_bucket{model_name="a"}[30s])))'
)
DYNAMO_ITL_Q = (
    "histogram_quantile(0.9, sum by (le, model) "
    '(rate(dynamo_frontend_inter_token_latency_seconds_bucket{model="a"}[60s])))'
)
LLMD_REQUESTS = (  # all requests, and beside them the failed ones (llm-d counts them in a second counter)
    'sum by (model_name) (rate(inference_objective_request_total{model_name="a"}[60s])) or label_replace('
    'sum by (model_name) (rate(inference_objective_request_error_total{model_name="a"}[60s])), "pdscale_part", '
    '"failed", "", "")'
)
_BY_REASON = (
    '{__name__=~"vllm:num_requests_waiting_by_reason|vllm_num_requests_waiting_by_reason",model_name="a",'
    'role=~"decode|prefill",reason="capacity"}'
)
_WAITING = '{__name__=~"vllm:num_requests_waiting|vllm_num_requests_waiting",model_name="a",role=~"decode|prefill"}'
VLLM_WAITING = (  # per series: waiting for capacity where the pod reports reasons, else all of its waiting
    f"sum by (model_name, role) (max without (reason) ({_BY_REASON} and (time() - timestamp({_BY_REASON})) < 60) "
    f"or {_WAITING} and (time() - timestamp({_WAITING})) < 60)"
)


@pytest.mark.parametrize(
    ("source", "role", "spec_kw", "values", "expected"),
    [
        ("vllm", W_TTFT_Q, {}, {"model_name": ["b", "a"]}, VLLM_TTFT_Q),
        ("vllm", FE_TTFT_Q, {"ttft": SLO(0.95, 1.0), "window_s": 30}, {"model_name": ["a"]}, PROXY_TTFT_Q),
        ("dynamo", FE_ITL_Q, {"itl": SLO(0.9, 0.05)}, {"model_name": ["a"]}, DYNAMO_ITL_Q),
        ("llm-d", FE_REQUESTS, {}, {"model_name": ["a"]}, LLMD_REQUESTS),
        ("vllm", W_WAITING, {}, {"model_name": ["a"]}, VLLM_WAITING),
    ],
    ids=["vllm-worker-ttft-p99-two-models", "vllm-proxy-ttft-p95", "dynamo-frontend-itl-model-label",
         "llm-d-gateway-requests", "vllm-waiting-with-freshness"],
)  # fmt: skip
def test_query_text(
    source: str, role: str, spec_kw: dict[str, Any], values: dict[str, list[str]], expected: str
) -> None:
    slo_kw = {k: spec_kw.pop(k) for k in ("ttft", "itl") if k in spec_kw}
    spec = AutoscalerSpec(
        metrics=MetricsSpec(source=source, selector=(("model_name", "a"),), **spec_kw), **slo_kw
    )
    key = query_keys(spec, BUILTIN_PROFILES)[role]
    assert build_query(key, BUILTIN_PROFILES[source], values) == expected


def test_kv_query_accepts_old_and_new_gauge_names() -> None:
    key = query_keys(spec_for("a"), BUILTIN_PROFILES)[W_KV]
    text = build_query(key, BUILTIN_PROFILES["vllm"], {"model_name": ["a"]})
    left, right = text.split(" or ")
    assert "vllm:kv_cache_usage_perc" in left and left.startswith("avg by (model_name, role)")
    assert "vllm:gpu_cache_usage_perc" in right and right.startswith("avg by (model_name, role)")


def test_profile_without_escaped_names_uses_plain_selector() -> None:
    profile = replace(BUILTIN_PROFILES["vllm"], accept_escaped_names=False)
    key = query_keys(spec_for("a"), {"vllm": profile})[W_REQUESTS]
    assert build_query(key, profile, {"model_name": ["a"]}) == (
        'sum by (model_name, role) (rate(vllm:request_success_total{model_name="a",role=~"decode|prefill"}[60s]))'
        ' or label_replace(sum by (model_name, role) (rate(vllm:request_success_total{model_name="a",'
        'role=~"decode|prefill",finished_reason="error"}[60s])), "role", "$1#failed", "role", "(.+)")'
    )


def test_custom_pool_label_and_values() -> None:
    profile = replace(
        BUILTIN_PROFILES["llm-d"], pool_label="llm_d_ai_role", prefill_value="p", decode_value="d"
    )
    key = query_keys(spec_for("a", source="llm-d"), {"llm-d": profile})[W_RUNNING]
    text = build_query(key, profile, {"model_name": ["a"]})
    assert 'llm_d_ai_role=~"d|p"' in text and "by (model_name, llm_d_ai_role)" in text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pool_label", "llm-d.ai/role", "pool_label"),
        ("ttft_histogram", 'x"}', "ttft_histogram"),
        ("decode_value", "prefill", "must differ"),
        ("kv_usage_gauges", (), "kv_usage_gauges"),
    ],
    ids=["pod-label-not-relabeled", "hostile-metric-name", "same-pool-values", "no-kv-gauge"],
)
def test_profile_validation(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricProfile(name="bad", **{field: value})


def test_profiles_from_mapping() -> None:
    profiles = profiles_from_mapping(
        {
            "llm-d": {"pool_label": "llm_d_ai_role"},
            "mine": {
                "base": "dynamo",
                "frontend_label_map": {"model_name": "served_model"},
                "decode_value": "gen",
            },
        }
    )
    assert profiles["llm-d"] == replace(BUILTIN_PROFILES["llm-d"], pool_label="llm_d_ai_role")
    mine = profiles["mine"]
    assert mine.frontend_ttft_histogram == "dynamo_frontend_time_to_first_token_seconds"
    assert mine.frontend_label("model_name") == "served_model" and mine.decode_value == "gen"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": {"pool_labl": "r"}}, r"metric profiles\.x\.pool_labl: unknown field"),
        ({"x": {"base": "nope"}}, r"metric profiles\.x\.base: unknown built-in profile 'nope'"),
        ({"x": {"pool_label": "llm-d.ai/role"}}, r"metric profiles\.x: .*pool_label"),
        ({"x": {"kv_usage_gauges": "vllm:kv"}}, r"metric profiles\.x\.kv_usage_gauges: expected a list"),
        ({"x": {"ttft_histogram": 3}}, r"metric profiles\.x\.ttft_histogram: expected a string"),
        ({"custom": {}}, "other than 'custom'"),
        (["vllm"], "expected a mapping"),
    ],
    ids=[
        "typo-field",
        "unknown-base",
        "invalid-label",
        "kv-not-list",
        "not-a-string",
        "reserved-name",
        "not-mapping",
    ],
)
def test_profiles_from_mapping_errors(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profiles_from_mapping(data)


def test_custom_templates_expand_placeholders() -> None:
    spec = AutoscalerSpec(
        metrics=MetricsSpec(
            source="custom",
            selector=(("model_name", HOSTILE), ("namespace", "prod")),
            window_s=30,
            custom_queries=(
                ("ttft_s", "histogram_quantile({ttft_percentile}, sum by (le, {by}) (rate(my_ttft_bucket{{selector}}[{window}])))"),
                ("decode_running_requests", 'sum(my_running{job="x",{selector}})'),
            ),
        )
    )  # fmt: skip
    keys = query_keys(spec, BUILTIN_PROFILES)
    values = {"model_name": [HOSTILE, "other"], "namespace": ["prod"]}
    grouped = build_query(keys["custom:ttft_s"], None, values)
    assert grouped == (
        "histogram_quantile(0.99, sum by (le, model_name, namespace) (rate(my_ttft_bucket{"
        'model_name=~"a\\"\\\\} or vector\\\\(1\\\\) #|other",namespace="prod"}[30s])))'
    )
    single = build_query(keys["custom:decode_running_requests"], None, values)
    assert single == 'sum(my_running{job="x",model_name="a\\"} or vector(1) #",namespace="prod"})'


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (MetricsSpec(source="nope"), "unknown metric source 'nope'"),
        (MetricsSpec(selector=(("bad-label", "x"),)), r"spec.metrics.selector\[0\]"),
        (MetricsSpec(selector=(("model_name", "a"), ("model_name", "b"))), "given twice"),
        (MetricsSpec(source="custom"), "needs at least one query"),
        (MetricsSpec(source="custom", custom_queries=(("ttft", "x"),)), "unknown signal"),
        (MetricsSpec(window_s=0), "window"),
    ],
    ids=["unknown-source", "bad-label-name", "conflicting-selector", "custom-without-queries",
         "custom-unknown-signal", "zero-window"],
)  # fmt: skip
def test_spec_errors_name_the_field(metrics: MetricsSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        query_keys(AutoscalerSpec(metrics=metrics), BUILTIN_PROFILES)


# ---------------------------------------------------------------------------------------------------------------
# grouping


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=300))
def test_query_count_does_not_depend_on_autoscaler_count(n: int) -> None:
    specs = {f"ns/a{i}": spec_for(f"model-{i}") for i in range(n)}
    plan = plan_queries(specs, BUILTIN_PROFILES)
    assert len(plan.values_by_key) == len(query_keys(spec_for("x"), BUILTIN_PROFILES)) == 15
    ttft_key = next(k for k in plan.values_by_key if k.kind == W_TTFT_Q)
    assert plan.values_by_key[ttft_key]["model_name"] == {f"model-{i}" for i in range(n)}


def test_groups_split_by_percentile_window_and_labels() -> None:
    base = {f"a{i}": spec_for(f"m{i}") for i in range(10)}
    p95 = {f"b{i}": replace(spec_for(f"n{i}"), ttft=SLO(0.95, 1.0)) for i in range(10)}
    ns = {
        f"c{i}": AutoscalerSpec(metrics=MetricsSpec(selector=(("namespace", f"ns{i}"),))) for i in range(10)
    }
    plan = plan_queries({**base, **p95, **ns}, BUILTIN_PROFILES)
    # p95 adds a worker and a proxy TTFT quantile; another label set doubles everything
    assert len(plan.values_by_key) == 15 + 2 + 15


# ---------------------------------------------------------------------------------------------------------------
# splitting canned answers


def vec(*series: tuple[Mapping[str, str], str]) -> dict[str, Any]:
    return {"resultType": "vector", "result": [{"metric": dict(m), "value": [1.0, v]} for m, v in series]}


@pytest.mark.parametrize(
    ("text", "value"),
    [("1.5", 1.5), ("NaN", None), ("+Inf", None), ("-Inf", None), ("0", 0.0), ("junk", None), (None, None)],
    ids=["number", "nan", "plus-inf", "minus-inf", "zero-is-a-value", "garbage", "absent"],
)
def test_parse_value(text: Any, value: float | None) -> None:
    assert parse_value(text) == value


def test_split_result_by_selector_and_pool() -> None:
    data = vec(
        ({"model_name": "a", "role": "prefill"}, "1"),
        ({"model_name": "a", "role": "decode"}, "NaN"),
        ({"model_name": "b", "role": "decode"}, "3"),
    )
    rows = split_result(data, ("model_name",), "role")
    assert rows == {("a",): {"prefill": 1.0, "decode": None}, ("b",): {"decode": 3.0}}


def test_split_result_rejects_duplicate_series() -> None:
    data = vec(({"model_name": "a", "x": "1"}, "1"), ({"model_name": "a", "x": "2"}, "2"))
    with pytest.raises(ValueError, match="several series"):
        split_result(data, ("model_name",), None)


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self._body = body
        self.text = json.dumps(body) if body is not None else "<html>bad gateway</html>"

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("not json")
        return self._body


def role_of(query: str) -> str:
    """Which built-in query a PromQL text is (by its shape and metric name)."""
    frontend = "pdscale_proxy_" in query
    if query.startswith("histogram_quantile"):
        ttft = "time_to_first_token" in query
        return (FE_TTFT_Q if ttft else FE_ITL_Q) if frontend else (W_TTFT_Q if ttft else W_ITL_Q)
    if "_sum" in query and "_count" in query:
        ttft = "time_to_first_token" in query
        return (
            (FE_TTFT_MEAN if ttft else "fe_itl_mean") if frontend else (W_TTFT_MEAN if ttft else "w_itl_mean")
        )
    for needle, role in (
        ("pdscale_proxy_requests_total", FE_REQUESTS),
        ("request_success_total", W_REQUESTS),
        ("prompt_tokens_total", W_PROMPT),
        ("generation_tokens_total", W_OUTPUT),
        ("num_requests_waiting", W_WAITING),
        ("num_requests_running", W_RUNNING),
        ("cache_usage_perc", W_KV),
    ):
        if needle in query:
            return role
    raise AssertionError(f"unknown query {query}")


class CannedSession:
    """Answers /api/v1/query by the query's role; records every call."""

    def __init__(self, answers: Callable[[str], FakeResponse]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def post(self, url: str, data: Mapping[str, str], timeout: float) -> FakeResponse:
        assert timeout > 0, "every request needs a timeout"
        with self.lock:
            self.calls.append({"url": url, **data, "timeout": timeout, "role": role_of(data["query"])})
        return self.answers(role_of(data["query"]))


def ok(data: dict[str, Any]) -> FakeResponse:
    return FakeResponse(200, {"status": "success", "data": data})


P = {"role": "prefill"}
D = {"role": "decode"}

# model a: P/D with proxy; model b: P/D without proxy (worker fallback); model c: aggregated (decode only)
CANNED: dict[str, dict[str, Any]] = {
    FE_TTFT_Q: vec(({"model_name": "a"}, "0.8")),
    FE_TTFT_MEAN: vec(({"model_name": "a"}, "0.3")),
    "fe_itl_quantile": vec(({"model_name": "a"}, "0.04")),
    "fe_itl_mean": vec(({"model_name": "a"}, "0.02")),
    FE_REQUESTS: vec(({"model_name": "a"}, "10")),
    W_TTFT_Q: vec(
        ({"model_name": "a", **P}, "0.7"), ({"model_name": "a", **D}, "0.05"),
        ({"model_name": "b", **P}, "0.5"), ({"model_name": "b", **D}, "0.25"),
        ({"model_name": "c", **D}, "0.9"),
    ),
    W_TTFT_MEAN: vec(({"model_name": "b", **P}, "0.2"), ({"model_name": "b", **D}, "0.1")),
    W_ITL_Q: vec(({"model_name": "a", **D}, "0.03"), ({"model_name": "b", **D}, "NaN"), ({"model_name": "c", **D}, "0.06")),
    "w_itl_mean": vec(({"model_name": "b", **D}, "0.01")),
    W_REQUESTS: vec(({"model_name": "a", **P}, "9"), ({"model_name": "a", **D}, "9.5"), ({"model_name": "b", **D}, "4")),
    W_PROMPT: vec(({"model_name": "a", **P}, "900"), ({"model_name": "a", **D}, "880"), ({"model_name": "c", **D}, "50")),
    W_OUTPUT: vec(({"model_name": "a", **P}, "9"), ({"model_name": "a", **D}, "1900")),
    W_WAITING: vec(({"model_name": "a", **P}, "3"), ({"model_name": "a", **D}, "0")),
    W_RUNNING: vec(({"model_name": "a", **D}, "+Inf")),
    W_KV: vec(({"model_name": "a", **D}, "0.7")),
}  # fmt: skip


def canned_source(
    specs: Mapping[str, AutoscalerSpec],
    answers: Callable[[str], FakeResponse] | None = None,
    max_concurrency: int = 1,
) -> tuple[PrometheusMetricsSource, CannedSession]:
    session = CannedSession(answers or (lambda role: ok(CANNED[role])))
    source = PrometheusMetricsSource(URL, timeout_s=2.5, session=session, max_concurrency=max_concurrency)  # type: ignore[arg-type]
    return source, session


SPECS = {"ns/a": spec_for("a"), "ns/b": spec_for("b"), "ns/c": spec_for("c"), "ns/d": spec_for("d")}


def test_refresh_splits_one_set_of_queries_over_autoscalers() -> None:
    source, session = canned_source(SPECS)
    source.refresh(SPECS, now_s=1000.0)
    assert source.queries_last_refresh == len(session.calls) == 15
    assert {c["time"] for c in session.calls} == {"1000.000"}, "one evaluation instant per refresh"
    worker_ttft = next(c["query"] for c in session.calls if c["role"] == W_TTFT_Q)
    assert 'model_name=~"b|c|d"' in worker_ttft, "worker latency only for autoscalers without proxy series"
    assert all(c["url"] == f"{URL}/api/v1/query" and c["timeout"] == 2.5 for c in session.calls)

    a = source.view("ns/a").observe(SPECS["ns/a"], 1001.0)
    assert (a.ttft_s, a.ttft_mean_s, a.itl_s, a.itl_mean_s) == (0.8, 0.3, 0.04, 0.02), "proxy preferred"
    assert a.request_rate_per_s == 10.0 and a.prompt_tokens_per_s == 900.0 and a.output_tokens_per_s == 1900.0
    assert a.prefill.waiting_requests == 3.0 and a.decode.waiting_requests == 0.0
    assert a.decode.running_requests is None, "+Inf is missing, not a number"
    assert a.decode.kv_usage_fraction == 0.7 and a.prefill.kv_usage_fraction is None
    assert a.prefill.request_rate_per_s == 9.0 and a.error is None and a.time_s == 1000.0

    b = source.view("ns/b").observe(SPECS["ns/b"], 1001.0)
    assert b.ttft_s == pytest.approx(0.75), "no proxy series: prefill + decode worker TTFT"
    assert b.ttft_mean_s == pytest.approx(0.3)
    assert b.itl_s is None and b.itl_mean_s == 0.01, "NaN percentile is missing"
    assert b.request_rate_per_s == 4.0

    c = source.view("ns/c").observe(SPECS["ns/c"], 1001.0)
    assert c.ttft_s == 0.9 and c.itl_s == 0.06, "aggregated: the decode pool's TTFT is the user's"
    assert c.prompt_tokens_per_s == 50.0, "no prefill pool: prompt tokens from decode"

    d = source.view("ns/d").observe(SPECS["ns/d"], 1001.0)
    assert d.error is None and d.ttft_s is None and d.decode.waiting_requests is None, (
        "no series: all missing"
    )


def test_worker_latency_skipped_when_every_autoscaler_has_a_proxy() -> None:
    specs = {"ns/a": spec_for("a")}
    source, session = canned_source(specs)
    source.refresh(specs, now_s=5.0)
    assert source.queries_last_refresh == len(session.calls) == 11
    assert not {W_TTFT_Q, W_ITL_Q, W_TTFT_MEAN, "w_itl_mean"} & {c["role"] for c in session.calls}
    assert source.view("ns/a").observe(specs["ns/a"], 5.0).ttft_s == 0.8


def test_concurrent_queries_give_the_same_signals() -> None:
    serial, _ = canned_source(SPECS)
    parallel, session = canned_source(SPECS, max_concurrency=4)
    serial.refresh(SPECS, now_s=9.0)
    parallel.refresh(SPECS, now_s=9.0)
    assert len(session.calls) == 15
    for key, spec in SPECS.items():
        assert parallel.view(key).observe(spec, 9.0) == serial.view(key).observe(spec, 9.0)


def test_proxy_disabled_uses_workers_and_skips_frontend_queries() -> None:
    specs = {"ns/a": spec_for("a", proxy=False)}
    source, session = canned_source(specs)
    source.refresh(specs, now_s=5.0)
    assert source.queries_last_refresh == len(session.calls) == 10
    a = source.view("ns/a").observe(specs["ns/a"], 5.0)
    assert a.ttft_s == pytest.approx(0.75) and a.itl_s == 0.03 and a.request_rate_per_s == 9.5


def test_worker_ttft_missing_when_one_pd_side_is_nan() -> None:
    specs = {"ns/a": spec_for("a", proxy=False)}
    answers = dict(CANNED)
    answers[W_TTFT_Q] = vec(({"model_name": "a", **P}, "NaN"), ({"model_name": "a", **D}, "0.05"))
    source, _ = canned_source(specs, lambda role: ok(answers[role]))
    source.refresh(specs, now_s=5.0)
    assert source.view("ns/a").observe(specs["ns/a"], 5.0).ttft_s is None


def test_prefill_load_without_prefill_ttft_is_missing_not_aggregated() -> None:
    """P/D pods whose prefill histograms are absent must not read as an aggregated (fast) deployment."""
    specs = {"ns/a": spec_for("a", proxy=False)}
    answers = dict(CANNED)
    answers[W_TTFT_Q] = vec(({"model_name": "a", **D}, "0.05"))
    source, _ = canned_source(specs, lambda role: ok(answers[role]))
    source.refresh(specs, now_s=5.0)
    assert source.view("ns/a").observe(specs["ns/a"], 5.0).ttft_s is None


def _raise(exc: Exception) -> Callable[[str], FakeResponse]:
    def answer(_role: str) -> FakeResponse:
        raise exc

    return answer


@pytest.mark.parametrize(
    ("answers", "message", "calls"),
    [
        (_raise(requests.exceptions.ConnectionError("... [Errno 111] Connection refused")),
         f"prometheus {URL}: connection refused", 1),
        (_raise(requests.exceptions.ReadTimeout("read timed out")), f"prometheus {URL}: timed out after 2.5 s", 1),
        (lambda _r: FakeResponse(503, {"status": "error", "errorType": "unavailable", "error": "shutting down"}),
         f"prometheus {URL}: HTTP 503: unavailable: shutting down", 1),
        (lambda _r: FakeResponse(502, None), f"prometheus {URL}: HTTP 502: <html>bad gateway</html>", 1),
        (lambda _r: FakeResponse(422, {"status": "error", "errorType": "execution", "error": "query timed out"}),
         f"prometheus {URL}: HTTP 422: execution: query timed out", 11),
    ],
    ids=["connection-refused", "timeout", "http-503", "bad-gateway-html", "query-error-not-fatal"],
)  # fmt: skip
def test_failures_set_error_on_every_affected_autoscaler(
    answers: Callable[[str], FakeResponse], message: str, calls: int
) -> None:
    source, session = canned_source(SPECS, answers)
    source.refresh(SPECS, now_s=7.0)
    assert len(session.calls) == calls, "unreachable server: the rest of the refresh is skipped"
    for key, spec in SPECS.items():
        sig = source.view(key).observe(spec, 7.0)
        assert sig.error is not None and sig.error.startswith(message), sig.error
        assert sig.ttft_s is None and sig.request_rate_per_s is None


def test_one_bad_spec_does_not_spoil_the_others() -> None:
    specs = {**SPECS, "ns/bad": AutoscalerSpec(metrics=MetricsSpec(selector=(("a-b", "x"),)))}
    source, session = canned_source(SPECS)  # the canned session knows the good specs' queries
    source.refresh(specs, now_s=1.0)
    assert source.view("ns/bad").observe(specs["ns/bad"], 1.0).error.startswith("spec.metrics.selector[0]")  # type: ignore[union-attr]
    assert source.view("ns/a").observe(specs["ns/a"], 1.0).ttft_s == 0.8
    assert len(session.calls) == 15


def test_custom_source_grouped_and_single() -> None:
    grouped_t = "max by ({by}) (my_ttft{{selector}})"
    single_t = "sum(my_running{{selector}})"

    def custom(model: str) -> AutoscalerSpec:
        return AutoscalerSpec(
            metrics=MetricsSpec(
                source="custom",
                selector=(("model_name", model),),
                custom_queries=(("ttft_s", grouped_t), ("decode_running_requests", single_t)),
            )
        )

    specs = {"x": custom("a"), "y": custom("b")}

    def answers(q: str) -> FakeResponse:
        if q.startswith("max by"):
            return ok(vec(({"model_name": "a"}, "0.4"), ({"model_name": "b"}, "NaN")))
        if '"a"' in q:
            return ok(vec(({}, "12")))
        return ok(vec(({"pod": "1"}, "1"), ({"pod": "2"}, "2")))  # b's query is not aggregated

    session = _QuerySession(answers)
    source = PrometheusMetricsSource(URL, session=session)  # type: ignore[arg-type]
    source.refresh(specs, now_s=3.0)
    assert source.queries_last_refresh == 3, "grouped template once, single template per selector"
    x = source.view("x").observe(specs["x"], 3.0)
    assert x.ttft_s == 0.4 and x.decode.running_requests == 12.0 and x.error is None
    y = source.view("y").observe(specs["y"], 3.0)
    assert y.error is not None and "several series" in y.error


class _QuerySession:
    def __init__(self, answers: Callable[[str], FakeResponse]) -> None:
        self.answers = answers

    def post(self, url: str, data: Mapping[str, str], timeout: float) -> FakeResponse:
        return self.answers(data["query"])


@pytest.mark.parametrize(
    ("refresh_at", "observe_at", "key", "message"),
    [
        (None, 10.0, "ns/a", "no refresh has run yet"),
        (0.0, 10.0, "ns/zzz", "'ns/zzz' was not in the last refresh"),
        (0.0, 500.0, "ns/a", "metrics last refreshed 500 s ago"),
    ],
    ids=["never-refreshed", "unknown-autoscaler", "refresh-too-old"],
)
def test_view_errors(refresh_at: float | None, observe_at: float, key: str, message: str) -> None:
    source, _ = canned_source(SPECS)
    if refresh_at is not None:
        source.refresh(SPECS, now_s=refresh_at)
    sig = source.view(key).observe(spec_for("a"), observe_at)
    assert sig.error is not None and message in sig.error


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"url": "prom:9090"}, "must start with http"), ({"url": URL, "timeout_s": 0}, "timeout_s"),
     ({"url": URL, "profiles": {"custom": BUILTIN_PROFILES["vllm"]}}, "reserved"),
     ({"url": URL, "max_concurrency": 0}, "max_concurrency")],
    ids=["no-scheme", "zero-timeout", "custom-profile-name", "zero-concurrency"],
)  # fmt: skip
def test_constructor_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrometheusMetricsSource(**kwargs)


def test_default_session_has_no_retries() -> None:
    source = PrometheusMetricsSource(URL)
    for prefix in ("http://", "https://"):
        assert source.session.get_adapter(prefix + "x").max_retries.total == 0


# ---------------------------------------------------------------------------------------------------------------
# `pdscale promql`

SPEC_YAML = """\
apiVersion: pdscale.io/v1alpha1
kind: DisaggregatedAutoscaler
metadata: {name: llama, namespace: prod}
spec:
  prefill: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: p}}
  decode: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: d}}
  metrics:
    selector: {matchLabels: {model_name: llama, namespace: prod}}
"""


@pytest.mark.parametrize(
    ("files", "extra", "rc", "stdout_has", "stderr_has"),
    [
        ({"a.yaml": SPEC_YAML}, [], 0, ['model_name="llama",namespace="prod"', "# fe_ttft_quantile"], []),
        ({"a.yaml": SPEC_YAML, "p.yaml": "vllm: {pool_label: llm_d_ai_role}\n"}, ["--metric-profiles", "p.yaml"],
         0, ['llm_d_ai_role=~"decode|prefill"'], []),
        ({"a.yaml": SPEC_YAML}, ["--prometheus-url", "http://127.0.0.1:1", "--timeout-s", "1"], 1,
         ['"error": "prometheus http://127.0.0.1:1: connection refused"'], []),
        ({"a.yaml": "spec: {metrics: {windowSeconds: -1}}\n"}, [], 2, [], ["a.yaml:1"]),
        ({"a.yaml": SPEC_YAML, "p.yaml": "vllm: {pool_labl: x}\n"}, ["--metric-profiles", "p.yaml"], 2, [],
         ["p.yaml.vllm.pool_labl: unknown field"]),
    ],
    ids=["print-queries", "profile-override", "unreachable-prometheus", "bad-spec-names-file-line", "bad-profile"],
)  # fmt: skip
def test_promql_command(
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    extra: list[str],
    rc: int,
    stdout_has: list[str],
    stderr_has: list[str],
) -> None:
    from autoscaler.cli import main

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    args = [a if not a.endswith(".yaml") else str(tmp_path / a) for a in extra]
    assert main(["promql", str(tmp_path / "a.yaml"), *args]) == rc
    out, err = capsys.readouterr()
    for needle in stdout_has:
        assert needle in out
    for needle in stderr_has:
        assert needle in err


def test_promql_reads_the_repos_multi_document_example(capsys: pytest.CaptureFixture[str]) -> None:
    """manifests/examples holds two autoscalers in one file: both are planned, named namespace/name."""
    import json
    from pathlib import Path

    from autoscaler.cli import main

    example = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "disaggregatedautoscaler.yaml"
    assert main(["promql", "--json", str(example)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == {}
    text = "\n".join(q["promql"] for q in out["queries"])
    assert "llama-3.1-8b-instruct" in text and "llama-3.3-70b-instruct" in text
    assert all(set(q) == {"kind", "promql", "onlyWithoutFrontend"} for q in out["queries"])


def test_promql_skips_other_kinds_and_reads_stdin(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import json

    from autoscaler.cli import main

    stream = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: p}\n---\n" + SPEC_YAML
    monkeypatch.setattr("sys.stdin", io.StringIO(stream))
    assert main(["promql", "--json", "-"]) == 0
    assert 'model_name="llama"' in json.loads(capsys.readouterr().out)["queries"][0]["promql"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: p}\n", "no DisaggregatedAutoscaler in 1"),
        ("kind: DisaggregatedAutoscaler\nmetadata: {name: a}\nspec: {}\n---\n"
         "kind: DisaggregatedAutoscaler\nmetadata: {name: a}\nspec: {}\n", "default/a appears twice"),
        ("kind: DisaggregatedAutoscaler\nmetadata: {name: a}\nspec: {}\n---\n"
         "kind: DisaggregatedAutoscaler\nmetadata: {name: b}\nspec:\n  prefill: {minReplicas: -1}\n", "a.yaml:8: spec.prefill.minReplicas"),
    ],
    ids=["no-autoscaler", "duplicate-name", "bad-second-document-names-its-line"],
)
def test_promql_multi_document_errors(tmp_path: Any, capsys: pytest.CaptureFixture[str], text: str,
                                      message: str) -> None:
    from autoscaler.cli import main

    (tmp_path / "a.yaml").write_text(text)
    assert main(["promql", str(tmp_path / "a.yaml")]) == 2
    assert message in capsys.readouterr().err


def test_failures_and_pods_reporting_ride_in_the_same_queries() -> None:
    """The frontend rate query also answers its failed part (``pdscale_part="failed"``), the worker rate query its
    ``finished_reason="error"`` part and the running gauge the pods reporting (pool ``prefill#pods``): no query
    is added (still 15), and every autoscaler gets its own numbers."""
    answers = dict(CANNED)
    answers[FE_REQUESTS] = vec(({"model_name": "a"}, "10"), ({"model_name": "a", "pdscale_part": "failed"}, "4"))
    answers[W_REQUESTS] = vec(
        ({"model_name": "a", **P}, "9"), ({"model_name": "a", **D}, "9.5"), ({"model_name": "b", **D}, "4"),
        ({"model_name": "b", "role": "decode#failed"}, "1"),
    )
    answers[W_RUNNING] = vec(
        ({"model_name": "a", **D}, "12"), ({"model_name": "a", "role": "decode#pods"}, "3"),
        ({"model_name": "a", "role": "prefill#pods"}, "2"), ({"model_name": "b", "role": "decode#pods"}, "1"),
    )
    source, session = canned_source(SPECS, answers=lambda role: ok(answers[role]))
    source.refresh(SPECS, now_s=7.0)
    assert source.queries_last_refresh == len(session.calls) == 15
    a = source.view("ns/a").observe(SPECS["ns/a"], 7.0)
    assert (a.request_rate_per_s, a.failed_request_rate_per_s) == (10.0, 4.0), "the proxy's count, failures in it"
    assert (a.prefill.pods_reporting, a.decode.pods_reporting, a.decode.running_requests) == (2.0, 3.0, 12.0)
    b = source.view("ns/b").observe(SPECS["ns/b"], 7.0)
    assert (b.request_rate_per_s, b.failed_request_rate_per_s) == (4.0, 1.0), "no proxy: decode workers' errors"
    assert (b.prefill.pods_reporting, b.decode.pods_reporting) == (0.0, 1.0), "no prefill pod reports: 0, not None"
    c = source.view("ns/c").observe(SPECS["ns/c"], 7.0)
    assert c.request_rate_per_s is None and c.failed_request_rate_per_s is None, "no rate: no failure ratio"
    assert a.arrived_request_rate_per_s is None and b.arrived_request_rate_per_s is None, "no arrival series: None"


def test_arrivals_ride_in_the_frontend_rate_query() -> None:
    """The proxy's arrival counters come back as further answers of the frontend rate query
    (``pdscale_part="arrived"`` / ``"arrived_prompt_tokens"``): no query is added, and each autoscaler gets its own."""
    answers = dict(CANNED)
    answers[FE_REQUESTS] = vec(
        ({"model_name": "a"}, "10"), ({"model_name": "a", "pdscale_part": "arrived"}, "14"),
        ({"model_name": "a", "pdscale_part": "arrived_prompt_tokens"}, "28000"),
    )  # fmt: skip
    source, session = canned_source(SPECS, answers=lambda role: ok(answers[role]))
    source.refresh(SPECS, now_s=7.0)
    assert source.queries_last_refresh == len(session.calls) == 15
    a = source.view("ns/a").observe(SPECS["ns/a"], 7.0)
    assert (a.request_rate_per_s, a.arrived_request_rate_per_s, a.arrived_prompt_tokens_per_s) == (10.0, 14.0, 28000.0)
    b = source.view("ns/b").observe(SPECS["ns/b"], 7.0)
    assert b.arrived_request_rate_per_s is None and b.arrived_prompt_tokens_per_s is None


@pytest.mark.parametrize("source", ["vllm", "dynamo", "llm-d"])
def test_every_builtin_profile_reads_failures(source: str) -> None:
    key = query_keys(spec_for("a", source=source), BUILTIN_PROFILES)[FE_REQUESTS]
    text = build_query(key, BUILTIN_PROFILES[source], {"model_name": ["a"]})
    total, failed, *arrivals = text.split(" or ")
    assert '"pdscale_part", "failed"' in failed and "pdscale_part" not in total
    # only the proxy counts requests as they arrive: its rate query also answers the arrivals
    assert [a.split("(rate(")[1].split("{")[0] for a in arrivals] == (
        ["pdscale_proxy_arrived_requests_total", "pdscale_proxy_arrived_prompt_tokens_total"] if source == "vllm" else []
    )
    assert {"vllm": 'outcome=~"5xx|no_upstream"', "dynamo": 'status="error"',
            "llm-d": "inference_objective_request_error_total"}[source] in failed


def test_prompt_length_buckets_ride_in_the_prompt_token_query() -> None:
    """The prompt-token rate query carries the prompt-length buckets per pool (pool label ``<pool>#le=<le>``):
    the prefill pool's are read for P/D, the decode pool's when there is no prefill pool; a NaN bucket or no +Inf
    bucket makes them missing, not half a histogram."""

    def le_rows(model: str, role: str, rates: list[tuple[str, str]]) -> list[tuple[dict[str, str], str]]:
        return [({"model_name": model, "role": f"{role}#le={le}", "le": le}, r) for le, r in rates]

    prompt = vec(
        ({"model_name": "a", **P}, "900"),
        *le_rows("a", "prefill", [("100.0", "1"), ("1000.0", "8"), ("+Inf", "9")]),
        *le_rows("a", "decode", [("100.0", "0"), ("+Inf", "9")]),
        *le_rows("c", "decode", [("500.0", "2"), ("+Inf", "3")]),
        *le_rows("b", "prefill", [("500.0", "NaN"), ("+Inf", "3")]),
    )
    source, session = canned_source(SPECS, lambda role: ok(prompt if role == W_PROMPT else CANNED[role]))
    source.refresh(SPECS, now_s=10.0)
    query = next(c["query"] for c in session.calls if c["role"] == W_PROMPT)
    assert 'label_join(sum by (le, model_name, role) (rate(' in query and 'request_prompt_tokens_bucket' in query
    assert '"role", "#le=", "role", "le")' in query
    a = source.view("ns/a").observe(SPECS["ns/a"], 10.0)
    assert a.prompt_length_buckets == ((100.0, 1.0), (1000.0, 8.0), (math.inf, 9.0)) and a.prompt_tokens_per_s == 900
    c = source.view("ns/c").observe(SPECS["ns/c"], 10.0)
    assert c.prompt_length_buckets == ((500.0, 2.0), (math.inf, 3.0)), "no prefill pool: decode's"
    assert source.view("ns/b").observe(SPECS["ns/b"], 10.0).prompt_length_buckets is None, "a NaN bucket"
    assert source.view("ns/d").observe(SPECS["ns/d"], 10.0).prompt_length_buckets is None, "no series"

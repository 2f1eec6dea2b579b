"""The live ``MetricsSource``: PromQL against Prometheus. Every PromQL string pdscale sends lives in this module.

One tick = one ``PrometheusMetricsSource.refresh(specs, now_s)``, then ``view(key).observe(spec, now_s)`` per
autoscaler reads what that refresh fetched. The number of queries per refresh does not grow with the number of
autoscalers: autoscalers whose specs need the same query shape (same signal, profile, percentile, window and
selector label names) share ONE query whose matchers are regex alternations of all their selector values and
whose ``sum by (...)`` keeps those labels plus the pool label; the result is then split per autoscaler. A
built-in profile costs at most 15 queries per group (10 pool/load/worker-latency + 5 frontend), in two rounds:
the frontend and pool-load queries first, then the worker latency histograms only for the autoscalers whose
frontend series are absent (11 queries when every deployment has a proxy). Queries run ``max_concurrency`` at a
time (default 4). Measured (bench/bench_tick_1000.py, 1,000 autoscalers, 3,000 pods, ~2x10^5 series, 16-core
host): 0.46 s per refresh with proxies, 1.08 s from worker histograms alone.

``extra_percentiles`` (the External Metrics API's p50/p90/p99, ``metrics_adapter``) adds TTFT and ITL quantile
queries of the same grouped shapes, in the same two rounds: one more query per quantile, histogram and group (none
when a quantile equals the SLO's), whatever the number of autoscalers; ``percentiles(key)`` reads them.

``pod_load(namespace, pool, pods)`` reads the running requests of a scale-down's candidate pods in ONE query
(``sum by (pod)`` over a literal alternation of their names, labels ``MetricProfile.pod_label`` /
``namespace_label``) for ``controller.kubernetes.io/pod-deletion-cost``: the least-busy pods are removed first.

Metric-source profiles (``spec.metrics.source``):

* ``vllm`` (default): vLLM V1 worker series (``vllm:*``, reference/vllm-metrics.md §2) plus, when
  ``spec.metrics.proxy`` is set and the series exist, the P/D proxy's user-visible histograms
  ``pdscale_proxy_time_to_first_token_seconds`` / ``pdscale_proxy_inter_token_latency_seconds`` (vLLM's bucket
  edges, labels ``model_name`` plus the selector's) and its request rate from ``pdscale_proxy_requests_total``
  (every outcome: failed and refused requests are load too; ``workers/proxy_metrics.py``). Without proxy series
  TTFT falls back to the workers:
  user TTFT ~ prefill-worker TTFT + decode-worker TTFT (vllm-metrics.md §6: the prefill worker's TTFT is its
  whole request because max_tokens=1; the decode worker's TTFT is queue + KV wait + tail prefill). Summing the
  two percentiles is an upper-leaning estimate of the percentile of the sum (exact when the delays move
  together), used because no series holds the user's TTFT. ITL comes from decode workers (prefill workers emit
  no ITL samples). Aggregated serving (no prefill series at all): the decode pool's TTFT is the user's TTFT.
* ``llm-d``: user-visible TTFT/TPOT from the gateway's ``inference_objective_request_ttft_seconds`` /
  ``inference_objective_request_tpot_seconds`` and request rate from ``inference_objective_request_total``;
  pool load from the vLLM pods, as above.
* ``dynamo``: ``dynamo_frontend_*`` histograms and request counter (label ``model`` where the selector says
  ``model_name``); pool load from the vLLM worker series.
* ``custom``: ``spec.metrics.custom_queries`` maps a signal name (see ``CUSTOM_SIGNALS``) to a PromQL template.
  Placeholders, replaced literally (not ``str.format``, PromQL has its own braces):
  ``{selector}`` -> the escaped matcher list WITHOUT braces, e.g. ``model_name="m",namespace="prod"`` (write
  ``my_metric{{selector}}``, or ``my_metric{job="x",{selector}}``); ``{window}`` -> the rate window
  (``60s``); ``{ttft_percentile}``/``{itl_percentile}`` -> the SLO quantiles. A template that also uses
  ``{by}`` (the selector's label names, for ``sum by ({by})``) is grouped like the built-in profiles: one query
  for all autoscalers sharing it. Without ``{by}`` a template runs once per distinct selector and must return at
  most one series.

The selector's labels must be on the frontend's series as well (e.g. ``namespace`` and ``model_name``); a
selector label only the workers carry makes the frontend look absent, and the worker fallback is used.

Pool label convention: pods carry their pool in a Prometheus label, by default ``role`` with values ``prefill``
and ``decode`` (the vocabulary of llm-d's ``llm-d.ai/role`` pod label). Get it onto the series with a
relabeling rule, e.g. from pod label ``pdscale.io/role`` or ``llm-d.ai/role``::

    - sourceLabels: [__meta_kubernetes_pod_label_llm_d_ai_role]
      targetLabel: role

Aggregated (colocated) pods are labelled ``decode``. The label name and values are fields of ``MetricProfile``;
pass ``profiles=`` to ``PrometheusMetricsSource`` to override them. The KV gauge accepts both
``vllm:kv_cache_usage_perc`` and the pre-0.10 ``vllm:gpu_cache_usage_perc`` (``avg(new) or avg(old)``, so a pod
exposing both during the deprecation window is not counted twice). The waiting requests are those waiting for
capacity (``vllm:num_requests_waiting_by_reason{reason="capacity"}``), per series, falling back on
``vllm:num_requests_waiting`` for a pod without the by-reason gauge: a decode pod counts a request whose KV is still
coming from the prefill pod (NIXL) as waiting, with reason ``deferred``, and that is no backlog. Names holding ``:`` are also matched in
their ``_`` spelling (``{__name__=~"vllm:x|vllm_x"}``): prometheus_client >= 0.22 answering Prometheus' OpenMetrics
Accept header with ``escaping=underscores`` writes ``vllm_x`` on sample lines (client_python issue #1177), so a
vLLM built on it is stored under the underscored names. ``MetricProfile.accept_escaped_names=False`` turns it off.

Failing traffic is load: the request rate counts every request (the proxy's ``pdscale_proxy_requests_total`` by any
``outcome``, vLLM's ``request_success_total`` by any ``finished_reason``, Dynamo's ``requests_total`` by any
``status``, llm-d's ``request_total``), and ``Signals.failed_request_rate_per_s`` is its server-side failed part (proxy
``5xx``/``no_upstream``, vLLM ``error``, Dynamo ``status="error"``, llm-d ``request_error_total``; not 4xx or client
aborts). ``PoolSignals.pods_reporting`` is the number of distinct ``pod`` label values (``MetricProfile.pod_label``)
among the pool's fresh running-gauge series: with a series label other than ``pod`` for the pod, set
``pod_label``, or every pool reads as one pod reporting. Both ride as a second answer in an existing grouped query
(``label_replace`` marks it: ``pdscale_part="failed"`` on the frontend rate, a ``#failed`` / ``#pods`` suffix on the
pool label of the worker rate and running gauge), so the count of queries per tick does not change. The frontend
rate query answers the arrivals the same way (``MetricProfile.frontend_arrivals_counter`` /
``frontend_arrived_prompt_tokens_counter``, the proxy's ``pdscale_proxy_arrived_*_total``: ``pdscale_part="arrived"``
and ``"arrived_prompt_tokens"``), read into ``Signals.arrived_request_rate_per_s`` / ``arrived_prompt_tokens_per_s``
(None without such series: the policy then reads the demand from served work and says so). The
prompt-length histogram (``MetricProfile.prompt_lengths_histogram``, vLLM's ``vllm:request_prompt_tokens``) rides
the same way in the prompt-token rate query: ``sum by (le, ...) (rate(..._bucket[w]))`` with the pool label and
``le`` joined into ``<pool>#le=<bound>`` (``label_join``), read into ``Signals.prompt_length_buckets`` (the prefill
pool's when it has any, else decode's); ~20 more series per pool and autoscaler in that answer.

Missing data is ``None``, never zero: NaN and ±Inf answers (e.g. ``histogram_quantile`` or a 0/0 mean with no
requests in the window), absent series (empty vector) and stale series. Staleness: ``rate()`` needs two samples
inside its window, so a rate is never older than the window; gauges would otherwise be served by Prometheus'
5-minute lookback, so every gauge is filtered with ``X and (time() - timestamp(X)) < <window>``. All queries of
one refresh are evaluated at the same instant (``time=now_s``), so the signals of a tick are one snapshot.

HTTP: plain ``requests`` POSTs (form body: a 1,000-autoscaler regex does not fit a URL) to ``/api/v1/query``
with an explicit timeout and NO retries (``prometheus-api-client`` has a built-in 3x Retry with backoff that
would stall the control loop; the next tick is the retry). After a connection error, timeout or 5xx the
remaining queries of the refresh are skipped: they would fail the same way, one timeout each. A 4xx (a bad
custom query) fails only the autoscalers that use that query.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Pool, PoolSignals, Signals
from autoscaler.ports import MetricsSource

_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")  # Go regexp.QuoteMeta's set; RE2 is what Prometheus uses

CUSTOM_SIGNALS: tuple[str, ...] = (
    "ttft_s",
    "itl_s",
    "ttft_mean_s",
    "itl_mean_s",
    "request_rate_per_s",
    "prompt_tokens_per_s",
    "output_tokens_per_s",
    *(
        f"{pool}_{name}"
        for pool in ("prefill", "decode")
        for name in ("waiting_requests", "running_requests", "kv_usage_fraction", "request_rate_per_s")
    ),
)


# ---------------------------------------------------------------------------------------------------------------
# PromQL text helpers: nothing from a spec or a request reaches a query without going through these.


def validate_label_name(name: str, where: str = "label name") -> str:
    """Return ``name`` if it is a valid, non-reserved Prometheus label name; raise ValueError naming ``where``."""
    if not isinstance(name, str) or not _LABEL_NAME_RE.match(name) or name.startswith("__"):
        raise ValueError(
            f"{where}: {name!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
        )
    return name


def validate_metric_name(name: str, where: str = "metric name") -> str:
    if not isinstance(name, str) or not _METRIC_NAME_RE.match(name):
        raise ValueError(f"{where}: {name!r} is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    return name


def promql_string(value: str) -> str:
    """A double-quoted PromQL string literal holding exactly ``value`` (Go escaping rules)."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def re2_escape(value: str) -> str:
    """Escape ``value`` so that it matches itself literally inside an RE2 regular expression."""
    return "".join(f"\\{ch}" if ch in _RE2_SPECIAL else ch for ch in value)


def label_matcher(name: str, values: Iterable[str]) -> str:
    """``name="v"`` for one value, ``name=~"v1|v2"`` (literal alternatives, anchored by Prometheus) for several."""
    validate_label_name(name)
    distinct = sorted(set(values))
    if not distinct:
        raise ValueError(f"label_matcher: no values for label {name!r}")
    if len(distinct) == 1:
        return f"{name}={promql_string(distinct[0])}"
    return f"{name}=~{promql_string('|'.join(re2_escape(v) for v in distinct))}"


def promql_duration(seconds: float) -> str:
    """A PromQL duration literal: whole seconds as ``60s``, otherwise milliseconds."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"window must be a positive number of seconds, got {seconds!r}")
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _fmt_quantile(q: float) -> str:
    if not 0.0 < q < 1.0:
        raise ValueError(f"percentile must be in (0, 1), got {q!r}")
    return repr(float(q))


# ---------------------------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class MetricProfile:
    """Metric names and label conventions of one metric source. Counter names include ``_total``."""

    name: str
    ttft_histogram: str = "vllm:time_to_first_token_seconds"
    itl_histogram: str = "vllm:inter_token_latency_seconds"
    requests_counter: str = "vllm:request_success_total"
    prompt_tokens_counter: str = "vllm:prompt_tokens_total"
    # the prompt-length histogram (tokens per request, vLLM's 1-2-5 edges); None: the source has none
    prompt_lengths_histogram: str | None = "vllm:request_prompt_tokens"
    output_tokens_counter: str = "vllm:generation_tokens_total"
    waiting_gauge: str = "vllm:num_requests_waiting"
    # The waiting requests split by why they wait: only those waiting for scheduling capacity are a backlog. vLLM
    # (>= 0.11) counts a request whose KV is still in flight from a prefill pod (NixlConnector, WAITING_FOR_REMOTE_KVS)
    # as waiting, under reason="deferred"; read as a backlog it held a 4-sequence decode pool at 2 pods on a trickle
    # (tests/e2e/test_live_vllm_loop.py). None, or a pool whose pods lack the series: ``waiting_gauge`` (all of them).
    waiting_by_reason_gauge: str | None = "vllm:num_requests_waiting_by_reason"
    waiting_reason_label: str = "reason"
    waiting_capacity_reason: str = "capacity"
    running_gauge: str = "vllm:num_requests_running"
    kv_usage_gauges: tuple[str, ...] = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    pool_label: str = "role"
    prefill_value: str = "prefill"
    decode_value: str = "decode"
    # user-visible series at the proxy/gateway/frontend; None = the source has none
    frontend_ttft_histogram: str | None = None
    frontend_itl_histogram: str | None = None
    frontend_requests_counter: str | None = None
    # requests and their prompt tokens counted as they ARRIVE at the frontend (the demand, where the served counters
    # are throughput under a backlog); None = the source has none
    frontend_arrivals_counter: str | None = None
    frontend_arrived_prompt_tokens_counter: str | None = None
    # selector label name -> label name on frontend series (Dynamo's frontend says ``model``)
    frontend_label_map: tuple[tuple[str, str], ...] = ()
    # also match ``vllm_x`` for ``vllm:x`` (see ``series_selector``)
    accept_escaped_names: bool = True
    # labels naming a worker's pod and namespace (what Kubernetes service discovery relabels them to); used to
    # read per-pod load for pod-deletion-cost and to count the pods reporting
    pod_label: str = "pod"
    namespace_label: str = "namespace"
    # Server-side failures (counted in the request rate too: failing traffic is demand). Frontend: a label of the
    # requests counter and its failure values, or a separate counter of failures (all of it). Workers: a label of
    # ``requests_counter`` and its failure values. None: the source reports no failures.
    frontend_failure_label: str | None = None
    frontend_failure_values: tuple[str, ...] = ()
    frontend_failures_counter: str | None = None
    worker_failure_label: str | None = "finished_reason"
    worker_failure_values: tuple[str, ...] = ("error",)

    def __post_init__(self) -> None:
        where = f"metric profile {self.name!r}"
        for attr in (
            "ttft_histogram",
            "itl_histogram",
            "requests_counter",
            "prompt_tokens_counter",
            "prompt_lengths_histogram",
            "output_tokens_counter",
            "waiting_gauge",
            "waiting_by_reason_gauge",
            "running_gauge",
            "frontend_ttft_histogram",
            "frontend_itl_histogram",
            "frontend_requests_counter",
            "frontend_failures_counter",
            "frontend_arrivals_counter",
            "frontend_arrived_prompt_tokens_counter",
        ):
            value = getattr(self, attr)
            if value is not None:
                validate_metric_name(value, f"{where}: {attr}")
        if not self.kv_usage_gauges:
            raise ValueError(f"{where}: kv_usage_gauges must name at least one metric")
        for value in self.kv_usage_gauges:
            validate_metric_name(value, f"{where}: kv_usage_gauges")
        validate_label_name(self.pool_label, f"{where}: pool_label")
        validate_label_name(self.pod_label, f"{where}: pod_label")
        validate_label_name(self.namespace_label, f"{where}: namespace_label")
        validate_label_name(self.waiting_reason_label, f"{where}: waiting_reason_label")
        if self.prefill_value == self.decode_value:
            raise ValueError(f"{where}: prefill_value and decode_value must differ")
        for src, dst in self.frontend_label_map:
            validate_label_name(src, f"{where}: frontend_label_map key")
            validate_label_name(dst, f"{where}: frontend_label_map value")
        for side in ("frontend", "worker"):
            label, values = getattr(self, f"{side}_failure_label"), getattr(self, f"{side}_failure_values")
            if label is not None:
                validate_label_name(label, f"{where}: {side}_failure_label")
                if not values or not all(isinstance(v, str) and v for v in values):
                    raise ValueError(f"{where}: {side}_failure_values must name at least one label value")
        if self.frontend_failures_counter is not None and self.frontend_failure_label is not None:
            raise ValueError(f"{where}: give frontend_failures_counter or frontend_failure_label, not both")

    def frontend_label(self, selector_label: str) -> str:
        return dict(self.frontend_label_map).get(selector_label, selector_label)


BUILTIN_PROFILES: Mapping[str, MetricProfile] = {
    "vllm": MetricProfile(
        name="vllm",
        frontend_ttft_histogram="pdscale_proxy_time_to_first_token_seconds",
        frontend_itl_histogram="pdscale_proxy_inter_token_latency_seconds",
        # every request the proxy answered, by outcome (ok, 4xx, 5xx, client_abort, no_upstream)
        frontend_requests_counter="pdscale_proxy_requests_total",
        frontend_failure_label="outcome",
        frontend_failure_values=("5xx", "no_upstream"),
        # counted on arrival (workers/proxy_metrics.py)
        frontend_arrivals_counter="pdscale_proxy_arrived_requests_total",
        frontend_arrived_prompt_tokens_counter="pdscale_proxy_arrived_prompt_tokens_total",
    ),
    "llm-d": MetricProfile(
        name="llm-d",
        frontend_ttft_histogram="inference_objective_request_ttft_seconds",
        frontend_itl_histogram="inference_objective_request_tpot_seconds",
        frontend_requests_counter="inference_objective_request_total",
        frontend_failures_counter="inference_objective_request_error_total",
    ),
    "dynamo": MetricProfile(
        name="dynamo",
        frontend_ttft_histogram="dynamo_frontend_time_to_first_token_seconds",
        frontend_itl_histogram="dynamo_frontend_inter_token_latency_seconds",
        frontend_requests_counter="dynamo_frontend_requests_total",
        frontend_label_map=(("model_name", "model"),),
        frontend_failure_label="status",
        frontend_failure_values=("error",),
    ),
}
CUSTOM = "custom"


def profiles_from_mapping(
    data: Mapping[str, Any], where: str = "metric profiles"
) -> dict[str, MetricProfile]:
    """Metric profiles from plain data (a YAML/JSON document): ``{name: {base: vllm, pool_label: ..., ...}}``.

    ``base`` (default: the built-in of the same name, else ``vllm``) supplies every field not given. Errors name
    ``where``, the profile and the field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of profile name -> fields, got {type(data).__name__}")
    fields = {f for f in MetricProfile.__dataclass_fields__ if f != "name"}
    out: dict[str, MetricProfile] = {}
    for name, body in data.items():
        here = f"{where}.{name}"
        if not isinstance(name, str) or not name or name == CUSTOM:
            raise ValueError(f"{here}: profile name must be a non-empty string other than 'custom'")
        if not isinstance(body, Mapping):
            raise ValueError(f"{here}: expected a mapping of fields, got {type(body).__name__}")
        base_name = body.get("base", name if name in BUILTIN_PROFILES else "vllm")
        base = BUILTIN_PROFILES.get(base_name) if isinstance(base_name, str) else None
        if base is None:
            raise ValueError(
                f"{here}.base: unknown built-in profile {base_name!r} ({', '.join(BUILTIN_PROFILES)})"
            )
        changes: dict[str, Any] = {"name": name}
        for field_name, value in body.items():
            if field_name == "base":
                continue
            if field_name not in fields:
                raise ValueError(f"{here}.{field_name}: unknown field (known: {', '.join(sorted(fields))})")
            if field_name in ("kv_usage_gauges", "frontend_failure_values", "worker_failure_values"):
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{here}.{field_name}: expected a list of strings")
                value = tuple(value)
            elif field_name == "frontend_label_map":
                if not isinstance(value, Mapping):
                    raise ValueError(
                        f"{here}.{field_name}: expected a mapping selector label -> series label"
                    )
                value = tuple(sorted((str(k), str(v)) for k, v in value.items()))
            elif field_name == "accept_escaped_names":
                if not isinstance(value, bool):
                    raise ValueError(f"{here}.{field_name}: expected true or false")
            elif not (value is None or isinstance(value, str)):
                raise ValueError(f"{here}.{field_name}: expected a string, got {value!r}")
            changes[field_name] = value
        try:
            out[name] = replace(base, **changes)
        except ValueError as exc:
            raise ValueError(f"{here}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------------------------------
# Query shapes. A QueryKey is everything that determines a query except the selector VALUES; autoscalers with
# equal keys share one query.

# Built-in query kinds. "fe_" kinds read frontend series (grouped by selector labels only), "w_" kinds read
# worker series (grouped by selector labels and the pool label).
FE_TTFT_Q = "fe_ttft_quantile"
FE_ITL_Q = "fe_itl_quantile"
FE_TTFT_MEAN = "fe_ttft_mean"
FE_ITL_MEAN = "fe_itl_mean"
FE_REQUESTS = "fe_request_rate"
W_TTFT_Q = "w_ttft_quantile"
W_ITL_Q = "w_itl_quantile"
W_TTFT_MEAN = "w_ttft_mean"
W_ITL_MEAN = "w_itl_mean"
W_REQUESTS = "w_request_rate"
W_PROMPT = "w_prompt_tokens_rate"
W_OUTPUT = "w_output_tokens_rate"
W_WAITING = "w_waiting"
W_RUNNING = "w_running"
W_KV = "w_kv_usage"
FRONTEND_KINDS = (FE_TTFT_Q, FE_ITL_Q, FE_TTFT_MEAN, FE_ITL_MEAN, FE_REQUESTS)
WORKER_KINDS = (
    W_TTFT_Q,
    W_ITL_Q,
    W_TTFT_MEAN,
    W_ITL_MEAN,
    W_REQUESTS,
    W_PROMPT,
    W_OUTPUT,
    W_WAITING,
    W_RUNNING,
    W_KV,
)
WORKER_LATENCY_KINDS = frozenset((W_TTFT_Q, W_ITL_Q, W_TTFT_MEAN, W_ITL_MEAN))
CUSTOM_GROUPED = "custom_grouped"
CUSTOM_SINGLE = "custom_single"


@dataclass(frozen=True)
class QueryKey:
    kind: str
    profile: str
    label_names: tuple[str, ...]  # selector label names, sorted
    window_s: float
    quantile: float | None = None
    template: str | None = None  # custom kinds
    fixed_selector: tuple[tuple[str, str], ...] = ()  # CUSTOM_SINGLE: the selector itself (not grouped)
    percentiles: tuple[float, float] | None = None  # CUSTOM_*: (ttft, itl) for the template placeholders


def _selector_of(spec: AutoscalerSpec) -> tuple[tuple[str, str], ...]:
    """The spec's selector, validated and sorted by label name."""
    seen: dict[str, str] = {}
    for i, item in enumerate(spec.metrics.selector):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ValueError(f"spec.metrics.selector[{i}]: expected (label, value), got {item!r}")
        name, value = item
        validate_label_name(name, f"spec.metrics.selector[{i}]")
        if not isinstance(value, str):
            raise ValueError(f"spec.metrics.selector[{i}] ({name}): value must be a string, got {value!r}")
        if name in seen and seen[name] != value:
            raise ValueError(f"spec.metrics.selector[{i}]: label {name!r} given twice with different values")
        seen[name] = value
    return tuple(sorted(seen.items()))


def percentile_role(kind: str, quantile: float) -> str:
    """The role of an extra percentile query (``extra_percentiles``): ``<kind>@<quantile>``."""
    return f"{kind}@{quantile!r}"


def query_keys(
    spec: AutoscalerSpec, profiles: Mapping[str, MetricProfile], extra_percentiles: Sequence[float] = ()
) -> dict[str, QueryKey]:
    """The queries one autoscaler needs, by role (a query kind, ``<kind>@<quantile>`` for an extra percentile,
    or ``custom:<signal>``). Raises ValueError (naming the spec field) on an unusable spec.

    ``extra_percentiles`` (e.g. 0.5, 0.9, 0.99 for the External Metrics API) add TTFT and ITL quantile queries of
    the same shapes as the SLO's: one more query per quantile and group, shared by every autoscaler of the group
    (and the very query of the SLO when the quantile equals it). ``custom`` sources have no histogram to ask."""
    selector = _selector_of(spec)
    names = tuple(name for name, _ in selector)
    window_s = float(spec.metrics.window_s)
    promql_duration(window_s)  # validates
    source = spec.metrics.source
    if source == CUSTOM:
        return _custom_keys(spec, selector, names, window_s)
    profile = profiles.get(source)
    if profile is None:
        known = ", ".join(sorted([*profiles, CUSTOM]))
        raise ValueError(f"spec.metrics.source: unknown metric source {source!r} (known: {known})")
    qt, qi = spec.ttft.percentile, spec.itl.percentile
    _fmt_quantile(qt)
    _fmt_quantile(qi)
    keys = {
        W_TTFT_Q: QueryKey(W_TTFT_Q, source, names, window_s, quantile=qt),
        W_ITL_Q: QueryKey(W_ITL_Q, source, names, window_s, quantile=qi),
    }
    for kind in WORKER_KINDS:
        keys.setdefault(kind, QueryKey(kind, source, names, window_s))
    if spec.metrics.proxy and profile.frontend_ttft_histogram is not None:
        keys[FE_TTFT_Q] = QueryKey(FE_TTFT_Q, source, names, window_s, quantile=qt)
        keys[FE_TTFT_MEAN] = QueryKey(FE_TTFT_MEAN, source, names, window_s)
    if spec.metrics.proxy and profile.frontend_itl_histogram is not None:
        keys[FE_ITL_Q] = QueryKey(FE_ITL_Q, source, names, window_s, quantile=qi)
        keys[FE_ITL_MEAN] = QueryKey(FE_ITL_MEAN, source, names, window_s)
    if spec.metrics.proxy and profile.frontend_requests_counter is not None:
        keys[FE_REQUESTS] = QueryKey(FE_REQUESTS, source, names, window_s)
    for q in extra_percentiles:
        _fmt_quantile(q)
        for kind in (W_TTFT_Q, W_ITL_Q, FE_TTFT_Q, FE_ITL_Q):
            if kind in keys:
                keys[percentile_role(kind, q)] = QueryKey(kind, source, names, window_s, quantile=q)
    return keys


def _custom_keys(
    spec: AutoscalerSpec, selector: tuple[tuple[str, str], ...], names: tuple[str, ...], window_s: float
) -> dict[str, QueryKey]:
    keys: dict[str, QueryKey] = {}
    if not spec.metrics.custom_queries:
        raise ValueError("spec.metrics.custom_queries: source 'custom' needs at least one query")
    percentiles = (spec.ttft.percentile, spec.itl.percentile)
    for signal, template in spec.metrics.custom_queries:
        where = f"spec.metrics.custom_queries[{signal!r}]"
        if signal not in CUSTOM_SIGNALS:
            raise ValueError(f"{where}: unknown signal (known: {', '.join(CUSTOM_SIGNALS)})")
        if not isinstance(template, str) or not template.strip():
            raise ValueError(f"{where}: template must be a non-empty PromQL string")
        if "{by}" in template:
            keys[f"custom:{signal}"] = QueryKey(
                CUSTOM_GROUPED, CUSTOM, names, window_s, template=template, percentiles=percentiles
            )
        else:
            keys[f"custom:{signal}"] = QueryKey(
                CUSTOM_SINGLE,
                CUSTOM,
                names,
                window_s,
                template=template,
                fixed_selector=selector,
                percentiles=percentiles,
            )
    return keys


def _matchers(label_values: Mapping[str, Iterable[str]], rename: Callable[[str], str] = str) -> list[str]:
    return [label_matcher(rename(name), values) for name, values in sorted(label_values.items())]


def build_query(
    key: QueryKey, profile: MetricProfile | None, label_values: Mapping[str, Iterable[str]]
) -> str:
    """The PromQL text of ``key`` for the union of selector values ``label_values`` (label -> values)."""
    w = promql_duration(key.window_s)
    if key.kind in (CUSTOM_GROUPED, CUSTOM_SINGLE):
        return _build_custom(key, label_values, w)
    if profile is None:
        raise ValueError(f"build_query: no profile for {key.kind}")
    if set(label_values) != set(key.label_names):
        raise ValueError(
            f"build_query: values for {sorted(label_values)} but key has {list(key.label_names)}"
        )
    if key.kind in FRONTEND_KINDS:
        rename = profile.frontend_label
        sel = ",".join(_matchers(label_values, rename))
        names = [rename(n) for n in key.label_names]
    else:
        pools = label_matcher(profile.pool_label, (profile.prefill_value, profile.decode_value))
        sel = ",".join([*_matchers(label_values), pools])
        names = [*key.label_names, profile.pool_label]
    return _expression(key.kind, profile, sel, names, key.window_s, key.quantile)


def aggregate_query(
    kind: str, profile: MetricProfile, by: Sequence[str], window_s: float, quantile: float | None = None
) -> str:
    """Query ``kind`` over every deployment at once, grouped by ``by`` (frontend label names are mapped as for
    an autoscaler) plus, for worker kinds, the pool label: the expression the controller evaluates for one
    autoscaler, without its selector and without the second answers (failed part, pods reporting). The
    monitoring overlay's recording rules are built from it, so the dashboards show what the controller sees."""
    for name in by:
        validate_label_name(name, "aggregate_query: by")
    if kind in FRONTEND_KINDS:
        names = [profile.frontend_label(n) for n in by]
        return _expression(kind, profile, "", names, window_s, quantile, parts=False)
    pools = label_matcher(profile.pool_label, (profile.prefill_value, profile.decode_value))
    return _expression(kind, profile, pools, [*by, profile.pool_label], window_s, quantile, parts=False)


def _expression(
    kind: str, profile: MetricProfile, sel: str, names: Sequence[str], window_s: float, quantile: float | None,
    *, parts: bool = True,
) -> str:
    """The PromQL of a built-in query ``kind`` for matcher list ``sel`` grouped by the label ``names``; with
    ``parts`` the second answers some kinds carry (see ``PART_LABEL``)."""
    w = promql_duration(window_s)
    esc = profile.accept_escaped_names
    by = ", ".join(names)
    if kind in FRONTEND_KINDS:
        if kind == FE_TTFT_Q:
            assert profile.frontend_ttft_histogram is not None and quantile is not None
            return _quantile(quantile, profile.frontend_ttft_histogram, sel, by, w, esc)
        if kind == FE_ITL_Q:
            assert profile.frontend_itl_histogram is not None and quantile is not None
            return _quantile(quantile, profile.frontend_itl_histogram, sel, by, w, esc)
        if kind == FE_TTFT_MEAN:
            assert profile.frontend_ttft_histogram is not None
            return _mean(profile.frontend_ttft_histogram, sel, by, w, esc)
        if kind == FE_ITL_MEAN:
            assert profile.frontend_itl_histogram is not None
            return _mean(profile.frontend_itl_histogram, sel, by, w, esc)
        if kind == FE_REQUESTS:
            assert profile.frontend_requests_counter is not None
            total = _rate(profile.frontend_requests_counter, sel, by, w, esc)
            if not parts:
                return total
            answers = [total]
            if profile.frontend_failures_counter is not None:
                answers.append(_part(_rate(profile.frontend_failures_counter, sel, by, w, esc), FAILED))
            elif profile.frontend_failure_label is not None:
                fsel = ",".join([sel, label_matcher(profile.frontend_failure_label, profile.frontend_failure_values)])
                answers.append(_part(_rate(profile.frontend_requests_counter, fsel.lstrip(","), by, w, esc), FAILED))
            for counter, part in ((profile.frontend_arrivals_counter, ARRIVED),
                                  (profile.frontend_arrived_prompt_tokens_counter, ARRIVED_PROMPT)):  # fmt: skip
                if counter is not None:
                    answers.append(_part(_rate(counter, sel, by, w, esc), part))
            return " or ".join(answers)
        raise AssertionError(kind)
    if kind == W_TTFT_Q:
        assert quantile is not None
        return _quantile(quantile, profile.ttft_histogram, sel, by, w, esc)
    if kind == W_ITL_Q:
        assert quantile is not None
        return _quantile(quantile, profile.itl_histogram, sel, by, w, esc)
    if kind == W_TTFT_MEAN:
        return _mean(profile.ttft_histogram, sel, by, w, esc)
    if kind == W_ITL_MEAN:
        return _mean(profile.itl_histogram, sel, by, w, esc)
    if kind == W_REQUESTS:
        total = _rate(profile.requests_counter, sel, by, w, esc)
        if profile.worker_failure_label is None or not parts:
            return total
        fsel = ",".join([sel, label_matcher(profile.worker_failure_label, profile.worker_failure_values)])
        return f"{total} or {_pool_part(_rate(profile.requests_counter, fsel, by, w, esc), profile, FAILED)}"
    if kind == W_PROMPT:
        tokens = _rate(profile.prompt_tokens_counter, sel, by, w, esc)
        if profile.prompt_lengths_histogram is None or not parts:
            return tokens
        # plus the prompt-length buckets per pool, in the same query: the pool label becomes "<pool>#le=<le>"
        buckets = series_selector(f"{profile.prompt_lengths_histogram}_bucket", sel, escaped_variant=esc)
        pool = profile.pool_label
        per_le = f"sum by (le, {by}) (rate({buckets}[{w}]))"
        return f'{tokens} or label_join({per_le}, "{pool}", "#{LE_PART}", "{pool}", "le")'
    if kind == W_OUTPUT:
        return _rate(profile.output_tokens_counter, sel, by, w, esc)
    if kind == W_WAITING:
        if profile.waiting_by_reason_gauge is None:
            return _gauge("sum", profile.waiting_gauge, sel, by, window_s, esc)
        # per series: the capacity part where the pod reports reasons, else all its waiting requests (set
        # operators match label sets without the metric name, so each pod falls back on its own)
        csel = ",".join([sel, label_matcher(profile.waiting_reason_label, [profile.waiting_capacity_reason])])
        capacity = _fresh(series_selector(profile.waiting_by_reason_gauge, csel.lstrip(","), escaped_variant=esc),
                          window_s)  # fmt: skip
        waiting = _fresh(series_selector(profile.waiting_gauge, sel, escaped_variant=esc), window_s)
        return f"sum by ({by}) (max without ({profile.waiting_reason_label}) ({capacity}) or {waiting})"
    if kind == W_RUNNING:
        running = _gauge("sum", profile.running_gauge, sel, by, window_s, esc)
        if not parts:
            return running
        # plus the pods reporting per pool (distinct pod label values), in the same query
        per_pod = ", ".join(dict.fromkeys([*names, profile.pod_label]))
        inner = _gauge("count", profile.running_gauge, sel, per_pod, window_s, esc)
        return f"{running} or {_pool_part(f'count by ({by}) ({inner})', profile, PODS)}"
    if kind == W_KV:
        return " or ".join(_gauge("avg", name, sel, by, window_s, esc) for name in profile.kv_usage_gauges)
    raise ValueError(f"build_query: unknown query kind {kind!r}")


# A query may carry a second answer beside its main one: the frontend request rate its failed part (rows keyed by
# ``PART_LABEL``), the worker request rate its failed part and the running gauge its pods reporting (the pool
# label's value gets a ``#failed`` / ``#pods`` suffix). One query, two answers: the count per tick stays the same.
PART_LABEL = "pdscale_part"
FAILED = "failed"
ARRIVED = "arrived"  # the frontend's arrival rate (requests/s), and the prompt tokens/s arriving
ARRIVED_PROMPT = "arrived_prompt_tokens"
PODS = "pods"
LE_PART = "le="  # the prompt-token rate query's bucket answers: "<pool>#le=<upper bound>"


def _part(expr: str, part: str) -> str:
    """A frontend query's further answer, marked by ``PART_LABEL``."""
    return f'label_replace({expr}, "{PART_LABEL}", "{part}", "", "")'


def _pool_part(expr: str, profile: MetricProfile, part: str) -> str:
    pool = profile.pool_label
    return f'label_replace({expr}, "{pool}", "$1#{part}", "{pool}", "(.+)")'


def pool_part(pool: str, part: str) -> str:
    """The row key of a pool's second answer (see ``_pool_part``)."""
    return f"{pool}#{part}"


def series_selector(metric: str, sel: str, *, escaped_variant: bool = False) -> str:
    """``metric{sel}``; with ``escaped_variant`` a name holding ``:`` also matches its ``_`` spelling, which is what
    Prometheus stores when prometheus_client's OpenMetrics output escapes colons (client_python issue #1177)."""
    if escaped_variant and ":" in metric:
        names = "|".join(re2_escape(n) for n in (metric, metric.replace(":", "_")))
        inner = f"__name__=~{promql_string(names)}" + (f",{sel}" if sel else "")
        return f"{{{inner}}}"
    return f"{metric}{{{sel}}}"


def _quantile(q: float, histogram: str, sel: str, by: str, w: str, esc: bool) -> str:
    group = f"le, {by}" if by else "le"
    buckets = series_selector(f"{histogram}_bucket", sel, escaped_variant=esc)
    return f"histogram_quantile({_fmt_quantile(q)}, sum by ({group}) (rate({buckets}[{w}])))"


def _mean(histogram: str, sel: str, by: str, w: str, esc: bool) -> str:
    total = series_selector(f"{histogram}_sum", sel, escaped_variant=esc)
    count = series_selector(f"{histogram}_count", sel, escaped_variant=esc)
    return f"sum by ({by}) (rate({total}[{w}])) / sum by ({by}) (rate({count}[{w}]))"


def _rate(counter: str, sel: str, by: str, w: str, esc: bool) -> str:
    return f"sum by ({by}) (rate({series_selector(counter, sel, escaped_variant=esc)}[{w}]))"


def _fresh(series: str, freshness_s: float) -> str:
    return f"{series} and (time() - timestamp({series})) < {freshness_s:g}"


def _gauge(agg: str, gauge: str, sel: str, by: str, freshness_s: float, esc: bool) -> str:
    return f"{agg} by ({by}) ({_fresh(series_selector(gauge, sel, escaped_variant=esc), freshness_s)})"


def pod_running_query(profile: MetricProfile, namespace: str, pods: Iterable[str], freshness_s: float) -> str:
    """ONE query for the running requests of every pod in ``pods`` (a literal alternation of their names), per
    pod: ``sum by (pod) (running{namespace="ns",pod=~"a|b"} and fresh)``. A pod with several engines sums them."""
    sel = ",".join(
        [label_matcher(profile.namespace_label, [namespace]), label_matcher(profile.pod_label, pods)]
    )
    return _gauge("sum", profile.running_gauge, sel, profile.pod_label, freshness_s, profile.accept_escaped_names)


def _build_custom(key: QueryKey, label_values: Mapping[str, Iterable[str]], w: str) -> str:
    assert key.template is not None and key.percentiles is not None
    if key.kind == CUSTOM_SINGLE:
        sel = ",".join(f"{validate_label_name(n)}={promql_string(v)}" for n, v in key.fixed_selector)
    else:
        sel = ",".join(_matchers(label_values))
    return (
        key.template.replace("{selector}", sel)
        .replace("{by}", ", ".join(key.label_names))
        .replace("{window}", w)
        .replace("{ttft_percentile}", _fmt_quantile(key.percentiles[0]))
        .replace("{itl_percentile}", _fmt_quantile(key.percentiles[1]))
    )


# ---------------------------------------------------------------------------------------------------------------
# Results

Rows = Mapping[tuple[str, ...], Mapping[str | None, float | None]]  # selector values -> pool value -> number


def parse_value(text: Any) -> float | None:
    """A sample value from the API (a string) -> float; NaN, ±Inf and garbage are missing."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def split_result(
    data: Mapping[str, Any], label_names: Sequence[str], pool_label: str | None
) -> dict[tuple[str, ...], dict[str | None, float | None]]:
    """Split an instant-query ``data`` object into rows keyed by the values of ``label_names`` (as they appear
    on the series) and, inside, by the value of ``pool_label`` (None when not pooled)."""
    result_type = data.get("resultType")
    result = data.get("result")
    rows: dict[tuple[str, ...], dict[str | None, float | None]] = {}
    if result_type == "scalar":
        if label_names:
            return rows
        rows[()] = {None: parse_value(result[1] if isinstance(result, list) and len(result) == 2 else None)}
        return rows
    if result_type != "vector" or not isinstance(result, list):
        raise ValueError(f"expected an instant vector, got resultType {result_type!r}")
    for series in result:
        metric = series.get("metric") or {}
        value = series.get("value")
        ident = tuple(str(metric.get(name, "")) for name in label_names)
        pool = str(metric.get(pool_label, "")) if pool_label else None
        row = rows.setdefault(ident, {})
        if pool in row:
            shown = dict(zip(label_names, ident, strict=True))
            raise ValueError(
                f"several series for {shown or 'the query'}; aggregate the query to one series per autoscaler"
            )
        row[pool] = parse_value(value[1] if isinstance(value, list) and len(value) == 2 else None)
    return rows


@dataclass(frozen=True)
class _Outcome:
    rows: dict[tuple[str, ...], dict[str | None, float | None]] = field(default_factory=dict)
    error: str | None = None
    fatal: bool = False


class PrometheusError(Exception):
    """A query failed; ``fatal`` means the server is unreachable (skip the rest of the refresh)."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


# ---------------------------------------------------------------------------------------------------------------
# Assembling Signals from rows


def _pool_value(rows: Rows | None, ident: tuple[str, ...], pool: str) -> float | None:
    if rows is None:
        return None
    return rows.get(ident, {}).get(pool)


def _has_pool(rows: Rows | None, ident: tuple[str, ...], pool: str) -> bool:
    return rows is not None and pool in rows.get(ident, {})


def _frontend(rows: Rows | None, ident: tuple[str, ...]) -> tuple[bool, float | None]:
    """(series exist, value) of a frontend query for one autoscaler."""
    if rows is None or ident not in rows:
        return False, None
    return True, rows[ident].get(None)


def _worker_ttft(
    rows: Rows | None, ident: tuple[str, ...], prefill: str, decode: str, disaggregated: bool
) -> float | None:
    """User TTFT from worker histograms: prefill + decode worker TTFT (P/D), or the decode pool alone when there
    is no prefill pool at all (aggregated serving). Missing when either needed part is missing."""
    p = _pool_value(rows, ident, prefill)
    d = _pool_value(rows, ident, decode)
    if not disaggregated:
        return d
    if p is None or d is None:
        return None
    return p + d


def _prompt_length_buckets(rows: Rows | None, ident: tuple[str, ...], pool: str) -> tuple[tuple[float, float], ...] | None:
    """The pool's prompt-length buckets (upper bound, cumulative requests/s) from the ``#le=`` answers of the
    prompt-token rate query; ``None`` without any, or when a bucket's rate is missing (NaN) or its bound unreadable."""
    if rows is None:
        return None
    prefix = pool_part(pool, LE_PART)
    out: list[tuple[float, float]] = []
    for key, value in rows.get(ident, {}).items():
        if key is None or not key.startswith(prefix):
            continue
        bound = parse_value(key[len(prefix) :]) if key[len(prefix) :] != "+Inf" else math.inf
        if bound is None or value is None:
            return None
        out.append((bound, value))
    if not out or max(b for b, _ in out) != math.inf:
        return None
    return tuple(sorted(out))


def assemble_signals(
    profile: MetricProfile,
    ident: tuple[str, ...],
    results: Mapping[str, Rows],
    now_s: float,
) -> Signals:
    """Signals of one built-in-profile autoscaler from the rows of its queries (role -> rows)."""
    pre, dec = profile.prefill_value, profile.decode_value

    running_rows = results.get(W_RUNNING)

    def pool(prefix_value: str) -> PoolSignals:
        # no pods row at all: none of the pool's pods reports (0), not "unknown"
        pods = _pool_value(running_rows, ident, pool_part(prefix_value, PODS))
        return PoolSignals(
            waiting_requests=_pool_value(results.get(W_WAITING), ident, prefix_value),
            running_requests=_pool_value(running_rows, ident, prefix_value),
            kv_usage_fraction=_pool_value(results.get(W_KV), ident, prefix_value),
            request_rate_per_s=_pool_value(results.get(W_REQUESTS), ident, prefix_value),
            pods_reporting=None if running_rows is None else (pods or 0.0),
        )

    fe_ttft_exists, fe_ttft = _frontend(results.get(FE_TTFT_Q), ident)
    fe_itl_exists, fe_itl = _frontend(results.get(FE_ITL_Q), ident)
    if fe_ttft_exists:
        ttft = fe_ttft
        ttft_mean = _frontend(results.get(FE_TTFT_MEAN), ident)[1]
    else:
        # any prefill series at all (load gauges included) means P/D: then a missing prefill TTFT is missing,
        # not "aggregated", so a P/D deployment whose prefill histograms vanished never reads as fast
        disaggregated = any(
            _has_pool(results.get(role), ident, pre) for role in (W_TTFT_Q, W_WAITING, W_RUNNING, W_REQUESTS)
        )
        ttft = _worker_ttft(results.get(W_TTFT_Q), ident, pre, dec, disaggregated)
        ttft_mean = _worker_ttft(results.get(W_TTFT_MEAN), ident, pre, dec, disaggregated)
    if fe_itl_exists:
        itl = fe_itl
        itl_mean = _frontend(results.get(FE_ITL_MEAN), ident)[1]
    else:
        itl = _pool_value(results.get(W_ITL_Q), ident, dec)
        itl_mean = _pool_value(results.get(W_ITL_MEAN), ident, dec)

    fe_rows = results.get(FE_REQUESTS)
    fe_rate = None if fe_rows is None else fe_rows.get(ident, {}).get("")
    if fe_rate is not None:
        request_rate: float | None = fe_rate
        failed = _pool_value(fe_rows, ident, FAILED)
    else:
        # every user request finishes once on a decode worker (P/D and aggregated alike), by any finished_reason
        request_rate = _pool_value(results.get(W_REQUESTS), ident, dec)
        failed = _pool_value(results.get(W_REQUESTS), ident, pool_part(dec, FAILED))
    if failed is None and request_rate is not None:
        failed = 0.0  # no failure series (yet): nothing failed
    arrived = _pool_value(fe_rows, ident, ARRIVED)
    arrived_prompt = _pool_value(fe_rows, ident, ARRIVED_PROMPT)
    prompt_rows = results.get(W_PROMPT)
    # a P/D decode worker also counts the transferred prompt: take the prefill pool's count when there is one
    prompt = (
        _pool_value(prompt_rows, ident, pre)
        if _has_pool(prompt_rows, ident, pre)
        else _pool_value(prompt_rows, ident, dec)
    )
    # prefill workers emit one throw-away token per request; the decode pool's count is the user's output
    output = _pool_value(results.get(W_OUTPUT), ident, dec)
    lengths = _prompt_length_buckets(prompt_rows, ident, pre) or _prompt_length_buckets(prompt_rows, ident, dec)
    return Signals(
        time_s=now_s,
        ttft_s=ttft,
        itl_s=itl,
        ttft_mean_s=ttft_mean,
        itl_mean_s=itl_mean,
        request_rate_per_s=request_rate,
        prompt_tokens_per_s=prompt,
        output_tokens_per_s=output,
        failed_request_rate_per_s=failed,
        prompt_length_buckets=lengths,
        arrived_request_rate_per_s=arrived,
        arrived_prompt_tokens_per_s=arrived_prompt,
        prefill=pool(pre),
        decode=pool(dec),
    )


def assemble_percentiles(
    profile: MetricProfile, ident: tuple[str, ...], results: Mapping[str, Rows], quantiles: Sequence[float]
) -> dict[str, dict[float, float | None]]:
    """TTFT and ITL at each of ``quantiles`` for one autoscaler, from the ``percentile_role`` rows: the frontend's
    when its series exist, else the workers' (prefill + decode worker TTFT for P/D, decode alone when
    aggregated; decode-worker ITL), exactly as ``assemble_signals`` chooses for the SLO percentile."""
    pre, dec = profile.prefill_value, profile.decode_value
    disaggregated = any(
        _has_pool(results.get(role), ident, pre) for role in (W_TTFT_Q, W_WAITING, W_RUNNING, W_REQUESTS)
    )
    out: dict[str, dict[float, float | None]] = {"ttft": {}, "itl": {}}
    for q in quantiles:
        fe_exists, fe = _frontend(results.get(percentile_role(FE_TTFT_Q, q)), ident)
        worker = results.get(percentile_role(W_TTFT_Q, q))
        out["ttft"][q] = fe if fe_exists else _worker_ttft(worker, ident, pre, dec, disaggregated)
        fe_exists, fe = _frontend(results.get(percentile_role(FE_ITL_Q, q)), ident)
        out["itl"][q] = fe if fe_exists else _pool_value(results.get(percentile_role(W_ITL_Q, q)), ident, dec)
    return out


def assemble_custom(
    keys: Mapping[str, QueryKey], ident: tuple[str, ...], results: Mapping[str, Rows], now_s: float
) -> Signals:
    """Signals of a ``custom`` autoscaler: grouped templates are read at its selector values, single ones at
    ``()`` (their query was made for this selector alone)."""
    values: dict[str, float | None] = {}
    for role, key in keys.items():
        at = ident if key.kind == CUSTOM_GROUPED else ()
        values[role.removeprefix("custom:")] = results[role].get(at, {}).get(None)
    pools = {
        pool: PoolSignals(
            waiting_requests=values.get(f"{pool}_waiting_requests"),
            running_requests=values.get(f"{pool}_running_requests"),
            kv_usage_fraction=values.get(f"{pool}_kv_usage_fraction"),
            request_rate_per_s=values.get(f"{pool}_request_rate_per_s"),
        )
        for pool in ("prefill", "decode")
    }
    return Signals(
        time_s=now_s,
        ttft_s=values.get("ttft_s"),
        itl_s=values.get("itl_s"),
        ttft_mean_s=values.get("ttft_mean_s"),
        itl_mean_s=values.get("itl_mean_s"),
        request_rate_per_s=values.get("request_rate_per_s"),
        prompt_tokens_per_s=values.get("prompt_tokens_per_s"),
        output_tokens_per_s=values.get("output_tokens_per_s"),
        prefill=pools["prefill"],
        decode=pools["decode"],
    )


# ---------------------------------------------------------------------------------------------------------------
# The source


@dataclass(frozen=True)
class _Plan:
    """What one refresh will ask: per autoscaler its roles -> keys (or a spec error), per key the union of
    selector values."""

    keys_by_autoscaler: dict[str, dict[str, QueryKey]]
    idents: dict[str, tuple[str, ...]]
    spec_errors: dict[str, str]
    values_by_key: dict[QueryKey, dict[str, set[str]]]


def plan_queries(
    specs: Mapping[str, AutoscalerSpec],
    profiles: Mapping[str, MetricProfile],
    extra_percentiles: Sequence[float] = (),
) -> _Plan:
    keys_by_autoscaler: dict[str, dict[str, QueryKey]] = {}
    idents: dict[str, tuple[str, ...]] = {}
    spec_errors: dict[str, str] = {}
    values_by_key: dict[QueryKey, dict[str, set[str]]] = {}
    for name, spec in specs.items():
        try:
            keys = query_keys(spec, profiles, extra_percentiles)
            selector = _selector_of(spec)
        except ValueError as exc:
            spec_errors[name] = str(exc)
            continue
        keys_by_autoscaler[name] = keys
        idents[name] = tuple(value for _, value in selector)
        for key in keys.values():
            bucket = values_by_key.setdefault(key, {label: set() for label in key.label_names})
            for label, value in selector:
                bucket[label].add(value)
    return _Plan(keys_by_autoscaler, idents, spec_errors, values_by_key)


class PrometheusMetricsSource:
    """Fetches the signals of many autoscalers with a constant number of PromQL queries per ``refresh``."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        session: requests.Session | None = None,
        profiles: Mapping[str, MetricProfile] | None = None,
        max_refresh_age_s: float = 120.0,
        max_concurrency: int = 4,
        extra_percentiles: Sequence[float] = (),
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus url must start with http:// or https://, got {url!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.max_refresh_age_s = float(max_refresh_age_s)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        self.max_concurrency = int(max_concurrency)
        for q in extra_percentiles:
            _fmt_quantile(q)
        self.extra_percentiles = tuple(sorted(set(float(q) for q in extra_percentiles)))
        self.profiles: dict[str, MetricProfile] = dict(BUILTIN_PROFILES)
        if profiles:
            self.profiles.update(profiles)
        if CUSTOM in self.profiles:
            raise ValueError("profile name 'custom' is reserved for spec.metrics.custom_queries")
        if session is None:
            session = requests.Session()
            # max_retries=0 is requests' default; spelled out because retries here would stall the loop
            adapter = requests.adapters.HTTPAdapter(max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self.queries_last_refresh = 0
        self.query_seconds_last_refresh: tuple[tuple[str, float], ...] = ()  # (query kind, wall s) answered
        self.last_refresh_duration_s = 0.0
        self.last_error: str | None = None
        self.last_fatal_error: str | None = None  # Prometheus unreachable (timeout, refused, 5xx) in the last refresh
        self._lock = threading.Lock()
        self._signals: dict[str, Signals] = {}
        self._percentiles: dict[str, dict[str, dict[float, float | None]]] = {}
        self._refreshed_at_s: float | None = None

    # -- HTTP ---------------------------------------------------------------------------------------------------

    def query(self, promql: str, at_s: float | None = None) -> dict[str, Any]:
        """Run one instant query; return its ``data`` object. Raises PrometheusError with a clear message."""
        form = {"query": promql}
        if at_s is not None:
            form["time"] = f"{at_s:.3f}"
        where = f"prometheus {self.url}"
        try:
            resp = self.session.post(f"{self.url}/api/v1/query", data=form, timeout=self.timeout_s)
        except requests.exceptions.Timeout:
            raise PrometheusError(f"{where}: timed out after {self.timeout_s:g} s", fatal=True) from None
        except requests.exceptions.ConnectionError as exc:
            raise PrometheusError(f"{where}: {_connection_reason(exc)}", fatal=True) from None
        except requests.exceptions.RequestException as exc:
            raise PrometheusError(f"{where}: {exc}", fatal=True) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = ""
            if isinstance(body, dict):
                detail = f"{body.get('errorType', '')}: {body.get('error', '')}".strip(": ")
            if not detail:
                detail = resp.text[:200].strip()
            # 4xx/422: this query is bad, the server is fine; 5xx and non-JSON: treat the server as failing
            fatal = resp.status_code >= 500 or body is None
            raise PrometheusError(f"{where}: HTTP {resp.status_code}: {detail}", fatal=fatal)
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"{where}: response without a data object", fatal=False)
        return data

    # -- refresh ------------------------------------------------------------------------------------------------

    def refresh(self, specs: Mapping[str, AutoscalerSpec], now_s: float) -> None:
        """Run the grouped queries for ``specs`` (autoscaler key -> spec) at evaluation time ``now_s`` and keep
        one ``Signals`` per autoscaler for ``view(key)``. Never raises for Prometheus or spec problems.

        Two rounds, each at most one query per signal and group: first the frontend and pool-load queries, then
        the worker latency histograms, only for autoscalers whose frontend series are absent (the worker
        histograms are the largest series sets; with a proxy in front of every deployment they are skipped).
        With ``extra_percentiles`` the same rounds also fetch those TTFT/ITL quantiles (see ``percentiles``)."""
        started = time.monotonic()
        plan = plan_queries(specs, self.profiles, self.extra_percentiles)
        run = _Round(self, now_s)
        first = {k: v for k, v in plan.values_by_key.items() if k.kind not in WORKER_LATENCY_KINDS}
        run.execute(first)

        used: dict[str, dict[str, QueryKey]] = {}
        second: dict[QueryKey, dict[str, set[str]]] = {}
        for name, keys in plan.keys_by_autoscaler.items():
            mine = {role: k for role, k in keys.items() if k.kind not in WORKER_LATENCY_KINDS}
            ident = plan.idents[name]
            for fe_role, worker_roles in (
                (FE_TTFT_Q, (W_TTFT_Q, W_TTFT_MEAN)),
                (FE_ITL_Q, (W_ITL_Q, W_ITL_MEAN)),
            ):
                if not any(r in keys for r in worker_roles):
                    continue
                fe = run.outcomes.get(keys[fe_role]) if fe_role in keys else None
                if fe is not None and (fe.error or ident in fe.rows):
                    continue  # frontend series exist (or failed: this autoscaler reports that error)
                extra = tuple(percentile_role(worker_roles[0], q) for q in self.extra_percentiles)
                for role in (*worker_roles, *extra):
                    key = keys[role]
                    mine[role] = key
                    bucket = second.setdefault(key, {label: set() for label in key.label_names})
                    for label, value in zip(key.label_names, ident, strict=True):
                        bucket[label].add(value)
            used[name] = mine
        run.execute(second)

        signals: dict[str, Signals] = {}
        percentiles: dict[str, dict[str, dict[float, float | None]]] = {}
        for name, error in plan.spec_errors.items():
            signals[name] = Signals(time_s=now_s, error=error)
        for name, keys in used.items():
            outcomes = [run.outcomes[k] for k in keys.values()]
            errors = [o.error for o in outcomes if o.error]
            if errors:
                signals[name] = Signals(time_s=now_s, error=errors[0])
                continue
            spec = specs[name]
            ident = plan.idents[name]
            results = {role: run.outcomes[k].rows for role, k in keys.items()}
            try:
                if spec.metrics.source == CUSTOM:
                    signals[name] = assemble_custom(keys, ident, results, now_s)
                else:
                    profile = self.profiles[spec.metrics.source]
                    signals[name] = assemble_signals(profile, ident, results, now_s)
                    if self.extra_percentiles:
                        percentiles[name] = assemble_percentiles(profile, ident, results, self.extra_percentiles)
            except ValueError as exc:
                signals[name] = Signals(time_s=now_s, error=str(exc))
                percentiles.pop(name, None)
        with self._lock:
            self._signals = signals
            self._percentiles = percentiles
            self._refreshed_at_s = now_s
            self.queries_last_refresh = run.count
            self.query_seconds_last_refresh = tuple(run.timings)
            self.last_refresh_duration_s = time.monotonic() - started
            self.last_error = run.fatal or next((o.error for o in run.outcomes.values() if o.error), None)
            self.last_fatal_error = run.fatal

    def _run_one(
        self, key: QueryKey, label_values: Mapping[str, set[str]], now_s: float
    ) -> tuple[_Outcome, float]:
        """Build, send and split one query. Returns the outcome and its wall time."""
        profile = self.profiles.get(key.profile)
        try:
            promql = build_query(key, profile, label_values)
        except ValueError as exc:
            return _Outcome(error=f"query {key.kind}: {exc}"), 0.0
        started = time.monotonic()
        try:
            data = self.query(promql, at_s=now_s)
        except PrometheusError as exc:
            return _Outcome(
                error=str(exc) if exc.fatal else f"{exc} (query {key.kind})", fatal=exc.fatal
            ), 0.0
        elapsed = time.monotonic() - started
        pooled = profile.pool_label if key.kind in WORKER_KINDS and profile else None
        if key.kind == FE_REQUESTS:
            pooled = PART_LABEL  # the total's row has no part ("") and the failed part's row says so
        names = key.label_names
        if key.kind in FRONTEND_KINDS and profile is not None:
            names = tuple(profile.frontend_label(n) for n in names)
        if key.kind == CUSTOM_SINGLE:
            names = ()
        try:
            return _Outcome(rows=split_result(data, names, pooled)), elapsed
        except ValueError as exc:
            return _Outcome(error=f"prometheus {self.url}: query {key.kind}: {exc}"), elapsed

    def signals(self, key: str, now_s: float) -> Signals:
        """The Signals of autoscaler ``key`` from the last refresh (an error Signals when there is none)."""
        with self._lock:
            found = self._signals.get(key)
            refreshed_at = self._refreshed_at_s
        if refreshed_at is None:
            return Signals(time_s=now_s, error=f"prometheus {self.url}: no refresh has run yet")
        if found is None:
            return Signals(
                time_s=now_s, error=f"prometheus {self.url}: autoscaler {key!r} was not in the last refresh"
            )
        age_s = now_s - refreshed_at
        if age_s > self.max_refresh_age_s:
            return Signals(
                time_s=now_s, error=f"prometheus {self.url}: metrics last refreshed {age_s:.0f} s ago"
            )
        return found

    def view(self, key: str) -> MetricsSource:
        return _View(self, key)

    def percentiles(self, key: str) -> dict[str, dict[float, float | None]]:
        """``{"ttft": {q: seconds}, "itl": {q: seconds}}`` at ``extra_percentiles`` for autoscaler ``key`` from the
        last refresh, chosen like ``Signals.ttft_s``/``itl_s`` (frontend series, else the workers'); a missing
        value is None. Empty when not fetched (no extra percentiles, a ``custom`` source, a failed refresh):
        read ``signals(key, now_s)`` first for freshness and errors."""
        with self._lock:
            found = self._percentiles.get(key, {})
        return {signal: dict(values) for signal, values in found.items()}

    def pod_load(
        self, namespace: str, pool: Pool, pods: Sequence[str], *, profile: str = "vllm", freshness_s: float = 60.0
    ) -> dict[str, float]:
        """Running requests per pod (``kube.PodLoad``: the least-loaded pods get the lowest pod-deletion-cost).
        One query for all ``pods``; pods without a fresh series are absent from the answer (the caller treats
        them as busiest). Raises PrometheusError, or ValueError for an unknown profile."""
        if not pods:
            return {}
        found = self.profiles.get(profile)
        if found is None:
            raise ValueError(f"pod load: unknown metric profile {profile!r}")
        data = self.query(pod_running_query(found, namespace, pods, freshness_s), at_s=time.time())
        rows = split_result(data, (found.pod_label,), None)
        wanted = set(pods)
        return {
            ident[0]: value
            for ident, row in rows.items()
            if ident[0] in wanted and (value := row.get(None)) is not None
        }


class _Round:
    """Queries of one refresh, sent ``max_concurrency`` at a time. After a fatal error (server unreachable,
    timeout, 5xx) nothing more is sent: the remaining queries get the same error."""

    def __init__(self, source: PrometheusMetricsSource, now_s: float) -> None:
        self.source = source
        self.now_s = now_s
        self.outcomes: dict[QueryKey, _Outcome] = {}
        self.timings: list[tuple[str, float]] = []
        self.count = 0
        self.fatal: str | None = None
        self._lock = threading.Lock()

    def _one(self, key: QueryKey, label_values: Mapping[str, set[str]]) -> None:
        with self._lock:
            if self.fatal is not None:
                self.outcomes[key] = _Outcome(error=self.fatal, fatal=True)
                return
            self.count += 1
        outcome, elapsed = self.source._run_one(key, label_values, self.now_s)
        with self._lock:
            self.outcomes[key] = outcome
            if outcome.fatal and self.fatal is None:
                self.fatal = outcome.error
            elif not outcome.error:
                self.timings.append((key.kind, elapsed))

    def execute(self, queries: Mapping[QueryKey, Mapping[str, set[str]]]) -> None:
        items = list(queries.items())
        workers = min(self.source.max_concurrency, len(items))
        if workers <= 1:
            for key, values in items:
                self._one(key, values)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql") as pool:
            for future in [pool.submit(self._one, key, values) for key, values in items]:
                future.result()


@dataclass(frozen=True)
class _View:
    source: PrometheusMetricsSource
    key: str

    def observe(self, spec: AutoscalerSpec, now_s: float) -> Signals:
        return self.source.signals(self.key, now_s)


def _connection_reason(exc: requests.exceptions.ConnectionError) -> str:
    text = str(exc)
    lowered = text.lower()
    for needle, reason in (
        ("certificate verify failed", "TLS: server certificate not trusted (--prometheus-ca-file names the CA "
         "that signed it)"),
        ("certificate required", "TLS: the server requires a client certificate (--prometheus-cert-file)"),
        ("bad certificate", "TLS: the server rejected the client certificate"),
        ("eof occurred in violation of protocol", "TLS: the server closed the handshake (does it require a "
         "client certificate? --prometheus-cert-file)"),
        ("unknown ca", "TLS: the server does not trust the client certificate's CA"),
        ("wrong version number", "TLS: the server does not speak TLS (an http:// URL?)"),
        ("connection refused", "connection refused"),
        ("name or service not known", "host not found"),
        ("nodename nor servname", "host not found"),
        ("temporary failure in name resolution", "host not found"),
        ("no route to host", "no route to host"),
        ("connection reset", "connection reset"),
        ("remotedisconnected", "connection closed by server"),
        ("timed out", "connect timed out"),
    ):
        if needle in lowered:
            return reason
    return f"connection failed: {text[:200]}"


# ---------------------------------------------------------------------------------------------------------------
# `pdscale promql`: show (and optionally run) the queries for spec files


def load_metric_profiles(path: str) -> dict[str, MetricProfile]:
    """Metric profile overrides from a YAML file (see ``profiles_from_mapping``)."""
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from None
    return profiles_from_mapping(data or {}, where=path)

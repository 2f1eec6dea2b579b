"""The P/D proxy's Prometheus series: the user-visible latencies pdscale's default metric profile reads.

Names and labels are what ``autoscaler/prometheus.py``'s ``vllm`` profile queries (``frontend_*`` fields);
histogram bucket edges are vLLM's (``autoscaler/core/buckets.py``), so a percentile read from the proxy has the
resolution of one read from vLLM.

* ``pdscale_proxy_time_to_first_token_seconds{model_name}``: request received -> first token event written to
  the client (TTFT as the user sees it: prefill queue and compute, KV hand-off, decode queue, both hops).
* ``pdscale_proxy_inter_token_latency_seconds{model_name}``: gap between successive token events written.
* ``pdscale_proxy_e2e_request_latency_seconds{model_name}``: request received -> last byte written, every
  finished request whatever its outcome.
* ``pdscale_proxy_requests_total{model_name,outcome}``: every request the proxy answered, by ``outcome`` =
  ``ok`` | ``4xx`` | ``5xx`` | ``client_abort`` | ``no_upstream``. This, not the TTFT count, is the controller's
  request rate: a request that failed or found no upstream is still load that arrived.
* ``pdscale_proxy_requests_in_flight{model_name}``: accepted and not finished; ``pdscale_proxy_requests_pending``:
  accepted and no token sent yet (waiting for an upstream, in prefill, in the KV hand-off or decode queue).
* ``pdscale_proxy_prompt_tokens_total`` / ``pdscale_proxy_generation_tokens_total{model_name}``: from the usage
  the decode worker reports (else the token events counted).
* ``pdscale_proxy_arrived_requests_total`` / ``pdscale_proxy_arrived_prompt_tokens_total{model_name}``: every request
  the proxy accepted and its prompt tokens, counted when it ARRIVES (exact for token-id prompts; text is counted by
  the emulated worker's rule, an estimate of a real tokenizer's count). The served counters above lag the demand
  while a queue grows, and a served mean prompt lags a change of the prompt length by the queue's wait; the
  controller reads the demand from these (``Signals.arrived_request_rate_per_s``).
* ``pdscale_proxy_upstream_errors_total{role,reason}``: upstream failures (``connect``, ``status_5xx``,
  ``draining``, ``bad_response``, ``midstream``) whether or not a retry saved the request; ``pdscale_proxy_retries_total{role}``.
* ``pdscale_proxy_endpoints{role,state}``: endpoints known per health state; ``pdscale_proxy_draining``: 1 while
  the proxy itself drains.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from autoscaler.core.buckets import ITL_BUCKETS_S, REQUEST_LATENCY_BUCKETS_S, TTFT_BUCKETS_S

OUTCOMES = ("ok", "4xx", "5xx", "client_abort", "no_upstream")
TTFT_NAME = "pdscale_proxy_time_to_first_token_seconds"
ITL_NAME = "pdscale_proxy_inter_token_latency_seconds"
E2E_NAME = "pdscale_proxy_e2e_request_latency_seconds"
REQUESTS_NAME = "pdscale_proxy_requests"  # exposed as pdscale_proxy_requests_total
ARRIVED_REQUESTS_NAME = "pdscale_proxy_arrived_requests"  # exposed with _total
ARRIVED_PROMPT_TOKENS_NAME = "pdscale_proxy_arrived_prompt_tokens"  # exposed with _total


class ProxyMetrics:
    """All series of one proxy process, on its own registry (tests run several proxies in one interpreter)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            TTFT_NAME,
            "Time from request arrival at the proxy to the first token sent to the client.",
            ["model_name"],
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )
        self.itl = Histogram(
            ITL_NAME,
            "Gap between successive token events sent to the client.",
            ["model_name"],
            buckets=ITL_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            E2E_NAME,
            "Time from request arrival at the proxy to its last byte sent, any outcome.",
            ["model_name"],
            buckets=REQUEST_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter(
            REQUESTS_NAME,
            "Requests answered by the proxy, by outcome (ok, 4xx, 5xx, client_abort, no_upstream).",
            ["model_name", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "pdscale_proxy_requests_in_flight",
            "Requests accepted and not finished.",
            ["model_name"],
            registry=r,
        )
        self.pending = Gauge(
            "pdscale_proxy_requests_pending",
            "Requests accepted that have not sent a token yet.",
            ["model_name"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "pdscale_proxy_prompt_tokens", "Prompt tokens of finished requests.", ["model_name"], registry=r
        )
        self.generation_tokens = Counter(
            "pdscale_proxy_generation_tokens", "Output tokens sent to clients.", ["model_name"], registry=r
        )
        self.arrived_requests = Counter(
            ARRIVED_REQUESTS_NAME, "Requests accepted, counted as they arrive.", ["model_name"], registry=r
        )
        self.arrived_prompt_tokens = Counter(
            ARRIVED_PROMPT_TOKENS_NAME,
            "Prompt tokens of the requests accepted, counted as they arrive.",
            ["model_name"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "pdscale_proxy_upstream_errors",
            "Upstream failures by role and reason, retried or not.",
            ["role", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "pdscale_proxy_retries", "Requests re-sent to another upstream.", ["role"], registry=r
        )
        self.endpoints = Gauge(
            "pdscale_proxy_endpoints",
            "Upstream endpoints by role and health state.",
            ["role", "state"],
            registry=r,
        )
        self.draining = Gauge("pdscale_proxy_draining", "1 while the proxy drains after SIGTERM.", registry=r)

    def touch(self, model_name: str) -> None:
        """Create a model's series at zero so that rates start from the first request, not the second."""
        for outcome in OUTCOMES:
            self.requests.labels(model_name, outcome)
        self.ttft.labels(model_name)
        self.itl.labels(model_name)
        self.e2e.labels(model_name)
        self.in_flight.labels(model_name)
        self.pending.labels(model_name)
        self.prompt_tokens.labels(model_name)
        self.generation_tokens.labels(model_name)
        self.arrived_requests.labels(model_name)
        self.arrived_prompt_tokens.labels(model_name)

"""A Prometheus exporter that serves vLLM-format series with KNOWN latency distributions, for tests and benches.

Not an emulated vLLM (that is ``workers/``): no requests are served. Each exported pod advances its counters and
histograms deterministically as a function of wall time (rate x elapsed), so what Prometheus scrapes is exactly
predictable: with a constant load, the bucket rates are proportional to the distribution's bucket weights and
``histogram_quantile`` over them equals ``autoscaler.core.histogram.histogram_quantile`` over the cumulative
weights, whatever Prometheus' rate extrapolation does (every bucket is scaled by the same factor).

Series names, labels (``engine``, ``model_name``) and bucket edges are vLLM V1's (reference/vllm-metrics.md §2,
``autoscaler/core/buckets.py``). The pool label (``role`` by default, see ``autoscaler/prometheus.py``), ``pod``
and ``namespace`` are put on the series themselves, standing in for the relabeled target labels of a cluster,
so one HTTP endpoint can serve many pods. A proxy/gateway is exported with the ``pdscale_proxy_*`` histograms
(or any frontend names, e.g. Dynamo's or llm-d's).

Everything goes through prometheus_client with an explicit ``CollectorRegistry`` (a custom collector yielding
metric families), served by ``prometheus_client.start_http_server`` on a loopback port.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.utils import floatToGoString

from autoscaler.core.buckets import ITL_BUCKETS_S, PROMPT_TOKENS_BUCKETS, TTFT_BUCKETS_S
from autoscaler.core.histogram import histogram_quantile

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LatencyMix:
    """A discrete latency distribution: sample ``value_s`` with relative ``weight``."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points or any(w < 0 or v < 0 for v, w in self.points) or self.total_weight <= 0:
            raise ValueError(
                f"LatencyMix needs non-negative values and a positive total weight: {self.points}"
            )

    @classmethod
    def fixed(cls, value_s: float) -> LatencyMix:
        return cls(((value_s, 1.0),))

    @property
    def total_weight(self) -> float:
        return sum(w for _, w in self.points)

    @property
    def mean_s(self) -> float:
        return sum(v * w for v, w in self.points) / self.total_weight

    def cumulative_fractions(self, edges_s: Sequence[float]) -> list[float]:
        """Fraction of samples <= each edge (Prometheus ``le``), then 1.0 for +Inf."""
        total = self.total_weight
        return [sum(w for v, w in self.points if v <= edge) / total for edge in edges_s] + [1.0]

    def bucketed_quantile(self, q: float, edges_s: Sequence[float]) -> float | None:
        """What Prometheus' histogram_quantile reports for this distribution with these bucket edges."""
        return histogram_quantile(q, [*edges_s, math.inf], self.cumulative_fractions(edges_s))


@dataclass(frozen=True)
class Load:
    """A constant load on one pod (or proxy). Rates are per second; gauges are current values."""

    requests_per_s: float = 0.0
    ttft: LatencyMix | None = None
    itl: LatencyMix | None = None
    itl_samples_per_request: float = 0.0  # output events after the first one
    prompt_tokens_per_request: float = 0.0
    # prompt lengths in tokens (a mix of (length, weight)), exported as vllm:request_prompt_tokens; None: no samples
    prompt_lengths: LatencyMix | None = None
    output_tokens_per_request: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    # of ``waiting``, the requests deferred (vLLM's reason="deferred": e.g. waiting for their KV from a prefill pod);
    # None: no ``vllm:num_requests_waiting_by_reason`` series, as before vLLM exported one
    waiting_deferred: float | None = None
    # share of ``requests_per_s`` that fails: counted as requests (vLLM ``finished_reason="error"``, the proxy's
    # failure outcome) but with no latency samples and no tokens, as a failing request leaves no trace there
    failure_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_fraction <= 1.0:
            raise ValueError(f"failure_fraction must be in [0, 1], got {self.failure_fraction}")


@dataclass
class _Accumulator:
    """Counters as piecewise-linear functions of time: value(t) = base + rate x (t - since)."""

    since_s: float
    load: Load
    base: dict[str, list[float]] = field(default_factory=dict)

    def values(
        self, t_s: float, ttft_edges: Sequence[float], itl_edges: Sequence[float]
    ) -> dict[str, list[float]]:
        dt = max(0.0, t_s - self.since_s)
        ld = self.load
        total = ld.requests_per_s * dt
        req = total * (1.0 - ld.failure_fraction)  # served: latency samples and tokens
        itl_n = req * ld.itl_samples_per_request
        ttft_cum = ld.ttft.cumulative_fractions(ttft_edges) if ld.ttft else [0.0] * (len(ttft_edges) + 1)
        itl_cum = ld.itl.cumulative_fractions(itl_edges) if ld.itl else [0.0] * (len(itl_edges) + 1)
        lengths = ld.prompt_lengths
        len_cum = (
            lengths.cumulative_fractions(PROMPT_TOKENS_BUCKETS) if lengths else [0.0] * (len(PROMPT_TOKENS_BUCKETS) + 1)
        )
        fresh = {
            "ttft_buckets": [req * f for f in ttft_cum] if ld.ttft else ttft_cum,
            "ttft_sum": [req * ld.ttft.mean_s if ld.ttft else 0.0],
            "itl_buckets": [itl_n * f for f in itl_cum] if ld.itl else itl_cum,
            "itl_sum": [itl_n * ld.itl.mean_s if ld.itl else 0.0],
            "prompt_len_buckets": [req * f for f in len_cum],
            "prompt_len_sum": [req * lengths.mean_s if lengths else 0.0],
            "requests": [req],
            "failed": [total - req],
            "prompt_tokens": [req * ld.prompt_tokens_per_request],
            "output_tokens": [req * ld.output_tokens_per_request],
        }
        if not self.base:
            return fresh
        return {k: [b + f for b, f in zip(self.base[k], fresh[k], strict=True)] for k in fresh}

    def rebase(self, t_s: float, load: Load, ttft_edges: Sequence[float], itl_edges: Sequence[float]) -> None:
        self.base = self.values(t_s, ttft_edges, itl_edges)
        self.since_s = t_s
        self.load = load


@dataclass
class ExportedPod:
    """One vLLM worker pod (one engine) as seen by Prometheus."""

    name: str
    role: str  # the pool label's value: prefill | decode
    model_name: str
    load: Load = field(default_factory=Load)
    namespace: str = "default"
    engine: str = "0"
    kv_metric: str = "vllm:kv_cache_usage_perc"  # or the pre-0.10 "vllm:gpu_cache_usage_perc"
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    frozen_at_s: float | None = None  # when set: values stop and carry this explicit timestamp (stale data)
    # put the collection time on every sample, as federation or a relaying exporter does. Prometheus does not
    # write staleness markers for such series, so after ``freeze`` its lookback keeps serving the old sample;
    # without it, a series that suddenly carries a timestamp is marked stale at once.
    explicit_timestamps: bool = False


@dataclass
class ExportedFrontend:
    """A P/D proxy or gateway exposing the user-visible TTFT/ITL histograms and a request count."""

    name: str
    model_name: str
    load: Load = field(default_factory=Load)
    namespace: str = "default"
    ttft_metric: str = "pdscale_proxy_time_to_first_token_seconds"
    itl_metric: str = "pdscale_proxy_inter_token_latency_seconds"
    requests_metric: str | None = None  # a counter name without _total, e.g. "dynamo_frontend_requests"
    # the requests counter's outcome label and its (success, failure) values: the pdscale proxy's
    # ``outcome="ok"|"5xx"``, Dynamo's ``status="success"|"error"``; None: one series, no outcome
    outcome_label: str | None = "outcome"
    outcome_values: tuple[str, str] = ("ok", "5xx")
    model_label: str = "model_name"  # Dynamo's frontend says "model"
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    # the pdscale proxy's counters of requests and prompt tokens on arrival (names without _total); None: not exported
    arrivals_metric: str | None = None  # e.g. "pdscale_proxy_arrived_requests": every request, failed ones too
    arrived_prompt_tokens_metric: str | None = None  # e.g. "pdscale_proxy_arrived_prompt_tokens"


class VllmExporter:
    """A custom collector over many pods and frontends, served on one loopback HTTP port.

    ``set_load``/``freeze``/``remove`` change what is exported from the next scrape on; counters stay monotonic.
    """

    def __init__(
        self,
        *,
        pool_label: str = "role",
        ttft_edges_s: Sequence[float] = TTFT_BUCKETS_S,
        itl_edges_s: Sequence[float] = ITL_BUCKETS_S,
        clock: Callable[[], float] = time.time,
        negotiate: bool = False,
    ) -> None:
        self.negotiate = negotiate
        self._held: bytes | None = None
        self.pool_label = pool_label
        self.ttft_edges_s = tuple(ttft_edges_s)
        self.itl_edges_s = tuple(itl_edges_s)
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()
        self._pods: dict[str, tuple[ExportedPod, _Accumulator]] = {}
        self._frontends: dict[str, tuple[ExportedFrontend, _Accumulator]] = {}
        self._server: object | None = None
        self.port: int | None = None
        self.registry.register(self)

    # -- content ------------------------------------------------------------------------------------------------

    def add_pod(self, pod: ExportedPod) -> ExportedPod:
        """Export ``pod``; a second engine of the same pod (same name, another ``engine``) is kept beside the
        first under the key ``name#engine``."""
        key = pod.name if pod.engine == "0" else f"{pod.name}#{pod.engine}"
        with self._lock:
            self._pods[key] = (pod, _Accumulator(self.clock(), pod.load))
        return pod

    def add_frontend(self, frontend: ExportedFrontend) -> ExportedFrontend:
        with self._lock:
            self._frontends[frontend.name] = (frontend, _Accumulator(self.clock(), frontend.load))
        return frontend

    def set_load(self, name: str, load: Load) -> None:
        """Change a pod's or frontend's load from now on (counters continue from their current values)."""
        with self._lock:
            table: Mapping[str, tuple[ExportedPod | ExportedFrontend, _Accumulator]]
            table = self._pods if name in self._pods else self._frontends
            obj, acc = table[name]
            acc.rebase(self.clock(), load, self.ttft_edges_s, self.itl_edges_s)
            obj.load = load

    def freeze(self, name: str) -> None:
        """Stop a pod's values and stamp them with the current time: Prometheus keeps seeing that old sample."""
        with self._lock:
            pod, acc = self._pods[name]
            now = self.clock()
            acc.rebase(now, replace(pod.load, requests_per_s=0.0), self.ttft_edges_s, self.itl_edges_s)
            pod.frozen_at_s = now

    def remove(self, name: str) -> None:
        with self._lock:
            self._pods.pop(name, None)
            self._frontends.pop(name, None)

    # -- collector ----------------------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            pods = [
                (p, a, a.values(p.frozen_at_s or now, self.ttft_edges_s, self.itl_edges_s), now)
                for p, a in self._pods.values()
            ]
            fronts = [
                (f, a.values(self.clock(), self.ttft_edges_s, self.itl_edges_s))
                for f, a in self._frontends.values()
            ]
        yield from self._collect_pods(pods)
        yield from self._collect_frontends(fronts)

    def _collect_pods(
        self, pods: list[tuple[ExportedPod, _Accumulator, dict[str, list[float]], float]]
    ) -> Iterator[Metric]:
        extra_names = sorted({k for p, *_ in pods for k in p.extra_labels})
        names = ["engine", "model_name", "namespace", "pod", self.pool_label, *extra_names]

        def labels(p: ExportedPod) -> list[str]:
            return [
                p.engine,
                p.model_name,
                p.namespace,
                p.name,
                p.role,
                *(p.extra_labels.get(k, "") for k in extra_names),
            ]

        ttft = HistogramMetricFamily(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels=names
        )
        itl = HistogramMetricFamily(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", labels=names
        )
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*names, "finished_reason"],
        )
        prompt = CounterMetricFamily(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels=names
        )
        prompt_lengths = HistogramMetricFamily(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", labels=names
        )
        gen = CounterMetricFamily(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels=names
        )
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Number of requests in model execution batches.", labels=names
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=names
        )
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason", "Number of waiting requests by reason.", labels=[*names, "reason"]
        )
        kv = {
            name: GaugeMetricFamily(name, "KV-cache usage. 1 means 100 percent usage.", labels=names)
            for name in sorted({p.kv_metric for p, *_ in pods})
        }
        for pod, acc, v, now in pods:
            lv = labels(pod)
            ts = pod.frozen_at_s or (now if pod.explicit_timestamps else None)
            ttft.add_metric(
                lv, _buckets(self.ttft_edges_s, v["ttft_buckets"]), v["ttft_sum"][0], timestamp=ts
            )
            itl.add_metric(lv, _buckets(self.itl_edges_s, v["itl_buckets"]), v["itl_sum"][0], timestamp=ts)
            success.add_metric([*lv, "stop"], v["requests"][0], timestamp=ts)
            success.add_metric([*lv, "error"], v["failed"][0], timestamp=ts)
            prompt.add_metric(lv, v["prompt_tokens"][0], timestamp=ts)
            prompt_lengths.add_metric(
                lv, _buckets(PROMPT_TOKENS_BUCKETS, v["prompt_len_buckets"]), v["prompt_len_sum"][0], timestamp=ts
            )
            gen.add_metric(lv, v["output_tokens"][0], timestamp=ts)
            running.add_metric(lv, acc.load.running, timestamp=ts)
            waiting.add_metric(lv, acc.load.waiting, timestamp=ts)
            if acc.load.waiting_deferred is not None:
                by_reason.add_metric([*lv, "capacity"], acc.load.waiting - acc.load.waiting_deferred, timestamp=ts)
                by_reason.add_metric([*lv, "deferred"], acc.load.waiting_deferred, timestamp=ts)
            kv[pod.kv_metric].add_metric(lv, acc.load.kv_usage, timestamp=ts)
        yield from (ttft, itl, success, prompt, prompt_lengths, gen, running, waiting, by_reason, *kv.values())

    def _collect_frontends(
        self, fronts: list[tuple[ExportedFrontend, dict[str, list[float]]]]
    ) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for front, v in fronts:
            extra = sorted(front.extra_labels)
            names = [front.model_label, "namespace", "pod", *extra]
            lv = [front.model_name, front.namespace, front.name, *(front.extra_labels[k] for k in extra)]
            key = lambda metric, names=names: f"{metric}|{','.join(names)}"  # noqa: E731
            for metric, edges, b, s in (
                (front.ttft_metric, self.ttft_edges_s, v["ttft_buckets"], v["ttft_sum"][0]),
                (front.itl_metric, self.itl_edges_s, v["itl_buckets"], v["itl_sum"][0]),
            ):
                fam = families.setdefault(
                    key(metric), HistogramMetricFamily(metric, "Frontend latency.", labels=names)
                )
                assert isinstance(fam, HistogramMetricFamily)
                fam.add_metric(lv, _buckets(edges, b), s)
            if front.requests_metric:
                outcome = [front.outcome_label] if front.outcome_label else []
                fam = families.setdefault(
                    key(front.requests_metric, [*names, *outcome]),
                    CounterMetricFamily(front.requests_metric, "Requests.", labels=[*names, *outcome]),
                )
                assert isinstance(fam, CounterMetricFamily)
                if front.outcome_label:
                    fam.add_metric([*lv, front.outcome_values[0]], v["requests"][0])
                    fam.add_metric([*lv, front.outcome_values[1]], v["failed"][0])
                else:
                    fam.add_metric(lv, v["requests"][0] + v["failed"][0])
            arrived = v["requests"][0] + v["failed"][0]
            per_request = v["prompt_tokens"][0] / v["requests"][0] if v["requests"][0] > 0 else 0.0
            for metric, value in ((front.arrivals_metric, arrived),
                                  (front.arrived_prompt_tokens_metric, arrived * per_request)):  # fmt: skip
                if metric:
                    fam = families.setdefault(key(metric), CounterMetricFamily(metric, "Arrivals.", labels=names))
                    assert isinstance(fam, CounterMetricFamily)
                    fam.add_metric(lv, value)
        yield from families.values()

    # -- serving ------------------------------------------------------------------------------------------------

    def start(self) -> int:
        """Serve /metrics on a free loopback port; return the port.

        By default the text format 0.0.4 is served whatever the scraper asks, so names keep vLLM's ``vllm:``
        spelling. ``negotiate=True`` (constructor) lets prometheus_client negotiate OpenMetrics, whose
        ``escaping=underscores`` output turns ``vllm:x`` into ``vllm_x`` on sample lines (client_python #1177):
        what Prometheus stores from a vLLM built on such a prometheus_client.
        """
        app = make_wsgi_app(self.registry) if self.negotiate else self._text_app
        server = make_server(LOOPBACK, 0, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="vllm-exporter", daemon=True)
        thread.start()
        self._server = server
        self.port = int(server.server_port)
        return self.port

    def hold_exposition(self) -> int:
        """Generate the exposition now and serve exactly these bytes until the next call (or ``release``).

        For benches with 10^5 series: generating costs seconds of CPU, so it is done when the bench chooses,
        not inside every scrape. Values stay constant while held (counters flat). Returns the body size.
        """
        body = generate_latest(self.registry)
        self._held = body
        return len(body)

    def release_exposition(self) -> None:
        self._held = None

    def _text_app(self, environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        held = self._held
        body = held if held is not None else generate_latest(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    def stop(self) -> None:
        server = self._server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            self._server = None

    @property
    def target(self) -> str:
        if self.port is None:
            raise RuntimeError("exporter not started")
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> VllmExporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _buckets(edges_s: Sequence[float], cumulative: Sequence[float]) -> list[tuple[str, float]]:
    return [(floatToGoString(e), c) for e, c in zip(edges_s, cumulative[:-1], strict=True)] + [
        ("+Inf", cumulative[-1])
    ]

"""vLLM V1's Prometheus metrics for the emulated worker: the same names, types, labels, HELP texts and buckets.

Definitions follow a real vLLM 0.32 capture (../shared/reference/vllm-metrics-sample-0.32.txt; the schema test
diffs against it) and the timing semantics of vLLM's ``docs/design/metrics.md`` (reference/vllm-metrics.md §2):

* TTFT: arrival (request accepted) to the first token; ITL: one sample per later output token, the gap to the
  previous one; request_time_per_output_token: decode time / (tokens - 1) per finished request (0 for one token);
* e2e: arrival to finish; queue: arrival (QUEUED) to first admission (SCHEDULED) -- on a P/D decode worker it
  includes the KV-transfer wait, since vLLM stamps SCHEDULED only once the KV has arrived; prefill: SCHEDULED to
  first token; decode: first to last token; inference: SCHEDULED to last token;
* tokens: ``prompt_tokens_total`` counts the whole prompt when its prefill completes; ``prompt_tokens_by_source``
  splits it into ``local_compute`` and, for a decode leg with remote KV, ``external_kv_transfer`` (the whole
  prompt, as a real vLLM 0.32 NixlConnector pair reports it);
* running / waiting / waiting_by_reason / kv_cache_usage_perc / num_preemptions are read from the engine's
  snapshot at scrape time (``deferred`` = decode requests still pulling their KV);
* with a KV connector (roles prefill and decode) the ``vllm:nixl_*`` series exist too, observed on the decode
  side per pulled prompt, and the decode side has ``vllm:num_requests_kv_fetch_by_stage``.

Everything is registered on an explicit ``CollectorRegistry`` with the ``engine`` and ``model_name`` labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from autoscaler.core.buckets import ITL_BUCKETS_S, REQUEST_LATENCY_BUCKETS_S, TTFT_BUCKETS_S, buckets_1_2_5

ENGINE_INDEX = "0"
LABELS = ("model_name", "engine")
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
NIXL_TIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 5.0)
NIXL_BYTES_BUCKETS = tuple(float(2**k) for k in range(11, 34, 2))  # 2 KiB .. 8 GiB, x4
NIXL_DESCRIPTOR_BUCKETS = (10, 20, 30, 50, 75, 100, 200, 400, 1000, 2000, 4000, 10000, 20000, 50000)
TOKEN_LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class EngineGauges:
    """What the scrape-time collector reads from the engine."""

    running: int
    waiting_capacity: int
    waiting_deferred: int
    kv_usage_frac: float
    preemptions_total: int
    kv_fetch_in_progress: int = 0  # decode: KV transfers not finished yet (part of waiting_deferred)


@dataclass(frozen=True)
class CacheConfig:
    """The labels of ``vllm:cache_config_info`` that carry our values (the rest are vLLM's defaults)."""

    block_size: int
    num_gpu_blocks: int
    kv_cache_memory_bytes: int
    max_num_seqs: int
    enable_prefix_caching: bool = True  # vLLM's default; queries are counted, hits never happen here
    gpu_memory_utilization: float = 0.9


@dataclass(frozen=True)
class FinishedRequest:
    """One finished (or aborted) request's record, in monotonic seconds."""

    finish_reason: str
    prompt_tokens: int
    generation_tokens: int
    max_tokens: int
    max_tokens_param: int | None
    arrival_s: float
    scheduled_s: float | None
    first_token_s: float | None
    last_token_s: float | None
    finished_s: float
    preemptions: int
    external_prompt_tokens: int = 0  # prompt tokens whose KV arrived from a prefill worker


class _EngineStateCollector(Collector):
    """Gauges and the preemption counter, read from the engine when Prometheus scrapes."""

    def __init__(self, model_name: str, gauges: Callable[[], EngineGauges], cache: CacheConfig, created_s: float,
                 kv_consumer: bool = False):
        self.kv_consumer = kv_consumer
        self.labels = [model_name, ENGINE_INDEX]
        self.model_name = model_name
        self.gauges = gauges
        self.cache = cache
        self.created_s = created_s

    def _gauge(self, name: str, doc: str, value: float, extra: Sequence[str] = ()) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])
        family.add_metric(self.labels, value)
        return family

    def collect(self) -> Iterator[Metric]:
        g = self.gauges()
        yield self._gauge("vllm:num_requests_running", "Number of requests in model execution batches.", g.running)
        yield self._gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            g.waiting_capacity + g.waiting_deferred,
        )
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
            "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all "
            "reasons equals vllm:num_requests_waiting.",
            labels=[*LABELS, "reason"],
        )
        by_reason.add_metric([*self.labels, "capacity"], g.waiting_capacity)
        by_reason.add_metric([*self.labels, "deferred"], g.waiting_deferred)
        yield by_reason
        if self.kv_consumer:  # vLLM exposes it where a KV connector loads KV asynchronously (the decode side)
            stages = GaugeMetricFamily(
                "vllm:num_requests_kv_fetch_by_stage",
                "Number of waiting requests by async KV load stage. Stage labels: 'waiting_to_start' = needs an "
                "async KV load that has not started; 'in_progress' = load started and not yet reported finished; "
                "'completed_waiting' = load finished, request not running yet.",
                labels=[*LABELS, "stage"],
            )
            for stage, count in (("waiting_to_start", 0), ("in_progress", g.kv_fetch_in_progress),
                                 ("completed_waiting", 0)):
                stages.add_metric([*self.labels, stage], count)
            yield stages
        sleep = GaugeMetricFamily(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            labels=[*LABELS, "sleep_state"],
        )
        for state, value in (("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)):
            sleep.add_metric([*self.labels, state], value)
        yield sleep
        yield self._gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", g.kv_usage_frac)
        preemptions = CounterMetricFamily(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", labels=LABELS,
            created=self.created_s,
        )
        preemptions.add_metric(self.labels, g.preemptions_total, created=self.created_s)
        yield preemptions
        yield self._cache_config_info()

    def _cache_config_info(self) -> GaugeMetricFamily:
        c = self.cache
        labels = {
            "_block_size_resolved": "True",
            "block_size": str(c.block_size),
            "cache_dtype": "auto",
            "cache_hit_alignment_tokens": "None",
            "effective_attention_block_size": str(c.block_size),
            "enable_mamba_shared_prefix_checkpoint": "False",
            "enable_prefix_caching": str(c.enable_prefix_caching),
            "engine": ENGINE_INDEX,
            "gpu_memory_utilization": str(c.gpu_memory_utilization),
            "hash_block_size": "None",
            "is_attention_free": "False",
            "kv_cache_dtype_skip_layers": "[]",
            "kv_cache_layout": "None",
            "kv_cache_max_concurrency": str(float(c.num_gpu_blocks * c.block_size) / max(1, c.max_num_seqs)),
            "kv_cache_memory_bytes": str(c.kv_cache_memory_bytes),
            "kv_cache_size_tokens": str(c.num_gpu_blocks * c.block_size),
            "kv_offloading_backend": "native",
            "kv_offloading_size": "None",
            "kv_sharing_fast_prefill": "False",
            "mamba_block_size": "None",
            "mamba_cache_dtype": "auto",
            "mamba_cache_mode": "none",
            "mamba_page_size_padded": "None",
            "mamba_ssm_cache_dtype": "auto",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(c.num_gpu_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_cache_retention_interval": "0",
            "prefix_caching_hash_algo": "sha256",
            "prefix_match_unit": "None",
            "replayssm_buffer_len": "16",
            "skip_page_size_padded": "None",
            "sliding_window": "None",
            "swa_bounded_replay": "True",
            "use_kda_recoverssm": "False",
            "use_replayssm": "False",
            "user_specified_block_size": "False",
        }
        family = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=list(labels)
        )
        family.add_metric(list(labels.values()), 1.0)
        return family


class NixlMetrics:
    """NixlConnector's transfer series, exposed by vLLM on both sides of a P/D pair (observed on the decode side,
    which pulls the KV). Edges and HELP texts from a real vLLM 0.32 pair (tests/data/vllm-0.32-pd-*-metrics.txt)."""

    def __init__(self, reg: CollectorRegistry, labels: Sequence[str]) -> None:
        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Any:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=reg).labels(*labels)

        self.xfer_time = histogram("vllm:nixl_xfer_time_seconds",
                                   "Histogram of transfer duration for NIXL KV Cache transfers.", NIXL_TIME_BUCKETS_S)
        self.post_time = histogram("vllm:nixl_post_time_seconds",
                                   "Histogram of transfer post time for NIXL KV Cache transfers.",
                                   (0.001, *NIXL_TIME_BUCKETS_S))
        self.bytes = histogram("vllm:nixl_bytes_transferred",
                               "Histogram of bytes transferred per NIXL KV Cache transfers.", NIXL_BYTES_BUCKETS)
        self.descriptors = histogram("vllm:nixl_num_descriptors",
                                     "Histogram of number of descriptors per NIXL  KV Cache transfers.",
                                     NIXL_DESCRIPTOR_BUCKETS)
        for name, doc in (
            ("vllm:nixl_num_failed_transfers", "Number of failed NIXL KV Cache transfers, including handshake and "
             "notification failures. NOTE: KV expiry is tracked separately in vllm:nixl_num_kv_expired_reqs."),
            ("vllm:nixl_num_failed_notifications", "Number of failed NIXL KV Cache notifications. Retained for "
             "compatibility; these failures are also included in vllm:nixl_num_failed_transfers."),
            ("vllm:nixl_num_kv_expired_reqs", "Number of requests that had their KV expire. NOTE: This metric is "
             "tracked on the P instance."),
            ("vllm:nixl_num_notifications_after_expiry", "Number of completion notifications for requests that were "
             "no longer tracked, usually because their KV lease expired. The KV blocks may have been reused before "
             "the transfer finished. Counted per notification (one per remote rank), not per request."),
        ):
            Counter(name, doc, LABELS, registry=reg).labels(*labels)

    def transfer(self, duration_s: float, blocks: int, block_bytes: int) -> None:
        """One pulled prompt: whole blocks move; one descriptor per block; posting is instantaneous here."""
        self.xfer_time.observe(max(0.0, duration_s))
        self.post_time.observe(0.0)
        self.bytes.observe(blocks * block_bytes)
        self.descriptors.observe(blocks)


class StepTokens:
    """Groups token events by engine step (tokens of one step share its deadline) into ``iteration_tokens_total``.

    vLLM observes, once per engine step, the prompt tokens of the prefills that completed in it plus the tokens it
    generated. Events of a step reach the request handlers one by one, so a step is observed once a step two
    deadlines newer has been seen (handlers may lag a step behind one another) or when the worker is idle.
    """

    def __init__(self, observe: Callable[[int], None]) -> None:
        self.observe = observe
        self.pending: dict[float, int] = {}
        self.newest_s = -math.inf

    def add(self, deadline_s: float, tokens: int) -> None:
        if deadline_s > self.newest_s:
            previous, self.newest_s = self.newest_s, deadline_s
            for step_s in [s for s in self.pending if s < previous]:
                self.observe(self.pending.pop(step_s))
        self.pending[deadline_s] = self.pending.get(deadline_s, 0) + tokens

    def flush(self) -> None:
        for step_s in sorted(self.pending):
            self.observe(self.pending.pop(step_s))


class WorkerMetrics:
    """The worker's registry and the recording calls the server makes as tokens and requests finish."""

    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        gauges: Callable[[], EngineGauges],
        cache: CacheConfig,
        *,
        process_collectors: bool = True,
        kv_connector: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_collectors:  # what a plain (single API server) vLLM exposes too
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        reg = self.registry
        labels = [model_name, ENGINE_INDEX]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=reg)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=reg)

        self.created_s = time.time()
        for name, doc in (
            ("vllm:estimated_flops_per_gpu", "Estimated number of floating point operations per GPU (for Model "
             "Flops Utilization calculations)."),
            ("vllm:estimated_read_bytes_per_gpu", "Estimated number of bytes read from memory per GPU (for Model "
             "Flops Utilization calculations)."),
            ("vllm:estimated_write_bytes_per_gpu", "Estimated number of bytes written to memory per GPU (for Model "
             "Flops Utilization calculations)."),
        ):
            counter(name, doc).labels(*labels)
        reg.register(_EngineStateCollector(model_name, gauges, cache, self.created_s,
                                           kv_consumer=kv_connector in ("kv_consumer", "kv_both")))
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        ).labels(*labels)
        counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.").labels(*labels)
        self.external_queries = counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of "
            "queried tokens.",
        ).labels(*labels)
        self.external_hits = counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of "
            "cached tokens.",
        ).labels(*labels)
        counter("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.").labels(
            *labels
        )
        counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.").labels(*labels)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.").labels(*labels)
        by_source = Counter(
            "vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", [*LABELS, "source"], registry=reg
        )
        self.prompt_by_source = {s: by_source.labels(*labels, s) for s in PROMPT_SOURCES}
        self.prompt_cached = counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        ).labels(*labels)
        cached_by_source = Counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to "
            "DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at "
            "admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
            [*LABELS, "source"],
            registry=reg,
        )
        self.cached_by_source = {s: cached_by_source.labels(*labels, s) for s in CACHED_SOURCES}
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        ).labels(*labels)
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*LABELS, "finished_reason"],
            registry=reg,
        )
        self.request_success = {r: success.labels(*labels, r) for r in FINISHED_REASONS}
        rejections = Counter(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            ["model_name", "reason"],
            registry=reg,
        )
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            rejections.labels(model_name, reason)
        token_buckets = buckets_1_2_5(max_model_len)
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        ).labels(*labels)
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        ).labels(*labels)
        self.iteration_tokens = histogram(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKENS_BUCKETS
        ).labels(*labels)
        self.max_num_generation_tokens = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            token_buckets,
        ).labels(*labels)
        self.params_n = histogram(
            "vllm:request_params_n", "Histogram of the n request parameter.", PARAMS_N_BUCKETS
        ).labels(*labels)
        self.params_max_tokens = histogram(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", token_buckets
        ).labels(*labels)
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S
        ).labels(*labels)
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS_S
        ).labels(*labels)
        self.tpot_request = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS_S,
        ).labels(*labels)
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS_S,
        ).labels(*labels)
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        ).labels(*labels)
        self.inference_time = histogram(
            "vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        ).labels(*labels)
        self.prefill_time = histogram(
            "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        ).labels(*labels)
        self.decode_time = histogram(
            "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        ).labels(*labels)
        self.request_preemptions = histogram(
            "vllm:request_num_preemptions", "Histogram of the number of times a request was preempted.",
            NUM_PREEMPTIONS_BUCKETS,
        ).labels(*labels)
        self.prefill_kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            token_buckets,
        ).labels(*labels)

        self.nixl: NixlMetrics | None = NixlMetrics(reg, labels) if kv_connector else None
        self.token_lag = Histogram(
            "pdscale_worker_token_delivery_lag_seconds",
            "Emulator health (not a vLLM series): time from a token's model deadline (its step's end) to the "
            "worker handing it to the client connection. Large values mean the emulated timing is late.",
            ["model_name"], buckets=TOKEN_LAG_BUCKETS_S, registry=reg,
        ).labels(model_name)

    # ---- recording, called by the server as the engine's events arrive ----

    def first_token(self, arrival_s: float, first_token_s: float, prompt_tokens: int, external_tokens: int) -> None:
        """The request's prefill completed and its first token exists (vLLM counts prompt tokens here)."""
        self.ttft.observe(max(0.0, first_token_s - arrival_s))
        self.generation_tokens.inc()
        self.prompt_tokens.inc(prompt_tokens)
        self.prompt_by_source["local_compute"].inc(prompt_tokens - external_tokens)
        if external_tokens:
            self.prompt_by_source["external_kv_transfer"].inc(external_tokens)

    def next_token(self, gap_s: float) -> None:
        """One output token after the first: one ITL sample (one token per engine step, no speculation)."""
        self.itl.observe(max(0.0, gap_s))
        self.generation_tokens.inc()

    def admitted(self, prompt_tokens: int, external_tokens: int) -> None:
        """Cache bookkeeping at admission, as vLLM 0.32 counts it (measured on a NixlConnector pair): a local
        prompt is queried against the prefix cache (never a hit here) and, where a KV connector is configured,
        against the connector (no hit); a remote prompt is an external query and hit for all its tokens, cached
        from ``p2p``."""
        if external_tokens:
            self.external_queries.inc(prompt_tokens)
            self.external_hits.inc(external_tokens)
            self.prompt_cached.inc(external_tokens)
            self.cached_by_source["p2p"].inc(external_tokens)
            return
        self.prefix_queries.inc(prompt_tokens)
        if self.nixl is not None:
            self.external_queries.inc(prompt_tokens)

    def iteration(self, tokens: int) -> None:
        self.iteration_tokens.observe(tokens)

    def finished(self, r: FinishedRequest) -> None:
        """vLLM's per-finished-request histograms and the success counter (aborts included, as vLLM does)."""
        self.request_success.get(r.finish_reason, self.request_success["error"]).inc()
        self.request_prompt_tokens.observe(r.prompt_tokens)
        self.request_generation_tokens.observe(r.generation_tokens)
        self.max_num_generation_tokens.observe(r.max_tokens)
        self.params_n.observe(1)
        if r.max_tokens_param is not None:
            self.params_max_tokens.observe(r.max_tokens_param)
        self.e2e.observe(max(0.0, r.finished_s - r.arrival_s))
        self.request_preemptions.observe(r.preemptions)
        self.prefill_kv_computed.observe(r.prompt_tokens)  # vLLM 0.32 reports the whole prompt, remote KV too
        scheduled = r.scheduled_s if r.scheduled_s is not None else r.finished_s
        self.queue_time.observe(max(0.0, scheduled - r.arrival_s))
        first = r.first_token_s if r.first_token_s is not None else scheduled
        last = r.last_token_s if r.last_token_s is not None else first
        self.prefill_time.observe(max(0.0, first - scheduled))
        decode_s = max(0.0, last - first)
        self.decode_time.observe(decode_s)
        self.inference_time.observe(max(0.0, last - scheduled))
        self.tpot_request.observe(decode_s / (r.generation_tokens - 1) if r.generation_tokens > 1 else 0.0)

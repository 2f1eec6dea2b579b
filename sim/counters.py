"""Cumulative per-pod instruments, as a vLLM process (or the P/D proxy) keeps them in its Prometheus registry.

The engine adds to them as work happens; the simulated Prometheus view samples them at scrape times. Histograms
keep non-cumulative per-bucket counts with vLLM's edges plus a final +Inf bucket (cumulate when exposing).
Mutable on purpose: this is the hot path of the engine, owned by exactly one simulated pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S


@dataclass
class Histogram:
    edges_s: tuple[float, ...]
    counts: np.ndarray = field(init=False)  # len(edges) + 1; last is the +Inf bucket
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.edges_s) + 1, dtype=np.int64)
        self._edges = np.asarray(self.edges_s, dtype=np.float64)

    def observe(self, value: float, n: int = 1) -> None:
        """Record ``n`` samples of ``value`` (le semantics: a value equal to an edge falls in that bucket)."""
        self.counts[int(np.searchsorted(self._edges, value, side="left"))] += n
        self.sum += value * n
        self.count += n

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self._edges, values, side="left")
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.sum += float(values.sum())
        self.count += int(values.size)

    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)


@dataclass
class PodCounters:
    """What one simulated pod exposes. Gauges are set by the engine at each change (or read at scrape time)."""

    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS_S))
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    request_success_total: int = 0
    num_preemptions_total: int = 0
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage_perc: float = 0.0  # fraction 0..1, as vLLM exposes it

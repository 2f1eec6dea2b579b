"""Cumulative per-pod instruments, as a vLLM process (or the P/D proxy) keeps them in its Prometheus registry.

The engine adds to them as work happens; the simulated Prometheus view samples them at scrape times. Histograms
keep non-cumulative per-bucket counts with vLLM's edges plus a final +Inf bucket (cumulate when exposing).
Mutable on purpose: this is the hot path of the engine, owned by exactly one simulated pod.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np

from autoscaler.core.buckets import ITL_BUCKETS_S, PROMPT_TOKENS_BUCKETS, TTFT_BUCKETS_S


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
    # vllm:request_prompt_tokens: each request's prompt length, observed when the request finishes on this pod
    prompt_lengths: Histogram = field(default_factory=lambda: Histogram(PROMPT_TOKENS_BUCKETS))
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    request_success_total: int = 0
    num_preemptions_total: int = 0
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    # of those waiting, the ones deferred (vLLM's ``num_requests_waiting_by_reason{reason="deferred"}``): on a
    # decode pod, requests whose KV is still coming from prefill; the rest wait for capacity
    num_requests_waiting_deferred: int = 0
    kv_cache_usage_perc: float = 0.0  # fraction 0..1, as vLLM exposes it


def observe_pending(h: Histogram, pending: list[int], value: float) -> None:
    """One sample; its bucket count goes to ``pending`` (a Python list, cheaper than a numpy update per sample),
    folded into ``h.counts`` by ``flush_pending``; sum and count are exact at once."""
    pending[bisect_left(h.edges_s, value)] += 1
    h.sum += value
    h.count += 1


def flush_pending(h: Histogram, pending: list[int]) -> None:
    if any(pending):
        h.counts += np.array(pending, dtype=np.int64)
        pending[:] = [0] * len(pending)


class ItlGapLog:
    """Every inter-token gap the clients saw, compactly: one row per committed run of decode steps whose durations
    form an arithmetic sequence, and one row per individually observed gap. ``expand()`` lists them all.

    A run ``(start_s, first_step_s, growth_s, steps, batch, kv_admitted)``: step i (0-based) lasts
    ``first_step_s + i·growth_s`` and ends at ``start_s + (i+1)·first_step_s + growth_s·i(i+1)/2``; ``batch``
    sequences emit a token at each step end, of which the ``kv_admitted`` ones emit their first at step 0 (no gap).
    """

    __slots__ = ("runs", "single")

    def __init__(self) -> None:
        self.runs = tuple(array("d") for _ in range(6))
        self.single = (array("d"), array("d"), array("d"))  # token time, gap, how many sequences

    def add(self, time_s: float, gap_s: float, count: float) -> None:
        t, g, n = self.single
        t.append(time_s)
        g.append(gap_s)
        n.append(count)

    def add_run(
        self, start_s: float, first_step_s: float, growth_s: float, steps: int, batch: int, kv_admitted: int
    ) -> None:
        for col, v in zip(self.runs, (start_s, first_step_s, growth_s, steps, batch, kv_admitted), strict=True):
            col.append(v)

    def expand(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(token time_s, gap_s, count) for every gap, sorted by time (stable: ties keep the order logged)."""
        t0, d0, dl, j, nd, nf = (np.frombuffer(c, dtype=np.float64) for c in self.runs)
        steps = j.astype(np.int64)
        seg = np.repeat(np.arange(steps.size), steps)
        first = np.cumsum(steps) - steps
        i = (np.arange(seg.size) - first[seg]).astype(np.float64)
        gap = d0[seg] + dl[seg] * i
        time = t0[seg] + (i + 1) * d0[seg] + dl[seg] * (i * (i + 1) / 2)
        count = nd[seg] - np.where(i == 0, nf[seg], 0.0)
        time = np.concatenate([time, np.frombuffer(self.single[0], dtype=np.float64)])
        gap = np.concatenate([gap, np.frombuffer(self.single[1], dtype=np.float64)])
        count = np.concatenate([count, np.frombuffer(self.single[2], dtype=np.float64)]).astype(np.int64)
        keep = count > 0
        order = np.argsort(time[keep], kind="stable")
        return time[keep][order], gap[keep][order], count[keep][order]

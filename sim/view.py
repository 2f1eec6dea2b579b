"""The simulated Prometheus: what a real scrape-and-query pipeline would let the autoscaler see.

``SimPrometheus`` samples every visible pod's cumulative instruments (``sim.counters.PodCounters``) at scrape
times and answers PromQL-shaped reads: ``rate()`` with Prometheus' extrapolation, ``sum by (pool)``,
``histogram_quantile`` over ``sum by (le) (rate(..._bucket[w]))`` and instant gauge reads with the 5 minute
lookback and staleness. It is deliberately as blind as the real thing (DESIGN.md, "the one rule"):

* a pod is invisible until its first scrape after it became ready (``SimPod.first_scrape_s``), and with
  ``discovery_s`` > 0 until its first scrape at least that long after: Prometheus learns a new pod through service
  discovery, whose manager hands target updates to the scrape loops every 5 s (``discovery.Manager``'s
  ``updatert``), so a pod that became ready serves requests for a few seconds that no scrape ever counts
  (measured live, ``workers.local``: 1.1-5.5 s, mean 3.6 s, 11 pods at a 3.75 s interval). A rate over a new
  pod's first samples misses them, as Prometheus' does;
* with ``scrape_phases`` > 1, targets are scraped at their own phase of the interval, spread as Prometheus spreads
  them, so a query at a tick reads samples up to one interval old (0.5 interval on average), not fresh ones;
* a pod that is gone stops being scraped; its series go stale at the first scrape after it left, so instant
  reads drop it, while range reads still use the samples it had (as Prometheus' range vectors do);
* a series needs two samples inside the window to have a rate; windows with no increase give a zero rate and
  histograms with no observations give no quantile (``None``).

Rate semantics follow ``extrapolatedRate`` in Prometheus' ``promql/functions.go``. ``prometheus_major=2``
(default; the Debian 2.42 server used by the integration tests) selects the closed range ``[t-w, t]`` and clamps
the start extrapolation at the counter's zero point before the 1.1x-average-interval threshold check;
``prometheus_major=3`` selects the left-open range ``(t-w, t]`` and applies the threshold first (the order used
since Prometheus 2.52/3.x).

The proxy's user-visible histograms (``Engine.proxy``) are a separate job, ``job="proxy"``, visible from t=0.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from autoscaler.core.buckets import ITL_BUCKETS_S, PROMPT_TOKENS_BUCKETS, TTFT_BUCKETS_S
from autoscaler.core.histogram import histogram_quantile
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Pool, PoolDecision, PoolReplicas, PoolSignals, Signals
from sim.counters import PodCounters

POD_JOB = "pods"
PROXY_JOB = "proxy"
LOOKBACK_S = 300.0  # Prometheus' default --query.lookback-delta
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
PROMPT_LENGTHS = "vllm:request_prompt_tokens"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"
PREEMPTIONS = "vllm:num_preemptions_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
WAITING_CAPACITY = 'vllm:num_requests_waiting_by_reason{reason="capacity"}'  # waiting minus deferred
KV_USAGE = "vllm:kv_cache_usage_perc"
# the proxy's counters of requests and prompt tokens as they ARRIVE (workers/proxy_metrics.py); pods expose 0
ARRIVED_REQUESTS = "pdscale_proxy_arrived_requests_total"
ARRIVED_PROMPT_TOKENS = "pdscale_proxy_arrived_prompt_tokens_total"
# histogram family -> its bucket edges (seconds, or tokens for the prompt lengths) and the PodCounters field
HISTOGRAM_EDGES_S: dict[str, tuple[float, ...]] = {
    TTFT: TTFT_BUCKETS_S, ITL: ITL_BUCKETS_S, PROMPT_LENGTHS: PROMPT_TOKENS_BUCKETS,
}  # fmt: skip
_HISTOGRAM_FIELDS: dict[str, str] = {TTFT: "ttft", ITL: "itl", PROMPT_LENGTHS: "prompt_lengths"}


def _build_layout() -> tuple[dict[str, slice], frozenset[str]]:
    """Column of each exposed series in a target's sample row; one row per scrape."""
    columns: dict[str, slice] = {}
    pos = 0
    for family, edges in HISTOGRAM_EDGES_S.items():
        columns[f"{family}_bucket"] = slice(pos, pos + len(edges) + 1)  # cumulative, last is le="+Inf"
        pos += len(edges) + 1
        for suffix in ("_sum", "_count"):
            columns[family + suffix] = slice(pos, pos + 1)
            pos += 1
    for name in (PROMPT_TOKENS, GENERATION_TOKENS, REQUEST_SUCCESS, PREEMPTIONS, RUNNING, WAITING, KV_USAGE,
                 WAITING_CAPACITY, ARRIVED_REQUESTS, ARRIVED_PROMPT_TOKENS):  # fmt: skip
        columns[name] = slice(pos, pos + 1)
        pos += 1
    return columns, frozenset({RUNNING, WAITING, KV_USAGE, WAITING_CAPACITY})


_COLUMNS, _GAUGES = _build_layout()
_WIDTH = max(s.stop for s in _COLUMNS.values())


def series_names() -> tuple[str, ...]:
    return tuple(_COLUMNS)


def _row(counters: PodCounters) -> np.ndarray:
    histograms: list[Any] = []
    for family in HISTOGRAM_EDGES_S:  # the layout's order
        h = getattr(counters, _HISTOGRAM_FIELDS[family])
        histograms += [h.cumulative(), [h.sum, h.count]]
    return np.concatenate(
        [
            *histograms,
            [
                counters.prompt_tokens_total,
                counters.generation_tokens_total,
                counters.request_success_total,
                counters.num_preemptions_total,
                counters.num_requests_running,
                counters.num_requests_waiting,
                counters.kv_cache_usage_perc,
                counters.num_requests_waiting - counters.num_requests_waiting_deferred,
                0.0,  # arrivals: the proxy's, filled in by SimPrometheus.scrape
                0.0,
            ],
        ]
    ).astype(np.float64)


def extrapolated_rate(
    times_s: np.ndarray,
    values: np.ndarray,
    range_start_s: float,
    range_end_s: float,
    *,
    is_counter: bool = True,
    is_rate: bool = True,
    prometheus_major: int = 2,
) -> np.ndarray | None:
    """Prometheus' ``extrapolatedRate`` for samples already selected from the range.

    ``values`` is ``(n,)`` or ``(n, k)`` (k series sharing sample times, as one target's scrape gives them);
    returns one value per series, or ``None`` when there are fewer than two samples (the series is dropped).
    """
    n = len(times_s)
    if n < 2:
        return None
    vals = np.asarray(values, dtype=np.float64)
    squeeze = vals.ndim == 1
    if squeeze:
        vals = vals[:, None]
    first, last = vals[0], vals[-1]
    result = last - first
    if is_counter:
        drops = vals[1:] < vals[:-1]
        result = result + np.where(drops, vals[:-1], 0.0).sum(axis=0)
    first_t, last_t = float(times_s[0]), float(times_s[-1])
    sampled = last_t - first_t
    avg = sampled / (n - 1)
    threshold = avg * 1.1
    to_start = np.full(result.shape, first_t - range_start_s)
    to_end = range_end_s - last_t
    if prometheus_major >= 3:
        to_start = np.where(to_start >= threshold, avg / 2, to_start)
    if is_counter:
        with np.errstate(divide="ignore", invalid="ignore"):
            to_zero = sampled * (first / result)
        clamp = (result > 0) & (first >= 0) & (to_zero < to_start)
        to_start = np.where(clamp, to_zero, to_start)
    if prometheus_major < 3:
        to_start = np.where(to_start < threshold, to_start, avg / 2)
    to_end = to_end if to_end < threshold else avg / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor = factor / (range_end_s - range_start_s)
    out = result * factor
    return out[0:1] if squeeze else out


class _Target:
    """One scraped endpoint: a pod or the proxy. Samples live in a growable buffer trimmed to retention."""

    def __init__(self, name: str, job: str, pool: Pool | None, counters: PodCounters) -> None:
        self.name = name
        self.job = job
        self.pool = pool
        self.counters = counters
        self.times_s = np.empty(64, dtype=np.float64)
        self.rows = np.empty((64, _WIDTH), dtype=np.float64)
        self.lo = 0
        self.hi = 0
        self.stale_from_s = math.inf

    def append(self, t_s: float, retention_s: float) -> None:
        if self.hi == len(self.times_s):
            keep_from = self.lo + int(np.searchsorted(self.times_s[self.lo : self.hi], t_s - retention_s))
            count = self.hi - keep_from
            if count * 2 > len(self.times_s):
                times = np.empty(len(self.times_s) * 2, dtype=np.float64)
                rows = np.empty((len(self.times_s) * 2, _WIDTH), dtype=np.float64)
            else:
                times, rows = self.times_s, self.rows
            times[:count] = self.times_s[keep_from : self.hi]
            rows[:count] = self.rows[keep_from : self.hi]
            self.times_s, self.rows, self.lo, self.hi = times, rows, 0, count
        self.times_s[self.hi] = t_s
        self.rows[self.hi] = _row(self.counters)
        self.hi += 1

    def window(self, start_s: float, end_s: float, left_open: bool) -> tuple[np.ndarray, np.ndarray]:
        times = self.times_s[self.lo : self.hi]
        i = int(np.searchsorted(times, start_s, side="right" if left_open else "left"))
        j = int(np.searchsorted(times, end_s, side="right"))
        return times[i:j], self.rows[self.lo + i : self.lo + j]

    def latest(self, at_s: float, max_age_s: float = LOOKBACK_S) -> np.ndarray | None:
        """Instant-vector sample: the newest at or before ``at_s`` within the lookback, unless stale."""
        if at_s >= self.stale_from_s:
            return None
        times = self.times_s[self.lo : self.hi]
        j = int(np.searchsorted(times, at_s, side="right"))
        if j == 0 or times[j - 1] <= at_s - min(max_age_s, LOOKBACK_S):
            return None
        return self.rows[self.lo + j - 1]


class SimPrometheus:
    """Simulated Prometheus over one ``sim.engine.Engine``: call ``scrape(t)`` at scrape times, then query."""

    def __init__(
        self,
        engine: Any,
        scrape_interval_s: float = 15.0,
        retention_s: float = 3600.0,
        *,
        prometheus_major: int = 2,
        scrape_phases: int = 1,
        discovery_s: float = 0.0,
        arrivals: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if scrape_interval_s <= 0:
            raise ValueError(f"scrape_interval_s must be > 0, got {scrape_interval_s}")
        if prometheus_major not in (2, 3):
            raise ValueError(f"prometheus_major must be 2 or 3, got {prometheus_major}")
        if scrape_phases < 1:
            raise ValueError(f"scrape_phases must be >= 1, got {scrape_phases}")
        if not (math.isfinite(discovery_s) and discovery_s >= 0):
            raise ValueError(f"discovery_s must be a finite number >= 0, got {discovery_s}")
        self.discovery_s = discovery_s
        # (sorted arrival times, prompt tokens) of the requests as the proxy receives them: its arrival counters
        # (``ARRIVED_*``) at a scrape count those sent by then. None (a closed loop, whose send times are not
        # known up front): the proxy has no arrival series, and ``has_arrivals`` says so.
        self._arrival_s: np.ndarray | None = None
        self._arrived_prompt_cum: np.ndarray | None = None
        if arrivals is not None:
            times, prompts = (np.asarray(a, dtype=np.float64) for a in arrivals)
            if times.shape != prompts.shape or (times.size and np.any(np.diff(times) < 0)):
                raise ValueError("arrivals: arrival times must be sorted and match the prompt lengths one to one")
            self._arrival_s = times
            self._arrived_prompt_cum = np.concatenate([[0.0], np.cumsum(prompts)])
        self.engine = engine
        self.scrape_interval_s = scrape_interval_s
        self.scrape_phases = scrape_phases
        self.retention_s = max(retention_s, LOOKBACK_S + 2 * scrape_interval_s)
        self.prometheus_major = prometheus_major
        self.last_scrape_s: float | None = None
        self._targets: dict[str, _Target] = {}
        self._proxy = _Target("proxy", PROXY_JOB, None, engine.proxy)
        self._targets["proxy"] = self._proxy
        # rate() of every counter column of a target's rows over one range, computed once per (target, range)
        # between scrapes: a controller tick asks a dozen counters over the same window (None: < 2 samples)
        self._counter_rates: dict[tuple[str, float, float], np.ndarray | None] = {}

    # -- scraping -------------------------------------------------------------------------------------------

    def phase_of(self, name: str) -> int:
        """The scrape slot of a target: Prometheus spreads its targets' scrapes over the interval by a hash of
        the target (``scrape.(*Target).offset``); here over ``scrape_phases`` equal slots, by the name's CRC32."""
        return zlib.crc32(name.encode()) % self.scrape_phases

    def scrape_times(self, end_s: float) -> np.ndarray:
        """Every instant some target is scraped, up to ``end_s``: k·interval + j·interval/phases."""
        step = self.scrape_interval_s / self.scrape_phases
        return np.arange(0, math.floor(end_s / step + 1e-9) + 1) * step

    def _due(self, name: str, t_s: float) -> bool:
        if self.scrape_phases == 1:
            return True
        step = self.scrape_interval_s / self.scrape_phases
        slot = round(t_s / step) % self.scrape_phases
        return slot == self.phase_of(name)

    def scrape(self, t_s: float) -> None:
        """Sample every target visible at ``t_s`` whose scrape is due (every target when ``scrape_phases`` is 1);
        call with non-decreasing times after ``engine.run_until``."""
        if self.last_scrape_s is not None and t_s < self.last_scrape_s:
            raise ValueError(f"scrape at {t_s} s is before the previous scrape at {self.last_scrape_s} s")
        if self.last_scrape_s == t_s:
            return  # one scrape per instant, as Prometheus stores one sample per timestamp
        self.last_scrape_s = t_s
        self._counter_rates.clear()
        if self._due("proxy", t_s):
            self._proxy.append(t_s, self.retention_s)
            if self._arrival_s is not None and self._arrived_prompt_cum is not None:
                n = int(np.searchsorted(self._arrival_s, t_s, side="right"))
                row = self._proxy.rows[self._proxy.hi - 1]
                row[_COLUMNS[ARRIVED_REQUESTS]] = n
                row[_COLUMNS[ARRIVED_PROMPT_TOKENS]] = self._arrived_prompt_cum[n]
        for pod in self.engine.pods():
            if not self._due(pod.name, t_s):
                continue
            target = self._targets.get(pod.name)
            alive = pod.ready_s <= t_s < pod.gone_s
            if alive and target is None and t_s < pod.ready_s + self.discovery_s:
                continue  # ready, serving, but not yet a scrape target
            if alive:
                if target is None:
                    target = _Target(pod.name, POD_JOB, Pool(pod.pool), pod.counters)
                    self._targets[pod.name] = target
                    pod.first_scrape_s = t_s
                target.append(t_s, self.retention_s)
            elif target is not None and target.stale_from_s == math.inf and t_s >= pod.gone_s:
                target.stale_from_s = t_s  # the scrape that noticed the pod left writes the staleness marker
            elif (
                target is not None
                and target.hi > target.lo
                and target.times_s[target.hi - 1] < t_s - self.retention_s
            ):
                del self._targets[pod.name]  # every sample is past retention: the series no longer exists

    @property
    def has_arrivals(self) -> bool:
        """Does the proxy expose its arrival counters (an open-loop workload's arrivals were given)?"""
        return self._arrival_s is not None

    def visible_pods(self, at_s: float, pool: Pool | None = None) -> list[str]:
        """Names of pod targets with a non-stale sample within the lookback (``count(up)``-like)."""
        return [t.name for t in self._select(POD_JOB, pool) if t.latest(at_s) is not None]

    # -- reads ----------------------------------------------------------------------------------------------

    def _select(self, job: str, pool: Pool | None) -> Iterator[_Target]:
        for target in self._targets.values():
            if target.job == job and (pool is None or target.pool is pool):
                yield target

    def _column(self, metric: str) -> slice:
        try:
            return _COLUMNS[metric]
        except KeyError:
            raise KeyError(f"unknown series {metric!r}; known: {', '.join(_COLUMNS)}") from None

    def rate_by_target(
        self, metric: str, window_s: float, at_s: float, *, job: str = POD_JOB, pool: Pool | None = None
    ) -> dict[str, np.ndarray]:
        """``rate(metric[window])`` per target (bucket series give one value per ``le``); dropped if < 2 samples."""
        col = self._column(metric)
        out: dict[str, np.ndarray] = {}
        start_s = at_s - window_s
        left_open = self.prometheus_major >= 3
        if metric in _GAUGES:
            for target in self._select(job, pool):
                times, rows = target.window(start_s, at_s, left_open=left_open)
                r = extrapolated_rate(
                    times, rows[:, col], start_s, at_s, is_counter=False, prometheus_major=self.prometheus_major
                )
                if r is not None:
                    out[target.name] = r
            return out
        cache = self._counter_rates
        for target in self._select(job, pool):
            key = (target.name, start_s, at_s)
            if key in cache:
                rates = cache[key]
            else:  # every column at once: the computation is column by column, so each column's rate is the same
                times, rows = target.window(start_s, at_s, left_open=left_open)
                rates = cache[key] = extrapolated_rate(
                    times, rows, start_s, at_s, is_counter=True, prometheus_major=self.prometheus_major
                )
            if rates is not None:
                out[target.name] = rates[col]
        return out

    def rate(
        self, metric: str, window_s: float, at_s: float, *, job: str = POD_JOB, pool: Pool | None = None
    ) -> float | None:
        """``sum(rate(metric[window]))`` over the job (and pool); ``None`` when no series has a rate."""
        rates = self.rate_by_target(metric, window_s, at_s, job=job, pool=pool)
        if not rates:
            return None
        return float(sum(float(r.sum()) for r in rates.values()))

    def bucket_rates(
        self, family: str, window_s: float, at_s: float, *, job: str = POD_JOB, pool: Pool | None = None
    ) -> tuple[tuple[float, ...], np.ndarray] | None:
        """``sum by (le) (rate(family_bucket[window]))``: (upper bounds with +inf, summed cumulative rates)."""
        rates = self.rate_by_target(f"{family}_bucket", window_s, at_s, job=job, pool=pool)
        if not rates:
            return None
        bounds = (*HISTOGRAM_EDGES_S[family], math.inf)
        return bounds, np.sum(list(rates.values()), axis=0)

    def quantile(
        self,
        q: float,
        family: str,
        window_s: float,
        at_s: float,
        *,
        job: str = POD_JOB,
        pool: Pool | None = None,
    ) -> float | None:
        """``histogram_quantile(q, sum by (le) (rate(family_bucket[window])))``; ``None`` if absent/NaN/empty."""
        summed = self.bucket_rates(family, window_s, at_s, job=job, pool=pool)
        if summed is None:
            return None
        value = histogram_quantile(q, summed[0], [float(x) for x in summed[1]])
        return _finite(value)

    def histogram_mean(
        self, family: str, window_s: float, at_s: float, *, job: str = POD_JOB, pool: Pool | None = None
    ) -> float | None:
        """``sum(rate(family_sum[w])) / sum(rate(family_count[w]))``; ``None`` with no observations."""
        total = self.rate(f"{family}_sum", window_s, at_s, job=job, pool=pool)
        count = self.rate(f"{family}_count", window_s, at_s, job=job, pool=pool)
        if total is None or count is None or count <= 0:
            return None
        return _finite(total / count)

    def fresh_targets(self, metric: str, at_s: float, *, job: str = POD_JOB, pool: Pool | None = None,
                      max_age_s: float = LOOKBACK_S) -> int:  # fmt: skip
        """How many targets have a non-stale sample of ``metric`` younger than ``max_age_s``: ``count by (pod)``
        over the gauge read ``gauge`` makes (every target exposes every series here)."""
        self._column(metric)
        return sum(1 for t in self._select(job, pool) if t.latest(at_s, max_age_s) is not None)

    def gauge(
        self,
        metric: str,
        at_s: float,
        *,
        job: str = POD_JOB,
        pool: Pool | None = None,
        agg: str = "sum",
        max_age_s: float = LOOKBACK_S,
    ) -> float | None:
        """Instant ``sum(metric)`` or ``avg(metric)`` over non-stale series; ``None`` when none is present.

        ``max_age_s`` below the lookback mirrors ``X and (time() - timestamp(X)) < max_age``."""
        col = self._column(metric)
        values = [
            float(row[col][0])
            for t in self._select(job, pool)
            if (row := t.latest(at_s, max_age_s)) is not None
        ]
        if not values:
            return None
        if agg == "sum":
            return float(sum(values))
        if agg == "avg":
            return float(sum(values) / len(values))
        raise ValueError(f"agg must be 'sum' or 'avg', got {agg!r}")


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


class SimMetricsSource:
    """``MetricsSource`` reading only the simulated Prometheus, the way ``autoscaler.prometheus`` (profile
    ``vllm``) reads the real one, so the policy is exactly as blind in simulation as in the cluster:

    * TTFT/ITL at the SLO percentiles (and their means) from the proxy job when ``spec.metrics.proxy``;
      otherwise from workers: TTFT = prefill-pool + decode-pool TTFT (P/D: no series holds the user's TTFT;
      missing if either is), the decode pool alone when there is no prefill series (aggregated); ITL from decode;
    * requests/s from the proxy's TTFT count (proxy) or the decode pool's finished requests; with the proxy, the
      requests and prompt tokens per second ARRIVING (the proxy's arrival counters; open-loop workloads only, whose
      arrivals ``SimPrometheus`` was given); prompt tokens/s and
      the prompt-length histogram (``vllm:request_prompt_tokens``, observed as each request finishes on a pod, as
      vLLM does) from the prefill pool when it has series, else decode; output tokens/s from the decode pool;
    * per-pool gauges (sum of waiting/running, mean KV usage) only from samples younger than the rate window (the
      waiting ones for capacity: not those deferred while their KV comes from prefill, as the live query reads), and
      the pods reporting (the distinct pods behind those gauges: a pod ready but not yet scraped is not one, as in
      ``autoscaler.prometheus``'s running-gauge count; the policy holds scale-downs on a partial scrape and sizes
      decode's KV context per reporting pod).
    """

    def __init__(self, prom: SimPrometheus, mode: str | None = None) -> None:
        self.prom = prom
        self.mode = (
            mode if mode is not None else getattr(getattr(prom.engine, "config", None), "mode", "disagg")
        )
        if self.mode not in ("disagg", "agg"):
            raise ValueError(f"mode must be 'disagg' or 'agg', got {self.mode!r}")

    def observe(self, spec: AutoscalerSpec, now_s: float) -> Signals:
        p = self.prom
        w = spec.metrics.window_s
        has_prefill = bool(p.rate_by_target(REQUEST_SUCCESS, w, now_s, pool=Pool.PREFILL))
        if spec.metrics.proxy:
            ttft = p.quantile(spec.ttft.percentile, TTFT, w, now_s, job=PROXY_JOB)
            ttft_mean = p.histogram_mean(TTFT, w, now_s, job=PROXY_JOB)
            itl = p.quantile(spec.itl.percentile, ITL, w, now_s, job=PROXY_JOB)
            itl_mean = p.histogram_mean(ITL, w, now_s, job=PROXY_JOB)
            requests = p.rate(f"{TTFT}_count", w, now_s, job=PROXY_JOB)
        else:
            parts = [Pool.PREFILL, Pool.DECODE] if has_prefill else [Pool.DECODE]
            ttft = _sum_all([p.quantile(spec.ttft.percentile, TTFT, w, now_s, pool=x) for x in parts])
            ttft_mean = _sum_all([p.histogram_mean(TTFT, w, now_s, pool=x) for x in parts])
            itl = p.quantile(spec.itl.percentile, ITL, w, now_s, pool=Pool.DECODE)
            itl_mean = p.histogram_mean(ITL, w, now_s, pool=Pool.DECODE)
            requests = p.rate(REQUEST_SUCCESS, w, now_s, pool=Pool.DECODE)
        lengths = p.bucket_rates(PROMPT_LENGTHS, w, now_s, pool=Pool.PREFILL if has_prefill else Pool.DECODE)
        arrived = spec.metrics.proxy and p.has_arrivals
        return Signals(
            time_s=now_s,
            ttft_s=ttft,
            itl_s=itl,
            ttft_mean_s=ttft_mean,
            itl_mean_s=itl_mean,
            request_rate_per_s=requests,
            prompt_tokens_per_s=p.rate(
                PROMPT_TOKENS, w, now_s, pool=Pool.PREFILL if has_prefill else Pool.DECODE
            ),
            output_tokens_per_s=p.rate(GENERATION_TOKENS, w, now_s, pool=Pool.DECODE),
            prompt_length_buckets=None
            if lengths is None
            else tuple(zip(lengths[0], (float(r) for r in lengths[1]), strict=True)),
            arrived_request_rate_per_s=p.rate(ARRIVED_REQUESTS, w, now_s, job=PROXY_JOB) if arrived else None,
            arrived_prompt_tokens_per_s=p.rate(ARRIVED_PROMPT_TOKENS, w, now_s, job=PROXY_JOB) if arrived else None,
            prefill=self._pool(Pool.PREFILL, w, now_s),
            decode=self._pool(Pool.DECODE, w, now_s),
        )

    def _pool(self, pool: Pool, window_s: float, now_s: float) -> PoolSignals:
        p = self.prom
        return PoolSignals(
            waiting_requests=p.gauge(WAITING_CAPACITY, now_s, pool=pool, max_age_s=window_s),
            running_requests=p.gauge(RUNNING, now_s, pool=pool, max_age_s=window_s),
            kv_usage_fraction=p.gauge(KV_USAGE, now_s, pool=pool, agg="avg", max_age_s=window_s),
            request_rate_per_s=p.rate(REQUEST_SUCCESS, window_s, now_s, pool=pool),
            pods_reporting=float(p.fresh_targets(RUNNING, now_s, pool=pool, max_age_s=window_s)),
        )


def _sum_all(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


class SimClock:
    """The simulated clock; ``replay`` moves it forward before each controller tick."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def set(self, t_s: float) -> None:
        if t_s < self._now_s:
            raise ValueError(f"simulated clock cannot go back from {self._now_s} s to {t_s} s")
        self._now_s = t_s


class SimScaleTarget:
    """``ScaleTarget`` over the simulated cluster: replica counts from the engine, scaling via ``set_desired``."""

    def __init__(self, engine: Any, clock: SimClock, mode: str = "disagg") -> None:
        self.engine = engine
        self.clock = clock
        self.mode = mode
        self.writes: list[tuple[float, Pool, int]] = []

    def read_replicas(self) -> dict[Pool, PoolReplicas]:
        return {pool: self.engine.replicas(pool) for pool in (Pool.PREFILL, Pool.DECODE)}

    def scale(self, decision: PoolDecision) -> None:
        if decision.desired_replicas < 0:
            raise ValueError(f"{decision.pool.value}: desired replicas {decision.desired_replicas} < 0")
        if self.mode == "agg" and decision.pool is Pool.PREFILL and decision.desired_replicas > 0:
            raise ValueError("aggregated mode has no prefill pool; scale the decode pool instead")
        now_s = self.clock.now_s()
        self.engine.set_desired(decision.pool, decision.desired_replicas, now_s)
        self.writes.append((now_s, decision.pool, decision.desired_replicas))


def iter_scrape_times(end_s: float, interval_s: float) -> Iterable[float]:
    """Scrape (or tick) times 0, interval, 2·interval, ... up to and including ``end_s``; no float drift."""
    k = 0
    while (t := k * interval_s) <= end_s + 1e-9:
        yield t
        k += 1

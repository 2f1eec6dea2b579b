"""What a replay achieved, measured exactly from per-request records (not from the histograms the policy saw).

Definitions (the numbers ``pdscale sim run`` prints):

* Percentiles use the nearest-rank definition (``numpy.quantile(method="inverted_cdf")``): the q-quantile is the
  smallest sample x with at least a q share of samples <= x, so "p99 <= target" holds exactly when at least 99%
  of requests met the target. No interpolation between requests.
* TTFT of a request: arrival to first token (user-visible, as the proxy sees it).
* ITL of a request: its mean time per output token after the first, ``itl_mean_s`` from the engine (the same
  quantity as vLLM's ``request_time_per_output_token`` and the TPOT of ``vllm bench serve``); requests with one
  output token have none. Window and summary ITL percentiles are over these per-request values; the engine does
  not keep every inter-token gap, so the p99 of individual gaps is not available (``itl_max_p99_s`` gives the
  p99 of each request's worst gap as an upper view).
* request_slo_attainment: share of all requests that finished with TTFT <= TTFT target and mean ITL <= ITL target
  (unfinished requests count as misses).
* Windows (``window_s``, default 60 s) group requests by arrival time. A window counts when at least one request
  arrived in it; it is compliant when its TTFT and ITL quantiles at the SLO percentiles meet the targets, where a
  request that never got its first token (or never finished decoding) counts as infinitely late. This is stricter
  than counting only completed requests: a window whose requests all stalled is a violation, not a gap.
* GPU-seconds: every pod from creation (startup included) until gone, times GPUs per replica.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoscaler.core.types import Decision, Pool
from sim.scenario import Scenario

SUMMARY_KEYS = (
    "requests", "completed", "sim_duration_s", "wall_s", "ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s",
    "request_slo_attainment", "window_compliance", "gpu_hours", "prefill_replicas_max", "decode_replicas_max",
    "scale_events",
)  # fmt: skip


@dataclass(frozen=True)
class SummaryRecords:
    """The per-request fields summaries read (a subset of ``sim.records.RequestRecords``), for records that come
    from elsewhere: a live run's loadgen, or a test's hand-built rows. Times in seconds, NaN/inf where absent."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    last_token_s: np.ndarray
    itl_mean_s: np.ndarray
    itl_max_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    finished: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def ttft_s(self) -> np.ndarray:
        return np.asarray(self.first_token_s - self.arrival_s, dtype=np.float64)


def quantile(values: np.ndarray, q: float) -> float:
    """Nearest-rank quantile; NaN for no samples. ``inf`` samples are allowed (late requests)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan
    return float(np.quantile(v, q, method="inverted_cdf"))


def request_latencies(records: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request: TTFT (inf when no first token), mean ITL (inf when not finished; NaN for 1-token outputs),
    and whether it has an ITL at all."""
    arrival = np.asarray(records.arrival_s, dtype=np.float64)
    first = np.asarray(records.first_token_s, dtype=np.float64)
    ttft = np.where(np.isfinite(first), first - arrival, np.inf)
    has_itl = np.asarray(records.output_tokens) >= 2
    finished = np.asarray(records.finished, dtype=bool)
    itl_mean = np.asarray(records.itl_mean_s, dtype=np.float64)
    itl = np.where(has_itl, np.where(finished & np.isfinite(itl_mean), itl_mean, np.inf), np.nan)
    return ttft, itl, has_itl


def _overlap_s(start: np.ndarray, end: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Seconds each window [edges[i], edges[i+1]) overlaps the intervals [start, end), summed over intervals."""
    if start.size == 0:
        return np.zeros(edges.size - 1)
    lo = np.maximum(start[None, :], edges[:-1, None])
    hi = np.minimum(end[None, :], edges[1:, None])
    return np.clip(hi - lo, 0.0, None).sum(axis=1)


def window_table(
    records: Any,
    scenario: Scenario,
    timeline: dict[str, np.ndarray] | None,
    pods: Sequence[Any],
    end_s: float,
) -> dict[str, np.ndarray]:
    """Per-window series: load, exact latency percentiles, cluster state (timeline means), GPU-seconds."""
    w = scenario.window_s
    arrival = np.asarray(records.arrival_s, dtype=np.float64)
    horizon = max(end_s, float(arrival.max()) if arrival.size else 0.0)
    n_windows = max(1, math.ceil(horizon / w - 1e-9))
    edges = np.arange(n_windows + 1) * w
    idx = np.clip((arrival // w).astype(np.int64), 0, n_windows - 1)
    ttft, itl, has_itl = request_latencies(records)
    finished = np.asarray(records.finished, dtype=bool)
    t_target, i_target = scenario.spec.ttft.target_s, scenario.spec.itl.target_s
    t_pct, i_pct = scenario.spec.ttft.percentile, scenario.spec.itl.percentile
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(n_windows + 1))
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "arrivals", "completed", "ttft_p50_s", "ttft_p99_s", "ttft_slo_s", "itl_p50_s", "itl_p99_s",
            "itl_slo_s", "counted", "ok",
        )
    }  # fmt: skip
    for i in range(n_windows):
        sel = order[bounds[i] : bounds[i + 1]]
        t_w = ttft[sel]
        i_w = itl[sel][has_itl[sel]]
        cols["arrivals"].append(sel.size)
        cols["completed"].append(int(finished[sel].sum()))
        cols["ttft_p50_s"].append(quantile(t_w, 0.5))
        cols["ttft_p99_s"].append(quantile(t_w, 0.99))
        cols["itl_p50_s"].append(quantile(i_w, 0.5))
        cols["itl_p99_s"].append(quantile(i_w, 0.99))
        t_slo, i_slo = quantile(t_w, t_pct), quantile(i_w, i_pct)
        cols["ttft_slo_s"].append(t_slo)
        cols["itl_slo_s"].append(i_slo)
        counted = sel.size > 0
        ok = counted and t_slo <= t_target and (i_w.size == 0 or i_slo <= i_target)
        cols["counted"].append(counted)
        cols["ok"].append(ok)
    table: dict[str, np.ndarray] = {"start_s": edges[:-1], "end_s": edges[1:]}
    for k, v in cols.items():
        table[k] = np.array(v, dtype=bool if k in ("counted", "ok") else np.float64)
    table["arrival_rate_per_s"] = table["arrivals"] / w
    table["prompt_tokens_per_s"] = np.bincount(idx, np.asarray(records.prompt_tokens, float), n_windows) / w
    table["output_tokens_per_s"] = np.bincount(idx, np.asarray(records.output_tokens, float), n_windows) / w
    if timeline is not None and timeline["time_s"].size:
        t_idx = np.clip((timeline["time_s"] // w).astype(np.int64), 0, n_windows - 1)
        for key, values in timeline.items():
            if key == "time_s":
                continue
            table[key] = _window_mean(t_idx, values, n_windows)
    gpus = scenario.profile.gpus_per_replica
    for pool in (Pool.PREFILL, Pool.DECODE):
        mine = [p for p in pods if Pool(p.pool) is pool]
        start = np.array([p.created_s for p in mine], dtype=np.float64)
        end = np.array([min(p.gone_s, horizon) for p in mine], dtype=np.float64)
        table[f"{pool.value}_gpu_seconds"] = _overlap_s(start, end, edges) * gpus
    return table


def _window_mean(idx: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    total = np.bincount(idx[ok], values[ok], n)
    count = np.bincount(idx[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def summarize(
    *,
    records: Any,
    scenario: Scenario,
    policy_name: str,
    timeline: dict[str, np.ndarray] | None,
    decisions: Sequence[tuple[float, Decision]],
    pods: Sequence[Any],
    gpu_seconds: dict[Pool, float],
    end_s: float,
    wall_s: float,
    scale_events: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(window table, summary dict with ``SUMMARY_KEYS`` plus extras)."""
    windows = window_table(records, scenario, timeline, pods, end_s)
    ttft, itl, has_itl = request_latencies(records)
    finished = np.asarray(records.finished, dtype=bool)
    spec = scenario.spec
    reached = ttft[np.isfinite(ttft)]
    itl_done = itl[has_itl & np.isfinite(itl)]
    itl_max = np.asarray(records.itl_max_s, dtype=np.float64)[has_itl & finished]
    good = (
        finished
        & (ttft <= spec.ttft.target_s)
        & (~has_itl | (np.nan_to_num(itl, nan=0.0) <= spec.itl.target_s))
    )
    n = int(finished.size)
    counted = int(windows["counted"].sum())
    ok = int(windows["ok"].sum())
    if scale_events is None:
        scale_events = sum(int(d.prefill.changes) + int(d.decode.changes) for _, d in decisions)
    desired_max = {
        pool: max(
            [scenario.initial_prefill if pool is Pool.PREFILL else scenario.initial_decode]
            + [d.pool(pool).desired_replicas for _, d in decisions]
            + (
                [int(np.nanmax(timeline[f"{pool.value}_desired"]))]
                if timeline and timeline["time_s"].size
                else []
            )
        )
        for pool in (Pool.PREFILL, Pool.DECODE)
    }
    gpu_s = {pool: float(gpu_seconds.get(pool, 0.0)) for pool in (Pool.PREFILL, Pool.DECODE)}
    summary: dict[str, Any] = {
        "requests": n,
        "completed": int(finished.sum()),
        "sim_duration_s": float(end_s),
        "wall_s": float(wall_s),
        "ttft_p50_s": _json_float(quantile(reached, 0.5)),
        "ttft_p99_s": _json_float(quantile(reached, 0.99)),
        "itl_p50_s": _json_float(quantile(itl_done, 0.5)),
        "itl_p99_s": _json_float(quantile(itl_done, 0.99)),
        "request_slo_attainment": float(good.sum() / n) if n else None,
        "window_compliance": float(ok / counted) if counted else None,
        "gpu_hours": sum(gpu_s.values()) / 3600.0,
        "prefill_replicas_max": desired_max[Pool.PREFILL],
        "decode_replicas_max": desired_max[Pool.DECODE],
        "scale_events": int(scale_events),
        # extras
        "policy": policy_name,
        "scenario": scenario.name,
        "mode": scenario.mode,
        "ttft_target_s": spec.ttft.target_s,
        "ttft_percentile": spec.ttft.percentile,
        "itl_target_s": spec.itl.target_s,
        "itl_percentile": spec.itl.percentile,
        "itl_max_p99_s": _json_float(quantile(itl_max[np.isfinite(itl_max)], 0.99)),
        "windows_total": counted,
        "windows_ok": ok,
        "gpu_hours_prefill": gpu_s[Pool.PREFILL] / 3600.0,
        "gpu_hours_decode": gpu_s[Pool.DECODE] / 3600.0,
    }
    return windows, summary


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None

"""How fast a policy answered each surge, against the physical minimum (issue 16, item 4).

For a labelled surge (``sim.suite.Surge``: the time the load is high) and each pool whose load rises in it:

* **first order**: the first time after the surge began that the policy raised the pool's ordered replicas, and
  what it ordered then (ready before → ordered after);
* **minutes above target**: the 60 s windows that failed the SLO from one window before the surge began until
  ten minutes after it ended (the joint criterion: the windows a user saw late);
* **physical minimum**: the pod start-up time plus the time the capacity ordered at the first signal needs to
  drain the backlog that built up until it was ready. The backlog is replayed from the true arrivals (tokens per
  second, the pool's work: prompt tokens for prefill, output tokens for decode) against the pods actually ready
  (the run's timeline) at one replica's full rate: prefill at full ``max_num_batched_tokens`` chunks, decode at
  the largest batch whose step still meets the ITL target. An order too small to ever drain it gives ``inf``.

The minimum is per pool and for this order; the detection delay (surge start to first order) is shown beside it
because it adds to what any user waiting in the queue sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import AutoscalerSpec
from sim.suite import Surge
from sim.workload import Workload

AFTER_SURGE_S = 600.0  # failing windows are counted until this long after a surge's end
RISE_FRACTION = 0.2  # a pool is part of a surge when its work rate rises by more than this


def replica_rate_tokens_per_s(
    profile: LatencyProfile, spec: AutoscalerSpec, pool: str, ctx_tokens: float
) -> float:
    """One replica's sustained work rate: prefill tokens/s at full chunks; decode output tokens/s at the largest
    batch (within max_num_seqs and the KV capacity) whose step meets the ITL target."""
    if pool == "prefill":
        chunk = float(profile.max_num_batched_tokens)
        return chunk / profile.step.prefill_step_s(chunk)
    cap = int(min(profile.max_num_seqs, max(1.0, profile.kv_capacity_tokens * 0.9 / max(ctx_tokens, 1.0))))
    best = 1
    for b in range(1, cap + 1):
        if profile.step.decode_step_s(b, b * ctx_tokens) <= spec.itl.target_s:
            best = b
    return best / profile.step.decode_step_s(best, best * ctx_tokens)


def _per_second(workload: Workload, pool: str, end_s: float) -> np.ndarray:
    n = math.ceil(end_s) + 1
    tokens = workload.prompt_tokens if pool == "prefill" else workload.output_tokens
    idx = np.clip(workload.arrival_s.astype(np.int64), 0, n - 1)
    return np.bincount(idx, tokens.astype(np.float64), n)


def _drain(
    arrivals: np.ndarray, start_s: int, ready_fn: Any, rate: float, order_ready_s: int, ordered: int
) -> tuple[float, float]:
    """Replay the backlog second by second: until ``order_ready_s`` with the pods ready then (``ready_fn``), after
    it with ``ordered`` replicas. Returns (backlog tokens when the order is ready, seconds to drain it after)."""
    q = 0.0
    t = start_s
    while t < order_ready_s and t < arrivals.size:
        q = max(0.0, q + arrivals[t] - rate * ready_fn(t))
        t += 1
    backlog = q
    drained = 0
    while q > 0:
        if t >= arrivals.size:
            extra = q / (rate * ordered) if ordered > 0 else math.inf
            return backlog, drained + extra
        q = max(0.0, q + arrivals[t] - rate * ordered)
        t += 1
        drained += 1
        if drained > 4 * 3600:
            return backlog, math.inf
    return backlog, float(drained)


def surge_report(
    surge: Surge,
    run: dict[str, Any],
    workload: Workload,
    profile: LatencyProfile,
    spec: AutoscalerSpec,
    startup_s: float,
    window_s: float,
) -> list[dict[str, Any]]:
    """One row per pool whose work rises in ``surge`` (see the module docstring); ``run`` is a compact bench run
    (``windows`` ok/counted/start_s, ``timeline`` time_s and per-pool desired/ready)."""
    tl = {k: np.asarray(v, dtype=np.float64) for k, v in run["timeline"].items()}
    w = {k: np.asarray(v) for k, v in run["windows"].items()}
    starts = w["start_s"].astype(np.float64)
    in_span = (starts >= surge.start_s - window_s) & (starts < surge.end_s + AFTER_SURGE_S)
    failed = int(np.sum(in_span & w["counted"].astype(bool) & ~w["ok"].astype(bool)))
    end_s = max(workload.duration_s, float(workload.arrival_s[-1])) + 1.0
    rows = []
    ctx = float(np.mean(workload.prompt_tokens) + np.mean(workload.output_tokens) / 2)
    for pool in ("prefill", "decode"):
        arrivals = _per_second(workload, pool, end_s)
        lo = int(surge.start_s)
        before = float(np.mean(arrivals[max(0, lo - 300) : lo])) if lo > 0 else 0.0
        during = float(np.mean(arrivals[lo : max(lo + 1, int(surge.end_s))]))
        if during <= before * (1 + RISE_FRACTION):
            continue
        times, desired, ready = tl["time_s"], tl[f"{pool}_desired"], tl[f"{pool}_ready"]
        after = np.nonzero(times >= surge.start_s)[0]
        first = None
        for i in after:
            if i > 0 and desired[i] > desired[i - 1]:
                first = int(i)
                break
        rate = replica_rate_tokens_per_s(profile, spec, pool, ctx)
        row: dict[str, Any] = {
            "surge": surge.label,
            "pool": pool,
            "start_s": surge.start_s,
            "end_s": surge.end_s,
            "work_before_per_s": before,
            "work_during_per_s": during,
            "replica_rate_per_s": rate,
            "minutes_above_target": failed * window_s / 60.0,
        }
        if first is None:
            row.update(first_order_s=None, detect_s=None, ready_before=None, ordered=None, backlog_tokens=None,
                       drain_s=None, physical_min_minutes=None)  # fmt: skip
            rows.append(row)
            continue
        t_sig = float(times[first])
        ordered = int(desired[first])

        def ready_at(t: int, _times: np.ndarray = times, _ready: np.ndarray = ready) -> float:
            j = int(np.searchsorted(_times, t, side="right")) - 1
            return float(_ready[max(j, 0)])

        backlog, drain_s = _drain(arrivals, lo, ready_at, rate, math.ceil(t_sig + startup_s), ordered)
        row.update(
            first_order_s=t_sig,
            detect_s=t_sig - surge.start_s,
            ready_before=int(ready[first]),
            ordered=ordered,
            backlog_tokens=backlog,
            drain_s=drain_s,
            physical_min_minutes=(startup_s + drain_s) / 60.0,
        )
        rows.append(row)
    return rows


def surge_reports(
    tr: Any, window_s: float, scenario: Any = None, policies: Sequence[str] = ("pdscale",)
) -> list[dict[str, Any]]:
    """Surge rows for every run of ``policies`` in a bench ``TraceResult`` (needs ``scenario`` for the workload)."""
    if scenario is None:
        return []
    out = []
    for run in tr.runs:
        s = run["summary"]
        if s["policy"] not in policies:
            continue
        for surge in tr.surges:
            for row in surge_report(
                surge, run, scenario.workload, scenario.profile, scenario.spec, s["startup_s"], window_s
            ):
                out.append({"trace": tr.label, "policy": s["policy"], "startup_s": s["startup_s"], **row})
    return out

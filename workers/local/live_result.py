"""A live run described like a simulated one: ``sim.replay.SimResult`` from what the one-machine cluster did.

So that the simulator's summary, window table, report and plots (``sim.summary``, ``sim.report``) and the
demo's views read a live run exactly as they read a simulated one:

* requests: ``pdscale loadgen``'s records, with the workload's scheduled arrival as the arrival (so a request
  sent late counts its lateness), first token at ``sent + TTFT``, the per-request mean ITL as
  ``(e2e - TTFT) / (tokens - 1)`` (the simulator's ``itl_mean_s``, vLLM bench's TPOT); a failed or short request
  never finished;
* pods: each pod's life from the pod runner's history, from when the kubelet admitted it (its creation, a
  resync later) until it was deleted; start-up included, as the simulator counts GPU-seconds;
* timeline: the pod runner's pool states sampled during the run (desired = the Deployment's ``spec.replicas``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoscaler.core.types import Pool
from sim.summary import SummaryRecords
from workers.loadgen_report import RequestRecord
from workers.local.kubelet import HistoryEvent
from workers.local.pod_runner import PoolState

POOL_KEYS = ("desired", "ready", "starting", "draining")
LOAD_KEYS = ("waiting", "running", "kv_usage")


def live_records(records: Sequence[RequestRecord]) -> SummaryRecords:
    """Loadgen's records as the fields summaries read, so a live run is summarised by the simulator's own code."""
    n = len(records)
    arrival, first, last = np.zeros(n), np.full(n, np.inf), np.full(n, np.inf)
    itl_mean, itl_max = np.full(n, np.nan), np.full(n, np.nan)
    prompt, output, finished = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    for i, r in enumerate(records):
        arrival[i] = r.scheduled_s
        prompt[i], output[i] = r.prompt_tokens, r.max_tokens
        if r.ttft_s is not None:
            first[i] = r.sent_s + r.ttft_s
        done = r.ok and r.output_tokens == r.max_tokens
        finished[i] = done
        if done and r.e2e_s is not None:
            last[i] = r.sent_s + r.e2e_s
            if r.tpot_s is not None:
                itl_mean[i] = r.tpot_s
            if r.itl_s:
                itl_max[i] = max(r.itl_s)
    return SummaryRecords(arrival, first, last, itl_mean, itl_max, prompt, output, finished)


@dataclass(frozen=True)
class LivePod:
    """What ``sim.summary`` reads of a pod: its pool and when it existed (seconds from the run's start)."""

    name: str
    pool: str
    created_s: float
    gone_s: float


def live_pods(history: Sequence[HistoryEvent], t0: float, end_s: float, namespace: str) -> list[LivePod]:
    """Pods of ``namespace`` with a role, from admission to deletion (still there: ``end_s``), clipped to
    ``[0, end_s]`` of the run; pods gone before it started are left out."""
    born: dict[str, tuple[str, float]] = {}
    gone: dict[str, float] = {}
    for e in history:
        if e.namespace != namespace or e.role not in ("prefill", "decode"):
            continue
        if e.event == "admitted":
            born[e.pod] = (e.role, e.t_s - t0)
        elif e.event == "deleted":
            gone[e.pod] = e.t_s - t0
    out = []
    for name, (role, created) in born.items():
        end = min(gone.get(name, end_s), end_s)
        if end <= 0:
            continue
        out.append(LivePod(name, role, max(0.0, created), end))
    return out


def gpu_seconds(pods: Sequence[Any], gpus_per_replica: int, end_s: float) -> dict[Pool, float]:
    """GPU-seconds per pool over ``[0, end_s]`` of pods with ``pool``, ``created_s``, ``gone_s`` (live or simulated)."""
    out = {Pool.PREFILL: 0.0, Pool.DECODE: 0.0}
    for p in pods:
        start, stop = max(0.0, float(p.created_s)), min(float(p.gone_s), end_s)
        if stop > start:
            out[Pool(p.pool)] += (stop - start) * gpus_per_replica
    return out


class TimelineSampler:
    """Collects pool states at chosen times (seconds from the run's start) into the simulator's timeline keys."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def sample(self, t_s: float, state: dict[str, PoolState]) -> None:
        row = [t_s]
        for role in ("prefill", "decode"):
            s = state.get(role, PoolState())
            row += [float(s.desired), float(s.ready), float(s.starting), float(s.draining)]
        self.rows.append(row)

    def timeline(self) -> dict[str, np.ndarray]:
        from sim.replay import TIMELINE_KEYS

        keys = ["time_s"] + [f"{r}_{k}" for r in ("prefill", "decode") for k in POOL_KEYS]
        data = np.array(self.rows, dtype=np.float64).reshape(-1, len(keys))
        out = {k: data[:, i] for i, k in enumerate(keys)}
        for key in TIMELINE_KEYS:  # queue and KV series are not sampled live: NaN (window means skip NaN)
            out.setdefault(key, np.full(data.shape[0], math.nan))
        return {k: out[k] for k in TIMELINE_KEYS}


def live_result(scenario: Any, records: Sequence[RequestRecord], history: Sequence[HistoryEvent], t0: float,
                timeline: dict[str, np.ndarray], namespace: str, *, scale_events: int,
                wall_s: float) -> Any:  # fmt: skip
    """A ``sim.replay.SimResult`` of the live run (decisions are not known one by one here: empty)."""
    from sim.replay import SimResult
    from sim.summary import summarize

    recs = live_records(records)
    last = recs.last_token_s[np.isfinite(recs.last_token_s)]
    end_s = float(max(last.max() if last.size else 0.0, scenario.workload.duration_s))
    pods = live_pods(history, t0, end_s, namespace)
    windows, summary = summarize(
        records=recs, scenario=scenario, policy_name="pdscale (live)", timeline=timeline, decisions=[], pods=pods,
        gpu_seconds=gpu_seconds(pods, scenario.profile.gpus_per_replica, end_s), end_s=end_s, wall_s=wall_s,
        scale_events=scale_events,
    )  # fmt: skip
    return SimResult(summary, windows, recs, [], timeline, scenario)

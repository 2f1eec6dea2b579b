"""What pdscale's policy sees inside NVIDIA Dynamo's mocker: its scaling snapshot turned into an ``Observation``.

The mocker calls ``scaling_policy.on_tick(snapshot)`` at times the policy chooses (``next_tick_ms``); ai-dynamo
1.6.1's snapshot (shape read from ``dynamo/planner/offline/replay_adapter.py``, which consumes the same dict for
Dynamo's own planner, and from live runs) holds:

* ``now_ms`` on the mocker's clock (0 at the trace's first request);
* ``active_/starting_/draining_/non_draining_{prefill,decode}_count`` and the matching ``*_ids``;
* ``prefill_fpm_snapshots`` / ``decode_fpm_snapshots``: the forward-pass metrics (FPM) of workers that ran a
  step since the previous tick, one dict per worker: ``wall_time`` (s, the last step), scheduled
  ``num_prefill_requests`` / ``sum_prefill_tokens`` / ``num_decode_requests`` / ``sum_decode_kv_tokens`` and
  queued ``num_queued_prefill`` / ``sum_queued_prefill_tokens`` / ``num_queued_decode`` /
  ``sum_queued_decode_kv_tokens``; an idle worker sends nothing, so the hook keeps the last one per worker
  (``FpmCache``, as Dynamo's replay adapter does);
* ``traffic``: totals since the previous tick: ``duration_s``, ``num_req`` (arrivals), ``avg_isl`` /
  ``avg_osl`` over ``shape_count`` completed requests, ``avg_ttft_ms`` / ``avg_itl_ms`` over ``ttft_count`` /
  ``itl_count`` samples.

What Prometheus gives pdscale and the snapshot does not: **no histogram, so no percentile**; no cumulative
counters (only per-tick totals); no per-pod series. The mapping (``observation_from_snapshot``):

| ``Signals`` field | from the snapshot |
|---|---|
| ``ttft_mean_s``, ``itl_mean_s`` | exact window means: ``avg_ttft_ms`` / ``avg_itl_ms`` weighted by their counts |
| ``request_rate_per_s`` and prefill's | arrivals per second, ``num_req / duration`` (1) |
| ``prompt_tokens_per_s`` | arrivals per second x ``avg_isl`` |
| ``output_tokens_per_s``, decode's rate | completed requests per second (``shape_count``) x ``avg_osl`` |
| prefill ``waiting`` / ``running`` | sums over prefill workers of ``num_queued_prefill`` / ``num_prefill_requests`` |
| decode ``waiting`` / ``running`` | sums over decode workers of ``num_queued_decode`` / ``num_decode_requests`` |
| decode ``kv_usage_fraction`` | mean over decode workers of ``sum_decode_kv_tokens`` / KV capacity |
| ``ttft_s``, ``itl_s`` (the SLO percentiles) | ``latency_signal``: ``estimate`` (default), ``mean`` or ``none``, below |

(1) A proxy's TTFT histogram counts first tokens, which follow arrivals within a TTFT; the snapshot's
``ttft_count`` is taken when a request completes (it equals ``shape_count``), so it lags by a whole request
(seconds), and at the first ticks reads 25 % under the arrival rate. Arrivals are the closer stand-in.

``estimate``: the larger of the window mean and an upper view built from the workers' state at the tick. TTFT: the
slowest prefill worker's backlog (queued + scheduled prompt tokens) cut into chunks and timed with the latency
profile, plus the KV transfer; ITL: the slowest decode worker's last step (``wall_time``). This is not a p99: it
reads one instant rather than a window's distribution, and it misses a burst that came and went between ticks.
``mean`` hands the policy the means as if they were the percentile (optimistic); ``none`` leaves the percentiles
missing, so pdscale works from its capacity model, the queues and KV alone (its breach feedback and online
correction need a percentile and stay idle).

Rates are over the last ``window_s`` of ticks (merged), like a ``rate()[window]`` query.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoscaler.core.latency import LatencyProfile, prefill_time_s
from autoscaler.core.types import Observation, PoolReplicas, PoolSignals, Signals

LATENCY_SIGNALS = ("estimate", "mean", "none")
Snapshot = Mapping[str, Any]


@dataclass(frozen=True)
class TrafficTotals:
    """One or more merged ``traffic`` entries of the snapshot, as sums (exactly mergeable)."""

    duration_s: float = 0.0
    arrivals: float = 0.0
    completed: float = 0.0  # shape_count: requests whose ISL/OSL are in the averages
    prompt_tokens: float = 0.0  # sum over completed requests
    output_tokens: float = 0.0
    ttft_count: float = 0.0
    ttft_sum_s: float = 0.0
    itl_count: float = 0.0
    itl_sum_s: float = 0.0

    @staticmethod
    def of(traffic: Mapping[str, Any]) -> TrafficTotals:
        """From the snapshot's ``traffic`` dict; missing counts fall back as Dynamo's own adapter does."""
        arrivals = float(traffic.get("num_req", 0.0))
        completed = float(traffic.get("shape_count", arrivals))
        ttft_n = float(traffic.get("ttft_count", arrivals))
        itl_n = float(traffic.get("itl_count", arrivals))
        return TrafficTotals(
            duration_s=float(traffic.get("duration_s", 0.0)),
            arrivals=arrivals,
            completed=completed,
            prompt_tokens=completed * float(traffic.get("avg_isl", 0.0)),
            output_tokens=completed * float(traffic.get("avg_osl", 0.0)),
            ttft_count=ttft_n,
            ttft_sum_s=ttft_n * float(traffic.get("avg_ttft_ms", 0.0)) / 1e3,
            itl_count=itl_n,
            itl_sum_s=itl_n * float(traffic.get("avg_itl_ms", 0.0)) / 1e3,
        )

    def __add__(self, other: TrafficTotals) -> TrafficTotals:
        return TrafficTotals(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[float, ...]:
        return (
            self.duration_s, self.arrivals, self.completed, self.prompt_tokens, self.output_tokens,
            self.ttft_count, self.ttft_sum_s, self.itl_count, self.itl_sum_s,
        )  # fmt: skip


@dataclass
class TrafficWindow:
    """The last ``window_s`` seconds of per-tick traffic totals (a tick's totals cover the time since the last)."""

    window_s: float
    _ticks: deque[tuple[float, TrafficTotals]] = field(default_factory=deque)

    def add(self, now_s: float, totals: TrafficTotals) -> TrafficTotals:
        """Record the totals of the tick ending at ``now_s``; return the merged totals of the window."""
        self._ticks.append((now_s, totals))
        while self._ticks[0][0] <= now_s - self.window_s + 1e-9:  # ended a whole window ago
            self._ticks.popleft()
        merged = TrafficTotals()
        for _, t in self._ticks:
            merged = merged + t
        return merged


class FpmCache:
    """Last forward-pass metrics per worker of one pool; workers no longer active are dropped."""

    def __init__(self) -> None:
        self._last: dict[int, Mapping[str, Any]] = {}

    def update(self, snapshots: Iterable[Mapping[str, Any]], active_ids: Iterable[int]) -> list[Mapping[str, Any]]:
        for snap in snapshots:
            self._last[int(snap["worker_id"])] = snap
        active = {int(i) for i in active_ids}
        for worker in [w for w in self._last if w not in active]:
            del self._last[worker]
        return [self._last[w] for w in sorted(self._last)]


def _sum(fpms: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(sum(float(f.get(key, 0.0)) for f in fpms))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def estimated_ttft_s(
    prefill_fpms: Sequence[Mapping[str, Any]], profile: LatencyProfile, kv_transfer_s_per_token: float
) -> float | None:
    """Time the slowest prefill worker needs for everything it holds (queued + scheduled prompt tokens, chunked
    at max_num_batched_tokens), plus moving the largest scheduled prompt's KV: what its last arrival waits."""
    if not prefill_fpms:
        return None
    worst = 0.0
    for f in prefill_fpms:
        tokens = float(f.get("sum_queued_prefill_tokens", 0)) + float(f.get("sum_prefill_tokens", 0))
        worst = max(worst, prefill_time_s(profile, tokens) + tokens * kv_transfer_s_per_token)
    return worst


def observation_from_snapshot(
    snapshot: Snapshot,
    window: TrafficTotals,
    prefill_fpms: Sequence[Mapping[str, Any]],
    decode_fpms: Sequence[Mapping[str, Any]],
    *,
    profile: LatencyProfile,
    offset_s: float = 0.0,
    latency_signal: str = "estimate",
    kv_transfer_s_per_token: float = 0.0,
) -> Observation:
    """pdscale's ``Observation`` at the snapshot's tick (see the module docstring for every field's source).

    ``offset_s`` puts the mocker's clock on the workload's; ``window`` is the merged traffic of the rate window;
    ``*_fpms`` the last forward-pass metrics per active worker."""
    if latency_signal not in LATENCY_SIGNALS:
        raise ValueError(f"latency_signal must be one of {', '.join(LATENCY_SIGNALS)}, got {latency_signal!r}")
    now_s = float(snapshot["now_ms"]) / 1e3 + offset_s
    dur = window.duration_s
    arrivals_per_s = _ratio(window.arrivals, dur)
    completed_per_s = _ratio(window.completed, dur)
    mean_isl = _ratio(window.prompt_tokens, window.completed)
    ttft_mean = _ratio(window.ttft_sum_s, window.ttft_count)
    itl_mean = _ratio(window.itl_sum_s, window.itl_count)
    prompt_tps = None if arrivals_per_s is None or mean_isl is None else arrivals_per_s * mean_isl
    if arrivals_per_s == 0.0:
        prompt_tps = 0.0
    output_tps = _ratio(window.output_tokens, dur)
    ttft, itl = _latency_signals(
        latency_signal, ttft_mean, itl_mean, prefill_fpms, decode_fpms, profile, kv_transfer_s_per_token
    )
    kv = [float(f.get("sum_decode_kv_tokens", 0)) / profile.kv_capacity_tokens for f in decode_fpms]
    signals = Signals(
        time_s=now_s,
        ttft_s=ttft,
        itl_s=itl,
        ttft_mean_s=ttft_mean,
        itl_mean_s=itl_mean,
        request_rate_per_s=arrivals_per_s,
        prompt_tokens_per_s=prompt_tps,
        output_tokens_per_s=output_tps,
        prefill=PoolSignals(
            waiting_requests=_sum(prefill_fpms, "num_queued_prefill") if prefill_fpms else None,
            running_requests=_sum(prefill_fpms, "num_prefill_requests") if prefill_fpms else None,
            kv_usage_fraction=None,
            request_rate_per_s=arrivals_per_s,
        ),
        decode=PoolSignals(
            waiting_requests=_sum(decode_fpms, "num_queued_decode") if decode_fpms else None,
            running_requests=_sum(decode_fpms, "num_decode_requests") if decode_fpms else None,
            kv_usage_fraction=sum(kv) / len(kv) if kv else None,
            request_rate_per_s=completed_per_s,
        ),
    )
    return Observation(
        now_s,
        signals,
        prefill=_replicas(snapshot, "prefill"),
        decode=_replicas(snapshot, "decode"),
    )


def _latency_signals(
    how: str,
    ttft_mean: float | None,
    itl_mean: float | None,
    prefill_fpms: Sequence[Mapping[str, Any]],
    decode_fpms: Sequence[Mapping[str, Any]],
    profile: LatencyProfile,
    kv_transfer_s_per_token: float,
) -> tuple[float | None, float | None]:
    if how == "none":
        return None, None
    if how == "mean":
        return ttft_mean, itl_mean
    ttft_now = estimated_ttft_s(prefill_fpms, profile, kv_transfer_s_per_token)
    itl_now = max((float(f.get("wall_time", 0.0)) for f in decode_fpms), default=None)
    return _max_known(ttft_mean, ttft_now), _max_known(itl_mean, itl_now)


def _max_known(a: float | None, b: float | None) -> float | None:
    known = [v for v in (a, b) if v is not None and math.isfinite(v)]
    return max(known) if known else None


def _replicas(snapshot: Snapshot, pool: str) -> PoolReplicas:
    """Ordered = not draining (active + starting), the mocker's equivalent of ``spec.replicas``; ready = active."""
    active = int(snapshot[f"active_{pool}_count"])
    ordered = int(snapshot.get(f"non_draining_{pool}_count", active + int(snapshot.get(f"starting_{pool}_count", 0))))
    return PoolReplicas(desired=ordered, ready=active)

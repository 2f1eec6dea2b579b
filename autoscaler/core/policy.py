"""pdscale's policy: feed-forward from a queueing capacity model, corrected online, with SLO feedback.

Per pool, every tick:
  1. load: request rate (the prefill pool's, which does not lag behind a decode backlog; less what its queue
     drained over the rate window, which was backlog, not demand: ``drain_is_not_demand``) and token rates,
     forecast over the pod start-up horizon (``forecast.py``), taken at its peak and never below what is
     observed now; a queue adds its growth rate (measured rates are throughput under saturation) and the
     backlog as it will be when the first starting pods are ready, drained within ``backlog_drain_s`` (prefill:
     no faster than one prompt's prefill and by at most one more pod per prompt, since a prompt is prefilled by
     one pod); decode adds prefill's queue too (those prompts reach decode as soon as prefill catches up, no faster
     than the prefill pods ordered finish them). The prompt mix (SCV and
     the length at the TTFT percentile, which price prefill's work and its TTFT floor) is read from the
     prompt-length histogram over the rate window (``prompt_mix``), assumed without one. Decode's KV context per
     sequence is measured (KV usage × capacity / running sequences), not taken from the means (it is
     output-weighted: a long prompt with a short answer barely occupies decode);
  2. correction: the load multiplier m that puts the model's percentile into the observed histogram bucket at
     the current ready replicas (``capacity.load_multiplier_matching``); raised with a time constant when the
     percentile is near the target, relaxed toward 1 when it is far below (then it reflects fixed costs, not
     queueing); updated only on fresh data, non-trivial load and a ready count stable for a metrics window;
  3. feed-forward: the smallest replica count whose predicted percentile at m × load × headroom meets the target
     with ``margin_up`` (prefill: multi-server queue; decode: Little's-law batch fixed point, KV and
     max_num_seqs); headroom is adaptive (``_headroom``): a quantile of how far the pool's work overshot the
     forecast it was sized for within the start-up horizon (filed once the forecaster is warm and while the pool
     has no queue of its own), ``load_headroom`` while unmeasured, raised by the overshoot seen so far; capped at
     the peak seen (rising past it: at where the steepest rise seen would take the load within a start-up);
  4. feedback: a TTFT/ITL breach (or decode KV above ``kv_high_fraction``) asks for ready × the breach ratio
     at once, if the percentile describes the current ready pods and the queue is not already draining (nor
     drained within a metrics window: the percentile is then the backlog's tail, which neither orders nor
     corrects); pods already starting that cover it are waited for (WaitingForStartingPods). A TTFT breach while
     requests wait for decode slots is decode's, not prefill's;
  5. scale-down only when the model says fewer replicas still meet the target with the wider ``margin_down``
     (hysteresis) at a load raised by the scale-down headroom (as in 3, a higher quantile, ``load_headroom_down``
     while unmeasured: on an on/off load a lull says nothing about the next burst), with no backlog and nothing
     starting; the proposal is that
     count, made gradual by the behavior below;
  6. the spec's HPA ``behavior`` (``behavior.py``: stabilization windows and rate limits, by timestamps) and
     min/max bounds, then the GPU budget split by SLO pressure (``budget.py``);
  7. before the budget: pods still starting that neither 3 nor 5 asks for any more are cancelled at once, past
     the behavior (they serve nothing yet), once the workload's overshoot holds ``cut_min_evidence_s`` of
     evidence and where 5 could scale down at all (``cancel_unneeded_starting``); before that, only an order of
     the tick before that this tick does not confirm (``withdraw_unconfirmed``).
Missing, NaN, stale or errored signals never scale down (reason MetricsUnavailable), nor do signals that understate
the load: requests failing above ``spec.metrics.max_failure_ratio`` (RequestsFailing) or fewer pods reporting than
are ready (PartialMetrics); both may still scale up. Pure: no I/O, no clock;
time comes from the observation. The state is a frozen value that round-trips through JSON (CR status).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from autoscaler.core import behavior as hpa
from autoscaler.core import forecast as fc
from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S
from autoscaler.core.budget import PoolAsk, split_budget
from autoscaler.core.capacity import (
    DecodeModel,
    Load,
    PredictFn,
    PrefillModel,
    decode_replicas_needed,
    load_multiplier_matching,
    predict_itl_s,
    predict_ttft_s,
    prefill_queue_service_s,
    prefill_replicas_needed,
    ttft_floor_s,
)
from autoscaler.core.latency import LatencyProfile
from autoscaler.core.prompt_mix import PromptMix, prompt_mix_from_buckets
from autoscaler.core.spec import AutoscalerSpec, Forecaster
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, PoolReplicas, Reason, Signals

_HPA_REASONS: dict[str, Reason] = {
    hpa.SCALE_UP_STABILIZED: Reason.SCALE_UP_STABILIZED,
    hpa.SCALE_DOWN_STABILIZED: Reason.SCALE_DOWN_STABILIZED,
    hpa.SCALE_UP_LIMIT: Reason.SCALE_UP_LIMIT,
    hpa.SCALE_DOWN_LIMIT: Reason.SCALE_DOWN_LIMIT,
    hpa.TOO_MANY_REPLICAS: Reason.TOO_MANY_REPLICAS,
    hpa.TOO_FEW_REPLICAS: Reason.TOO_FEW_REPLICAS,
}


# ---------------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class PoolState:
    """What the policy remembers about one pool between ticks."""

    correction: float = 1.0  # load multiplier that makes the model match the observed percentile
    correction_time_s: float | None = None
    ready: int | None = None  # ready count last seen, and since when (corrections wait for it to settle)
    ready_since_s: float | None = None
    waiting: float | None = None  # queued requests last tick: a shrinking queue is a breach already healing
    waiting_time_s: float | None = None
    # when the oldest order whose pods are still starting was placed (they are ready a start-up later)
    first_order_time_s: float | None = None
    queued_time_s: float | None = None  # last tick with a material queue (its percentiles are the backlog's)
    behavior: hpa.BehaviorState = field(default_factory=hpa.BehaviorState)

    def to_dict(self) -> dict[str, Any]:
        return {
            "correction": self.correction,
            "correction_time_s": self.correction_time_s,
            "ready": self.ready,
            "ready_since_s": self.ready_since_s,
            "waiting": self.waiting,
            "waiting_time_s": self.waiting_time_s,
            "first_order_time_s": self.first_order_time_s,
            "queued_time_s": self.queued_time_s,
            "behavior": {
                "recommendations": [list(r) for r in self.behavior.recommendations],
                "scale_events": [list(e) for e in self.behavior.scale_events],
            },
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> PoolState:
        b = data.get("behavior", {})
        return PoolState(
            correction=float(data.get("correction", 1.0)),
            correction_time_s=_opt_float(data.get("correction_time_s")),
            ready=None if data.get("ready") is None else int(data["ready"]),
            ready_since_s=_opt_float(data.get("ready_since_s")),
            waiting=_opt_float(data.get("waiting")),
            waiting_time_s=_opt_float(data.get("waiting_time_s")),
            first_order_time_s=_opt_float(data.get("first_order_time_s")),
            queued_time_s=_opt_float(data.get("queued_time_s")),
            behavior=hpa.BehaviorState(
                recommendations=tuple((float(t), int(r)) for t, r in b.get("recommendations", [])),
                scale_events=tuple((float(t), int(c)) for t, c in b.get("scale_events", [])),
            ),
        )


@dataclass(frozen=True)
class PolicyState:
    """Everything pdscale needs across ticks; round-trips through plain JSON types (CR status)."""

    prefill: PoolState = field(default_factory=PoolState)
    decode: PoolState = field(default_factory=PoolState)
    request_rate: fc.ForecastState = field(default_factory=fc.ForecastState)
    prompt_tokens_rate: fc.ForecastState = field(default_factory=fc.ForecastState)
    output_tokens_rate: fc.ForecastState = field(default_factory=fc.ForecastState)
    prompt_tokens_burst: fc.BurstState = field(default_factory=fc.BurstState)
    output_tokens_burst: fc.BurstState = field(default_factory=fc.BurstState)
    # how far each pool's work (prompt tokens/s, output tokens/s) overshot the forecast sized for (adaptive headroom)
    prompt_tokens_surprise: fc.SurpriseState = field(default_factory=fc.SurpriseState)
    output_tokens_surprise: fc.SurpriseState = field(default_factory=fc.SurpriseState)
    # the same, for the forecasts filed while the pool's load rose past the peak ceiling's exemption
    prompt_tokens_surprise_rising: fc.SurpriseState = field(default_factory=fc.SurpriseState)
    output_tokens_surprise_rising: fc.SurpriseState = field(default_factory=fc.SurpriseState)
    missing_since_s: float | None = None  # first tick of the current run of missing signals
    decode_backlog_time_s: float | None = None  # last tick with a decode admission backlog (TTFT blame)
    # measured KV context per decoding sequence / the means' prompt + output/2 (``Load.decode_context_scale``)
    decode_context_scale: float = 1.0
    decode_context_time_s: float | None = None
    # (time s, prompts waiting at prefill) over the last rate window: how much of the served rate was backlog
    prefill_waiting_samples: tuple[tuple[float, float], ...] = ()

    def pool(self, pool: Pool) -> PoolState:
        return self.prefill if pool is Pool.PREFILL else self.decode

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefill": self.prefill.to_dict(),
            "decode": self.decode.to_dict(),
            "request_rate": self.request_rate.to_dict(),
            "prompt_tokens_rate": self.prompt_tokens_rate.to_dict(),
            "output_tokens_rate": self.output_tokens_rate.to_dict(),
            "prompt_tokens_burst": self.prompt_tokens_burst.to_dict(),
            "output_tokens_burst": self.output_tokens_burst.to_dict(),
            "prompt_tokens_surprise": self.prompt_tokens_surprise.to_dict(),
            "output_tokens_surprise": self.output_tokens_surprise.to_dict(),
            "prompt_tokens_surprise_rising": self.prompt_tokens_surprise_rising.to_dict(),
            "output_tokens_surprise_rising": self.output_tokens_surprise_rising.to_dict(),
            "missing_since_s": self.missing_since_s,
            "decode_backlog_time_s": self.decode_backlog_time_s,
            "decode_context_scale": self.decode_context_scale,
            "decode_context_time_s": self.decode_context_time_s,
            "prefill_waiting_samples": [list(x) for x in self.prefill_waiting_samples],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> PolicyState:
        return PolicyState(
            prefill=PoolState.from_dict(data.get("prefill", {})),
            decode=PoolState.from_dict(data.get("decode", {})),
            request_rate=fc.ForecastState.from_dict(data.get("request_rate", {})),
            prompt_tokens_rate=fc.ForecastState.from_dict(data.get("prompt_tokens_rate", {})),
            output_tokens_rate=fc.ForecastState.from_dict(data.get("output_tokens_rate", {})),
            prompt_tokens_burst=fc.BurstState.from_dict(data.get("prompt_tokens_burst", {})),
            output_tokens_burst=fc.BurstState.from_dict(data.get("output_tokens_burst", {})),
            prompt_tokens_surprise=fc.SurpriseState.from_dict(data.get("prompt_tokens_surprise", {})),
            output_tokens_surprise=fc.SurpriseState.from_dict(data.get("output_tokens_surprise", {})),
            prompt_tokens_surprise_rising=fc.SurpriseState.from_dict(data.get("prompt_tokens_surprise_rising", {})),
            output_tokens_surprise_rising=fc.SurpriseState.from_dict(data.get("output_tokens_surprise_rising", {})),
            missing_since_s=_opt_float(data.get("missing_since_s")),
            decode_backlog_time_s=_opt_float(data.get("decode_backlog_time_s")),
            decode_context_scale=float(data.get("decode_context_scale", 1.0)),
            decode_context_time_s=_opt_float(data.get("decode_context_time_s")),
            prefill_waiting_samples=tuple(
                (float(t), float(w)) for t, w in data.get("prefill_waiting_samples", [])
            ),
        )


# ---------------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class _PoolOutcome:
    proposed: int
    reason: Reason
    message: str
    pressure: float
    state: PoolState
    queue_rate_per_s: float = 0.0  # requests/s the pool's queue adds to the demand (prefill's flows on to decode)


@dataclass(frozen=True)
class PdscalePolicy:
    """The pdscale policy. Defaults are the tuned values (bench/bench_policy_quality.py: Azure conv and code
    traces at 50x, Llama-3.1-8B H100, 120 s start-up), measured with ``spec.forecaster`` holt and a 240 s
    scale-down stabilization window in ``spec.behavior``.

    margins are fractions of the SLO target kept free: scale up when the model at the forecast load needs more
    than ``target·(1 − margin_up)``; scale down only to what still meets ``target·(1 − margin_down)``.
    """

    profile: LatencyProfile
    name: str = "pdscale"
    margin_up: float = 0.15
    # 0.35 until the adaptive headroom verified scale-downs at the p98 overshoot on top: 0.25 (chosen on the train
    # workloads, none lost a window; measured at adoption, 1c24809, with a scale-down gate since reverted) cut
    # flat 14.00 -> 13.56 GPU-h, long-prompts 42.96 -> 42.54, diurnal 18.54 -> 18.47; held-out prompt-shift 44.80
    # -> 43.11. 0.15 saved no more.
    margin_down: float = 0.25
    prefill_model: PrefillModel = field(default_factory=PrefillModel)
    decode_model: DecodeModel = field(default_factory=DecodeModel)
    forecaster: Forecaster | None = None  # None: spec.forecaster
    forecast_params: fc.ForecastParams = field(default_factory=fc.ForecastParams)
    horizon_extra_s: float = 30.0  # forecast horizon = pod start-up + this (one tick + scrape lag)
    correction_time_constant_s: float = 120.0
    correction_max: float = 3.0
    correction_floor_fraction: float = 0.5  # below this share of the target, observations only relax it
    correction_relax_time_constant_s: float = 600.0
    correction_min_rate_per_s: float = 0.5
    # Prefill's percentile within this fraction of the model's no-queue floor (``_service_explains``) is service
    # time, and only relaxes the correction: the fidelity the TTFT model is held to (issue 15: within 15 % of
    # published measurements). None: every percentile near the target may raise it. Found on very-long-prompts
    # (held-out; train unchanged): a 125k-token tail prompt's own prefill is 9.5 s by the model, the observed p99
    # sat in vLLM's (10, 20] s bucket, and reproducing 10 s as queueing had held the correction at x1.3-1.7 and
    # 30-37 pods where 20 meet the 20 s target (52.62 -> 47 GPU-h, static-best 30.25).
    correction_floor_tolerance: float | None = 0.15
    stale_after_s: float = 90.0
    # Sizing load = forecast x correction x (1 + headroom): at high utilisation a percentile is so steep in the
    # load that a latency margin alone leaves no room for the rate window's lag; scale-down uses more. These fixed
    # values are the PRIOR: they apply while the pool's overshoot is unmeasured (the first ~7 minutes from a cold
    # start, ``SurpriseParams.min_evidence_s`` of checked forecasts), and to a breach's re-fit (``_breach_need``).
    # A workload not yet measured is not yet known to be predictable, so the prior is cautious: 0.35 / 0.45, chosen
    # on the train workloads (bench/bench_policy_variants.py, suite generalization, 120 s start-up). With 0.1 / 0.3
    # pdscale missed diurnal minutes 3-8 and conv-s0 4-5 (held-out: conv-s1 3-4, conv-s2 3-4, code-s2 4-5), all
    # while the headroom was still this prior; 0.25 / 0.35 still missed diurnal 3-4 and conv-s0 4; 0.35 / 0.45 holds
    # every train window any policy can (flash-crowd's 20-21 cannot be, bench/surge_feasibility.py) at train GPU-h
    # 148.55 -> 153.13 (flat 13.37 -> 14.54: the hysteresis band then keeps the 8th prefill pod the prior ordered;
    # long-prompts 40.13 -> 42.96; conv-s0 19.54 -> 20.45, 0.999x static-best; flash-crowd 28.53 -> 27.46).
    # Held-out: conv-s1 and code-s2 now hold every window (+5 %, +3.5 % GPU-h); conv-s2 still misses 3-4 (0.5 / 0.6
    # holds it, +4 % more there: not adopted, that would be choosing on held-out data).
    load_headroom: float = 0.35
    load_headroom_down: float = 0.45
    # Adaptive headroom (``_headroom``): sized up at the ``headroom_quantile_up`` quantile of the pool's measured
    # overshoot of its forecast over the start-up horizon, scale-down verified at ``headroom_quantile_down`` (and at
    # least ``headroom_gap`` above the up headroom: hysteresis); floors and a cap bound both. While the workload is
    # unmeasured (``SurpriseParams.min_evidence_s``) the fixed ``load_headroom``/``load_headroom_down`` apply, raised
    # (``headroom_early``) toward the quantile of the overshoot seen so far. None: always the fixed ones.
    surprise: fc.SurpriseParams | None = field(default_factory=fc.SurpriseParams)
    headroom_quantile_up: float = 0.9
    headroom_quantile_down: float = 0.98
    headroom_floor_up: float = 0.05
    headroom_floor_down: float = 0.1
    headroom_gap: float = 0.05
    headroom_cap: float = 1.5
    # The three rules below, measured together (bench/bench_policy_variants.py, suite generalization, 120 s start-up)
    # against none of them: no window lost on any of the 13 workloads, code-s0 0.966 -> 1.000; GPU-hours train
    # 150.79 -> 148.55 (diurnal 19.09 -> 18.55, flash-crowd 29.37 -> 28.53, conv-s0 20.18 -> 19.54, long-prompts
    # 40.55 -> 40.13, code-s0 28.26 -> 28.43, flat 13.34 -> 13.37), held-out 200.95 -> 197.65 (code-s1 18.69 ->
    # 16.69, conv-s2 20.51 -> 19.78). Each left out in turn: code-s0 loses minute 16 without ``headroom_early``;
    # train GPU-h 149.68 without the warm-up rule; flash-crowd 30.17 without ``surprise_skip_queued``.
    #
    # An overshoot seen is not ignored for want of evidence: before ``min_evidence_s`` the quantile of the overshoot
    # seen so far may raise the fixed headroom, trusted in proportion to the evidence behind it (evidence_s /
    # min_evidence_s). Fully trusted at once, one load step had ordered 15 prefill pods where 9 drain it
    # (tests/sim/test_closed_loop.py), and alone it cost +4 % on conv-s0, +11 % on code-s0.
    headroom_early: bool = True
    # The measured headroom sizes the forecast up to at most the largest load seen within the overshoot's memory
    # (``SurpriseState.peak``) plus this margin, while the load is not rising (``_rising``; rising, the measured
    # headroom applies in full: a ramp to a new high is what the trend may miss). The overshoot of an on/off load
    # is measured from its lulls, and applied on top of a burst, or after a crowd has gone, it had sized for loads
    # never seen: 36 decode pods on lull-surge where static-best runs 8, 64 prefill pods on prompt-shift. None: no
    # ceiling. Margins 0, 0.1 and 0.25 all hold every train window (train GPU-h 145.90, 146.70, 147.92; without
    # the ceiling 150.09); margin 0 loses held-out code-s1's minute 31, so 0.1, the cheapest that holds every
    # window of the 13 workloads: train diurnal 18.44 -> 17.55, flash-crowd 26.53 -> 25.09, long-prompts 41.61 ->
    # 40.95; held-out 194.71 -> 175.26 (lull-surge 28.10 -> 21.22, prompt-shift 42.00 -> 35.42, code-s2 21.32 ->
    # 18.47, code-s1 17.16 -> 15.48). Applied while rising too, margin 0.15 saved more on code-s0 (23.04: its
    # bursts' onsets are rising), but conv-s0 lost minute 24 and lull-surge 32-33: their loads rose past the peak
    # seen. Exempting any positive trend (``headroom_peak_rising_fraction`` 0; margin 0) gave back most of the
    # saving (train 148.19, held-out 189.50).
    headroom_peak_margin: float | None = 0.1
    # What "rising" exempts from the ceiling: a trend adding more than this fraction within a start-up (None:
    # ``rising_fraction``, the scale-down's own test; ``math.inf``: nothing is exempt, the ceiling applies while
    # rising too). Measured with ``drain_is_not_demand`` on, 120 s start-up, train / held-out GPU-h: 0.1 (the
    # scale-down's) 143.35 / 169.77, 0.2 141.00 / 166.39 (code-s0 28.58 -> 28.05, diurnal 17.55 -> 17.05, long
    # 40.89 -> 40.12, conv-s0 20.00 -> 19.50; very-long 44.82 -> 43.59, code-s2 18.47 -> 17.81), no window lost, and
    # the sweep holds (conv-s0 / code-s0 at 30, 60, 180, 300 s: same windows; code-s0 at 30 s 18.83 -> 16.87). 0.3
    # to inf saved more at 120 s (0.5: train 135.51, code-s0 22.97) but conv-s0 lost minutes 26-27 at 180 s start-up:
    # a slow climb past the peak that the trend under-reads over a long start-up. Requiring the rise to persist
    # 60 or 120 s before exempting it cost flash-crowd (21.75 -> 24.13 / 22.84: the headroom came in later, smaller
    # steps), and at 120 s lull-surge lost minute 32.
    headroom_peak_rising_fraction: float | None = 0.2
    # While the load rises past that exemption, the scale-up headroom is the overshoot measured on the forecasts
    # filed while it rose (``PolicyState.*_surprise_rising``), once they hold this much checked evidence (None: one
    # pod start-up), rather than the overshoot of all forecasts. A bursty load's overshoot is measured from its
    # lulls (the next burst overshoots them by x2-3); a forecast filed inside a burst's rise, with the trend in it,
    # is overshot by far less. code-s0's burst onsets had ordered at x2.25-2.5 headroom: 42 prefill pods where the
    # peak need is 22. Measured with the two rules above, 120 s start-up: train 141.00 -> 135.74 GPU-h (code-s0
    # 28.05 -> 23.03, diurnal 17.05 -> 16.81), held-out 166.39 -> 165.20 (code-s2 17.81 -> 16.90, code-s1 14.88 ->
    # 14.60), no window lost; sweep: same windows at 30, 60, 180, 300 s (code-s0 at 180 s 34.36 -> 26.52, conv-s0 at
    # 300 s 23.34 -> 22.39). A fixed 60 s of evidence lost conv-s0 26-27 at 180 s start-up; 120 s held there; 300
    # s saved little (code-s0 27.74); 600 s nothing.
    headroom_rising_measured: bool = True
    headroom_rising_min_evidence_s: float | None = None
    # Rising past that exemption, the scale-up headroom sizes the forecast up to no more than where the steepest
    # rise seen within the overshoot's memory (``SurpriseState.rise_per_s``, per second between two samples) would
    # take the load now within a pod start-up, plus ``headroom_peak_margin``: a climb is not sized as if it could
    # jump further than the load has ever been seen to climb. Overshoots are relative: those filed in a lull (suite
    # lull-surge, 8 req/s after 100) had put the headroom at its cap, x2.5, and a climb to 150 req/s was then sized
    # at 2.5 x its trend's forecast: 25 prefill / 35 decode pods where 8 / 8 were needed. A step (flash-crowd,
    # code's bursts) rises steeply enough that the ceiling stays above the measured headroom. Found on lull-surge, a
    # held-out workload (so not tuned on it: the rule has no parameter of its own). Measured (bench/
    # bench_policy_variants.py, 120 s start-up, on c7148c0): lull-surge 21.54 -> 18.41 GPU-h (1.34 -> 1.14x
    # static-best, the same windows), no other workload changed; sweep: code-s0 at 60 s 20.70 -> 20.12, no window
    # won or lost at 30, 60, 180, 300 s.
    headroom_climb_ceiling: bool = True
    # The rules that size BELOW the measured overshoot (the peak and climb ceilings above) and the cancelling of
    # starting pods once measured (``cancel_unneeded_starting``) wait for this much checked evidence, twice the
    # ``SurpriseParams.min_evidence_s`` (300 s) after which the measured quantile itself sizes. 300 s of checked
    # forecasts are enough to size by what the load overshot; they are not enough to conclude that the next burst
    # stays within the peak seen, nor to withdraw pods ordered for the last one. Measured (bench/bench_policy_variants.py,
    # on 414b879, against 600 s for both): the start-up sweep's only lost window, code-s0 minute 11 at 30 s start-up,
    # is held (0.983 -> 1.000: the scale-down before that burst is verified at the measured +100 % instead of the
    # prior raised to +81 %), and no window is lost at 30, 60, 120, 180 or 300 s on conv-s0 and code-s0, nor at 30,
    # 60 and 180 s on conv-s1, code-s1 and code-s2. GPU-h at 120 s: train 134.97 -> 135.40, held-out 161.79 ->
    # 162.37 (conv, long and prompt-shift cheaper, the code traces +1.1 to +1.5: their measured quantile is above the
    # prior). With the ceilings and the cancelling also at 300 s, train 128.85 and held-out 158.49 (code-s0 19.09,
    # 0.83x static-best), but code-s0 lost minute 16 at 30, 60 and 180 s start-up: capped at the 11-12 burst's peak
    # (+10 %), or with its pods cancelled in the lull after it, the pool met the larger burst at 16 with 15 pods
    # where 22 were needed (with only the ceilings at 600 s it still lost 16 at 180 s; with only the cancelling, at
    # 30 and 60 s).
    cut_min_evidence_s: float = 600.0
    # Overshoots are filed once the forecaster is warm: its rate window filled (the trend is held at 0 until then)
    # and this many trend time constants after (the trend has caught up with a ramp by 1 - e^-1). The misses of a
    # cold trend are not the workload's, and they had set the headroom for the hour (``memory_s``) on diurnal
    # (p90 x1.50 prefill, x1.60 decode from minute 13.5; median after minute 15 now x1.35 / x1.35). 2 constants
    # lost diurnal minutes 35-36: the first ramp's warm part is what warns of the second.
    surprise_warmup_trend_constants: float = 1.0
    # No forecast is filed while the pool has its own queue (prefill: more waiting than ready pods; decode: its
    # admission backlog): its rates are then throughput capped by the pool's shortage, so the forecast built on them
    # falls short by the shortage, which the surge sizing (queue growth and backlog drain) orders for already. The
    # forecasts filed before the queue are still checked while it lasts: the rise that made it is the workload's.
    # (Dropping those too, unchecked: flash-crowd 20.71 GPU-h, but diurnal lost minute 35 and code-s0 minute 16.)
    surprise_skip_queued: bool = True
    # Bursts shorter than a pod start-up are absorbed only by capacity already running: size (up and down) for
    # the larger of the headroom above and the pool's recent token-rate swing (``forecast.burst_update``; None: off).
    burst: fc.BurstParams | None = None
    breach_gain: float = 1.0  # proportional fallback when the load is unknown: ready x (1 + gain x excess)
    breach_max_factor: float = 2.0  # a breach asks for at most this many times the ready replicas at once
    kv_high_fraction: float = 0.9
    # Decode's KV context per sequence, measured (KV usage x capacity x pods / running sequences) when at least
    # ``decode_context_min_running`` sequences run per pod, relative to the means' prompt + output/2, smoothed
    # with this time constant and bounded (``_update_decode_context``).
    decode_context_time_constant_s: float = 60.0
    decode_context_min_running: float = 4.0
    decode_context_scale_bounds: tuple[float, float] = (0.2, 3.0)
    # The backlog expected when newly ordered pods are ready is sized to drain within this many seconds after
    # (one SLO window); None: the start-up horizon.
    backlog_drain_s: float | None = 60.0
    # What a prefill backlog can physically use (``_decide_pool``, ``_passed_on``): each prompt is prefilled by one
    # pod, so k waiting prompts drain no faster than one prompt's prefill and keep at most k more pods busy, and
    # decode receives them no faster than the prefill pods ordered finish them. False: the token sum over
    # ``backlog_drain_s`` is ordered, and passed on to decode, whatever the pod count.
    backlog_pods_per_prompt: bool = True
    # A prefill pool whose own queue grows is saturated: its pods serve all they can, while the served rate over the
    # rate window still holds the minutes before (a burst's first tick reads a fraction of it). The demand is then at
    # least that capacity (the pods ready through the tick / one queued prompt's service time, at the correction)
    # plus the queue's growth, and the first order is sized for it (``_saturated_rate_per_s``; not with a decode
    # backlog, whose queue it is). It is a rate measured now, not a forecast: no headroom on top. Measured at 120 s
    # start-up, train / held-out GPU-h 137.03 -> 137.54 / 167.73 -> 168.63: conv-s2 minute 3 held (0.983 -> 1.000;
    # a 7-prompt queue on 6 pods at 90 s, the start ramp), no window lost; sweep (conv-s0 / code-s0 at 30, 60, 180,
    # 300 s): code-s0 at 30 s holds minute 12 (0.966 -> 0.983: 201 prompts queued in one tick on 12 pods, the rate
    # window at 188 req/s where the pods serve 290), none lost. With the headroom on top of it: the same windows at
    # +2.3 / +2.9 GPU-h (code-s1 +0.7, code-s2 +1.1). Minute 11 there is lost to the scale-down before the burst.
    saturated_demand_floor: bool = True
    rising_fraction: float = 0.1  # no scale-down while the load trends up more than this per start-up time
    # Histogram bucket edges of the observed percentiles: the model only has to land in the observed bucket
    # (vLLM's edges are coarse: an ITL p99 of 0.0248 s means "somewhere in (0.01, 0.025]").
    ttft_bucket_edges_s: tuple[float, ...] = TTFT_BUCKETS_S
    itl_bucket_edges_s: tuple[float, ...] = ITL_BUCKETS_S
    missing_fallback_replicas: int | None = None  # scale up to at least this after missing_fallback_after_s
    missing_fallback_after_s: float = 300.0
    # The prompt-length mix (SCV, tail length at the TTFT percentile) read from the prompt-token histogram over
    # the rate window (``prompt_mix``), once it holds at least this many requests; fewer, none or off: the
    # ``prefill_model``'s assumptions (SCV 1, tail 3x the mean), and the decision message says so.
    measure_prompt_mix: bool = True
    prompt_mix_min_requests: float = 30.0
    # Read the demand where requests ARRIVE (the proxy's arrival counters, ``Signals.arrived_*``) rather than from
    # served work, whose rates are throughput under a backlog and whose mean prompt lags a change of the prompt
    # length by the queue's wait. Without those series (or off) the demand is served work plus the queue's growth.
    # Off by default, measured (bench/surge_causes.py, 120 s start-up): no window won on flash-crowd, lull-surge,
    # prompt-shift, diurnal, conv-s0 or code-s0, one lost on diurnal (0.900 -> 0.883), GPU-h +9 % on flash-crowd
    # (29.37 -> 32.03), +2 % on prompt-shift. The arrival rate is a 60 s window's mean like the served one, while the
    # queue's growth it replaces is measured over one tick (15 s): it is the faster signal of a surge. The windows
    # missed are the start-up's (a need that rose less than a pod start-up before the window), which no reading
    # of the present can win.
    read_arrivals: bool = False
    # Decode's output tokens are forecast from the demand (the demand's requests/s x its mean output, which divides
    # the output tokens by the requests they belong to, ``_load_from``), not from decode's throughput. While decode
    # drains a backlog onto new pods its throughput is the arrivals plus the backlog, and its trend extrapolated
    # that: in the demo's generation surge decode produced 92-94k output tok/s where 55k arrived, read as 1,118-1,313
    # output tokens per request (the surge's mean is ~1,000), and decode was ordered to its maximum, 32, where 8
    # do; on flash-crowd 29 where 10 do. Identical while decode keeps up (then both divide by the same requests).
    # Measured (bench/bench_policy_variants.py, 120 s start-up, on a5508b3): no window won or lost on the 13
    # workloads; train 137.54 -> 136.66 GPU-h (flash-crowd 21.73 -> 21.12), held-out 165.50 -> 166.16 (very-long
    # 45.50 -> 45.98: decode held a pod or two higher at 6-10 req/s, prompt-shift +0.17); sweep (conv-s0, code-s0
    # at 30, 60, 180, 300 s): no window won or lost, conv-s0 -0.03 to -0.15; the demo 16 -> 17 of 25 windows, request
    # SLO 67.3 -> 74.9 %, 10.43 -> 9.06 GPU-h.
    output_forecast_from_demand: bool = True
    # A request or two waiting (below a queue of the pool's own) vetoes a scale-down only while the load trends up by
    # more than this fraction within a start-up; None: always (below, where the veto is). 0.03 (measured on
    # 4f1ede9, bench/bench_policy_variants.py, 120 s start-up): train 136.66 -> 135.12 GPU-h (flat 14.75 -> 14.10,
    # conv-s0 19.90 -> 19.34), held-out 166.16 -> 164.24 (conv-s1 19.51 -> 19.05, conv-s2 19.71 -> 19.20: both
    # below static-best), no window lost at 30-180 s start-up, but at 300 s conv-s0 loses minutes 24-26 (1.000 ->
    # 0.949): 12 -> 10 prefill pods at minute 17 on a flat load, five minutes before a climb of 40 % that the
    # pods removed could not come back for (0.0, any upward trend: the same). So it stays off by default.
    queue_veto_rising_fraction: float | None = None
    # The backlog a prefill order drains (within ``backlog_drain_s``) is what the TTFT target does not tolerate: a
    # queue whose wait (Little's law: queued prompts / arrivals per second) fits in the target at ``margin_up`` less
    # a tail prompt's own prefill (``ttft_floor_s``) is within the SLO, and pods ordered to drain it buy nothing the
    # SLO asks for. It binds where prompts are long and the target loose: on very-long-prompts (20 s target, 36k
    # tokens mean) 47 prompts queued at 90 s with TTFT p99 at 13.5 s, projected to 282 when new pods are ready,
    # were drained in 60 s on top of the arrivals: 13 -> 35 prefill pods (decode, told of them, 10 -> 35) where the
    # oracle needs 10 / 8, held 8 minutes by the stabilization window. On chat traffic (1 s target) it tolerates a
    # few dozen prompts, little against a surge's backlog. Found on very-long-prompts (held-out); measured
    # (bench/bench_policy_variants.py, 120 s start-up, on 697a70c): train 136.66 -> 136.38 GPU-h (long-prompts
    # 40.83 -> 40.55), held-out 166.16 -> 164.50 (very-long 45.98 -> 44.44, code-s1 14.98 -> 14.86), no window won
    # or lost; sweep (conv-s0, code-s0 at 30, 60, 180, 300 s): no window won or lost, conv-s0 at 300 s +0.12; the
    # demo unchanged.
    backlog_tolerated: bool = True
    # While prefill's queue drains, its served rate is the arrivals plus the drain (requests in over the rate
    # window = requests out + the queue's change over that window). Read as demand, the drain had looked like a
    # surge: on prompt-shift the queue of 4,400 prompts drained at ~160 req/s while 90 arrived, the trend
    # extrapolated it and 42 prefill pods became 64 (the oracle needs 14), held for the stabilization window. With
    # this on, the demand the forecasts, the overshoot and the sizing read is the served rate less the drain.
    drain_is_not_demand: bool = True
    # Pods still starting that this tick's sizing no longer asks for are cancelled at once (``_cancel_starting``):
    # down to what both the scale-up sizing and the scale-down verification ask for, never below the ready pods,
    # and only where a scale-down could be considered at all (no queue, no rising load, no bad data) and the
    # workload's overshoot is measured (``cut_min_evidence_s``). A pod not yet ready serves nothing; the
    # stabilization window, which keeps serving pods from flapping, had held a withdrawn order for its whole length
    # after the pods came up. Measured (bench/bench_policy_variants.py, on b25e3e3): at 120 s start-up train 136.38
    # -> 134.97 GPU-h (long-prompts 40.55 -> 39.37), held-out 164.50 -> 163.03 (very-long 44.44 -> 43.44; conv-s1
    # 19.51 -> 19.41 and conv-s2 19.71 -> 19.55, both now below static-best), no window won or lost; sweep (conv-s0,
    # code-s0 at 30, 60, 180, 300 s): no window won or lost, code-s0 at 300 s 37.53 -> 29.18, conv-s0 at 180 s 20.99
    # -> 20.18, at 300 s 23.19 -> 22.71. Cancelling before the overshoot is measured saved more at 120 s (train
    # 129.62, held-out 158.42: very-long's first-minute order of 33 / 33 pods withdrawn at the next tick, code-s0
    # 23.41 -> 19.00) but lost code-s0 minutes 11-12 and 16 at 180 s start-up, more at 300 s, and conv-s0 24-26
    # at 300 s: pods ordered for one burst and cancelled in the lull after it were the capacity the next burst
    # found, and a re-order starts over. Requiring the surplus to exceed 20 or 35 % of the need, or the overshoot
    # seen so far to stay within the headroom in use, or keeping what the peak seen needs, did not tell the two
    # apart (code-s0 at 180 s 30.37 GPU-h, or windows lost at 300 s).
    cancel_unneeded_starting: bool = True
    # Before the overshoot is measured, an order the next tick does not confirm is withdrawn the same way: the pods
    # ordered on the tick before, while they are still starting, down to what this tick's sizing asks for (once the
    # rate window has filled; a queue still vetoes it, a rising trend does not: the sizing holds the trend), and only
    # when at least ``cancel_min_pods`` go: one pod is the sizing's rounding noise, and withdrawing it flapped a
    # steady 20 req/s load between 1 and 2 prefill pods (2 prompts queued on 1 pod ordered a second, withdrawn at the
    # next tick, four times in 20 minutes: tests/sim/test_closed_loop.py's steady-load test). One tick's reading
    # that the next contradicts is noise: on very-long-prompts both pools were ordered to 33 on a queue growing
    # 3.1/s for one tick, and decode's order is withdrawn to 23 at the next. Measured (on 46b6d91,
    # bench/bench_policy_variants.py): at 120 s start-up held-out 163.03 -> 161.79 GPU-h (very-long 43.44 ->
    # 42.20), train unchanged (134.97), no window won or lost; sweep (conv-s0, code-s0 at 30, 60, 180, 300 s)
    # unchanged. Withdrawing single pods too saved a little more (long-prompts -0.12, code-s2 -0.24, code-s0 at
    # 300 s -0.90) but flapped as above. Without the filled-window condition a withdrawal at 45 s (the window reading
    # low) cost lull-surge +0.24; with the rising veto kept, nothing was ever withdrawn (the trend still rises at
    # the trace's start, when these orders are placed).
    withdraw_unconfirmed: bool = True
    cancel_min_pods: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.margin_up <= self.margin_down < 1:
            raise ValueError(
                f"need 0 <= margin_up <= margin_down < 1, got {self.margin_up}, {self.margin_down}"
            )
        if self.correction_max < 1 or not 0 < self.correction_floor_fraction < 1:
            raise ValueError("need correction_max >= 1 and 0 < correction_floor_fraction < 1")
        if self.breach_max_factor < 1 or self.breach_gain <= 0:
            raise ValueError("need breach_max_factor >= 1 and breach_gain > 0")
        if not 0 < self.headroom_quantile_up <= self.headroom_quantile_down <= 1:
            raise ValueError(
                "need 0 < headroom_quantile_up <= headroom_quantile_down <= 1, got "
                f"{self.headroom_quantile_up}, {self.headroom_quantile_down}"
            )
        if not 0 <= self.headroom_floor_up <= self.headroom_cap or not 0 <= self.headroom_floor_down <= self.headroom_cap:
            raise ValueError("need 0 <= headroom floors <= headroom_cap")
        if self.headroom_gap < 0:
            raise ValueError(f"need headroom_gap >= 0, got {self.headroom_gap}")

    # -- Policy protocol

    def initial_state(self, spec: AutoscalerSpec) -> PolicyState:
        return PolicyState()

    def decide(
        self, observation: Observation, state: PolicyState, spec: AutoscalerSpec
    ) -> tuple[Decision, PolicyState]:
        now_s = observation.time_s
        signals = observation.signals
        missing = _missing_reason(signals, now_s, self.stale_after_s)
        params = self._forecast_params(spec)
        drained_per_s = 0.0
        if missing is None:
            waiting_now = _finite(signals.prefill.waiting_requests)
            if self.drain_is_not_demand:
                drained_per_s = _drained_per_s(state.prefill_waiting_samples, now_s, waiting_now, spec.metrics.window_s)
            state = replace(
                state,
                prefill_waiting_samples=_recent_samples(
                    state.prefill_waiting_samples, now_s, waiting_now, spec.metrics.window_s
                ),
            )
        load_now = None if missing is not None else _load_from(signals, self.read_arrivals, drained_per_s)
        state = self._update_forecasts(state, params, observation, load_now, spec.metrics.window_s, drained_per_s)
        state = replace(
            state,
            missing_since_s=None
            if missing is None
            else (state.missing_since_s if state.missing_since_s is not None else now_s),
        )
        mix_text = ""
        if load_now is not None:
            load_now, mix_text = self._with_prompt_mix(load_now, signals, spec)
            mix_text = "; ".join(filter(None, [_demand_text(signals, self.read_arrivals), mix_text]))
            state = self._update_decode_context(state, observation, load_now)
            load_now = replace(load_now, decode_context_scale=state.decode_context_scale)
        finished = _output_denominator(signals, load_now)
        load_ahead = None if load_now is None else self._forecast_load(state, params, load_now, spec, finished)
        load_base = (
            None if load_now is None else self._forecast_load(state, params, load_now, spec, finished, smooth=True)
        )
        if load_now is not None and load_base is not None:
            state = self._update_surprise(state, params, observation, load_now, load_base, spec)
        if missing is None and self._decode_backlog(observation) is not None:
            state = replace(state, decode_backlog_time_s=now_s)

        hold = None if missing is not None else _scale_down_hold(observation, spec)
        outcomes: dict[Pool, _PoolOutcome] = {}
        for pool in (Pool.PREFILL, Pool.DECODE):
            # prompts queued at prefill reach decode as soon as prefill catches up: decode orders for them too
            upstream = outcomes[Pool.PREFILL].queue_rate_per_s if pool is Pool.DECODE else 0.0
            outcomes[pool] = self._decide_pool(
                pool, observation, state, spec, missing, load_now, load_ahead, hold, load_base, upstream,
                mix_text if pool is Pool.PREFILL else "",
            )
        split = split_budget(
            spec.gpu_budget,
            *(
                PoolAsk(
                    outcomes[p].proposed,
                    spec.pool(p).min_replicas,
                    spec.pool(p).gpus_per_replica,
                    outcomes[p].pressure,
                )
                for p in (Pool.PREFILL, Pool.DECODE)
            ),
        )
        decisions: dict[Pool, PoolDecision] = {}
        new_pools: dict[Pool, PoolState] = {}
        for pool, final, capped in (
            (Pool.PREFILL, split.prefill_replicas, split.prefill_capped),
            (Pool.DECODE, split.decode_replicas, split.decode_capped),
        ):
            out = outcomes[pool]
            current = observation.replicas(pool).desired
            reason, message = out.reason, out.message
            if capped:
                reason = Reason.CAPPED_BY_BUDGET
                message = (
                    f"GPU budget {spec.gpu_budget}: {pool.value} capped at {final} of {out.proposed} wanted "
                    f"(pressure {out.pressure:.2f}, priority {split.priority}); " + message
                )
            pstate = out.state
            change = final - current
            if observation.replicas(pool).starting == 0:
                pstate = replace(pstate, first_order_time_s=now_s if change > 0 else None)
            elif change > 0 and pstate.first_order_time_s is None:
                pstate = replace(pstate, first_order_time_s=now_s)
            if change != 0:
                pstate = replace(
                    pstate, behavior=hpa.record_scale_event(pstate.behavior, now_s, change, behavior=spec.behavior)
                )
            decisions[pool] = PoolDecision(pool, current, final, reason.value, message)
            new_pools[pool] = pstate
        decision = Decision(now_s, decisions[Pool.PREFILL], decisions[Pool.DECODE])
        return decision, replace(state, prefill=new_pools[Pool.PREFILL], decode=new_pools[Pool.DECODE])

    # -- load

    def _forecast_params(self, spec: AutoscalerSpec) -> fc.ForecastParams:
        """The trend may add over at least one pod start-up: capacity ordered now must cover the ramp until it is
        ready, so slower-starting pods need the trend extrapolated further (measured: conv trace at 180 s and
        300 s start-up, window compliance 0.95 -> 0.98 and 0.86 -> 0.98; unchanged at <= 120 s)."""
        method = self.forecaster if self.forecaster is not None else spec.forecaster
        damping_s = max(self.forecast_params.trend_damping_s, spec.pod_startup_s)
        warmup_s = max(self.forecast_params.warmup_s, spec.metrics.window_s)
        return replace(self.forecast_params, method=method, trend_damping_s=damping_s, warmup_s=warmup_s)

    def _update_forecasts(
        self,
        state: PolicyState,
        params: fc.ForecastParams,
        observation: Observation,
        demand: Load | None,
        lag_s: float,
        drained_per_s: float = 0.0,
    ) -> PolicyState:
        """Fold this tick's ``demand`` (``_load_from``; None while the signals are missing) into the forecasters."""
        if demand is None:
            return state
        signals = observation.signals
        t = signals.time_s
        assert signals.prompt_tokens_per_s is not None and signals.output_tokens_per_s is not None
        prompt_tps = signals.prompt_tokens_per_s
        if drained_per_s > 0 or _arrivals_read(signals, self.read_arrivals):  # arriving, not prefilled
            prompt_tps = demand.request_rate_per_s * demand.mean_prompt_tokens
        output_tps = signals.output_tokens_per_s
        if self.output_forecast_from_demand:
            output_tps = demand.request_rate_per_s * demand.mean_output_tokens
        state = replace(
            state,
            request_rate=fc.update(params, state.request_rate, t, demand.request_rate_per_s),
            prompt_tokens_rate=fc.update(params, state.prompt_tokens_rate, t, prompt_tps),
            output_tokens_rate=fc.update(params, state.output_tokens_rate, t, output_tps),
        )
        if self.burst is None:
            return state
        # Under a queue the token rates are throughput: a backlog draining onto new pods is not a swing of the
        # demand, so such samples are left out (a swing needs three samples in a row without one).
        prefill_queued, decode_queued = self._own_queues(observation)
        prompt = math.nan if prefill_queued else signals.prompt_tokens_per_s
        output = math.nan if decode_queued else signals.output_tokens_per_s
        return replace(
            state,
            prompt_tokens_burst=fc.burst_update(self.burst, state.prompt_tokens_burst, t, prompt, lag_s),
            output_tokens_burst=fc.burst_update(self.burst, state.output_tokens_burst, t, output, lag_s),
        )

    def _forecast_load(
        self,
        state: PolicyState,
        params: fc.ForecastParams,
        now: Load,
        spec: AutoscalerSpec,
        finished_per_s: float = 0.0,
        smooth: bool = False,
    ) -> Load:
        """Peak forecast over start-up + one tick, never below the load observed now (``smooth``: the forecast
        alone, which the scale-down verification and the overshoot measurement use: a sample's noise must not
        decide a scale-down it does not decide for the forecaster). The mean output divides the output tokens by
        at least ``finished_per_s``, the requests those tokens belong to (``_load_from``)."""
        horizon = spec.pod_startup_s + self.horizon_extra_s
        floor = 0.0 if smooth else 1.0
        rate = max(floor * now.request_rate_per_s, fc.peak(params, state.request_rate, horizon) or 0.0)
        prompt_tps = max(
            floor * now.request_rate_per_s * now.mean_prompt_tokens,
            fc.peak(params, state.prompt_tokens_rate, horizon) or 0.0,
        )
        output_tps = max(
            floor * now.request_rate_per_s * now.mean_output_tokens,
            fc.peak(params, state.output_tokens_rate, horizon) or 0.0,
        )
        if rate <= 0:
            return now
        per_output = max(rate, finished_per_s)
        if smooth:
            return _same_mix(
                Load(rate, max(prompt_tps / rate, 1.0), max(output_tps / per_output, 1.0), now.decode_context_scale),
                now,
            )
        return _same_mix(
            Load(
                rate,
                max(now.mean_prompt_tokens, prompt_tps / rate),
                max(now.mean_output_tokens, output_tps / per_output),
                now.decode_context_scale,
            ),
            now,
        )

    def _with_prompt_mix(self, load: Load, signals: Signals, spec: AutoscalerSpec) -> tuple[Load, str]:
        """``load`` with the prompt mix measured over the rate window (SCV, tail length at the TTFT percentile),
        and the words for the decision message. Too few requests in the window (or no histogram, or switched off)
        keep the ``prefill_model``'s assumptions."""
        if not self.measure_prompt_mix:
            return load, ""
        buckets = signals.prompt_length_buckets
        mix: PromptMix | None = None
        if buckets:
            try:
                mix = prompt_mix_from_buckets(buckets, spec.ttft.percentile)
            except ValueError as exc:
                return load, f"prompt mix assumed (histogram unusable: {exc})"
        if mix is None:
            why = "no prompt-length histogram" if buckets is None else "no requests in the window"
            return load, f"prompt mix assumed ({why})"
        requests = mix.requests_per_s * spec.metrics.window_s
        if requests < self.prompt_mix_min_requests:
            return load, f"prompt mix assumed (only {requests:.0f} requests in the window)"
        # the tail as read (the bucket-shape error of the histogram's own mean would distort a ratio to it);
        # ``_same_mix`` carries it onto a forecast's mean as a multiple of this load's mean
        tail = max(load.mean_prompt_tokens, mix.tail_tokens)
        if _arrivals_read(signals, self.read_arrivals):
            # the mean is the arriving prompts' and the histogram counts served ones, which lag a change of the
            # prompt length by the queue's wait: carry the tail as the histogram's multiple of its own mean
            tail = max(load.mean_prompt_tokens, mix.tail_factor * load.mean_prompt_tokens)
        text = (
            f"prompt mix measured: SCV {mix.scv:.2f}, p{spec.ttft.percentile * 100:g} {tail:.0f} tok "
            f"({tail / load.mean_prompt_tokens:.1f}x the mean), {requests:.0f} requests"
        )
        return replace(load, prompt_scv=mix.scv, tail_prompt_tokens=tail), text

    def _update_decode_context(self, state: PolicyState, obs: Observation, now: Load) -> PolicyState:
        """Measure the KV context a decoding sequence really carries and keep its ratio to the means' model.

        Measured, not modelled, because it needs the joint distribution of prompt and output lengths (a sequence
        holds its context for its output length): long prompts with short answers (7k-token prompts, 4-token
        outputs beside chat traffic) made the means' model see 3.8k tokens per decoding sequence where 1.4k ran,
        and decode grew from 1 to 3 replicas for a prompt-only surge (tests/sim/test_closed_loop.py). Only with
        enough running sequences per pod to be a mean; smoothed over ``decode_context_time_constant_s``."""
        sig = obs.signals.decode
        running, kv = _finite(sig.running_requests), _finite(sig.kv_usage_fraction)
        reporting = _finite(sig.pods_reporting)
        pods = reporting if reporting is not None else float(obs.decode.ready)
        if running is None or kv is None or pods < 1 or running < self.decode_context_min_running * pods:
            return state
        if now.request_rate_per_s <= 0:  # no request finished in the window yet: the means are undefined
            return state
        measured = kv * self.profile.kv_capacity_tokens * pods / running
        lo, hi = self.decode_context_scale_bounds
        ratio = min(hi, max(lo, measured / max(now.mean_decode_context_tokens, 1.0)))
        last, t = state.decode_context_time_s, obs.time_s
        if last is None:
            scale = ratio
        else:
            w = 1.0 - math.exp(-max(0.0, t - last) / self.decode_context_time_constant_s)
            scale = state.decode_context_scale + w * (ratio - state.decode_context_scale)
        return replace(state, decode_context_scale=scale, decode_context_time_s=t)

    # -- model

    def _predict_fn(self, pool: Pool, spec: AutoscalerSpec) -> PredictFn:
        profile = self.profile
        if pool is Pool.PREFILL:
            pct, pmodel = spec.ttft.percentile, self.prefill_model
            return lambda load, n: predict_ttft_s(profile, load, n, pct, pmodel)
        pct_d = spec.itl.percentile
        return lambda load, n: predict_itl_s(profile, load, n, pct_d)

    def needed(self, pool: Pool, load: Load, target_s: float, spec: AutoscalerSpec) -> int:
        limit = spec.pool(pool).max_replicas
        if pool is Pool.PREFILL:
            return prefill_replicas_needed(
                self.profile, load, target_s, spec.ttft.percentile, limit, self.prefill_model
            )
        return decode_replicas_needed(
            self.profile, load, target_s, spec.itl.percentile, limit, self.decode_model
        )

    def _correct(
        self,
        pool: Pool,
        pst: PoolState,
        replicas: PoolReplicas,
        observed_s: float | None,
        target_s: float,
        load_now: Load | None,
        now_s: float,
        spec: AutoscalerSpec,
    ) -> PoolState:
        """Update the load-multiplier correction from the observed percentile (see module docstring)."""
        last = pst.correction_time_s
        dt = 0.0 if last is None else max(0.0, now_s - last)
        settled = _settled(pst, now_s, spec)
        if (
            observed_s is None
            or load_now is None
            or load_now.request_rate_per_s < self.correction_min_rate_per_s
            or replicas.ready < 1
            or not settled
        ):
            return pst
        if last is None:
            return replace(pst, correction_time_s=now_s)
        w_up = 1.0 - math.exp(-dt / self.correction_time_constant_s)
        edges = self.ttft_bucket_edges_s if pool is Pool.PREFILL else self.itl_bucket_edges_s
        lo, _hi = _bucket_of(observed_s, edges)
        if observed_s < self.correction_floor_fraction * target_s or self._service_explains(pool, lo, load_now, spec):
            # Far below target the percentile is dominated by fixed costs (service, KV transfer, first decode
            # step), not by queueing, so it says nothing about load: relax toward the plain model.
            w_down = 1.0 - math.exp(-dt / self.correction_relax_time_constant_s)
            corr = pst.correction + w_down * (1.0 - pst.correction)
        else:
            # Near the target, find the load multiplier that puts the model into the observed histogram bucket
            # (lo, hi] (the interpolated value inside a coarse bucket is not information) and only ever raise
            # the correction here: together with the relaxation above, a worse observation never yields a
            # smaller correction (monotone), and the model errs on the side of capacity.
            predict = self._predict_fn(pool, spec)
            matched = pst.correction
            if predict(load_now.scaled(pst.correction), replicas.ready) <= lo:
                matched = load_multiplier_matching(
                    predict, load_now, replicas.ready, lo * (1 + 1e-6), 1.0, self.correction_max
                )
            corr = pst.correction + w_up * max(0.0, matched - pst.correction)
        return replace(pst, correction=min(self.correction_max, max(1.0, corr)), correction_time_s=now_s)

    def _service_explains(self, pool: Pool, bucket_lo_s: float, load: Load, spec: AutoscalerSpec) -> bool:
        """Does prefill's no-queue floor (a tail prompt's own prefill and host overheads, which no replica count
        changes) reach the observed bucket's lower edge within ``correction_floor_tolerance``? Then the percentile
        is service time, and raising the load multiplier until queueing reproduces it would order pods that cannot
        lower it."""
        if pool is not Pool.PREFILL or self.correction_floor_tolerance is None:
            return False
        floor_s = ttft_floor_s(self.profile, load, spec.ttft.percentile, self.prefill_model)
        return bucket_lo_s <= floor_s * (1.0 + self.correction_floor_tolerance)

    def _breach_need(
        self,
        pool: Pool,
        observed_s: float,
        ready: int,
        pressure: float,
        pst: PoolState,
        load_now: Load | None,
        spec: AutoscalerSpec,
    ) -> int:
        """Replicas a breach asks for, at once: the model re-fitted to the breach (the load multiplier that
        explains the observed percentile at the ready pods) sized for the target, at least one more, at most
        ``breach_max_factor`` x ready. Latency is steep in the load near saturation, so ready x (observed /
        target) would over-order; that proportional rule is the fallback when the load is unknown."""
        base = max(ready, 1)
        cap = math.ceil(base * self.breach_max_factor)
        if load_now is None or load_now.request_rate_per_s <= 0 or ready < 1:
            factor = min(1.0 + self.breach_gain * (pressure - 1.0), self.breach_max_factor)
            return math.ceil(base * factor)
        slo = spec.ttft if pool is Pool.PREFILL else spec.itl
        predict = self._predict_fn(pool, spec)
        hi = self.correction_max * self.breach_max_factor
        m_obs = load_multiplier_matching(predict, load_now, ready, observed_s, 1.0, hi)
        load = load_now.scaled(max(m_obs, pst.correction) * (1 + self.load_headroom))
        need = self.needed(pool, load, slo.target_s * (1 - self.margin_up), spec)
        return min(cap, max(ready + 1, need))

    def _update_surprise(
        self,
        state: PolicyState,
        params: fc.ForecastParams,
        obs: Observation,
        now: Load,
        ahead: Load,
        spec: AutoscalerSpec,
    ) -> PolicyState:
        """File this tick's sizing forecast per pool and fold in the pool's work now. Under a queue the measured
        rates are throughput, so the work now adds the queue's growth (requests/s x their mean length). Nothing is
        filed until the forecaster is warm (``surprise_warmup_trend_constants``), nor for a pool with its own queue
        (``surprise_skip_queued``)."""
        if self.surprise is None:
            return state
        t = obs.time_s
        first = state.prompt_tokens_rate.first_time_s
        warm_s = params.warmup_s + self.surprise_warmup_trend_constants * params.trend_time_constant_s
        if first is None or t - first < warm_s:  # the trend still warming up: its misses are not the workload's
            return state
        horizon = spec.pod_startup_s + self.horizon_extra_s
        prompt_growth = _growth_per_s(state.prefill, _finite(obs.signals.prefill.waiting_requests), t)
        output_growth = _growth_per_s(state.decode, _finite(obs.signals.decode.waiting_requests), t)
        prompt_now = now.request_rate_per_s * now.mean_prompt_tokens + prompt_growth * now.mean_prompt_tokens
        output_now = now.request_rate_per_s * now.mean_output_tokens + output_growth * now.mean_output_tokens
        prompt_ahead = _work_per_s(Pool.PREFILL, ahead)
        output_ahead = _work_per_s(Pool.DECODE, ahead)
        prefill_queued, decode_queued = self._own_queues(obs)
        skip = self.surprise_skip_queued
        prompt_rising = self._rising_past_ceiling(Pool.PREFILL, state, spec)
        output_rising = self._rising_past_ceiling(Pool.DECODE, state, spec)
        state = replace(
            state,
            prompt_tokens_surprise_rising=fc.surprise_update(
                self.surprise, state.prompt_tokens_surprise_rising, t, prompt_now, prompt_ahead, horizon,
                file_forecast=prompt_rising and not (skip and prefill_queued),
            ),
            output_tokens_surprise_rising=fc.surprise_update(
                self.surprise, state.output_tokens_surprise_rising, t, output_now, output_ahead, horizon,
                file_forecast=output_rising and not (skip and decode_queued),
            ),
        )
        return replace(
            state,
            prompt_tokens_surprise=fc.surprise_update(
                self.surprise, state.prompt_tokens_surprise, t, prompt_now, prompt_ahead, horizon,
                file_forecast=not (skip and prefill_queued),
            ),
            output_tokens_surprise=fc.surprise_update(
                self.surprise, state.output_tokens_surprise, t, output_now, output_ahead, horizon,
                file_forecast=not (skip and decode_queued),
            ),
        )

    def _headroom(
        self,
        pool: Pool,
        state: PolicyState,
        down: bool,
        forecast_tokens_per_s: float | None = None,
        rising: bool = False,
        pod_startup_s: float | None = None,
    ) -> tuple[float, str]:
        """Load multiplier to size at (``down``: to verify a scale-down), and where it came from.

        Adaptive: the quantile (``headroom_quantile_up``, ``headroom_quantile_down``) of how far this pool's work
        overshot the forecast it was sized for within the start-up horizon (``forecast.SurpriseParams``), since
        capacity ordered now arrives one horizon later and only what runs by then absorbs the overshoot; within
        [floor, ``headroom_cap``], the scale-down one at least ``headroom_gap`` above the up one; and, unless the
        load is ``rising``, no higher than what sizes ``forecast_tokens_per_s`` (the pool's forecast work) to the
        peak seen plus ``headroom_peak_margin`` (rising, the scale-up headroom is the overshoot of the forecasts
        filed while rising, once they hold a start-up of evidence: ``headroom_rising_measured``; and no higher than
        what sizes the forecast to where the steepest rise seen takes the load within ``pod_startup_s``:
        ``headroom_climb_ceiling``). A steady load
        overshoots by its rate-window noise and pays little; a trending or on/off one pays what it showed, but not
        beyond the loads it showed. Unmeasured workloads (and ``surprise=None``) use the fixed
        ``load_headroom``/``load_headroom_down``, which the overshoot seen so far may raise (``headroom_early``).
        The recent swing (``burst``, when on) can only raise it."""
        fixed = self.load_headroom_down if down else self.load_headroom
        source = "fixed"
        headroom = fixed
        if self.surprise is not None:
            series = state.prompt_tokens_surprise if pool is Pool.PREFILL else state.output_tokens_surprise
            q_up, q_down = self.headroom_quantile_up, self.headroom_quantile_down
            up = fc.surprise_quantile(self.surprise, series, q_up)
            if up is not None:
                up = min(self.headroom_cap, max(self.headroom_floor_up, up))
                headroom, source = up, f"p{q_up * 100:g} overshoot"
                rising_series = (
                    state.prompt_tokens_surprise_rising if pool is Pool.PREFILL else state.output_tokens_surprise_rising
                )
                min_evidence_s = (
                    pod_startup_s if self.headroom_rising_min_evidence_s is None
                    else self.headroom_rising_min_evidence_s
                )
                if (
                    rising and not down and self.headroom_rising_measured
                    and min_evidence_s is not None and rising_series.evidence_s >= min_evidence_s
                ):
                    while_rising = fc.surprise_quantile(self.surprise, rising_series, q_up, partial=True)
                    if while_rising is not None:
                        headroom = min(self.headroom_cap, max(self.headroom_floor_up, while_rising))
                        source = f"p{q_up * 100:g} overshoot while rising"
                if down:
                    measured_down = fc.surprise_quantile(self.surprise, series, q_down)
                    assert measured_down is not None
                    headroom = min(
                        self.headroom_cap, max(self.headroom_floor_down, measured_down, up + self.headroom_gap)
                    )
                    source = f"p{q_down * 100:g} overshoot"
                ceiling = None
                if self._may_cut(series):
                    ceiling = (
                        self._climb_ceiling(series, forecast_tokens_per_s, pod_startup_s) if rising
                        else self._peak_ceiling(series, forecast_tokens_per_s)
                    )
                if ceiling is not None and ceiling < headroom:
                    floor = self.headroom_floor_down if down else self.headroom_floor_up
                    headroom = max(floor, ceiling)
                    source += (", capped at the steepest climb seen" if rising else ", capped at the peak seen") + (
                        f" +{self.headroom_peak_margin:.0%}" if self.headroom_peak_margin else ""
                    )
            elif self.headroom_early:
                seen_up = fc.surprise_quantile(self.surprise, series, q_up, partial=True)
                if seen_up is not None:
                    seen = seen_up
                    if down:
                        seen_down = fc.surprise_quantile(self.surprise, series, q_down, partial=True) or 0.0
                        seen = max(seen_down, seen_up + self.headroom_gap)
                    # trusted in proportion to the evidence behind it: one burst in the first minutes is not yet
                    # the workload's burstiness
                    trust = min(1.0, series.evidence_s / self.surprise.min_evidence_s)
                    seen = fixed + trust * (min(self.headroom_cap, seen) - fixed)
                    if seen > fixed:
                        headroom = seen
                        source = f"p{(q_down if down else q_up) * 100:g} overshoot so far"
        if self.burst is not None:
            swing = (state.prompt_tokens_burst if pool is Pool.PREFILL else state.output_tokens_burst).excess
            if swing > headroom:
                headroom, source = swing, "recent swing"
        return 1.0 + headroom, source

    def _peak_ceiling(self, series: fc.SurpriseState, forecast_tokens_per_s: float | None) -> float | None:
        """The headroom that sizes the forecast up to the largest load seen within the overshoot's memory plus
        ``headroom_peak_margin``; None when off or unknown."""
        return self._headroom_reaching(series.peak, forecast_tokens_per_s)

    def _climb_ceiling(
        self, series: fc.SurpriseState, forecast_tokens_per_s: float | None, horizon_s: float | None
    ) -> float | None:
        """Rising past the peak: the headroom that sizes the forecast up to where the steepest rise seen within the
        overshoot's memory would take the load now over ``horizon_s``, plus ``headroom_peak_margin``."""
        if not self.headroom_climb_ceiling or horizon_s is None or series.last_value is None or series.rise_per_s <= 0:
            return None
        return self._headroom_reaching(series.last_value + series.rise_per_s * horizon_s, forecast_tokens_per_s)

    def _headroom_reaching(self, level: float, forecast_tokens_per_s: float | None) -> float | None:
        """The headroom that sizes the forecast up to ``level`` plus ``headroom_peak_margin``; None when off or
        unknown (the shared arithmetic of the peak and climb ceilings)."""
        if self.headroom_peak_margin is None or not forecast_tokens_per_s or level <= 0:
            return None
        return level * (1.0 + self.headroom_peak_margin) / forecast_tokens_per_s - 1.0

    def _rising(
        self, pool: Pool, state: PolicyState, spec: AutoscalerSpec, fraction: float | None = None
    ) -> bool:
        """The pool's token rate (prompt for prefill, output for decode) trends up by more than ``fraction``
        (default ``rising_fraction``) within one pod start-up time: capacity removed now could not come back in
        time."""
        series = state.prompt_tokens_rate if pool is Pool.PREFILL else state.output_tokens_rate
        return fc.rising(series, spec.pod_startup_s, self.rising_fraction if fraction is None else fraction)

    def _rising_past_ceiling(self, pool: Pool, state: PolicyState, spec: AutoscalerSpec) -> bool:
        """Rising by more than ``headroom_peak_rising_fraction`` (None: ``rising_fraction``): exempt from the peak
        ceiling, and its forecasts filed in the rising overshoot histogram too."""
        return self._rising(pool, state, spec, self.headroom_peak_rising_fraction)

    def _drain_s(self, spec: AutoscalerSpec) -> float:
        if self.backlog_drain_s is not None:
            return self.backlog_drain_s
        return spec.pod_startup_s + self.horizon_extra_s

    def _prompt_service_s(self, load: Load) -> float:
        """Mean time one queued prompt of ``load``'s mix occupies a prefill pod (packed steps, its attention)."""
        scv = self.prefill_model.prompt_scv if load.prompt_scv is None else load.prompt_scv
        return prefill_queue_service_s(self.profile, load.mean_prompt_tokens, scv)

    def _own_queues(self, obs: Observation) -> tuple[bool, bool]:
        """(prefill, decode): does the pool have a queue of its own, so that its rates are throughput capped by
        its shortage? Prefill: more prompts waiting than ready pods; decode: an admission backlog."""
        prefill_waiting = _finite(obs.signals.prefill.waiting_requests)
        return _queue_of_its_own(prefill_waiting, obs.prefill.ready), self._decode_backlog(obs) is not None

    def _decode_backlog(self, obs: Observation) -> float | None:
        """Requests queued for decode admission, when the decode pool is really full (batch slots near
        max_num_seqs or KV above ``kv_high_fraction``) and the queue is material (>= 1 per ready replica).
        A request or two waiting one step for its KV to land is normal and is not a backlog."""
        sig = obs.signals.decode
        waiting = _finite(sig.waiting_requests)
        ready = max(1, obs.decode.ready)
        if waiting is None or waiting < ready:
            return None
        running = _finite(sig.running_requests) or 0.0
        kv = _finite(sig.kv_usage_fraction) or 0.0
        seqs = self.profile.max_num_seqs * ready
        full = running >= 0.9 * seqs or kv >= self.kv_high_fraction or waiting >= 0.25 * seqs
        return waiting if full else None

    # -- one pool

    def _decide_pool(
        self,
        pool: Pool,
        obs: Observation,
        state: PolicyState,
        spec: AutoscalerSpec,
        missing: str | None,
        load_now: Load | None,
        load_ahead: Load | None,
        hold: tuple[Reason, str] | None = None,
        load_base: Load | None = None,
        upstream_rate_per_s: float = 0.0,
        mix_text: str = "",
    ) -> _PoolOutcome:
        now_s = obs.time_s
        reps = obs.replicas(pool)
        current, ready, starting = reps.desired, reps.ready, reps.starting
        pspec = spec.pool(pool)
        slo = spec.ttft if pool is Pool.PREFILL else spec.itl
        metric = "TTFT" if pool is Pool.PREFILL else "ITL"
        pct = f"p{slo.percentile * 100:g}"
        source_down = obs.signals.error is not None or now_s - obs.signals.time_s > self.stale_after_s
        observed = (
            None
            if source_down
            else _finite(obs.signals.ttft_s if pool is Pool.PREFILL else obs.signals.itl_s)
        )
        psig = obs.pool_signals(pool)
        pst = state.pool(pool)
        if pst.ready != ready:  # the first count ever seen is taken as settled (a restart keeps the real one)
            since = now_s - spec.metrics.window_s if pst.ready is None else now_s
            pst = replace(pst, ready=ready, ready_since_s=since)
        # TTFT includes waiting for a decode slot: with a decode admission backlog the breach is decode's, and
        # adding prefill replicas would not help (decode sees it as KV/batch pressure below).
        decode_backlog = self._decode_backlog(obs)
        recent = state.decode_backlog_time_s
        blamed_on_decode = pool is Pool.PREFILL and (
            decode_backlog is not None or (recent is not None and now_s - recent <= 2 * spec.metrics.window_s)
        )
        # A percentile measured while a backlog waits (or within a metrics window after) is the backlog's age,
        # not the steady-state queueing the correction describes: a drained surge had left x2.5 behind, and the
        # pool over-sized long after (tests/sim/test_closed_loop.py's load step).
        waiting_now = _finite(psig.waiting_requests)
        if _queue_of_its_own(waiting_now, ready):
            pst = replace(pst, queued_time_s=now_s)
        backlog_recent = pst.queued_time_s is not None and now_s - pst.queued_time_s <= spec.metrics.window_s
        pst = self._correct(
            pool, pst, reps, None if blamed_on_decode or backlog_recent else observed, slo.target_s, load_now,
            now_s, spec,
        )
        pods = f"ready {ready} + starting {starting}"
        draining = waiting_now is not None and pst.waiting is not None and waiting_now < pst.waiting
        # Under saturation the measured rates are throughput, not demand; the queue's growth is the rest (unless the
        # demand is read where requests arrive: that rate already holds what the queue grows by).
        growth_per_s = 0.0 if _arrivals_read(obs.signals, self.read_arrivals) else _growth_per_s(pst, waiting_now, now_s)
        net_per_s = _growth_per_s(pst, waiting_now, now_s, signed=True)
        pst = replace(pst, waiting=waiting_now, waiting_time_s=now_s)

        # feedback: breach ratio (only when the percentile describes today's ready pods and the queue is not
        # already shrinking), KV pressure, decode backlog
        fb_need, fb_reason, fb_text, pressure = 0, Reason.WITHIN_TARGET, "", 0.0
        if observed is not None:
            pressure = observed / slo.target_s
            if observed > slo.target_s:
                fb_reason = Reason.TTFT_ABOVE_TARGET if pool is Pool.PREFILL else Reason.ITL_ABOVE_TARGET
                fb_text = f"{metric} {pct} {observed:.3g}s > {slo.target_s:.3g}s target"
                if blamed_on_decode:
                    fb_text += (
                        f" (caused by requests waiting for decode slots: {decode_backlog or 0:.0f} now)"
                    )
                elif not _settled(pst, now_s, spec):
                    fb_text += f" (measured partly before {ready} pods were ready; re-checking)"
                elif draining:
                    fb_text += f" (queue draining: {pst.waiting:.0f} waiting, was more)"
                elif backlog_recent and not _queue_of_its_own(waiting_now, ready):
                    fb_text += " (a backlog drained within the metrics window: its tail, not today's pods)"
                else:
                    fb_need = self._breach_need(pool, observed, ready, pressure, pst, load_now, spec)
        if pool is Pool.DECODE and missing is None:
            kv = _finite(psig.kv_usage_fraction)
            if kv is not None and kv > self.kv_high_fraction:
                pressure = max(pressure, kv / self.kv_high_fraction)
                if _settled(pst, now_s, spec):
                    need = math.ceil(max(ready, 1) * kv / (self.kv_high_fraction - 0.1))
                    if need > fb_need:
                        fb_need, fb_reason = need, Reason.KV_CACHE_PRESSURE
                        fb_text = f"KV cache {kv:.0%} > {self.kv_high_fraction:.0%}"

        if load_ahead is None:
            return self._hold_missing(
                pool,
                current,
                reps,
                pspec.min_replicas,
                pst,
                state,
                missing,
                fb_need,
                fb_reason,
                fb_text,
                pressure,
                spec,
                now_s,
            )

        # feed-forward from the capacity model at the corrected, forecast load
        # Surge response: under a queue the measured rates are throughput, and the demand is that plus the queue's
        # growth. What pods ordered now must also absorb is the backlog as it will be when they are ready (the
        # queue now plus its net growth over a start-up; none if it drains by then), drained within
        # backlog_drain_s: one order for the arrivals and the backlog, not one per tick as the rates catch up.
        # Prefill: its queue; decode: requests waiting for a slot.
        load = load_ahead
        backlog = (
            (_finite(psig.waiting_requests) or 0.0)
            if pool is Pool.PREFILL
            else self._decode_backlog(obs) or 0.0
        )
        # Any prompt waiting at prefill (decode: an admission backlog) vetoes a scale-down: the pool is at the edge
        # of its capacity that tick. Vetoing only a queue of its own (more waiting than ready pods) saved 1.2 train
        # GPU-h at 120 s start-up (flat 14.54 -> 14.00: a tick seeing 1-4 waiting restarts the stabilization window)
        # but lost conv-s0 minutes 20-21 at 30 and 60 s start-up and 23 at 180 s (pdscale bench --startup-s).
        # Vetoing only when prompts waited on the tick before too: flat 14.75 -> 13.75, but conv-s0 lost 24,
        # conv-s2 23-24, code-s1 22 (120 s start-up, on 97bdb16).
        queued = backlog > 0
        base = load_base if load_base is not None else load_ahead
        rising = self._rising(pool, state, spec)
        peak_exempt = self._rising_past_ceiling(pool, state, spec)
        headroom_up, _ = self._headroom(
            pool, state, down=False, forecast_tokens_per_s=_work_per_s(pool, load), rising=peak_exempt,
            pod_startup_s=spec.pod_startup_s,
        )
        need_plain = self.needed(
            pool, load.scaled(pst.correction * headroom_up), slo.target_s * (1 - self.margin_up), spec
        )
        drain_s = self._drain_s(spec)
        if pool is Pool.PREFILL and self.backlog_pods_per_prompt:
            # A prompt is prefilled by one pod (chunked prefill splits it into steps, not across pods): a backlog
            # drains no faster than one prompt's prefill, however many pods are ordered. Decode, which receives
            # prefill's backlog through queue_rate_per_s, then receives it no faster either.
            drain_s = max(drain_s, self._prompt_service_s(load))
        # the backlog is drained from when the first pods still starting are ready (a start-up from now if none):
        # sizing for the queue at a later time would order again, each tick, for a backlog they will have drained
        first = pst.first_order_time_s
        to_ready_s = spec.pod_startup_s
        if starting > 0 and first is not None:
            to_ready_s = min(to_ready_s, max(0.0, first + spec.pod_startup_s - now_s))
        backlog_ready = max(0.0, backlog + net_per_s * to_ready_s) if backlog > 0 else 0.0
        # a tail prompt's own prefill: what no pod count removes from the TTFT (it does not depend on the rate)
        floor_s = ttft_floor_s(self.profile, load, slo.percentile, self.prefill_model) if pool is Pool.PREFILL else 0.0
        to_drain = backlog_ready  # what the TTFT target does not tolerate of it (``backlog_tolerated``)
        if pool is Pool.PREFILL and self.backlog_tolerated and backlog_ready > 0:
            tolerated_s = slo.target_s * (1 - self.margin_up) - floor_s
            to_drain = max(0.0, backlog_ready - load.request_rate_per_s * max(0.0, tolerated_s))
        own_queue_rate = growth_per_s + to_drain / drain_s if backlog > 0 else 0.0
        queue_rate = own_queue_rate + upstream_rate_per_s

        # Saturated (a growing queue of its own), the arrivals now are its capacity + the queue's growth; the rest
        # of the queue's rate (its backlog drained, prefill's queue passed on to decode) comes on top either way.
        # The pods that served while the queue grew are those ready at both ends of the tick.
        previous_ready = state.pool(pool).ready
        serving = ready if previous_ready is None else min(ready, previous_ready)
        saturated_per_s = 0.0
        if not blamed_on_decode:
            saturated_per_s = self._saturated_rate_per_s(pool, ready, serving, waiting_now, load, pst.correction)
        saturated_arrivals = saturated_per_s + net_per_s if saturated_per_s > 0 and net_per_s > 0 else 0.0
        saturated_binds = saturated_arrivals > load.request_rate_per_s * headroom_up + growth_per_s

        def arrivals_per_s(headroom: float) -> float:
            """The arrivals sized for: the forecast at ``headroom`` plus the queue's growth, or the saturated rate."""
            return max(load.request_rate_per_s * headroom + growth_per_s, saturated_arrivals)

        def sized(headroom: float) -> Load:
            rate = (arrivals_per_s(headroom) + queue_rate - growth_per_s) * pst.correction
            return replace(load, request_rate_per_s=rate)

        need_up = self.needed(pool, sized(headroom_up), slo.target_s * (1 - self.margin_up), spec)
        bound_text = ""
        if pool is Pool.PREFILL and self.backlog_pods_per_prompt and backlog_ready > 0:
            # ... and k waiting prompts keep at most k more pods busy than the arrivals (and the queue's growth,
            # which is arrivals) need, whatever their tokens over the drain deadline add up to. Both bind only where
            # one prompt's prefill is longer than the deadline: at 60 s, not on the suite's H100 profile (its longest
            # prompt, 128k tokens, takes 10 s alone, 13 s packed at the very-long mix).
            arrivals_rate = arrivals_per_s(headroom_up) * pst.correction
            need_arrivals = self.needed(
                pool, replace(load, request_rate_per_s=arrivals_rate), slo.target_s * (1 - self.margin_up), spec
            )
            most = need_arrivals + math.ceil(backlog_ready)
            if need_up > most:
                bound_text = f"; {backlog_ready:.0f} queued prompts use at most {math.ceil(backlog_ready)} more pods"
                need_up = most
        headroom_down, headroom_down_source = self._headroom(
            pool, state, down=True, forecast_tokens_per_s=_work_per_s(pool, base), rising=peak_exempt
        )
        # decode verifies a scale-down with prefill's queue on top (it arrives as prefill catches up)
        down_rate = (base.request_rate_per_s * headroom_down + upstream_rate_per_s) * pst.correction
        need_down = self.needed(
            pool, replace(base, request_rate_per_s=down_rate), slo.target_s * (1 - self.margin_down), spec
        )
        load = replace(load, request_rate_per_s=load.request_rate_per_s + queue_rate)
        sized_for = f"{load.request_rate_per_s:.1f} req/s ("
        if saturated_binds:
            sized_for = (
                f"{saturated_arrivals + queue_rate - growth_per_s:.1f} req/s (saturated: {serving} ready pods serve "
                f"{saturated_per_s:.1f} while their queue grows, plus the queue; "
            )
        model_text = (
            f"model needs {need_up} at {sized_for}"
            f"prompt {load.mean_prompt_tokens:.0f} tok, output {load.mean_output_tokens:.0f} tok, "
            + (f"decode context {load.mean_decode_context_tokens:.0f} tok, " if pool is Pool.DECODE else "")
            + f"correction x{pst.correction:.2f}, "
            + ("no headroom on a measured rate" if saturated_binds else f"headroom x{headroom_up:.2f}")
            + f"){bound_text}; {pods}"
        )
        if pool is Pool.PREFILL:
            if mix_text:
                model_text += f"; {mix_text}"
            if floor_s > slo.target_s * (1 - self.margin_up):  # say why more pods would not be ordered
                model_text += (
                    f"; no count reaches the target: a tail prompt alone takes {floor_s:.3g}s, sized for that floor"
                )
        if observed is not None and not fb_text:
            model_text = f"{metric} {pct} {observed:.3g}s vs {slo.target_s:.3g}s target; " + model_text
        if pressure == 0.0:
            pressure = need_up / max(current, 1)

        need = max(need_up, fb_need)
        if need > current:
            from_feedback = fb_need >= need_up
            if from_feedback:
                reason, head = fb_reason, fb_text
            elif need_plain <= current and backlog == 0 and upstream_rate_per_s > 0:
                reason = Reason.PREDICTED_LOAD_INCREASE
                head = f"prompts queued at prefill reach decode as it catches up: +{upstream_rate_per_s:.1f} req/s"
            elif need_plain <= current and backlog > 0:  # the backlog alone asks for more
                if pool is Pool.DECODE:
                    reason = Reason.KV_CACHE_PRESSURE
                    head = (
                        f"{backlog:.0f} requests waiting for decode slots, growing {growth_per_s:.1f}/s, "
                        f"{backlog_ready:.0f} when new pods are ready (drained in {drain_s:.3g}s)"
                    )
                else:
                    reason = Reason.PREDICTED_LOAD_INCREASE
                    tolerated = backlog_ready - to_drain
                    drained = (
                        f"{tolerated:.0f} within the TTFT target, the rest drained in {drain_s:.3g}s"
                        if tolerated >= 0.5 else f"drained in {drain_s:.3g}s"
                    )
                    head = (
                        f"{backlog:.0f} prompts queued, growing {growth_per_s:.1f}/s, {backlog_ready:.0f} when "
                        f"new pods are ready ({drained})"
                    )
            else:
                reason, head = Reason.PREDICTED_LOAD_INCREASE, "load forecast over start-up horizon"
            proposed, msg = need, f"{head}; {model_text}"
        elif fb_need > 0 and starting > 0:
            proposed, reason = current, Reason.WAITING_FOR_STARTING_PODS
            msg = f"{fb_text}; {starting} pods already starting cover it; {model_text}"
        elif starting > 0 and (need_up > ready or fb_text):
            # a breach measured while pods came up (or with the queue draining) is not "within target": say
            # what is above target and that the ordered pods are what answers it
            proposed, reason = current, Reason.WAITING_FOR_STARTING_PODS
            msg = f"{fb_text + '; ' if fb_text else ''}{starting} pods starting; {model_text}"
        elif need_down < current and rising:
            proposed, reason = current, Reason.WITHIN_TARGET
            msg = f"not scaling down into a rising load ({need_down} would do now); {model_text}"
        elif queued and need_down < current and (
            self.queue_veto_rising_fraction is None
            or _queue_of_its_own(backlog, ready)
            or self._rising(pool, state, spec, self.queue_veto_rising_fraction)
        ):
            proposed, reason = current, Reason.WITHIN_TARGET
            what = "prompts queued" if pool is Pool.PREFILL else "requests waiting for decode slots"
            msg = (
                f"{fb_text + '; ' if fb_text else ''}not scaling down with {backlog:.0f} {what} "
                f"({need_down} would do otherwise); {model_text}"
            )
        elif fb_need == 0 and starting == 0 and need_down < current:
            # the proposal is the verified count itself: the spec's behavior (stabilization window, then its
            # rate policies) makes it gradual, and a rate-limited step must not enter the window's history
            proposed, reason = max(need_down, pspec.min_replicas), Reason.SCALE_DOWN
            verified_at = f"at +{headroom_down - 1.0:.0%} load ({headroom_down_source})"
            msg = (
                f"{proposed} replicas keep predicted {metric} {pct} under "
                f"{slo.target_s * (1 - self.margin_down):.3g}s {verified_at}; {model_text}"
            )
        else:
            proposed, reason, msg = current, Reason.WITHIN_TARGET, model_text
            if fb_text:
                msg = f"{fb_text}; {model_text}"
        if hold is not None and proposed < current:  # bad data may add capacity, never remove it
            held_reason, why = hold
            msg = f"{why}: holding {current} replicas (would be {proposed}); {msg}"
            held = self._normalize(pool, current, current, held_reason, msg, pressure, pst, spec, now_s,
                                   keep_reason=True)
            return replace(held, queue_rate_per_s=self._passed_on(pool, own_queue_rate, current, load_ahead))
        out = self._normalize(pool, proposed, current, reason, msg, pressure, pst, spec, now_s)
        if self.cancel_unneeded_starting and starting > 0 and out.proposed <= current and hold is None and not queued:
            trusted = self._starting_may_be_cancelled(pool, state)
            withdrawable = starting if trusted else self._unconfirmed_order(pool, state, starting, spec)
            if withdrawable > 0 and not (rising and trusted):
                keep = max(need_up, need_down, fb_need, pspec.min_replicas, current - withdrawable)
                out = self._cancel_starting(
                    out, ready, keep, 1 if trusted else self.cancel_min_pods,
                    "no longer needed" if trusted else "ordered on the tick before and not confirmed by this one",
                )
        return replace(out, queue_rate_per_s=self._passed_on(pool, own_queue_rate, out.proposed, load_ahead))

    def _may_cut(self, series: fc.SurpriseState) -> bool:
        """The overshoot holds ``cut_min_evidence_s`` of checked forecasts: enough to size below its measured
        quantile (the peak and climb ceilings) or to withdraw any starting pod the sizing no longer asks for."""
        return series.evidence_s >= self.cut_min_evidence_s

    def _starting_may_be_cancelled(self, pool: Pool, state: PolicyState) -> bool:
        """The pool's overshoot is measured (``SurpriseParams.min_evidence_s``) and ``_may_cut``: every starting pod
        the sizing no longer asks for may go, not only the tick before's unconfirmed order."""
        if self.surprise is None:
            return False
        series = state.prompt_tokens_surprise if pool is Pool.PREFILL else state.output_tokens_surprise
        return self._may_cut(series) and (
            fc.surprise_quantile(self.surprise, series, self.headroom_quantile_up) is not None
        )

    def _unconfirmed_order(self, pool: Pool, state: PolicyState, starting: int, spec: AutoscalerSpec) -> int:
        """Pods ordered on the tick before this one and still starting: what an unmeasured pool may withdraw (0 with
        ``withdraw_unconfirmed`` off, or while the rate window is still filling and reads low)."""
        first = state.prompt_tokens_rate.first_time_s
        pst = state.pool(pool)
        if not self.withdraw_unconfirmed or first is None or pst.waiting_time_s is None:
            return 0
        if pst.waiting_time_s - first < self._forecast_params(spec).warmup_s:  # the rate window still filling
            return 0
        ups = [(t, c) for t, c in pst.behavior.scale_events if c > 0]
        if not ups:
            return 0
        t, change = max(ups)
        return min(change, starting) if abs(t - pst.waiting_time_s) < 1e-6 else 0

    def _cancel_starting(
        self, out: _PoolOutcome, ready: int, keep: int, least: int = 1, why: str = "no longer needed"
    ) -> _PoolOutcome:
        """Withdraw the starting pods that no longer have a reason: down to ``keep``, never below the ready pods.
        Kubernetes removes pods that are not ready first (the simulator cancels starting pods first), so no
        serving capacity goes, and the scale-down behavior (stabilization window, rate policies) does not apply;
        the withdrawn order leaves the stabilization window's history too, or it would hold the count up again on
        the next tick."""
        target = max(ready, keep)
        if out.proposed - target < least:
            return out
        recs = tuple((t, min(rec, target)) for t, rec in out.state.behavior.recommendations)
        state = replace(out.state, behavior=replace(out.state.behavior, recommendations=recs))
        message = (
            f"{out.proposed - target} starting pods {why}: cancelled ({target} instead of "
            f"{out.proposed}); {out.message}"
        )
        return replace(out, proposed=target, reason=Reason.SCALE_DOWN, message=message, state=state)

    def _saturated_rate_per_s(
        self, pool: Pool, ready: int, serving: int, waiting_now: float | None, load: Load, correction: float
    ) -> float:
        """Requests/s a prefill pool serves while a queue of its own (more waiting than ``ready`` pods) stands: the
        capacity of the ``serving`` pods (ready through the last tick), one queued prompt of ``load``'s mix per
        service time each, slower by ``correction`` where the model is optimistic; 0 when it has no such queue (or
        for decode, or switched off)."""
        if not self.saturated_demand_floor or pool is not Pool.PREFILL or serving < 1:
            return 0.0
        if not _queue_of_its_own(waiting_now, ready):
            return 0.0
        return serving / (self._prompt_service_s(load) * max(correction, 1e-9))

    def _passed_on(self, pool: Pool, queue_rate_per_s: float, replicas: int, arrivals: Load) -> float:
        """What of prefill's queue reaches decode, requests/s: decode receives it no faster than ``replicas``
        prefill pods (the count prefill is heading for, after its bounds and rate limits) finish prompts beyond the
        arrivals: a prefill pool held at its maximum passes on less than its queue asks to be drained at."""
        if pool is not Pool.PREFILL or not self.backlog_pods_per_prompt or queue_rate_per_s <= 0:
            return queue_rate_per_s
        capacity_per_s = replicas / self._prompt_service_s(arrivals)
        return min(queue_rate_per_s, max(0.0, capacity_per_s - arrivals.request_rate_per_s))

    def _hold_missing(
        self,
        pool: Pool,
        current: int,
        reps: PoolReplicas,
        min_replicas: int,
        pst: PoolState,
        state: PolicyState,
        missing: str | None,
        fb_need: int,
        fb_reason: Reason,
        fb_text: str,
        pressure: float,
        spec: AutoscalerSpec,
        now_s: float,
    ) -> _PoolOutcome:
        """No usable load signal: never scale down; scale up only on an observed breach or the fallback."""
        why = missing or "load signals missing"
        if fb_need > current:
            return self._normalize(
                pool,
                fb_need,
                current,
                fb_reason,
                f"{fb_text}; load unknown ({why})",
                pressure,
                pst,
                spec,
                now_s,
            )
        proposed = current
        msg = f"holding {current} replicas: {why}"
        fallback = self.missing_fallback_replicas
        since = state.missing_since_s
        if fallback is not None and since is not None and now_s - since >= self.missing_fallback_after_s:
            proposed = max(current, fallback)
            msg += f"; fallback {fallback} after {now_s - since:.0f}s without data"
        return self._normalize(
            pool,
            proposed,
            current,
            Reason.METRICS_UNAVAILABLE,
            msg,
            pressure,
            pst,
            spec,
            now_s,
            keep_reason=True,
        )

    def _normalize(
        self,
        pool: Pool,
        proposed: int,
        current: int,
        reason: Reason,
        message: str,
        pressure: float,
        pst: PoolState,
        spec: AutoscalerSpec,
        now_s: float,
        keep_reason: bool = False,
    ) -> _PoolOutcome:
        """Apply the spec's HPA behavior and the min/max bounds; their reason wins when they changed the count."""
        pspec = spec.pool(pool)
        desired, hpa_reason, bstate = hpa.normalize_with_behavior(
            proposed=proposed,
            current=current,
            min_replicas=pspec.min_replicas,
            max_replicas=pspec.max_replicas,
            behavior=spec.behavior,
            state=pst.behavior,
            now_s=now_s,
        )
        if desired != proposed and hpa_reason in _HPA_REASONS and not (keep_reason and desired == current):
            mapped = _HPA_REASONS[hpa_reason]
            message = f"{desired} instead of {proposed} (behavior/bounds); {message}"
            reason = mapped
        elif desired != proposed and not keep_reason:  # clamped without an HPA reason: report the bound
            reason = Reason.TOO_MANY_REPLICAS if desired < proposed else Reason.TOO_FEW_REPLICAS
        return _PoolOutcome(desired, reason, message, pressure, replace(pst, behavior=bstate))


def make_pdscale_policy(profile: LatencyProfile, spec: AutoscalerSpec, **params: Any) -> PdscalePolicy:
    """Factory for the simulator's policy registry: ``params`` override PdscalePolicy fields by name."""
    known = set(PdscalePolicy.__dataclass_fields__) - {"profile"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(
            f"pdscale: unknown parameters {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    if isinstance(params.get("forecaster"), str):
        params["forecaster"] = Forecaster(params["forecaster"])
    return PdscalePolicy(profile=profile, **params)


# ---------------------------------------------------------------------------------------------------- helpers


def _growth_per_s(pst: PoolState, waiting_now: float | None, now_s: float, signed: bool = False) -> float:
    """How fast the pool's queue grew since the last tick, requests/s (0 when unknown; when it shrank, 0 or,
    ``signed``, the negative rate it drains at)."""
    if waiting_now is None or pst.waiting is None or pst.waiting_time_s is None:
        return 0.0
    dt = now_s - pst.waiting_time_s
    if dt <= 0:
        return 0.0
    rate = (waiting_now - pst.waiting) / dt
    return rate if signed else max(0.0, rate)


def _queue_of_its_own(waiting: float | None, ready: int) -> bool:
    """More requests waiting than ready pods (at least 1): a queue of the pool's own, not a request or two waiting
    one step; its rates are then throughput and its percentiles the backlog's."""
    return waiting is not None and waiting > max(1, ready)


def _drained_per_s(
    samples: tuple[tuple[float, float], ...], now_s: float, waiting_now: float | None, window_s: float
) -> float:
    """Requests/s by which prefill's queue shrank over the rate window, 0 if it did not (or is unknown). Served =
    arrived - the queue's change over the same window; the oldest sample within the window stands for its start
    (a shorter span under-counts the drain: the demand stays on the safe side)."""
    if waiting_now is None or window_s <= 0:
        return 0.0
    within = _within_window(samples, now_s, window_s)
    if not within:
        return 0.0
    return max(0.0, within[0][1] - waiting_now) / window_s


def _recent_samples(
    samples: tuple[tuple[float, float], ...], now_s: float, waiting_now: float | None, window_s: float
) -> tuple[tuple[float, float], ...]:
    """The samples a rate window back from now, plus this tick's (when known)."""
    kept = _within_window(samples, now_s, window_s)
    return kept + (((now_s, waiting_now),) if waiting_now is not None else ())


def _within_window(
    samples: tuple[tuple[float, float], ...], now_s: float, window_s: float
) -> tuple[tuple[float, float], ...]:
    """The samples taken before now and at most one rate window back, oldest first."""
    return tuple((t, w) for t, w in samples if now_s - t <= window_s + 1e-9 and t < now_s)


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _missing_reason(signals: Signals, now_s: float, stale_after_s: float) -> str | None:
    """Why the load signals cannot be used, or None when they can."""
    if signals.error:
        return f"metrics source failed: {signals.error}"
    if now_s - signals.time_s > stale_after_s:
        return f"signals are stale ({now_s - signals.time_s:.0f}s old > {stale_after_s:.0f}s)"
    for name in ("request_rate_per_s", "prompt_tokens_per_s", "output_tokens_per_s"):
        v = getattr(signals, name)
        if v is None:
            return f"{name} missing"
        if not math.isfinite(v) or v < 0:
            return f"{name} is {v}"
    return None


def _scale_down_hold(obs: Observation, spec: AutoscalerSpec) -> tuple[Reason, str] | None:
    """Why the signals, though present, may understate the load, so that no pool may shrink on them: too many
    requests failing (a failing request shows no tokens and no latency, so the load looks small), or fewer pods
    reporting than are ready (a partial scrape shows part of the load). HPA's rule for partial metrics: they may
    scale up, never down."""
    sig = obs.signals
    rate, failed = _finite(sig.request_rate_per_s), _finite(sig.failed_request_rate_per_s)
    if rate is not None and failed is not None and rate > 0:
        ratio = min(1.0, failed / rate)
        if ratio > spec.metrics.max_failure_ratio:
            return Reason.REQUESTS_FAILING, (
                f"{ratio:.0%} of requests failing ({failed:.3g}/s of {rate:.3g}/s, "
                f"above maxFailureRatio {spec.metrics.max_failure_ratio:g})"
            )
    partial = []
    for pool in (Pool.PREFILL, Pool.DECODE):
        pods, ready = _finite(obs.pool_signals(pool).pods_reporting), obs.replicas(pool).ready
        if pods is not None and pods < ready:
            partial.append(f"{pods:.0f} of {ready} ready {pool.value} pods report metrics")
    if partial:
        return Reason.PARTIAL_METRICS, "partial scrape: " + ", ".join(partial)
    return None


def _arrivals_read(signals: Signals, enabled: bool = True) -> bool:
    """Is the demand read from the proxy's arrival counters this tick (both present, finite, some arriving)?"""
    rate, prompt = _finite(signals.arrived_request_rate_per_s), _finite(signals.arrived_prompt_tokens_per_s)
    return enabled and rate is not None and prompt is not None and rate > 0 and prompt >= 0


def _demand_text(signals: Signals, enabled: bool) -> str:
    """Where the demand was read, for the decision message."""
    if not enabled:
        return ""
    if _arrivals_read(signals):
        arrived, prompt = signals.arrived_request_rate_per_s or 0.0, signals.arrived_prompt_tokens_per_s or 0.0
        return f"demand read at arrival: {arrived:.1f} req/s, prompt {prompt / arrived:.0f} tok"
    if signals.arrived_request_rate_per_s is None or signals.arrived_prompt_tokens_per_s is None:
        why = "no arrival counter"
    elif _finite(signals.arrived_request_rate_per_s) is None or _finite(signals.arrived_prompt_tokens_per_s) is None:
        why = "arrival rate not a number"
    else:
        why = "nothing arrived in the window"
    return f"demand read from served work ({why})"


def _load_from(signals: Signals, arrivals: bool = False, drained_per_s: float = 0.0) -> Load:
    """Load from the signals; the request rate is the prefill pool's own when it reports one (requests leave
    prefill as they arrive, while first tokens lag behind any decode backlog and then catch up).

    The mean output per request divides the decode pool's output tokens by the larger of that rate and the decode
    pool's own finished requests. Both count the same requests and both fall short for a while, for known reasons:
    decode's finished requests lag its tokens while the load rises (a request counts when its last token is out),
    and a new pod's counters are read only from its first scrape, so the requests it served before it became a
    scrape target are missing from its pool's rates (measured live: 1-5.5 s after ready, up to 5 requests per
    prefill pod). Divided by the prefill rate alone, decode's tokens gave a mean output of 118 where 55 ran while
    prefill pods joined (live surge run), and decode was sized for it (2 -> 5 replicas where 3 were enough)."""
    served = _finite(signals.prefill.request_rate_per_s) or signals.request_rate_per_s or 0.0
    served_output = max(served, _finite(signals.decode.request_rate_per_s) or 0.0)
    # ``drained_per_s`` of the served requests were backlog (``_drained_per_s``): the demand is the rest
    rate = max(0.0, served - drained_per_s)
    if _arrivals_read(signals, arrivals):
        # With ``arrivals``: the requests and the prompt mean arriving (the demand), the output mean still from the
        # served counts (outputs are known only when produced; both its counts are of the same requests).
        arrived = signals.arrived_request_rate_per_s or 0.0
        prompt = (signals.arrived_prompt_tokens_per_s or 0.0) / arrived
        output = (signals.output_tokens_per_s or 0.0) / served_output if served_output > 0 else 1.0
        return Load(max(rate, arrived), max(prompt, 1.0), max(output, 1.0))
    if served <= 0:
        return Load(0.0, 1.0, 1.0)
    prompt = (signals.prompt_tokens_per_s or 0.0) / served
    output = (signals.output_tokens_per_s or 0.0) / served_output
    return Load(rate, max(prompt, 1.0), max(output, 1.0))


def _work_per_s(pool: Pool, load: Load) -> float:
    """The pool's work in ``load``: prompt tokens/s for prefill, output tokens/s for decode."""
    tokens = load.mean_prompt_tokens if pool is Pool.PREFILL else load.mean_output_tokens
    return load.request_rate_per_s * tokens


def _output_denominator(signals: Signals, now: Load | None) -> float:
    """The requests per second the output tokens are divided by in ``_load_from`` (0 without a load)."""
    if now is None or now.request_rate_per_s <= 0:
        return 0.0
    return max(now.request_rate_per_s, _finite(signals.decode.request_rate_per_s) or 0.0)


def _same_mix(load: Load, like: Load) -> Load:
    """``load`` with the prompt mix of ``like``: its SCV, and its tail length as the same multiple of the mean."""
    if like.prompt_scv is None and like.tail_prompt_tokens is None:
        return load
    tail = like.tail_prompt_tokens
    if tail is not None:
        tail = tail / like.mean_prompt_tokens * load.mean_prompt_tokens
    return replace(load, prompt_scv=like.prompt_scv, tail_prompt_tokens=tail)


def _settled(pst: PoolState, now_s: float, spec: AutoscalerSpec) -> bool:
    """Has the ready count been stable for one metrics window (so the observed percentile is about it)?"""
    return pst.ready_since_s is not None and now_s - pst.ready_since_s >= spec.metrics.window_s


def _bucket_of(value_s: float, edges_s: tuple[float, ...]) -> tuple[float, float]:
    """The histogram bucket (lo, hi] holding ``value_s``; hi is inf above the last finite edge."""
    lo = 0.0
    for edge in edges_s:
        if value_s <= edge:
            return lo, edge
        lo = edge
    return lo, math.inf


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)

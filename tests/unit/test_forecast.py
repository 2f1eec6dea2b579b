"""Forecasters: last value, Holt trend, seasonal Holt-Winters; time-aware and JSON round-trippable."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.forecast import (
    BurstParams,
    BurstState,
    ForecastParams,
    ForecastState,
    SurpriseParams,
    SurpriseState,
    burst_update,
    peak,
    predict,
    rising,
    surprise_quantile,
    surprise_update,
    trend_of,
    update,
)
from autoscaler.core.spec import Forecaster


def _feed(params: ForecastParams, series: list[tuple[float, float]]) -> ForecastState:
    state = ForecastState()
    for t, v in series:
        state = update(params, state, t, v)
    return state


RAMP = [(t, 10.0 + 0.1 * t) for t in range(0, 1800, 15)]  # +0.1 req/s per second
FLAT = [(t, 42.0) for t in range(0, 900, 15)]


@pytest.mark.parametrize(
    ("method", "series", "horizon", "expected", "tol"),
    [
        pytest.param(Forecaster.LAST_VALUE, RAMP, 120.0, RAMP[-1][1], 1e-9, id="last-ignores-trend"),
        pytest.param(
            Forecaster.HOLT,
            RAMP,
            120.0,
            RAMP[-1][1] + 0.1 * 120.0 * (1 - math.exp(-1.0)),
            0.01,
            id="holt-extrapolates-ramp-damped",
        ),
        pytest.param(Forecaster.HOLT, FLAT, 300.0, 42.0, 1e-6, id="holt-flat-stays-flat"),
        pytest.param(Forecaster.SEASONAL, FLAT, 300.0, 42.0, 1e-6, id="seasonal-flat-stays-flat"),
    ],
)
def test_forecast_table(
    method: Forecaster, series: list[tuple[float, float]], horizon: float, expected: float, tol: float
) -> None:
    params = ForecastParams(method=method, season_period_s=600.0, season_bins=20)
    state = _feed(params, series)
    assert predict(params, state, horizon) == pytest.approx(expected, rel=tol)


def test_undamped_holt_is_linear() -> None:
    params = ForecastParams(method=Forecaster.HOLT, trend_damping_s=1e9)
    state = _feed(params, RAMP)
    assert predict(params, state, 120.0) == pytest.approx(RAMP[-1][1] + 12.0, rel=1e-3)


def test_seasonal_learns_the_cycle_holt_does_not() -> None:
    period = 600.0

    def load(t: float) -> float:
        return 100.0 + 50.0 * math.sin(2 * math.pi * t / period)

    series = [(float(t), load(t)) for t in range(0, int(8 * period), 15)]
    horizon = 150.0  # a quarter period: from the zero crossing to the peak
    errors = {}
    for method in (Forecaster.HOLT, Forecaster.SEASONAL):
        params = ForecastParams(method=method, season_period_s=period, season_bins=40)
        state = _feed(params, series)
        last_t = series[-1][0]
        errors[method] = abs((predict(params, state, horizon) or 0.0) - load(last_t + horizon))
    assert errors[Forecaster.SEASONAL] < 0.25 * errors[Forecaster.HOLT]
    assert errors[Forecaster.SEASONAL] < 15.0  # level lag (30 s time constant) on a 50-amplitude wave


def test_peak_covers_the_horizon() -> None:
    params = ForecastParams(method=Forecaster.HOLT)
    state = _feed(params, [(t, 100.0 - 0.1 * t) for t in range(0, 600, 15)])  # falling
    assert peak(params, state, 120.0) == pytest.approx(predict(params, state, 0.0))


def test_ignores_nonfinite_and_old_samples() -> None:
    params = ForecastParams()
    state = _feed(params, [(0.0, 5.0), (15.0, 5.0)])
    assert update(params, state, 30.0, math.nan) == state
    assert update(params, state, 15.0, 99.0) == state
    assert update(params, state, 10.0, 99.0) == state


def test_empty_state_predicts_none() -> None:
    assert predict(ForecastParams(), ForecastState(), 60.0) is None
    assert peak(ForecastParams(), ForecastState(), 60.0) is None


def test_forecast_never_negative() -> None:
    params = ForecastParams(method=Forecaster.HOLT)
    state = _feed(params, [(t, max(0.0, 50.0 - 0.5 * t)) for t in range(0, 90, 15)])
    assert (predict(params, state, 3600.0) or 0.0) >= 0.0


# A sudden drop as a 60 s rate window shows it: 200k tok/s, falling to 16k over one window, then a lull with
# +/-5 % noise (suite lull-surge, minutes 14-20: the unclamped level went to -619 tok/s while 16k arrived).
DROP = (
    [(float(t), 200_000.0) for t in range(0, 600, 15)]
    + [(600.0 + 15 * i, 200_000.0 - (184_000.0 / 4) * (i + 1)) for i in range(4)]
    + [(660.0 + 15 * i, 16_000.0 * (1.05 if i % 2 else 0.95)) for i in range(40)]
)


@pytest.mark.parametrize("method", [Forecaster.HOLT, Forecaster.SEASONAL])
def test_level_within_sample_never_extrapolates_past_a_drop(method: Forecaster) -> None:
    """``level_within_sample``: the trend carries the level toward the sample, never past it, so after a drop the
    level (and the peak the policy sizes and files for) stays at the lull's samples; classic Holt's level follows
    the drop's trend below them (toward zero, and with it the forecasts the adaptive headroom is measured against)."""
    bounded = ForecastParams(method=method, season_period_s=600.0, season_bins=20, level_within_sample=True)
    classic = replace(bounded, level_within_sample=False)
    state, old = ForecastState(), ForecastState()
    lowest_classic = math.inf
    for t, v in DROP:
        state, old = update(bounded, state, t, v), update(classic, old, t, v)
        if t >= 660.0:
            assert state.level is not None and state.level >= 0.95 * 16_000.0 - 1e-6
            assert (peak(bounded, state, 135.0) or 0.0) >= 0.95 * 16_000.0 - 1e-6
            lowest_classic = min(lowest_classic, old.level if old.level is not None else math.inf)
    assert state.trend_per_s < 0  # the drop is still in the trend, which decays; it only cannot overshoot
    assert lowest_classic < 0.2 * 16_000.0


def test_level_within_sample_keeps_the_overshoot_of_a_drop_small() -> None:
    """Filing the bounded Holt peak after a drop, the lull's p90 overshoot is its noise; classic Holt's near-zero
    forecasts read as overshoots of +100 % and more."""
    p90 = {}
    for bounded in (True, False):
        params = ForecastParams(level_within_sample=bounded)
        state, surprise = ForecastState(), SurpriseState()
        for t, v in DROP:
            state = update(params, state, t, v)
            surprise = surprise_update(
                SurpriseParams(min_evidence_s=300.0), surprise, t, v, peak(params, state, 135.0) or 0.0, 135.0
            )
        p90[bounded] = surprise_quantile(SurpriseParams(min_evidence_s=300.0), surprise, 0.9)
    assert p90[True] is not None and p90[True] <= 0.125
    assert p90[False] is not None and p90[False] >= 1.0


@given(
    values=st.lists(st.floats(0, 1e6), min_size=2, max_size=40),
    method=st.sampled_from([Forecaster.HOLT, Forecaster.SEASONAL]),
)
def test_level_within_sample_moves_toward_the_sample(values: list[float], method: Forecaster) -> None:
    """Each sample moves the level toward itself, never past it nor away from it, whatever the trend."""
    params = ForecastParams(method=method, season_period_s=300.0, season_bins=10, level_within_sample=True)
    state = ForecastState()
    for i, v in enumerate(values):
        before = state.level
        state = update(params, state, 15.0 * i, v)
        assert state.level is not None
        if before is not None:
            assert min(before, v) - 1e-6 <= state.level <= max(before, v) + 1e-6


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"level_time_constant_s": 0.0}, id="zero-level-tau"),
        pytest.param({"season_bins": 0}, id="no-bins"),
        pytest.param({"season_period_s": -1.0}, id="negative-period"),
    ],
)
def test_params_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="ForecastParams"):
        ForecastParams(**bad)  # type: ignore[arg-type]


@given(
    values=st.lists(st.floats(0, 1e4), min_size=1, max_size=40),
    method=st.sampled_from(list(Forecaster)),
)
def test_state_round_trips_through_json_types(values: list[float], method: Forecaster) -> None:
    import json

    params = ForecastParams(method=method, season_period_s=300.0, season_bins=10)
    state = _feed(params, [(15.0 * i, v) for i, v in enumerate(values)])
    again = ForecastState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert predict(params, again, 60.0) == predict(params, state, 60.0)


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        pytest.param([(t, 100.0 + 0.5 * t) for t in range(0, 600, 15)], True, id="ramp-up"),
        pytest.param(FLAT, False, id="flat"),
        pytest.param([(t, 400.0 - 0.5 * t) for t in range(0, 600, 15)], False, id="ramp-down"),
    ],
)
@pytest.mark.parametrize("method", list(Forecaster))
def test_rising_is_tracked_by_every_method(
    series: list[tuple[float, float]], expected: bool, method: Forecaster
) -> None:
    state = _feed(ForecastParams(method=method), series)
    assert rising(state, 120.0, 0.1) is expected


# ---- burst excess: a sample above both neighbours one rate window away


def _burst(values: list[float], params: BurstParams | None = None, tick_s: float = 15.0) -> BurstState:
    params = params or BurstParams()
    state = BurstState()
    for i, v in enumerate(values):
        state = burst_update(params, state, tick_s * i, v, 60.0)
    return state


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        ([100.0] * 20, 0.0, 1e-12),
        ([100.0 + 5 * i for i in range(40)], 0.0, 1e-9),  # a steady ramp is not a burst
        ([200.0 - 4 * i for i in range(40)], 0.0, 1e-9),  # nor a steady fall
        # one window at 2.5x: excess 1.5 (capped at 1.0 by default), decayed a little by the end
        ([100.0] * 8 + [250.0] * 4 + [100.0] * 8, 1.35, 1.5),
        ([100.0] * 8 + [140.0] * 4 + [100.0] * 8, 0.37, 0.4),
        # a one-window lull swings as much: 100 next to (100 + 40) / 2
        ([100.0] * 8 + [40.0] * 4 + [100.0] * 8, 0.40, 0.43),
    ],
    ids=["flat", "ramp-up", "ramp-down", "spike-2.5x", "spike-1.4x", "lull"],
)
def test_burst_excess_table(values: list[float], low: float, high: float) -> None:
    excess = _burst(values, BurstParams(max_excess=10.0)).excess
    assert low <= excess <= high


def test_burst_excess_is_capped_and_decays() -> None:
    spike = [100.0] * 8 + [250.0] * 4 + [100.0] * 8
    assert 0.95 < _burst(spike).excess <= 1.0  # capped at BurstParams.max_excess, then decaying
    after = _burst(spike + [100.0] * 120, BurstParams(memory_s=600.0))  # 30 min later, memory 10 min
    assert 0 < after.excess < 0.06


def test_burst_ignores_nonfinite_and_old_samples() -> None:
    state = _burst([100.0] * 8 + [250.0] * 4)
    assert burst_update(BurstParams(), state, 1e9, math.nan, 60.0) == state
    assert burst_update(BurstParams(), state, 0.0, 500.0, 60.0) == state


def test_burst_params_validated() -> None:
    with pytest.raises(ValueError, match="memory_s"):
        BurstParams(memory_s=0.0)
    with pytest.raises(ValueError, match="max_excess"):
        BurstParams(max_excess=-1.0)


def test_burst_state_round_trips_through_json() -> None:
    state = _burst([100.0] * 8 + [180.0] * 4 + [100.0] * 3)
    assert state.samples and state.excess > 0
    assert BurstState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# ---- surprise: how far the load overshot the forecast sized for, within the start-up horizon

HORIZON_S = 150.0


def _surprise(
    values: list[float], forecasts: list[float] | None = None, params: SurpriseParams | None = None
) -> SurpriseState:
    """Feed samples every 15 s; the forecast filed each tick is ``forecasts[i]`` (default: the value itself,
    a last-value forecaster)."""
    params = params or SurpriseParams(min_evidence_s=300.0)
    state = SurpriseState()
    for i, v in enumerate(values):
        f = v if forecasts is None else forecasts[i]
        state = surprise_update(params, state, 15.0 * i, v, f, HORIZON_S)
    return state


def _q(state: SurpriseState, q: float) -> float | None:
    return surprise_quantile(SurpriseParams(min_evidence_s=300.0), state, q)


@pytest.mark.parametrize(
    ("values", "q", "low", "high"),
    [
        pytest.param([100.0] * 120, 0.9, 0.0, 0.0, id="flat-forecast-holds"),
        # +/-3 % noise: the peak within the horizon overshoots a last-value forecast by up to ~6 %
        pytest.param([100.0 + (3.0 if i % 2 else -3.0) for i in range(120)], 0.9, 0.04, 0.08, id="noise"),
        # on/off at 3x every 5 min: half the forecasts filed in a lull meet a burst within 150 s
        pytest.param([300.0 if (i // 10) % 2 else 100.0 for i in range(240)], 0.9, 1.5, 2.0, id="on-off-3x"),
        # +1 % per tick: a last-value forecast misses the ramp by 10 ticks x 1 % = ~10 %
        pytest.param([100.0 * 1.01**i for i in range(120)], 0.5, 0.08, 0.125, id="ramp"),
    ],
)
def test_surprise_quantile_table(values: list[float], q: float, low: float, high: float) -> None:
    x = _q(_surprise(values), q)
    assert x is not None and low <= x <= high


def test_surprise_unmeasured_until_enough_evidence() -> None:
    """Nothing is known until min_evidence_s of forecasts have been checked (their horizon has passed)."""
    state = _surprise([100.0] * 10)  # 150 s: the first forecast's horizon just ended
    assert _q(state, 0.9) is None
    assert _q(_surprise([100.0] * 40), 0.9) == 0.0


def test_surprise_forgets_with_its_memory() -> None:
    """After a burst, an hour of steady load (memory 10 min) brings the p90 back to zero."""
    params = SurpriseParams(memory_s=600.0, min_evidence_s=300.0)
    burst = [100.0] * 40 + [300.0] * 8 + [100.0] * 40
    state = _surprise(burst, params=params)
    assert (surprise_quantile(params, state, 0.95) or 0.0) >= 1.0
    calm = _surprise(burst + [100.0] * 240, params=params)
    assert surprise_quantile(params, calm, 0.95) == 0.0


def test_surprise_remembers_the_peak_and_lets_it_fade_with_its_memory() -> None:
    """The largest sample seen (the ceiling of the policy's headroom) decays with memory_s once the load is lower."""
    params = SurpriseParams(memory_s=600.0, min_evidence_s=300.0)
    state = _surprise([100.0] * 20 + [300.0] * 4 + [100.0] * 40, params=params)  # 40 ticks of 15 s after the burst
    assert state.peak == pytest.approx(300.0 * math.exp(-40 * 15.0 / 600.0))
    assert _surprise([100.0] * 20 + [300.0] * 4 + [100.0] * 400, params=params).peak == 100.0
    assert SurpriseState.from_dict(json.loads(json.dumps(state.to_dict()))).peak == state.peak


def test_surprise_remembers_the_steepest_rise_and_lets_it_fade_with_its_memory() -> None:
    """The steepest rise between two samples, per second (the policy's ceiling on a climb's headroom): falls do
    not count; it decays with memory_s and survives the JSON round trip."""
    params = SurpriseParams(memory_s=600.0, min_evidence_s=300.0)
    climb = [100.0] * 20 + [100.0 + 30.0 * k for k in range(1, 5)] + [220.0 - 40.0 * k for k in range(1, 4)]
    state = _surprise(climb, params=params)
    assert state.last_value == pytest.approx(100.0)
    assert state.rise_per_s == pytest.approx(2.0 * math.exp(-3 * 15.0 / 600.0))  # 30 per 15 s, 3 ticks ago
    assert _surprise([100.0] * 20, params=params).rise_per_s == 0.0
    restored = SurpriseState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert (restored.last_value, restored.rise_per_s) == (state.last_value, state.rise_per_s)


def test_surprise_against_a_forecast_that_anticipates() -> None:
    """A forecast that already sized for the burst is not surprised by it."""
    values = [300.0 if (i // 10) % 2 else 100.0 for i in range(240)]
    assert _q(_surprise(values, forecasts=[300.0] * 240), 0.99) == 0.0


def test_surprise_ignores_nonfinite_and_old_samples() -> None:
    state = _surprise([100.0] * 20)
    params = SurpriseParams()
    assert surprise_update(params, state, 1e9, math.nan, 100.0, HORIZON_S) == state
    assert surprise_update(params, state, 0.0, 100.0, 100.0, HORIZON_S) == state
    # a forecast that is not positive is not filed, the sample still counts
    later = surprise_update(params, state, 1e4, 100.0, 0.0, HORIZON_S)
    assert later.last_time_s == 1e4 and all(p[0] < 1e4 for p in later.pending)


def test_surprise_params_validated() -> None:
    with pytest.raises(ValueError, match="memory_s"):
        SurpriseParams(memory_s=0.0)
    with pytest.raises(ValueError, match="min_evidence_s"):
        SurpriseParams(min_evidence_s=-1.0)


def test_surprise_state_round_trips_through_json() -> None:
    state = _surprise([100.0] * 30 + [180.0] * 4 + [100.0] * 3)
    assert state.pending and state.measured > 0
    assert SurpriseState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert SurpriseState.from_dict({"weights": [1.0, 2.0]}).weights == ()  # another bin layout: start over


def test_surprise_files_nothing_when_told_but_still_checks_what_was_filed() -> None:
    """``file_forecast=False`` (the policy's pool is short: its rates are capped throughput) files no forecast;
    those filed before are still checked against the sample."""
    params = SurpriseParams(min_evidence_s=300.0)
    state = _surprise([100.0] * 20)
    kept = surprise_update(params, state, 300.0, 250.0, 250.0, HORIZON_S, file_forecast=False)
    assert [p[0] for p in kept.pending] == [p[0] for p in state.pending if p[0] + HORIZON_S > 300.0]
    assert all(p[2] == 250.0 for p in kept.pending)  # the older forecasts saw the 2.5x sample
    filed = surprise_update(params, state, 300.0, 250.0, 250.0, HORIZON_S)
    assert filed.pending[-1] == (300.0, 250.0, 0.0) and len(filed.pending) == len(kept.pending) + 1


def test_surprise_partial_quantile_reads_the_evidence_so_far() -> None:
    """Before min_evidence_s: None, unless ``partial`` (then what was checked so far; None before anything)."""
    params = SurpriseParams(min_evidence_s=600.0)
    state = _surprise([100.0] * 12 + [200.0] * 4, params=params)
    assert surprise_quantile(params, state, 0.9) is None
    assert (surprise_quantile(params, state, 0.9, partial=True) or 0.0) >= 0.9
    assert surprise_quantile(params, SurpriseState(), 0.9, partial=True) is None


# ---- the young trend's bias correction


def _ramp_after(start_s: float, slope_per_s: float, end_s: float) -> list[tuple[float, float]]:
    """100 until ``start_s``, then rising by ``slope_per_s``, one sample per 15 s tick."""
    return [(float(t), 100.0 + slope_per_s * max(0.0, t - start_s)) for t in range(0, int(end_s) + 1, 15)]


def test_a_young_trend_is_corrected_for_the_weight_it_lacks() -> None:
    """75 s into the trend the plain trend shows well under half a ramp's slope (it started at 0); corrected for
    the weight it lacks it shows most of it, so the forecast reaches further up the ramp."""
    plain = ForecastParams(warmup_s=60.0, trend_bias_correction=False)
    corrected = replace(plain, trend_bias_correction=True)
    series = _ramp_after(0.0, 0.5, 120.0)
    s_plain, s_corr = _feed(plain, series), _feed(corrected, series)
    assert s_plain == s_corr  # the state is the same: only what the forecast reads of it differs
    assert s_corr.trend_since_s == 45.0  # the last warm-up sample: the trend's first step starts there
    assert s_plain.trend_per_s < 0.4 * 0.5
    assert trend_of(corrected, s_corr) > 0.7 * 0.5
    assert (predict(corrected, s_corr, 150.0) or 0.0) > (predict(plain, s_plain, 150.0) or 0.0) + 15.0


def test_the_correction_fades_and_changes_nothing_on_a_flat_load() -> None:
    """A flat load has no trend to correct; after a few time constants the correction is gone."""
    plain = ForecastParams(warmup_s=60.0, trend_bias_correction=False)
    corrected = replace(plain, trend_bias_correction=True)
    flat = _feed(corrected, FLAT)
    assert predict(corrected, flat, 150.0) == predict(plain, flat, 150.0) == pytest.approx(42.0)
    old = _feed(corrected, _ramp_after(0.0, 0.5, 60.0 + 6 * corrected.trend_time_constant_s))
    assert trend_of(corrected, old) == pytest.approx(old.trend_per_s, rel=0.01)


def test_a_state_restored_without_the_trend_start_is_not_corrected() -> None:
    """A state saved before the trend's start was recorded has a trend of unknown age: it is read as it is (taking
    it for a new one would multiply an old trend), and stays uncorrected as it is updated."""
    params = ForecastParams(warmup_s=60.0)
    state = _feed(params, _ramp_after(0.0, 0.5, 600.0))
    legacy = {k: v for k, v in state.to_dict().items() if k != "trend_since_s"}
    restored = ForecastState.from_dict(json.loads(json.dumps(legacy)))
    assert restored.trend_since_s is None
    assert trend_of(params, restored) == restored.trend_per_s
    later = update(params, restored, 615.0, 100.0 + 0.5 * 615.0)
    assert later.trend_since_s is None and trend_of(params, later) == later.trend_per_s

"""Hindsight references: the per-window oracle and the static-best search, on small generated workloads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.spec import SLO, AutoscalerSpec, PoolSpec
from autoscaler.core.types import Observation, Pool, PoolReplicas, Signals
from autoscaler.profiles import load_profile
from sim.oracle import (
    OracleSchedule,
    SchedulePolicy,
    SimSettings,
    StaticSearch,
    WindowNeed,
    _run_static,
    judge,
    lowest_passing,
    oracle_schedule,
    window_need,
)
from sim.workload import Workload, generate

PROFILE = load_profile("llama-3.1-8b-h100-tp1")
SPEC = AutoscalerSpec(
    prefill=PoolSpec(1, 16), decode=PoolSpec(1, 16), ttft=SLO(0.99, 1.0), itl=SLO(0.99, 0.05)
)
SETTINGS = SimSettings(PROFILE, SPEC, max_prefill=16, max_decode=16)
# ~110k prompt tok/s and ~10k output tok/s: a few replicas per pool
WINDOW = generate("poisson:rate=40,duration=60,prompt=lognormal(2500,0.6),output=exp(250)", seed=3)


class TestLowestPassing:
    @pytest.mark.parametrize(
        ("threshold", "guess", "lo", "hi", "expected"),
        [
            pytest.param(5, 5, 1, 10, 5, id="exact-guess"),
            pytest.param(5, 9, 1, 10, 5, id="guess-high"),
            pytest.param(5, 1, 1, 10, 5, id="guess-low"),
            pytest.param(1, 7, 1, 10, 1, id="edge-at-lo"),
            pytest.param(10, 3, 1, 10, 10, id="edge-at-hi"),
            pytest.param(11, 3, 1, 10, None, id="infeasible"),
            pytest.param(0, 30, 1, 10, 1, id="guess-clamped"),
        ],
    )
    def test_case(self, threshold: int, guess: int, lo: int, hi: int, expected: int | None) -> None:
        assert lowest_passing(lambda x: x >= threshold, guess, lo, hi) == expected

    def test_exact_guess_costs_two_calls(self) -> None:
        calls: list[int] = []
        lowest_passing(lambda x: calls.append(x) is None and x >= 6, 6, 1, 64)
        assert calls == [6, 5]


@given(threshold=st.integers(0, 70), guess=st.integers(-5, 80), lo=st.integers(0, 5), span=st.integers(0, 64))
def test_lowest_passing_matches_brute_force(threshold: int, guess: int, lo: int, span: int) -> None:
    hi = lo + span
    expected = next((x for x in range(lo, hi + 1) if x >= threshold), None)
    assert lowest_passing(lambda x: x >= threshold, guess, lo, hi) == expected


def _passes(p: int, d: int) -> bool:
    t_ok, i_ok, _, _ = judge(_run_static(WINDOW, SETTINGS, p, d, 660.0).records(), SPEC)
    return t_ok and i_ok


def test_window_need_is_minimal_and_passes() -> None:
    need = window_need(WINDOW, 0.0, 60.0, SETTINGS)
    assert need.feasible and need.arrivals == len(WINDOW)
    assert _passes(need.prefill, need.decode)
    assert need.ttft_q_s <= 1.0 and need.itl_q_s <= 0.05
    if need.prefill > 1:
        assert not _passes(need.prefill - 1, need.decode)
    if need.decode > 1:
        assert not _passes(need.prefill, need.decode - 1)
    assert need.prefill >= 2  # ~110k tok/s cannot fit one ~55k tok/s prefill replica


def test_empty_window_needs_the_minimum() -> None:
    empty = Workload("empty", np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert window_need(empty, 60.0, 60.0, SETTINGS) == WindowNeed(60.0, 0, 1, 1, True, 0)


def test_schedule_bound_and_policy() -> None:
    sched = OracleSchedule(60.0, (WindowNeed(0, 5, 2, 3, True, 1), WindowNeed(60, 5, 4, 1, True, 1)), 2)
    assert sched.gpu_hours == pytest.approx((5 + 5) * 60 * 2 / 3600)
    assert sched.peak == (4, 3)
    policy = SchedulePolicy(sched)
    o = Observation(75.0, Signals(75.0), PoolReplicas(2, 2), PoolReplicas(3, 3))
    decision, _ = policy.decide(o, None, SPEC)
    assert (decision.prefill.desired_replicas, decision.decode.desired_replicas) == (4, 1)
    assert sched.replicas_at(Pool.DECODE, 1e6) == 1  # past the end: the last window


def test_oracle_schedule_windows_by_arrival() -> None:
    w = generate("step:rate=5,to=40,at=60,duration=120,prompt=lognormal(2500,0.6),output=exp(250)", seed=2)
    sched = oracle_schedule(w, SETTINGS)
    assert len(sched.windows) == 2
    low, high = sched.windows
    assert low.arrivals < high.arrivals
    assert low.prefill + low.decode <= high.prefill + high.decode


def test_static_search_meets_target_and_is_locally_minimal() -> None:
    w = generate("poisson:rate=25,duration=180,prompt=lognormal(2500,0.6),output=exp(250)", seed=4)
    search = StaticSearch(w, SETTINGS)
    best = search.search((6, 6))
    assert best is not None and best.window_compliance >= 0.99
    for p, d in ((best.prefill - 1, best.decode), (best.prefill, best.decode - 1)):
        if p >= 1 and d >= 1:
            assert search.compliance(p, d).window_compliance < 0.99
    # monotone pruning answers dominated queries without new simulations
    before = search.simulations
    assert search.passes(best.prefill + 3, best.decode + 2)
    assert search.simulations == before

"""Surge response report: minutes above target against start-up + draining the backlog with the first order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.core.spec import AutoscalerSpec
from autoscaler.profiles import load_profile
from sim.suite import Surge
from sim.surges import _drain, replica_rate_tokens_per_s, surge_report
from sim.workload import Workload

PROFILE = load_profile("llama-3.1-8b-h100-tp1")
SPEC = AutoscalerSpec()


def test_drain_replays_the_backlog() -> None:
    """100 tokens/s arrive; 1 replica of 50 tokens/s until the order of 3 is ready at 120 s: the backlog grows
    50/s for 120 s (6,000), then drains at 150 - 100 = 50/s: 120 s."""
    arrivals = np.full(1000, 100.0)
    backlog, drain_s = _drain(arrivals, 0, lambda t: 1.0, 50.0, 120, 3)
    assert backlog == pytest.approx(6000.0)
    assert drain_s == pytest.approx(120.0)


def test_drain_never_when_the_order_is_too_small() -> None:
    arrivals = np.full(20_000, 100.0)
    _, drain_s = _drain(arrivals, 0, lambda t: 1.0, 50.0, 120, 2)  # 2 x 50 = 100: never catches up
    assert math.isinf(drain_s)


def test_replica_rates_are_positive_and_decode_meets_the_itl_target() -> None:
    assert replica_rate_tokens_per_s(PROFILE, SPEC, "prefill", 2000.0) > 10_000
    decode = replica_rate_tokens_per_s(PROFILE, SPEC, "decode", 2000.0)
    assert decode > 100


def _run(ok: list[bool], times: list[float], prefill: list[int]) -> dict[str, object]:
    n = len(ok)
    return {
        "windows": {"start_s": [60.0 * i for i in range(n)], "ok": ok, "counted": [True] * n},
        "timeline": {
            "time_s": times,
            "prefill_desired": prefill,
            "prefill_ready": [min(prefill[0], p) for p in prefill],
            "decode_desired": [2] * len(times),
            "decode_ready": [2] * len(times),
        },
    }


def test_report_finds_first_order_minutes_above_target_and_the_minimum() -> None:
    # prompts only rise at 600 s (x4, same output tokens/s would be needed for decode to count: it stays flat)
    arrival = np.concatenate([np.arange(0, 600, 0.1), np.arange(600, 1800, 0.025)])
    prompt = np.full(arrival.size, 1000)
    output = np.concatenate([np.full(6000, 40), np.full(arrival.size - 6000, 10)])
    w = Workload("w", arrival, prompt, output, 1800.0)
    ok = [True] * 10 + [False, False, False] + [True] * 17
    times = [15.0 * i for i in range(121)]
    prefill = [2 if t < 645 else 9 for t in times]
    rows = surge_report(Surge(600.0, 1200.0, "x4"), _run(ok, times, prefill), w, PROFILE, SPEC, 120.0, 60.0)
    assert [r["pool"] for r in rows] == ["prefill"]  # decode's output tokens/s did not rise
    r = rows[0]
    assert r["minutes_above_target"] == 3.0
    assert r["first_order_s"] == 645.0 and r["detect_s"] == 45.0
    assert (r["ready_before"], r["ordered"]) == (2, 9)
    rate = replica_rate_tokens_per_s(PROFILE, SPEC, "prefill", 1000.0)
    assert r["replica_rate_per_s"] == pytest.approx(rate, rel=1e-6)
    assert r["physical_min_minutes"] == pytest.approx((120.0 + r["drain_s"]) / 60.0)
    assert r["backlog_tokens"] >= 0 and r["drain_s"] >= 0

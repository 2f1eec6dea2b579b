"""Summary and window metrics from hand-built per-request records."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.latency import LatencyProfile, PolyModel
from autoscaler.core.spec import SLO, AutoscalerSpec
from autoscaler.core.types import Decision, Pool, PoolDecision
from sim.scenario import Scenario
from sim.summary import SUMMARY_KEYS, SummaryRecords, quantile, summarize, window_table
from sim.workload import Workload

NAN = math.nan
PROFILE = LatencyProfile(
    name="test", source="hand-made", step=PolyModel(0.01, 1e-5, 0.0, 0.005, 1e-7, 1e-5),
    gpus_per_replica=2, kv_bytes_per_token=1, kv_capacity_tokens=100_000,
)  # fmt: skip


def records(rows):
    """rows: (arrival, ttft or None, itl_mean or None, output tokens, finished)."""
    arr = np.array([r[0] for r in rows], float)
    first = np.array([NAN if r[1] is None else r[0] + r[1] for r in rows], float)
    itl = np.array([NAN if r[2] is None else r[2] for r in rows], float)
    out = np.array([r[3] for r in rows], np.int64)
    fin = np.array([r[4] for r in rows], bool)
    last = np.where(fin, first + np.nan_to_num(itl) * (out - 1), NAN)
    return SummaryRecords(arr, first, last, itl, itl * 1.5, np.full(arr.size, 100, np.int64), out, fin)


def scenario(ttft_s=1.0, itl_s=0.05, window_s=60.0):
    w = Workload("t", np.array([0.0]), np.array([1]), np.array([1]))
    spec = AutoscalerSpec(ttft=SLO(0.99, ttft_s), itl=SLO(0.99, itl_s))
    return Scenario(
        workload=w, profile=PROFILE, spec=spec, initial_prefill=1, initial_decode=2, window_s=window_s
    )


@dataclass
class Pod:
    pool: Pool
    created_s: float
    gone_s: float


# Each case: id, rows, expected (attainment, windows_total, windows_ok)
CASES = [
    ("all-good", [(1, 0.5, 0.02, 10, True), (70, 0.9, 0.04, 5, True)], (1.0, 2, 2)),
    ("ttft-miss", [(1, 1.5, 0.02, 10, True), (70, 0.2, 0.01, 5, True)], (0.5, 2, 1)),
    ("itl-miss", [(1, 0.5, 0.06, 10, True), (2, 0.5, 0.01, 10, True)], (0.5, 1, 0)),
    # one output token: no ITL, only TTFT matters
    ("single-token", [(1, 0.5, None, 1, True)], (1.0, 1, 1)),
    # never got a first token: a miss, and its window is violated (infinitely late)
    ("stalled", [(1, None, None, 10, False), (61, 0.1, 0.01, 3, True)], (0.5, 2, 1)),
    # got a first token but did not finish: TTFT fine, but a miss and an infinite ITL in its window
    ("unfinished", [(1, 0.2, None, 10, False)], (0.0, 1, 0)),
    # empty windows in between do not count
    ("gap", [(1, 0.5, 0.02, 2, True), (250, 0.5, 0.02, 2, True)], (1.0, 2, 2)),
]


@pytest.mark.parametrize(("rows", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_attainment_and_window_compliance(rows, expected):
    rec = records(rows)
    _, s = summarize(
        records=rec, scenario=scenario(), policy_name="static", timeline=None, decisions=[],
        pods=[], gpu_seconds={}, end_s=300.0, wall_s=0.1,
    )  # fmt: skip
    attainment, total, ok = expected
    assert s["request_slo_attainment"] == pytest.approx(attainment)
    assert (s["windows_total"], s["windows_ok"]) == (total, ok)
    assert s["window_compliance"] == pytest.approx(ok / total)
    assert set(SUMMARY_KEYS) <= set(s)


def test_percentiles_are_nearest_rank():
    # 100 requests: TTFT 0.01..1.00; p99 is the 99th value (0.99), p50 the 50th (0.50)
    rows = [(0.5 * i, 0.01 * (i + 1), 0.001 * (i + 1), 5, True) for i in range(100)]
    _, s = summarize(
        records=records(rows), scenario=scenario(), policy_name="static", timeline=None, decisions=[],
        pods=[], gpu_seconds={Pool.PREFILL: 3600.0, Pool.DECODE: 7200.0}, end_s=60.0, wall_s=0.0,
    )  # fmt: skip
    assert s["ttft_p99_s"] == pytest.approx(0.99)
    assert s["ttft_p50_s"] == pytest.approx(0.50)
    assert s["itl_p99_s"] == pytest.approx(0.099)
    assert s["gpu_hours"] == pytest.approx(3.0)
    assert s["gpu_hours_decode"] == pytest.approx(2.0)
    assert s["requests"] == s["completed"] == 100


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=200),
    q=st.sampled_from([0.5, 0.9, 0.99]),
    target=st.floats(min_value=0.0, max_value=10.0),
)
def test_nearest_rank_quantile_meets_target_iff_share_meets_q(values, q, target):
    """The property the SLO check relies on: quantile <= target exactly when a q share of samples is <= target."""
    v = np.array(values)
    assert (quantile(v, q) <= target) == (np.mean(v <= target) >= q)


def test_window_table_series():
    rows = [(1, 0.5, 0.02, 10, True), (2, 0.7, 0.03, 10, True), (65, 0.2, 0.01, 4, True)]
    timeline = {
        "time_s": np.array([0.0, 15.0, 30.0, 45.0, 60.0, 75.0]),
        "decode_ready": np.array([2, 2, 3, 3, 4, 4], float),
        "decode_kv_usage": np.array([0.1, NAN, 0.3, 0.2, 0.5, 0.7]),
    }
    pods = [Pod(Pool.PREFILL, 0.0, math.inf), Pod(Pool.DECODE, 0.0, 90.0), Pod(Pool.DECODE, 30.0, math.inf)]
    win = window_table(records(rows), scenario(), timeline, pods, end_s=120.0)
    assert win["start_s"].tolist() == [0.0, 60.0]
    assert win["arrivals"].tolist() == [2, 1]
    assert win["arrival_rate_per_s"].tolist() == [2 / 60, 1 / 60]
    assert win["ttft_p99_s"][0] == pytest.approx(0.7)
    assert win["ttft_p50_s"][0] == pytest.approx(0.5)
    assert win["decode_ready"].tolist() == [2.5, 4.0]
    assert win["decode_kv_usage"][0] == pytest.approx(0.2)  # NaN samples are skipped
    # 2 GPUs per replica; decode: window 0 has 60 + 30 s, window 1 has 30 + 60 s
    assert win["decode_gpu_seconds"].tolist() == [180.0, 180.0]
    assert win["prefill_gpu_seconds"].tolist() == [120.0, 120.0]


def test_scale_events_and_replica_max_from_decisions():
    def dec(t, p, d, cur_p=1, cur_d=2):
        return t, Decision(
            t, PoolDecision(Pool.PREFILL, cur_p, p, "x", ""), PoolDecision(Pool.DECODE, cur_d, d, "x", "")
        )

    decisions = [dec(0, 1, 2), dec(15, 3, 2), dec(30, 3, 5, cur_p=3), dec(45, 2, 5, cur_p=3, cur_d=5)]
    _, s = summarize(
        records=records([(1, 0.5, 0.02, 10, True)]), scenario=scenario(), policy_name="p", timeline=None,
        decisions=decisions, pods=[], gpu_seconds={}, end_s=60.0, wall_s=0.0,
    )  # fmt: skip
    assert s["scale_events"] == 3
    assert (s["prefill_replicas_max"], s["decode_replicas_max"]) == (3, 5)

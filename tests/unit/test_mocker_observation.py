"""bench/mocker_observation.py and the bench's hook: Dynamo mocker snapshots -> pdscale's Observation -> targets.

The snapshots below have the shape ai-dynamo 1.6.1's mocker hands ``scaling_policy.on_tick`` (keys copied from a
live run; values chosen for the checks). No ai-dynamo needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from autoscaler.core.latency import prefill_time_s
from autoscaler.core.spec import SLO, AutoscalerSpec, PoolSpec
from autoscaler.profiles import load_profile
from bench.bench_vs_dynamo_mocker import MockerPolicyHook
from bench.mocker_observation import (
    FpmCache,
    TrafficTotals,
    TrafficWindow,
    estimated_ttft_s,
    observation_from_snapshot,
)
from sim.policies import make_policy

PROFILE = load_profile("llama-3.1-8b-h100-tp1")


def _fpm(worker: int, **kw: float) -> dict[str, Any]:
    base: dict[str, Any] = {
        "worker_id": worker, "dp_rank": 0, "wall_time": 0.0, "num_prefill_requests": 0, "sum_prefill_tokens": 0,
        "var_prefill_length": 0.0, "sum_prefill_kv_tokens": 0, "num_decode_requests": 0, "sum_decode_kv_tokens": 0,
        "var_decode_kv_tokens": 0.0, "num_queued_prefill": 0, "sum_queued_prefill_tokens": 0,
        "var_queued_prefill_length": 0.0, "num_queued_decode": 0, "sum_queued_decode_kv_tokens": 0,
        "var_queued_decode_kv_tokens": 0.0,
    }  # fmt: skip
    base.update(kw)
    return base


def _snapshot(now_ms: float = 15000.0, **traffic: float) -> dict[str, Any]:
    t: dict[str, Any] = {
        "duration_s": 15.0, "num_req": 300, "avg_isl": 1000.0, "avg_osl": 200.0, "avg_ttft_ms": 80.0,
        "avg_itl_ms": 10.0, "shape_count": 240, "ttft_count": 240, "itl_count": 240, "avg_accept_length": 1.0,
        "avg_kv_hit_rate": 0.0, "hit_rate_count": 0, "accept_length_forward_count": 1000,
    }  # fmt: skip
    t.update(traffic)
    return {
        "tick_ordinal": 0,
        "now_ms": now_ms,
        "prefill_fpm_snapshots": [
            _fpm(0, wall_time=0.03, num_prefill_requests=2, sum_prefill_tokens=1500, num_queued_prefill=3,
                 sum_queued_prefill_tokens=9000),
            _fpm(1, wall_time=0.02, num_prefill_requests=1, sum_prefill_tokens=700),
        ],
        "decode_fpm_snapshots": [
            _fpm(0, wall_time=0.012, num_decode_requests=40, sum_decode_kv_tokens=41_152, num_queued_decode=2),
            _fpm(1, wall_time=0.020, num_decode_requests=60, sum_decode_kv_tokens=82_305),
        ],
        "active_prefill_count": 2, "active_decode_count": 2, "active_prefill_ids": [0, 1],
        "active_decode_ids": [0, 1], "starting_prefill_count": 1, "starting_decode_count": 0,
        "starting_prefill_ids": [2], "starting_decode_ids": [], "draining_prefill_count": 0,
        "draining_decode_count": 0, "draining_prefill_ids": [], "draining_decode_ids": [],
        "non_draining_prefill_count": 3, "non_draining_decode_count": 2, "total_prefill_count": 3,
        "total_decode_count": 2,
        "traffic": t,
    }


def _observe(snap: dict[str, Any], how: str = "estimate", offset_s: float = 0.0) -> Any:
    window = TrafficTotals.of(snap["traffic"])
    return observation_from_snapshot(
        snap, window, snap["prefill_fpm_snapshots"], snap["decode_fpm_snapshots"], profile=PROFILE,
        offset_s=offset_s, latency_signal=how,
    )  # fmt: skip


def test_rates_means_queues_kv_and_replicas_come_from_the_documented_fields() -> None:
    obs = _observe(_snapshot(), offset_s=100.0)
    s = obs.signals
    assert obs.time_s == s.time_s == pytest.approx(115.0)
    assert s.request_rate_per_s == pytest.approx(20.0)  # 300 arrivals / 15 s
    assert s.prompt_tokens_per_s == pytest.approx(20.0 * 1000)
    assert s.output_tokens_per_s == pytest.approx(240 * 200 / 15)  # completed x avg_osl
    assert s.ttft_mean_s == pytest.approx(0.080)
    assert s.itl_mean_s == pytest.approx(0.010)
    assert (s.prefill.waiting_requests, s.prefill.running_requests) == (3, 3)
    assert (s.decode.waiting_requests, s.decode.running_requests) == (2, 100)
    assert s.decode.kv_usage_fraction == pytest.approx((41_152 + 82_305) / 2 / PROFILE.kv_capacity_tokens)
    assert s.prefill.request_rate_per_s == pytest.approx(20.0)
    assert s.decode.request_rate_per_s == pytest.approx(16.0)
    assert (obs.prefill.desired, obs.prefill.ready, obs.prefill.starting) == (3, 2, 1)
    assert (obs.decode.desired, obs.decode.ready) == (2, 2)


def test_the_snapshot_has_no_percentile_so_each_latency_signal_says_what_stands_in() -> None:
    snap = _snapshot()
    mean = _observe(snap, "mean").signals
    assert (mean.ttft_s, mean.itl_s) == (pytest.approx(0.080), pytest.approx(0.010))
    none = _observe(snap, "none").signals
    assert (none.ttft_s, none.itl_s) == (None, None)
    assert none.ttft_mean_s == pytest.approx(0.080)  # means stay available to mean-based policies
    est = _observe(snap, "estimate").signals
    backlog = prefill_time_s(PROFILE, 9000 + 1500)  # worker 0: queued + scheduled prompt tokens
    assert est.ttft_s == pytest.approx(max(0.080, backlog))
    assert est.itl_s == pytest.approx(0.020)  # the slowest decode worker's last step
    with pytest.raises(ValueError, match="latency_signal"):
        _observe(snap, "p99")


def test_estimated_ttft_grows_with_the_worst_backlog_and_charges_the_kv_transfer() -> None:
    light = [_fpm(0, sum_prefill_tokens=500)]
    heavy = [_fpm(0, sum_prefill_tokens=500), _fpm(1, sum_queued_prefill_tokens=40_000)]
    assert estimated_ttft_s([], PROFILE, 0.0) is None
    assert estimated_ttft_s(heavy, PROFILE, 0.0) > estimated_ttft_s(light, PROFILE, 0.0)  # type: ignore[operator]
    assert estimated_ttft_s(light, PROFILE, 1e-6) == pytest.approx(prefill_time_s(PROFILE, 500) + 500e-6)


def test_an_empty_window_gives_missing_rates_not_zero() -> None:
    snap = _snapshot(duration_s=0.0, num_req=0, shape_count=0, ttft_count=0, itl_count=0)
    s = _observe(snap, "mean").signals
    assert s.request_rate_per_s is None and s.output_tokens_per_s is None and s.ttft_mean_s is None


def test_traffic_window_keeps_one_rate_window_of_ticks_and_merges_exactly() -> None:
    w = TrafficWindow(window_s=60.0)
    ticks = [(15.0 * i, TrafficTotals.of({"duration_s": 15.0, "num_req": 10 * i, "shape_count": i,
                                           "avg_isl": 100.0 * i, "avg_ttft_ms": float(i), "ttft_count": i}))
             for i in range(1, 7)]  # fmt: skip
    merged = [w.add(t, totals) for t, totals in ticks]
    last = merged[-1]  # ticks ending at 45, 60, 75, 90 s: the 60 s before t = 90 s
    assert last.duration_s == pytest.approx(60.0)
    assert last.arrivals == pytest.approx(10 * (3 + 4 + 5 + 6))
    assert last.prompt_tokens / last.completed == pytest.approx((300 * 3 + 400 * 4 + 500 * 5 + 600 * 6) / 18)
    assert last.ttft_sum_s / last.ttft_count == pytest.approx((9 + 16 + 25 + 36) / 18 / 1e3)
    assert merged[0].duration_s == pytest.approx(15.0)


def test_fpm_cache_keeps_idle_workers_last_metrics_and_forgets_removed_ones() -> None:
    cache = FpmCache()
    cache.update([_fpm(0, num_queued_prefill=1), _fpm(1, num_queued_prefill=2)], [0, 1])
    kept = cache.update([_fpm(1, num_queued_prefill=5)], [0, 1])  # worker 0 ran no step since the last tick
    assert [(f["worker_id"], f["num_queued_prefill"]) for f in kept] == [(0, 1), (1, 5)]
    assert [f["worker_id"] for f in cache.update([], [1])] == [1]


def _spec() -> AutoscalerSpec:
    pool = PoolSpec(min_replicas=1, max_replicas=64, gpus_per_replica=1)
    return AutoscalerSpec(prefill=pool, decode=pool, ttft=SLO(0.99, 1.0), itl=SLO(0.99, 0.05), pod_startup_s=120.0)


def _hook(policy: str) -> MockerPolicyHook:
    spec = _spec()
    return MockerPolicyHook(
        make_policy(policy, PROFILE, spec), spec, PROFILE, offset_s=0.0, tick_s=15.0,
        latency_signal="estimate", kv_transfer_s_per_token=0.0,
    )  # fmt: skip


def test_hook_ticks_every_tick_s_and_a_static_policy_never_sets_a_target() -> None:
    hook = _hook("static")
    assert hook.initial_tick_ms() == 15000.0
    out = hook.on_tick(_snapshot(now_ms=15000.0))
    assert out == {"target_prefill": None, "target_decode": None, "next_tick_ms": 30000.0}


def test_hook_turns_a_prefill_backlog_into_more_prefill_replicas_for_pdscale() -> None:
    """A long queue on both prefill workers and an arrival rate they cannot serve: pdscale orders more prefill
    through the hook (the mocker then starts them); with the same pods, a light load and no queue it orders no
    more (at 20 req/s x 1000 tokens one replica would do)."""
    hook = _hook("pdscale")
    calm = _snapshot(now_ms=15000.0)
    calm["prefill_fpm_snapshots"] = [_fpm(0, sum_prefill_tokens=800), _fpm(1, sum_prefill_tokens=800)]
    calm["starting_prefill_count"], calm["starting_prefill_ids"], calm["non_draining_prefill_count"] = 0, [], 2
    calm_target = hook.on_tick(calm)["target_prefill"]
    assert calm_target is None or calm_target <= 2
    busy = copy.deepcopy(calm)
    busy["now_ms"] = 30000.0
    busy["traffic"].update(num_req=15 * 200, avg_isl=2000.0)  # 200 req/s x 2000 prompt tokens
    busy["prefill_fpm_snapshots"] = [
        _fpm(w, sum_prefill_tokens=8192, num_prefill_requests=4, num_queued_prefill=400,
             sum_queued_prefill_tokens=800_000) for w in (0, 1)
    ]  # fmt: skip
    target = hook.on_tick(busy)["target_prefill"]
    assert target is not None and target > 2
    assert hook.messages and hook.messages[-1][1] != "WithinTarget"

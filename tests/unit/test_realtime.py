"""workers.realtime.RealtimeEngine: the simulator's scheduler in wall-clock time.

The same arrivals through the RealtimeEngine and through the simulator (one instance) must give the same model
timeline (admission, first and last token, preemptions: compared to 1 µs) and the same token counts; tokens must be
released after their deadline and close to it (a generous bound: this machine is shared). Profiles are the repo's
Llama-3.1-8B H100 profile scaled by ``scale_profile`` so each test runs in about a second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from autoscaler.core.latency import HostOverheads, LatencyProfile, scale_profile
from autoscaler.profiles import load_profile
from sim.engine import Engine, EngineConfig
from sim.workload import Workload
from workers.realtime import RealtimeEngine, RequestStream, TokenEvent

MODEL_TOL_S = 1e-6  # model timelines: equal up to float rounding of absolute vs relative times
RELEASE_SLACK_S = 0.15  # a token's release after its deadline (event-loop lateness on a loaded 2-core machine)
# host overheads off: these tests pin the scheduler's order, which α1 (per prompt token) may change on purpose
BASE = replace(load_profile("llama-3.1-8b-h100-tp1"), host=HostOverheads())
PROFILE = scale_profile(BASE, 2.0)  # decode steps ~12 ms: few steps, so timing holds up under load


@dataclass
class Served:
    stream: RequestStream
    events: list[TokenEvent]


async def serve(engine: RealtimeEngine, schedule: list[tuple[float, int, int]], remote_kv: bool = False) -> list[Served]:
    """Submit ``(offset_s, prompt_tokens, max_tokens)`` at their offsets, read every stream to its end."""
    t0 = time.monotonic()

    async def client(offset_s: float, prompt: int, max_tokens: int) -> Served:
        await asyncio.sleep(max(0.0, t0 + offset_s - time.monotonic()))
        stream = engine.submit(prompt, max_tokens, remote_kv=remote_kv)
        return Served(stream, [ev async for ev in stream])

    return list(await asyncio.gather(*(client(*row) for row in schedule)))


def poisson_schedule(n: int, seed: int, rate_per_s: float, prompts: tuple[int, int], outputs: tuple[int, int]):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    offsets = np.cumsum(rng.exponential(1 / rate_per_s, n))
    return [
        (float(o), int(p), int(m))
        for o, p, m in zip(offsets, rng.integers(*prompts, n), rng.integers(*outputs, n), strict=True)
    ]


def simulate(served: list[Served], profile: LatencyProfile, mode: str) -> tuple[list[Served], object, float]:
    """The simulator on the live run's actual arrival times; returns (served in arrival order, records, t0)."""
    order = sorted(served, key=lambda s: s.stream.times.arrival_s)
    base = order[0].stream.times.arrival_s
    w = Workload(
        "live",
        np.array([s.stream.times.arrival_s - base for s in order]),
        np.array([s.stream.prompt_tokens for s in order]),
        np.array([s.stream.max_tokens if mode == "agg" else 1 for s in order]),
    )
    e = Engine(w, EngineConfig(profile, mode=mode), 1 if mode == "disagg" else 0, 1)
    e.finish()
    return order, e.records(), base


def assert_released_after_deadlines(served: list[Served]) -> None:
    for s in served:
        for ev in s.events:
            assert ev.time_s >= ev.deadline_s - 1e-6, "a token was released before its step ended"
            assert ev.time_s - ev.deadline_s <= RELEASE_SLACK_S, f"token released {ev.time_s - ev.deadline_s:.3f} s late"


def assert_complete_streams(served: list[Served], tokens: int | None = None) -> None:
    for s in served:
        n = tokens if tokens is not None else s.stream.max_tokens
        assert [ev.index for ev in s.events] == list(range(n))
        assert [ev.finished for ev in s.events] == [False] * (n - 1) + [True]
        assert s.events[-1].finish_reason == "length" and s.stream.finish_reason == "length"
        assert [ev.deadline_s for ev in s.events] == sorted(ev.deadline_s for ev in s.events)


async def run_agg(profile: LatencyProfile, schedule: list[tuple[float, int, int]]) -> tuple[list[Served], RealtimeEngine]:
    engine = RealtimeEngine(profile, role="agg")
    await engine.start()
    served = await serve(engine, schedule)
    await engine.drain()
    await engine.stop()
    return served, engine


async def test_agg_timeline_equals_the_simulator() -> None:
    served, engine = await run_agg(PROFILE, poisson_schedule(24, 0, 25.0, (50, 3000), (5, 60)))
    assert_complete_streams(served)
    assert_released_after_deadlines(served)
    order, r, base = simulate(served, PROFILE, "agg")
    assert r.finished.all()  # type: ignore[attr-defined]
    for i, s in enumerate(order):
        t = s.stream.times
        assert t.scheduled_s - base == pytest.approx(r.prefill_start_s[i], abs=MODEL_TOL_S)  # type: ignore[attr-defined, operator]
        assert t.first_token_s - base == pytest.approx(r.first_token_s[i], abs=MODEL_TOL_S)  # type: ignore[attr-defined, operator]
        assert t.last_token_s - base == pytest.approx(r.last_token_s[i], abs=MODEL_TOL_S)  # type: ignore[attr-defined, operator]
        # what the client saw: the simulated TTFT, up to event-loop lateness
        seen_ttft = s.events[0].time_s - t.arrival_s
        assert seen_ttft == pytest.approx(r.ttft_s[i], abs=RELEASE_SLACK_S)  # type: ignore[attr-defined]
    snap = engine.snapshot()
    assert (snap.finished_total, snap.aborted_total, snap.running, snap.waiting, snap.kv_used_tokens) == (24, 0, 0, 0, 0)
    assert snap.generation_tokens_total == sum(s.stream.max_tokens for s in served)
    assert snap.prompt_tokens_total == sum(s.stream.prompt_tokens for s in served)


async def test_preemption_under_small_kv_equals_the_simulator() -> None:
    small = replace(PROFILE, kv_capacity_tokens=800, max_num_seqs=16)  # short prompts, long outputs: KV runs out
    served, engine = await run_agg(small, poisson_schedule(14, 1, 100.0, (20, 100), (40, 80)))
    assert_complete_streams(served)
    order, r, base = simulate(served, small, "agg")
    live_preemptions = [s.stream.times.preemptions for s in order]
    assert sum(live_preemptions) > 0, "the scenario must preempt"
    assert live_preemptions == r.preemptions.tolist()  # type: ignore[attr-defined]
    assert engine.snapshot().preemptions_total == sum(live_preemptions)
    for i, s in enumerate(order):
        assert s.stream.times.last_token_s - base == pytest.approx(r.last_token_s[i], abs=MODEL_TOL_S)  # type: ignore[attr-defined, operator]
    assert_released_after_deadlines(served)


async def test_prefill_role_ends_after_prefill_with_one_token() -> None:
    engine = RealtimeEngine(PROFILE, role="prefill")
    await engine.start()
    served = await serve(engine, poisson_schedule(10, 2, 30.0, (500, 6000), (50, 200)))
    await engine.stop()
    assert_complete_streams(served, tokens=1)
    # the simulator's prefill pod (disaggregated mode) on the same arrivals: prefill end = the one token
    order, r, base = simulate(served, PROFILE, "disagg")
    for i, s in enumerate(order):
        assert s.stream.times.first_token_s - base == pytest.approx(r.prefill_end_s[i], abs=MODEL_TOL_S)  # type: ignore[attr-defined, operator]
        assert s.stream.times.scheduled_s - base == pytest.approx(r.prefill_start_s[i], abs=MODEL_TOL_S)  # type: ignore[attr-defined, operator]
    snap = engine.snapshot()
    assert snap.generation_tokens_total == 10 and snap.finished_total == 10


async def test_decode_role_waits_the_kv_transfer_then_joins_at_a_step_boundary() -> None:
    link_bytes_per_s, base_latency_s = 2e9, 0.004  # slow link: transfers of tens of ms
    engine = RealtimeEngine(PROFILE, role="decode", kv_link_bytes_per_s=link_bytes_per_s,
                            kv_base_latency_s=base_latency_s)  # fmt: skip
    await engine.start()
    a = engine.submit(200, 30, remote_kv=True)
    b = engine.submit(1500, 5, remote_kv=True)
    snap = engine.snapshot()
    assert (snap.waiting, snap.inbound_kv_transfers, snap.running) == (2, 2, 0)
    ev_a = [ev async for ev in a]
    ev_b = [ev async for ev in b]
    await engine.stop()
    kvb = PROFILE.kv_bytes_per_token
    for s in (a, b):
        t = s.times
        assert t.kv_ready_s == pytest.approx(t.arrival_s + s.prompt_tokens * kvb / link_bytes_per_s + base_latency_s)
    # a arrives alone: admitted when its KV lands, first token one decode step (batch 1, prompt + 1 slots) later
    assert a.times.scheduled_s == a.times.kv_ready_s
    assert a.times.first_token_s == pytest.approx(a.times.kv_ready_s + PROFILE.step.decode_step_s(1, 201), rel=1e-9)
    # b's KV lands while a decodes: it joins at the first step boundary at or after its arrival
    boundaries = [ev.deadline_s for ev in ev_a]
    assert b.times.kv_ready_s < boundaries[-1]
    assert b.times.scheduled_s == min(d for d in boundaries if d >= b.times.kv_ready_s)  # type: ignore[operator]
    assert b.times.first_token_s in boundaries and len(ev_b) == 5


async def test_cancel_frees_the_slot_and_kv_at_the_next_boundary() -> None:
    one_seq = replace(PROFILE, max_num_seqs=1)
    engine = RealtimeEngine(one_seq, role="agg")
    await engine.start()
    a = engine.submit(1000, 200)
    b = engine.submit(400, 3)
    c = engine.submit(300, 3)
    seen_a = []
    async for ev in a:
        seen_a.append(ev)
        if ev.index == 2:
            a.cancel()
            c.cancel()  # still queued: never scheduled
    assert [ev.index for ev in seen_a] == [0, 1, 2] and a.finish_reason == "abort" and a.done
    assert b.times.scheduled_s is None or b.times.scheduled_s > seen_a[-1].deadline_s
    first_b = await b.__anext__()
    snap = engine.snapshot()
    assert snap.running == 1 and snap.kv_used_tokens == 400 + 1  # only b's prompt and its next slot: a's KV is free
    rest_b = [ev async for ev in b]
    assert [first_b.index] + [ev.index for ev in rest_b] == [0, 1, 2]
    # b was admitted at the boundary right after the one during which a was cancelled
    step_s = one_seq.step.decode_step_s(1, 1003)
    assert seen_a[-1].deadline_s < b.times.scheduled_s <= seen_a[-1].deadline_s + 1.5 * step_s  # type: ignore[operator]
    assert [ev async for ev in c] == [] and c.times.scheduled_s is None and c.finish_reason == "abort"
    await engine.drain()
    snap = engine.snapshot()
    assert (snap.finished_total, snap.aborted_total, snap.kv_used_tokens, snap.running, snap.waiting) == (1, 2, 0, 0, 0)
    await engine.stop()


async def test_drain_stops_accepting_and_waits_for_in_flight_work() -> None:
    engine = RealtimeEngine(PROFILE, role="agg")
    await engine.start()
    streams = [engine.submit(500, 20), engine.submit(800, 25)]
    drain = asyncio.create_task(engine.drain())
    await asyncio.sleep(0)
    assert not engine.accepting and not drain.done()
    with pytest.raises(RuntimeError, match="not accepting"):
        engine.submit(10, 10)
    events = [[ev async for ev in s] for s in streams]
    await asyncio.wait_for(drain, 5.0)
    assert [len(e) for e in events] == [20, 25] and all(s.finish_reason == "length" for s in streams)
    await engine.stop()


@pytest.mark.parametrize(
    ("role", "kwargs", "match"),
    [
        ("agg", {"prompt_tokens": 0, "max_tokens": 5}, "prompt_tokens"),
        ("agg", {"prompt_tokens": 5, "max_tokens": 0}, "max_tokens"),
        ("agg", {"prompt_tokens": 5, "max_tokens": 2.5}, "max_tokens"),
        ("agg", {"prompt_tokens": 400_000, "max_tokens": 20_000}, "KV capacity"),
        ("agg", {"prompt_tokens": 5, "max_tokens": 5, "remote_kv": True}, "decode role"),
    ],
    ids=["no-prompt", "no-output", "fractional", "over-kv", "remote-kv-on-agg"],
)
async def test_bad_requests_are_refused_with_a_reason(role: str, kwargs: dict, match: str) -> None:
    engine = RealtimeEngine(PROFILE, role=role)
    with pytest.raises(RuntimeError, match="not accepting"):
        engine.submit(5, 5)  # not started
    await engine.start()
    with pytest.raises(ValueError, match=match):
        engine.submit(**kwargs)
    assert engine.snapshot().waiting == 0
    await engine.stop()


def test_bad_role() -> None:
    with pytest.raises(ValueError, match="role"):
        RealtimeEngine(PROFILE, role="aggregated")


async def test_host_admission_delay_matches_the_simulator() -> None:
    """α0 + α1·prompt: the request joins the waiting queue that much after submit, in both clocks."""
    host = HostOverheads(request_s=0.02, request_per_prompt_token_s=1e-5)
    profile = replace(PROFILE, host=host)
    engine = RealtimeEngine(profile, role="agg")
    await engine.start()
    stream = engine.submit(2000, 2)
    _ = [ev async for ev in stream]
    t = stream.times
    assert t.scheduled_s is not None
    assert t.scheduled_s - t.arrival_s == pytest.approx(host.admission_delay_s(2000), abs=MODEL_TOL_S)
    await engine.stop()
    sim = Engine(Workload("one", np.zeros(1), np.array([2000]), np.array([2])),
                 EngineConfig(profile, mode="agg", router="round-robin"), 0, 1)  # fmt: skip
    sim.finish()
    rec = sim.records()
    assert rec.prefill_start_s[0] - rec.arrival_s[0] == pytest.approx(host.admission_delay_s(2000))
    assert rec.first_token_s[0] - rec.arrival_s[0] == pytest.approx(
        (t.first_token_s or 0.0) - t.arrival_s, abs=MODEL_TOL_S
    )

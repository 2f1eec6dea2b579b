"""sim.engine: fast (event-skipping) mode equals the per-step reference; invariants; pods; counters."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.core.latency import HostOverheads, LatencyProfile, PolyModel
from autoscaler.core.types import Pool
from sim.engine import ClosedLoopArrivals, Engine, EngineConfig
from sim.workload import Workload

FIELDS = (
    "prefill_start_s", "prefill_end_s", "kv_ready_s", "first_token_s", "last_token_s", "itl_mean_s",
    "itl_max_s", "prefill_pod", "decode_pod", "preemptions", "finished",
)  # fmt: skip


@dataclass(frozen=True)
class CurvedModel:
    """A StepModel that is not a PolyModel (decode time concave in context): exercises generic skipping."""

    poly: PolyModel

    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float:
        return self.poly.prefill_step_s(new_tokens, attention_token2)

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        return self.poly.decode_step_s(batch, context_tokens) + 2e-5 * math.sqrt(context_tokens)

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float:
        extra = 2e-5 * math.sqrt(context_tokens) if batch > 0 else 0.0
        return self.poly.mixed_step_s(new_tokens, batch, context_tokens, attention_token2) + extra


def profile(
    cap: int = 4000, seqs: int = 8, budget: int = 256, step: PolyModel | CurvedModel | None = None
) -> LatencyProfile:
    step = step or PolyModel(0.01, 1e-4, 1e-8, 0.005, 1e-6, 1e-4)
    return LatencyProfile("test", "unit test", step, 2, 1000, cap, seqs, budget)


def workload(n: int, seed: int, rate: float, max_prompt: int, max_out: int) -> Workload:
    r = np.random.default_rng(seed)
    return Workload(
        "w", np.cumsum(r.exponential(1 / rate, n)), r.integers(1, max_prompt, n), r.integers(1, max_out, n)
    )


@dataclass(frozen=True)
class Case:
    mode: str
    router: str
    cap: int
    rate: float
    max_out: int
    scale: bool
    jitter: str = "fixed"
    step: PolyModel | CurvedModel | None = None


CASES = {
    "disagg-basic": Case("disagg", "least-outstanding-tokens", 4000, 5.0, 60, False),
    "agg-basic": Case("agg", "least-outstanding-tokens", 4000, 5.0, 60, False),
    "disagg-preempt": Case("disagg", "least-outstanding-tokens", 900, 20.0, 300, False),
    "agg-preempt": Case("agg", "least-outstanding-tokens", 900, 20.0, 300, False),
    "disagg-scale": Case("disagg", "round-robin", 900, 20.0, 300, True),
    "agg-scale": Case("agg", "least-kv", 900, 20.0, 300, True),
    "disagg-least-kv-jitter": Case("disagg", "least-kv", 1200, 15.0, 200, True, "uniform:0.5"),
    "disagg-central": Case("disagg", "central-fcfs", 2000, 8.0, 100, True, "lognormal:0.3"),
    "agg-central": Case("agg", "central-fcfs", 2000, 3.0, 100, False),
    "disagg-generic-model": Case(
        "disagg",
        "least-kv",
        900,
        20.0,
        300,
        True,
        step=CurvedModel(PolyModel(0.01, 1e-4, 1e-8, 0.005, 1e-6, 1e-4)),
    ),
    "agg-generic-model": Case(
        "agg",
        "round-robin",
        900,
        20.0,
        300,
        True,
        step=CurvedModel(PolyModel(0.01, 1e-4, 1e-8, 0.009, 1e-5, 1e-4)),
    ),
    # decode steps straddle the 10 ms and 25 ms ITL bucket edges inside skipped segments
    "disagg-itl-edges": Case(
        "disagg",
        "least-outstanding-tokens",
        2000,
        20.0,
        300,
        True,
        step=PolyModel(0.01, 1e-4, 1e-8, 0.0095, 1e-5, 2e-4),
    ),
}


def run_case(
    c: Case, seed: int, reference: bool, n: int = 150, probe: list[float] | None = None,
    closed: ClosedLoopArrivals | None = None,
) -> Engine:  # fmt: skip
    w = workload(n, seed, c.rate, 300, c.max_out)
    prof = profile(cap=c.cap, seqs=16, budget=128, step=c.step)
    if closed is not None:  # clients see host overheads too: sends depend on them
        prof = replace(prof, host=HostOverheads(request_s=3e-4, request_per_prompt_token_s=1e-6, output_token_s=2e-4))
    cfg = EngineConfig(
        prof, mode=c.mode, router=c.router, reference=reference, startup_s=5.0, startup_jitter=c.jitter, seed=seed,
    )  # fmt: skip
    e = Engine(w, cfg, 0 if c.mode == "agg" else 1, 2, closed_loop=closed)
    if c.scale:
        e.set_desired(Pool.DECODE, 3, 1.3)
        e.set_desired(Pool.DECODE, 1, 4.7)
        if c.mode == "disagg":
            e.set_desired(Pool.PREFILL, 2, 2.1)
        e.set_desired(Pool.DECODE, 2, 6.2)  # cancels the drain
    for t in probe or ():
        e.run_until(t)
    e.finish()
    return e


def assert_same_records(a: Engine, b: Engine, tol: float = 1e-9) -> None:
    ra, rb = a.records(), b.records()
    for f in FIELDS:
        x = getattr(ra, f).astype(np.float64)
        y = getattr(rb, f).astype(np.float64)
        assert np.array_equal(np.isnan(x), np.isnan(y)), f
        ok = np.isfinite(x)
        np.testing.assert_allclose(x[ok], y[ok], rtol=0, atol=tol, err_msg=f)


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_equals_reference(name: str, seed: int) -> None:
    c = CASES[name]
    ref = run_case(c, seed, reference=True)
    fast = run_case(c, seed, reference=False)
    assert ref.records().finished.all()
    assert ref.all_done and fast.all_done and not fast.sending  # what ends a replay's drain
    assert_same_records(ref, fast)
    assert np.array_equal(ref.proxy.itl.counts, fast.proxy.itl.counts)
    assert np.array_equal(ref.proxy.ttft.counts, fast.proxy.ttft.counts)
    assert math.isclose(ref.proxy.itl.sum, fast.proxy.itl.sum, rel_tol=1e-9)
    for pa, pb in zip(ref.pods(), fast.pods(), strict=True):
        assert (pa.name, pa.state, pa.created_s) == (pb.name, pb.state, pb.created_s)
        assert pa.gone_s == pytest.approx(pb.gone_s, abs=1e-9)
        ca, cb = pa.counters, pb.counters
        assert np.array_equal(ca.itl.counts, cb.itl.counts), pa.name
        assert np.array_equal(ca.ttft.counts, cb.ttft.counts), pa.name
        assert ca.generation_tokens_total == cb.generation_tokens_total
        assert ca.prompt_tokens_total == cb.prompt_tokens_total
        assert ca.num_preemptions_total == cb.num_preemptions_total
        assert ca.request_success_total == cb.request_success_total
    ga, gb = ref.gpu_seconds(100.0), fast.gpu_seconds(100.0)
    assert ga == pytest.approx(gb, abs=1e-9)


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_closed_loop_fast_equals_reference(name: str) -> None:
    """Closed-loop sends are events scheduled at client completions: both modes see the same loop."""
    loop = ClosedLoopArrivals(users=12, think_s=0.05)
    c = CASES[name]
    ref = run_case(c, 4, reference=True, closed=loop)
    fast = run_case(c, 4, reference=False, closed=loop)
    assert ref.records().finished.all()
    assert_same_records(ref, fast)
    np.testing.assert_allclose(ref.records().arrival_s, fast.records().arrival_s, rtol=0, atol=1e-9)
    assert np.array_equal(ref.proxy.ttft.counts, fast.proxy.ttft.counts)


@pytest.mark.parametrize("name", ["agg-basic", "disagg-preempt"])
def test_time_bounded_closed_loop_fast_equals_reference(name: str) -> None:
    """A loop with a send deadline whose lengths come a block at a time: same sends, same results in both modes."""
    blocks: list[int] = []

    def more(block: int) -> tuple[list[int], list[int]]:
        blocks.append(block)
        rng = np.random.default_rng(block)
        return rng.integers(20, 400, 16).tolist(), rng.integers(1, 60, 16).tolist()

    loop = ClosedLoopArrivals(users=6, think_s=0.01, send_until_s=10.0, more_requests=more)
    ref = run_case(CASES[name], 2, reference=True, n=20, closed=loop)
    ref_blocks, blocks[:] = list(blocks), []
    fast = run_case(CASES[name], 2, reference=False, n=20, closed=loop)
    assert ref_blocks == blocks and len(blocks) >= 2  # the 20 listed requests ran out, more blocks were asked
    r = ref.records()
    assert 20 < len(r) < 20 + 16 * len(blocks) and r.finished.all() and r.arrival_s.max() <= 10.0
    assert ref.all_done and not ref.sending
    assert_same_records(ref, fast)
    np.testing.assert_allclose(r.arrival_s, fast.records().arrival_s, rtol=0, atol=1e-9)


def test_closed_loop_keeps_users_requests_in_flight() -> None:
    loop = ClosedLoopArrivals(users=5, think_s=0.0)
    e = run_case(CASES["agg-basic"], 1, reference=False, closed=loop)
    r = e.records()
    host = e.profile.host
    done = r.last_token_s + host.output_token_s * r.output_tokens  # what the client sees
    sends = np.sort(r.arrival_s)
    assert np.count_nonzero(r.arrival_s == 0.0) == 5
    np.testing.assert_allclose(sends[5:], np.sort(done)[: r.arrival_s.size - 5], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="users"):
        ClosedLoopArrivals(users=0)


def test_preemption_cases_do_preempt() -> None:
    """Guard against the equality test passing vacuously."""
    for name in ("disagg-preempt", "agg-preempt", "disagg-generic-model", "agg-generic-model"):
        assert run_case(CASES[name], 0, reference=False).records().preemptions.sum() > 0, name


@pytest.mark.parametrize("name", ["disagg-preempt", "agg-scale"], ids=["disagg-preempt", "agg-scale"])
def test_counters_at_intermediate_times_match_reference(name: str) -> None:
    """Lazily skipped segments are expanded at run_until: scraped counters equal the per-step engine's."""
    c = CASES[name]
    times = [0.7, 1.9, 3.05, 4.4, 6.0, 8.25]
    snaps: dict[bool, list[tuple]] = {}
    for ref in (True, False):
        w = workload(150, 3, c.rate, 300, c.max_out)
        cfg = EngineConfig(
            profile(cap=c.cap, seqs=16, budget=128), mode=c.mode, router=c.router, reference=ref
        )
        e = Engine(w, cfg, 0 if c.mode == "agg" else 1, 2)
        rows = []
        for t in times:
            e.run_until(t)
            for p in e.pods():
                k = p.counters
                rows.append(
                    (p.name, k.generation_tokens_total, k.itl.count, k.num_requests_running, k.num_requests_waiting,
                     round(k.kv_cache_usage_perc, 12), k.request_success_total, k.prompt_lengths.count,
                     k.prompt_lengths.sum)
                )  # fmt: skip
                # vllm:request_prompt_tokens: one observation per request finished on this pod, its prompt length
                assert k.prompt_lengths.count == k.request_success_total
        snaps[ref] = rows
    assert snaps[True] == snaps[False]


def test_seeded_runs_repeat_bit_for_bit() -> None:
    c = CASES["disagg-least-kv-jitter"]
    a, b = run_case(c, 7, reference=False), run_case(c, 7, reference=False)
    ra, rb = a.records(), b.records()
    for f in FIELDS:
        assert np.array_equal(getattr(ra, f), getattr(rb, f), equal_nan=True), f
    assert [p.ready_s for p in a.pods()] == [p.ready_s for p in b.pods()]
    other = run_case(c, 8, reference=False)
    assert [p.ready_s for p in a.pods()] != [p.ready_s for p in other.pods()]


def test_pod_lifecycle_and_gpu_seconds() -> None:
    w = Workload("w", np.array([0.5, 50.0]), np.array([100, 100]), np.array([10, 10]))
    e = Engine(w, EngineConfig(profile(), startup_s=30.0), 1, 1)
    e.set_desired(Pool.DECODE, 3, 10.0)
    assert e.replicas(Pool.DECODE).desired == 3 and e.replicas(Pool.DECODE).ready == 1
    e.run_until(39.9)
    assert [p.state for p in e.pods(Pool.DECODE)] == ["ready", "starting", "starting"]
    e.run_until(40.0)
    assert e.replicas(Pool.DECODE).ready == 3
    assert e.pods(Pool.DECODE)[1].ready_s == 40.0
    e.set_desired(Pool.DECODE, 1, 45.0)  # idle pods drain instantly
    assert [p.state for p in e.pods(Pool.DECODE)].count("gone") == 2
    e.set_desired(Pool.PREFILL, 2, 46.0)
    e.set_desired(Pool.PREFILL, 1, 47.0)  # cancels the starting pod
    cancelled = e.pods(Pool.PREFILL)[1]
    assert cancelled.state == "gone" and cancelled.gone_s == 47.0 and cancelled.ready_s == math.inf
    e.finish()
    gs = e.gpu_seconds(100.0)
    assert gs[Pool.PREFILL] == pytest.approx(2 * (100.0 + 1.0))
    assert gs[Pool.DECODE] == pytest.approx(2 * (100.0 + 35.0 + 35.0))
    assert e.records().finished.all()


def test_draining_pod_finishes_in_flight_work() -> None:
    w = Workload("w", np.array([0.0, 0.0]), np.array([10, 10]), np.array([500, 500]))
    e = Engine(w, EngineConfig(profile(), router="round-robin"), 1, 2)
    e.run_until(0.5)
    busy = [p for p in e.pods(Pool.DECODE) if p.counters.num_requests_running]
    assert len(busy) == 2
    e.set_desired(Pool.DECODE, 1, 0.5)
    draining = [p for p in e.pods(Pool.DECODE) if p.state == "draining"]
    assert len(draining) == 1 and e.replicas(Pool.DECODE).desired == 1
    e.finish()
    r = e.records()
    assert r.finished.all()
    assert draining[0].state == "gone" and draining[0].gone_s == pytest.approx(np.nanmax(r.last_token_s))


def test_scale_down_drains_least_loaded_and_scale_up_cancels_drain() -> None:
    w = Workload("w", np.array([0.0, 0.0]), np.array([10, 1000]), np.array([800, 800]))
    e = Engine(w, EngineConfig(profile(), router="round-robin"), 1, 3)
    e.run_until(1.0)
    load = [p.counters.num_requests_running for p in e.pods(Pool.DECODE)]
    assert load == [1, 1, 0]
    e.set_desired(Pool.DECODE, 2, 1.0)  # the idle pod goes at once
    assert [p.state for p in e.pods(Pool.DECODE)] == ["ready", "ready", "gone"]
    e.set_desired(Pool.DECODE, 1, 1.0)  # pod 0 (10-token prompt) has fewer outstanding tokens than pod 1
    assert [p.state for p in e.pods(Pool.DECODE)] == ["draining", "ready", "gone"]
    e.set_desired(Pool.DECODE, 2, 2.0)  # cancels the drain instead of starting a cold pod
    assert [p.state for p in e.pods(Pool.DECODE)] == ["ready", "ready", "gone"]
    assert e.replicas(Pool.DECODE).desired == 2 and len(e.pods(Pool.DECODE)) == 3
    e.finish()
    assert e.records().finished.all()


def test_unfinished_requests_are_reported() -> None:
    w = workload(50, 0, 10.0, 100, 100)
    e = Engine(w, EngineConfig(profile()), 1, 0)  # no decode pod: nothing can finish
    e.finish(max_time_s=20.0)
    r = e.records()
    assert not r.finished.any()
    assert (e.proxy.num_requests_running, e.proxy.num_requests_waiting) == (50, 50)
    assert np.isfinite(r.prefill_end_s).all() and np.isnan(r.first_token_s).all()
    e.set_desired(Pool.DECODE, 1, 20.0)
    e.finish()
    assert e.records().finished.all()


def test_disagg_ttft_is_decode_first_token() -> None:
    w = Workload("w", np.array([1.0]), np.array([1000]), np.array([3]))
    prof = profile(step=PolyModel(0.01, 1e-4, 0.0, 0.005, 0.0, 0.0))
    e = Engine(w, EngineConfig(prof, kv_link_bytes_per_s=1e6, kv_base_latency_s=0.002), 1, 1)
    e.finish()
    r = e.records()
    pf_end = 1.0 + (0.01 + 1e-4 * 256) * 3 + (0.01 + 1e-4 * 232)  # 1000 tokens in chunks of 256
    assert r.prefill_end_s[0] == pytest.approx(pf_end)
    assert r.kv_ready_s[0] == pytest.approx(pf_end + 1000 * 1000 / 1e6 + 0.002)
    assert r.first_token_s[0] == pytest.approx(r.kv_ready_s[0] + 0.005)
    assert r.last_token_s[0] == pytest.approx(r.kv_ready_s[0] + 0.015)
    assert r.itl_mean_s[0] == pytest.approx(0.005)
    pre, dec = e.pods(Pool.PREFILL)[0].counters, e.pods(Pool.DECODE)[0].counters
    assert pre.ttft.count == 1 and pre.ttft.sum == pytest.approx(pf_end - 1.0)
    assert dec.ttft.sum == pytest.approx(r.first_token_s[0] - pf_end)
    assert e.proxy.ttft.sum == pytest.approx(r.first_token_s[0] - 1.0)
    assert (pre.generation_tokens_total, dec.generation_tokens_total, dec.itl.count) == (1, 3, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "colocated"}, "mode"),
        ({"router": "random"}, "router"),
        ({"startup_jitter": "uniform:2"}, "startup_jitter"),
        ({"startup_jitter": "gauss:0.1"}, "startup_jitter"),
    ],
    ids=["mode", "router", "jitter-range", "jitter-kind"],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EngineConfig(profile(), **kwargs)


def test_bad_engine_inputs() -> None:
    w = Workload("w", np.array([0.0]), np.array([5000]), np.array([10]))
    with pytest.raises(ValueError, match="request 0 needs 5010 KV tokens"):
        Engine(w, EngineConfig(profile(cap=4000)), 1, 1)
    with pytest.raises(ValueError, match="agg"):
        Engine(workload(3, 0, 1.0, 10, 10), EngineConfig(profile(), mode="agg"), 1, 1)


# ------------------------------------------------------------------ property tests
@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Workload, EngineConfig, int, int, list[tuple[float, int, int]]]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    cap = draw(st.integers(330, 1500))
    mode = draw(st.sampled_from(["disagg", "agg"]))
    router = draw(st.sampled_from(["round-robin", "least-outstanding-tokens", "least-kv", "central-fcfs"]))
    seqs = draw(st.integers(1, 12))
    budget = draw(st.integers(seqs, 300))
    step = PolyModel(
        draw(st.floats(1e-3, 0.02)), draw(st.floats(0, 1e-4)), 0.0,
        draw(st.floats(1e-3, 0.02)), draw(st.floats(0, 1e-5)), draw(st.floats(0, 1e-3)),
    )  # fmt: skip
    if draw(st.booleans()):
        step = CurvedModel(step)
    cfg = EngineConfig(
        LatencyProfile("p", "prop", step, 1, 100, cap, seqs, budget), mode=mode, router=router, startup_s=0.5,
        reference=draw(st.booleans()),
    )  # fmt: skip
    changes = draw(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 1), st.integers(1, 3)), max_size=4))
    w = Workload("prop", np.cumsum(gaps), np.array(prompts), np.array(outs))
    return w, cfg, (0 if mode == "agg" else draw(st.integers(1, 2))), draw(st.integers(1, 2)), sorted(changes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants(sc: tuple[Workload, EngineConfig, int, int, list[tuple[float, int, int]]]) -> None:
    w, cfg, n_pre, n_dec, changes = sc
    e = Engine(w, cfg, n_pre, n_dec)
    max_kv = [0.0]

    # KV within capacity after every step formation: each instance's form_step (a plain attribute, so this works
    # on the mypyc-compiled engine too, whose methods cannot be replaced), on the pods there and those to come
    def check_formations(inst):  # type: ignore[no-untyped-def]
        form = inst.form_step

        def checked_form_step(now):  # type: ignore[no-untyped-def]
            end_s = form(now)
            assert 0 <= inst.used <= inst.cap
            max_kv[0] = max(max_kv[0], inst.used / inst.cap)
            return end_s

        inst.form_step = checked_form_step
        return inst

    cluster = e._cluster
    for inst in cluster.instances:
        check_formations(inst)
    make_instance = cluster._make_instance
    cluster._make_instance = lambda role, counters: check_formations(make_instance(role, counters))
    for t, which, reps in changes:
        pool = Pool.PREFILL if (which == 0 and cfg.mode == "disagg") else Pool.DECODE
        e.set_desired(pool, reps, t)
        for p in e.pods():
            assert p.counters.kv_cache_usage_perc <= 1.0
    e.finish()
    r = e.records()
    assert max_kv[0] <= 1.0
    # every request completes exactly once (scaling never goes below one pod per pool here)
    assert r.finished.all()
    assert e.proxy.request_success_total == len(w)
    assert e.proxy.generation_tokens_total == int(w.output_tokens.sum())
    assert e.proxy.itl.count == int((w.output_tokens - 1).sum())
    assert sum(p.counters.generation_tokens_total for p in e.pods(Pool.DECODE)) == int(w.output_tokens.sum())
    # causality
    assert np.all(r.prefill_start_s >= r.arrival_s)
    assert np.all(r.prefill_end_s > r.prefill_start_s)
    assert np.all(r.first_token_s >= r.kv_ready_s)
    assert np.all(r.last_token_s >= r.first_token_s)
    # no ITL below the step-time floor of a lone sequence with the smallest context it can have
    multi = w.output_tokens > 1
    floor = np.array([cfg.profile.step.decode_step_s(1, float(p) + 1) for p in w.prompt_tokens])
    assert np.all(r.itl_mean_s[multi] >= floor[multi] - 1e-12)
    assert np.all(r.itl_max_s[multi] >= r.itl_mean_s[multi] - 1e-12)
    assert np.all(np.isnan(r.itl_max_s[~multi]))
    lo = cfg.profile.step.decode_step_s(1, 2.0)
    first_bucket = int(np.searchsorted(np.asarray(e.proxy.itl.edges_s), lo, side="left"))
    assert e.proxy.itl.counts[:first_bucket].sum() == 0


def test_exact_tie_goes_to_the_same_pod_in_both_modes() -> None:
    """Two agg pods in lockstep (power-of-two step times, every arrival at t = 0, one sequence each) finish
    together; with a shared central-fcfs queue the next request must go to the same pod in both modes (found by
    hypothesis when the heap broke ties by push order)."""
    outs = np.ones(19, dtype=np.int64)
    outs[1] = 3
    w = Workload("tie", np.zeros(19), np.ones(19, dtype=np.int64), outs)
    step = PolyModel(0.015625, 0.0, 0.0, 0.015625, 0.0, 0.0)
    cfg = EngineConfig(LatencyProfile("p", "tie", step, 1, 100, 330, 1, 1), mode="agg", router="central-fcfs",
                       startup_s=0.5)  # fmt: skip
    engines = []
    for ref in (True, False):
        e = Engine(w, replace(cfg, reference=ref), 0, 2)
        e.finish()
        engines.append(e)
    assert set(engines[0].records().prefill_pod.tolist()) == {0, 1}  # both pods serve
    assert_same_records(*engines)


# Derandomized: the fast mode ends a segment at now + k·d while the reference adds d step by step, so the two
# clocks differ in the last bits. Two identical pods in lockstep (hypothesis likes all arrivals at t = 0) can then
# finish in a different order within one ulp and take a shared queue's next request the other way round; exact
# ties are taken in pod order in both modes. A fixed set of examples keeps CI from depending on a random draw
# landing on such an ulp-level tie; the named cases above cover realistic configurations with every seed.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(scenarios())
def test_fast_equals_reference_property(
    sc: tuple[Workload, EngineConfig, int, int, list[tuple[float, int, int]]],
) -> None:
    w, cfg, n_pre, n_dec, changes = sc
    engines = []
    for ref in (True, False):
        e = Engine(w, replace(cfg, reference=ref), n_pre, n_dec)
        for t, which, reps in changes:
            e.set_desired(Pool.PREFILL if (which == 0 and cfg.mode == "disagg") else Pool.DECODE, reps, t)
        e.finish()
        engines.append(e)
    assert_same_records(*engines)
    # bucket counts may differ only for gaps exactly on a bucket edge (hypothesis likes 0.01 s steps)
    ia, ib = engines[0].proxy.itl, engines[1].proxy.itl
    assert ia.count == ib.count and ia.sum == pytest.approx(ib.sum, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["disagg-preempt", "agg-scale", "disagg-itl-edges", "disagg-generic-model"])
def test_itl_gap_log_is_exact(name: str) -> None:
    """The compressed gap log (fast) expands to exactly the per-token gaps of the reference run."""
    c = CASES[name]
    logs = []
    for ref in (True, False):
        w = workload(150, 4, c.rate, 300, c.max_out)
        cfg = EngineConfig(
            profile(cap=c.cap, seqs=16, budget=128, step=c.step), mode=c.mode, router=c.router, reference=ref,
            record_itl_gaps=True,
        )  # fmt: skip
        e = Engine(w, cfg, 0 if c.mode == "agg" else 1, 2)
        e.finish()
        t, g, n = e.itl_gaps()
        assert n.sum() == e.proxy.itl.count == int((w.output_tokens - 1).sum())
        assert np.all(np.diff(t) >= 0) and np.all(g > 0)
        assert float((g * n).sum()) == pytest.approx(e.proxy.itl.sum, rel=1e-9)
        logs.append((np.repeat(t, n), np.repeat(g, n)))
    (ta, ga), (tb, gb) = logs
    np.testing.assert_allclose(np.sort(ga), np.sort(gb), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.sort(ta), np.sort(tb), rtol=0, atol=1e-9)


def test_itl_gaps_needs_opt_in() -> None:
    e = Engine(workload(3, 0, 1.0, 10, 10), EngineConfig(profile()), 1, 1)
    with pytest.raises(RuntimeError, match="record_itl_gaps"):
        e.itl_gaps()

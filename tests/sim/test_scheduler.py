"""sim.scheduler.InstanceScheduler on its own: the per-step API (form_step / commit_step -> StepOutcome), without the
cluster, the router or the event loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.core.latency import LatencyProfile, PolyModel
from sim.engine import Engine, EngineConfig
from sim.request import Request
from sim.scheduler import InstanceScheduler, SchedulerEvents
from sim.workload import Workload

STEP = PolyModel(0.01, 1e-4, 0.0, 0.005, 1e-6, 1e-4)


def profile(cap: int = 4000, seqs: int = 8, budget: int = 256) -> LatencyProfile:
    return LatencyProfile("test", "unit test", STEP, 1, 1000, cap, seqs, budget)


def run_alone(sched: InstanceScheduler, arrivals: list[tuple[float, Request]]) -> dict[int, list[float]]:
    """A minimal virtual-time driver: arrivals join the waiting queue, a step is formed at each boundary."""
    tokens: dict[int, list[float]] = {r.index: [] for _, r in arrivals}
    pending = sorted(arrivals, key=lambda a: a[0])
    now, end = 0.0, None
    while pending or end is not None:
        if end is not None and (not pending or end < pending[0][0]):
            now = end
            out = sched.commit_step()
            for r in out.emitted:
                tokens[r.index].append(out.end_s)
        else:
            now, req = pending.pop(0)
            sched.waiting.append(req)
            if end is not None:
                continue  # admitted at the next boundary
        while pending and pending[0][0] <= now:
            sched.waiting.append(pending.pop(0)[1])
        end = sched.form_step(now)
    return tokens


def test_per_step_outcomes_follow_the_rules() -> None:
    sched = InstanceScheduler("agg", profile(budget=256))
    a, b = Request(0, 300, 3), Request(1, 100, 2)
    sched.waiting.extend([a, b])
    end = sched.form_step(0.0)
    # chunked prefill: a takes the whole 256-token budget, b cannot start (no budget left)
    assert end == pytest.approx(STEP.prefill_step_s(256))
    out = sched.commit_step()
    assert out.admitted == [a] and out.emitted == [] and sched.waiting[0] is b
    sched.form_step(out.end_s)  # a's last 44 tokens and 212 of b's... b needs 100: both fit
    out = sched.commit_step()
    assert out.admitted == [b] and out.emitted == [a, b] and out.first_token == [a, b]
    assert a.first_token_s == b.first_token_s == out.end_s
    t = out.end_s
    end = sched.form_step(t)  # pure decode, batch 2, context (300 + 1) + (100 + 1)
    assert end == pytest.approx(t + STEP.decode_step_s(2, 402))
    out = sched.commit_step()
    assert out.emitted == [a, b] and out.finished == [b] and out.first_token == []
    out2 = (sched.form_step(out.end_s), sched.commit_step())[1]
    assert out2.finished == [a] and sched.kv_used_tokens == 0 and not sched.running
    assert sched.form_step(out2.end_s) is None and not sched.busy
    sched.flush_counters()
    c = sched.counters
    assert (c.generation_tokens_total, c.request_success_total, c.itl.count, int(c.itl.counts.sum())) == (5, 2, 3, 3)
    assert (c.ttft.count, c.num_requests_running, c.kv_cache_usage_perc) == (2, 0, 0.0)


def test_preemption_by_recompute_and_abort_free_kv() -> None:
    sched = InstanceScheduler("agg", profile(cap=40, seqs=4, budget=64))
    reqs = [Request(i, 10, 30) for i in range(3)]
    sched.waiting.extend(reqs)
    t = 0.0
    preempted = []
    for _ in range(8):
        t = sched.form_step(t)  # type: ignore[assignment]
        out = sched.commit_step()
        preempted += out.preempted
    assert preempted and preempted[0] is reqs[2]  # the most recently admitted goes first
    victim = preempted[0]
    assert victim.tokens_to_compute == victim.prompt_tokens + victim.tokens_emitted and not victim.decoding
    assert sched.kv_used_tokens <= 40
    used = sched.kv_used_tokens
    running = [r for r in sched.running if r.decoding]
    kv = running[0].kv_tokens_at_base + sched.steps_done - running[0].base_step
    assert sched.abort(running[0]) and sched.kv_used_tokens == used - kv
    assert sched.abort(victim) and victim not in sched.waiting
    assert not sched.abort(Request(9, 1, 1))


def test_roles_prefill_hands_off_decode_admits_kv() -> None:
    events: list[tuple[str, int, float]] = []

    class Log(SchedulerEvents):
        def prefill_finished(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
            events.append(("prefilled", req.index, t_s))

        def first_token(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
            events.append(("first", req.index, t_s))

    pre = InstanceScheduler("prefill", profile(), events=Log())
    r = Request(0, 300, 5)
    pre.waiting.append(r)
    t = 0.0
    while (end := pre.form_step(t)) is not None:
        out = pre.commit_step()
        t = end
    assert out.prefilled == [r] and events == [("prefilled", 0, t)] and pre.kv_used_tokens == 0
    dec = InstanceScheduler("decode", profile(cap=302), events=Log())
    arrival = dec.start_kv_transfer(r, t)
    assert arrival == pytest.approx(t + 300 * 1000 / 64e9 + 0.001)
    assert dec.inbound_kv_transfers == 1 and dec.inbound_kv_tokens == 300
    dec.finish_kv_transfer(r)
    dec.waiting.append(r)
    dec.form_step(arrival)
    out = dec.commit_step()
    assert out.admitted == [r] and out.first_token == [r] and dec.kv_used_tokens == 301  # prompt + 1 slot
    assert events[-1] == ("first", 0, out.end_s)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_bare_driver_reproduces_the_engine(seed: int) -> None:
    """The engine adds routing and events around the scheduler, no rule: one agg pod gives the same token times."""
    rng = np.random.default_rng(seed)
    n = 40
    arrivals = np.cumsum(rng.exponential(0.05, n))
    prompts, outs = rng.integers(1, 100, n), rng.integers(1, 150, n)
    prof = profile(cap=500, seqs=6, budget=128)
    sched = InstanceScheduler("agg", prof)
    tokens = run_alone(sched, [(float(a), Request(i, int(p), int(o))) for i, (a, p, o) in
                               enumerate(zip(arrivals, prompts, outs, strict=True))])  # fmt: skip
    e = Engine(Workload("w", arrivals, prompts, outs), EngineConfig(prof, mode="agg", reference=True), 0, 1)
    e.finish()
    r = e.records()
    assert r.preemptions.sum() > 0  # the case exercises preemption
    for i in range(n):
        assert len(tokens[i]) == outs[i]
        assert tokens[i][0] == pytest.approx(r.first_token_s[i], abs=1e-12)
        assert tokens[i][-1] == pytest.approx(r.last_token_s[i], abs=1e-12)
        if outs[i] > 1:
            assert max(np.diff(tokens[i])) == pytest.approx(r.itl_max_s[i], abs=1e-12)
    assert not math.isnan(sched.counters.itl.sum)


def test_bad_role_and_limits() -> None:
    with pytest.raises(ValueError, match="role"):
        InstanceScheduler("colocated", profile())
    with pytest.raises(ValueError, match="max_num_seqs"):
        InstanceScheduler("agg", profile(seqs=300, budget=256))


@pytest.mark.parametrize("seed", range(5))
def test_longest_step_since_any_segment_is_the_max_of_that_suffix(seed: int) -> None:
    """The fast mode's per-request ITL max reads the longest step of the segments committed since the request's
    admission from a monotonic stack: it must be the plain maximum of that suffix (ties and repeats included)."""
    sched = InstanceScheduler("decode", profile())
    rng = np.random.default_rng(seed)
    longest: list[float] = []
    for value in [*rng.choice([0.005, 0.006, 0.007, 0.008], size=120).tolist(), 0.009, 0.004, 0.009]:
        sched.note_segment_peak(value)
        longest.append(value)
        for since in range(len(longest) + 1):
            want = max(longest[since:], default=-math.inf)
            assert sched.longest_step_since(since) == want
    assert sched.segments_committed == len(longest)
    assert len(sched.segment_peaks_s) < len(longest)  # only the suffix maxima are kept


@pytest.mark.parametrize("role", ["agg", "prefill"])
def test_steps_charge_causal_attention_per_request(role: str) -> None:
    """Two prompts in one step attend within themselves (c1² + c2², not (c1 + c2)²); a prompt's second chunk attends
    to its first (c·(c + 2p))."""
    step = PolyModel(0.01, 1e-4, 1e-6, 0.005, 1e-6, 1e-4)
    prof = LatencyProfile("attn", "unit test", step, 1, 1000, 4000, 8, 256)
    sched = InstanceScheduler(role, prof)
    a, b = Request(0, 100, 10), Request(1, 60, 10)  # agg: they keep decoding beside the long prompt
    sched.waiting.extend([a, b])
    assert sched.form_step(0.0) == pytest.approx(0.01 + 1e-4 * 160 + 1e-6 * (100**2 + 60**2))
    t = sched.commit_step().end_s
    long = Request(2, 400, 2)  # 256 tokens now, then 144 after them
    sched.waiting.append(long)
    end = sched.form_step(t)
    busy = 0 if role == "prefill" else 2  # agg: a and b decode in the same steps
    first = step.mixed_step_s(256 - busy, busy, sched.decode_context_tokens, (256 - busy) ** 2)
    assert end - t == pytest.approx(first)
    t = sched.commit_step().end_s
    end = sched.form_step(t)
    done = 256 - busy
    rest = 400 - done
    assert end - t == pytest.approx(
        step.mixed_step_s(rest, busy, sched.decode_context_tokens, rest * (rest + 2 * done))
    )

"""Capacity model against closed forms (reference/queueing.md §4, §5, §8)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.capacity import (
    UNREACHABLE_TTFT_SLACK,
    Load,
    PrefillModel,
    batch_quantile,
    decode_batch,
    decode_replicas_needed,
    erlang_c,
    load_multiplier_matching,
    lognormal_tail_factor,
    predict_decode,
    predict_ttft_s,
    prefill_queue_service_s,
    prefill_replicas_needed,
    prefill_service_s,
    ttft_floor_s,
    wait_quantile_s,
)
from autoscaler.core.latency import LatencyProfile, PolyModel

# A Llama-3.1-8B-on-H100-like profile (BLIS-style coefficients; roofline KV read), independent of H2's files.
PROFILE = LatencyProfile(
    name="test-8b",
    source="tests",
    step=PolyModel(5.75e-3, 17.3e-6, 0.0, 5.75e-3, 3.9e-8, 6e-6),
    gpus_per_replica=1,
    kv_bytes_per_token=131072,
    kv_capacity_tokens=400_000,
    max_num_seqs=256,
    max_num_batched_tokens=8192,
)


def _decode_only(alpha_s: float, beta_s: float, gamma_s: float = 0.0) -> LatencyProfile:
    return LatencyProfile(
        "d", "t", PolyModel(0, 0, 0, alpha_s, gamma_s, beta_s), 1, 1, 10**12, max_num_seqs=10**6
    )


@pytest.mark.parametrize(
    ("servers", "erlangs", "expected"),
    [
        pytest.param(4, 3.2, 0.5964, id="M/M/4-rho0.8"),
        pytest.param(1, 0.7, 0.7, id="M/M/1-is-rho"),
        pytest.param(3, 3.0, 1.0, id="unstable"),
        pytest.param(5, 0.0, 0.0, id="no-load"),
    ],
)
def test_erlang_c(servers: int, erlangs: float, expected: float) -> None:
    assert erlang_c(servers, erlangs) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("p", "servers", "lam", "service", "var", "expected"),
    [
        # exact M/M/4 tail: ln(C/(1-p)) / (c*mu - lambda) = ln(0.5964/0.01)/0.8 = 5.110 (queueing.md §8)
        pytest.param(0.99, 4, 3.2, 1.0, 1.0, 5.110, id="M/M/4-p99"),
        pytest.param(0.99, 4, 3.2, 1.0, 1.5, 1.5 * 5.110, id="allen-cunneen-scales-linearly"),
        pytest.param(0.99, 4, 4.0, 1.0, 1.0, math.inf, id="unstable-is-inf"),
        pytest.param(0.99, 10, 0.5, 1.0, 1.0, 0.0, id="wait-prob-below-1pct"),
    ],
)
def test_wait_quantile(
    p: float, servers: int, lam: float, service: float, var: float, expected: float
) -> None:
    assert wait_quantile_s(p, servers, lam, service, var) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize(
    ("lam", "out", "alpha", "beta", "expected_n"),
    [
        pytest.param(10, 200, 6e-3, 0.05e-3, 13.333, id="queueing-md-worked-example"),
        pytest.param(1, 100, 10e-3, 0.0, 1.0, id="no-batch-cost"),
        pytest.param(5, 100, 5e-3, 1e-3, 2.5 / 0.5, id="half-loaded"),
    ],
)
def test_decode_fixed_point(lam: float, out: float, alpha: float, beta: float, expected_n: float) -> None:
    n = decode_batch(_decode_only(alpha, beta), lam * out, 0.0)
    assert n == pytest.approx(expected_n, rel=1e-3)
    # closed form N = lam*L*alpha / (1 - lam*L*beta)
    assert n == pytest.approx(lam * out * alpha / (1 - lam * out * beta), rel=1e-3)


def test_decode_fixed_point_overload_is_none() -> None:
    assert decode_batch(_decode_only(6e-3, 0.05e-3), 30_000, 0.0) is None  # lam*L*beta = 1.5 >= 1


def test_prefill_service_is_chunked() -> None:
    step = PROFILE.step
    assert prefill_service_s(PROFILE, 1000) == pytest.approx(step.prefill_step_s(1000))
    assert prefill_service_s(PROFILE, 8192 + 100) == pytest.approx(
        step.prefill_step_s(8192) + step.prefill_step_s(100)
    )


def test_prefill_sizing_is_smallest_meeting_target() -> None:
    load = Load(276.0, 1155.0, 211.0)  # Azure conv at rate-scale 50
    c = prefill_replicas_needed(PROFILE, load, 0.85, 0.99, 64)
    assert predict_ttft_s(PROFILE, load, c, 0.99) <= 0.85
    assert predict_ttft_s(PROFILE, load, c - 1, 0.99) > 0.85
    # at least the offered load in Erlangs, with the batched (full-chunk) service time
    assert c >= math.ceil(276 * prefill_queue_service_s(PROFILE, 1155))


@pytest.mark.parametrize(
    ("prompt", "step_tokens", "batched"),
    [
        pytest.param(1155.0, 8192.0, True, id="short-prompts-share-step-overhead"),
        pytest.param(8192.0, 8192.0, False, id="one-full-chunk-is-the-batch"),
        pytest.param(20000.0, 8192.0, True, id="long-prompt-chunks-attend-to-their-prefix"),
        pytest.param(1.0, 256.0, True, id="tiny-max-num-seqs-per-step"),
    ],
)
def test_prefill_queue_service_uses_full_chunks(prompt: float, step_tokens: float, batched: bool) -> None:
    """Packed steps of ``step_tokens`` (the chunk, or max_num_seqs prompts when they are tiny) whose attention is
    the prompts' own, L² each: step_tokens·L per step (this PolyModel has no attention term, so only the shared
    step overhead shows; tests/sim/test_prefill_drain.py checks the attention against the scheduler)."""
    alone = prefill_service_s(PROFILE, prompt)
    per_token = PROFILE.step.prefill_step_s(step_tokens, step_tokens * prompt) / step_tokens
    got = prefill_queue_service_s(PROFILE, prompt)
    assert got == pytest.approx(prompt * per_token)
    assert got <= alone * (1 + 1e-12)
    assert (got < alone * (1 - 1e-9)) is batched


def test_prefill_queue_service_charges_the_prompts_second_moment() -> None:
    """Attention per prompt is E[L²] = mean²·(1 + SCV): with an attention term, a spread-out mix costs more."""
    step = PolyModel(5.75e-3, 17.3e-6, 4.3e-10, 5.75e-3, 3.9e-8, 6e-6)
    profile = replace(PROFILE, step=step)
    even, spread = prefill_queue_service_s(profile, 4000, 0.0), prefill_queue_service_s(profile, 4000, 2.0)
    assert spread - even == pytest.approx(4.3e-10 * 4000 * 4000 * 2.0)


def test_decode_sizing_respects_caps() -> None:
    load = Load(276.0, 1155.0, 211.0)
    n = decode_replicas_needed(PROFILE, load, 0.0425, 0.99, 64)
    pred = predict_decode(PROFILE, load, n, 0.99)
    assert pred.tail_batch <= PROFILE.max_num_seqs and pred.kv_fraction <= 0.9 and pred.itl_s <= 0.0425
    worse = predict_decode(PROFILE, load, n - 1, 0.99)
    assert not (
        worse.mean_batch is not None
        and worse.tail_batch <= 256
        and worse.kv_fraction <= 0.9
        and worse.itl_s <= 0.0425
    )


@pytest.mark.parametrize(
    ("limit", "expected"),
    [pytest.param(3, 4, id="none-fits-returns-limit-plus-one"), pytest.param(64, 6, id="fits")],
)
def test_prefill_limit(limit: int, expected: int) -> None:
    assert prefill_replicas_needed(PROFILE, Load(276.0, 1155.0, 211.0), 0.85, 0.99, limit) == expected


def test_unreachable_target_sizes_for_the_floor_not_the_maximum() -> None:
    """A target below the tail prompt's own prefill cannot be met by any count: order what gets within 1 % of the
    no-queue floor (more pods would only be paid for), not the pool's maximum."""
    load = Load(40.0, 1155.0, 211.0)
    floor = ttft_floor_s(PROFILE, load, 0.99)
    assert predict_ttft_s(PROFILE, load, 10_000, 0.99) == pytest.approx(floor)
    c = prefill_replicas_needed(PROFILE, load, floor * 0.9, 0.99, 64)
    assert c < 64
    assert predict_ttft_s(PROFILE, load, c, 0.99) <= floor * (1 + UNREACHABLE_TTFT_SLACK)
    assert predict_ttft_s(PROFILE, load, c - 1, 0.99) > floor * (1 + UNREACHABLE_TTFT_SLACK)
    # a reachable target keeps its meaning: the smallest count meeting it, more than the floor's count
    reachable = prefill_replicas_needed(PROFILE, load, floor * 1.05, 0.99, 64)
    assert predict_ttft_s(PROFILE, load, reachable, 0.99) <= floor * 1.05
    assert reachable >= c
    # and a reachable target beyond the pool's maximum still says so
    assert prefill_replicas_needed(PROFILE, load, floor * 1.05, 0.99, c - 1) == c


def test_zero_load_needs_nothing() -> None:
    assert prefill_replicas_needed(PROFILE, Load(0, 1, 1), 1.0, 0.99, 8) == 0
    assert decode_replicas_needed(PROFILE, Load(0, 1, 1), 0.05, 0.99, 8) == 0


def test_batch_quantile_poisson_normal() -> None:
    assert batch_quantile(100, 0.99) == pytest.approx(100 + 2.3263 * 10, rel=1e-4)
    assert batch_quantile(0, 0.99) == 0


def test_load_multiplier_inverts_the_model() -> None:
    load = Load(200.0, 1155.0, 211.0)

    def predict(lo: Load, n: int) -> float:
        return predict_ttft_s(PROFILE, lo, n, 0.99, PrefillModel())

    target = predict(load.scaled(1.3), 8)
    assert load_multiplier_matching(predict, load, 8, target, 0.5, 3.0) == pytest.approx(1.3, rel=1e-3)
    assert load_multiplier_matching(predict, load, 8, 1e-6, 0.5, 3.0) == 0.5
    # an overloaded observation maps to the model's stability edge (the model says inf beyond it)
    edge = load_multiplier_matching(predict, load, 8, 1e6, 0.5, 3.0)
    assert math.isinf(predict(load.scaled(edge * 1.001), 8))
    assert edge == pytest.approx(8 / (200 * prefill_queue_service_s(PROFILE, 1155)), rel=1e-3)
    lo_profile = load_multiplier_matching(lambda lo, n: 0.0, load, 8, 1.0, 0.5, 3.0)
    assert lo_profile == 3.0  # a model that never reaches the observation saturates at the upper bound


@given(rate=st.floats(1, 500), prompt=st.floats(50, 8000), more=st.integers(1, 5))
def test_prefill_needs_monotone_in_rate(rate: float, prompt: float, more: int) -> None:
    base = prefill_replicas_needed(PROFILE, Load(rate, prompt, 100), 1.0, 0.99, 256)
    assert prefill_replicas_needed(PROFILE, Load(rate * (1 + more / 10), prompt, 100), 1.0, 0.99, 256) >= base


@given(rate=st.floats(1, 500), out=st.floats(1, 1000), more=st.integers(1, 5))
def test_decode_needs_monotone_in_rate(rate: float, out: float, more: int) -> None:
    base = decode_replicas_needed(PROFILE, Load(rate, 1000, out), 0.05, 0.99, 256)
    assert decode_replicas_needed(PROFILE, Load(rate * (1 + more / 10), 1000, out), 0.05, 0.99, 256) >= base


def test_capacity_model_charges_the_profiles_host_overheads() -> None:
    """The policy plans on the model the simulator runs: α0 + α1·prompt + α2 on TTFT, α2 on every ITL gap."""
    from dataclasses import replace

    from autoscaler.core.capacity import Load, predict_itl_s, predict_ttft_s
    from autoscaler.core.latency import HostOverheads
    from autoscaler.profiles import load_profile

    base = replace(load_profile("llama-3.1-8b-h100-tp1"), host=HostOverheads())
    host = HostOverheads(request_s=0.01, request_per_prompt_token_s=2e-6, output_token_s=0.003)
    with_host = replace(base, host=host)
    load = Load(request_rate_per_s=20.0, mean_prompt_tokens=1000.0, mean_output_tokens=150.0)
    tail_prompt = 1000.0 * 3.0  # PrefillModel's prompt_tail_factor
    assert predict_ttft_s(with_host, load, 3, 0.99) == pytest.approx(
        predict_ttft_s(base, load, 3, 0.99) + 0.01 + 2e-6 * tail_prompt + 0.003
    )
    assert predict_itl_s(with_host, load, 2, 0.99) == pytest.approx(predict_itl_s(base, load, 2, 0.99) + 0.003)


def test_tail_prompt_from_the_load_or_a_lognormal_quantile() -> None:
    """The TTFT's own-service term uses the load's tail prompt when it carries one, else the model's factor, else
    the lognormal quantile for the SCV."""
    load = Load(20.0, 1000.0, 150.0, prompt_scv=1.7)
    base = predict_ttft_s(PROFILE, load, 4, 0.99, PrefillModel(prompt_tail_factor=1.0))
    own = prefill_service_s(PROFILE, 1000.0)
    for model, tail in (
        (PrefillModel(prompt_tail_factor=3.0), 3000.0),
        (PrefillModel(prompt_tail_factor=None), 1000.0 * lognormal_tail_factor(1.7, 0.99)),
    ):
        got = predict_ttft_s(PROFILE, load, 4, 0.99, model)
        assert got == pytest.approx(base - own + prefill_service_s(PROFILE, tail))
    known = replace(load, tail_prompt_tokens=7000.0)
    assert predict_ttft_s(PROFILE, known, 4, 0.99) == pytest.approx(base - own + prefill_service_s(PROFILE, 7000.0))
    assert lognormal_tail_factor(1.0, 0.99) == pytest.approx(4.90, abs=0.01)
    assert lognormal_tail_factor(0.0, 0.99) == 1.0

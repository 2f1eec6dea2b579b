"""The prompt-length mix read from vLLM's prompt-token histogram buckets, against known mixes' exact statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.core.buckets import PROMPT_TOKENS_BUCKETS, buckets_1_2_5
from autoscaler.core.prompt_mix import overflow_cap_tokens, prompt_mix_from_buckets


def _buckets(lengths: np.ndarray, edges: tuple[float, ...] = PROMPT_TOKENS_BUCKETS) -> list[tuple[float, float]]:
    """Cumulative ``le`` counts of ``lengths``, as a vLLM worker's histogram holds them (le: value <= bound)."""
    idx = np.searchsorted(np.asarray(edges), lengths, side="left")
    counts = np.cumsum(np.bincount(idx, minlength=len(edges) + 1))
    return list(zip([*edges, math.inf], counts.astype(float).tolist(), strict=True))


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, n: int = 20_000) -> np.ndarray:
    x = rng.lognormal(math.log(mean) - sigma * sigma / 2, sigma, n)
    return np.clip(np.round(x), 1, 131072)


# (mix, bounds on the estimate / truth of (1 + SCV), of the p99). The bounds are the estimator's measured bias on
# 200,000-prompt samples (module docstring) widened by this sample size's noise, not fitted to pass.
CASES = [
    ("lognormal mean 300 sigma 1", lambda r: _lognormal(r, 300, 1.0), (0.95, 1.20), (0.90, 1.20)),
    ("lognormal mean 2000 sigma 1", lambda r: _lognormal(r, 2000, 1.0), (0.95, 1.20), (0.95, 1.30)),
    ("lognormal mean 7000 sigma 1", lambda r: _lognormal(r, 7000, 1.0), (0.90, 1.15), (0.95, 1.20)),
    ("lognormal mean 2000 sigma 0.5", lambda r: _lognormal(r, 2000, 0.5), (1.0, 1.20), (1.0, 1.35)),
    ("exponential mean 1000", lambda r: np.clip(np.round(r.exponential(1000, 20_000)), 1, None), (0.95, 1.20),
     (0.95, 1.15)),
    # p50 30k, 2.3 % above the last edge (100k): the p99 lies in the +Inf bucket (overflow_cap_tokens)
    ("very long, clipped at 128k", lambda r: _lognormal(r, 36000, 0.6), (0.95, 1.10), (0.93, 1.08)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "scv_bounds", "tail_bounds"), CASES, ids=[c[0] for c in CASES])
def test_known_mixes_read_within_the_measured_bias(name: str, make, scv_bounds, tail_bounds) -> None:  # type: ignore[no-untyped-def]
    lengths = make(np.random.default_rng(7))
    mix = prompt_mix_from_buckets(_buckets(lengths), 0.99)
    assert mix is not None
    true_work = 1.0 + lengths.var() / lengths.mean() ** 2
    assert scv_bounds[0] <= (1.0 + mix.scv) / true_work <= scv_bounds[1], (name, mix, true_work)
    assert 0.85 <= mix.mean_tokens / lengths.mean() <= 1.15, (name, mix.mean_tokens, lengths.mean())
    true_tail = float(np.quantile(lengths, 0.99))
    assert tail_bounds[0] <= mix.tail_tokens / true_tail <= tail_bounds[1], (name, mix.tail_tokens, true_tail)
    assert mix.requests_per_s == len(lengths)


def test_a_wider_mix_reads_a_larger_scv_and_tail_at_the_same_mean() -> None:
    rng = np.random.default_rng(3)
    narrow = prompt_mix_from_buckets(_buckets(_lognormal(rng, 2000, 0.5)), 0.99)
    wide = prompt_mix_from_buckets(_buckets(_lognormal(rng, 2000, 1.2)), 0.99)
    assert narrow is not None and wide is not None
    assert wide.scv > 3 * narrow.scv and wide.tail_factor > 1.5 * narrow.tail_factor


def test_rates_read_like_counts_and_order_does_not_matter() -> None:
    lengths = _lognormal(np.random.default_rng(1), 1500, 1.0)
    counts = _buckets(lengths)
    rates = [(le, c / 60.0) for le, c in reversed(counts)]
    a, b = prompt_mix_from_buckets(counts, 0.9), prompt_mix_from_buckets(rates, 0.9)
    assert a is not None and b is not None
    assert b.scv == pytest.approx(a.scv) and b.tail_tokens == pytest.approx(a.tail_tokens)
    assert b.requests_per_s == pytest.approx(len(lengths) / 60.0)


def test_small_edges_and_a_point_mass() -> None:
    edges = tuple(float(b) for b in buckets_1_2_5(512))
    mix = prompt_mix_from_buckets(_buckets(np.full(100, 150.0), edges), 0.5)  # all in (100, 200]
    assert mix is not None
    assert 100 < mix.mean_tokens <= 200 and mix.scv < 0.05 and 100 < mix.tail_tokens <= 200


def test_the_overflow_bucket_ends_between_two_1_2_5_edges() -> None:
    assert overflow_cap_tokens(100000.0) == pytest.approx(100000 * math.sqrt(2))  # 141k: a 128k model is below
    assert overflow_cap_tokens(20000.0) == pytest.approx(20000 * math.sqrt(2.5))
    assert overflow_cap_tokens(300.0) == pytest.approx(300 * math.sqrt(2))  # not a 1-2-5 edge: twice it
    only_over = prompt_mix_from_buckets([(100000.0, 0.0), (math.inf, 4.0)], 0.99)
    assert only_over is not None and 100000 < only_over.tail_tokens <= overflow_cap_tokens(100000.0)


def test_nothing_observed_is_none_and_bad_buckets_are_named() -> None:
    assert prompt_mix_from_buckets([], 0.99) is None
    assert prompt_mix_from_buckets([(10.0, 0.0), (math.inf, 0.0)], 0.99) is None
    assert prompt_mix_from_buckets([(math.inf, 5.0)], 0.99) is None
    with pytest.raises(ValueError, match=r"\+inf"):
        prompt_mix_from_buckets([(10.0, 1.0), (20.0, 2.0)], 0.99)
    with pytest.raises(ValueError, match="finite"):
        prompt_mix_from_buckets([(10.0, math.nan), (math.inf, 2.0)], 0.99)
    with pytest.raises(ValueError, match="percentile"):
        prompt_mix_from_buckets([(10.0, 1.0), (math.inf, 2.0)], 1.0)


def test_a_decreasing_cumulative_count_is_carried_forward() -> None:
    # a counter reset seen by one pod's rate: the sum by le can dip; it must not produce negative buckets
    mix = prompt_mix_from_buckets([(100.0, 5.0), (200.0, 4.0), (500.0, 10.0), (math.inf, 10.0)], 0.99)
    assert mix is not None and mix.requests_per_s == 10.0 and 200 < mix.tail_tokens <= 500

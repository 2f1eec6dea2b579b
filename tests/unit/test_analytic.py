"""sim.analytic against the test-vector table of queueing.md §8 and exact high-precision values."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from autoscaler.core.latency import PolyModel
from sim.analytic import (
    allen_cunneen_mean_wait,
    decode_fixed_point,
    decode_fixed_point_model,
    distserve_avg_ttft,
    erlang_b,
    erlang_c,
    kingman_mean_wait,
    md1_mean_wait,
    md1_wait_quantile,
    mg1_mean_wait,
    mg1_response_distribution,
    mg1_wait_distribution,
    mmc_mean_wait,
    mmc_min_servers,
    mmc_wait_quantile,
    mmc_wait_tail,
    prefill_service_times_s,
    prefill_ttft_distribution,
)

S2 = math.log(3.0)
LOGNORMAL_CS2_2 = stats.lognorm(s=math.sqrt(S2), scale=math.exp(-S2 / 2))  # mean 1, c_s² = 2


@pytest.fixture(scope="module")
def md1() -> object:
    return mg1_wait_distribution(0.7, 1.0)


@pytest.fixture(scope="module")
def lognormal_wait() -> object:
    return mg1_wait_distribution(0.8, LOGNORMAL_CS2_2)


@pytest.mark.parametrize(
    ("name", "value", "expected", "rel"),
    [
        pytest.param("md1-mean", lambda: md1_mean_wait(0.7, 1.0), 1.1667, 1e-4, id="md1-pk-mean"),
        pytest.param("md1-ttft", lambda: distserve_avg_ttft(0.7, 1.0), 2.1667, 1e-4, id="distserve-ttft"),
        pytest.param("mg1-ln", lambda: mg1_mean_wait(0.8, 1.0, 2.0), 6.000, 1e-6, id="mg1-lognormal-pk"),
        pytest.param("erlang-c", lambda: erlang_c(4, 3.2), 0.5964, 1e-4, id="mm4-erlang-c"),
        pytest.param("mmc-mean", lambda: mmc_mean_wait(3.2, 1.0, 4), 0.7455, 1e-4, id="mm4-mean"),
        pytest.param("mmc-p99", lambda: mmc_wait_quantile(3.2, 1.0, 4, 0.99), 5.110, 1e-3, id="mm4-p99"),
        pytest.param("fp-n", lambda: decode_fixed_point(10, 200, 0.006, 0.00005).running_seqs, 13.33, 1e-3,
                     id="decode-fixed-point-N"),
        pytest.param("fp-itl", lambda: decode_fixed_point(10, 200, 0.006, 0.00005).itl_s, 6.67e-3, 1e-3,
                     id="decode-fixed-point-ITL"),
        pytest.param("kingman", lambda: kingman_mean_wait(0.7, 1.0, 4.0, 0.0), 4.67, 1e-3, id="kingman"),
        pytest.param("allen-cunneen", lambda: allen_cunneen_mean_wait(3.2, 1.0, 4, 2.0, 1.0), 1.118, 1e-3,
                     id="allen-cunneen"),
    ],
)
def test_closed_form_vectors(name: str, value, expected: float, rel: float) -> None:  # type: ignore[no-untyped-def]
    assert value() == pytest.approx(expected, rel=rel)


def _erlang_md1_quantile(p: str, lam: str = "0.7") -> float:
    """Erlang's exact M/D/1 law with D = 1, in 60-digit decimal arithmetic (the float64 sum is unstable)."""
    getcontext().prec = 60
    lam_d, p_d = Decimal(lam), Decimal(p)

    def cdf(t: Decimal) -> Decimal:
        total = (lam_d * t).exp()  # the k = 0 term: x⁰/0!·e^{−x} with x = −λt (Decimal refuses 0**0 at t = 0)
        for k in range(1, int(t) + 1):
            x = lam_d * (k - t)
            total += x**k / math.factorial(k) * (-x).exp()
        return (1 - lam_d) * total

    lo, hi = Decimal(0), Decimal(60)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p_d else (lo, mid)
    return float(lo)


@pytest.mark.parametrize(
    ("p", "table"),
    [pytest.param(0.5, 0.730, id="p50"), pytest.param(0.9, 3.077, id="p90"), pytest.param(0.99, 6.485, id="p99")],
)
def test_md1_percentiles_match_erlang(md1, p: float, table: float) -> None:  # type: ignore[no-untyped-def]
    exact = _erlang_md1_quantile(str(p))
    assert exact == pytest.approx(table, abs=6e-4)  # the table is right
    assert md1.quantile(p) == pytest.approx(exact, rel=0.003)
    assert md1.atom_zero == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("p", "expected"),
    [pytest.param(0.5, 2.85, id="p50"), pytest.param(0.9, 16.26, id="p90"), pytest.param(0.99, 38.84, id="p99")],
)
def test_lognormal_benes_percentiles(lognormal_wait, p: float, expected: float) -> None:  # type: ignore[no-untyped-def]
    assert lognormal_wait.quantile(p) == pytest.approx(expected, rel=0.01)


def test_benes_means_match_pk(md1, lognormal_wait) -> None:  # type: ignore[no-untyped-def]
    assert md1.mean() == pytest.approx(1.1667, rel=0.003)
    assert lognormal_wait.mean() == pytest.approx(6.0, rel=0.01)


def test_benes_exponential_service_is_mm1() -> None:
    """M/M/1 is M/G/1 with exponential service: P(Wq > t) = ρ e^{−(μ−λ)t}."""
    d = mg1_wait_distribution(0.6, stats.expon(), n_cells=2**18)
    for p in (0.5, 0.9, 0.99):
        assert d.quantile(p) == pytest.approx(mmc_wait_quantile(0.6, 1.0, 1, p), rel=0.003)


def test_benes_from_samples_matches_distribution() -> None:
    rng = np.random.default_rng(0)
    samples = LOGNORMAL_CS2_2.rvs(size=400_000, random_state=rng)
    d = mg1_wait_distribution(0.5, samples, n_cells=2**18)
    exact = mg1_wait_distribution(0.5, LOGNORMAL_CS2_2, n_cells=2**18)
    assert d.quantile(0.99) == pytest.approx(exact.quantile(0.99), rel=0.03)


def test_response_time_md1_is_wait_plus_d(md1) -> None:  # type: ignore[no-untyped-def]
    r = mg1_response_distribution(0.7, 1.0)
    for p in (0.5, 0.9, 0.99):
        assert r.quantile(p) == pytest.approx(md1.quantile(p) + 1.0, rel=0.003)
    assert r.mean() == pytest.approx(2.1667, rel=0.003)


def test_md1_quantile_wrapper() -> None:
    assert md1_wait_quantile(0.7, 1.0, 0.2) == 0.0  # below the atom P(Wq = 0) = 0.3
    assert md1_wait_quantile(0.35, 2.0, 0.99) == pytest.approx(2.0 * _erlang_md1_quantile("0.99"), rel=0.003)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        pytest.param(lambda: md1_mean_wait(1.0, 1.0), "unstable", id="md1-rho-1"),
        pytest.param(lambda: mg1_wait_distribution(1.2, 1.0), "unstable", id="benes-overload"),
        pytest.param(lambda: erlang_c(4, 4.0), "unstable", id="erlang-c-overload"),
        pytest.param(lambda: decode_fixed_point(10, 200, 0.006, 0.0005), "unstable decode", id="decode-unstable"),
        pytest.param(lambda: decode_fixed_point(10, 200, 0.006, 0.00005, max_num_seqs=8), "max_num_seqs",
                     id="decode-max-seqs"),
        pytest.param(lambda: decode_fixed_point(10, 200, 0.006, 0.00005, 0.0, 1000.0, kv_capacity_tokens=5000),
                     "KV tokens", id="decode-kv"),
        pytest.param(lambda: decode_fixed_point_model(PolyModel(0, 0, 0, 0.006, 0, 0.005), 10, 200, 0.0),
                     "unstable decode", id="model-unstable"),
    ],
)
def test_stability_errors(call, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=fragment):
        call()


def test_erlang_b_recursion_large_c() -> None:
    # Factorials overflow float64 beyond c = 170; the recursion does not.
    c = erlang_c(1000, 950.0)
    assert 0 < c < 1
    assert erlang_b(1, 1.0) == pytest.approx(0.5)


def test_mmc_tail_and_sizing() -> None:
    assert mmc_wait_tail(3.2, 1.0, 4, 0.0) == pytest.approx(0.5964, rel=1e-3)
    t99 = mmc_wait_quantile(3.2, 1.0, 4, 0.99)
    assert mmc_wait_tail(3.2, 1.0, 4, t99) == pytest.approx(0.01, rel=1e-9)
    c = mmc_min_servers(3.2, 1.0, 0.99, 1.0)
    assert mmc_wait_quantile(3.2, 1.0, c, 0.99) <= 1.0 < mmc_wait_quantile(3.2, 1.0, c - 1, 0.99)


def test_fixed_point_model_matches_closed_form_for_poly() -> None:
    model = PolyModel(0.0, 0.0, 0.0, 0.00575, 3.91e-8, 6.0e-6)
    closed = decode_fixed_point(20, 300, 0.00575, 6.0e-6, 3.91e-8, 1500.0)
    numeric = decode_fixed_point_model(model, 20, 300, 1500.0)
    assert numeric.running_seqs == pytest.approx(closed.running_seqs, rel=1e-6)
    assert numeric.itl_s == pytest.approx(closed.itl_s, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(lam1=st.floats(0.05, 0.9), dlam=st.floats(0.001, 0.09), c=st.integers(1, 16))
def test_more_load_never_less_wait(lam1: float, dlam: float, c: int) -> None:
    lam2 = min(lam1 + dlam, 0.95)
    assert mmc_mean_wait(lam2 * c, 1.0, c) >= mmc_mean_wait(lam1 * c, 1.0, c)
    assert mmc_wait_quantile(lam2 * c, 1.0, c, 0.99) >= mmc_wait_quantile(lam1 * c, 1.0, c, 0.99)
    assert erlang_c(c + 1, lam1 * c) <= erlang_c(c, lam1 * c)  # more servers, less waiting


@settings(max_examples=40, deadline=None)
@given(lam=st.floats(0.1, 50), out=st.floats(10, 2000), alpha=st.floats(0.001, 0.02),
       beta=st.floats(1e-6, 1e-4))
def test_fixed_point_satisfies_littles_law(lam: float, out: float, alpha: float, beta: float) -> None:
    try:
        op = decode_fixed_point(lam, out, alpha, beta)
    except ValueError:
        assert lam * out * beta >= 1
        return
    assert op.running_seqs == pytest.approx(lam * out * op.itl_s, rel=1e-9)


def test_prefill_service_times_match_scalar_helper() -> None:
    from autoscaler.core.latency import LatencyProfile, prefill_time_s

    profile = LatencyProfile("t", "test", PolyModel(0.00575, 17.3e-6, 2.82e-10, 0.00575, 3.91e-8, 6e-6), 1,
                             131072, 400_000, 256, 8192)
    prompts = np.array([1, 100, 8192, 8193, 20000, 100, 50_000])
    vec = prefill_service_times_s(profile, prompts)
    assert vec == pytest.approx([prefill_time_s(profile, int(p)) for p in prompts], rel=1e-12)
    # TTFT oracle: constant prompts make it M/D/1 plus D.
    d = prefill_time_s(profile, 2000)
    ttft = prefill_ttft_distribution(profile, 0.7 / d, np.full(10, 2000))
    assert ttft.quantile(0.99) == pytest.approx(d * (1 + _erlang_md1_quantile("0.99")), rel=0.003)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0, 2.5, 6.485, 20.0])
def test_md1_cdf_matches_erlang_formula(md1, t: float) -> None:  # type: ignore[no-untyped-def]

    getcontext().prec = 60
    lam, td = Decimal("0.7"), Decimal(str(t))
    exact = (1 - lam) * ((lam * td).exp() + sum(
        (lam * (k - td)) ** k / math.factorial(k) * (-(lam * (k - td))).exp() for k in range(1, int(td) + 1)
    ))
    assert md1.cdf_at(t) == pytest.approx(float(exact), abs=2e-4)
    if t == 2.5:
        from sim.analytic import md1_wait_cdf

        assert md1_wait_cdf(0.7, 1.0, t) == md1.cdf_at(t)

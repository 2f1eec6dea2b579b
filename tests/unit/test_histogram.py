"""histogram_quantile against hand-computed Prometheus answers, plus invariants.

Expected values are worked out by hand from promql/quantile.go's rules (rank = q x total, linear interpolation
inside the bucket that reaches the rank); the integration test compares with the real Prometheus server.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S
from autoscaler.core.histogram import bucket_counts_to_cumulative, histogram_quantile

INF = math.inf
B4 = (0.1, 0.5, 1.0, INF)

# (id, q, upper bounds, cumulative counts, expected)
CASES = [
    ("middle-bucket-interpolation", 0.5, B4, (10, 30, 40, 40), 0.1 + 0.4 * (10 / 20)),
    ("lowest-bucket-from-zero", 0.1, B4, (10, 30, 40, 40), 0.1 * (4 / 10)),
    ("lowest-bucket-upper-edge", 0.25, B4, (10, 30, 40, 40), 0.1),
    ("q1-lands-on-last-finite-edge", 1.0, B4, (10, 30, 40, 40), 1.0),
    ("in-inf-bucket-returns-highest-finite", 0.9, B4, (10, 30, 40, 50), 1.0),
    ("q1-with-inf-observations", 1.0, B4, (10, 30, 40, 50), 1.0),
    ("q0-nonempty-lowest-bucket", 0.0, B4, (10, 30, 40, 40), 0.0),
    ("q0-empty-lowest-bucket-is-nan", 0.0, B4, (0, 30, 40, 40), math.nan),
    ("prometheus-testdata-shape", 0.5, (0.1, 0.2, INF), (5, 7, 12), 0.1 + 0.1 * (1 / 2)),
    (
        "rates-not-counts",
        0.99,
        (0.01, 0.025, 0.05, INF),
        (0.5, 1.25, 1.5, 1.5),
        0.025 + 0.025 * (0.235 / 0.25),
    ),
    ("lowest-bound-negative-returns-bound", 0.1, (-1.0, 0.0, 1.0, INF), (5, 10, 20, 20), -1.0),
    ("lowest-bound-zero-returns-zero", 0.1, (0.0, 1.0, INF), (5, 10, 10), 0.0),
    ("negative-bounds-interpolate", 0.5, (-1.0, 0.0, 1.0, INF), (5, 10, 20, 20), -1.0 + 1.0 * (5 / 5)),
    ("unsorted-input-is-sorted", 0.5, (INF, 0.5, 0.1, 1.0), (40, 30, 10, 40), 0.3),
    ("duplicate-bounds-coalesced", 0.5, (0.1, 0.1, INF), (5, 5, 20), 0.1),
    ("non-monotonic-envelope", 0.75, (1.0, 2.0, 3.0, INF), (10, 5, 20, 20), 2.0 + 1.0 * (5 / 10)),
    ("non-monotonic-prev-not-lowered", 0.5, (1.0, 2.0, 3.0, INF), (10, 5, 20, 20), 1.0),
    ("tiny-float-delta-ignored", 1.0, (1.0, 2.0, INF), (1.0, 1.0 + 1e-12, 1.0 + 1e-12), 1.0),
    ("real-delta-kept", 1.0, (1.0, 2.0, INF), (1.0, 1.0 + 1e-6, 1.0 + 1e-6), 2.0),
    ("only-inf-bucket-is-nan", 0.5, (INF,), (10,), math.nan),
    ("no-observations-is-none", 0.5, B4, (0, 0, 0, 0), None),
    ("no-buckets-is-none", 0.5, (), (), None),
    ("q-negative-is-minus-inf", -0.1, B4, (10, 30, 40, 40), -INF),
    ("q-above-one-is-plus-inf", 1.1, B4, (10, 30, 40, 40), INF),
    ("q-nan-is-nan", math.nan, B4, (10, 30, 40, 40), math.nan),
    ("q-checked-before-emptiness", 2.0, B4, (0, 0, 0, 0), INF),
]


@pytest.mark.parametrize(
    ("q", "bounds", "counts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_histogram_quantile_cases(
    q: float, bounds: tuple[float, ...], counts: tuple[float, ...], expected: float | None
) -> None:
    got = histogram_quantile(q, bounds, counts)
    if expected is None:
        assert got is None
    elif math.isnan(expected):
        assert got is not None and math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


BAD = [
    ("length-mismatch", (0.1, INF), (1.0,), "2 upper bounds but 1 counts"),
    ("nan-bound", (math.nan, INF), (1.0, 2.0), r"upper_bounds_s\[0\] is NaN"),
    ("no-inf-bucket", (0.1, 0.5), (1.0, 2.0), "highest upper bound must be \\+inf"),
    ("negative-count", (0.1, INF), (-1.0, 2.0), r"cumulative_counts\[0\]"),
    ("nan-count", (0.1, INF), (1.0, math.nan), r"cumulative_counts\[1\]"),
]


@pytest.mark.parametrize(("bounds", "counts", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_histogram_quantile_rejects_malformed(
    bounds: tuple[float, ...], counts: tuple[float, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        histogram_quantile(0.5, bounds, counts)


def test_accepts_numpy_arrays() -> None:
    bounds = np.array([*TTFT_BUCKETS_S, INF])
    counts = np.cumsum(np.ones(len(bounds), dtype=np.int64))
    got = histogram_quantile(0.5, bounds, counts)
    assert got == pytest.approx(0.75 + (1.0 - 0.75) * 0.5)  # rank 11.5 of 23: half-way through (0.75, 1.0]


CUMULATIVE = [
    ("running-sum", [1, 0, 2, 3], [1.0, 1.0, 3.0, 6.0]),
    ("empty", [], []),
    ("floats", [0.5, 0.25], [0.5, 0.75]),
]


@pytest.mark.parametrize(("counts", "expected"), [c[1:] for c in CUMULATIVE], ids=[c[0] for c in CUMULATIVE])
def test_bucket_counts_to_cumulative(counts: list[float], expected: list[float]) -> None:
    assert bucket_counts_to_cumulative(counts) == expected


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_bucket_counts_to_cumulative_rejects(bad: float) -> None:
    with pytest.raises(ValueError, match=r"bucket_counts\[1\]"):
        bucket_counts_to_cumulative([1.0, bad])


EDGES = st.sampled_from([TTFT_BUCKETS_S, ITL_BUCKETS_S])


@st.composite
def histograms(draw: st.DrawFn) -> tuple[tuple[float, ...], list[float]]:
    edges = draw(EDGES)
    per_bucket = draw(st.lists(st.integers(0, 1000), min_size=len(edges) + 1, max_size=len(edges) + 1))
    if sum(per_bucket) == 0:
        per_bucket[draw(st.integers(0, len(edges)))] = 1
    return (*edges, INF), bucket_counts_to_cumulative(per_bucket)


QS = st.floats(min_value=1e-6, max_value=1.0)


@settings(max_examples=200, deadline=None)
@given(histograms(), QS, QS)
def test_monotone_in_q(hist: tuple[tuple[float, ...], list[float]], q1: float, q2: float) -> None:
    bounds, counts = hist
    lo, hi = sorted((q1, q2))
    a, b = histogram_quantile(lo, bounds, counts), histogram_quantile(hi, bounds, counts)
    assert a is not None and b is not None
    assert a <= b * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(histograms(), QS)
def test_answer_lies_in_the_bucket_that_reaches_the_rank(
    hist: tuple[tuple[float, ...], list[float]], q: float
) -> None:
    bounds, counts = hist
    got = histogram_quantile(q, bounds, counts)
    assert got is not None
    rank = q * counts[-1]
    i = next(j for j, c in enumerate(counts) if c >= rank)
    if i == len(bounds) - 1:
        assert got == bounds[-2]
    else:
        lower = bounds[i - 1] if i > 0 else 0.0
        assert lower <= got <= bounds[i]


@settings(max_examples=200, deadline=None)
@given(histograms(), QS, st.floats(min_value=1e-3, max_value=1e3))
def test_scaling_counts_changes_nothing(
    hist: tuple[tuple[float, ...], list[float]], q: float, factor: float
) -> None:
    """rate() divides every bucket by the same window, so quantiles over counts and rates must agree."""
    bounds, counts = hist
    a = histogram_quantile(q, bounds, counts)
    b = histogram_quantile(q, bounds, [c * factor for c in counts])
    assert a is not None and b is not None
    assert b == pytest.approx(a, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-4, max_value=3000.0), min_size=1, max_size=300),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_estimate_in_same_bucket_as_exact_sample_quantile(samples: list[float], q: float) -> None:
    """Binning real samples with le semantics, the estimate stays inside the bucket of the exact quantile."""
    edges = np.array(TTFT_BUCKETS_S)
    per_bucket = np.bincount(np.searchsorted(edges, samples, side="left"), minlength=len(edges) + 1)
    got = histogram_quantile(q, (*TTFT_BUCKETS_S, INF), bucket_counts_to_cumulative(per_bucket.tolist()))
    assert got is not None
    exact = sorted(samples)[max(math.ceil(q * len(samples)) - 1, 0)]  # smallest x with F(x) >= q
    j = int(np.searchsorted(edges, exact, side="left"))
    if j == len(edges):
        assert got == TTFT_BUCKETS_S[-1]
    else:
        lower = TTFT_BUCKETS_S[j - 1] if j > 0 else 0.0
        assert lower <= got <= TTFT_BUCKETS_S[j]

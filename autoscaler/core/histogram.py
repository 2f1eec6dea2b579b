"""PromQL ``histogram_quantile`` over classic (``le``-bucketed) histograms, with Prometheus' exact semantics.

The simulator must read percentiles as coarsely as a real cluster does, so this follows the algorithm of
Prometheus' ``promql/quantile.go`` (``bucketQuantile``, ``coalesceBuckets``,
``ensureMonotonicAndIgnoreSmallDeltas`` and ``util/almost.Equal``; Prometheus 3.x), re-expressed here:

* buckets are sorted by upper bound and buckets with the same bound are merged (counts added);
* relative differences between successive cumulative counts below 1e-12 are float noise and are ignored in
  either direction; remaining decreases are removed by carrying the last accepted count forward;
* rank = q x total; the first bucket whose cumulative count reaches the rank holds the quantile, which is
  interpolated linearly inside it; the lowest bucket interpolates from 0 when its upper bound is > 0 and
  returns its bound otherwise; a rank that lands in the +Inf bucket returns the highest finite bound;
* q NaN -> NaN, q < 0 -> -inf, q > 1 -> +inf (checked before anything else, as Prometheus does).

Deliberate differences, for callers' safety: no buckets or zero observations give ``None`` (Prometheus: NaN,
or no sample), and malformed input (length mismatch, NaN bounds, a last bound that is not +inf, negative or
non-finite counts) raises ``ValueError`` instead of silently yielding NaN.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Collection, Iterable
from itertools import accumulate

SMALL_DELTA_TOLERANCE = 1e-12  # Prometheus' smallDeltaTolerance for classic-bucket counts
_MIN_NORMAL = 2.2250738585072014e-308  # smallest positive normal float64, as util/almost uses it
_MAX_FLOAT = 1.7976931348623157e308


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    """Relative float comparison of Prometheus' ``util/almost.Equal``: |a-b| / (|a|+|b|) < epsilon."""
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return diff / min(abs_sum, _MAX_FLOAT) < epsilon


def _validated_buckets(
    upper_bounds_s: Collection[float], cumulative_counts: Collection[float]
) -> list[tuple[float, float]]:
    if len(upper_bounds_s) != len(cumulative_counts):
        raise ValueError(
            f"histogram_quantile: {len(upper_bounds_s)} upper bounds but {len(cumulative_counts)} counts"
        )
    buckets: list[tuple[float, float]] = []
    for i, (bound, count) in enumerate(zip(upper_bounds_s, cumulative_counts, strict=True)):
        bound_f, count_f = float(bound), float(count)
        if math.isnan(bound_f):
            raise ValueError(f"histogram_quantile: upper_bounds_s[{i}] is NaN")
        if not math.isfinite(count_f) or count_f < 0:
            raise ValueError(f"histogram_quantile: cumulative_counts[{i}] = {count_f!r}; must be finite and >= 0")
        buckets.append((bound_f, count_f))
    return buckets


def _coalesce(sorted_buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Merge buckets sharing an upper bound (adding their counts), as ``coalesceBuckets`` does."""
    merged: list[tuple[float, float]] = []
    for bound, count in sorted_buckets:
        if merged and merged[-1][0] == bound:
            merged[-1] = (bound, merged[-1][1] + count)
        else:
            merged.append((bound, count))
    return merged


def _monotonic_counts(counts: list[float], tolerance: float) -> list[float]:
    """Ignore float-noise deltas, then remove decreases; ``prev`` moves only on an accepted increase."""
    fixed = list(counts)
    prev = fixed[0]
    for i in range(1, len(fixed)):
        curr = fixed[i]
        if curr == prev:
            continue
        if _almost_equal(prev, curr, tolerance) or curr < prev:
            fixed[i] = prev
            continue
        prev = curr
    return fixed


def histogram_quantile(
    q: float, upper_bounds_s: Collection[float], cumulative_counts: Collection[float]
) -> float | None:
    """The ``q``-quantile (seconds, or whatever unit the bounds have) of a classic histogram.

    ``upper_bounds_s`` are the ``le`` values (the last one +inf) and ``cumulative_counts`` the matching bucket
    samples (counts, or rates of counts). Returns ``None`` when there are no buckets or no observations.
    """
    if len(upper_bounds_s) == 0 and len(cumulative_counts) == 0:
        return None
    buckets = _validated_buckets(upper_bounds_s, cumulative_counts)
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = _coalesce(sorted(buckets, key=lambda b: b[0]))
    if buckets[-1][0] != math.inf:
        raise ValueError(
            f"histogram_quantile: the highest upper bound must be +inf (got {buckets[-1][0]!r}); "
            "Prometheus returns NaN for such a histogram"
        )
    bounds = [b for b, _ in buckets]
    counts = _monotonic_counts([c for _, c in buckets], SMALL_DELTA_TOLERANCE)
    if len(buckets) < 2:
        return math.nan  # only the +Inf bucket: no finite bound to report (Prometheus: NaN)
    observations = counts[-1]
    if observations == 0:
        return None
    rank = q * observations
    # First bucket (the +Inf one excluded) whose cumulative count reaches the rank; len-1 when none does.
    b = bisect_left(counts, rank, 0, len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    bucket_start = 0.0
    bucket_end = bounds[b]
    count = counts[b]
    if b > 0:
        bucket_start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count == 0:
        return math.nan  # q == 0 with an empty lowest bucket: Prometheus computes 0/0 here
    return bucket_start + (bucket_end - bucket_start) * (rank / count)


def bucket_counts_to_cumulative(bucket_counts: Iterable[float]) -> list[float]:
    """Per-bucket (non-cumulative) counts -> Prometheus' cumulative ``le`` counts (running sum)."""
    counts = [float(c) for c in bucket_counts]
    for i, c in enumerate(counts):
        if not math.isfinite(c) or c < 0:
            raise ValueError(f"bucket_counts_to_cumulative: bucket_counts[{i}] = {c!r}; must be finite and >= 0")
    return list(accumulate(counts))

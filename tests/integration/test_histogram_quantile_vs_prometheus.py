"""Our histogram_quantile gives the answer the real Prometheus gives, on vLLM's TTFT and ITL bucket edges.

One exporter serves every case as one series of ``h1_case_seconds`` (label ``case``). Its bucket counters grow
by the case's per-bucket increments at every scrape, so both ``rate(...[window])`` and the plain bucket values
are meaningful. Both sides are fed the identical numbers: we read the bucket samples (or their rates) back from
Prometheus at a fixed evaluation time and compare with Prometheus' own ``histogram_quantile`` at that time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S
from autoscaler.core.histogram import histogram_quantile
from tests.helpers.exporter import MetricsExporter
from workers.local.prometheus import PrometheusServer

INF = math.inf
T = len(TTFT_BUCKETS_S) + 1  # buckets incl. +Inf
I = len(ITL_BUCKETS_S) + 1  # noqa: E741


def _sparse(n: int, **at: float) -> list[float]:
    counts = [0.0] * n
    for key, value in at.items():
        counts[int(key.removeprefix("b"))] = value
    return counts


TTFT_LE = tuple(floatToGoString(e) for e in TTFT_BUCKETS_S)
ITL_LE = tuple(floatToGoString(e) for e in ITL_BUCKETS_S)
# "0.1" and "0.10" are two series but one bucket bound: Prometheus (and we) add their counts.
TTFT_LE_DUPLICATE = (*TTFT_LE[:8], "0.10", *TTFT_LE[8:])

# id -> (finite ``le`` values, cumulative counts added per scrape incl. +Inf). Some are non-monotonic on purpose.
# Not here: counts differing by float noise (relative 1e-12). Prometheus >= 2.5x ignores such deltas as we do;
# the Debian 2.42 server predates that, so those vectors are covered by the unit tests only.
CASES: dict[str, tuple[tuple[str, ...], list[float]]] = {
    "ttft-typical": (TTFT_LE, [0, 0, 1, 3, 8, 15, 30, 52, 120, 170, 185, 190, 196, 198, 199, 199, 200, 200, 200, 200, 200, 200, 200]),
    "ttft-all-in-lowest": (TTFT_LE, [7.0] * T),
    "ttft-tail-beyond-2560s": (TTFT_LE, [*([0.0] * 20), 4.0, 5.0, 9.0]),
    "ttft-fractional": (TTFT_LE, [0.0, 0.25, 0.5, 0.5, 0.75, 1.125, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.5]),
    "ttft-non-monotonic": (TTFT_LE, [0, 2, 5, 4, 9, 9, 8, 12, 15, 14, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20]),
    "ttft-duplicate-le": (TTFT_LE_DUPLICATE, [0, 0, 0, 1, 2, 4, 6, 9, 3, 20, 30, 31, 31, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32]),
    "itl-typical": (ITL_LE, [40, 300, 900, 1200, 1290, 1310, 1318, 1320, 1320, 1320, 1320, 1320, 1320, 1320, 1320, 1320, 1320, 1320, 1320, 1320]),
    "itl-single-observation": (ITL_LE, _sparse(I, **{f"b{i}": 1.0 for i in range(6, I)})),
    "itl-gap-between-buckets": (ITL_LE, [10.0] * 3 + [10.0] * 10 + [30.0] * (I - 13)),
    "itl-only-inf": (ITL_LE, [0.0] * (I - 1) + [6.0]),
    "itl-empty": (ITL_LE, [0.0] * I),
}
QUANTILES = (-0.5, 0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 1.5)
WINDOW = "5s"
METRIC = "h1_case_seconds"


class GrowingHistograms(Collector):
    """Each scrape adds one more copy of every case's counts (rate() then sees constant increments)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scrapes = 0

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            self.scrapes += 1
            k = self.scrapes
        family = HistogramMetricFamily(METRIC, "cases for histogram_quantile parity", labels=["case"])
        for case, (edges, counts) in CASES.items():
            les = [*edges, "+Inf"]
            family.add_metric([case], buckets=[(le, c * k) for le, c in zip(les, counts, strict=True)], sum_value=0.0)
        yield family


@pytest.fixture(scope="module")
def evaluated(
    module_prometheus: Callable[..., PrometheusServer],
    module_metrics_exporter: Callable[[CollectorRegistry], MetricsExporter],
) -> tuple[PrometheusServer, float]:
    """A Prometheus that has scraped the cases at least four times, and a fixed evaluation time."""
    for edges, counts in CASES.values():
        assert len(counts) == len(edges) + 1
    registry = CollectorRegistry()
    registry.register(GrowingHistograms())
    exporter = module_metrics_exporter(registry)
    prom = module_prometheus(static_targets={"parity": [exporter.target]}, scrape_interval_s=1.0)
    prom.wait_for_scrapes("parity", 4, timeout_s=30)
    return prom, time.time()


def _buckets(prom: PrometheusServer, at_s: float, case: str, expr: str) -> tuple[list[float], list[float]]:
    series = prom.query(expr, at_s)
    assert series, f"no bucket series for {case}: {expr}"
    # In Prometheus' (label) order, not sorted by bound: our function must sort like Prometheus does.
    return [float(s["metric"]["le"]) for s in series], [float(s["value"][1]) for s in series]


def _same(ours: float | None, theirs: float) -> bool:
    if ours is None or math.isnan(ours):
        return math.isnan(theirs)  # Prometheus says NaN where we say "no observations" (None)
    if math.isinf(ours) or math.isinf(theirs):
        return ours == theirs
    return math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("mode", ["plain", "rate"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_prometheus(evaluated: tuple[PrometheusServer, float], case: str, mode: str) -> None:
    prom, at_s = evaluated
    selector = f'{METRIC}_bucket{{job="parity",case="{case}"}}'
    inner = selector if mode == "plain" else f"rate({selector}[{WINDOW}])"
    bounds, counts = _buckets(prom, at_s, case, inner)
    assert INF in bounds and len(bounds) == len(CASES[case][0]) + 1
    mismatches = []
    for q in QUANTILES:
        theirs = prom.query_value(f"histogram_quantile({q}, {inner})", at_s)
        assert theirs is not None, f"Prometheus returned no series for q={q}"
        ours = histogram_quantile(q, bounds, counts)
        if not _same(ours, theirs):
            mismatches.append(f"q={q}: ours={ours!r} prometheus={theirs!r}")
    assert not mismatches, f"{case}/{mode} with counts {counts}:\n" + "\n".join(mismatches)


def test_cases_are_not_trivial(evaluated: tuple[PrometheusServer, float]) -> None:
    """Guard against a vacuous parity test: the answers must spread over many distinct finite values."""
    prom, at_s = evaluated
    answers = set()
    for q in (0.5, 0.9, 0.99):
        for r in prom.query(f'histogram_quantile({q}, rate({METRIC}_bucket{{job="parity"}}[{WINDOW}]))', at_s):
            value = float(r["value"][1])
            if math.isfinite(value):
                answers.add(round(value, 9))
    assert len(answers) >= 12, answers

"""What the External Metrics API serves, as domain values: the metric catalog, the series of each autoscaler, and
the cache a request reads. No HTTP, no Prometheus, no Kubernetes client here (import-linter enforces it).

A ``Snapshot`` is every series of every autoscaler at one refresh, built once and swapped into the
``ExternalMetricsCache`` whole (one reference assignment), so a request never sees half a refresh and never waits
for one. A request is answered from the snapshot alone: ``lookup(namespace, metric, selector)`` returns the
matching ``Sample``s or raises

* ``UnknownMetricError``: the name is not in ``CATALOG`` (404),
* ``NamespaceNotServedError``: no DisaggregatedAutoscaler in that namespace (404),
* ``MetricUnavailableError``: no snapshot yet, the snapshot or a matching series is past its ``fresh_until_s``,
  or a matching series could not be computed this refresh (Prometheus failed, invalid spec): 503. The HPA
  sums the items of a list, so a partial answer would be a wrong number: any unavailable series fails the whole
  request, and an old value is never served as a current one.

A value that is simply absent this refresh (no requests in the window, so no percentile) is left out of the list,
as Prometheus leaves out an empty series; the HPA then reports "no metrics returned" and does not scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Pool, Signals
from metrics_adapter.selectors import Selector

AUTOSCALER_LABEL = "autoscaler"
POOL_LABEL = "pool"
QUANTILE_LABEL = "quantile"
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)  # the fixed percentiles served beside the SLO's own
POOLS = (Pool.PREFILL, Pool.DECODE)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    description: str
    per_pool: bool = False  # one series per pool, label pool=prefill|decode


def _pct(q: float) -> str:
    return f"p{q * 100:g}"


DESIRED_REPLICAS = "pdscale_desired_replicas"
TTFT = "pdscale_ttft_seconds"
ITL = "pdscale_itl_seconds"
REQUEST_RATE = "pdscale_request_rate_per_second"
WAITING = "pdscale_waiting_requests"
RUNNING = "pdscale_running_requests"
KV_USAGE = "pdscale_kv_cache_usage_ratio"


def quantile_metric(signal: str, q: float) -> str:
    """``pdscale_ttft_p90_seconds`` for ("ttft", 0.9)."""
    return f"pdscale_{signal}_{_pct(q)}_seconds"


_CATALOG: list[MetricInfo] = [
    MetricInfo(DESIRED_REPLICAS, "replicas pdscale recommends for the pool (its decision, advisory or active)",
               per_pool=True),
    MetricInfo(TTFT, "user-visible time to first token at the autoscaler's SLO percentile (label quantile)"),
    MetricInfo(ITL, "inter-token latency at the autoscaler's SLO percentile (label quantile)"),
    *(
        MetricInfo(quantile_metric(signal, q), f"{what} {_pct(q)}")
        for signal, what in (("ttft", "time to first token"), ("itl", "inter-token latency"))
        for q in QUANTILES
    ),
    MetricInfo(REQUEST_RATE, "user requests per second"),
    MetricInfo(WAITING, "requests waiting in the pool's queues (sum over its pods)", per_pool=True),
    MetricInfo(RUNNING, "requests running in the pool (sum over its pods)", per_pool=True),
    MetricInfo(KV_USAGE, "KV-cache usage of the pool, 0..1 (mean over its pods)", per_pool=True),
]  # fmt: skip
CATALOG: Mapping[str, MetricInfo] = {m.name: m for m in _CATALOG}
SIGNAL_METRICS = frozenset(CATALOG) - {DESIRED_REPLICAS}


@dataclass(frozen=True)
class Sample:
    """One served value: an item of an ExternalMetricValueList."""

    metric: str
    labels: Mapping[str, str]
    value: float
    timestamp_s: float  # when it was observed (Unix seconds)
    window_s: float | None  # the rate window it was computed over; None for gauges and decisions
    fresh_until_s: float  # served until then; afterwards the request gets 503


@dataclass(frozen=True)
class Gap:
    """A series that exists but has no current value: a matching request gets 503 with ``reason``."""

    metric: str
    labels: Mapping[str, str]
    reason: str


Entry = Sample | Gap


@dataclass(frozen=True)
class AutoscalerSeries:
    """Every series one autoscaler publishes in one snapshot."""

    namespace: str
    name: str
    entries: tuple[Entry, ...] = ()


class UnknownMetricError(LookupError):
    def __init__(self, metric: str) -> None:
        super().__init__(f"the server could not find the metric {metric!r}: pdscale serves {', '.join(CATALOG)}")
        self.metric = metric


class NamespaceNotServedError(LookupError):
    def __init__(self, metric: str, namespace: str) -> None:
        super().__init__(
            f"the server could not find the metric {metric!r} in namespace {namespace!r}: "
            "no DisaggregatedAutoscaler there"
        )
        self.metric = metric
        self.namespace = namespace


class MetricUnavailableError(RuntimeError):
    """No current value can be served (503)."""


@dataclass(frozen=True)
class Snapshot:
    """All series of one refresh, indexed by (namespace, metric) then autoscaler name."""

    published_at_s: float
    fresh_until_s: float  # the whole snapshot is stale after this (its producer stopped refreshing)
    index: Mapping[tuple[str, str], Mapping[str, Sequence[Entry]]] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    autoscalers: int = 0

    @classmethod
    def build(cls, series: Iterable[AutoscalerSeries], *, published_at_s: float, stale_after_s: float) -> Snapshot:
        index: dict[tuple[str, str], dict[str, list[Entry]]] = {}
        namespaces: set[str] = set()
        count = 0
        for item in series:
            count += 1
            namespaces.add(item.namespace)
            for entry in item.entries:
                index.setdefault((item.namespace, entry.metric), {}).setdefault(item.name, []).append(entry)
        return cls(published_at_s, published_at_s + stale_after_s, index, frozenset(namespaces), count)


class ExternalMetricsCache:
    """The latest ``Snapshot``; ``publish`` swaps it, ``lookup`` reads it (any thread)."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def lookup(self, namespace: str, metric: str, selector: Selector, now_s: float) -> list[Sample]:
        """The samples of ``metric`` in ``namespace`` whose labels match ``selector`` (see the module doc)."""
        if metric not in CATALOG:
            raise UnknownMetricError(metric)
        snap = self._snapshot
        if snap is None:
            raise MetricUnavailableError("no data yet: the first refresh has not completed")
        if now_s > snap.fresh_until_s:
            raise MetricUnavailableError(
                f"metrics last refreshed {now_s - snap.published_at_s:.0f} s ago; the limit is "
                f"{snap.fresh_until_s - snap.published_at_s:.0f} s"
            )
        if namespace not in snap.namespaces:
            raise NamespaceNotServedError(metric, namespace)
        by_name = snap.index.get((namespace, metric), {})
        names = selector.required_values(AUTOSCALER_LABEL)
        candidates = by_name.values() if names is None else [by_name[n] for n in names if n in by_name]
        out: list[Sample] = []
        for entries in candidates:
            for entry in entries:
                if not selector.matches(entry.labels):
                    continue
                if isinstance(entry, Gap):
                    raise MetricUnavailableError(f"{metric} {_labels_text(entry.labels)}: {entry.reason}")
                if now_s > entry.fresh_until_s:
                    raise MetricUnavailableError(
                        f"{metric} {_labels_text(entry.labels)}: last observed {now_s - entry.timestamp_s:.0f} s ago"
                    )
                out.append(entry)
        return out


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


# ---------------------------------------------------------------------------------------------------------------
# Building an autoscaler's series


def _labels(name: str, **extra: str) -> dict[str, str]:
    return {AUTOSCALER_LABEL: name, **extra}


def _series_labels(name: str, metric: str, spec: AutoscalerSpec | None) -> list[dict[str, str]]:
    """The label sets ``metric`` has for autoscaler ``name`` (so an unavailable series can still be matched)."""
    if CATALOG[metric].per_pool:
        return [_labels(name, **{POOL_LABEL: p.value}) for p in POOLS]
    if metric in (TTFT, ITL) and spec is not None:
        slo = spec.ttft if metric == TTFT else spec.itl
        return [_labels(name, **{QUANTILE_LABEL: f"{slo.percentile:g}"})]
    return [_labels(name)]


def gaps(name: str, spec: AutoscalerSpec | None, reason: str, metrics: Iterable[str]) -> list[Gap]:
    """Every series of ``metrics`` for autoscaler ``name``, unavailable because of ``reason``."""
    return [Gap(m, labels, reason) for m in metrics for labels in _series_labels(name, m, spec)]


def signal_entries(
    name: str,
    spec: AutoscalerSpec,
    signals: Signals,
    percentiles: Mapping[str, Mapping[float, float | None]],
    *,
    fresh_until_s: float,
) -> list[Entry]:
    """The Prometheus-derived series of one autoscaler from one refresh. ``signals.error`` makes every one a
    ``Gap``; a missing value (None, NaN) is left out; a fixed percentile that was not fetched is a ``Gap``."""
    if signals.error is not None:
        return list(gaps(name, spec, signals.error, sorted(SIGNAL_METRICS)))
    window_s = float(spec.metrics.window_s)
    at = signals.time_s
    out: list[Entry] = []

    def add(metric: str, labels: dict[str, str], value: float | None, windowed: bool) -> None:
        if value is not None and math.isfinite(value):
            out.append(Sample(metric, labels, float(value), at, window_s if windowed else None, fresh_until_s))

    add(TTFT, _labels(name, **{QUANTILE_LABEL: f"{spec.ttft.percentile:g}"}), signals.ttft_s, True)
    add(ITL, _labels(name, **{QUANTILE_LABEL: f"{spec.itl.percentile:g}"}), signals.itl_s, True)
    for signal in ("ttft", "itl"):
        values = percentiles.get(signal)
        for q in QUANTILES:
            metric = quantile_metric(signal, q)
            if values is None or q not in values:
                why = "a custom metric source has no histogram" if spec.metrics.source == "custom" else "not fetched"
                out.append(Gap(metric, _labels(name), f"{_pct(q)} is not available: {why}"))
            else:
                add(metric, _labels(name), values[q], True)
    add(REQUEST_RATE, _labels(name), signals.request_rate_per_s, True)
    for pool in POOLS:
        ps = signals.prefill if pool is Pool.PREFILL else signals.decode
        labels = _labels(name, **{POOL_LABEL: pool.value})
        add(WAITING, labels, ps.waiting_requests, False)
        add(RUNNING, dict(labels), ps.running_requests, False)
        add(KV_USAGE, dict(labels), ps.kv_usage_fraction, False)
    return out


def desired_entries(
    name: str, desired: Mapping[Pool, int], *, timestamp_s: float, fresh_until_s: float
) -> list[Entry]:
    """``pdscale_desired_replicas`` of both pools: pdscale's decision, observed at ``timestamp_s``."""
    return [
        Sample(DESIRED_REPLICAS, _labels(name, **{POOL_LABEL: pool.value}), float(desired[pool]), timestamp_s,
               None, fresh_until_s)
        for pool in POOLS
        if pool in desired
    ]  # fmt: skip

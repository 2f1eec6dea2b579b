"""The two ways the cache is filled; both publish one ``Snapshot`` per refresh, and neither ever runs inside a
request.

``ControllerFeed`` (``pdscale run --serve-external-metrics``): the controller's ``Runner`` hands it each
autoscaler's tick (``record``) and calls ``publish`` at the end of the pass, so the API serves exactly the
observations and decisions of the controller's last tick, at no extra Prometheus cost but the fixed percentiles
(``QUANTILES``, 4 to 6 more grouped queries per tick). Only a pass publishes: a standby replica, which does not
tick, serves 503 once its snapshot is older than ``stale_after_s`` (run the in-process server with one controller
replica, or use the standalone adapter).

``StandaloneRefresher`` (``pdscale adapter``, the Deployment in manifests/metrics-adapter): every ``refresh_s``
one LIST of the DisaggregatedAutoscalers and ONE grouped query set for all of them
(``PrometheusMetricsSource.refresh`` with the fixed percentiles: the same queries as the controller, whatever the
number of autoscalers). Desired replicas are NOT recomputed here: they are read from each object's status, where
the leading controller writes every change of ``desiredReplicas`` at once (advisory mode included). Running the
policy a second time would make a second, different truth: the policy is stateful (forecast history,
stabilization windows, starting pods), two adapter replicas would each hold their own state, and an HPA reading
both through one Service would flip between their answers. The status is the controller's decision, one per
autoscaler, shared by every replica. It is served only while it is current: the controller's Lease is held and
renewed (the leader is alive and would have written a change), the status describes the current
``metadata.generation``, and the last tick did not fail; otherwise the series is unavailable (503).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.controller import TickResult
from autoscaler.core.types import Pool
from autoscaler.kube import AutoscalerObject, KubeClient, api_error_text, list_autoscalers
from autoscaler.prometheus import PrometheusMetricsSource
from metrics_adapter.provider import (
    CATALOG,
    DESIRED_REPLICAS,
    POOLS,
    AutoscalerSeries,
    Entry,
    ExternalMetricsCache,
    Snapshot,
    desired_entries,
    gaps,
    signal_entries,
)

log = logging.getLogger("pdscale.adapter")

Percentiles = Callable[[str], Mapping[str, Mapping[float, float | None]]]


def _invalid(obj: AutoscalerObject) -> AutoscalerSeries:
    return AutoscalerSeries(obj.namespace, obj.name, tuple(gaps(obj.name, None, f"invalid spec: {obj.error}",
                                                                sorted(CATALOG))))  # fmt: skip


class ControllerFeed:
    """Collects one pass of the controller's ticks and publishes them as one snapshot (see the module doc).
    ``record`` may be called from several threads (the Runner ticks autoscalers concurrently)."""

    def __init__(
        self,
        cache: ExternalMetricsCache,
        *,
        percentiles: Percentiles | None = None,
        stale_after_s: float = 45.0,
        clock: Callable[[], float] = time.time,
        on_percentiles: Callable[[str, Mapping[str, Mapping[float, float | None]]], None] | None = None,
    ) -> None:
        self.cache = cache
        self.percentiles = percentiles
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.on_percentiles = on_percentiles  # e.g. the controller's telemetry gauges
        self._lock = threading.Lock()
        self._pending: list[AutoscalerSeries] = []

    def record(self, obj: AutoscalerObject, result: TickResult | None, error: str | None) -> None:
        if obj.spec is None:
            series = _invalid(obj)
        elif result is None:
            series = AutoscalerSeries(obj.namespace, obj.name, tuple(
                gaps(obj.name, obj.spec, f"the controller's tick failed: {error or 'no result'}", sorted(CATALOG))))
        else:
            fresh_until = self.clock() + self.stale_after_s
            pct = self.percentiles(obj.key) if self.percentiles is not None else {}
            if self.on_percentiles is not None and result.observation.signals.error is None:
                self.on_percentiles(obj.key, pct)
            entries: list[Entry] = signal_entries(obj.name, obj.spec, result.observation.signals, pct,
                                                  fresh_until_s=fresh_until)  # fmt: skip
            desired = {p: result.decision.pool(p).desired_replicas for p in POOLS}
            entries += desired_entries(obj.name, desired, timestamp_s=result.decision.time_s,
                                       fresh_until_s=fresh_until)  # fmt: skip
            series = AutoscalerSeries(obj.namespace, obj.name, tuple(entries))
        with self._lock:
            self._pending.append(series)

    def publish(self) -> Snapshot:
        """Publish what this pass recorded (an empty pass publishes "no autoscalers"), and start the next."""
        with self._lock:
            pending, self._pending = self._pending, []
        snapshot = Snapshot.build(pending, published_at_s=self.clock(), stale_after_s=self.stale_after_s)
        self.cache.publish(snapshot)
        return snapshot


def _parse_time(value: Any) -> float | None:
    """metav1.Time / MicroTime (or a datetime from the client's models) -> Unix seconds."""
    if isinstance(value, datetime.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=datetime.UTC)).timestamp()
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaseState:
    """Whether the controller is alive and leading, from its Lease (None reason: alive)."""

    alive: bool
    reason: str = ""


def read_controller_lease(kube: KubeClient, namespace: str, name: str, now_s: float) -> LeaseState:
    """Alive when the Lease has a holder that renewed it within its ``leaseDurationSeconds`` (plus the same
    again for clock skew between the controller's and this machine's clocks)."""
    where = f"controller Lease {namespace}/{name}"
    try:
        lease = kube.coordination.read_namespaced_lease(name, namespace, _request_timeout=kube.timeout)
    except Exception as exc:
        return LeaseState(False, f"{where}: {api_error_text(exc)}")
    spec = lease.spec
    if spec is None or not spec.holder_identity:
        return LeaseState(False, f"{where} has no holder: is the controller running?")
    renewed = _parse_time(spec.renew_time)
    duration = float(spec.lease_duration_seconds or 15)
    if renewed is None or now_s - renewed > 2 * duration:
        return LeaseState(False, f"{where} held by {spec.holder_identity} but not renewed for "
                                 f"{'ever' if renewed is None else f'{now_s - renewed:.0f} s'}")  # fmt: skip
    return LeaseState(True)


def desired_from_status(
    obj: AutoscalerObject, lease: LeaseState, *, fresh_until_s: float
) -> list[Entry]:
    """``pdscale_desired_replicas`` of one autoscaler from its status (see the module doc for when it is current)."""
    status = obj.status
    reason = ""
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    able = conditions.get("AbleToScale") or {}
    when = _parse_time(status.get("lastEvaluationTime"))
    if not lease.alive:
        reason = lease.reason
    elif when is None:
        reason = "no decision in status yet"
    elif int(status.get("observedGeneration") or 0) != obj.generation:
        reason = f"the controller has not evaluated generation {obj.generation} yet"
    elif able.get("status") == "False" and able.get("reason") in ("FailedGetScale", "InvalidSpec"):
        reason = f"the controller's last tick failed: {able.get('message', '')}"
    desired: dict[Pool, int] = {}
    for pool in POOLS:
        value = (status.get(pool.value) or {}).get("desiredReplicas")
        if isinstance(value, int) and not isinstance(value, bool):
            desired[pool] = value
        elif not reason:
            reason = f"status.{pool.value}.desiredReplicas is missing"
    if reason:
        return list(gaps(obj.name, obj.spec, reason, [DESIRED_REPLICAS]))
    assert when is not None
    return desired_entries(obj.name, desired, timestamp_s=when, fresh_until_s=fresh_until_s)


@dataclass
class RefreshReport:
    autoscalers: int = 0
    queries: int = 0
    duration_s: float = 0.0
    error: str | None = None  # the refresh published nothing


class StandaloneRefresher:
    """``pdscale adapter``'s loop (see the module doc). ``lease`` = (namespace, name) of the controller's Lease."""

    def __init__(
        self,
        kube: KubeClient,
        source: PrometheusMetricsSource,
        cache: ExternalMetricsCache,
        *,
        namespace: str | None,
        lease: tuple[str, str],
        refresh_s: float = 15.0,
        stale_after_s: float = 45.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.source = source
        self.cache = cache
        self.namespace = namespace
        self.lease = lease
        self.refresh_s = refresh_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.last = RefreshReport()

    def refresh_once(self) -> RefreshReport:
        started = time.monotonic()
        now = self.clock()
        report = RefreshReport()
        try:
            objects = list_autoscalers(self.kube, self.namespace)
        except Exception as exc:
            report.error = f"listing DisaggregatedAutoscalers failed: {api_error_text(exc)}"
            log.warning("%s; serving the previous snapshot until it is stale", report.error)
            self.last = report
            return report
        specs = {o.key: o.spec for o in objects if o.spec is not None}
        self.source.refresh(specs, now)
        lease = read_controller_lease(self.kube, *self.lease, now) if objects else LeaseState(True)
        fresh_until = now + self.stale_after_s
        series: list[AutoscalerSeries] = []
        for obj in objects:
            if obj.spec is None:
                series.append(_invalid(obj))
                continue
            signals = self.source.signals(obj.key, now)
            entries = signal_entries(obj.name, obj.spec, signals, self.source.percentiles(obj.key),
                                     fresh_until_s=fresh_until)  # fmt: skip
            entries += desired_from_status(obj, lease, fresh_until_s=fresh_until)
            series.append(AutoscalerSeries(obj.namespace, obj.name, tuple(entries)))
        self.cache.publish(Snapshot.build(series, published_at_s=now, stale_after_s=self.stale_after_s))
        report.autoscalers = len(objects)
        report.queries = self.source.queries_last_refresh
        report.duration_s = time.monotonic() - started
        if self.source.last_fatal_error:
            log.warning("prometheus unreachable: %s (signal metrics answer 503)", self.source.last_fatal_error)
        self.last = report
        return report

    def run(self, stop: threading.Event) -> None:
        """Refresh every ``refresh_s`` until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = self.refresh_once()
                log.debug("refresh: %d autoscalers, %d queries, %.2f s", report.autoscalers, report.queries,
                          report.duration_s)  # fmt: skip
            except Exception:  # a bug in one refresh must not end the adapter; the next one retries
                log.exception("refresh failed")
            stop.wait(max(0.05, self.refresh_s - (time.monotonic() - started)))


"""pdscale's own telemetry: Prometheus metrics of the controller, /healthz and /readyz, JSON logs.

Metrics live in an explicit ``CollectorRegistry`` owned by a ``ControllerTelemetry`` object (never the global
registry: two controllers in one test process must not share series). ``update(key, result, error)`` turns one
autoscaler's ``TickResult`` into series; ``observe_pass(duration_s, queries)`` records a whole tick.
``TelemetryServer`` serves ``/metrics``, ``/healthz`` (the process answers) and ``/readyz`` (the last tick
succeeded less than ``ready_max_age_s`` ago) from an aiohttp app on a background thread, so the synchronous
control loop needs no event loop of its own.

Missing observations are removed from the gauges rather than set to 0 or NaN: a gap in the graph is what
"no data" looks like in Prometheus, and a 0 would read as "no latency".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from autoscaler.controller import TickResult
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Pool
from autoscaler.threaded_server import ThreadedServer

TICK_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_POOLS = (Pool.PREFILL, Pool.DECODE)


class ControllerTelemetry:
    """The controller's metrics. ``port`` given: also start a ``TelemetryServer`` on it."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        port: int | None = None,
        host: str = "0.0.0.0",
        ready_max_age_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.ready_max_age_s = ready_max_age_s
        self._lock = threading.Lock()
        self._last_success_s: float | None = None
        self._marks = 0  # order of mark_success / mark_failure calls (a clock may not tell them apart)
        self._success_mark = 0
        self._failure_mark = 0  # the last pass that could not do its job (mark_failure), 0: none
        self._failure: str | None = None
        self._failing: dict[str, str] = {}  # autoscaler -> why it was not evaluated in the last pass
        self._last_error: str | None = None
        self._known: dict[str, set[tuple[str, ...]]] = {}
        r = self.registry
        ap = ["autoscaler", "pool"]
        self.desired_replicas = Gauge("pdscale_desired_replicas", "Replicas pdscale wants.", ap, registry=r)
        self.current_replicas = Gauge(
            "pdscale_current_replicas",
            "Replicas ordered on the scale target (spec.replicas).",
            ap,
            registry=r,
        )
        self.ready_replicas = Gauge(
            "pdscale_ready_replicas", "Ready replicas of the scale target.", ap, registry=r
        )
        self.observed_latency = Gauge(
            "pdscale_observed_latency_seconds",
            "Observed latency at the SLO percentile (signal: ttft|itl); absent when missing.",
            ["autoscaler", "signal"],
            registry=r,
        )
        self.observed_quantiles = Gauge(
            "pdscale_observed_latency_quantile_seconds",
            "Observed latency at fixed quantiles (signal: ttft|itl; with --serve-external-metrics); absent when "
            "missing.",
            ["autoscaler", "signal", "quantile"],
            registry=r,
        )
        self.target_latency = Gauge(
            "pdscale_slo_target_seconds",
            "SLO target latency (signal: ttft|itl) at the given quantile.",
            ["autoscaler", "signal", "quantile"],
            registry=r,
        )
        self.observed_request_rate = Gauge(
            "pdscale_observed_request_rate_per_second",
            "Observed request rate; absent when missing.",
            ["autoscaler"],
            registry=r,
        )
        self.decisions = Counter(
            "pdscale_decisions", "Decisions per pool by reason.", ["autoscaler", "pool", "reason"], registry=r
        )
        self.scale_writes = Counter(
            "pdscale_scale_writes", "Replica counts written to a scale target.", ap, registry=r
        )
        self.errors = Counter("pdscale_errors", "Errors by kind.", ["kind"], registry=r)
        self.tick_duration = Histogram(
            "pdscale_tick_duration_seconds",
            "Wall time of one tick over all autoscalers.",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.queries_per_tick = Gauge(
            "pdscale_prometheus_queries_per_tick", "PromQL queries sent in the last tick.", registry=r
        )
        self.last_success = Gauge(
            "pdscale_last_successful_tick_timestamp_seconds",
            "Unix time of the last successful tick.",
            registry=r,
        )
        self.leader = Gauge("pdscale_leader", "1 while this replica holds the leader Lease.", registry=r)
        self.failing = Gauge(
            "pdscale_autoscalers_not_evaluated",
            "Autoscalers the last pass could not evaluate (spec, owner, target, scale or metrics failures).",
            registry=r,
        )
        self.server: TelemetryServer | None = None
        if port is not None:
            self.server = TelemetryServer(self, host=host, port=port).start()

    # -- recording -----------------------------------------------------------------------------------------------

    def update(
        self,
        key: str,
        result: TickResult | None,
        error: str | None = None,
        spec: AutoscalerSpec | None = None,
    ) -> None:
        """Record one autoscaler's tick. ``result`` None means the tick failed with ``error``."""
        if result is None:
            self.record_error("tick", error or "tick failed")
            return
        obs, dec = result.observation, result.decision
        for pool in _POOLS:
            p = pool.value
            self.desired_replicas.labels(key, p).set(dec.pool(pool).desired_replicas)
            self.current_replicas.labels(key, p).set(obs.replicas(pool).desired)
            self.ready_replicas.labels(key, p).set(obs.replicas(pool).ready)
            self.decisions.labels(key, p, str(dec.pool(pool).reason)).inc()
            self._remember(key, ("pool", p))
        for pool in result.applied:
            self.scale_writes.labels(key, pool.value).inc()
        signals = obs.signals
        for name, value in (("ttft", signals.ttft_s), ("itl", signals.itl_s)):
            if value is None:
                self.observed_latency.remove(key, name)
            else:
                self.observed_latency.labels(key, name).set(value)
        if signals.request_rate_per_s is None:
            self.observed_request_rate.remove(key)
        else:
            self.observed_request_rate.labels(key).set(signals.request_rate_per_s)
        if spec is not None:
            for name, slo in (("ttft", spec.ttft), ("itl", spec.itl)):
                self.target_latency.labels(key, name, repr(slo.percentile)).set(slo.target_s)
                self._remember(key, ("target", name, repr(slo.percentile)))
        if signals.error:
            self.record_error("metrics", signals.error)
        for message in result.errors:
            self.record_error("scale", message)
        if not signals.error and not result.errors and error is None:
            self.mark_success()
        elif error:
            self.record_error("tick", error)

    def observe_quantiles(self, key: str, values: Mapping[str, Mapping[float, float | None]]) -> None:
        """Latency at fixed quantiles (``{"ttft": {0.5: s, ...}, "itl": {...}}``): for KEDA's Prometheus scaler and
        dashboards where another backend owns external.metrics.k8s.io. A missing value removes the series."""
        for signal, by_quantile in values.items():
            for q, value in by_quantile.items():
                labels = (key, signal, f"{q:g}")
                if value is None:
                    self.observed_quantiles.remove(*labels)
                else:
                    self.observed_quantiles.labels(*labels).set(value)
                    self._remember(key, ("quantile", *labels[1:]))

    def record_error(self, kind: str, message: str = "") -> None:
        self.errors.labels(kind).inc()
        with self._lock:
            self._last_error = f"{kind}: {message}" if message else kind

    def observe_pass(self, duration_s: float, queries: int | None = None) -> None:
        """One tick over all autoscalers took ``duration_s``; ``queries`` PromQL queries were sent."""
        self.tick_duration.observe(duration_s)
        if queries is not None:
            self.queries_per_tick.set(queries)

    def mark_success(self) -> None:
        now = self.clock()
        with self._lock:
            self._last_success_s = now
            self._marks += 1
            self._success_mark = self._marks
        self.last_success.set(now)

    def mark_failure(self, why: str) -> None:
        """The last pass could not do its job (listing failed, Prometheus unreachable, no autoscaler evaluated):
        not ready until a later pass succeeds, whatever the age of the last success."""
        with self._lock:
            self._marks += 1
            self._failure_mark = self._marks
            self._failure = why
            self._last_error = why

    def set_failing(self, failing: Mapping[str, str]) -> None:
        """The autoscalers the last pass could not evaluate, with why (shown by /readyz, counted in a gauge)."""
        with self._lock:
            self._failing = dict(failing)
        self.failing.set(len(failing))

    def set_leader(self, is_leader: bool) -> None:
        self.leader.set(1 if is_leader else 0)

    def forget(self, key: str) -> None:
        """Drop the series of a deleted autoscaler."""
        with self._lock:
            known = self._known.pop(key, set())
        for item in known:
            if item[0] == "pool":
                for gauge in (self.desired_replicas, self.current_replicas, self.ready_replicas):
                    gauge.remove(key, item[1])
            elif item[0] == "target":
                self.target_latency.remove(key, item[1], item[2])
            elif item[0] == "quantile":
                self.observed_quantiles.remove(key, item[1], item[2])
        for name in ("ttft", "itl"):
            self.observed_latency.remove(key, name)
        self.observed_request_rate.remove(key)

    def _remember(self, key: str, item: tuple[str, ...]) -> None:
        with self._lock:
            self._known.setdefault(key, set()).add(item)

    # -- probes --------------------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): ready while the last successful tick is younger than ``ready_max_age_s`` and no failed
        pass came after it; ``why`` also names the autoscalers the last pass could not evaluate."""
        with self._lock:
            last, err = self._last_success_s, self._last_error
            failed_later = self._failure_mark > self._success_mark
            failure, failing = self._failure, dict(self._failing)
        note = ""
        if failing:
            shown = "; ".join(f"{k}: {v}" for k, v in sorted(failing.items())[:5])
            note = f"; {len(failing)} not evaluated: {shown}"
        if last is None:
            return False, "no successful tick yet" + (f" (last error: {err})" if err else "") + note
        if failed_later:
            return False, f"last tick failed: {failure}" + note
        age = self.clock() - last
        if age > self.ready_max_age_s:
            return False, f"last successful tick {age:.0f} s ago" + (f" (last error: {err})" if err else "") + note
        return True, f"last successful tick {age:.0f} s ago" + note

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def make_app(telemetry: ControllerTelemetry) -> web.Application:
    """The aiohttp app: GET /metrics, /healthz, /readyz."""

    async def metrics(_request: web.Request) -> web.Response:
        body = telemetry.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        ready, why = telemetry.readiness()
        return web.Response(text=f"{'ok' if ready else 'not ready'}: {why}\n", status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class TelemetryServer(ThreadedServer):
    """``make_app`` served on its own event loop in a daemon thread. ``port=0`` picks a free port."""

    def __init__(self, telemetry: ControllerTelemetry, *, host: str = "0.0.0.0", port: int = 0) -> None:
        super().__init__(lambda: make_app(telemetry), host=host, port=port, name="pdscale-telemetry")
        self.telemetry = telemetry


# -- logging ------------------------------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)
CONTROLLER_FIELDS = ("autoscaler", "pool", "current", "desired", "reason")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, then the ``extra`` fields the
    Controller passes (autoscaler, pool, current, desired, reason) and any other extra attribute."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTROLLER_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRS and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=_jsonable, ensure_ascii=False)


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)

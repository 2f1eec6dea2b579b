"""The External Metrics API over HTTPS: aiohttp routes for discovery, OpenAPI and metric values, behind
authentication and authorization (``metrics_adapter.auth``), answering from the cache (``metrics_adapter.provider``)
and never from Prometheus.

Order per request, as in an aggregated API server: authenticate (401), check the request's shape (400 for a bad
namespace or selector, 404 for a metric pdscale does not serve: nothing malformed reaches a SubjectAccessReview),
authorize (403), answer (200, 404 namespace without autoscalers, 503 stale or unavailable). Every error is a
``metav1.Status`` JSON body. ``/healthz`` and ``/livez`` answer while the process runs; ``/readyz`` while a fresh
snapshot is loaded.

``AdapterServer`` runs the app on its own event loop in a daemon thread, so a synchronous caller (the controller's
loop, the standalone adapter's refresher) never blocks it; on that loop it also re-reads the serving certificate
when its files change and the authentication ConfigMap every ``config_refresh_s``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from autoscaler.threaded_server import ThreadedServer
from metrics_adapter import wire
from metrics_adapter.auth import (
    ALWAYS_ALLOW_PATHS,
    Attributes,
    AuthenticationConfig,
    Authenticator,
    Authorizer,
    ReviewError,
    forbidden_message,
)
from metrics_adapter.provider import (
    CATALOG,
    ExternalMetricsCache,
    MetricUnavailableError,
    NamespaceNotServedError,
    UnknownMetricError,
)
from metrics_adapter.selectors import Selector, SelectorError, parse_selector
from metrics_adapter.tls import ServingTLS

log = logging.getLogger("pdscale.adapter.server")

_BASE = f"/apis/{wire.GROUP_VERSION}"
METRIC_ROUTE = f"{_BASE}/namespaces/{{namespace:[^/]+}}/{{metric:[^/]+}}"  # any segment: validated, not routed
MAX_REQUEST_LINE = 65536
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusError(Exception):
    def __init__(self, code: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def status_response(code: int, message: str, details: dict[str, Any] | None = None) -> web.Response:
    return web.json_response(wire.status(code, message, details=details), status=code)


@dataclass(frozen=True)
class MetricRequest:
    namespace: str
    metric: str
    selector: Selector


METRIC_REQUEST = web.RequestKey("metric_request", MetricRequest)
# An HPA asks the same selector every sync: parse each distinct (valid) one once. Selectors are immutable values.
_parse_selector_cached = functools.lru_cache(maxsize=4096)(parse_selector)


def parse_metric_request(request: web.Request) -> MetricRequest:
    """Validate a metric-values request; raise StatusError (400 or 404) naming the problem."""
    namespace = request.match_info["namespace"]
    metric = request.match_info["metric"]
    if len(namespace) > 63 or not _NAMESPACE_RE.match(namespace):
        raise StatusError(400, f"invalid namespace {namespace!r}: a DNS-1123 label (lower case alphanumerics and "
                               "'-', at most 63 characters) is required")  # fmt: skip
    if metric not in CATALOG:
        raise StatusError(404, str(UnknownMetricError(metric)),
                          {"name": metric, "group": wire.GROUP, "kind": metric})  # fmt: skip
    given = request.query.getall("labelSelector", [])
    if len(given) > 1:
        raise StatusError(400, f"labelSelector given {len(given)} times; give it once")
    try:
        selector = _parse_selector_cached(given[0] if given else "")
    except SelectorError as exc:
        raise StatusError(400, f"invalid labelSelector: {exc}") from None
    return MetricRequest(namespace, metric, selector)


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der if isinstance(der, bytes) else None


def make_app(
    cache: ExternalMetricsCache,
    authenticator: Authenticator,
    authorizer: Authorizer,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The aiohttp application (see the module doc)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ALWAYS_ALLOW_PATHS:
            return await handler(request)
        try:
            user, how = await authenticator.authenticate(_peer_certificate(request), request.headers)
            if user is None:
                raise StatusError(401, f"Unauthorized: {how}")
            route = request.match_info.route.resource
            if route is not None and route.name == "metric-values" and request.method in ("GET", "HEAD"):
                parsed = parse_metric_request(request)
                request[METRIC_REQUEST] = parsed
                attrs = Attributes("list", request.path, parsed.namespace, wire.GROUP, wire.VERSION, parsed.metric)
            else:
                attrs = Attributes("get", request.path)
            allowed, _reason = await authorizer.authorize(user, attrs)
            if not allowed:
                raise StatusError(403, forbidden_message(user, attrs))
            return await handler(request)
        except StatusError as exc:
            return status_response(exc.code, exc.message, exc.details)
        except ReviewError as exc:
            log.warning("authorization check failed: %s", exc)
            return status_response(500, f"authorization check failed: {exc}")
        except web.HTTPException as exc:  # no route (404), wrong method (405)
            return status_response(exc.status, f"{exc.reason}: {request.method} {request.path}")

    async def metric_values(request: web.Request) -> web.StreamResponse:
        parsed = request[METRIC_REQUEST]
        try:
            samples = cache.lookup(parsed.namespace, parsed.metric, parsed.selector, clock())
        except (UnknownMetricError, NamespaceNotServedError) as exc:
            return status_response(404, str(exc), {"name": parsed.metric, "group": wire.GROUP})
        except MetricUnavailableError as exc:
            return status_response(503, str(exc))
        return web.json_response(wire.value_list(samples))

    def static(doc: dict[str, Any]) -> Handler:
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.json_response(doc)

        return handler

    async def healthz(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.StreamResponse:
        snap = cache.snapshot
        if snap is None:
            return web.Response(text="not ready: no snapshot yet\n", status=503)
        age = clock() - snap.published_at_s
        if clock() > snap.fresh_until_s:
            return web.Response(text=f"not ready: snapshot {age:.0f} s old\n", status=503)
        return web.Response(text=f"ok: snapshot {age:.0f} s old, {snap.autoscalers} autoscalers\n")

    app = web.Application(middlewares=[guard])
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/livez", healthz)
    r.add_get("/readyz", readyz)
    for slash in ("", "/"):  # clients ask for both spellings (the kubernetes client's ApisApi: "/apis/")
        r.add_get(f"/apis{slash}", static(wire.api_group_list()))
        r.add_get(f"/apis/{wire.GROUP}{slash}", static(wire.api_group()))
        r.add_get(f"{_BASE}{slash}", static(wire.api_resource_list(CATALOG)))
    r.add_get(METRIC_ROUTE, metric_values, name="metric-values")
    r.add_get("/openapi/v2", static(wire.openapi_v2()))
    r.add_get("/openapi/v3", static(wire.openapi_v3_index()))
    r.add_get(f"/openapi/v3{_BASE}", static(wire.openapi_v3()))
    return app


class AdapterServer:
    """``make_app`` over TLS on ``host:port`` (0: a free port) in a daemon thread, plus its upkeep: the serving
    certificate re-read every ``cert_check_s`` when its files changed, the authentication ConfigMap re-read every
    ``config_refresh_s`` (``load_config``; None: never)."""

    def __init__(
        self,
        cache: ExternalMetricsCache,
        authenticator: Authenticator,
        authorizer: Authorizer,
        tls: ServingTLS,
        *,
        host: str = "0.0.0.0",
        port: int = 6443,
        load_config: Callable[[], AuthenticationConfig] | None = None,
        config_refresh_s: float = 60.0,
        cert_check_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.tls = tls
        self.host = host
        self.port = port
        self.load_config = load_config
        self.config_refresh_s = config_refresh_s
        self.cert_check_s = cert_check_s
        self.clock = clock
        self._server: ThreadedServer | None = None
        tls.trust_client_cas(authenticator.config.ca_pem)

    async def _upkeep(self) -> None:
        next_config = time.monotonic() + self.config_refresh_s
        while True:
            await asyncio.sleep(min(self.cert_check_s, self.config_refresh_s))
            try:
                if self.tls.reload_if_changed():
                    log.info("serving certificate reloaded from %s", self.tls.cert_file)
            except ValueError as exc:
                log.warning("serving certificate not reloaded: %s", exc)
            if self.load_config is not None and time.monotonic() >= next_config:
                next_config = time.monotonic() + self.config_refresh_s
                try:
                    config = await asyncio.to_thread(self.load_config)
                    self.tls.trust_client_cas(config.ca_pem)
                    self.authenticator.config = config
                except ValueError as exc:
                    log.warning("authentication ConfigMap not refreshed: %s", exc)

    def start(self, timeout_s: float = 10.0) -> AdapterServer:
        self._server = ThreadedServer(
            lambda: make_app(self.cache, self.authenticator, self.authorizer, clock=self.clock),
            host=self.host,
            port=self.port,
            name="pdscale-adapter",
            ssl_context=self.tls.context,
            background=self._upkeep,
            # request lines up to 64 KiB reach the app, so an oversized selector gets a Status, not a bare 400
            runner_args={"max_line_size": MAX_REQUEST_LINE},
        ).start(timeout_s)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.tls.close()

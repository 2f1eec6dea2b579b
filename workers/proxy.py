"""``pdscale proxy``: the prefill/decode proxy whose histograms pdscale's default metric profile reads.

Protocol: vLLM's disaggregated two-step flow (reference/vllm-metrics.md §5, vLLM's ``toy_proxy_server.py``, which
``vllm-router --vllm-pd-disaggregation`` speaks too). For each ``/v1/completions`` or ``/v1/chat/completions``:

1. prefill leg: the client's body with ``stream=false``, ``max_tokens=1``, ``max_completion_tokens=1``, without
   ``stream_options``/``min_tokens``/``min_completion_tokens``, plus ``kv_transfer_params`` = ``do_remote_decode``
   true, ``do_remote_prefill`` false and null remote fields, to the prefill endpoint with the least outstanding
   tokens; the returned ``kv_transfer_params`` are kept, the sampled token is thrown away;
2. decode leg: the client's body plus those ``kv_transfer_params`` to the least-loaded decode endpoint, same
   ``X-Request-Id``, streamed to the client. A non-streaming client's decode leg is streamed internally and folded
   back into one JSON body (so its TTFT and ITL are measured too), unless it asks for fields a fold cannot
   reproduce (logprobs, tools, echo): those are passed through whole.

Aggregated mode (``--aggregated``) skips step 1: one pool, the decode pool.

Failures: a request goes to another upstream (``--max-attempts``, default 3 per leg) only while nothing has reached
the client: refused/failed connections, 5xx, a 503 from a draining worker, a stream that ends before its first
byte was relayed. A 4xx is the client's and is returned as is. No routable upstream: 503 with ``Retry-After``
(outcome ``no_upstream``). An upstream that dies mid-stream: the client gets vLLM's SSE error event, then
``data: [DONE]``; the request is counted ``5xx``. A client that disconnects: the upstream request is closed (the
worker frees the slot and counts an abort) and the request is counted ``client_abort``.

Drain: on SIGTERM ``/health`` answers 503 at once, new requests get 503 + ``Retry-After``, requests in flight
finish, and the process exits 0; what is still running after ``--drain-timeout-s`` is cut (an SSE error event,
then ``[DONE]``) and the exit status is 1, as ``pdscale worker`` does.

Endpoints: ``--prefill URL``/``--decode URL`` (repeatable), ``--endpoints-file FILE`` (JSON/YAML, re-read when it
changes), or Kubernetes (``--k8s-prefill-selector``/``--k8s-decode-selector``: pods or EndpointSlices, watched).
Each listed endpoint is probed on ``/health`` every ``--health-interval-s``; only those answering 200 get requests.
Metrics: ``workers/proxy_metrics.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from workers.endpoints import (
    DECODE,
    DOWN,
    DRAINING,
    PREFILL,
    READY,
    ROLES,
    Endpoint,
    EndpointPool,
    EndpointsFileWatcher,
    Lease,
    Snapshot,
    max_output_tokens_of,
    prompt_tokens_of,
)
from workers.proxy_metrics import ProxyMetrics
from workers.proxy_stream import (
    DONE,
    StreamFolder,
    error_body,
    foldable,
    is_token_event,
    sse_bytes,
    sse_events,
)

log = logging.getLogger("pdscale.proxy")

GENERATE_PATHS = ("/v1/completions", "/v1/chat/completions")
UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    aggregated: bool = False
    max_attempts: int = 3
    health_interval_s: float = 1.0
    health_timeout_s: float = 1.0
    connect_timeout_s: float = 5.0
    upstream_timeout_s: float = 600.0  # longest silence from an upstream (no byte) before it counts as failed
    drain_timeout_s: float = 60.0
    retry_after_s: int = 1
    model_name: str | None = None  # label for every series; else the body's model when an upstream serves it
    file_poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"--max-attempts must be >= 1, got {self.max_attempts}")
        for name in ("health_interval_s", "health_timeout_s", "connect_timeout_s", "upstream_timeout_s",
                     "file_poll_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"--drain-timeout-s must be >= 0, got {self.drain_timeout_s}")


class _ClientGone(Exception):
    """Writing to the client failed: it hung up. Not an upstream failure (never retried, never ``5xx``)."""


class _NoUpstream(Exception):
    """No routable endpoint was left for a leg (none listed/ready, or every one tried failed to take it)."""


@dataclass
class _UpstreamFailure(Exception):
    """A leg failed on every attempt; ``status``/``body`` are what the client gets."""

    status: int
    body: dict[str, Any]
    final: bool = False  # a 4xx (or a mid-stream break): not the endpoint's fault, or too late to retry


@dataclass(eq=False)  # hashed by identity: the proxy keeps a set of the requests in flight
class _Request:
    """One client request's bookkeeping."""

    started: float
    model: str
    chat: bool
    request_id: str
    prompt_tokens: int
    tokens_sent: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    usage: dict[str, Any] | None = None
    response: web.StreamResponse | None = None  # set once bytes went to the client
    outcome: str | None = None

    @property
    def committed(self) -> bool:
        """Bytes reached the client, or tokens were already taken into a fold: a retry would repeat them."""
        return self.response is not None or self.first_token_at is not None


class Proxy:
    """The proxy's state and handlers; ``run_proxy`` wires it to a server, sources and signals."""

    def __init__(self, cfg: ProxyConfig, metrics: ProxyMetrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or ProxyMetrics()
        self.pools = {role: EndpointPool(role) for role in ROLES}
        self.known_models: set[str] = set()
        self.draining = False
        self.in_flight = 0
        self._active: set[_Request] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._session: aiohttp.ClientSession | None = None
        self._probing: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        if cfg.model_name:
            self.metrics.touch(cfg.model_name)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.cfg.connect_timeout_s, sock_read=self.cfg.upstream_timeout_s
            ),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Proxy.open() first"
        return self._session

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in GENERATE_PATHS:
            app.router.add_post(path, self.handle_generate)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/metrics", self.handle_metrics)
        return app

    def start_drain(self) -> None:
        if not self.draining:
            log.warning("draining: readiness fails, new requests get 503, %d in flight", self.in_flight)
        self.draining = True
        self.metrics.draining.set(1)

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def cut_remaining(self) -> int:
        """After the drain timeout: streams already sent to clients end with vLLM's SSE error and [DONE]; the
        others are closed with the server. Each counts as ``5xx``. Returns how many were cut."""
        cut = list(self._active)
        for req in cut:
            req.outcome = "5xx"
            if req.response is not None:
                with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError, RuntimeError):
                    message = "the proxy is shutting down: the request was cut after the drain timeout"
                    await req.response.write(sse_bytes(error_body(message, 503)) + sse_bytes(DONE))
        return len(cut)

    # ---- endpoints ------------------------------------------------------------------------------------------

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Make the pools match a source snapshot; new endpoints are probed at once."""
        for role in ROLES:
            new = self.pools[role].update(snap.get(role, {}))
            for ep in new:
                self._spawn_probe(ep)
        self._export_endpoint_counts()

    def _export_endpoint_counts(self) -> None:
        for role, pool in self.pools.items():
            for state, n in pool.counts().items():
                self.metrics.endpoints.labels(role, state).set(n)

    def _spawn_probe(self, ep: Endpoint) -> None:
        task = asyncio.get_running_loop().create_task(self._probe_once(ep))
        self._background.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._background.discard)

    async def _probe_once(self, ep: Endpoint) -> None:
        """Probe unless a probe of the same endpoint is already running (new endpoints are probed at once,
        and the health loop may come round at the same moment)."""
        key = f"{ep.role} {ep.url}"
        if key in self._probing:
            return
        self._probing.add(key)
        try:
            await self.probe(ep)
        finally:
            self._probing.discard(key)

    async def probe(self, ep: Endpoint) -> None:
        """GET /health: 200 ready, 503 draining, anything else or no answer down."""
        before = ep.health
        try:
            async with self.session.get(
                f"{ep.url}/health", timeout=aiohttp.ClientTimeout(total=self.cfg.health_timeout_s)
            ) as resp:
                await resp.read()
                ep.health = READY if resp.status == 200 else DRAINING if resp.status == 503 else DOWN
        except (aiohttp.ClientError, TimeoutError, OSError):
            ep.health = DOWN
        if ep.health == READY and before != READY:
            await self._learn_models(ep)
        if ep.health != before:
            log.info("%s endpoint %s: %s -> %s", ep.role, ep.url, before, ep.health)
            self._export_endpoint_counts()

    async def _learn_models(self, ep: Endpoint) -> None:
        try:
            async with self.session.get(
                f"{ep.url}/v1/models", timeout=aiohttp.ClientTimeout(total=self.cfg.health_timeout_s)
            ) as resp:
                data = await resp.json(content_type=None) if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return
        for item in data.get("data", []) if isinstance(data, Mapping) else []:
            name = item.get("id") if isinstance(item, Mapping) else None
            if isinstance(name, str) and name not in self.known_models:
                self.known_models.add(name)
                if not self.cfg.model_name:
                    self.metrics.touch(name)

    async def health_loop(self) -> None:
        while True:
            eps = [ep for pool in self.pools.values() for ep in pool if ep.listed]
            await asyncio.gather(*(self._probe_once(ep) for ep in eps))
            for pool in self.pools.values():
                pool.forget_unlisted()
            self._export_endpoint_counts()
            await asyncio.sleep(self.cfg.health_interval_s)

    def _mark(self, ep: Endpoint, health: str) -> None:
        if ep.health != health:
            log.info("%s endpoint %s: %s -> %s (request)", ep.role, ep.url, ep.health, health)
            ep.health = health
            self._export_endpoint_counts()

    # ---- plain handlers -------------------------------------------------------------------------------------

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.draining else 200)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.metrics.registry), headers={"Content-Type": content_type})

    async def handle_models(self, request: web.Request) -> web.Response:
        pool = self.pools[DECODE]
        for ep in sorted(pool.routable(), key=lambda e: e.url):
            try:
                async with self.session.get(f"{ep.url}/v1/models") as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        return web.Response(body=body, content_type="application/json")
            except (aiohttp.ClientError, TimeoutError, OSError):
                self._mark(ep, DOWN)
        return self._unavailable("no ready upstream to list models")

    def _unavailable(self, message: str) -> web.Response:
        return web.json_response(
            error_body(message, 503), status=503, headers={"Retry-After": str(self.cfg.retry_after_s)}
        )

    # ---- generation -----------------------------------------------------------------------------------------

    def _model_label(self, body: Mapping[str, Any]) -> str:
        if self.cfg.model_name:
            return self.cfg.model_name
        model = body.get("model")
        return model if isinstance(model, str) and model in self.known_models else UNKNOWN_MODEL

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        chat = request.path.endswith("/chat/completions")
        if self.draining:
            self.metrics.requests.labels(self.cfg.model_name or UNKNOWN_MODEL, "5xx").inc()
            return self._unavailable("the proxy is shutting down")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.metrics.requests.labels(self.cfg.model_name or UNKNOWN_MODEL, "4xx").inc()
            return web.json_response(error_body(f"malformed JSON body: {exc}", 400), status=400)
        req = _Request(
            started=started,
            model=self._model_label(body),
            chat=chat,
            request_id=request.headers.get("X-Request-Id") or uuid.uuid4().hex,
            prompt_tokens=prompt_tokens_of(body),
        )
        self.in_flight += 1
        self._active.add(req)
        self._idle.clear()
        self.metrics.in_flight.labels(req.model).inc()
        self.metrics.pending.labels(req.model).inc()
        self.metrics.arrived_requests.labels(req.model).inc()
        self.metrics.arrived_prompt_tokens.labels(req.model).inc(req.prompt_tokens)
        try:
            return await self._generate(request, body, req)
        except asyncio.CancelledError:  # the client hung up while the proxy waited (handler_cancellation)
            req.outcome = "client_abort"
            raise
        except _ClientGone:  # the client hung up while the proxy wrote; closing the upstream frees its slot
            req.outcome = "client_abort"
            return req.response or web.Response(status=499)
        finally:
            self._finish(req)

    def _finish(self, req: _Request) -> None:
        m = self.metrics
        outcome = req.outcome or "5xx"
        m.requests.labels(req.model, outcome).inc()
        m.e2e.labels(req.model).observe(time.perf_counter() - req.started)
        m.in_flight.labels(req.model).dec()
        if req.first_token_at is None:
            m.pending.labels(req.model).dec()
        if req.usage:
            m.prompt_tokens.labels(req.model).inc(int(req.usage.get("prompt_tokens") or 0))
        m.generation_tokens.labels(req.model).inc(req.tokens_sent)
        self.in_flight -= 1
        self._active.discard(req)
        if self.in_flight == 0:
            self._idle.set()

    def _token(self, req: _Request) -> None:
        now = time.perf_counter()
        if req.first_token_at is None:
            req.first_token_at = now
            self.metrics.ttft.labels(req.model).observe(now - req.started)
            self.metrics.pending.labels(req.model).dec()
        elif req.last_token_at is not None:
            self.metrics.itl.labels(req.model).observe(now - req.last_token_at)
        req.last_token_at = now
        req.tokens_sent += 1

    async def _generate(
        self, request: web.Request, body: dict[str, Any], req: _Request
    ) -> web.StreamResponse:
        path = request.path
        headers = {"X-Request-Id": req.request_id}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        client_stream = bool(body.get("stream"))
        try:
            decode_body = dict(body)
            if not self.cfg.aggregated:
                kv = await self._prefill(path, prefill_body(body), headers, req)
                if kv is not None:
                    decode_body["kv_transfer_params"] = kv
            fold = not client_stream and foldable(body)
            if fold:
                decode_body["stream"] = True
                decode_body["stream_options"] = {"include_usage": True}
            decode_tokens = req.prompt_tokens + max_output_tokens_of(body)
            if client_stream or fold:
                return await self._decode_stream(
                    request, path, decode_body, headers, req, decode_tokens, fold
                )
            return await self._decode_whole(path, decode_body, headers, req, decode_tokens)
        except _NoUpstream as exc:
            req.outcome = "no_upstream"
            return self._unavailable(str(exc))
        except _UpstreamFailure as exc:
            req.outcome = "4xx" if 400 <= exc.status < 500 else "5xx"
            return web.json_response(exc.body, status=exc.status)

    async def _attempts(
        self,
        role: str,
        tokens: int,
        req: _Request,
        send: Callable[[Lease], Awaitable[Any]],
    ) -> Any:
        """Run ``send`` on the least-loaded endpoints of ``role`` until one succeeds, a final failure, or
        ``max_attempts``/no endpoint left. ``send`` raises _UpstreamFailure (final or retryable) or
        aiohttp/OS errors (connection: the endpoint is marked down)."""
        pool = self.pools[role]
        tried: list[str] = []
        last: _UpstreamFailure | None = None
        for attempt in range(self.cfg.max_attempts):
            lease = pool.pick(tokens, exclude=tried)
            if lease is None:
                break
            ep = lease.endpoint
            tried.append(ep.url)
            if attempt:
                self.metrics.retries.labels(role).inc()
            try:
                return await send(lease)
            except _UpstreamFailure as exc:
                if exc.final:
                    raise
                last = exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError) as exc:
                if req.committed:
                    raise  # tokens already went out (or were folded): not retryable
                self.metrics.upstream_errors.labels(role, "connect").inc()
                self._mark(ep, DOWN)
                log.info("%s %s failed (%s); %s", role, ep.url, exc or type(exc).__name__, "retrying")
                last = _UpstreamFailure(
                    503, error_body(f"{role} upstream {ep.url} failed: {exc or type(exc).__name__}", 503)
                )
            finally:
                lease.release()
        if last is None or last.status == 503:
            ready = len(pool.routable())
            raise _NoUpstream(
                f"no {role} upstream could take the request ({len(tried)} tried, {ready} ready)"
                if tried
                else f"no {role} upstream is ready"
            )
        raise last

    def _classify(self, role: str, ep: Endpoint, status: int, raw: bytes) -> _UpstreamFailure:
        """A non-200 upstream answer: 4xx final, 503 draining (retry elsewhere), other 5xx retryable."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or "error" not in body:
                raise ValueError
        except ValueError:
            text = raw.decode("utf-8", errors="replace")[:500]
            body = error_body(f"{role} upstream {ep.url} answered {status}: {text}", status)
        if 400 <= status < 500:
            return _UpstreamFailure(status, body, final=True)
        if status == 503:
            self.metrics.upstream_errors.labels(role, "draining").inc()
            self._mark(ep, DRAINING)
        else:
            self.metrics.upstream_errors.labels(role, "status_5xx").inc()
        return _UpstreamFailure(status if status >= 500 else 502, body)

    async def _prefill(
        self, path: str, body: dict[str, Any], headers: dict[str, str], req: _Request
    ) -> dict[str, Any] | None:
        async def send(lease: Lease) -> dict[str, Any] | None:
            ep = lease.endpoint
            async with self.session.post(f"{ep.url}{path}", json=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise self._classify(PREFILL, ep, resp.status, raw)
            try:
                data = json.loads(raw)
            except ValueError:
                self.metrics.upstream_errors.labels(PREFILL, "bad_response").inc()
                raise _UpstreamFailure(
                    502, error_body(f"prefill upstream {ep.url}: body is not JSON", 502)
                ) from None
            kv = data.get("kv_transfer_params") if isinstance(data, dict) else None
            return kv if isinstance(kv, dict) else None

        result: dict[str, Any] | None = await self._attempts(PREFILL, req.prompt_tokens, req, send)
        return result

    async def _decode_whole(
        self, path: str, body: dict[str, Any], headers: dict[str, str], req: _Request, tokens: int
    ) -> web.Response:
        """A non-streaming request the proxy cannot fold: passed through as one body."""

        async def send(lease: Lease) -> web.Response:
            ep = lease.endpoint
            async with self.session.post(f"{ep.url}{path}", json=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise self._classify(DECODE, ep, resp.status, raw)
                content_type = resp.headers.get("Content-Type", "application/json")
            with contextlib.suppress(ValueError):
                data = json.loads(raw)
                usage = data.get("usage") if isinstance(data, dict) else None
                if isinstance(usage, dict):
                    req.usage = usage
                    req.tokens_sent = int(usage.get("completion_tokens") or 0)
            req.outcome = "ok"
            return web.Response(
                body=raw, status=200, headers={"Content-Type": content_type, "X-Request-Id": req.request_id}
            )

        result: web.Response = await self._attempts(DECODE, tokens, req, send)
        return result

    async def _decode_stream(
        self,
        request: web.Request,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        req: _Request,
        tokens: int,
        fold: bool,
    ) -> web.StreamResponse:
        folder = StreamFolder(chat=req.chat) if fold else None

        async def send(lease: Lease) -> web.StreamResponse:
            ep = lease.endpoint
            async with self.session.post(f"{ep.url}{path}", json=body, headers=headers) as resp:
                if resp.status != 200:
                    raise self._classify(DECODE, ep, resp.status, await resp.read())
                return await self._relay(request, resp, lease, req, folder)

        try:
            result: web.StreamResponse = await self._attempts(DECODE, tokens, req, send)
            return result
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError) as exc:
            # only reached once bytes went to the client (before that, _attempts retries)
            return await self._broken_stream(
                req, f"decode upstream failed mid-stream: {exc or type(exc).__name__}"
            )

    async def _relay(
        self,
        request: web.Request,
        resp: aiohttp.ClientResponse,
        lease: Lease,
        req: _Request,
        folder: StreamFolder | None,
    ) -> web.StreamResponse:
        """Relay (or fold) one upstream stream. Before the first relayed byte, a broken or erroring stream raises
        (retryable); after it, the client gets an SSE error."""
        ep = lease.endpoint
        done = False
        async for event in sse_events(resp.content.iter_any()):
            if event.data is None:
                continue
            if event.data == DONE:
                done = True
                if folder is None:
                    await self._send(request, req, event.raw + b"\n\n")
                break
            try:
                chunk = json.loads(event.data)
            except ValueError:
                chunk = None
            if not isinstance(chunk, dict):
                self.metrics.upstream_errors.labels(DECODE, "bad_response").inc()
                if not req.committed:
                    raise _UpstreamFailure(502, error_body(f"decode upstream {ep.url}: bad SSE event", 502))
                return await self._broken_stream(req, f"decode upstream {ep.url} sent a malformed event")
            if "error" in chunk and not chunk.get("choices"):
                self.metrics.upstream_errors.labels(DECODE, "midstream").inc()
                if not req.committed:
                    raise _UpstreamFailure(
                        503, chunk
                    )  # retry elsewhere (e.g. a worker that started draining)
                if folder is None:
                    await self._send(request, req, event.raw + b"\n\n" + sse_bytes(DONE))
                    req.outcome = "5xx"
                    return self._response(req)
                raise _UpstreamFailure(int(chunk["error"].get("code") or 500), chunk, final=True)
            if chunk.get("usage"):
                req.usage = dict(chunk["usage"])
            token = is_token_event(chunk)
            if folder is not None:
                folder.add(chunk)
            else:
                await self._send(request, req, event.raw + b"\n\n")
            if token:
                self._token(req)
                lease.consume(1)
        if not done:
            self.metrics.upstream_errors.labels(DECODE, "midstream").inc()
            if not req.committed:
                raise aiohttp.ClientPayloadError(
                    f"decode upstream {ep.url} closed the stream before any token"
                )
            return await self._broken_stream(req, f"decode upstream {ep.url} closed the stream before [DONE]")
        if req.usage and req.usage.get("completion_tokens") is not None:
            req.tokens_sent = max(req.tokens_sent, int(req.usage["completion_tokens"]))
        req.outcome = "ok"
        if folder is not None:
            return web.json_response(folder.body(), headers={"X-Request-Id": req.request_id})
        return self._response(req)

    def _response(self, req: _Request) -> web.StreamResponse:
        assert req.response is not None
        return req.response

    async def _send(self, request: web.Request, req: _Request, data: bytes) -> None:
        if req.response is None:
            resp = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Request-Id": req.request_id,
                },
            )
            try:
                await resp.prepare(request)
            except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
                raise _ClientGone from exc
            req.response = resp
        try:
            await req.response.write(data)
        except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
            raise _ClientGone from exc

    async def _broken_stream(self, req: _Request, message: str) -> web.StreamResponse:
        """End a stream that already reached the client with vLLM's SSE error event and [DONE]."""
        log.warning("request %s: %s", req.request_id, message)
        req.outcome = "5xx"
        if req.response is None:  # folded: nothing sent yet, a plain error body
            return web.json_response(error_body(message, 502), status=502)
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
            await req.response.write(sse_bytes(error_body(message, 502)) + sse_bytes(DONE))
        return req.response


def prefill_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The prefill leg's body (vLLM's toy_proxy_server / vllm-router P/D flow)."""
    out = {
        k: v for k, v in body.items() if k not in ("stream_options", "min_tokens", "min_completion_tokens")
    }
    out["stream"] = False
    out["max_tokens"] = 1
    if "max_completion_tokens" in body:
        out["max_completion_tokens"] = 1
    out["kv_transfer_params"] = {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }
    return out


# ---------------------------------------------------------------------------------------------------------------
# The process


async def _file_loop(proxy: Proxy, watcher: EndpointsFileWatcher, poll_s: float) -> None:
    while True:
        snap = watcher.poll()
        if snap is not None:
            proxy.apply_snapshot(snap)
        await asyncio.sleep(poll_s)


async def serve(
    cfg: ProxyConfig,
    *,
    static: Snapshot | None = None,
    endpoints_file: Path | None = None,
    kube: Any = None,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the proxy until SIGTERM/SIGINT (or ``stop``), then drain. Returns the exit status."""
    proxy = Proxy(cfg)
    await proxy.open()
    tasks: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # handlers still running at cleanup were cut already (cut_remaining): no second grace period
    runner = web.AppRunner(proxy.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        if static is not None:
            proxy.apply_snapshot(static)
        if endpoints_file is not None:
            watcher = EndpointsFileWatcher(endpoints_file)
            snap = watcher.poll()
            if snap is not None:
                proxy.apply_snapshot(snap)
            elif watcher.last_error:
                log.warning("starting with no endpoints: %s", watcher.last_error)
            tasks.append(loop.create_task(_file_loop(proxy, watcher, cfg.file_poll_s)))
        if kube is not None:
            tasks.append(loop.create_task(kube.run(proxy.apply_snapshot)))
        tasks.append(loop.create_task(proxy.health_loop()))
        site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port, exc)
            return 1
        port = cfg.port
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            port = server.sockets[0].getsockname()[1]
        log.warning("pdscale proxy listening on http://%s:%d (%s)", cfg.host, port,
                    "aggregated" if cfg.aggregated else "prefill/decode")  # fmt: skip
        if ready is not None:
            ready(port)
        await stop.wait()
        proxy.start_drain()
        if await proxy.wait_idle(cfg.drain_timeout_s):
            return 0
        log.error(
            "drain timeout (%.1f s): cutting %d request(s)", cfg.drain_timeout_s, await proxy.cut_remaining()
        )
        return 1
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if kube is not None:
            kube.stop()
        await runner.cleanup()
        await proxy.close()


def proxy_command(args: argparse.Namespace) -> int:
    from workers.endpoints import EndpointError, static_snapshot

    try:
        cfg = ProxyConfig(
            host=args.host,
            port=args.port,
            aggregated=args.aggregated,
            max_attempts=args.max_attempts,
            health_interval_s=args.health_interval_s,
            health_timeout_s=args.health_timeout_s,
            connect_timeout_s=args.connect_timeout_s,
            upstream_timeout_s=args.upstream_timeout_s,
            drain_timeout_s=args.drain_timeout_s,
            model_name=args.model_name,
        )
        static = None
        if args.prefill or args.decode:
            static = static_snapshot(args.prefill or [], args.decode or [])
        kube = None
        if args.k8s_prefill_selector or args.k8s_decode_selector:
            from workers.endpoints_kube import KubeEndpointSource

            kube = KubeEndpointSource.from_args(args)
        endpoints_file = Path(args.endpoints_file) if args.endpoints_file else None
        if static is None and kube is None and endpoints_file is None:
            raise ValueError(
                "no endpoints: give --prefill/--decode URLs, --endpoints-file FILE or --k8s-*-selector"
            )
        if cfg.aggregated and static is not None and static[PREFILL]:
            raise ValueError("--aggregated takes --decode (or --upstream) URLs only, not --prefill")
        if not cfg.aggregated and static is not None and (not static[PREFILL] or not static[DECODE]):
            raise ValueError("prefill/decode mode needs --prefill and --decode URLs (or --aggregated)")
    except (ValueError, EndpointError) as exc:
        print(f"pdscale proxy: {exc}")
        return 2
    return asyncio.run(serve(cfg, static=static, endpoints_file=endpoints_file, kube=kube))

"""The emulated vLLM worker's HTTP server (aiohttp): vLLM's OpenAI surface over a ``RealtimeEngine``.

Every timing comes from ``workers.realtime.RealtimeEngine`` (the simulator's scheduler driven in wall-clock
time); this module only parses requests, streams the engine's tokens as vLLM's SSE chunks, records vLLM's
metrics from the engine's events, and implements the P/D hand-off and graceful drain.

Drain (SIGTERM/SIGINT, or ``begin_drain()``): /health answers 503 at once, new generation requests get 503 in
vLLM's error shape, requests already accepted run to completion. The server exits 0 when the last one finished.
If some are still running after ``drain_timeout_s`` they are cut: a stream gets an SSE error event then
``[DONE]``, a non-streaming request a 503 body, each is counted as ``abort``, and the process exits 1 (so a
cut is visible in pod status). Real vLLM keeps /health at 200 while draining; failing it at once is
deliberate, so load balancers stop routing to a terminating worker (reference/vllm-on-cpu.md, SIGTERM).

A client that disconnects mid-request cancels its handler: the engine request is cancelled (slot and KV freed
at the next step boundary) and counted as ``abort``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from workers.kv_transfer import KVProducer, Role, validate_remote_prefill
from workers.metrics import CacheConfig, EngineGauges, FinishedRequest, StepTokens, WorkerMetrics
from workers.protocol import (
    APIError,
    GenerationRequest,
    RequestKind,
    check_model,
    error_body,
    error_type_for,
    parse_generation,
    parse_json_body,
    validation_error,
)
from workers.responses import (
    DONE_EVENT,
    VLLM_VERSION,
    ChunkWriter,
    dumps,
    error_event,
    full_body,
    models_body,
    system_fingerprint,
)
from workers.tokens import chat_prompt_text, detokenize, output_text, output_token_text, synthetic_token_ids
from workers.vllm import KV_ROLES

log = logging.getLogger("pdscale.worker")

EXIT_DRAINED = 0
EXIT_CUT = 1


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the HTTP layer needs to know (the engine is built by the caller)."""

    served_model_names: tuple[str, ...]
    model_root: str
    role: Role
    max_model_len: int
    block_size: int = 16
    host: str = "127.0.0.1"
    port: int = 8000
    drain_timeout_s: float = 30.0
    kv_cache_memory_bytes: int = 0
    kv_bytes_per_token: int = 0
    max_num_seqs: int = 256


@dataclass
class _InFlight:
    """One accepted generation request, for drain bookkeeping."""

    task: asyncio.Task[Any]
    cut: bool = False


@dataclass
class _Progress:
    """What one request produced so far (for the abort record when it is cut or the client leaves)."""

    tokens: int = 0
    first_token_s: float | None = None
    last_token_s: float | None = None
    finish_reason: str | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _dumps_str(payload: Any) -> str:
    return dumps(payload).decode()


def engine_gauges(engine: Any) -> EngineGauges:
    """Map the engine's snapshot onto vLLM's gauges (decode: inbound KV transfers are ``deferred`` waiting)."""
    snap = engine.snapshot()
    deferred = int(snap.inbound_kv_transfers)
    return EngineGauges(
        running=int(snap.running),
        waiting_capacity=max(0, int(snap.waiting) - deferred),
        waiting_deferred=deferred,
        kv_usage_frac=float(snap.kv_usage_frac),
        preemptions_total=int(snap.preemptions_total),
        kv_fetch_in_progress=deferred,
    )


class WorkerServer:
    """The aiohttp application of one emulated worker around one engine."""

    def __init__(self, config: WorkerConfig, engine: Any, kv_capacity_tokens: int) -> None:
        self.config = config
        self.engine = engine
        self.started_s = int(time.time())
        self.metrics = WorkerMetrics(
            config.served_model_names[0],
            config.max_model_len,
            lambda: engine_gauges(engine),
            CacheConfig(
                block_size=config.block_size,
                num_gpu_blocks=max(1, kv_capacity_tokens // config.block_size),
                kv_cache_memory_bytes=config.kv_cache_memory_bytes,
                max_num_seqs=config.max_num_seqs,
            ),
            kv_connector=KV_ROLES.get(config.role),  # the NixlConnector kv_role real vLLM's command line gets
        )
        self.kv_producer = KVProducer.from_env(config.host, config.block_size)
        self.fingerprint = system_fingerprint(config.model_root)
        self.draining = False
        self.inflight: dict[int, _InFlight] = {}
        self.idle = asyncio.Event()
        self.idle.set()
        self.cut_requests = 0
        self.steps = StepTokens(self.metrics.iteration)
        self.app = self._build_app()

    # ---- application ----

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.get("/health", self.health),
            web.get("/ping", self.health),
            web.post("/ping", self.health),
            web.get("/version", self.version),
            web.get("/metrics", self.metrics_endpoint),
            web.get("/v1/models", self.models),
            web.post("/v1/completions", self.completions),
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/tokenize", self.tokenize),
            web.post("/detokenize", self.detokenize),
        ])
        app.middlewares.append(self._errors_middleware)
        return app

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as exc:
            return web.json_response(exc.body(), status=exc.status, dumps=_dumps_str)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"detail": exc.reason}, status=exc.status, dumps=_dumps_str)

    async def health(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503)
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VLLM_VERSION}, dumps=_dumps_str)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        # vLLM 0.32 answers the text format whatever the Accept header asks (measured).
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(dumps=_dumps_str, data=
            models_body(list(self.config.served_model_names), self.config.model_root, self.config.max_model_len,
                        self.started_s)
        )

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize: the count by the worker's rule (ids are stand-ins; see workers.tokens)."""
        body = parse_json_body(await request.read())
        check_model(body, self.config.served_model_names)
        if "messages" in body:
            messages = body["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise validation_error("body.messages", "list_type", "Input should be a valid list", messages)
            ids = synthetic_token_ids(chat_prompt_text(messages, add_generation_prompt=bool(
                body.get("add_generation_prompt", True))))
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                ids = synthetic_token_ids(prompt)
            else:
                raise validation_error("body.prompt", "string_type", "Input should be a valid string", prompt)
        return web.json_response({"count": len(ids), "max_model_len": self.config.max_model_len, "tokens": ids,
                                  "token_strs": None}, dumps=_dumps_str)

    async def detokenize(self, request: web.Request) -> web.Response:
        body = parse_json_body(await request.read())
        check_model(body, self.config.served_model_names)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and t >= 0 for t in tokens):
            raise validation_error("body.tokens", "list_type", "Input should be a valid list of token ids", tokens)
        return web.json_response({"prompt": detokenize(tokens)}, dumps=_dumps_str)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    # ---- generation ----

    async def _generate(self, request: web.Request, kind: RequestKind) -> web.StreamResponse:
        arrival_s = time.monotonic()
        if self.draining:
            raise APIError(503, "The server is shutting down and does not accept new requests.")
        body = parse_json_body(await request.read())
        req = parse_generation(
            kind,
            body,
            served_model_names=self.config.served_model_names,
            max_model_len=self.config.max_model_len,
            request_id=request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16],
        )
        remote_kv = False
        if self.config.role in ("decode", "both") and req.has_remote_prefill:
            problem = validate_remote_prefill(req.kv_transfer_params or {})
            if problem:
                raise APIError(400, problem, param="kv_transfer_params")
            remote_kv = True
        task = asyncio.current_task()
        assert task is not None
        entry = _InFlight(task)
        self.inflight[id(task)] = entry
        self.idle.clear()
        try:
            return await self._run(request, req, arrival_s, remote_kv, entry)
        finally:
            self.inflight.pop(id(task), None)
            if not self.inflight:
                self.steps.flush()  # idle: every step's tokens have been seen
                self.idle.set()

    async def _run(
        self, request: web.Request, req: GenerationRequest, arrival_s: float, remote_kv: bool, entry: _InFlight
    ) -> web.StreamResponse:
        external = req.prompt_tokens if remote_kv else 0
        try:
            stream = self.engine.submit(req.prompt_tokens, req.max_tokens, remote_kv=remote_kv)
        except RuntimeError:  # the engine stopped accepting (drain began between our check and here)
            raise APIError(503, "The server is shutting down and does not accept new requests.") from None
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        self.metrics.admitted(req.prompt_tokens, external)
        progress = _Progress()
        response: web.StreamResponse | None = None
        writer = ChunkWriter(req, self.fingerprint) if req.stream else None
        try:
            if writer is not None:
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
                await response.prepare(request)
            async for ev in stream:
                now = time.monotonic()
                self.metrics.token_lag.observe(max(0.0, now - ev.deadline_s))
                if progress.tokens == 0:
                    progress.first_token_s = now
                    self.metrics.first_token(arrival_s, now, req.prompt_tokens, external)
                    if remote_kv:
                        self._record_transfer(stream, req.prompt_tokens)
                    self.steps.add(ev.deadline_s, req.prompt_tokens + 1)
                else:
                    assert progress.last_token_s is not None
                    self.metrics.next_token(now - progress.last_token_s)
                    self.steps.add(ev.deadline_s, 1)
                progress.last_token_s = now
                progress.tokens += 1
                finish = ev.finish_reason if ev.finished else None
                if writer is not None and response is not None:
                    if progress.tokens == 1 and req.kind == "chat":
                        await response.write(writer.role_chunk())
                    await response.write(writer.token_chunk(output_token_text(ev.index), finish, progress.tokens))
                if ev.finished:
                    progress.finish_reason = ev.finish_reason or "length"
                    break
            progress.done = True
            self._record(req, stream, arrival_s, progress, external)
            if progress.finish_reason is None:  # the engine ended the stream early (it stopped)
                return await self._answer_error(response, 500, "The engine stopped before the request finished.")
            kv_params = (
                self.kv_producer.params_for(req.request_id, req.prompt_tokens)
                if req.wants_remote_decode and self.config.role in ("prefill", "both")
                else None
            )
            if writer is not None and response is not None:
                if req.include_usage:
                    await response.write(writer.usage_chunk(progress.tokens))
                await response.write(DONE_EVENT)
                await response.write_eof()
                return response
            return web.json_response(
                full_body(req, output_text(0, progress.tokens), progress.tokens, progress.finish_reason, kv_params,
                          self.fingerprint),
                dumps=_dumps_str,
            )
        except asyncio.CancelledError:
            self._abort(req, stream, arrival_s, progress, external)
            if not entry.cut:
                raise  # the client went away: nothing to answer
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return await self._answer_error(
                response, 503, "The server is shutting down: the request was cut after the drain timeout.")
        except ConnectionError:
            self._abort(req, stream, arrival_s, progress, external)
            raise

    def _record_transfer(self, stream: Any, prompt_tokens: int) -> None:
        times = stream.times
        if self.metrics.nixl is not None and times.kv_ready_s is not None:
            blocks = -(-prompt_tokens // self.config.block_size)
            self.metrics.nixl.transfer(times.kv_ready_s - times.arrival_s, blocks,
                                       self.config.block_size * self.config.kv_bytes_per_token)

    def _abort(self, req: GenerationRequest, stream: Any, arrival_s: float, progress: _Progress,
               external: int) -> None:
        stream.cancel()
        if not progress.done:
            progress.done = True
            progress.finish_reason = "abort"
            self._record(req, stream, arrival_s, progress, external)

    async def _answer_error(self, response: web.StreamResponse | None, status: int, message: str) -> web.StreamResponse:
        """An error after the request was accepted: an SSE error event then [DONE] if streaming, else a JSON body."""
        if response is not None:
            with contextlib.suppress(ConnectionError):
                await response.write(error_event(message, error_type_for(status), status))
                await response.write(DONE_EVENT)
                await response.write_eof()
            return response
        return web.json_response(error_body(status, message), status=status, dumps=_dumps_str)

    def _record(self, req: GenerationRequest, stream: Any, arrival_s: float, progress: _Progress,
                external: int) -> None:
        """vLLM's finished-request record: engine-side intervals from the model's times, e2e from the wall clock."""
        times = stream.times
        end_s = progress.last_token_s if progress.finish_reason not in (None, "abort") else None
        self.metrics.finished(FinishedRequest(
            finish_reason=progress.finish_reason or "abort",
            prompt_tokens=req.prompt_tokens,
            generation_tokens=progress.tokens,
            max_tokens=req.max_tokens,
            max_tokens_param=req.max_tokens_param,
            arrival_s=arrival_s,
            scheduled_s=times.scheduled_s,
            first_token_s=times.first_token_s if progress.tokens else None,
            last_token_s=times.last_token_s if progress.tokens else None,
            finished_s=end_s if end_s is not None else time.monotonic(),
            preemptions=int(times.preemptions),
            external_prompt_tokens=external,
        ))

    # ---- drain ----

    def begin_drain(self) -> None:
        if not self.draining:
            log.warning("draining: %d request(s) in flight, timeout %.1f s", len(self.inflight),
                        self.config.drain_timeout_s)
        self.draining = True

    async def wait_drained(self) -> int:
        """Wait for in-flight requests up to the drain timeout; cut the rest. Returns the exit status."""
        try:
            await asyncio.wait_for(self.idle.wait(), timeout=self.config.drain_timeout_s)
            return EXIT_DRAINED
        except TimeoutError:
            pass
        entries = list(self.inflight.values())
        self.cut_requests = len(entries)
        log.error("drain timeout (%.1f s): cutting %d request(s)", self.config.drain_timeout_s, len(entries))
        for entry in entries:
            entry.cut = True
            entry.task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout=5.0)
        return EXIT_CUT


async def serve(server: WorkerServer, *, ready: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain; returns the process exit status."""
    runner = web.AppRunner(server.app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, server.config.host, server.config.port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        server.begin_drain()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await server.engine.start()
    await site.start()
    log.warning("pdscale worker (%s) serving %s on %s:%d", server.config.role,
                ",".join(server.config.served_model_names), server.config.host, server.config.port)
    if ready is not None:
        ready()
    try:
        await stop.wait()
        status = await server.wait_drained()
    finally:
        await runner.cleanup()
        await server.engine.stop()
    return status

"""``pdscale loadgen``: replay a workload against any OpenAI-compatible server and report like ``vllm bench serve``.

Workloads are built by the simulator's own code (``sim/workload.py``): a trace file (``load_trace``), a generator
spec (``generate``), or a closed loop (``closed:users=N,requests=M[,think_s=S],...``, ``parse_closed_loop``: the
first N requests leave at once, each completion releases the next one after ``think_s``), so the live stack and
``pdscale sim run`` see the same requests. ``--rate-scale`` densifies arrivals (``--scale-mode compress`` divides
times by K, ``replicate`` superposes K shifted copies, as in ``pdscale sim run``); ``--duration-s`` keeps the
first seconds of an open-loop workload.

Requests go through the ``openai`` client's streaming API (``AsyncOpenAI``) with ``stream_options.include_usage``,
``ignore_eos`` and max_tokens = the workload's output length, so each answer has exactly that many tokens. Prompts:

* ``--endpoint completions`` (default): a list of token ids of exactly the workload's prompt length (any
  OpenAI/vLLM server takes token-id prompts; the count is exact whatever the tokenizer);
* ``--endpoint chat``: one user message whose text the emulated worker counts as exactly that many tokens by its
  rule (``workers/tokens.py``: one token per word; the chat template adds 10); a real model's tokenizer counts it
  differently.

``--time-scale K``: the emulated workers stretch every modelled duration by K (``pdscale worker --time-scale K``;
0.1 runs ten times faster than the modelled hardware). Loadgen stretches arrivals and think times by the same K and
divides every measured duration by K, so the report is in the model's seconds (client and network overheads are
divided by K too: keep K large enough that they stay small next to the modelled times).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.loadgen_report import RequestRecord, parse_goodput, print_summary, summarize, write_records

log = logging.getLogger("pdscale.loadgen")

CHAT_TEMPLATE_TOKENS = 10  # workers/tokens.py: "<|user|>\n...\n" (5) + "<|assistant|>\n" (5)
TOKEN_ID_LOW, TOKEN_ID_HIGH = 100, 1000  # valid ids in any vocabulary worth the name, away from the specials


class LoadgenError(ValueError):
    """Bad arguments or workload; the message names the flag."""


@dataclass(frozen=True)
class Plan:
    """What to send: lengths per request, and either arrival times (open loop) or a user count (closed loop)."""

    name: str
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray | None  # model seconds; None = closed loop
    users: int = 0
    think_s: float = 0.0

    def __len__(self) -> int:
        return int(self.prompt_tokens.size)


def build_plan(
    *,
    trace: str | None = None,
    generator: str | None = None,
    rate_scale: float = 1.0,
    scale_mode: str = "compress",
    duration_s: float | None = None,
    max_requests: int | None = None,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> Plan:
    """A send plan from a trace or generator spec, through ``sim.workload`` (the simulator's readers)."""
    from sim import workload as wl

    if (trace is None) == (generator is None):
        raise LoadgenError("give exactly one of --trace FILE or --generator SPEC")
    if not (math.isfinite(rate_scale) and rate_scale > 0):
        raise LoadgenError(f"--rate-scale must be a positive number, got {rate_scale}")
    if scale_mode not in ("compress", "replicate"):
        raise LoadgenError(f"--scale-mode must be compress or replicate, got {scale_mode!r}")
    if duration_s is not None and not duration_s > 0:
        raise LoadgenError(f"--duration-s must be > 0, got {duration_s}")
    if max_requests is not None and max_requests < 1:
        raise LoadgenError(f"--max-requests must be >= 1, got {max_requests}")
    try:
        if generator is not None and generator.strip().lower().startswith("closed:"):
            if rate_scale != 1.0 or duration_s is not None:
                raise LoadgenError(
                    "--rate-scale and --duration-s apply to open-loop workloads, not closed:..."
                )
            # the simulator's closed-loop grammar (sim.workload, issue 15's closed loop); looked up so that a
            # checkout without it still runs open-loop workloads and says what is missing
            parse_closed_loop: Callable[..., Any] | None = getattr(wl, "parse_closed_loop", None)
            if parse_closed_loop is None:
                raise LoadgenError(
                    "closed:... workloads need sim.workload.parse_closed_loop, not in this checkout"
                )
            closed = parse_closed_loop(generator, seed=seed)
            prompt, output = np.asarray(closed.prompt_tokens), np.asarray(closed.output_tokens)
            if max_requests is not None:
                prompt, output = prompt[:max_requests], output[:max_requests]
            plan = Plan(closed.name, prompt, output, None, users=closed.users, think_s=closed.think_s)
        else:
            w = wl.load_trace(trace) if trace is not None else wl.generate(str(generator), seed=seed)
            if rate_scale != 1.0:
                w = (
                    w.scaled(rate_scale)
                    if scale_mode == "compress"
                    else wl.replicate(w, rate_scale, seed=seed)
                )
            if duration_s is not None:
                w = w.window(0.0, duration_s)
            arrival, prompt, output = w.arrival_s, w.prompt_tokens, w.output_tokens
            if max_requests is not None:
                arrival, prompt, output = arrival[:max_requests], prompt[:max_requests], output[:max_requests]
            plan = Plan(w.name, np.asarray(prompt), np.asarray(output), np.asarray(arrival))
    except (wl.TraceError, wl.SpecError) as exc:
        raise LoadgenError(str(exc)) from None
    if max_prompt_tokens is not None or max_output_tokens is not None:
        plan = Plan(
            plan.name,
            np.minimum(plan.prompt_tokens, max_prompt_tokens or np.iinfo(np.int64).max),
            np.minimum(plan.output_tokens, max_output_tokens or np.iinfo(np.int64).max),
            plan.arrival_s,
            plan.users,
            plan.think_s,
        )
    if len(plan) == 0:
        raise LoadgenError(f"workload {plan.name!r} has no requests (check --duration-s / the window)")
    return plan


def token_id_prompt(n_tokens: int, rng: np.random.Generator) -> list[int]:
    """Exactly ``n_tokens`` token ids (random, so that no two prompts share a cached prefix)."""
    return [int(x) for x in rng.integers(TOKEN_ID_LOW, TOKEN_ID_HIGH, n_tokens)]


def chat_text(n_tokens: int) -> str:
    """A user message that the emulated worker's rule counts, with its chat template, as ``n_tokens``."""
    words = max(1, n_tokens - CHAT_TEMPLATE_TOKENS)
    return " ".join(f"t{i % 97}" for i in range(words))


@dataclass(frozen=True)
class Target:
    base_url: str  # ends with /v1
    model: str
    endpoint: str = "completions"  # or "chat"
    api_key: str = "EMPTY"
    timeout_s: float = 600.0
    time_scale: float = 1.0  # real seconds per model second (pdscale worker --time-scale)
    ignore_eos: bool = True


class Sender:
    """Sends one request through ``AsyncOpenAI`` and fills its record (streaming, usage, ignore_eos)."""

    def __init__(self, target: Target, client: Any, clock: Callable[[], float], t0: float) -> None:
        self.target = target
        self.client = client
        self.clock = clock
        self.t0 = t0
        # the send time of the request the current task is making, stamped by the HTTP client's request hook
        self._wire: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("wire", default=None)

    async def on_request(self, request: object) -> None:
        """httpx request hook: the request is about to go on the wire. Latencies are timed from here, as aiperf
        and vLLM's bench time them from their send, so the openai client's own request building (a few ms per
        request on a busy core) is not counted into TTFT."""
        box = self._wire.get()
        if box is not None:
            box[0] = self.clock()

    def _model_s(self, real_s: float) -> float:
        return real_s / self.target.time_scale

    async def send(self, rec: RequestRecord, prompt: list[int] | str) -> RequestRecord:
        import openai

        t = self.target
        common: dict[str, Any] = {
            "model": t.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": {"ignore_eos": t.ignore_eos},
            "temperature": 0.0,
        }
        box = [self.clock()]  # replaced by the wire time when the client's request hook runs
        self._wire.set(box)
        last: float | None = None
        try:
            if t.endpoint == "chat":
                stream = await self.client.chat.completions.create(
                    messages=[{"role": "user", "content": prompt}],
                    max_completion_tokens=rec.max_tokens,
                    **common,
                )
            else:
                # The token ids travel in extra_body: the client's parameter transformation walks a list prompt
                # item by item (measured: ~15 ms per 512 ids on this machine, counted into TTFT), extra_body is
                # merged into the JSON as it is. The wire body is the same.
                stream = await self.client.completions.create(
                    prompt="",
                    max_tokens=rec.max_tokens,
                    **{**common, "extra_body": {**common["extra_body"], "prompt": prompt}},
                )
            start = box[0]
            rec.sent_s = self._model_s(start - self.t0)
            events = 0
            async for chunk in stream:
                now = self.clock()
                if chunk.usage is not None:
                    rec.output_tokens = int(chunk.usage.completion_tokens or 0)
                    rec.usage_prompt_tokens = int(chunk.usage.prompt_tokens or 0)
                if not _is_token_chunk(chunk, t.endpoint):
                    continue
                events += 1
                if last is None:
                    rec.ttft_s = self._model_s(now - start)
                else:
                    rec.itl_s.append(self._model_s(now - last))
                last = now
            rec.e2e_s = self._model_s((last or self.clock()) - start)
            if rec.usage_prompt_tokens is None:
                rec.output_tokens = events
            rec.ok = last is not None
            if not rec.ok:
                rec.error = "stream ended without a token"
        except openai.APIStatusError as exc:
            rec.status = exc.status_code
            rec.error = f"HTTP {exc.status_code}: {_message(exc)}"
            rec.sent_s = self._model_s(box[0] - self.t0)
            rec.e2e_s = self._model_s(self.clock() - box[0])
        except (openai.APIError, OSError) as exc:  # connection errors, timeouts, SSE error events
            rec.error = f"{type(exc).__name__}: {_message(exc)}"
            rec.sent_s = self._model_s(box[0] - self.t0)
            rec.e2e_s = self._model_s(self.clock() - box[0])
        return rec


def _message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
    return str(exc)[:200]


def _is_token_chunk(chunk: Any, endpoint: str) -> bool:
    """Non-empty choices, except the chat stream's role-only opener (see workers/proxy_stream.py)."""
    if not chunk.choices:
        return False
    if endpoint != "chat":
        return True
    return any(
        c.delta is None or c.delta.content or c.finish_reason or not c.delta.role for c in chunk.choices
    )


class _Progress:
    """A rich progress bar on stderr (nothing when disabled)."""

    def __init__(self, total: int, enabled: bool, description: str) -> None:
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total, failed=0)
        self.failed = 0

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def done(self, rec: RequestRecord) -> None:
        self.failed += 0 if rec.ok else 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=self.failed)


async def run_plan(
    plan: Plan,
    target: Target,
    *,
    seed: int = 0,
    max_concurrency: int | None = None,
    progress: bool = False,
    client: Any = None,
) -> list[RequestRecord]:
    """Send every request of ``plan``; returns one record per request, in request order."""
    import openai

    if max_concurrency is not None and max_concurrency < 1:
        raise LoadgenError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x10AD]))
    prompts: list[list[int] | str] = [
        chat_text(int(n)) if target.endpoint == "chat" else token_id_prompt(int(n), rng)
        for n in plan.prompt_tokens
    ]
    clock = time.perf_counter
    t0 = clock()
    sender = Sender(target, client, clock, t0)
    own_client = client is None
    if client is None:
        client = sender.client = openai.AsyncOpenAI(
            base_url=target.base_url,
            api_key=target.api_key,
            max_retries=0,
            timeout=target.timeout_s,
            # the client's own connection pool (up to 1,000), plus the hook that stamps each request's send time
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [sender.on_request]}),
        )
    records = [
        RequestRecord(
            index=i,
            scheduled_s=float(plan.arrival_s[i]) if plan.arrival_s is not None else 0.0,
            sent_s=0.0,
            prompt_tokens=int(plan.prompt_tokens[i]),
            max_tokens=int(plan.output_tokens[i]),
        )
        for i in range(len(plan))
    ]
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    try:
        with _Progress(len(plan), progress, f"{plan.name} -> {target.base_url}") as bar:

            async def one(i: int) -> None:
                if limit is not None:
                    async with limit:
                        await sender.send(records[i], prompts[i])
                else:
                    await sender.send(records[i], prompts[i])
                bar.done(records[i])

            if plan.arrival_s is not None:
                await _open_loop(plan, target, one, clock, t0)
            else:
                await _closed_loop(plan, target, one, records, clock, t0)
    finally:
        if own_client:
            await client.close()
    return records


async def _open_loop(
    plan: Plan, target: Target, one: Callable[[int], Any], clock: Callable[[], float], t0: float
) -> None:
    assert plan.arrival_s is not None
    tasks = []
    for i, at_model_s in enumerate(plan.arrival_s):
        delay = float(at_model_s) * target.time_scale - (clock() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def _closed_loop(
    plan: Plan,
    target: Target,
    one: Callable[[int], Any],
    records: list[RequestRecord],
    clock: Callable[[], float],
    t0: float,
) -> None:
    """``users`` workers pull the next request index from one list (vllm bench --max-concurrency semantics)."""
    next_index = 0

    async def user() -> None:
        nonlocal next_index
        first = True
        while next_index < len(plan):
            i = next_index
            next_index += 1
            if not first and plan.think_s > 0:
                await asyncio.sleep(plan.think_s * target.time_scale)
            records[i].scheduled_s = (clock() - t0) / target.time_scale
            await one(i)
            first = False

    await asyncio.gather(*(user() for _ in range(min(plan.users, len(plan)))))


async def discover_model(base_url: str, api_key: str = "EMPTY") -> str:
    """The first model id the server lists (``GET /v1/models``)."""
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=10.0) as client:
        models = await client.models.list()
        ids = [m.id for m in models.data]
    if not ids:
        raise LoadgenError(f"{base_url}/models lists no model; give --model")
    return ids[0]


def base_url_of(url: str) -> str:
    """``http://host:port`` or ``.../v1`` -> ``.../v1``."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise LoadgenError(f"--url must start with http:// or https://, got {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def loadgen_command(args: argparse.Namespace) -> int:
    try:
        goodput = parse_goodput(args.goodput)
        percentiles = [float(p) for p in args.percentiles.split(",") if p.strip()]
        if not percentiles or any(not 0 < p < 100 for p in percentiles):
            raise LoadgenError(f"--percentiles: numbers in (0, 100), got {args.percentiles!r}")
        if not (math.isfinite(args.time_scale) and args.time_scale > 0):
            raise LoadgenError(f"--time-scale must be a positive number, got {args.time_scale}")
        plan = build_plan(
            trace=args.trace,
            generator=args.generator,
            rate_scale=args.rate_scale,
            scale_mode=args.scale_mode,
            duration_s=args.duration_s,
            max_requests=args.max_requests,
            seed=args.seed,
            max_prompt_tokens=args.max_prompt_tokens,
            max_output_tokens=args.max_output_tokens,
        )
        base_url = base_url_of(args.url)
    except (LoadgenError, ValueError) as exc:
        print(f"pdscale loadgen: {exc}", file=sys.stderr)
        return 2

    async def go() -> list[RequestRecord]:
        model = args.model or await discover_model(base_url, args.api_key)
        target = Target(base_url, model, args.endpoint, args.api_key, args.timeout_s, args.time_scale,
                        not args.no_ignore_eos)  # fmt: skip
        return await run_plan(
            plan,
            target,
            seed=args.seed,
            max_concurrency=args.max_concurrency,
            progress=not args.no_progress and not args.json,
        )

    try:
        records = asyncio.run(go())
    except LoadgenError as exc:
        print(f"pdscale loadgen: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the server could not be reached at all (model discovery)
        import openai

        if isinstance(exc, openai.APIError | OSError):
            print(f"pdscale loadgen: {args.url}: {exc}", file=sys.stderr)
            return 1
        raise
    summary = summarize(records, percentiles=percentiles, goodput_slo_s=goodput)
    summary["workload"] = plan.name
    summary["url"] = base_url
    summary["time_scale"] = args.time_scale
    if args.records:
        write_records(records, Path(args.records))
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_summary(summary, title=f"pdscale loadgen: {plan.name} -> {base_url}")
    return 0 if summary["completed"] > 0 else 1


def run_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse loadgen arguments alone (tests, benches)."""
    from workers.loadgen_cli import add_arguments

    parser = argparse.ArgumentParser(prog="pdscale loadgen")
    add_arguments(parser)
    return parser.parse_args(list(argv))

"""One emulated vLLM engine in wall-clock time: the simulator's scheduler (``sim.scheduler``) driven by asyncio.

The emulated workers must behave like the simulator, not like a second hand-tuned copy of it, so this module holds no
scheduling or timing rule of its own: the ``InstanceScheduler`` forms each step (admission, chunked prefill,
preemption, its duration from the profile's step model) and commits it; this module only sleeps until each step's
end and hands the step's tokens to the requests' streams.

API::

    engine = RealtimeEngine(profile, role="agg" | "prefill" | "decode",
                            kv_link_bytes_per_s=64e9, kv_base_latency_s=0.001)   # EngineConfig's defaults
    await engine.start()                      # runs inside the caller's asyncio loop
    stream = engine.submit(prompt_tokens, max_tokens, remote_kv=False)
    async for ev in stream: ...               # TokenEvent(index, time_s, deadline_s, finished, finish_reason)
    stream.times                              # RequestTimes: arrival_s, scheduled_s, kv_ready_s, first_token_s,
                                              #   last_token_s, finished_s, preemptions (model times)
    stream.cancel()                           # the client went away: finish_reason "abort"
    engine.snapshot()                         # EngineSnapshot: running, waiting, kv_usage_frac, ...
    engine.counters                           # the simulator's PodCounters for this engine (TTFT/ITL histograms
                                              #   with vLLM's buckets, token totals), brought up to date by snapshot()
    await engine.drain()                      # stop accepting; returns when everything in flight finished
    await engine.stop()

Roles: ``agg`` computes prompts and decodes; ``prefill`` ends a request after its prefill with ONE token
(finish_reason "length"; ``max_tokens`` is taken as 1), as a vLLM prefill worker does with max_tokens=1; ``decode``
with ``remote_kv=True`` first waits the emulated KV transfer (``prompt × kv_bytes_per_token / kv_link_bytes_per_s +
kv_base_latency_s``), then joins the waiting queue with its prompt computed (the simulator's decode path); without
``remote_kv`` a decode instance computes the prompt itself.

Time. All times are ``time.monotonic()`` seconds. The model runs on its own timeline: a step formed at model time t
ends at t + its duration, the next step is formed exactly there, and a request that arrives while a step runs joins
at the first step boundary at or after its arrival (an idle engine forms a step at the arrival time itself). So the
model timeline never drifts, whatever the event loop's lateness: it is exactly the simulator's for the same arrival
times. A step's tokens are released when its end (``deadline_s``) has passed; ``time_s`` is when that happened.
``RequestTimes`` hold model times (what vLLM's engine-side timestamps would say).

Host overheads (the profile's ``HostOverheads``, BLIS's α terms): a request that computes its own prompt joins the
waiting queue α0 + α1·prompt after it was submitted, as in the simulator (whose front pod applies the same delay).
The per-token α2 is not added to the stream (every shipped profile has α2 = 0; the simulator's client views and the
capacity model apply it).

Time compression: run a profile scaled by ``autoscaler.core.latency.scale_profile(profile, k)`` (and the KV link by
``KvLink.scaled(k)``); the simulator given the same scaled profile is the run's twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass

from autoscaler.core.latency import KvLink, LatencyProfile
from sim.counters import PodCounters
from sim.request import Request
from sim.scheduler import ROLES, InstanceScheduler, StepOutcome

__all__ = ["ROLES", "EngineSnapshot", "RealtimeEngine", "RequestStream", "RequestTimes", "TokenEvent"]


@dataclass(frozen=True)
class TokenEvent:
    """One output token of a request, in order. ``deadline_s``: the model time of the step end that produced it;
    ``time_s``: when it was released (``time.monotonic()``, at or after the deadline)."""

    index: int  # 0-based output token index
    time_s: float
    deadline_s: float
    finished: bool
    finish_reason: str | None  # "length" on the last token, None before


@dataclass
class RequestTimes:
    """Model times of one request's milestones (monotonic seconds; None until reached)."""

    arrival_s: float
    scheduled_s: float | None = None  # first admission into a batch (vLLM's queue time ends here)
    kv_ready_s: float | None = None  # remote_kv: the KV transfer ended
    first_token_s: float | None = None
    last_token_s: float | None = None
    finished_s: float | None = None  # last token, or when an abort took effect
    preemptions: int = 0


@dataclass(frozen=True)
class EngineSnapshot:
    """Gauges and totals, as a vLLM engine's /metrics would show them at this instant."""

    running: int
    waiting: int  # queued, including decode requests whose KV transfer is in flight
    inbound_kv_transfers: int
    kv_used_tokens: int
    kv_capacity_tokens: int
    kv_usage_frac: float
    preemptions_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    finished_total: int  # finish_reason "length"
    aborted_total: int  # finish_reason "abort"
    accepting: bool


class _LiveRequest(Request):
    __slots__ = ("remote_kv", "stream", "tokens_delivered")

    def __init__(self, index: int, prompt_tokens: int, output_tokens: int, remote_kv: bool) -> None:
        super().__init__(index, prompt_tokens, output_tokens)
        self.remote_kv = remote_kv
        self.tokens_delivered = 0
        self.stream: RequestStream | None = None


class RequestStream:
    """A submitted request: ``async for`` yields its ``TokenEvent``s; ``times``; ``cancel()``."""

    def __init__(self, engine: RealtimeEngine, req: _LiveRequest, times: RequestTimes) -> None:
        self._engine = engine
        self._req = req
        self._events: deque[TokenEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.times = times
        self.finish_reason: str | None = None

    @property
    def request_id(self) -> int:
        return self._req.index

    @property
    def prompt_tokens(self) -> int:
        return self._req.prompt_tokens

    @property
    def max_tokens(self) -> int:
        return self._req.output_tokens

    @property
    def done(self) -> bool:
        return self._closed

    def cancel(self) -> None:
        """The client went away: no more events; the request leaves the scheduler at the next step boundary and
        its slot and KV are freed. Counted as finish_reason "abort". No effect once finished."""
        if self._closed:
            return
        self.finish_reason = "abort"
        self._close()
        self._engine._cancel(self._req)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        while not self._events:
            if self._closed:
                failure = self._engine._failure
                if failure is not None and self.finish_reason is None:
                    raise RuntimeError("the realtime engine stopped with an error") from failure
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._events.popleft()

    # engine side
    def _push(self, ev: TokenEvent) -> None:
        self._events.append(ev)
        self._wake()

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)


class RealtimeEngine:
    """One emulated vLLM engine (see the module docstring)."""

    def __init__(
        self,
        profile: LatencyProfile,
        role: str = "agg",
        kv_link_bytes_per_s: float = 64e9,
        kv_base_latency_s: float = 0.001,
        *,
        record_lateness: bool = False,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"RealtimeEngine role {role!r} is not one of {ROLES}")
        self.profile = profile
        self.role = role
        self.counters = PodCounters()
        self._sched = InstanceScheduler(
            role, profile, counters=self.counters, kv_link=KvLink(kv_link_bytes_per_s, kv_base_latency_s)
        )
        self._inbox: list[
            tuple[float, int, _LiveRequest]
        ] = []  # (ready_s, id, request): not yet in the scheduler
        self._ids = itertools.count()
        self._streams: dict[int, RequestStream] = {}  # unfinished requests by id
        self._cancelled: list[_LiveRequest] = []
        self._accepting = True
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._step_end_s = math.nan
        self.finished_total = 0
        self.aborted_total = 0
        # release time − deadline of every step that emitted tokens (benchmarks), when asked for
        self.lateness_s: list[float] | None = [] if record_lateness else None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("RealtimeEngine.start: already started")
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._update_drained()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"realtime-engine-{self.role}")

    async def stop(self) -> None:
        """Stop the loop at once; unfinished streams end (finish_reason "abort")."""
        task, self._task = self._task, None
        self._accepting = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in list(self._streams.values()):
            stream.finish_reason = stream.finish_reason or "abort"
            stream._close()
        self._streams.clear()

    async def drain(self) -> None:
        """Stop accepting new requests; return when every accepted request has finished (or was cancelled)."""
        self._accepting = False
        if self._drained is None:
            raise RuntimeError("RealtimeEngine.drain: not started")
        await self._drained.wait()

    @property
    def accepting(self) -> bool:
        return self._accepting

    # ------------------------------------------------------------------ requests
    def submit(self, prompt_tokens: int, max_tokens: int, remote_kv: bool = False) -> RequestStream:
        """Accept a request now (``time.monotonic()``). Raises ValueError for bad input, RuntimeError when the
        engine does not accept requests (not started, draining or stopped)."""
        if self._task is None or not self._accepting:
            raise RuntimeError(
                "RealtimeEngine.submit: the engine is not accepting requests (not started or draining)"
            )
        if not (isinstance(prompt_tokens, int) and prompt_tokens >= 1):
            raise ValueError(f"prompt_tokens must be an integer >= 1, got {prompt_tokens!r}")
        if not (isinstance(max_tokens, int) and max_tokens >= 1):
            raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if remote_kv and self.role != "decode":
            raise ValueError(f"remote_kv needs the decode role (this engine is {self.role!r})")
        output_tokens = 1 if self.role == "prefill" else max_tokens
        cap = self._sched.kv_capacity_tokens
        if prompt_tokens + output_tokens > cap:
            raise ValueError(
                f"request needs {prompt_tokens + output_tokens} KV tokens (prompt {prompt_tokens} + output "
                f"{output_tokens}), more than the engine's KV capacity of {cap} tokens"
            )
        now = time.monotonic()
        rid = next(self._ids)
        req = _LiveRequest(rid, prompt_tokens, output_tokens, remote_kv)
        req.pod_arrival_s = now
        if remote_kv:
            ready_s = self._sched.start_kv_transfer(req, now)
        else:  # host overheads (α0 + α1·prompt): tokenization and input processing before the waiting queue
            ready_s = now + self.profile.host.admission_delay_s(prompt_tokens)
        stream = RequestStream(self, req, RequestTimes(arrival_s=now))
        req.stream = stream
        self._streams[rid] = stream
        heapq.heappush(self._inbox, (ready_s, rid, req))
        if self._drained is not None:
            self._drained.clear()
        if self._wake is not None and not self._sched.busy:
            self._wake.set()
        return stream

    def _cancel(self, req: _LiveRequest) -> None:
        self._cancelled.append(req)
        if self._wake is not None and not self._sched.busy:
            self._wake.set()

    def snapshot(self) -> EngineSnapshot:
        s = self._sched
        s.flush_counters()
        c = self.counters
        arrivals_queued = sum(1 for _, _, r in self._inbox if not r.remote_kv)
        return EngineSnapshot(
            running=len(s.running),
            waiting=len(s.waiting) + s.inbound_kv_transfers + arrivals_queued,
            inbound_kv_transfers=s.inbound_kv_transfers,
            kv_used_tokens=s.kv_used_tokens,
            kv_capacity_tokens=s.kv_capacity_tokens,
            kv_usage_frac=s.kv_used_tokens / s.kv_capacity_tokens,
            preemptions_total=c.num_preemptions_total,
            prompt_tokens_total=c.prompt_tokens_total,
            generation_tokens_total=c.generation_tokens_total,
            finished_total=self.finished_total,
            aborted_total=self.aborted_total,
            accepting=self._accepting,
        )

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        sched = self._sched
        try:
            while True:
                if sched.busy:
                    end_s = self._step_end_s
                    delay = end_s - time.monotonic()
                    await asyncio.sleep(
                        delay if delay > 0 else 0
                    )  # always yield: a late loop must not starve others
                    self._deliver(sched.commit_step(), end_s)
                    boundary_s = end_s
                else:
                    boundary_s = await self._wait_for_work()
                self._apply_cancellations(boundary_s)
                self._admit_ready(boundary_s)
                end = sched.form_step(boundary_s)
                if end is None:
                    self._update_drained()
                else:
                    self._step_end_s = end
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: end every stream with the error instead of hanging clients
            self._failure = exc
            self._accepting = False
            for stream in list(self._streams.values()):
                stream._close()
            self._streams.clear()
            raise

    async def _wait_for_work(self) -> float:
        """Idle: wait until a request (or its KV) is ready; return that model time."""
        wake = self._wake
        assert wake is not None
        while True:
            if self._cancelled:
                self._apply_cancellations(time.monotonic())
                self._update_drained()
            if self._inbox:
                ready_s = self._inbox[0][0]
                delay = ready_s - time.monotonic()
                if delay <= 0:
                    return ready_s
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                continue
            wake.clear()
            await wake.wait()

    def _admit_ready(self, t_s: float) -> None:
        """Requests (or KV transfers) ready at or before the step boundary ``t_s`` join the waiting queue."""
        inbox = self._inbox
        sched = self._sched
        while inbox and inbox[0][0] <= t_s:
            ready_s, _, req = heapq.heappop(inbox)
            if req.remote_kv:
                sched.finish_kv_transfer(req)
                if req.stream is not None:
                    req.stream.times.kv_ready_s = ready_s
            sched.waiting.append(req)

    def _apply_cancellations(self, t_s: float) -> None:
        """At a step boundary: cancelled requests leave the scheduler (or the inbox); slots and KV are freed."""
        if not self._cancelled:
            return
        sched = self._sched
        for req in self._cancelled:
            if req.index not in self._streams:
                continue  # finished before the cancel took effect
            removed = sched.abort(req)
            if not removed:
                for i, (_, _, r) in enumerate(self._inbox):
                    if r is req:
                        self._inbox[i] = self._inbox[-1]
                        self._inbox.pop()
                        heapq.heapify(self._inbox)
                        if req.remote_kv:
                            sched.finish_kv_transfer(req)  # its transfer no longer counts as inbound
                        break
            stream = self._streams.pop(req.index)
            stream.times.finished_s = t_s
            self.aborted_total += 1
        self._cancelled.clear()
        self._update_drained()

    def _deliver(self, out: StepOutcome, deadline_s: float) -> None:
        """Hand a committed step's tokens to the streams (the deadline has passed)."""
        released_s = time.monotonic()
        if self.lateness_s is not None and (out.emitted or out.prefilled):
            self.lateness_s.append(released_s - deadline_s)
        for req in out.admitted:
            times = req.stream.times  # type: ignore[attr-defined]
            if times.scheduled_s is None:
                times.scheduled_s = out.start_s
        for req in out.preempted:
            req.stream.times.preemptions += 1  # type: ignore[attr-defined]
        for req in out.emitted:
            self._emit(req, deadline_s, released_s)  # type: ignore[arg-type]
        for req in out.prefilled:  # prefill role: the one sampled token ends the request
            self._emit(req, deadline_s, released_s)  # type: ignore[arg-type]
            self._finished(req, deadline_s)  # type: ignore[arg-type]
        for req in out.finished:
            self._finished(req, deadline_s)  # type: ignore[arg-type]

    def _emit(self, req: _LiveRequest, deadline_s: float, released_s: float) -> None:
        index = req.tokens_delivered
        req.tokens_delivered = index + 1
        last = index + 1 >= req.output_tokens
        stream = req.stream
        assert stream is not None
        times = stream.times
        if index == 0:
            times.first_token_s = deadline_s
        times.last_token_s = deadline_s
        if not stream._closed:
            stream._push(TokenEvent(index, released_s, deadline_s, last, "length" if last else None))

    def _finished(self, req: _LiveRequest, t_s: float) -> None:
        stream = self._streams.pop(req.index, None)
        if stream is None:  # cancelled: already counted as an abort
            return
        stream.times.finished_s = t_s
        if stream.finish_reason == "abort":  # cancelled, and finished before the cancel took effect
            self.aborted_total += 1
        else:
            stream.finish_reason = "length"
            self.finished_total += 1
        stream._close()
        self._update_drained()

    def _update_drained(self) -> None:
        if self._drained is not None and not self._streams:
            self._drained.set()

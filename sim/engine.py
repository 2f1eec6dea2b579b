"""Discrete-event simulator of vLLM serving: disaggregated prefill/decode pools or one aggregated pool.

One instance = one vLLM engine = one pod. The pieces, one concept per module:

==================  ==============================================================================================
``sim.request``     ``Request``: one request's state on an instance (queues, KV, tokens; lazy decode progress)
``sim.scheduler``   ``InstanceScheduler``: one vLLM engine's scheduler rules (decode first, chunked prefill, FCFS
                    admission under max_num_seqs / max_num_batched_tokens / KV, preemption by recompute, prefill and
                    decode roles, KV-transfer admission), with a per-step API; also what ``workers.realtime``
                    drives in wall-clock time
``sim.skipping``    ``SkippingScheduler``: the fast mode, event skipping over the same scheduler state
``sim.router``      ``Router``: which pod takes a request (round-robin, least-outstanding-tokens, least-kv,
                    central-fcfs)
``sim.cluster``     ``SimPod``, ``Cluster``: pod lifecycle (startup delay and jitter, drain) and pool scaling
``sim.events``      ``EventQueue``: pod-ready, KV-arrival and step-end events, deterministic tie-breaks
``sim.counters``    per-pod instruments as vLLM's /metrics would show them; the ITL gap log
``sim.records``     ``RequestRecords``: per-request outcomes
this module         ``Engine``: the event loop and the request flow between them; ``EngineConfig``
==================  ==============================================================================================

Request flow. **Disaggregated**: router -> prefill instance (FCFS) -> prefill end (the prefill worker samples one
token, which the P/D proxy discards) -> decode instance chosen by the router at prefill end -> KV transfer
(``prompt × kv_bytes_per_token / kv_link_bytes_per_s + kv_base_latency_s``) -> decode waiting queue; admission waits
until ``prompt + 1`` KV slots fit. The user-visible first token is the decode worker's first token. The prefill
instance frees the prompt's KV at prefill end (the pull is not modelled as holding blocks). **Aggregated**: one pool
(``Pool.DECODE``) whose instances run prefill chunks and decodes in the same steps. Requests that no pod can take
yet wait at the proxy (``central-fcfs``: that queue is the router).

Counters (``SimPod.counters``, ``Engine.proxy``; exact whenever ``run_until``/``finish`` return): TTFT as each role's
vLLM defines it (prefill pod: arrival at the pod -> prefill end; decode pod: arrival at the pod, i.e. prefill end ->
first token, so it includes the KV transfer and admission wait; agg pod: arrival -> first token; proxy: user
arrival -> first token, with the profile's host overheads: a request reaches the pods α0 + α1·prompt after it
arrives, and the proxy's TTFT adds α2), ITL per output token after the first (decode/agg pods and proxy), prompt tokens (prefill
pod at prefill end, decode/agg pod and proxy at the first token), generation tokens (the prefill pod's one discarded
token included), request_success, preemptions, gauges running / waiting (decode: + inbound KV transfers) / KV usage;
the proxy's gauges are requests in flight and requests no pod has taken yet.

Records (``records()``): per request, in workload order (``sim.records``). With ``record_itl_gaps=True``,
``itl_gaps()`` returns every inter-token gap exactly (token time, gap, how many sequences), compressed per decode step.

Closed loop (``closed_loop=ClosedLoopArrivals(users, think_s)``; ``vllm bench serve --max-concurrency N``): the
first ``users`` requests of the workload are sent at t = 0 (its arrival times are ignored) and request j >= users is
sent ``think_s`` after the (j − users)-th client-side completion (engine end + α2 per output token), then reaches the
pods α0 + α1·prompt later like any request. Completions and the sends they trigger are events of the queue
(``sim.events``: a completion is seen before anything else at its instant, a dynamic arrival next, as the workload's
arrivals are), so a closed loop is one causal run; its records hold the requests sent, ``arrival_s`` their send
times. A loop bounded by time (``send_until_s``) stops each client at its first send past the deadline; its lengths
may come a block at a time (``more_requests``).

Modes: fast (default) skips events over runs of identical decode steps (``sim.skipping``); ``reference=True`` drives
every instance's ``InstanceScheduler`` one step at a time (``form_step`` / ``commit_step``) and accounts every token
one by one. Tests require identical per-request results from both.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoscaler.core.latency import KvLink, LatencyProfile
from autoscaler.core.types import Pool, PoolReplicas
from sim.cluster import Cluster, SimPod, parse_startup_jitter
from sim.counters import ItlGapLog, PodCounters, flush_pending
from sim.events import CLIENT_DONE, KV_ARRIVAL, READY, STEP_END, EventQueue
from sim.records import RequestLog, RequestRecords
from sim.request import Request
from sim.router import ROUTERS, Router
from sim.scheduler import InstanceScheduler, SchedulerEvents, check_engine_limits
from sim.skipping import SkippingScheduler
from sim.workload import Workload

__all__ = ["MODES", "ROUTERS", "ClosedLoopArrivals", "Engine", "EngineConfig", "RequestRecords", "SimPod"]

MODES = ("disagg", "agg")
_INF = math.inf
_heappop = heapq.heappop
_heappush = heapq.heappush


@dataclass(frozen=True)
class EngineConfig:
    profile: LatencyProfile
    mode: str = "disagg"
    router: str = "least-outstanding-tokens"
    kv_link_bytes_per_s: float = 64e9
    kv_base_latency_s: float = 0.001
    startup_s: float = 120.0
    startup_jitter: str = "fixed"
    reference: bool = False
    seed: int = 0
    record_itl_gaps: bool = (
        False  # keep every inter-token gap (compactly) for exact ITL percentiles: itl_gaps()
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"EngineConfig.mode: {self.mode!r} is not one of {MODES}")
        if self.router not in ROUTERS:
            raise ValueError(f"EngineConfig.router: {self.router!r} is not one of {ROUTERS}")
        if self.kv_link_bytes_per_s <= 0:
            raise ValueError(f"EngineConfig.kv_link_bytes_per_s must be > 0, got {self.kv_link_bytes_per_s}")
        if self.kv_base_latency_s < 0 or self.startup_s < 0:
            raise ValueError("EngineConfig.kv_base_latency_s and startup_s must be >= 0")
        parse_startup_jitter(self.startup_jitter)
        check_engine_limits(self.profile)


MoreRequests = Callable[[int], tuple[Sequence[int], Sequence[int]]]
"""``more(block)`` -> (prompt tokens, output tokens) of the ``block``-th further batch of requests (0, 1, ...)."""


@dataclass(frozen=True)
class ClosedLoopArrivals:
    """``users`` concurrent clients, each sending its next request ``think_s`` after its last one completed.

    The clients send the workload's requests in list order. A loop bounded by time sets ``send_until_s`` (no client
    sends after it) and, when the list may run out first, ``more_requests``: lengths for further requests, asked
    for a block at a time, so a loop of unknown length needs no guess of its request count up front.
    """

    users: int
    think_s: float = 0.0
    send_until_s: float = math.inf
    more_requests: MoreRequests | None = None

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"ClosedLoopArrivals.users must be >= 1, got {self.users}")
        if not (math.isfinite(self.think_s) and self.think_s >= 0):
            raise ValueError(f"ClosedLoopArrivals.think_s must be a finite number >= 0, got {self.think_s}")
        if not self.send_until_s >= 0:
            raise ValueError(f"ClosedLoopArrivals.send_until_s must be >= 0, got {self.send_until_s}")


class _Milestones(SchedulerEvents):
    """The engine's side of its schedulers' milestones: request records, proxy counters, routing load, hand-off."""

    __slots__ = (
        "_closed_loop", "_dispatch_decode", "_engine", "client_token_delay_s", "inflight_requests", "log", "proxy",
        "proxy_ttft_pending",
    )  # fmt: skip

    def __init__(self, engine: Engine, log: RequestLog, proxy: PodCounters, client_token_delay_s: float) -> None:
        self._engine = engine
        self._closed_loop = engine._closed is not None  # read at every finish: one slot, not two attribute hops
        self._dispatch_decode = engine._dispatch_decode
        self.log = log
        self.proxy = proxy
        self.client_token_delay_s = client_token_delay_s  # α2: the client sees the first token this much later
        self.proxy_ttft_pending = [0] * (len(proxy.ttft.edges_s) + 1)
        self.inflight_requests = 0  # arrived at the proxy, not yet finished

    def prefill_started(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        self.log.prefill_start_s[req.index] = t_s

    def prefill_finished(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        self.log.prefill_end_s[req.index] = t_s
        if sched.role == "prefill":
            sched.routing_loads[sched.routing_slot] -= req.prompt_tokens
            self._dispatch_decode(req, t_s)
        else:
            self.log.kv_ready_s[req.index] = t_s

    def first_token(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        rid = req.index
        self.log.first_token_s[rid] = t_s
        px = self.proxy
        h = px.ttft  # observe_pending, inlined on the hot path
        ttft = t_s - self.log.arrival_s[rid] + self.client_token_delay_s
        self.proxy_ttft_pending[bisect_left(h.edges_s, ttft)] += 1
        h.sum += ttft
        h.count += 1
        px.prompt_tokens_total += req.prompt_tokens

    def finished(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        rid = req.index
        log = self.log
        log.last_token_s[rid] = t_s
        log.itl_max_s[rid] = req.max_itl_s
        log.finished[rid] = True
        sched.routing_loads[sched.routing_slot] -= req.prompt_tokens + req.output_tokens
        self.proxy.request_success_total += 1
        self.inflight_requests -= 1
        if self._closed_loop:  # the client sees its last token α2 per output token later
            self._engine._events.push_client_done(t_s + self.client_token_delay_s * req.output_tokens)

    def preempted(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        self.log.preemptions[req.index] += 1


class Engine:
    """The simulated cluster. Drive it with ``run_until``/``set_desired``; read ``pods()``, ``proxy``, ``records()``."""

    def __init__(
        self,
        workload: Workload,
        config: EngineConfig,
        initial_prefill: int,
        initial_decode: int,
        *,
        closed_loop: ClosedLoopArrivals | None = None,
    ) -> None:
        prof = config.profile
        if config.mode == "agg" and initial_prefill != 0:
            raise ValueError(
                "Engine: in 'agg' mode all instances form the decode pool; initial_prefill must be 0"
            )
        if initial_prefill < 0 or initial_decode < 0:
            raise ValueError("Engine: initial replica counts must be >= 0")
        self.workload = workload
        self.config = config
        self.profile = prof
        self.now_s = 0.0
        self.proxy = PodCounters()
        arr = np.asarray(workload.arrival_s, dtype=np.float64)
        pr = np.asarray(workload.prompt_tokens, dtype=np.int64)
        out = np.asarray(workload.output_tokens, dtype=np.int64)
        n = arr.size
        if pr.size != n or out.size != n:
            raise ValueError(f"workload {workload.name!r}: arrays differ in length")
        self._closed = closed_loop
        first = n if closed_loop is None else min(n, closed_loop.users)  # requests whose send time is known now
        if closed_loop is not None:  # the first `users` leave at 0, the others when a client is free
            arr = np.zeros(first)
        elif n and (np.any(np.diff(arr) < 0) or not np.all(np.isfinite(arr))):
            raise ValueError(f"workload {workload.name!r}: arrival_s must be finite and sorted")
        self._check_lengths(workload.name, pr, out)
        # A closed loop's log holds the requests sent so far; the lengths of the rest wait in the client queue.
        self._log = RequestLog(arr.tolist(), pr[:first].tolist(), out[:first].tolist())
        self._client_prompt_tokens: list[int] = pr.tolist() if closed_loop is not None else []
        self._client_output_tokens: list[int] = out.tolist() if closed_loop is not None else []
        self._client_blocks_asked = 0  # ClosedLoopArrivals.more_requests blocks taken so far
        # closed loop: clients with a request in flight or about to send one (an open loop has no clients)
        self._active_clients = first if closed_loop is not None else 0
        self._arrival_s = self._log.arrival_s
        # Host overheads (BLIS α0 + α1·prompt, ``HostOverheads``): a request reaches the pods that much after the
        # client sent it. The delay depends on the prompt, so requests are dispatched in the order they get through
        # (``_dispatch_id``; None when there is no delay and the order is the workload's).
        host = prof.host
        self._dispatch_s: list[float] = self._arrival_s
        self._dispatch_id: list[int] | None = None
        if closed_loop is not None:
            self._dispatch_s = self._arrival_s[:first]
        if host.request_s > 0 or host.request_per_prompt_token_s > 0:
            at_pods = arr[:first] + host.request_s + host.request_per_prompt_token_s * pr[:first].astype(np.float64)
            order = np.argsort(at_pods, kind="stable")  # α0 + α1·L
            self._dispatch_s = at_pods[order].tolist()
            self._dispatch_id = order.tolist()
        self._n = first
        self._next = 0  # next dispatch index
        self._milestones = _Milestones(self, self._log, self.proxy, host.output_token_s)
        self._events = EventQueue()
        self._event_heap = self._events.heap  # bound once: the hot paths push step ends straight onto it
        self._pending_front: deque[Request] = deque()  # arrived, no pod to take them (or the central queue)
        self._pending_decode: deque[Request] = deque()  # prefilled, no decode pod ready
        self._router = Router(config.router)
        self._central = config.router == "central-fcfs"
        self._fast = not config.reference
        self._front_pool = Pool.PREFILL if config.mode == "disagg" else Pool.DECODE
        self._kv_link = KvLink(config.kv_link_bytes_per_s, config.kv_base_latency_s)
        self._gap_log = ItlGapLog() if config.record_itl_gaps else None
        self._cluster = Cluster(
            mode=config.mode, startup_s=config.startup_s, startup_jitter=config.startup_jitter, seed=config.seed,
            events=self._events, make_instance=self._make_instance, capacity_added=self._flush_pending,
        )  # fmt: skip
        self._ready = self._cluster.ready
        # the ready lists are kept in place by the cluster: bound once for the hot paths (an enum-keyed lookup each
        # time costs more than the rest of a dispatch)
        self._ready_front = self._ready[self._front_pool]
        self._ready_decode = self._ready[Pool.DECODE]
        loads = self._cluster.loads
        self._pick_front = self._router.picker(self._front_pool, self._ready_front, loads[self._front_pool])
        self._pick_decode = self._router.picker(Pool.DECODE, self._ready_decode, loads[Pool.DECODE])
        for _ in range(initial_prefill):
            self._cluster.add_pod(Pool.PREFILL, 0.0, ready_now=True)
        for _ in range(initial_decode):
            self._cluster.add_pod(Pool.DECODE, 0.0, ready_now=True)

    # ------------------------------------------------------------------ public API
    def run_until(self, t_s: float) -> None:
        """Process every event with time <= t_s, then bring counters and gauges up to t_s."""
        self._run(t_s)
        if t_s > self.now_s:
            self.now_s = t_s
        if self._fast:
            for inst in self._cluster.instances:
                if inst.busy and inst.segment_steps > 1 and inst.commit_steps_ending_by(t_s):  # type: ignore[attr-defined]
                    self._events.push_step_end(inst.step_end_s(inst.segment_steps), inst)  # type: ignore[attr-defined]
        self._flush_counts()

    def finish(self, max_time_s: float | None = None) -> None:
        """Run until no work is left (every request done, or stuck without pods), or until ``max_time_s``."""
        horizon = _INF if max_time_s is None else max_time_s
        self._run(horizon)
        if max_time_s is not None:
            self.run_until(max_time_s)
        self._flush_counts()

    def set_desired(self, pool: Pool, replicas: int, now_s: float) -> None:
        """Order ``replicas`` pods (starting + ready, draining excluded) in ``pool`` at ``now_s``."""
        pool = Pool(pool)
        if replicas < 0:
            raise ValueError(f"set_desired: replicas must be >= 0, got {replicas}")
        if self.config.mode == "agg" and pool is Pool.PREFILL and replicas != 0:
            raise ValueError("set_desired: 'agg' mode has no prefill pool (use Pool.DECODE)")
        self.run_until(now_s)
        self._cluster.scale(pool, replicas, max(now_s, self.now_s))

    def replicas(self, pool: Pool) -> PoolReplicas:
        return self._cluster.replicas(Pool(pool))

    def pods(self, pool: Pool | None = None) -> list[SimPod]:
        if pool is None:
            return list(self._cluster.pods)
        return [p for p in self._cluster.pods if p.pool == pool]

    def gpu_seconds(self, until_s: float) -> dict[Pool, float]:
        return self._cluster.gpu_seconds(until_s, self.profile.gpus_per_replica)

    def records(self) -> RequestRecords:
        return self._log.records()

    def itl_gaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every inter-token gap the clients saw so far: (token time_s, gap_s, count), sorted by time.

        ``count`` sequences emitted a token at ``time_s`` after a gap of ``gap_s`` (one decode step serves the whole
        batch). Exact, so ITL percentiles over all gaps need no per-request approximation. Requires
        ``EngineConfig(record_itl_gaps=True)``.
        """
        if self._gap_log is None:
            raise RuntimeError("itl_gaps() needs EngineConfig(record_itl_gaps=True)")
        return self._gap_log.expand()

    @property
    def all_done(self) -> bool:
        return self._next >= self._n and self._active_clients == 0 and self._milestones.inflight_requests == 0

    @property
    def sending(self) -> bool:
        """Requests are still to be sent: open loop, arrivals not yet reached; closed loop, a client may still
        send (a request of the list unsent, or more to come, and the send deadline not passed)."""
        loop = self._closed
        if loop is None:
            return self._next < self._n
        more = len(self._log.arrival_s) < len(self._client_prompt_tokens) or loop.more_requests is not None
        return self._active_clients > 0 and more and self.now_s <= loop.send_until_s

    def _check_lengths(self, name: str, prompt: np.ndarray, output: np.ndarray, first_index: int = 0) -> None:
        """Every request needs >= 1 prompt and output token and must fit one instance's KV cache."""
        bad = np.flatnonzero((prompt < 1) | (output < 1))
        if bad.size:
            raise ValueError(
                f"workload {name!r}: request {first_index + int(bad[0])} has prompt or output tokens < 1"
            )
        big = np.flatnonzero(prompt + output > self.profile.kv_capacity_tokens)
        if big.size:
            i = int(big[0])
            raise ValueError(
                f"workload {name!r}: request {first_index + i} needs {int(prompt[i] + output[i])} KV tokens, more "
                f"than the profile's kv_capacity_tokens={self.profile.kv_capacity_tokens}; cap lengths with "
                "load_trace(max_...) or the spec's max_prompt/max_output"
            )

    # ------------------------------------------------------------------ instances
    def _make_instance(self, role: str, counters: PodCounters) -> InstanceScheduler:
        cls = SkippingScheduler if self._fast else InstanceScheduler
        inst = cls(
            role, self.profile, events=self._milestones, counters=counters, kv_link=self._kv_link,
            gap_log=self._gap_log,
        )  # fmt: skip
        if self._central and role != "decode":
            inst.refill = self._central_pull
        return inst

    def _plan(self, inst: InstanceScheduler, now: float) -> None:
        """Form the instance's next step at ``now`` and schedule its end (or let a draining, idle pod go)."""
        end_s = inst.form_step(now)
        if end_s is None:
            if inst.pod.state == "draining":  # type: ignore[attr-defined]
                self._cluster.retire_if_drained(inst, now)
            return
        # EventQueue.push_step_end, inlined on the hot path
        inst.version = v = inst.version + 1
        _heappush(self._event_heap, (end_s, STEP_END, inst.pod.index, STEP_END, inst, v))  # type: ignore[attr-defined]

    def _flush_counts(self) -> None:
        """Bring every pod's counters and gauges up to date (done before run_until/finish return).

        Hot paths only append bucket counts to Python lists and leave gauges alone; this folds them in."""
        insts = self._cluster.instances
        for inst in insts:
            inst.flush_counters()
            inst.pod.running_seq_s = inst.decode_seq_s  # type: ignore[attr-defined]
        px = self.proxy
        flush_pending(px.ttft, self._milestones.proxy_ttft_pending)
        # the client sees exactly the decode-side token stream: proxy ITL and generated tokens are the sums over
        # decode (or agg) pods, gone ones included (cumulative, like the pods' own counters)
        gen, itl_sum, itl_n = 0, 0.0, 0
        itl_counts = np.zeros_like(px.itl.counts)
        for inst in insts:
            if inst.role != "prefill":
                c = inst.counters
                gen += c.generation_tokens_total
                itl_sum += c.itl.sum
                itl_n += c.itl.count
                itl_counts += c.itl.counts
        px.generation_tokens_total = gen
        px.itl.counts[:] = itl_counts
        px.itl.sum = itl_sum
        px.itl.count = itl_n
        px.num_requests_running = self._milestones.inflight_requests
        px.num_requests_waiting = len(self._pending_front) + len(self._pending_decode)  # no pod took them yet

    # ------------------------------------------------------------------ event loop
    def _run(self, t_end: float) -> None:
        heap = self._event_heap
        arr = self._dispatch_s
        ids = self._dispatch_id
        n = self._n
        nxt = self._next
        ta = arr[nxt] if nxt < n else _INF
        fast = self._fast
        pop = _heappop
        arrive, plan, after_prefill_step, on_kv_arrival = self._arrive, self._plan, self._after_prefill_step, self._on_kv_arrival
        while True:
            te = heap[0][0] if heap else _INF
            if ta <= te:  # arrivals first at equal times
                if ta > t_end or ta == _INF:
                    return
                self._next = nxt + 1
                self.now_s = ta
                arrive(nxt if ids is None else ids[nxt], ta)
                nxt += 1
                ta = arr[nxt] if nxt < n else _INF
            else:
                if te > t_end:
                    return
                t, _, _, kind, obj, ver = pop(heap)
                self.now_s = t
                if kind == STEP_END:
                    if ver == obj.version:
                        if not fast:
                            obj.commit_step()
                            plan(obj, t)
                        elif obj.role == "prefill":
                            after_prefill_step(obj, t)
                        else:
                            obj.commit_segment(obj.segment_steps)
                            plan(obj, t)
                elif kind == KV_ARRIVAL:
                    on_kv_arrival(obj, t)
                elif kind == READY:
                    self._cluster.on_ready(obj, t)
                elif kind == CLIENT_DONE:
                    self._send_next(t)
                else:  # ARRIVAL: a closed-loop request reaches the pods
                    self._arrive(obj, t)

    def _after_prefill_step(self, inst: InstanceScheduler, now: float) -> None:
        """A prefill instance's step ended: finished prompts go to KV transfer; form the next step or go idle."""
        inst.commit_prefill_step(now)
        if (
            inst.prefilling or inst.waiting or (self._central and self._pending_front)
            or inst.pod.state == "draining"  # type: ignore[attr-defined]
        ):  # fmt: skip
            self._plan(inst, now)
        else:  # nothing left: idle (what form_step would conclude, without building a step)
            inst.busy = False
            inst.segment_steps = 0
            inst.segment_start_s = now

    # ------------------------------------------------------------------ request flow
    def _send_next(self, now: float) -> None:
        """Closed loop: a client saw its request complete at ``now``; it sends the next request of the list
        ``think_s`` later, unless the list is done or that is past the loop's send deadline (the client stops)."""
        loop = self._closed
        assert loop is not None
        send_s = now + loop.think_s
        log = self._log
        j = len(log.arrival_s)
        if j == len(self._client_prompt_tokens) and loop.more_requests is not None and send_s <= loop.send_until_s:
            self._take_more_requests(loop.more_requests)
        if j == len(self._client_prompt_tokens) or send_s > loop.send_until_s:
            self._active_clients -= 1
            return
        prompt = self._client_prompt_tokens[j]
        log.append(send_s, prompt, self._client_output_tokens[j])
        self._events.push_arrival(send_s + self.profile.host.admission_delay_s(prompt), j)

    def _take_more_requests(self, more: MoreRequests) -> None:
        prompt, output = more(self._client_blocks_asked)
        pr, out = np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64)
        if pr.size != out.size:
            raise ValueError(f"workload {self.workload.name!r}: more_requests gave {pr.size} prompts, {out.size} outputs")
        self._check_lengths(self.workload.name, pr, out, first_index=len(self._client_prompt_tokens))
        self._client_blocks_asked += 1
        self._client_prompt_tokens += pr.tolist()
        self._client_output_tokens += out.tolist()

    def _arrive(self, i: int, now: float) -> None:
        self._milestones.inflight_requests += 1
        log = self._log
        s = Request(i, log.prompt_tokens[i], log.output_tokens[i])
        if self._central:
            self._pending_front.append(s)
            for inst in self._ready_front:
                if not inst.busy:
                    self._plan(inst, now)
                    break
            return
        self._dispatch_front(s, now)

    def _central_pull(self, inst: InstanceScheduler, now: float) -> None:
        """central-fcfs: an idle, ready front-pool instance takes the head of the shared queue."""
        if not self._pending_front or inst.pod.state != "ready":  # type: ignore[attr-defined]
            return
        s = self._pending_front.popleft()
        s.pod_arrival_s = now
        idx = inst.pod.index  # type: ignore[attr-defined]
        self._log.prefill_pod[s.index] = idx
        if inst.role == "agg":
            self._log.decode_pod[s.index] = idx
            inst.routing_loads[inst.routing_slot] += s.prompt_tokens + s.output_tokens
        else:
            inst.routing_loads[inst.routing_slot] += s.prompt_tokens
        inst.waiting.append(s)

    def _flush_pending(self, now: float) -> None:
        """Capacity appeared: requests waiting at the proxy go to pods."""
        if self._central:
            for inst in self._ready_front:
                if not inst.busy and self._pending_front:
                    self._plan(inst, now)
        else:
            while self._pending_front and self._ready_front:
                self._dispatch_front(self._pending_front.popleft(), now)
        while self._pending_decode and self._ready_decode:
            self._dispatch_decode(self._pending_decode.popleft(), now)

    def _dispatch_front(self, s: Request, now: float) -> None:
        inst = self._pick_front(self.now_s)
        if inst is None:
            self._pending_front.append(s)
            return
        idx = inst.pod.index  # type: ignore[attr-defined]
        s.pod_arrival_s = now
        self._log.prefill_pod[s.index] = idx
        if inst.role == "prefill":
            inst.routing_loads[inst.routing_slot] += s.prompt_tokens
            inst.waiting.append(s)
            if not inst.busy:
                self._plan(inst, now)
            return
        inst.routing_loads[inst.routing_slot] += s.prompt_tokens + s.output_tokens
        self._log.decode_pod[s.index] = idx
        self._enqueue(inst, s, now)

    def _dispatch_decode(self, s: Request, now: float) -> None:
        inst = self._pick_decode(self.now_s)
        if inst is None:
            self._pending_decode.append(s)
            return
        inst.routing_loads[inst.routing_slot] += s.prompt_tokens + s.output_tokens
        self._log.decode_pod[s.index] = inst.pod.index  # type: ignore[attr-defined]
        self._events.push_kv_arrival(inst.start_kv_transfer(s, now), inst, s)

    def _on_kv_arrival(self, obj: tuple[InstanceScheduler, Request], now: float) -> None:
        inst, s = obj
        inst.finish_kv_transfer(s)
        self._log.kv_ready_s[s.index] = now
        self._enqueue(inst, s, now)

    def _enqueue(self, inst: InstanceScheduler, s: Request, now: float) -> None:
        was_empty = not inst.waiting
        inst.waiting.append(s)
        if not inst.busy:
            self._plan(inst, now)
        elif was_empty and inst.segment_steps > 1:
            # the head may be admitted at the next step boundary: the skipped segment now ends there
            end_s = inst.end_segment_for_admission(now)  # type: ignore[attr-defined]
            if end_s is not None:  # EventQueue.push_step_end, inlined on the hot path
                inst.version = v = inst.version + 1
                _heappush(self._event_heap, (end_s, STEP_END, inst.pod.index, STEP_END, inst, v))  # type: ignore[attr-defined]

"""One vLLM engine's scheduler: the rules, written once, driven in virtual time (``sim.engine``) and in wall-clock
time (``workers.realtime``).

Rules, per step (vLLM V1-like, decode first):

* every running sequence in the decode phase gets one token of the ``max_num_batched_tokens`` budget and one new KV
  slot; while the KV cache cannot hold those slots, the most recently admitted running request is preempted
  (recompute: its KV is freed and it goes back to the head of the waiting queue; resuming re-prefills prompt +
  generated tokens on the same instance; a decode-role request that never decoded recomputes its prompt);
* partial prefills continue in admission order (chunked prefill);
* then waiting requests are admitted FCFS while ``max_num_seqs``, the token budget and the KV cache allow (none in a
  step that preempted). KV for a prompt is reserved in full at admission (two half-prefilled prompts cannot
  deadlock). A request whose KV arrived from a prefill instance (``tokens_to_compute == 0``) needs ``prompt + 1``
  slots and decodes at once.
* step time: ``profile.step.mixed_step_s(prefill_tokens, decode_batch, decode_context, attention)`` where attention is
  each chunk's causal attention work summed (``latency.causal_attention_token2``: a chunk attends to its request's
  computed tokens, and requests do not attend to each other); a pure decode step is
  ``decode_step_s(batch, Σcontext)`` where Σcontext counts the decoding sequences' KV slots after this step's
  allocation; a prefill instance's step is ``prefill_step_s(tokens)``.
* roles: ``agg`` (prefill chunks and decodes share steps), ``prefill`` (a request leaves after its prefill, having
  sampled one token, as a vLLM prefill worker with max_tokens=1), ``decode`` (requests arrive with their KV after
  a transfer and decode).

Per-step API (``InstanceScheduler``): ``form_step(now_s)`` forms the next step and returns its end time (None when
there is nothing to do); ``commit_step()`` applies it at that end and returns a ``StepOutcome`` (tokens emitted, first
tokens, finished, prefilled, preempted, admitted). Between a commit and the next ``form_step`` the driver may add
requests (``waiting.append``, ``start_kv_transfer``/``finish_kv_transfer``) or ``abort`` them. The driver is told
about request milestones through ``SchedulerEvents`` as they happen (the engine records them; the defaults do
nothing). ``sim.skipping.SkippingScheduler`` is the event-skipping optimisation over the same state.

Counters: the instance's ``PodCounters`` (what its vLLM /metrics would show) are kept here; histogram bucket counts
are buffered in Python lists and folded in by ``flush_counters``.

Anything both clocks must model belongs here, not in a driver: e.g. a per-request host delay before a request may be
admitted would be one method that both drivers call when they hand a request over, as ``start_kv_transfer`` returns
the arrival time of a prompt's KV for the engine's event queue and the RealtimeEngine's inbox alike.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mypy_extensions import mypyc_attr

from autoscaler.core.latency import KvLink, LatencyProfile, PolyModel
from sim.counters import ItlGapLog, PodCounters, flush_pending, observe_pending
from sim.request import Request

ROLES = ("agg", "prefill", "decode")
_heappush = heapq.heappush


def check_engine_limits(profile: LatencyProfile) -> None:
    """The engine limits a scheduler needs, with vLLM's own constraint between them."""
    if profile.max_num_seqs < 1 or profile.max_num_batched_tokens < profile.max_num_seqs:
        raise ValueError(
            f"profile {profile.name!r}: need 1 <= max_num_seqs ({profile.max_num_seqs}) <= "
            f"max_num_batched_tokens ({profile.max_num_batched_tokens}), as vLLM requires"
        )
    if profile.kv_capacity_tokens < 2:
        raise ValueError(f"profile {profile.name!r}: kv_capacity_tokens must be >= 2")


@mypyc_attr(allow_interpreted_subclasses=True)  # drivers outside the engine implement it (sim.native compiles it)
class SchedulerEvents:
    """Request milestones a scheduler reports to its driver, at model time ``t_s``. The defaults do nothing."""

    def prefill_started(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        """First admission of a request that computes its prompt here (its queue wait ends)."""

    def prefill_finished(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        """The prompt is computed. Prefill role: the request has left this instance (hand it to a decode
        instance). Agg role: reported before the first token of the same step."""

    def first_token(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        """The request's first output token on a decode or agg instance."""

    def finished(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        """The request's last token; it has left the instance and freed its KV."""

    def preempted(self, sched: InstanceScheduler, req: Request, t_s: float) -> None:
        """The request was preempted (recompute) at step formation and is back at the head of the queue."""


NO_EVENTS = SchedulerEvents()


@dataclass
class StepOutcome:
    """What one step did (per-step mode): formed at ``start_s``, committed at ``end_s``.

    ``emitted`` lists the requests that emitted one output token at ``end_s`` (``req.tokens_emitted`` or, while
    decoding, ``emitted_at_base`` is its count after it); ``first_token`` the subset for which it was the first.
    ``prefilled``: prefill role, requests whose prefill ended (they sampled one token and left). ``finished``:
    requests whose last token was emitted. ``admitted``/``preempted``: decided when the step was formed.
    """

    start_s: float
    end_s: float = math.nan
    emitted: list[Request] = field(default_factory=list)
    first_token: list[Request] = field(default_factory=list)
    finished: list[Request] = field(default_factory=list)
    prefilled: list[Request] = field(default_factory=list)
    admitted: list[Request] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)


class InstanceScheduler:
    """One vLLM engine (one pod): queues, batch, KV cache, step formation and commit, one step at a time.

    ``form_step(now_s)`` forms the next step at ``now_s`` (a step boundary, or an idle instance) and returns its end
    time, or None when there is nothing to run; ``commit_step()`` applies it (see the module docstring).
    """

    fast = False  # SkippingScheduler: decode runs are committed lazily (see sim.skipping)

    __slots__ = (
        "_decode_a_s",
        "_decode_b_s_per_context_token",
        "_decode_c_s_per_seq",
        "_heap_key",
        "_kv_base_latency_s",
        "_kv_s_per_token",
        "_outcome",
        "_per_step",
        "_poly",
        "_prefill_a_s",
        "_prefill_b_s_per_token",
        "_prefill_c_s_per_token2",
        "busy",
        "counters",
        "decode_batch",
        "decode_context_tokens",
        "decode_seq_s",
        "events",
        "finish_heap",
        "first_step_s",
        "form_step",
        "gap_log",
        "inbound_kv_tokens",
        "inbound_kv_transfers",
        "itl_bucket",
        "itl_bucket_bounds_s",
        "itl_pending",
        "kv_admitted",
        "kv_capacity_tokens",
        "kv_used_tokens",
        "lookahead_steps",
        "max_num_batched_tokens",
        "max_num_seqs",
        "pod",
        "prefill_chunks",
        "prefilling",
        "profile_name",
        "prompt_pending",
        "refill",
        "role",
        "routing_loads",
        "routing_slot",
        "running",
        "segment_peak_index",
        "segment_peaks_s",
        "segment_start_s",
        "segment_steps",
        "segments_committed",
        "step_durations_s",
        "step_ends_s",
        "step_growth_s",
        "step_model",
        "steps_done",
        "ttft_pending",
        "version",
        "waiting",
    )  # fmt: skip

    def __init__(
        self,
        role: str,
        profile: LatencyProfile,
        *,
        events: SchedulerEvents = NO_EVENTS,
        counters: PodCounters | None = None,
        kv_link: KvLink | None = None,
        gap_log: ItlGapLog | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"scheduler role {role!r} is not one of {ROLES}")
        check_engine_limits(profile)
        self.role = role
        self.profile_name = profile.name
        self.step_model = step = profile.step
        self._poly = isinstance(step, PolyModel)
        if isinstance(step, PolyModel):  # prefill and pure decode steps in closed form (no call per step)
            self._prefill_a_s = step.prefill_a_s
            self._prefill_b_s_per_token = step.prefill_b_s_per_token
            self._prefill_c_s_per_token2 = step.prefill_c_s_per_token2
            self._decode_a_s = step.decode_a_s
            self._decode_b_s_per_context_token = step.decode_b_s_per_context_token
            self._decode_c_s_per_seq = step.decode_c_s_per_seq
        self.max_num_seqs = profile.max_num_seqs
        self.max_num_batched_tokens = profile.max_num_batched_tokens
        self.kv_capacity_tokens = profile.kv_capacity_tokens
        link = kv_link or KvLink()
        self._kv_s_per_token = profile.kv_bytes_per_token / link.bytes_per_s
        self._kv_base_latency_s = link.base_latency_s
        self.events = events
        self.counters = counters if counters is not None else PodCounters()
        self.gap_log = gap_log  # every client-visible inter-token gap, when the driver records them
        # queues and batch
        self.running: list[Request] = []  # admission order; the tail is the preemption victim
        self.prefilling: list[Request] = []  # running requests still in the prefill phase, admission order
        self.waiting: deque[Request] = deque()
        self.decode_batch = 0  # running requests in the decode phase
        self.decode_context_tokens = 0  # Σ KV slots of decoding requests
        self.kv_used_tokens = 0  # KV slots in use (decoding + reserved by prefills)
        self.finish_heap: list[tuple[int, int, Request]] = []  # (finish step index, heap key, request)
        self._heap_key = 0
        self.steps_done = 0
        # the step (or, in SkippingScheduler, the run of steps) being executed
        self.busy = False
        self.segment_start_s = 0.0
        self.first_step_s = 0.0  # duration of the first step
        self.step_growth_s = 0.0  # each further step of a closed-form decode run is this much longer
        self.segment_steps = 0
        self.prefill_chunks: list[tuple[Request, int]] = []  # (request, prompt tokens computed in this step)
        self.step_ends_s: list[float] | None = None  # generic step models: end time of each step of the run
        self.step_durations_s: list[float] = []  # generic step models: duration of each step of the run
        self.lookahead_steps = 8  # generic step models: steps evaluated ahead (adapts to how often runs are cut)
        # per-request ITL max in fast mode: the longest step of every committed segment from a request's
        # ``segment_index`` on. Kept as a monotonic stack (segment ordinal, longest step) of the segments whose longest
        # step is longer than every later segment's, so that the longest since any segment is one bisection.
        self.segments_committed = 0
        self.segment_peak_index: list[int] = []
        self.segment_peaks_s: list[float] = []
        self.kv_admitted: list[Request] = []  # KV-arrived requests admitted in this step: first token at its end
        # counters
        self.decode_seq_s = 0.0  # ∫ decoding requests dt over committed steps (time-average batch)
        self.itl_pending = [0] * (len(self.counters.itl.edges_s) + 1)
        self.itl_bucket = 0  # fast mode: the ITL bucket of the last committed segment, and its (lo, hi] bounds
        self.itl_bucket_bounds_s = (math.inf, -math.inf)
        self.ttft_pending = [0] * (len(self.counters.ttft.edges_s) + 1)
        self.prompt_pending = [0] * (len(self.counters.prompt_lengths.edges_s) + 1)
        # kept by the driver: KV transfers heading here, routing load, the owner pod, the event version
        self.inbound_kv_transfers = 0
        self.inbound_kv_tokens = 0
        # routing load (outstanding tokens): this instance's entry in its pool's list (sim.router.PoolLoads)
        self.routing_loads = [0]
        self.routing_slot = 0
        self.pod: object = None
        self.version = 0
        # asked for work (refill(sched, now_s)) when the instance has none: the engine's central FCFS queue
        self.refill: Callable[[InstanceScheduler, float], None] | None = None
        self._outcome: StepOutcome | None = None
        self._per_step = not self.fast  # commit_step builds a StepOutcome of each step
        # form_step(now_s) -> end time of the step formed at now_s, or None when there is nothing to run. Chosen once
        # per role (a bound method in a slot: no dispatch on the role at every step).
        self.form_step: Callable[[float], float | None] = (
            self._form_prefill_step if role == "prefill" else self._form_batch_step
        )

    # ------------------------------------------------------------------ driver API
    def _form_batch_step(self, now: float) -> float | None:
        """``form_step`` of an agg or decode instance: decodes first, then prefill chunks, then admissions."""
        run = self.running
        cap = self.kv_capacity_tokens
        out = self._outcome = StepOutcome(now) if self._per_step else None
        preempted = False
        batch = self.decode_batch
        if batch:
            while cap - self.kv_used_tokens < self.decode_batch:
                self._preempt(run[-1], now)
                preempted = True
            batch = self.decode_batch
            self.kv_used_tokens += batch
            self.decode_context_tokens += batch
        used = self.kv_used_tokens
        budget = self.max_num_batched_tokens - batch
        chunks: list[tuple[Request, int]] = []
        new_tokens = 0
        attn = 0  # causal attention work of the chunks, token² (latency.causal_attention_token2)
        if self.prefilling:
            for s in self.prefilling:
                if budget <= 0:
                    break
                c = s.tokens_to_compute if s.tokens_to_compute < budget else budget
                chunks.append((s, c))
                budget -= c
                new_tokens += c
                attn += c * (c + 2 * (s.kv_reserved_tokens - s.tokens_to_compute))  # after its computed tokens
        wq = self.waiting
        if not preempted:
            if self.refill is not None and not wq and not run:
                self.refill(self, now)
            if wq:
                max_seqs = self.max_num_seqs
                n_run = len(run)
                while wq and n_run < max_seqs and budget > 0:
                    s = wq[0]
                    if s.tokens_to_compute == 0:  # KV arrived from a prefill instance
                        demand = s.prompt_tokens + 1
                        if cap - used < demand:
                            break
                        wq.popleft()
                        run.append(s)
                        n_run += 1
                        used += demand
                        self.decode_context_tokens += demand
                        batch += 1
                        budget -= 1
                        s.decoding = True
                        s.kv_tokens_at_base = s.prompt_tokens
                        s.emitted_at_base = s.tokens_emitted
                        sd = self.steps_done
                        s.base_step = sd
                        self._heap_key += 1
                        s.heap_key = hk = self._heap_key
                        s.finish_step = fs = sd + s.output_tokens - s.tokens_emitted
                        _heappush(self.finish_heap, (fs, hk, s))
                        self.kv_admitted.append(s)
                        if out is not None:
                            out.admitted.append(s)
                    else:
                        demand = s.tokens_to_compute
                        if cap - used < demand:
                            break
                        wq.popleft()
                        n_run += 1
                        self._start_prefill(s, demand, now)
                        used += demand
                        c = demand if demand < budget else budget
                        chunks.append((s, c))
                        budget -= c
                        new_tokens += c
                        attn += c * c
                self.kv_used_tokens = used
                self.decode_batch = batch
        self.segment_start_s = now
        self.prefill_chunks = chunks
        if chunks:
            d = self.step_model.mixed_step_s(new_tokens, batch, self.decode_context_tokens, attn)
            k = 1
            growth = 0.0
        elif batch:
            if self._poly:
                d = self._decode_a_s + self._decode_b_s_per_context_token * self.decode_context_tokens + (
                    self._decode_c_s_per_seq * batch
                )
                growth = self._decode_b_s_per_context_token * batch
            else:
                growth = 0.0
                d = self.step_model.decode_step_s(batch, self.decode_context_tokens)
            k = 1 if preempted else self._decode_run_steps(now, batch, d)
        else:
            self.busy = False
            self.segment_steps = 0
            self._outcome = None
            return None
        if not d > 0:
            raise ValueError(f"profile {self.profile_name!r}: non-positive step time {d} s")
        self.busy = True
        self.first_step_s = d
        self.step_growth_s = growth
        self.segment_steps = k
        ends = self.step_ends_s
        return now + k * d + growth * (k * (k - 1) / 2) if ends is None else ends[k - 1]

    def commit_step(self) -> StepOutcome:
        """Apply the step formed by ``form_step`` at its end: every token accounted one by one."""
        out = self._outcome
        if out is None:
            raise RuntimeError("commit_step: no step formed (call form_step first; SkippingScheduler commits runs)")
        t_end = self.segment_start_s + self.first_step_s
        out.end_s = t_end
        if self.role == "prefill":
            self.commit_prefill_step(t_end)
            self._outcome = None
            return out
        self.steps_done += 1
        self.segments_committed += 1  # the reference sees every gap: no segment peaks needed
        pc = self.counters
        self.decode_seq_s += self.decode_batch * self.first_step_s
        gaps = self.gap_log
        admitted = self.kv_admitted
        for s in list(self.running):
            if not s.decoding:
                continue
            kv = s.kv_tokens_at_base + self.steps_done - s.base_step
            s.emitted_at_base += 1
            s.kv_tokens_at_base = kv
            s.base_step = self.steps_done
            pc.generation_tokens_total += 1
            out.emitted.append(s)
            if s.emitted_at_base == 1 and s in admitted:
                self._first_token(s, t_end)
            else:
                gap = t_end - s.last_token_s
                observe_pending(pc.itl, self.itl_pending, gap)
                if gaps is not None:
                    gaps.add(t_end, gap, 1.0)
                s.max_itl_s = max(s.max_itl_s, gap)
            s.last_token_s = t_end
            if s.emitted_at_base == s.output_tokens:
                self._finish_decoding(s, kv, t_end)
        admitted.clear()
        if self.prefill_chunks:
            self._commit_chunks(t_end)
        self._outcome = None
        return out

    def commit_prefill_step(self, now_s: float) -> None:
        """``commit_step`` for a prefill-role instance: prompts whose last chunk ran sample their one token (which
        the P/D proxy discards) and leave (the engine's hot path, kept in one frame)."""
        self.steps_done += 1
        c = self.counters
        h = c.ttft
        edges = h.edges_s
        pending = self.ttft_pending
        out = self._outcome
        for s, n in self.prefill_chunks:
            s.tokens_to_compute -= n
            if s.tokens_to_compute <= 0:
                self.prefilling.remove(s)
                self.running.remove(s)
                self.kv_used_tokens -= s.kv_reserved_tokens
                s.kv_reserved_tokens = 0
                ttft = now_s - s.pod_arrival_s  # observe_pending, inlined
                pending[bisect_left(edges, ttft)] += 1
                h.sum += ttft
                h.count += 1
                c.prompt_tokens_total += s.prompt_tokens
                c.generation_tokens_total += 1
                c.request_success_total += 1
                observe_pending(c.prompt_lengths, self.prompt_pending, s.prompt_tokens)  # the request ends here
                s.pod_arrival_s = now_s
                s.tokens_to_compute = 0
                if out is not None:
                    out.prefilled.append(s)
                self.events.prefill_finished(self, s, now_s)
        self.prefill_chunks = []

    def abort(self, req: Request) -> bool:
        """Remove ``req`` (a client went away) at a step boundary: its slot and KV are freed. False if absent."""
        if req in self.waiting:
            self.waiting.remove(req)
            return True
        if req not in self.running:
            return False
        self.running.remove(req)
        if req.decoding:
            kv = req.kv_tokens_at_base + self.steps_done - req.base_step
            req.tokens_emitted = req.emitted_at_base + self.steps_done - req.base_step
            req.decoding = False  # its finish-heap entry is now stale
            self.decode_batch -= 1
            self.decode_context_tokens -= kv
            self.kv_used_tokens -= kv
        else:
            self.prefilling.remove(req)
            self.kv_used_tokens -= req.kv_reserved_tokens
            req.kv_reserved_tokens = 0
        return True

    def start_kv_transfer(self, req: Request, now_s: float) -> float:
        """A prefilled request's KV leaves for this instance at ``now_s`` (counted as waiting, and reserved for
        least-kv routing, until it arrives); returns its arrival time over the instance's KV link."""
        self.inbound_kv_transfers += 1
        self.inbound_kv_tokens += req.prompt_tokens
        return now_s + req.prompt_tokens * self._kv_s_per_token + self._kv_base_latency_s

    def finish_kv_transfer(self, req: Request) -> None:
        """The KV has arrived: the request's prompt counts as computed; the driver appends it to ``waiting``."""
        self.inbound_kv_transfers -= 1
        self.inbound_kv_tokens -= req.prompt_tokens
        req.tokens_to_compute = 0

    def kv_used_at(self, t_s: float) -> int:
        """KV slots in use at ``t_s`` as a per-step engine would show them."""
        return self.kv_used_tokens

    @property
    def idle(self) -> bool:
        return not (self.busy or self.running or self.waiting)

    def flush_counters(self) -> None:
        """Fold buffered bucket counts into the counters and set the gauges (running, waiting, KV usage)."""
        c = self.counters
        c.num_requests_running = len(self.running)
        c.num_requests_waiting = len(self.waiting) + self.inbound_kv_transfers  # decode: + inbound KV transfers
        c.num_requests_waiting_deferred = self.inbound_kv_transfers
        c.kv_cache_usage_perc = self.kv_used_tokens / self.kv_capacity_tokens
        flush_pending(c.ttft, self.ttft_pending)
        flush_pending(c.itl, self.itl_pending)
        flush_pending(c.prompt_lengths, self.prompt_pending)

    # aliases read by tests/sim/test_engine.py's invariant check
    @property
    def used(self) -> int:
        return self.kv_used_tokens

    @property
    def cap(self) -> int:
        return self.kv_capacity_tokens

    # ------------------------------------------------------------------ segment peaks (fast mode's ITL max)
    def note_segment_peak(self, longest_step_s: float) -> None:
        """A segment was committed whose longest step lasted ``longest_step_s``."""
        peaks = self.segment_peaks_s
        index = self.segment_peak_index
        while peaks and peaks[-1] <= longest_step_s:  # no longer the longest of any suffix
            peaks.pop()
            index.pop()
        peaks.append(longest_step_s)
        index.append(self.segments_committed)
        self.segments_committed += 1

    def longest_step_since(self, segment_index: int) -> float:
        """The longest step of the committed segments from ``segment_index`` on (-inf when there is none)."""
        index = self.segment_peak_index
        p = bisect_left(index, segment_index)
        return self.segment_peaks_s[p] if p < len(index) else -math.inf

    # ------------------------------------------------------------------ step formation
    def _decode_run_steps(self, now: float, batch: int, first_step_s: float) -> int:
        """How many identical-membership decode steps to run before the next formation: one, step by step."""
        return 1

    def _form_prefill_step(self, now: float) -> float | None:
        """``form_step`` of a prefill instance (no decoding requests): prefill chunks and admissions, kept lean."""
        budget = self.max_num_batched_tokens
        chunks: list[tuple[Request, int]] = []
        new_tokens = 0
        attn = 0  # causal attention work of the chunks, token²
        pf = self.prefilling
        for s in pf:
            if budget <= 0:
                break
            c = s.tokens_to_compute if s.tokens_to_compute < budget else budget
            chunks.append((s, c))
            budget -= c
            new_tokens += c
            attn += c * (c + 2 * (s.kv_reserved_tokens - s.tokens_to_compute))
        wq = self.waiting
        run = self.running
        if self.refill is not None and not wq and not run:
            self.refill(self, now)
        self._outcome = StepOutcome(now) if self._per_step else None
        used = self.kv_used_tokens
        cap = self.kv_capacity_tokens
        if wq:
            max_seqs = self.max_num_seqs
            while wq and len(run) < max_seqs and budget > 0:
                s = wq[0]
                demand = s.tokens_to_compute
                if cap - used < demand:
                    break
                wq.popleft()
                self._start_prefill(s, demand, now)
                used += demand
                c = demand if demand < budget else budget
                chunks.append((s, c))
                budget -= c
                new_tokens += c
                attn += c * c
            self.kv_used_tokens = used
        self.segment_start_s = now
        self.prefill_chunks = chunks
        if not chunks:
            self.busy = False
            self.segment_steps = 0
            self._outcome = None
            return None
        if self._poly:  # PolyModel.prefill_step_s, term for term
            d = self._prefill_a_s + self._prefill_b_s_per_token * new_tokens + self._prefill_c_s_per_token2 * attn
        else:
            d = self.step_model.prefill_step_s(new_tokens, attn)
        if not d > 0:
            raise ValueError(f"profile {self.profile_name!r}: non-positive step time {d} s")
        self.busy = True
        self.first_step_s = d
        self.step_growth_s = 0.0
        self.segment_steps = 1
        return now + d

    def _start_prefill(self, s: Request, demand: int, now: float) -> None:
        """Admit ``s`` to compute ``demand`` prompt tokens: it joins the batch and holds their KV slots."""
        self.running.append(s)
        self.prefilling.append(s)
        s.kv_reserved_tokens = demand
        if not s.prefill_started:
            s.prefill_started = True
            self.events.prefill_started(self, s, now)
        if self._outcome is not None:
            self._outcome.admitted.append(s)

    def _preempt(self, s: Request, now: float) -> None:
        self.running.pop()  # s is the tail
        if s.decoding:
            kv = s.kv_tokens_at_base + self.steps_done - s.base_step
            s.tokens_emitted = s.emitted_at_base + self.steps_done - s.base_step
            s.decoding = False
            self.decode_batch -= 1
            self.decode_context_tokens -= kv
            self.kv_used_tokens -= kv
            if s.tokens_emitted > 0:
                s.last_token_s = now
                if self.fast:  # the steps since the last segment this request saw bound its largest gap
                    m = self.longest_step_since(s.segment_index)
                    if m > s.max_itl_s:
                        s.max_itl_s = m
        else:
            self.prefilling.remove(s)
            self.kv_used_tokens -= s.kv_reserved_tokens
        s.kv_reserved_tokens = 0
        s.tokens_to_compute = s.prompt_tokens + s.tokens_emitted
        if s.tokens_emitted == 0 and self.role == "decode":
            s.tokens_to_compute = s.prompt_tokens  # never decoded: recompute the prompt locally
        self.waiting.appendleft(s)
        self.counters.num_preemptions_total += 1
        if self._outcome is not None:
            self._outcome.preempted.append(s)
        self.events.preempted(self, s, now)

    # ------------------------------------------------------------------ step completion
    def _commit_chunks(self, now: float) -> None:
        """Prefill chunks of an agg or decode instance's step are computed; completed prompts sample a token."""
        out = self._outcome
        for s, c in self.prefill_chunks:
            s.tokens_to_compute -= c
            if s.tokens_to_compute > 0:
                continue
            self.prefilling.remove(s)
            # agg first prefill, or recompute after preemption: the step samples a token
            pc = self.counters
            if out is not None:
                out.emitted.append(s)
            if s.tokens_emitted == 0:
                if self.role == "agg":
                    self.events.prefill_finished(self, s, now)
                self._first_token(s, now)
            else:
                gap = now - s.last_token_s
                observe_pending(pc.itl, self.itl_pending, gap)
                if self.gap_log is not None:
                    self.gap_log.add(now, gap, 1.0)
                if gap > s.max_itl_s:
                    s.max_itl_s = gap
            s.tokens_emitted += 1
            s.last_token_s = now
            pc.generation_tokens_total += 1
            if s.tokens_emitted >= s.output_tokens:
                self.running.remove(s)
                self.kv_used_tokens -= s.kv_reserved_tokens
                s.kv_reserved_tokens = 0
                self._finish(s, now)
                continue
            s.decoding = True
            s.kv_tokens_at_base = s.kv_reserved_tokens
            s.kv_reserved_tokens = 0
            s.emitted_at_base = s.tokens_emitted
            s.base_step = self.steps_done
            self._heap_key += 1
            s.heap_key = self._heap_key
            s.finish_step = self.steps_done + s.output_tokens - s.tokens_emitted
            _heappush(self.finish_heap, (s.finish_step, s.heap_key, s))
            s.segment_index = self.segments_committed
            self.decode_batch += 1
            self.decode_context_tokens += s.kv_tokens_at_base
        self.prefill_chunks = []

    # ------------------------------------------------------------------ request milestones
    def _first_token(self, s: Request, t: float) -> None:
        if s.first_token_s == s.first_token_s:  # not NaN: a recompute after preemption before any token
            return
        s.first_token_s = t
        c = self.counters
        h = c.ttft  # observe_pending, inlined on the hot path
        ttft = t - s.pod_arrival_s
        self.ttft_pending[bisect_left(h.edges_s, ttft)] += 1
        h.sum += ttft
        h.count += 1
        c.prompt_tokens_total += s.prompt_tokens
        if self._outcome is not None:
            self._outcome.first_token.append(s)
        self.events.first_token(self, s, t)

    def _finish_decoding(self, s: Request, kv: int, t: float) -> None:
        """A decoding request emitted its last token at ``t``: it leaves the batch and frees its ``kv`` slots."""
        s.decoding = False
        self.decode_batch -= 1
        self.decode_context_tokens -= kv
        self.kv_used_tokens -= kv
        self.running.remove(s)
        s.tokens_emitted = s.output_tokens
        self.counters.request_success_total += 1  # _finish, inlined: the one path every decoded request takes
        observe_pending(self.counters.prompt_lengths, self.prompt_pending, s.prompt_tokens)
        if self._outcome is not None:
            self._outcome.finished.append(s)
        self.events.finished(self, s, t)

    def _finish(self, s: Request, t: float) -> None:
        self.counters.request_success_total += 1
        observe_pending(self.counters.prompt_lengths, self.prompt_pending, s.prompt_tokens)
        if self._outcome is not None:
            self._outcome.finished.append(s)
        self.events.finished(self, s, t)

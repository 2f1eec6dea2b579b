"""Discrete-event simulator of vLLM serving: disaggregated prefill/decode pools or one aggregated pool.

Model (one instance = one vLLM engine = one pod):

* **Scheduler, per step** (vLLM-like, decode-first): every running sequence in the decode phase gets one token of
  the ``max_num_batched_tokens`` budget and one new KV slot; if the KV cache cannot hold those slots, the most
  recently admitted running request is preempted (recompute: its KV is freed and it goes back to the head of the
  waiting queue; resuming means re-prefilling prompt + generated tokens on the same instance). Then partial
  prefills continue in admission order (chunked prefill), then waiting requests are admitted FCFS while
  ``max_num_seqs``, the token budget and the KV cache allow (none in a step that preempted, as in vLLM V1).
  KV for a prompt is reserved in full at admission (vLLM allocates per chunk; reserving up front keeps two
  half-prefilled prompts from deadlocking without modelling preemption of partial prefills).
* **Step time**: ``profile.step.mixed_step_s(prefill_tokens, decode_batch, decode_context)``; a pure decode step is
  ``decode_step_s(batch, Σcontext)`` where Σcontext counts the KV slots of decoding sequences after this step's
  allocation.
* **Disaggregated**: router -> prefill instance (FCFS) -> prefill end (the prefill worker samples one token, which
  the P/D proxy discards) -> decode instance chosen by the router at prefill end -> KV transfer
  (``prompt × kv_bytes_per_token / kv_link_bytes_per_s + kv_base_latency_s``) -> decode waiting queue; admission
  waits until ``prompt + 1`` KV slots fit. The user-visible first token is the decode worker's first token:
  ``first_token_s`` = end of the first decode step after admission. The decode worker emits all output tokens.
  The prefill instance frees the prompt's KV at prefill end (the pull is not modelled as holding blocks).
* **Aggregated**: one pool (``Pool.DECODE``) whose instances run prefill chunks and decodes in the same steps.
* **Routers**: ``round-robin``; ``least-outstanding-tokens`` (prefill: Σ prompt tokens not yet prefilled; decode and
  agg: Σ prompt+output tokens of unfinished requests); ``least-kv`` (KV slots in use + slots reserved by inbound
  transfers); ``central-fcfs`` (one shared FCFS queue, a request is dispatched when an instance is idle; used for
  queueing oracles; the decode side of a disaggregated run then uses least-outstanding-tokens). Ties go to the
  oldest pod.
* **Pods**: starting (startup delay, ``startup_jitter`` = ``fixed`` | ``uniform:X`` (×U(1−X, 1+X)) |
  ``lognormal:S`` (mean ``startup_s``, log-sd S), seeded) -> ready -> draining -> gone. Scale-down cancels starting
  pods first (newest first), then drains the ready pod with the fewest outstanding tokens (ties: newest). A
  draining pod takes no new work and is gone once empty. Scale-up first cancels drains (most recent first: the
  pod is warm), then creates pods. GPU-seconds run from creation to gone × ``gpus_per_replica``.

Counters (``SimPod.counters``, ``Engine.proxy``; exact whenever ``run_until``/``finish`` return): TTFT as each role's
vLLM defines it (prefill pod: arrival at the pod -> prefill end; decode pod: arrival at the pod, i.e. prefill end ->
first token, so it includes the KV transfer and admission wait; agg pod: arrival -> first token; proxy: user
arrival -> first token), ITL per output token after the first (decode/agg pods and proxy), prompt tokens (prefill
pod at prefill end, decode/agg pod and proxy at the first token), generation tokens (the prefill pod's one discarded
token included), request_success, preemptions, gauges running / waiting (decode: + inbound KV transfers) / KV usage;
the proxy's gauges are requests in flight and requests no pod has taken yet.

Records (``records()``): per request, in workload order; ``prefill_pod``/``decode_pod`` index ``pods()``; in agg
mode both name the one pod and ``prefill_end_s`` = ``kv_ready_s`` = ``first_token_s``; ``itl_mean_s`` =
(last − first token) / (output − 1) and ``itl_max_s`` is the largest gap (NaN for one-token outputs and for
unfinished requests, which are reported with ``finished`` False). With ``record_itl_gaps=True``, ``itl_gaps()``
returns every inter-token gap exactly (token time, gap, how many sequences), compressed per decode step.

Fast mode (default) skips events: while a decode batch is pure decode with constant membership, step times form an
arithmetic sequence (Σcontext grows by B per step), so the next membership change (a finish, a KV-forced
preemption, or an admission after an arrival) is found in closed form and k steps are committed at once, with
histogram updates in bulk. For a step model without that closed form (``TableModel``, ``RooflineModel``, ...) the
segment's step times are evaluated one by one ahead of time (up to a few hundred steps, adapting to how often
arrivals cut segments short) but still without events. ``reference=True`` runs one event per engine step and
accounts every token one by one; both share the scheduler, and tests require identical per-request results.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np

from autoscaler.core.buckets import ITL_BUCKETS_S
from autoscaler.core.latency import LatencyProfile, PolyModel
from autoscaler.core.types import Pool, PoolReplicas
from sim.counters import Histogram, PodCounters
from sim.workload import Workload

ROUTERS = ("round-robin", "least-outstanding-tokens", "least-kv", "central-fcfs")
MODES = ("disagg", "agg")

_INF = math.inf
_NAN = math.nan
# event priorities at equal times: pods become ready, then KV arrives, then steps end
# Heap entries: (time, priority, tie-break, kind, object, version). Steps that end at the same instant are taken
# in pod order (tie-break = pod index), so the fast mode and the per-step reference, which push their step events at
# different moments, hand a shared queue's next request to the same pod; other events keep arrival order (a counter).
_P_READY, _P_KV, _P_STEP = 0, 1, 2
_ITL_EDGES = ITL_BUCKETS_S
_outstanding = attrgetter("outstanding")
_heappush = heapq.heappush
_GENERIC_CHUNK_STEPS = 256  # most steps one lazy segment spans when the step model is not a PolyModel
_heappop = heapq.heappop
_ITL_EDGES_NP = np.asarray(ITL_BUCKETS_S, dtype=np.float64)


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
        _parse_jitter(self.startup_jitter)
        p = self.profile
        if p.max_num_seqs < 1 or p.max_num_batched_tokens < p.max_num_seqs:
            raise ValueError(
                f"profile {p.name!r}: need 1 <= max_num_seqs ({p.max_num_seqs}) <= "
                f"max_num_batched_tokens ({p.max_num_batched_tokens}), as vLLM requires"
            )
        if p.kv_capacity_tokens < 2:
            raise ValueError(f"profile {p.name!r}: kv_capacity_tokens must be >= 2")


def _parse_jitter(spec: str) -> tuple[str, float]:
    if spec == "fixed":
        return "fixed", 0.0
    kind, _, val = spec.partition(":")
    try:
        x = float(val)
    except ValueError:
        x = -1.0
    if kind not in ("uniform", "lognormal") or x < 0 or (kind == "uniform" and x > 1):
        raise ValueError(
            f"EngineConfig.startup_jitter: {spec!r}; expected 'fixed', 'uniform:X' (0<=X<=1) or 'lognormal:S' (S>=0)"
        )
    return kind, x


@dataclass
class SimPod:
    name: str
    pool: Pool
    state: str  # "starting" | "ready" | "draining" | "gone"
    created_s: float
    ready_s: float  # planned ready time while starting; inf if cancelled before ready
    gone_s: float = _INF
    counters: PodCounters = field(default_factory=PodCounters)
    first_scrape_s: float | None = None
    index: int = -1  # position in Engine.pods(); what RequestRecords.prefill_pod/decode_pod hold
    running_seq_s: float = 0.0  # ∫ running decode sequences dt over committed steps (time-average batch)


@dataclass(frozen=True)
class RequestRecords:
    """Per-request outcome arrays (index = workload order); NaN where a stage was not reached, pods -1."""

    arrival_s: np.ndarray
    prefill_start_s: np.ndarray
    prefill_end_s: np.ndarray
    kv_ready_s: np.ndarray
    first_token_s: np.ndarray
    last_token_s: np.ndarray
    itl_mean_s: np.ndarray
    itl_max_s: np.ndarray
    prefill_pod: np.ndarray
    decode_pod: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    finished: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s


class _Seq:
    """One request's state while it lives on an instance (reused across prefill and decode)."""

    __slots__ = (
        "base_step",
        "fin_step",
        "gen",
        "gen_base",
        "hkey",
        "in_dec",
        "itl_max",
        "kv_base",
        "last_tok_s",
        "need",
        "out",
        "pod_arrival_s",
        "prompt",
        "reserve",
        "rid",
        "seg_from",
        "started",
    )  # fmt: skip

    def __init__(self, rid: int, prompt: int, out: int) -> None:
        self.rid = rid
        self.prompt = prompt
        self.out = out
        self.need = prompt  # tokens to compute before the next sample; 0 in decode phase
        self.reserve = 0  # KV slots held while in prefill phase
        self.gen = 0  # tokens emitted (authoritative outside the decode phase)
        self.in_dec = False
        self.kv_base = 0
        self.gen_base = 0
        self.base_step = 0
        self.fin_step = 0
        self.hkey = -1
        self.last_tok_s = _NAN
        self.itl_max = -_INF
        self.seg_from = 0
        self.pod_arrival_s = 0.0
        self.started = False


class _Inst:
    """One vLLM engine. ``role``: 'prefill' (disagg prefill), 'decode' (disagg decode) or 'agg'."""

    __slots__ = (
        "busy",
        "cap",
        "chunks",
        "cum",
        "d0",
        "dec_ctx",
        "delta",
        "durs",
        "fresh",
        "gchunk",
        "heap",
        "inflight",
        "inflight_kv",
        "itl_pend",
        "k",
        "n_dec",
        "outstanding",
        "pf",
        "pod",
        "role",
        "running",
        "seg_max",
        "steps_done",
        "t0",
        "ttft_pend",
        "used",
        "version",
        "waiting",
    )  # fmt: skip

    def __init__(self, pod: SimPod, role: str, cap: int) -> None:
        self.pod = pod
        self.role = role
        self.running: list[_Seq] = []  # admission order; the tail is the preemption victim
        self.pf: list[_Seq] = []  # running sequences still in prefill phase, admission order
        self.waiting: deque[_Seq] = deque()
        self.n_dec = 0
        self.dec_ctx = 0  # Σ KV slots of decoding sequences
        self.used = 0  # KV slots in use (decoding + reserved by prefills)
        self.cap = cap
        self.heap: list[tuple[int, int, _Seq]] = []  # (finish step index, key, seq)
        self.steps_done = 0
        self.seg_max: list[float] = []  # max step duration per committed segment
        self.busy = False
        self.version = 0
        self.t0 = 0.0
        self.d0 = 0.0
        self.delta = 0.0
        self.k = 0
        self.chunks: list[tuple[_Seq, int]] = []
        self.cum: list[float] | None = None  # generic step models: end time of each step of the segment
        self.durs: list[float] = []  # generic step models: duration of each step of the segment
        self.gchunk = 8  # generic step models: steps to evaluate ahead (adapts to how often segments are cut)
        self.fresh: list[_Seq] = []
        self.outstanding = 0
        self.inflight = 0
        self.inflight_kv = 0
        self.itl_pend = [0] * (len(pod.counters.itl.edges_s) + 1)
        self.ttft_pend = [0] * (len(pod.counters.ttft.edges_s) + 1)


def _observe(h: Histogram, pend: list[int], value: float) -> None:
    """One sample; the bucket count goes to ``pend`` (a Python list, flushed into ``h.counts`` by run_until)."""
    pend[bisect_left(h.edges_s, value)] += 1
    h.sum += value
    h.count += 1


def _flush(h: Histogram, pend: list[int]) -> None:
    if any(pend):
        h.counts += np.array(pend, dtype=np.int64)
        pend[:] = [0] * len(pend)


class Engine:
    """The simulated cluster. Drive it with ``run_until``/``set_desired``; read ``pods()``, ``proxy``, ``records()``."""

    def __init__(
        self, workload: Workload, config: EngineConfig, initial_prefill: int, initial_decode: int
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
        self._px_ttft_pend = [0] * (len(self.proxy.ttft.edges_s) + 1)
        arr = np.asarray(workload.arrival_s, dtype=np.float64)
        pr = np.asarray(workload.prompt_tokens, dtype=np.int64)
        out = np.asarray(workload.output_tokens, dtype=np.int64)
        n = arr.size
        if pr.size != n or out.size != n:
            raise ValueError(f"workload {workload.name!r}: arrays differ in length")
        if n and (np.any(np.diff(arr) < 0) or not np.all(np.isfinite(arr))):
            raise ValueError(f"workload {workload.name!r}: arrival_s must be finite and sorted")
        bad = np.flatnonzero((pr < 1) | (out < 1))
        if bad.size:
            raise ValueError(
                f"workload {workload.name!r}: request {int(bad[0])} has prompt or output tokens < 1"
            )
        big = np.flatnonzero(pr + out > prof.kv_capacity_tokens)
        if big.size:
            i = int(big[0])
            raise ValueError(
                f"workload {workload.name!r}: request {i} needs {int(pr[i] + out[i])} KV tokens, more than the "
                f"profile's kv_capacity_tokens={prof.kv_capacity_tokens}; cap lengths with load_trace(max_...)"
            )
        self._arr = arr.tolist()
        self._prompt = pr.tolist()
        self._out = out.tolist()
        self._n = n
        self._next = 0  # next arrival index
        nan = [_NAN] * n
        self._pf_start = list(nan)
        self._pf_end = list(nan)
        self._kv_ready = list(nan)
        self._first = list(nan)
        self._last = list(nan)
        self._itl_max = list(nan)
        self._pf_pod = [-1] * n
        self._dec_pod = [-1] * n
        self._npre = [0] * n
        self._done = [False] * n
        self._heap: list[tuple[float, int, int, int, object, int]] = []
        self._ctr = 0
        self._hkey = 0
        self._pods: list[SimPod] = []
        self._insts: list[_Inst] = []
        self._ready: dict[Pool, list[_Inst]] = {Pool.PREFILL: [], Pool.DECODE: []}
        self._draining: dict[Pool, list[_Inst]] = {Pool.PREFILL: [], Pool.DECODE: []}
        self._starting: dict[Pool, list[_Inst]] = {Pool.PREFILL: [], Pool.DECODE: []}
        self._rr = {Pool.PREFILL: 0, Pool.DECODE: 0}
        self._pending_front: deque[_Seq] = deque()  # arrived, no pod to take them (or the central queue)
        self._pending_decode: deque[_Seq] = deque()  # prefilled, no decode pod ready
        self._rng = np.random.default_rng(config.seed)
        self._jitter = _parse_jitter(config.startup_jitter)
        self._central = config.router == "central-fcfs"
        # least-outstanding-tokens, also the decode side of central-fcfs
        self._lot = config.router in ("least-outstanding-tokens", "central-fcfs")
        self._kv_base_s = config.kv_base_latency_s
        self._kv_s_per_token = prof.kv_bytes_per_token / config.kv_link_bytes_per_s
        step = prof.step
        self._poly = isinstance(step, PolyModel)
        if self._poly:
            self._da = step.decode_a_s
            self._db = step.decode_b_s_per_context_token
            self._dc = step.decode_c_s_per_seq
        self._step = step
        self._fast = not config.reference
        self._max_seqs = prof.max_num_seqs
        self._budget = prof.max_num_batched_tokens
        self._front_pool = Pool.PREFILL if config.mode == "disagg" else Pool.DECODE
        self._inflight_reqs = 0
        self._rec = config.record_itl_gaps
        # compressed gap log: one row per committed decode segment (t0, d0, delta, steps, batch, fresh) ...
        self._g_seg = [array("d") for _ in range(6)]
        # ... and one row per individually observed gap (time, gap)
        self._g_one = (array("d"), array("d"), array("d"))  # time, gap, count
        for _ in range(initial_prefill):
            self._new_pod(Pool.PREFILL, 0.0, ready_now=True)
        for _ in range(initial_decode):
            self._new_pod(Pool.DECODE, 0.0, ready_now=True)

    # ------------------------------------------------------------------ public API
    def run_until(self, t_s: float) -> None:
        """Process every event with time <= t_s, then bring counters and gauges up to t_s."""
        self._run(t_s)
        if t_s > self.now_s:
            self.now_s = t_s
        if self._fast:
            for inst in self._insts:
                if inst.busy and inst.k > 1:
                    self._partial_commit(inst, t_s)
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
        now = max(now_s, self.now_s)
        current = len(self._ready[pool]) + len(self._starting[pool])
        while current < replicas and self._draining[pool]:
            inst = self._draining[pool].pop()
            inst.pod.state = "ready"
            self._insert_ready(pool, inst)
            current += 1
            self._flush_pending(now)
        while current < replicas:
            self._new_pod(pool, now, ready_now=False)
            current += 1
        while current > replicas and self._starting[pool]:
            inst = self._starting[pool].pop()
            inst.pod.state = "gone"
            inst.pod.gone_s = now
            inst.pod.ready_s = _INF
            current -= 1
        while current > replicas and self._ready[pool]:
            cands = self._ready[pool]
            victim = min(reversed(cands), key=lambda x: x.outstanding)
            cands.remove(victim)
            victim.pod.state = "draining"
            self._draining[pool].append(victim)
            current -= 1
            self._maybe_gone(victim, now)

    def replicas(self, pool: Pool) -> PoolReplicas:
        pool = Pool(pool)
        ready = len(self._ready[pool])
        return PoolReplicas(desired=ready + len(self._starting[pool]), ready=ready)

    def pods(self, pool: Pool | None = None) -> list[SimPod]:
        if pool is None:
            return list(self._pods)
        return [p for p in self._pods if p.pool == pool]

    def gpu_seconds(self, until_s: float) -> dict[Pool, float]:
        res = {Pool.PREFILL: 0.0, Pool.DECODE: 0.0}
        g = self.profile.gpus_per_replica
        for p in self._pods:
            res[p.pool] += max(0.0, min(p.gone_s, until_s) - p.created_s) * g
        return res

    def records(self) -> RequestRecords:
        first = np.array(self._first)
        last = np.array(self._last)
        out = np.array(self._out, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            itl_mean = np.where(out > 1, (last - first) / np.maximum(out - 1, 1), _NAN)
        itl_max = np.array(self._itl_max)
        itl_max[~np.isfinite(itl_max)] = _NAN
        done = np.array(self._done, dtype=bool)
        itl_mean[~done] = _NAN
        itl_max[~done] = _NAN
        return RequestRecords(
            arrival_s=np.array(self._arr),
            prefill_start_s=np.array(self._pf_start),
            prefill_end_s=np.array(self._pf_end),
            kv_ready_s=np.array(self._kv_ready),
            first_token_s=first,
            last_token_s=last,
            itl_mean_s=itl_mean,
            itl_max_s=itl_max,
            prefill_pod=np.array(self._pf_pod, dtype=np.int64),
            decode_pod=np.array(self._dec_pod, dtype=np.int64),
            prompt_tokens=np.array(self._prompt, dtype=np.int64),
            output_tokens=out,
            preemptions=np.array(self._npre, dtype=np.int64),
            finished=done,
        )

    def itl_gaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every inter-token gap the clients saw so far: (token time_s, gap_s, count), sorted by time.

        ``count`` sequences emitted a token at ``time_s`` after a gap of ``gap_s`` (one decode step serves the whole
        batch). Exact, so ITL percentiles over all gaps need no per-request approximation. Requires
        ``EngineConfig(record_itl_gaps=True)``.
        """
        if not self._rec:
            raise RuntimeError("itl_gaps() needs EngineConfig(record_itl_gaps=True)")
        t0, d0, dl, j, nd, nf = (np.frombuffer(c, dtype=np.float64) for c in self._g_seg)
        steps = j.astype(np.int64)
        seg = np.repeat(np.arange(steps.size), steps)
        first = np.cumsum(steps) - steps
        i = (np.arange(seg.size) - first[seg]).astype(np.float64)
        gap = d0[seg] + dl[seg] * i
        time = t0[seg] + (i + 1) * d0[seg] + dl[seg] * (i * (i + 1) / 2)
        count = nd[seg] - np.where(i == 0, nf[seg], 0.0)
        time = np.concatenate([time, np.frombuffer(self._g_one[0], dtype=np.float64)])
        gap = np.concatenate([gap, np.frombuffer(self._g_one[1], dtype=np.float64)])
        count = np.concatenate([count, np.frombuffer(self._g_one[2], dtype=np.float64)]).astype(np.int64)
        keep = count > 0
        order = np.argsort(time[keep], kind="stable")
        return time[keep][order], gap[keep][order], count[keep][order]

    @property
    def all_done(self) -> bool:
        return self._next >= self._n and self._inflight_reqs == 0

    # ------------------------------------------------------------------ pods
    def _new_pod(self, pool: Pool, now: float, ready_now: bool) -> _Inst:
        idx = len(self._pods)
        prefix = "agg" if self.config.mode == "agg" else pool.value
        n_in_pool = sum(1 for p in self._pods if p.pool == pool)
        ready = now if ready_now else now + self._startup_delay()
        pod = SimPod(
            name=f"{prefix}-{n_in_pool}", pool=pool, state="ready" if ready_now else "starting",
            created_s=now, ready_s=ready, index=idx,
        )  # fmt: skip
        role = "agg" if self.config.mode == "agg" else ("prefill" if pool is Pool.PREFILL else "decode")
        inst = _Inst(pod, role, self.profile.kv_capacity_tokens)
        self._pods.append(pod)
        self._insts.append(inst)
        if ready_now:
            self._insert_ready(pool, inst)
        else:
            self._starting[pool].append(inst)
            self._push(ready, _P_READY, 0, inst, 0)
        return inst

    def _startup_delay(self) -> float:
        kind, x = self._jitter
        m = self.config.startup_s
        if kind == "fixed" or x == 0:
            return m
        if kind == "uniform":
            return m * float(self._rng.uniform(1 - x, 1 + x))
        return m * float(self._rng.lognormal(-x * x / 2, x))

    def _insert_ready(self, pool: Pool, inst: _Inst) -> None:
        lst = self._ready[pool]
        lst.append(inst)
        lst.sort(key=lambda i: i.pod.index)

    def _on_ready(self, inst: _Inst, now: float) -> None:
        if inst.pod.state != "starting":
            return
        pool = inst.pod.pool
        self._starting[pool].remove(inst)
        inst.pod.state = "ready"
        inst.pod.ready_s = now
        self._insert_ready(pool, inst)
        self._flush_pending(now)

    def _flush_pending(self, now: float) -> None:
        if self._central:
            for inst in self._ready[self._front_pool]:
                if not inst.busy and self._pending_front:
                    self._plan(inst, now)
        else:
            while self._pending_front and self._ready[self._front_pool]:
                self._dispatch_front(self._pending_front.popleft(), now)
        while self._pending_decode and self._ready[Pool.DECODE]:
            self._dispatch_decode(self._pending_decode.popleft(), now)

    def _maybe_gone(self, inst: _Inst, now: float) -> None:
        if (
            inst.pod.state == "draining" and not inst.busy and not inst.running and not inst.waiting
            and inst.inflight == 0
        ):  # fmt: skip
            inst.pod.state = "gone"
            inst.pod.gone_s = now
            self._draining[inst.pod.pool].remove(inst)

    # ------------------------------------------------------------------ event loop
    def _push(self, t: float, prio: int, kind: int, obj: object, ver: int) -> None:
        self._ctr += 1
        _heappush(self._heap, (t, prio, self._ctr, kind, obj, ver))

    def _flush_counts(self) -> None:
        """Bring every pod's counters and gauges up to date (done before run_until/finish return).

        Hot paths only append bucket counts to Python lists and leave gauges alone; this folds them in."""
        for inst in self._insts:
            c = inst.pod.counters
            c.num_requests_running = len(inst.running)
            c.num_requests_waiting = len(inst.waiting) + inst.inflight  # decode: + inbound KV transfers
            c.kv_cache_usage_perc = inst.used / inst.cap
            _flush(inst.pod.counters.ttft, inst.ttft_pend)
            _flush(inst.pod.counters.itl, inst.itl_pend)
        _flush(self.proxy.ttft, self._px_ttft_pend)
        # the client sees exactly the decode-side token stream: proxy ITL and generated tokens are the sums over
        # decode (or agg) pods, gone ones included (cumulative, like the pods' own counters)
        px = self.proxy
        gen, itl_sum, itl_n = 0, 0.0, 0
        itl_counts = np.zeros_like(px.itl.counts)
        for inst in self._insts:
            if inst.role != "prefill":
                c = inst.pod.counters
                gen += c.generation_tokens_total
                itl_sum += c.itl.sum
                itl_n += c.itl.count
                itl_counts += c.itl.counts
        px.generation_tokens_total = gen
        px.itl.counts[:] = itl_counts
        px.itl.sum = itl_sum
        px.itl.count = itl_n
        px.num_requests_running = self._inflight_reqs  # arrived at the proxy, not yet finished
        px.num_requests_waiting = len(self._pending_front) + len(self._pending_decode)  # no pod took them yet

    def _run(self, t_end: float) -> None:
        heap = self._heap
        arr = self._arr
        n = self._n
        nxt = self._next
        ta = arr[nxt] if nxt < n else _INF
        fast = self._fast
        pop = _heappop
        while True:
            te = heap[0][0] if heap else _INF
            if ta <= te:
                if ta > t_end or ta == _INF:
                    return
                self._next = nxt + 1
                self.now_s = ta
                self._arrive(nxt, ta)
                nxt += 1
                ta = arr[nxt] if nxt < n else _INF
            else:
                if te > t_end:
                    return
                t, _, _, kind, obj, ver = pop(heap)
                self.now_s = t
                if kind == 2:
                    if ver == obj.version:  # type: ignore[attr-defined]
                        if obj.role == "prefill":  # type: ignore[attr-defined]
                            self._step_prefill(obj, t)  # type: ignore[arg-type]
                        else:
                            if fast:
                                self._commit_fast(obj, obj.k)  # type: ignore[arg-type, attr-defined]
                            else:
                                self._commit_reference(obj)  # type: ignore[arg-type]
                            self._plan(obj, t)  # type: ignore[arg-type]
                elif kind == 1:
                    self._on_kv(obj, t)
                else:
                    self._on_ready(obj, t)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ routing
    def _pick(self, pool: Pool, front: bool) -> _Inst | None:
        cands = self._ready[pool]
        if not cands:
            return None
        if self._lot:
            return min(cands, key=_outstanding)
        r = self.config.router
        if r == "round-robin":
            i = self._rr[pool] % len(cands)
            self._rr[pool] += 1
            return cands[i]
        if r == "least-kv":
            best = cands[0]
            bv = self._kv_now(best) + best.inflight_kv
            for c in cands[1:]:
                v = self._kv_now(c) + c.inflight_kv
                if v < bv:
                    best, bv = c, v
            return best
        return min(cands, key=_outstanding)

    def _kv_now(self, inst: _Inst) -> int:
        """KV slots in use at now_s as a per-step engine would show them (lazy segments are expanded)."""
        if not (inst.busy and inst.k > 1):
            return inst.used
        m = min(self._steps_before(inst, self.now_s), inst.k - 1)
        return inst.used + inst.n_dec * m

    def _arrive(self, i: int, now: float) -> None:
        self._inflight_reqs += 1
        s = _Seq(i, self._prompt[i], self._out[i])
        if self._central:
            self._pending_front.append(s)
            for inst in self._ready[self._front_pool]:
                if not inst.busy:
                    self._plan(inst, now)
                    break
            return
        self._dispatch_front(s, now)

    def _dispatch_front(self, s: _Seq, now: float) -> None:
        inst = self._pick(self._front_pool, True)
        if inst is None:
            self._pending_front.append(s)
            return
        if inst.role == "prefill":
            inst.outstanding += s.prompt
            self._pf_pod[s.rid] = inst.pod.index
            s.pod_arrival_s = now
            inst.waiting.append(s)
            if not inst.busy:
                self._plan_prefill(inst, now)
            return
        inst.outstanding += s.prompt + s.out
        self._pf_pod[s.rid] = inst.pod.index
        self._dec_pod[s.rid] = inst.pod.index
        s.pod_arrival_s = now
        self._enqueue(inst, s, now)

    def _dispatch_decode(self, s: _Seq, now: float) -> None:
        inst = self._pick(Pool.DECODE, False)
        if inst is None:
            self._pending_decode.append(s)
            return
        inst.outstanding += s.prompt + s.out
        inst.inflight += 1
        inst.inflight_kv += s.prompt
        self._dec_pod[s.rid] = inst.pod.index
        self._ctr += 1
        _heappush(
            self._heap,
            (now + s.prompt * self._kv_s_per_token + self._kv_base_s, _P_KV, self._ctr, 1, (inst, s), 0),
        )

    def _on_kv(self, obj: tuple[_Inst, _Seq], now: float) -> None:
        inst, s = obj
        inst.inflight -= 1
        inst.inflight_kv -= s.prompt
        self._kv_ready[s.rid] = now
        s.need = 0
        self._enqueue(inst, s, now)

    def _enqueue(self, inst: _Inst, s: _Seq, now: float) -> None:
        was_empty = not inst.waiting
        inst.waiting.append(s)
        if not inst.busy:
            self._plan(inst, now)
        elif inst.k > 1 and was_empty and len(inst.running) < self._max_seqs:
            # the head may be admitted at the next step boundary: end the lazy segment there
            j = self._steps_before(inst, now) + 1
            if j < inst.k:
                if inst.cum is not None:  # cut short: evaluate fewer steps ahead next time
                    inst.gchunk = max(4, inst.gchunk // 2)
                inst.k = j
                inst.version += 1
                _heappush(
                    self._heap, (self._seg_time(inst, j), _P_STEP, inst.pod.index, 2, inst, inst.version)
                )

    # ------------------------------------------------------------------ segments
    @staticmethod
    def _seg_time(inst: _Inst, j: int) -> float:
        """End time of the j-th step (1-based) of the current segment."""
        if inst.cum is not None:
            return inst.cum[j - 1]
        return inst.t0 + j * inst.d0 + inst.delta * (j * (j - 1) / 2)

    def _steps_before(self, inst: _Inst, t: float) -> int:
        """Number of steps of the current segment that end strictly before ``t`` (0..k)."""
        k = inst.k
        if inst.cum is not None:
            m = bisect_left(inst.cum, t)
            return m if m < k else k
        dt = t - inst.t0
        if dt <= 0:
            return 0
        d0, a = inst.d0, inst.delta / 2
        if a > 1e-300:
            b = d0 - a
            guess = (-b + math.sqrt(b * b + 4 * a * dt)) / (2 * a)
        else:
            guess = dt / d0
        m = k if guess >= k else max(0, int(guess))
        while m > 0 and self._seg_time(inst, m) >= t:
            m -= 1
        while m < k and self._seg_time(inst, m + 1) < t:
            m += 1
        return m

    def _partial_commit(self, inst: _Inst, t: float) -> None:
        """Commit the steps of a lazy segment that end at or before ``t``; the rest stays one segment.

        No re-planning here: requests that arrived after those step ends must not be admitted in the past,
        and the segment was planned so that nothing changes before its end (or an arrival truncated it)."""
        m = self._steps_before(inst, t)
        while m < inst.k - 1 and self._seg_time(inst, m + 1) <= t:
            m += 1
        if m == 0 or m >= inst.k:
            return
        tm = self._seg_time(inst, m)
        cum = inst.cum
        dm = inst.durs[m] if cum is not None else inst.d0 + inst.delta * m
        self._commit_fast(inst, m)
        nd = inst.n_dec
        inst.used += nd
        inst.dec_ctx += nd
        inst.t0 = tm
        inst.d0 = dm
        inst.k -= m
        if cum is not None:
            inst.cum = cum[m:]
            inst.durs = inst.durs[m:]
        inst.version += 1
        _heappush(self._heap, (self._seg_time(inst, inst.k), _P_STEP, inst.pod.index, 2, inst, inst.version))

    # ------------------------------------------------------------------ scheduler
    def _plan(self, inst: _Inst, now: float) -> None:
        """Form the next step at ``now`` (a step boundary or an idle instance) and schedule its end."""
        if inst.role == "prefill":
            self._plan_prefill(inst, now)
            return
        run = inst.running
        cap = inst.cap
        preempted = False
        nd = inst.n_dec
        if nd:
            while cap - inst.used < inst.n_dec:
                self._preempt(inst, run[-1], now)
                preempted = True
            nd = inst.n_dec
            inst.used += nd
            inst.dec_ctx += nd
        used = inst.used
        budget = self._budget - nd
        chunks: list[tuple[_Seq, int]] = []
        new_tok = 0
        if inst.pf:
            for s in inst.pf:
                if budget <= 0:
                    break
                c = s.need if s.need < budget else budget
                chunks.append((s, c))
                budget -= c
                new_tok += c
        wq = inst.waiting
        if not preempted:
            if self._central and self._pending_front and not wq and not run and inst.role == "agg":
                self._central_pull(inst, now)
            if wq:
                max_seqs = self._max_seqs
                n_run = len(run)
                while wq and n_run < max_seqs and budget > 0:
                    s = wq[0]
                    if s.need == 0:  # KV arrived from a prefill instance
                        demand = s.prompt + 1
                        if cap - used < demand:
                            break
                        wq.popleft()
                        run.append(s)
                        n_run += 1
                        used += demand
                        inst.dec_ctx += demand
                        nd += 1
                        budget -= 1
                        s.in_dec = True
                        s.kv_base = s.prompt
                        s.gen_base = s.gen
                        sd = inst.steps_done
                        s.base_step = sd
                        self._hkey += 1
                        s.hkey = hk = self._hkey
                        s.fin_step = fs = sd + s.out - s.gen
                        _heappush(inst.heap, (fs, hk, s))
                        inst.fresh.append(s)
                    else:
                        demand = s.need
                        if cap - used < demand:
                            break
                        wq.popleft()
                        run.append(s)
                        n_run += 1
                        inst.pf.append(s)
                        used += demand
                        s.reserve = demand
                        if not s.started:
                            s.started = True
                            self._pf_start[s.rid] = now
                        c = demand if demand < budget else budget
                        chunks.append((s, c))
                        budget -= c
                        new_tok += c
                inst.used = used
                inst.n_dec = nd
        inst.t0 = now
        inst.chunks = chunks
        inst.cum = None
        if chunks:
            d = self._step.mixed_step_s(new_tok, nd, inst.dec_ctx)
            k = 1
            dl = 0.0
        elif nd:
            if self._poly:
                d = self._da + self._db * inst.dec_ctx + self._dc * nd
                dl = self._db * nd
                if self._fast and not preempted:
                    h = inst.heap
                    top = h[0]
                    while not (top[2].in_dec and top[2].hkey == top[1]):
                        _heappop(h)
                        top = h[0]
                    k = top[0] - inst.steps_done
                    k_kv = 1 + (cap - used) // nd
                    if k_kv < k:
                        k = k_kv
                else:
                    k = 1
            else:
                dl = 0.0
                d = self._step.decode_step_s(nd, inst.dec_ctx)
                k = 1
                if self._fast and not preempted and d > 0:
                    k = self._generic_segment(inst, now, nd, d)
        else:
            inst.busy = False
            inst.k = 0
            if inst.pod.state == "draining":
                self._maybe_gone(inst, now)
            return
        if not d > 0:
            raise ValueError(f"profile {self.profile.name!r}: non-positive step time {d} s")
        inst.busy = True
        inst.d0 = d
        inst.delta = dl
        inst.k = k
        inst.version = v = inst.version + 1
        t_end = now + k * d + dl * (k * (k - 1) / 2) if inst.cum is None else inst.cum[k - 1]
        _heappush(self._heap, (t_end, _P_STEP, inst.pod.index, 2, inst, v))

    def _generic_segment(self, inst: _Inst, now: float, nd: int, d0: float) -> int:
        """Lazy segment for a step model without closed form: evaluate each step's time, no events between."""
        h = inst.heap
        top = h[0]
        while not (top[2].in_dec and top[2].hkey == top[1]):
            _heappop(h)
            top = h[0]
        k = min(top[0] - inst.steps_done, 1 + (inst.cap - inst.used) // nd, inst.gchunk)
        step = self._step.decode_step_s
        ctx = inst.dec_ctx
        durs = [d0]
        t = now + d0
        cum = [t]
        for i in range(1, k):
            d = step(nd, ctx + nd * i)
            if not d > 0:
                raise ValueError(f"profile {self.profile.name!r}: non-positive step time {d} s")
            durs.append(d)
            t = t + d
            cum.append(t)
        inst.durs = durs
        inst.cum = cum
        return k

    def _plan_prefill(self, inst: _Inst, now: float) -> None:
        """``_plan`` for a disaggregated prefill instance (no decoding sequences): the hot path, kept lean."""
        budget = self._budget
        chunks: list[tuple[_Seq, int]] = []
        new_tok = 0
        pf = inst.pf
        for s in pf:
            if budget <= 0:
                break
            c = s.need if s.need < budget else budget
            chunks.append((s, c))
            budget -= c
            new_tok += c
        wq = inst.waiting
        run = inst.running
        if self._central and self._pending_front and not wq and not run:
            self._central_pull(inst, now)
        used = inst.used
        cap = inst.cap
        if wq:
            max_seqs = self._max_seqs
            while wq and len(run) < max_seqs and budget > 0:
                s = wq[0]
                demand = s.need
                if cap - used < demand:
                    break
                wq.popleft()
                run.append(s)
                pf.append(s)
                used += demand
                s.reserve = demand
                if not s.started:
                    s.started = True
                    self._pf_start[s.rid] = now
                c = demand if demand < budget else budget
                chunks.append((s, c))
                budget -= c
                new_tok += c
            inst.used = used
        inst.t0 = now
        inst.chunks = chunks
        if not chunks:
            inst.busy = False
            inst.k = 0
            if inst.pod.state == "draining":
                self._maybe_gone(inst, now)
            return
        d = self._step.prefill_step_s(new_tok)
        if not d > 0:
            raise ValueError(f"profile {self.profile.name!r}: non-positive step time {d} s")
        inst.busy = True
        inst.d0 = d
        inst.delta = 0.0
        inst.k = 1
        inst.version = v = inst.version + 1
        _heappush(self._heap, (now + d, _P_STEP, inst.pod.index, 2, inst, v))

    def _central_pull(self, inst: _Inst, now: float) -> None:
        """central-fcfs: an idle, ready front-pool instance takes the head of the shared queue."""
        if inst.pod.state != "ready":
            return
        s = self._pending_front.popleft()
        s.pod_arrival_s = now
        self._pf_pod[s.rid] = inst.pod.index
        if inst.role == "agg":
            self._dec_pod[s.rid] = inst.pod.index
            inst.outstanding += s.prompt + s.out
        else:
            inst.outstanding += s.prompt
        inst.waiting.append(s)

    def _step_prefill(self, inst: _Inst, now: float) -> None:
        """A prefill instance's step ended: finished prompts go to KV transfer; plan the next step."""
        inst.steps_done += 1
        for s, c in inst.chunks:
            s.need -= c
            if s.need <= 0:
                inst.pf.remove(s)
                inst.running.remove(s)
                inst.used -= s.reserve
                s.reserve = 0
                self._prefill_done(inst, s, now)
        inst.chunks = []
        if inst.pf or inst.waiting or (self._central and self._pending_front) or inst.pod.state == "draining":
            self._plan_prefill(inst, now)
        else:  # nothing left: idle (what _plan_prefill would conclude, without building a step)
            inst.busy = False
            inst.k = 0
            inst.t0 = now

    def _preempt(self, inst: _Inst, s: _Seq, now: float) -> None:
        inst.running.pop()  # s is the tail
        if s.in_dec:
            kv = s.kv_base + inst.steps_done - s.base_step
            s.gen = s.gen_base + inst.steps_done - s.base_step
            s.in_dec = False
            inst.n_dec -= 1
            inst.dec_ctx -= kv
            inst.used -= kv
            if s.gen > 0:
                s.last_tok_s = now
                if self._fast:
                    sm = inst.seg_max
                    if s.seg_from < len(sm):
                        m = max(sm[s.seg_from :])
                        if m > s.itl_max:
                            s.itl_max = m
        else:
            inst.pf.remove(s)
            inst.used -= s.reserve
        s.reserve = 0
        s.need = s.prompt + s.gen
        if s.gen == 0 and inst.role == "decode":
            s.need = s.prompt  # never decoded: recompute the prompt locally
        inst.waiting.appendleft(s)
        self._npre[s.rid] += 1
        inst.pod.counters.num_preemptions_total += 1

    # ------------------------------------------------------------------ step completion
    def _commit_fast(self, inst: _Inst, j: int) -> None:
        """Commit the first ``j`` steps of the current segment in bulk."""
        nd = inst.n_dec
        if nd and inst.cum is not None:  # a generic-model segment is pure decode: no chunks
            self._commit_generic(inst, j)
            return
        if nd:
            t0, d0, dl = inst.t0, inst.d0, inst.delta
            t_end = t0 + j * d0 + dl * (j * (j - 1) / 2)
            d_last = d0 + dl * (j - 1)
            sm = inst.seg_max
            sm.append(d0 if d0 > d_last else d_last)
            inst.steps_done = sd = inst.steps_done + j
            pod = inst.pod
            pc = pod.counters
            grow = nd * (j - 1)
            inst.used += grow
            inst.dec_ctx += grow
            pod.running_seq_s += nd * (t_end - t0)
            fresh = inst.fresh
            nf = len(fresh)
            if self._rec:
                for col, v in zip(self._g_seg, (t0, d0, dl, j, nd, nf), strict=True):
                    col.append(v)
            toks = nd * j
            pc.generation_tokens_total += toks
            n_itl = toks - nf
            if n_itl:
                total = nd * (j * d0 + dl * (j * (j - 1) / 2)) - nf * d0
                b0 = bisect_left(_ITL_EDGES, d0)
                if j == 1 or b0 == bisect_left(_ITL_EDGES, d_last):
                    inst.itl_pend[b0] += n_itl
                    h = pc.itl
                    h.sum += total
                    h.count += n_itl
                else:
                    w = np.full(j, nd, dtype=np.int64)
                    w[0] -= nf
                    idx = np.searchsorted(_ITL_EDGES_NP, d0 + dl * np.arange(j), side="left")
                    add = np.bincount(idx, weights=w, minlength=_ITL_EDGES_NP.size + 1).astype(np.int64)
                    h = pc.itl
                    h.counts += add
                    h.sum += total
                    h.count += n_itl
            if nf:
                excl = (d0 + dl if d0 + dl > d_last else d_last) if j >= 2 else -_INF
                self._fresh_first_tokens(inst, t0 + d0, excl)
            if inst.heap[0][0] <= sd:
                self._finish_due(inst, t_end)
        else:
            inst.steps_done += j
            t_end = inst.t0 + j * inst.d0
        if inst.chunks:
            self._commit_chunks(inst, t_end)

    def _fresh_first_tokens(self, inst: _Inst, t1: float, excl: float) -> None:
        """KV-admitted sequences emitted their first token at the end of the segment's first step."""
        nxt = len(inst.seg_max)
        for s in inst.fresh:
            self._first_token(inst, s, t1)
            s.itl_max = excl
            s.seg_from = nxt
        inst.fresh.clear()

    def _finish_due(self, inst: _Inst, t_end: float) -> None:
        """Sequences whose last token was emitted by the committed steps leave the batch."""
        h = inst.heap
        sm = inst.seg_max
        sd = inst.steps_done
        while h and h[0][0] <= sd:
            _, key, s = _heappop(h)
            if not s.in_dec or s.hkey != key:
                continue
            if s.seg_from < len(sm):
                m = max(sm[s.seg_from :])
                if m > s.itl_max:
                    s.itl_max = m
            kv = s.kv_base + sd - s.base_step
            s.in_dec = False
            inst.n_dec -= 1
            inst.dec_ctx -= kv
            inst.used -= kv
            inst.running.remove(s)
            s.gen = s.out
            self._finish(inst, s, t_end)

    def _commit_generic(self, inst: _Inst, j: int) -> None:
        """``_commit_fast`` for a pure-decode segment of a generic step model (explicit step times)."""
        nd = inst.n_dec
        if j == len(inst.durs):  # ran to its planned end: look further ahead next time
            inst.gchunk = min(2 * inst.gchunk, _GENERIC_CHUNK_STEPS)
        durs = inst.durs[:j]
        t0 = inst.t0
        t_end = inst.cum[j - 1]  # type: ignore[index]
        sm = inst.seg_max
        sm.append(max(durs))
        inst.steps_done += j
        pod = inst.pod
        pc = pod.counters
        grow = nd * (j - 1)
        inst.used += grow
        inst.dec_ctx += grow
        pod.running_seq_s += nd * (t_end - t0)
        nf = len(inst.fresh)
        pc.generation_tokens_total += nd * j
        pend = inst.itl_pend
        edges = pc.itl.edges_s
        total = 0.0
        n_itl = 0
        rec = self._rec
        for i, d in enumerate(durs):
            w = nd - nf if i == 0 else nd
            if w:
                pend[bisect_left(edges, d)] += w
                total += d * w
                n_itl += w
                if rec:
                    self._g_one[0].append(inst.cum[i])  # type: ignore[index]
                    self._g_one[1].append(d)
                    self._g_one[2].append(float(w))
        pc.itl.sum += total
        pc.itl.count += n_itl
        if nf:
            self._fresh_first_tokens(inst, inst.cum[0], max(durs[1:]) if j >= 2 else -_INF)  # type: ignore[index]
        if inst.heap[0][0] <= inst.steps_done:
            self._finish_due(inst, t_end)

    def _commit_reference(self, inst: _Inst) -> None:
        """One step, every token accounted one by one (the oracle for the fast path)."""
        t_end = inst.t0 + inst.d0
        inst.steps_done += 1
        inst.seg_max.append(inst.d0)
        pc = inst.pod.counters
        inst.pod.running_seq_s += inst.n_dec * inst.d0
        for s in list(inst.running):
            if not s.in_dec:
                continue
            kv = s.kv_base + inst.steps_done - s.base_step
            s.gen_base += 1
            s.kv_base = kv
            s.base_step = inst.steps_done
            pc.generation_tokens_total += 1
            if s.gen_base == 1 and s in inst.fresh:
                self._first_token(inst, s, t_end)
            else:
                gap = t_end - s.last_tok_s
                pc.itl.observe(gap)
                if self._rec:
                    self._g_one[0].append(t_end)
                    self._g_one[1].append(gap)
                    self._g_one[2].append(1.0)
                s.itl_max = max(s.itl_max, gap)
            s.last_tok_s = t_end
            if s.gen_base == s.out:
                s.in_dec = False
                inst.n_dec -= 1
                inst.dec_ctx -= kv
                inst.used -= kv
                inst.running.remove(s)
                s.gen = s.out
                self._finish(inst, s, t_end)
        inst.fresh.clear()
        if inst.chunks:
            self._commit_chunks(inst, t_end)

    def _commit_chunks(self, inst: _Inst, now: float) -> None:
        for s, c in inst.chunks:
            s.need -= c
            if s.need > 0:
                continue
            inst.pf.remove(s)
            if inst.role == "prefill":
                inst.running.remove(s)
                inst.used -= s.reserve
                s.reserve = 0
                self._prefill_done(inst, s, now)
                continue
            # agg first prefill, or recompute after preemption: the step samples a token
            pc = inst.pod.counters
            if s.gen == 0:
                if inst.role == "agg":
                    self._pf_end[s.rid] = now
                    self._kv_ready[s.rid] = now
                self._first_token(inst, s, now)
            else:
                gap = now - s.last_tok_s
                _observe(pc.itl, inst.itl_pend, gap)
                if self._rec:
                    self._g_one[0].append(now)
                    self._g_one[1].append(gap)
                    self._g_one[2].append(1.0)
                if gap > s.itl_max:
                    s.itl_max = gap
            s.gen += 1
            s.last_tok_s = now
            pc.generation_tokens_total += 1
            if s.gen >= s.out:
                inst.running.remove(s)
                inst.used -= s.reserve
                s.reserve = 0
                self._finish(inst, s, now)
                continue
            s.in_dec = True
            s.kv_base = s.reserve
            s.reserve = 0
            s.gen_base = s.gen
            s.base_step = inst.steps_done
            self._hkey += 1
            s.hkey = self._hkey
            s.fin_step = inst.steps_done + s.out - s.gen
            _heappush(inst.heap, (s.fin_step, s.hkey, s))
            s.seg_from = len(inst.seg_max)
            inst.n_dec += 1
            inst.dec_ctx += s.kv_base
        inst.chunks = []

    # ------------------------------------------------------------------ request milestones
    def _prefill_done(self, inst: _Inst, s: _Seq, now: float) -> None:
        rid = s.rid
        self._pf_end[rid] = now
        inst.outstanding -= s.prompt
        c = inst.pod.counters
        _observe(c.ttft, inst.ttft_pend, now - s.pod_arrival_s)
        c.prompt_tokens_total += s.prompt
        c.generation_tokens_total += 1
        c.request_success_total += 1
        s.pod_arrival_s = now
        s.need = 0
        self._dispatch_decode(s, now)

    def _first_token(self, inst: _Inst, s: _Seq, t: float) -> None:
        rid = s.rid
        if self._first[rid] == self._first[rid]:  # not NaN: a recompute after preemption before any token
            return
        self._first[rid] = t
        c = inst.pod.counters
        _observe(c.ttft, inst.ttft_pend, t - s.pod_arrival_s)
        c.prompt_tokens_total += s.prompt
        px = self.proxy
        _observe(px.ttft, self._px_ttft_pend, t - self._arr[rid])
        px.prompt_tokens_total += s.prompt

    def _finish(self, inst: _Inst, s: _Seq, t: float) -> None:
        rid = s.rid
        self._last[rid] = t
        self._itl_max[rid] = s.itl_max
        self._done[rid] = True
        inst.outstanding -= s.prompt + s.out
        inst.pod.counters.request_success_total += 1
        self.proxy.request_success_total += 1
        self._inflight_reqs -= 1

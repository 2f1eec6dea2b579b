"""Simulated pods: their lifecycle and how a pool scales, as a Deployment behind the autoscaler would.

A pod is ``starting`` (startup delay: ``fixed``, ``uniform:X`` (×U(1−X, 1+X)) or ``lognormal:S`` (mean ``startup_s``,
log-sd S), seeded) -> ``ready`` -> ``draining`` -> ``gone``. Scale-down cancels starting pods first (newest first),
then drains the ready pod with the fewest outstanding tokens (ties: newest). A draining pod takes no new work and is
gone once empty. Scale-up first cancels drains (most recent first: the pod is warm), then creates pods.
GPU-seconds run from creation to gone × ``gpus_per_replica``. Each pod runs one ``InstanceScheduler``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from autoscaler.core.types import Pool, PoolReplicas
from sim.counters import PodCounters
from sim.events import EventQueue
from sim.router import PoolLoads
from sim.scheduler import InstanceScheduler


@dataclass
class SimPod:
    name: str
    pool: Pool
    state: str  # "starting" | "ready" | "draining" | "gone"
    created_s: float
    ready_s: float  # planned ready time while starting; inf if cancelled before ready
    gone_s: float = math.inf
    counters: PodCounters = field(default_factory=PodCounters)
    first_scrape_s: float | None = None
    index: int = -1  # position in Engine.pods(); what RequestRecords.prefill_pod/decode_pod hold
    running_seq_s: float = 0.0  # ∫ running decode sequences dt over committed steps (time-average batch)


def parse_startup_jitter(spec: str) -> tuple[str, float]:
    """``fixed`` | ``uniform:X`` (0 <= X <= 1) | ``lognormal:S`` (S >= 0) -> (kind, parameter)."""
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


class Cluster:
    """Pods of both pools and their instances. ``make_instance(role, counters)`` builds a pod's scheduler;
    ``capacity_added(now_s)`` is called when a pool gained a ready pod (queued requests may go there)."""

    def __init__(
        self,
        *,
        mode: str,
        startup_s: float,
        startup_jitter: str,
        seed: int,
        events: EventQueue,
        make_instance: Callable[[str, PodCounters], InstanceScheduler],
        capacity_added: Callable[[float], None],
    ) -> None:
        self.mode = mode
        self.pods: list[SimPod] = []
        self.instances: list[InstanceScheduler] = []
        self.ready: dict[Pool, list[InstanceScheduler]] = {Pool.PREFILL: [], Pool.DECODE: []}  # in pod order
        self.starting: dict[Pool, list[InstanceScheduler]] = {Pool.PREFILL: [], Pool.DECODE: []}
        self.draining: dict[Pool, list[InstanceScheduler]] = {Pool.PREFILL: [], Pool.DECODE: []}
        self.loads: dict[Pool, PoolLoads] = {Pool.PREFILL: PoolLoads(), Pool.DECODE: PoolLoads()}  # routing load
        self._startup_s = startup_s
        self._jitter = parse_startup_jitter(startup_jitter)
        self._rng = np.random.default_rng(seed)
        self._events = events
        self._make_instance = make_instance
        self._capacity_added = capacity_added

    @staticmethod
    def pod_of(inst: InstanceScheduler) -> SimPod:
        return inst.pod  # type: ignore[return-value]

    # ------------------------------------------------------------------ lifecycle
    def add_pod(self, pool: Pool, now_s: float, *, ready_now: bool) -> InstanceScheduler:
        idx = len(self.pods)
        prefix = "agg" if self.mode == "agg" else pool.value
        n_in_pool = sum(1 for p in self.pods if p.pool == pool)
        ready_s = now_s if ready_now else now_s + self._startup_delay_s()
        pod = SimPod(
            name=f"{prefix}-{n_in_pool}", pool=pool, state="ready" if ready_now else "starting",
            created_s=now_s, ready_s=ready_s, index=idx,
        )  # fmt: skip
        role = "agg" if self.mode == "agg" else ("prefill" if pool is Pool.PREFILL else "decode")
        inst = self._make_instance(role, pod.counters)
        inst.pod = pod
        self.pods.append(pod)
        self.instances.append(inst)
        self.loads[pool].add(inst, taking_work=ready_now)
        if ready_now:
            self._insert_ready(pool, inst)
        else:
            self.starting[pool].append(inst)
            self._events.push_ready(ready_s, inst)
        return inst

    def _startup_delay_s(self) -> float:
        kind, x = self._jitter
        m = self._startup_s
        if kind == "fixed" or x == 0:
            return m
        if kind == "uniform":
            return m * float(self._rng.uniform(1 - x, 1 + x))
        return m * float(self._rng.lognormal(-x * x / 2, x))

    def _insert_ready(self, pool: Pool, inst: InstanceScheduler) -> None:
        lst = self.ready[pool]
        lst.append(inst)
        lst.sort(key=lambda i: self.pod_of(i).index)

    def on_ready(self, inst: InstanceScheduler, now_s: float) -> None:
        """A starting pod's startup delay is over (ignored if it was cancelled meanwhile)."""
        pod = self.pod_of(inst)
        if pod.state != "starting":
            return
        self.starting[pod.pool].remove(inst)
        pod.state = "ready"
        pod.ready_s = now_s
        self._insert_ready(pod.pool, inst)
        self.loads[pod.pool].set_taking_work(inst, True)
        self._capacity_added(now_s)

    def retire_if_drained(self, inst: InstanceScheduler, now_s: float) -> None:
        """A draining pod is gone once it has nothing running, queued or on its way."""
        pod = self.pod_of(inst)
        if (
            pod.state == "draining" and not inst.busy and not inst.running and not inst.waiting
            and inst.inbound_kv_transfers == 0
        ):  # fmt: skip
            pod.state = "gone"
            pod.gone_s = now_s
            self.draining[pod.pool].remove(inst)
            self.loads[pod.pool].remove(inst)

    def scale(self, pool: Pool, replicas: int, now_s: float) -> None:
        """Order ``replicas`` pods (starting + ready) in ``pool`` at ``now_s`` (see the module docstring)."""
        current = len(self.ready[pool]) + len(self.starting[pool])
        loads = self.loads[pool]
        while current < replicas and self.draining[pool]:
            inst = self.draining[pool].pop()
            self.pod_of(inst).state = "ready"
            self._insert_ready(pool, inst)
            loads.set_taking_work(inst, True)
            current += 1
            self._capacity_added(now_s)
        while current < replicas:
            self.add_pod(pool, now_s, ready_now=False)
            current += 1
        while current > replicas and self.starting[pool]:
            inst = self.starting[pool].pop()
            loads.remove(inst)
            pod = self.pod_of(inst)
            pod.state = "gone"
            pod.gone_s = now_s
            pod.ready_s = math.inf
            current -= 1
        while current > replicas and self.ready[pool]:
            cands = self.ready[pool]
            victim = min(reversed(cands), key=loads.load_of)
            cands.remove(victim)
            self.pod_of(victim).state = "draining"
            loads.set_taking_work(victim, False)
            self.draining[pool].append(victim)
            current -= 1
            self.retire_if_drained(victim, now_s)

    # ------------------------------------------------------------------ views
    def replicas(self, pool: Pool) -> PoolReplicas:
        ready = len(self.ready[pool])
        return PoolReplicas(desired=ready + len(self.starting[pool]), ready=ready)

    def gpu_seconds(self, until_s: float, gpus_per_replica: int) -> dict[Pool, float]:
        res = {Pool.PREFILL: 0.0, Pool.DECODE: 0.0}
        for p in self.pods:
            res[p.pool] += max(0.0, min(p.gone_s, until_s) - p.created_s) * gpus_per_replica
        return res

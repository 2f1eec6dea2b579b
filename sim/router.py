"""Which pod of a pool takes a request: the simulated P/D proxy's routing policies.

``round-robin``; ``least-outstanding-tokens`` (prefill: Σ prompt tokens not yet prefilled; decode and agg: Σ
prompt+output tokens of unfinished requests); ``least-kv`` (KV slots in use, as a per-step engine would show them,
plus slots reserved by inbound transfers); ``central-fcfs`` (one shared FCFS queue: the engine dispatches a request
when an instance is idle; its decode side uses least-outstanding-tokens). Ties go to the oldest pod.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from autoscaler.core.types import Pool
from sim.scheduler import InstanceScheduler

ROUTERS = ("round-robin", "least-outstanding-tokens", "least-kv", "central-fcfs")
_outstanding_tokens = attrgetter("outstanding_tokens")


class Router:
    __slots__ = ("_least_outstanding", "_next_index", "policy")

    def __init__(self, policy: str) -> None:
        if policy not in ROUTERS:
            raise ValueError(f"router {policy!r} is not one of {ROUTERS}")
        self.policy = policy
        self._least_outstanding = policy in ("least-outstanding-tokens", "central-fcfs")
        self._next_index = {Pool.PREFILL: 0, Pool.DECODE: 0}  # round-robin position per pool

    def pick(self, ready: Sequence[InstanceScheduler], pool: Pool, now_s: float) -> InstanceScheduler | None:
        """The ready instance (in pod order) that takes the next request of ``pool``; None when there is none."""
        if not ready:
            return None
        if self._least_outstanding:
            return min(ready, key=_outstanding_tokens)
        if self.policy == "round-robin":
            i = self._next_index[pool] % len(ready)
            self._next_index[pool] += 1
            return ready[i]
        best = ready[0]  # least-kv
        best_kv = best.kv_used_at(now_s) + best.inbound_kv_tokens
        for c in ready[1:]:
            kv = c.kv_used_at(now_s) + c.inbound_kv_tokens
            if kv < best_kv:
                best, best_kv = c, kv
        return best

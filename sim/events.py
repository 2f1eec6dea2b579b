"""The engine's event queue: pod-ready, KV-arrival and step-end events in time order, ties broken deterministically.

Heap entries are ``(time_s, priority, tie_break, kind, object, version)``. At equal times a closed-loop client's
completion comes first, then a closed-loop request's arrival at the pods (as the workload's own arrivals come before
every event), then pods become ready, then KV arrives, then steps end (a request whose KV lands exactly at a step boundary is admitted there). Steps that end
at the same instant are taken in pod order (``tie_break`` = pod index), so the fast mode and the per-step reference,
which push their step events at different moments, hand a shared queue's next request to the same pod; other events
keep push order. A step event is stale once its instance's ``version`` moved on (the segment was re-planned).
The workload's arrivals are not queued here: the engine merges their sorted times with this heap, arrivals first; only
closed-loop arrivals, whose times are known once a client is free, are events.
"""

from __future__ import annotations

import heapq
from typing import Any

CLIENT_DONE, ARRIVAL, READY, KV_ARRIVAL, STEP_END = -2, -1, 0, 1, 2  # kinds, also the priorities at equal times
_heappush = heapq.heappush


class EventQueue:
    __slots__ = ("_pushes", "heap")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, int, Any, int]] = []
        self._pushes = 0

    def push_ready(self, t_s: float, inst: Any) -> None:
        self._pushes += 1
        _heappush(self.heap, (t_s, READY, self._pushes, READY, inst, 0))

    def push_kv_arrival(self, t_s: float, inst: Any, req: Any) -> None:
        self._pushes += 1
        _heappush(self.heap, (t_s, KV_ARRIVAL, self._pushes, KV_ARRIVAL, (inst, req), 0))

    def push_client_done(self, t_s: float) -> None:
        """Closed loop: a client sees its request's last token at ``t_s`` (and sends its next one)."""
        self._pushes += 1
        _heappush(self.heap, (t_s, CLIENT_DONE, self._pushes, CLIENT_DONE, None, 0))

    def push_arrival(self, t_s: float, request_index: int) -> None:
        """Closed loop: request ``request_index`` reaches the pods at ``t_s``."""
        self._pushes += 1
        _heappush(self.heap, (t_s, ARRIVAL, self._pushes, ARRIVAL, request_index, 0))

    def push_step_end(self, t_s: float, inst: Any) -> None:
        """The instance's current step (or segment) ends at ``t_s``; earlier step events of it become stale."""
        inst.version = v = inst.version + 1
        _heappush(self.heap, (t_s, STEP_END, inst.pod.index, STEP_END, inst, v))

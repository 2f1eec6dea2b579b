"""Which pods a ReplicaSet removes first on scale-down: the ReplicaSet controller's order.

``ActivePodsWithRanks.Less`` in kubernetes ``pkg/controller/controller_utils.go`` (1.22+, with the
PodDeletionCost and LogarithmicScaleDown features on, their defaults):

1. not yet scheduled before scheduled;
2. Pending before Unknown before Running;
3. not ready before ready;
4. lower ``controller.kubernetes.io/pod-deletion-cost`` before higher (an unparsable value counts as 0);
5. pods doubled up on one node before others (one machine: every pod shares the node, so no difference);
6. of two ready pods, the one ready for less time, compared on a log2 scale of the time since it became ready
   (pods within the same power of two tie, and the tie goes by UID, as upstream);
7. more container restarts before fewer;
8. newer before older (creation time).
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])  # fmt: skip


def ready_since_s(pod: Mapping[str, Any]) -> float | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return _time(c.get("lastTransitionTime"))
    return None


def deletion_cost(pod: Mapping[str, Any]) -> int:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        return 0
    return value if -(2**31) <= value < 2**31 else 0


def _restarts(pod: Mapping[str, Any]) -> int:
    return max((int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or []),
               default=0)  # fmt: skip


def _log_rank(since_s: float, now_s: float) -> int:
    elapsed_ns = (now_s - since_s) * 1e9
    return int(math.log2(elapsed_ns)) if elapsed_ns > 0 else -1


def _less(a: Mapping[str, Any], b: Mapping[str, Any], now_s: float) -> bool:
    """``ActivePodsWithRanks.Less``: True when ``a`` should be deleted before ``b``."""
    node_a, node_b = (a.get("spec") or {}).get("nodeName") or "", (b.get("spec") or {}).get("nodeName") or ""
    if node_a != node_b and (not node_a or not node_b):
        return not node_a
    phase_a = _PHASE_ORDER.get((a.get("status") or {}).get("phase", "Pending"), 0)
    phase_b = _PHASE_ORDER.get((b.get("status") or {}).get("phase", "Pending"), 0)
    if phase_a != phase_b:
        return phase_a < phase_b
    if is_ready(a) != is_ready(b):
        return not is_ready(a)
    if deletion_cost(a) != deletion_cost(b):
        return deletion_cost(a) < deletion_cost(b)
    if is_ready(a) and is_ready(b):
        since_a, since_b = ready_since_s(a), ready_since_s(b)
        if since_a != since_b:
            if since_a is None or since_b is None:
                return since_a is None  # afterOrZero: a pod without a ready time goes first
            diff = _log_rank(since_a, now_s) - _log_rank(since_b, now_s)
            if diff == 0:
                return str((a.get("metadata") or {}).get("uid", "")) < str((b.get("metadata") or {}).get("uid", ""))
            return diff < 0
    if _restarts(a) != _restarts(b):
        return _restarts(a) > _restarts(b)
    created_a = _time((a.get("metadata") or {}).get("creationTimestamp")) or math.inf
    created_b = _time((b.get("metadata") or {}).get("creationTimestamp")) or math.inf
    return created_a > created_b


def deletion_order(pods: Sequence[Mapping[str, Any]], now_s: float) -> list[Mapping[str, Any]]:
    """``pods`` sorted so that the first ones are those the ReplicaSet controller deletes first."""

    def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        if _less(a, b, now_s):
            return -1
        if _less(b, a, now_s):
            return 1
        return 0

    return sorted(pods, key=functools.cmp_to_key(compare))

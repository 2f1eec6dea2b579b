"""One owner per scale target: who else scales the Deployments (StatefulSets, ...) a DisaggregatedAutoscaler targets.

Two writers on one target flap it (4 -> 5 -> 1 -> 1 -> 2 -> 1 was observed with two autoscalers), so an active
autoscaler whose target another writer also scales does not scale at all, like the HPA with ``AmbiguousSelector``,
and says who the others are (condition ``ExclusiveOwner=False``, reason ``AmbiguousOwner``, one event). Writers:
other active DisaggregatedAutoscalers (advisory ones never write), HorizontalPodAutoscalers (``autoscaling/v2``)
and KEDA ScaledObjects (``keda.sh/v1alpha1``; KEDA also creates an HPA named ``keda-hpa-<name>``). An advisory
autoscaler beside an HPA is the intended "HPA follows pdscale's recommendation" set-up, not a conflict.

Per pass: one LIST of HPAs and one of ScaledObjects per namespace (cluster-wide with ``-A``), whatever the number
of autoscalers. When a kind cannot be listed the check degrades, it never blocks scaling: KEDA not installed (404:
nothing to conflict with), RBAC forbids it (403) or any other error (the condition turns ``Unknown``, reason
``OwnershipUnverified``, naming the missing grant). A failing kind is logged once per change and re-tried only
every ``recheck_s`` (5 minutes), so a cluster without KEDA costs one request per 5 minutes, not one per tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from autoscaler.core.spec import Mode, TargetRef
from autoscaler.core.types import Pool
from autoscaler.kube import (
    AMBIGUOUS_OWNER,
    KIND,
    AutoscalerObject,
    KubeClient,
    Ownership,
    api_error_text,
    as_dict,
    split_api_version,
)

log = logging.getLogger("pdscale.owners")

NO_OTHER_OWNER = "NoOtherOwner"
OWNERSHIP_UNVERIFIED = "OwnershipUnverified"

# (label in messages, group, version, plural, grant to name when forbidden)
HPA = ("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers")
SCALED_OBJECT = ("ScaledObject", "keda.sh", "v1alpha1", "scaledobjects")

TargetKey = tuple[str, str, str, str]  # namespace, group, kind, name (any version of a group is the same object)


def target_key(namespace: str, api_version: str, kind: str, name: str) -> TargetKey:
    return namespace, split_api_version(api_version)[0], kind, name


@dataclass
class _KindState:
    """The last outcome of listing one kind: its error (None: listed fine) and when to try again."""

    error: str | None = None
    absent: bool = False  # 404: the kind is not served (KEDA not installed)
    retry_at_s: float = 0.0


@dataclass
class OwnerIndex:
    """Every writer of every target seen this pass, and what could not be checked."""

    writers: dict[TargetKey, list[str]] = field(default_factory=dict)
    unverified: list[str] = field(default_factory=list)  # kinds that could not be listed, with the reason
    absent: list[str] = field(default_factory=list)  # kinds not served by this cluster

    def add(self, key: TargetKey, writer: str) -> None:
        self.writers.setdefault(key, []).append(writer)

    def ownership(self, obj: AutoscalerObject) -> Ownership:
        """The verdict for ``obj`` (its own entries are not conflicts; an advisory autoscaler has none)."""
        assert obj.spec is not None
        me = f"{KIND} {obj.key}"
        if obj.spec.mode is Mode.ACTIVE:
            others: list[str] = []
            for pool in (Pool.PREFILL, Pool.DECODE):
                ref = obj.spec.pool(pool).target
                if ref is None:
                    continue
                key = target_key(obj.namespace, ref.api_version, ref.kind, ref.name)
                rivals = sorted({w for w in self.writers.get(key, []) if w != me})
                if rivals:
                    others.append(f"{pool.value} target {ref.kind}/{ref.name} is also scaled by {', '.join(rivals)}")
            if others:
                return Ownership(False, AMBIGUOUS_OWNER, "; ".join(others) + ": not scaling until one owner is left "
                                 "(delete the others, or set mode: advisory on this autoscaler)")
        if self.unverified:
            return Ownership(None, OWNERSHIP_UNVERIFIED, "other owners not checked: " + "; ".join(self.unverified)
                             + " (scaling anyway)")
        note = f" ({', '.join(self.absent)} not installed)" if self.absent else ""
        return Ownership(True, NO_OTHER_OWNER, f"no other autoscaler scales these targets{note}")


class OwnerChecker:
    """Builds an ``OwnerIndex`` per pass (see module docstring). Thread-safe enough for one pass at a time."""

    def __init__(self, kube: KubeClient, *, recheck_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.recheck_s = recheck_s
        self.clock = clock
        self.lists = 0  # LIST requests sent (for tests and the bench)
        self._state: dict[str, _KindState] = {}
        self._lock = threading.Lock()

    def index(self, objects: Sequence[AutoscalerObject], namespace: str | None) -> OwnerIndex:
        """Writers of the targets of ``objects``: the active autoscalers themselves, HPAs and ScaledObjects in
        ``namespace`` (every namespace when None)."""
        out = OwnerIndex()
        wanted = set()
        for obj in objects:
            if obj.spec is None:
                continue
            for pool in (Pool.PREFILL, Pool.DECODE):
                ref = obj.spec.pool(pool).target
                if ref is None:
                    continue
                key = target_key(obj.namespace, ref.api_version, ref.kind, ref.name)
                wanted.add(key)
                if obj.spec.mode is Mode.ACTIVE:
                    out.add(key, f"{KIND} {obj.key}")
        if not wanted:
            return out
        for kind, refs in ((HPA, _hpa_targets), (SCALED_OBJECT, _scaled_object_targets)):
            items = self._list(kind, namespace, out)
            for item in items or ():
                meta = item.get("metadata") or {}
                ns, name = str(meta.get("namespace") or namespace or ""), str(meta.get("name") or "")
                for ref in refs(item):
                    key = target_key(ns, ref.api_version, ref.kind, ref.name)
                    if key in wanted:
                        out.add(key, f"{kind[0]} {name}")
        return out

    def _list(self, kind: tuple[str, str, str, str], namespace: str | None,
              out: OwnerIndex) -> list[Mapping[str, Any]] | None:
        label, group, version, plural = kind
        now = self.clock()
        with self._lock:
            state = self._state.setdefault(label, _KindState())
            if state.error is not None and now < state.retry_at_s:
                self._note(state, label, out)
                return None
        try:
            self.lists += 1
            if namespace is None:
                raw = self.kube.custom.list_cluster_custom_object(group, version, plural,
                                                                   _request_timeout=self.kube.timeout)
            else:
                raw = self.kube.custom.list_namespaced_custom_object(group, version, namespace, plural,
                                                                     _request_timeout=self.kube.timeout)
            items = list(as_dict(raw, f"list {plural}").get("items") or [])
            error, absent = None, False
        except ApiException as exc:
            items, absent = [], exc.status == 404
            error = _explain(exc, label, group, plural, namespace)
        except Exception as exc:  # timeouts, connection errors
            items, absent, error = [], False, f"cannot list {label}s: {api_error_text(exc)}"
        with self._lock:
            changed = (error, absent) != (state.error, state.absent)
            state.error, state.absent = error, absent
            state.retry_at_s = now + self.recheck_s if error is not None else 0.0
            self._note(state, label, out)
        if changed:  # log transitions only: a missing KEDA or grant is not news every tick
            if error is None:
                log.info("listing %ss works again", label)
            elif absent:
                log.info("%s: not checked for ownership conflicts (%s)", label, error)
            else:
                log.warning("%s", error)
        return None if error is not None else items

    @staticmethod
    def _note(state: _KindState, label: str, out: OwnerIndex) -> None:
        if state.absent:
            out.absent.append(f"{label}s" if label != "ScaledObject" else "KEDA")
        elif state.error is not None:
            out.unverified.append(state.error)


def _explain(exc: ApiException, label: str, group: str, plural: str, namespace: str | None) -> str:
    if exc.status == 404:
        return f"{group}/{plural} is not served by this cluster"
    if exc.status == 403:
        scope = "cluster-wide" if namespace is None else f"in namespace {namespace}"
        return (f"cannot list {label}s: HTTP 403 Forbidden (grant list on {group}/{plural} {scope} to the "
                "controller's ServiceAccount)")
    return f"cannot list {label}s: {api_error_text(exc)}"


def _ref(raw: Any, default_kind: str | None = None, default_api: str | None = None) -> TargetRef | None:
    if not isinstance(raw, Mapping):
        return None
    name, kind = raw.get("name"), raw.get("kind") or default_kind
    api = raw.get("apiVersion") or default_api
    if not (isinstance(name, str) and isinstance(kind, str) and isinstance(api, str)):
        return None
    return TargetRef(api, kind, name)


def _hpa_targets(item: Mapping[str, Any]) -> Iterable[TargetRef]:
    ref = _ref((item.get("spec") or {}).get("scaleTargetRef"))
    return [ref] if ref is not None else []


def _scaled_object_targets(item: Mapping[str, Any]) -> Iterable[TargetRef]:
    """KEDA defaults: ``kind: Deployment``, ``apiVersion: apps/v1`` (``ScaledObject.spec.scaleTargetRef``)."""
    ref = _ref((item.get("spec") or {}).get("scaleTargetRef"), "Deployment", "apps/v1")
    return [ref] if ref is not None else []

"""The workload controllers of one machine: Deployment -> ReplicaSet -> Pods, and StatefulSet -> Pods.

What ``kube-controller-manager`` does for these kinds, reduced to what a scaling controller observes:

* Deployment: one ReplicaSet per pod template (name ``<deployment>-<template hash>``, label
  ``pod-template-hash``), scaled to ``spec.replicas``; ReplicaSets of older templates are scaled to 0 (the
  ``Recreate`` strategy: no surge, no rolling update). Status as the Deployment controller writes it
  (``replicas``, ``updatedReplicas``, ``readyReplicas``, ``availableReplicas``, ``unavailableReplicas``,
  ``observedGeneration``, the ``Available`` condition), plus ``ScalingReplicaSet`` events.
* ReplicaSet: creates pods from its template (``generateName``, owner reference, labels) until the active pods
  (not terminating) number ``spec.replicas``; on scale-down deletes the surplus in the ReplicaSet controller's
  order (``workers.local.victims``: pod-deletion-cost, not-ready first, newest ...) through the API, which marks
  them terminating; the kubelet does the rest. Terminating pods do not count, so nothing is ordered twice.
  ``SuccessfulCreate`` / ``SuccessfulDelete`` events.
* StatefulSet: pods ``<name>-0`` .. ``<name>-(N-1)``; ``OrderedReady`` (the default) creates the next ordinal
  only when every lower one is Running and Ready and removes the highest ordinal first, one at a time;
  ``Parallel`` creates and removes at once.
* Garbage collection: a ReplicaSet whose Deployment is gone, and a pod whose owner is gone, are deleted.

A template's ``metadata.annotations`` and ``labels`` are copied to its pods, so the pod runner's own settings
(``pdscale.io/startup-delay-seconds``) travel from a Deployment to its pods.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.local.kube_json import KubeApiError, KubeJson
from workers.local.victims import deletion_order, is_ready

log = logging.getLogger("pdscale.podrunner.controllers")

COMPONENT = "pdscale-pod-runner"
TEMPLATE_HASH = "pod-template-hash"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's SafeEncodeString alphabet


@dataclass
class Snapshot:
    """One LIST of each kind the controllers read (dicts as the API returns them)."""

    deployments: list[dict[str, Any]] = field(default_factory=list)
    replicasets: list[dict[str, Any]] = field(default_factory=list)
    statefulsets: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def uid(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid", ""))


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def terminating(pod: Mapping[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def owner_ref(owner: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner.get("apiVersion"), "kind": owner.get("kind"), "name": meta(owner).get("name"),
            "uid": uid(owner), "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def template_hash(template: Mapping[str, Any]) -> str:
    digest = int.from_bytes(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big")
    out = ""
    for _ in range(10):
        digest, rest = divmod(digest, len(_SAFE))
        out += _SAFE[rest]
    return out


def pod_from_template(template: Mapping[str, Any], namespace: str, owner: Mapping[str, Any], *,
                      name: str | None = None, labels: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    tmeta = template.get("metadata") or {}
    metadata: dict[str, Any] = {
        "namespace": namespace,
        "labels": {**(tmeta.get("labels") or {}), **(labels or {})},
        "annotations": dict(tmeta.get("annotations") or {}),
        "ownerReferences": [owner_ref(owner)],
    }
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{meta(owner).get('name')}-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": copy.deepcopy(template.get("spec") or {}), "status": {"phase": "Pending"}}  # fmt: skip


def _available(pod: Mapping[str, Any], min_ready_s: float, now_s: float) -> bool:
    from workers.local.victims import ready_since_s

    if not is_ready(pod):
        return False
    since = ready_since_s(pod)
    return min_ready_s <= 0 or (since is not None and now_s - since >= min_ready_s)


class WorkloadControllers:
    """Reconciles Deployments, ReplicaSets and StatefulSets from one ``Snapshot`` per pass."""

    def __init__(self, api: KubeJson, clock: Any = time.time) -> None:
        self.api = api
        self.clock = clock

    # ---------------------------------------------------------------- helpers
    def _event(self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        try:
            self.api.event(obj, reason, message, component=COMPONENT, type_=type_)
        except KubeApiError as exc:
            log.warning("event %s not recorded: %s", reason, exc)

    def _owned(self, objs: Sequence[dict[str, Any]], owner: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [o for o in objs if controller_uid(o) == uid(owner)]

    def reconcile(self, snap: Snapshot) -> None:
        for deployment in snap.deployments:
            self._deployment(deployment, snap)
        # ReplicaSets reconcile from this pass's snapshot: one the Deployment pass just created or rescaled acts on
        # the next pass (a resync later), never twice, since every pass starts from a fresh LIST.
        for rs in snap.replicasets:
            self._replicaset(rs, snap)
        for sts in snap.statefulsets:
            self._statefulset(sts, snap)
        self._collect_garbage(snap)

    # ---------------------------------------------------------------- Deployment
    def _deployment(self, dep: dict[str, Any], snap: Snapshot) -> None:
        spec = dep.get("spec") or {}
        ns, name = meta(dep).get("namespace"), meta(dep).get("name")
        template = spec.get("template") or {}
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        tmpl_hash = template_hash(template)
        owned = self._owned(snap.replicasets, dep)
        current = next((rs for rs in owned if (meta(rs).get("labels") or {}).get(TEMPLATE_HASH) == tmpl_hash), None)
        if current is None:
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH] = tmpl_hash
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})[TEMPLATE_HASH] = tmpl_hash
            rs_name = f"{name}-{tmpl_hash}"
            body = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": ns,
                                 "labels": {**((template.get("metadata") or {}).get("labels") or {}),
                                            TEMPLATE_HASH: tmpl_hash},
                                 "ownerReferences": [owner_ref(dep)]},
                    "spec": {"replicas": want, "selector": selector, "template": rs_template,
                             "minReadySeconds": spec.get("minReadySeconds", 0)}}  # fmt: skip
            try:
                self.api.create("apps/v1/replicasets", ns, body)
                self._event(dep, "ScalingReplicaSet", f"Scaled up replica set {rs_name} from 0 to {want}")
            except KubeApiError as exc:
                if exc.status != 409:
                    log.warning("creating ReplicaSet %s/%s failed: %s", ns, rs_name, exc)
        else:
            have = int((current.get("spec") or {}).get("replicas") or 0)
            if have != want:
                self.api.patch("apps/v1/replicasets", ns, meta(current)["name"], {"spec": {"replicas": want}})
                verb = "up" if want > have else "down"
                self._event(dep, "ScalingReplicaSet",
                            f"Scaled {verb} replica set {meta(current)['name']} from {have} to {want}")  # fmt: skip
        for old in owned:
            if old is not current and int((old.get("spec") or {}).get("replicas") or 0) != 0:
                self.api.patch("apps/v1/replicasets", ns, meta(old)["name"], {"spec": {"replicas": 0}})
                self._event(dep, "ScalingReplicaSet", f"Scaled down replica set {meta(old)['name']} to 0")
        pods = [p for rs in owned for p in self._owned(snap.pods, rs)]
        self._write_workload_status(dep, "apps/v1/deployments", pods, want, updated=[
            p for p in pods if (meta(p).get("labels") or {}).get(TEMPLATE_HASH) == tmpl_hash])

    def _write_workload_status(self, obj: Mapping[str, Any], resource: str, pods: Sequence[Mapping[str, Any]],
                               want: int, updated: Sequence[Mapping[str, Any]] | None = None) -> None:  # fmt: skip
        now = self.clock()
        min_ready = float((obj.get("spec") or {}).get("minReadySeconds") or 0)
        active = [p for p in pods if not terminating(p)]
        ready = [p for p in active if is_ready(p)]
        available = [p for p in active if _available(p, min_ready, now)]
        status: dict[str, Any] = {
            "observedGeneration": int(meta(obj).get("generation") or 1),
            "replicas": len(active),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
        }
        if resource == "apps/v1/deployments":
            status["updatedReplicas"] = len([p for p in updated or () if not terminating(p)])
            status["unavailableReplicas"] = max(0, want - len(available))
            ok = len(available) >= want
            old_cond: dict[str, Any] = next((c for c in (obj.get("status") or {}).get("conditions") or []
                                             if c.get("type") == "Available"), {})  # fmt: skip
            cond_status = "True" if ok else "False"
            status["conditions"] = [{
                "type": "Available", "status": cond_status,
                "reason": "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability." if ok
                else "Deployment does not have minimum availability.",
                "lastTransitionTime": old_cond.get("lastTransitionTime") if old_cond.get("status") == cond_status
                else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            }]  # fmt: skip
        else:  # ReplicaSet, StatefulSet
            status["fullyLabeledReplicas" if resource == "apps/v1/replicasets" else "currentReplicas"] = len(active)
            if resource == "apps/v1/statefulsets":
                status["updatedReplicas"] = len(active)
        old = obj.get("status") or {}
        if any(old.get(k) != v for k, v in status.items()):
            try:
                self.api.patch(resource, meta(obj).get("namespace"), meta(obj)["name"], {"status": status},
                               sub="status")  # fmt: skip
            except KubeApiError as exc:
                log.warning("status of %s %s not written: %s", resource, meta(obj).get("name"), exc)

    # ---------------------------------------------------------------- ReplicaSet
    def _replicaset(self, rs: dict[str, Any], snap: Snapshot) -> None:
        spec = rs.get("spec") or {}
        ns = str(meta(rs).get("namespace"))
        want = int(spec.get("replicas") or 0)
        pods = self._owned(snap.pods, rs)
        active = [p for p in pods if not terminating(p)]
        if len(active) < want:
            for _ in range(want - len(active)):
                created = self.api.create("v1/pods", ns, pod_from_template(spec.get("template") or {}, ns, rs))
                self._event(rs, "SuccessfulCreate", f"Created pod: {meta(created).get('name')}")
        elif len(active) > want:
            for victim in deletion_order(active, self.clock())[: len(active) - want]:
                self.api.delete("v1/pods", ns, meta(victim)["name"])
                self._event(rs, "SuccessfulDelete", f"Deleted pod: {meta(victim).get('name')}")
        self._write_workload_status(rs, "apps/v1/replicasets", pods, want)

    # ---------------------------------------------------------------- StatefulSet
    def _statefulset(self, sts: dict[str, Any], snap: Snapshot) -> None:
        spec = sts.get("spec") or {}
        ns, name = str(meta(sts).get("namespace")), str(meta(sts).get("name"))
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        parallel = spec.get("podManagementPolicy") == "Parallel"
        pods = {str(meta(p).get("name")): p for p in self._owned(snap.pods, sts)}
        # scale down: highest ordinal first; OrderedReady waits for one to be gone before the next
        surplus = sorted((n for n in pods if _ordinal(name, n) >= want), key=lambda n: -_ordinal(name, n))
        for pod_name in surplus:
            if terminating(pods[pod_name]):
                if not parallel:
                    break
                continue
            self.api.delete("v1/pods", ns, pod_name)
            self._event(sts, "SuccessfulDelete", f"delete Pod {pod_name} in StatefulSet {name} successful")
            if not parallel:
                break
        for i in range(want):
            pod_name = f"{name}-{i}"
            pod = pods.get(pod_name)
            if pod is None:
                labels = {"statefulset.kubernetes.io/pod-name": pod_name, "apps.kubernetes.io/pod-index": str(i)}
                body = pod_from_template(spec.get("template") or {}, ns, sts, name=pod_name, labels=labels)
                try:
                    self.api.create("v1/pods", ns, body)
                    self._event(sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} successful")
                except KubeApiError as exc:
                    if exc.status != 409:  # 409: the old pod of that name is still terminating
                        raise
                if not parallel:
                    break
            elif not parallel and (terminating(pod) or not is_ready(pod)):
                break  # OrderedReady: the next ordinal waits for this one
        self._write_workload_status(sts, "apps/v1/statefulsets", list(pods.values()), want)

    # ---------------------------------------------------------------- garbage collection
    def _collect_garbage(self, snap: Snapshot) -> None:
        owners = {uid(o) for o in (*snap.deployments, *snap.replicasets, *snap.statefulsets)}
        for rs in snap.replicasets:
            ref = controller_uid(rs)
            if ref is not None and ref not in {uid(d) for d in snap.deployments}:
                self.api.delete("apps/v1/replicasets", meta(rs).get("namespace"), meta(rs)["name"])
        for pod in snap.pods:
            ref = controller_uid(pod)
            if ref is not None and ref not in owners and not terminating(pod):
                self.api.delete("v1/pods", meta(pod).get("namespace"), meta(pod)["name"])


def _ordinal(sts_name: str, pod_name: str) -> int:
    suffix = pod_name[len(sts_name) + 1:] if pod_name.startswith(f"{sts_name}-") else ""
    return int(suffix) if suffix.isdigit() else -1

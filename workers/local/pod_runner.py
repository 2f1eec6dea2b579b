"""The pod runner: Deployments and StatefulSets in the Kubernetes emulator become real processes on this machine.

One loop, every ``resync_s``: LIST Deployments, ReplicaSets, StatefulSets and Pods (of one namespace, or all),
let the workload controllers act on them (``workers.local.controllers``: ReplicaSets and pods ordered and
removed the way kube-controller-manager does it), let the kubelet run the pods (``workers.local.kubelet``:
processes, readiness probes, restarts, preStop + SIGTERM + grace period + SIGKILL), then publish the pods that
serve to Prometheus through a ``file_sd`` file.

Endpoints, one source of truth for both readers: the Pod objects themselves. The P/D proxy watches them
(``pdscale proxy --k8s-kind pods``: a pod takes requests while it is Running, Ready and not terminating);
Prometheus reads the ``file_sd`` file the runner writes from the same pods, with the labels Kubernetes service
discovery would give a pod (``__meta_kubernetes_namespace``, ``__meta_kubernetes_pod_name``,
``__meta_kubernetes_pod_label_<label>``, ...), so the scrape job relabels them exactly as the monitoring
manifests' PodMonitor does (``workers.local.monitoring``). A pod is published from the moment its container
finished loading until the pod is deleted, draining included (a terminating pod is still scraped, as Kubernetes
service discovery keeps it until it is gone).

``pool_state()`` and ``history`` tell the bench, the live demo and the tests what the cluster did.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.local.controllers import Snapshot, WorkloadControllers, meta, terminating
from workers.local.kube_json import KubeApiError, KubeJson
from workers.local.kubelet import ROLE_LABEL, HistoryEvent, Kubelet, KubeletOptions
from workers.local.victims import is_ready

log = logging.getLogger("pdscale.podrunner")


@dataclass(frozen=True)
class PodRunnerOptions:
    api_url: str
    kubelet: KubeletOptions
    namespace: str | None = None  # None: every namespace
    resync_s: float = 0.25
    file_sd_path: Path | None = None


@dataclass(frozen=True)
class PoolState:
    desired: int = 0  # spec.replicas of the workloads whose pods carry this role
    ready: int = 0
    starting: int = 0  # not terminating, not ready (created, loading, crashed and restarting)
    draining: int = 0  # terminating, not yet gone


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def file_sd_groups(pods: Sequence[Mapping[str, Any]], ports: Mapping[str, int]) -> list[dict[str, Any]]:
    """``file_sd`` target groups of ``pods`` (those whose uid is in ``ports``), labelled as Kubernetes pod
    discovery labels a pod (``__meta_kubernetes_*``), for the PodMonitor's relabelling."""
    groups = []
    for pod in pods:
        m = meta(pod)
        port = ports.get(str(m.get("uid")))
        if port is None:
            continue
        container = (((pod.get("spec") or {}).get("containers")) or [{}])[0]
        labels = {
            "__meta_kubernetes_namespace": str(m.get("namespace", "")),
            "__meta_kubernetes_pod_name": str(m.get("name", "")),
            "__meta_kubernetes_pod_uid": str(m.get("uid", "")),
            "__meta_kubernetes_pod_node_name": "local",
            "__meta_kubernetes_pod_ip": "127.0.0.1",
            "__meta_kubernetes_pod_ready": "true" if is_ready(pod) else "false",
            "__meta_kubernetes_pod_phase": str((pod.get("status") or {}).get("phase", "Pending")),
            "__meta_kubernetes_pod_container_name": str(container.get("name", "")),
            "__meta_kubernetes_pod_container_port_name": "http",
            "__meta_kubernetes_pod_container_port_number": str(port),
        }
        for key, value in (m.get("labels") or {}).items():
            labels[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = str(value)
            labels[f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}"] = "true"
        for key, value in (m.get("annotations") or {}).items():
            labels[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = str(value)
        groups.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
    return groups


class PodRunner:
    """Controllers + kubelet + file_sd in one thread. ``start()``, ``stop()``; or ``run_pass()`` by hand."""

    def __init__(self, options: PodRunnerOptions) -> None:
        self.options = options
        self.api = KubeJson(options.api_url)
        self.controllers = WorkloadControllers(self.api)
        self.kubelet = Kubelet(self.api, options.kubelet)
        self.snapshot = Snapshot()
        self.passes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_sd: str | None = None

    # ---------------------------------------------------------------- one pass
    def _list(self) -> Snapshot:
        ns = self.options.namespace
        return Snapshot(
            deployments=self.api.list("apps/v1/deployments", ns),
            replicasets=self.api.list("apps/v1/replicasets", ns),
            statefulsets=self.api.list("apps/v1/statefulsets", ns),
            pods=self.api.list("v1/pods", ns),
        )

    def run_pass(self) -> None:
        snap = self._list()
        self.controllers.reconcile(snap)
        self.kubelet.sync(snap.pods)
        with self._lock:
            self.snapshot = snap
        self._write_file_sd(snap)
        self.passes += 1

    def _write_file_sd(self, snap: Snapshot) -> None:
        path = self.options.file_sd_path
        if path is None:
            return
        ports = {str(t["uid"]): port for t, port in self.kubelet.serving_targets()}
        text = json.dumps(file_sd_groups(snap.pods, ports), sort_keys=True)
        if text == self._last_sd:
            return
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # Prometheus never reads a half-written file
        self._last_sd = text

    # ---------------------------------------------------------------- the loop
    def start(self) -> PodRunner:
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_pass()
            except (KubeApiError, OSError) as exc:  # the API server restarting, a timeout: the next pass retries
                self.errors += 1
                log.warning("pod runner pass failed: %s", exc)
            except Exception:
                self.errors += 1
                log.exception("pod runner pass failed")
            self._stop.wait(max(0.0, self.options.resync_s - (time.monotonic() - started)))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop, then every pod process (SIGTERM, SIGKILL after ``timeout_s``); the API is left as is."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 4 * self.options.resync_s))
        self.kubelet.stop_all(timeout_s)

    # ---------------------------------------------------------------- what happened
    @property
    def history(self) -> list[HistoryEvent]:
        return self.kubelet.snapshot_history()

    def pool_state(self, namespace: str) -> dict[str, PoolState]:
        """Per ``pdscale.io/role``: desired replicas and pods by state, from the last pass."""
        with self._lock:
            snap = self.snapshot
        out: dict[str, dict[str, int]] = {}
        for workload in (*snap.deployments, *snap.statefulsets):
            if meta(workload).get("namespace") != namespace:
                continue
            spec = workload.get("spec") or {}
            role = (((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL)
            if role:
                out.setdefault(role, {"desired": 0, "ready": 0, "starting": 0, "draining": 0})
                out[role]["desired"] += int(spec.get("replicas") or 0)
        for pod in snap.pods:
            role = (meta(pod).get("labels") or {}).get(ROLE_LABEL)
            if meta(pod).get("namespace") != namespace or not role:
                continue
            counts = out.setdefault(role, {"desired": 0, "ready": 0, "starting": 0, "draining": 0})
            if terminating(pod):
                counts["draining"] += 1
            elif is_ready(pod):
                counts["ready"] += 1
            else:
                counts["starting"] += 1
        return {role: PoolState(**counts) for role, counts in out.items()}

"""Proxy endpoints from Kubernetes: pods or EndpointSlices selected by label, kept current with a watch.

One LIST then one WATCH per role (the official ``kubernetes`` client, sync, in a thread each); the watch resumes
from the last resourceVersion and re-LISTs after ``410 Gone`` or an error. Every change hands a full
``{role: {url: ready}}`` snapshot to the proxy's event loop.

* ``pods``: a pod is an endpoint at ``http://<status.podIP>:<port>``; ready when Running, its ``Ready`` condition
  is True and it has no ``deletionTimestamp`` (a terminating pod takes nothing new while its requests finish).
  The port is ``--k8s-port``, else the container port named ``--k8s-port-name`` (default ``http``), else the
  first container port.
* ``endpointslices`` (``discovery.k8s.io/v1``; select e.g. ``kubernetes.io/service-name=vllm-decode``): every
  address of every endpoint, at the slice's port named ``--k8s-port-name`` (else its only/first port, or
  ``--k8s-port``); ready per ``conditions.ready`` (unset counts as ready, as the API documents) and not
  ``terminating``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.endpoints import DECODE, PREFILL, Snapshot

log = logging.getLogger("pdscale.proxy.kube")

KINDS = ("pods", "endpointslices")


def _get(obj: Any, *path: str) -> Any:
    """Walk a kubernetes-client model or a plain dict by snake_case attribute / camelCase key."""
    for name in path:
        if obj is None:
            return None
        if isinstance(obj, Mapping):
            camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
            obj = obj.get(camel, obj.get(name))
        else:
            obj = getattr(obj, name, None)
    return obj


def pod_endpoint(pod: Any, port: int | None, port_name: str) -> tuple[str, bool] | None:
    """``(url, ready)`` of a pod, or None while it has no IP or no port."""
    ip = _get(pod, "status", "pod_ip")
    if not ip:
        return None
    if port is None:
        ports = [p for c in _get(pod, "spec", "containers") or [] for p in (_get(c, "ports") or [])]
        named = [p for p in ports if _get(p, "name") == port_name]
        chosen = (named or ports or [None])[0]
        port = _get(chosen, "container_port") if chosen is not None else None
        if port is None:
            return None
    conditions = _get(pod, "status", "conditions") or []
    ready = (
        _get(pod, "metadata", "deletion_timestamp") is None
        and _get(pod, "status", "phase") == "Running"
        and any(_get(c, "type") == "Ready" and _get(c, "status") == "True" for c in conditions)
    )
    return f"http://{ip}:{int(port)}", ready


def slice_endpoints(eps: Any, port: int | None, port_name: str) -> dict[str, bool]:
    """``{url: ready}`` of one EndpointSlice."""
    if port is None:
        ports = _get(eps, "ports") or []
        named = [p for p in ports if _get(p, "name") == port_name]
        chosen = (named or ports or [None])[0]
        port = _get(chosen, "port") if chosen is not None else None
        if port is None:
            return {}
    out: dict[str, bool] = {}
    for ep in _get(eps, "endpoints") or []:
        ready_flag = _get(ep, "conditions", "ready")
        terminating = bool(_get(ep, "conditions", "terminating"))
        ready = (ready_flag is None or bool(ready_flag)) and not terminating
        for address in _get(ep, "addresses") or []:
            host = f"[{address}]" if ":" in address else address
            out[f"http://{host}:{int(port)}"] = ready
    return out


@dataclass
class KubeEndpointSource:
    """Watches one label selector per role in one namespace."""

    namespace: str
    selectors: dict[str, str]  # role -> label selector
    kind: str = "pods"
    port: int | None = None
    port_name: str = "http"
    kubeconfig: str | None = None
    watch_timeout_s: int = 60
    _objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> object name -> object
    _stop: threading.Event = field(default_factory=threading.Event)
    _watches: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--k8s-kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"--k8s-port must be a TCP port, got {self.port}")
        for role, sel in self.selectors.items():
            if not sel.strip():
                raise ValueError(f"--k8s-{role}-selector must not be empty")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> KubeEndpointSource:
        selectors = {}
        if args.k8s_prefill_selector:
            selectors[PREFILL] = args.k8s_prefill_selector
        if args.k8s_decode_selector:
            selectors[DECODE] = args.k8s_decode_selector
        return cls(
            namespace=args.k8s_namespace,
            selectors=selectors,
            kind=args.k8s_kind,
            port=args.k8s_port,
            port_name=args.k8s_port_name,
            kubeconfig=args.kubeconfig,
        )

    def _api(self) -> tuple[Callable[..., Any], Any]:
        from kubernetes import client, config

        configuration = client.Configuration()
        if self.kubeconfig:
            config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        api_client = client.ApiClient(configuration)
        if self.kind == "pods":
            return client.CoreV1Api(api_client).list_namespaced_pod, api_client
        return client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice, api_client

    def snapshot(self) -> Snapshot:
        snap: Snapshot = {PREFILL: {}, DECODE: {}}
        with self._lock:
            for role, objs in self._objects.items():
                for obj in objs.values():
                    if self.kind == "pods":
                        ep = pod_endpoint(obj, self.port, self.port_name)
                        if ep is not None:
                            snap[role][ep[0]] = ep[1]
                    else:
                        snap[role].update(slice_endpoints(obj, self.port, self.port_name))
        return snap

    def _watch_role(self, role: str, selector: str, publish: Callable[[], None]) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        list_fn, api_client = self._api()
        while not self._stop.is_set():
            try:
                listed = list_fn(self.namespace, label_selector=selector)
                with self._lock:
                    self._objects[role] = {o.metadata.name: o for o in listed.items}
                publish()
                rv = listed.metadata.resource_version
                w = watch.Watch()  # type: ignore[no-untyped-call]
                self._watches.append(w)
                while not self._stop.is_set():
                    events = w.stream(  # type: ignore[no-untyped-call]
                        list_fn,
                        self.namespace,
                        label_selector=selector,
                        resource_version=rv,
                        timeout_seconds=self.watch_timeout_s,
                    )
                    for event in events:
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise ApiException(status=getattr(obj, "code", 500) or 500)
                        rv = obj.metadata.resource_version or rv
                        with self._lock:
                            if event["type"] == "DELETED":
                                self._objects.setdefault(role, {}).pop(obj.metadata.name, None)
                            else:
                                self._objects.setdefault(role, {})[obj.metadata.name] = obj
                        publish()
                        if self._stop.is_set():
                            break
            except ApiException as exc:
                if self._stop.is_set():
                    break
                log.info("%s watch (%s): %s; re-listing", role, selector, exc.status)
                self._stop.wait(0.5)
            except Exception as exc:  # network errors of any kind: keep the last endpoints, retry
                if self._stop.is_set():
                    break
                log.warning("%s watch (%s) failed: %s; retrying in 1 s", role, selector, exc)
                self._stop.wait(1.0)
        api_client.close()

    async def run(self, apply: Callable[[Snapshot], None]) -> None:
        """Watch until cancelled; ``apply`` runs on this event loop with every new snapshot."""
        loop = asyncio.get_running_loop()

        def publish() -> None:
            snap = self.snapshot()
            loop.call_soon_threadsafe(apply, snap)

        threads = [
            threading.Thread(
                target=self._watch_role, args=(role, sel, publish), name=f"kube-{role}", daemon=True
            )
            for role, sel in self.selectors.items()
        ]
        for t in threads:
            t.start()
        try:
            await asyncio.Event().wait()
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()

"""The Kubernetes emulator with what endpoint discovery needs on top: EndpointSlices (``discovery.k8s.io/v1``)
and WATCH streams filtered by ``labelSelector`` as the real API server filters them (kmock 0.8 streams every
object of the resource whatever the selector)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import kmock
from kmock._internal import rendering

from workers.local.kube_emulator import KubeEmulator, PdscaleKubeEmulator, selector_matches

ENDPOINTSLICES = "discovery.k8s.io/v1/endpointslices"


@attrs.define(kw_only=True)
class DiscoveryKubeEmulator(PdscaleKubeEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources[ENDPOINTSLICES] = kmock.ResourceInfo(
            kind="EndpointSlice",
            namespaced=True,
            singular="endpointslice",
            subresources=set(),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector", "")
        async for event in super()._serve_watch(request):
            if selector and isinstance(event, dict):
                labels = ((event.get("object") or {}).get("metadata") or {}).get("labels") or {}
                if not selector_matches(selector, labels):
                    continue
            yield event


def discovery_emulator() -> KubeEmulator:
    """A ``KubeEmulator`` (context manager) serving the discovery-capable handler."""
    emu = KubeEmulator()
    emu.handler = DiscoveryKubeEmulator(auto_ready=True)
    return emu


def emulated_pod(namespace: str, name: str, labels: dict[str, str], port: int, *, ready: bool = True,
                 ip: str = "127.0.0.1") -> dict[str, Any]:  # fmt: skip
    """A Running pod serving on ``ip:port`` (container port named ``http``), Ready or not."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai",
                    "ports": [{"name": "http", "containerPort": port}],
                }
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def emulated_slice(namespace: str, name: str, service: str, port: int,
                   endpoints: list[tuple[str, bool, bool]]) -> dict[str, Any]:  # fmt: skip
    """An EndpointSlice of ``service`` at ``port`` with ``(address, ready, terminating)`` endpoints."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [addr],
                "conditions": {"ready": ready, "serving": ready or term, "terminating": term},
            }
            for addr, ready, term in endpoints
        ],
    }

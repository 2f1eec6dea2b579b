"""Pods and EndpointSlices as the proxy's endpoint discovery sees them, for seeding the Kubernetes emulator
(``workers.local.kube_emulator``, which serves EndpointSlices and filters WATCH streams by ``labelSelector``)."""

from __future__ import annotations

from typing import Any


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

"""Seeding a live world (the Kubernetes emulator, vLLM-format series) with model deployments and their
DisaggregatedAutoscalers, for the contract tests that run ``pdscale run`` as deployed (RBAC, monitoring)."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import WINDOW_S, loads
from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, Load, VllmExporter
from workers.local.kube_emulator import CR, KubeEmulator

Ref = tuple[str, str, str]  # (apiVersion, kind, name)
DEPLOYMENT = ("apps/v1", "Deployment")


def export_model(exporter: VllmExporter, ns: str, model: str, *, ttft_s: float, itl_s: float, pods: int = 2,
                 decode_running: float = 30.0) -> None:
    """``pods`` prefill and decode pods (named ``{model}-p{i}``, ``{model}-d{i}``) and a proxy with user TTFT
    ``ttft_s`` and ITL ``itl_s``; decode pod i runs ``decode_running + i`` requests."""
    p, d, fe = loads(ttft_s, itl_s)
    for i in range(pods):
        exporter.add_pod(ExportedPod(name=f"{model}-p{i}", role="prefill", model_name=model, namespace=ns, load=p))
        exporter.add_pod(ExportedPod(name=f"{model}-d{i}", role="decode", model_name=model, namespace=ns,
                                     load=Load(**{**d.__dict__, "running": decode_running + i})))
    exporter.add_frontend(ExportedFrontend(name=f"{model}-proxy", model_name=model, namespace=ns, load=fe,
                                           requests_metric="pdscale_proxy_requests"))


def put_autoscaler(kube: KubeEmulator, ns: str, name: str, prefill: Ref, decode: Ref, model: str,
                   **spec: Any) -> None:
    """A DisaggregatedAutoscaler for ``model`` (selector model_name + namespace), pools 1..8, TTFT p99 1 s,
    ITL p99 50 ms, 5 s pod start-up; ``spec`` adds or replaces top-level fields."""

    def pool(ref: Ref) -> dict[str, Any]:
        return {"scaleTargetRef": dict(zip(("apiVersion", "kind", "name"), ref, strict=True)),
                "minReplicas": 1, "maxReplicas": 8}

    body = {"prefill": pool(prefill), "decode": pool(decode), "podStartupSeconds": 5,
            "slo": {"ttft": {"percentile": 0.99, "targetSeconds": 1.0},
                    "itl": {"percentile": 0.99, "targetSeconds": 0.05}},
            "metrics": {"selector": {"matchLabels": {"model_name": model, "namespace": ns}},
                        "windowSeconds": WINDOW_S}, **spec}
    kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                  "metadata": {"name": name, "namespace": ns}, "spec": body})


def bare_autoscaler(kube: KubeEmulator, ns: str, name: str = "m", *, prefill: str = "p", decode: str = "d",
                    replicas: int = 2) -> None:
    """Two Deployments and an autoscaler with nothing but its targets (every other field defaulted)."""
    kube.add_deployment(ns, prefill, replicas)
    kube.add_deployment(ns, decode, replicas)
    ref = {"apiVersion": "apps/v1", "kind": "Deployment"}
    kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                  "metadata": {"name": name, "namespace": ns},
                  "spec": {"prefill": {"scaleTargetRef": {**ref, "name": prefill}},
                           "decode": {"scaleTargetRef": {**ref, "name": decode}}}})

"""Kubernetes objects for ``manifests/examples/emulated``: the vllm-pd example's P/D pattern served by pdscale's
emulated vLLM workers, so that any cluster (kind, minikube, a CPU node pool) can run the whole loop without GPUs.

What it holds, and why each piece is there:

* a prefill and a decode Deployment running ``pdscale worker`` (vLLM's HTTP and ``/metrics`` surface, timing from
  the latency profile the autoscaler also uses), labelled ``pdscale.io/role`` like the vLLM pods, with the same
  drain-safe scale-down as ``workers.vllm_manifests`` (preStop sleep, then ``--drain-timeout-s`` inside the grace
  period) and the controller's hardening (non-root, read-only root filesystem);
* ``pdscale proxy`` in front of them, discovering the worker pods through the API (a Role with ``list``/``watch``
  on pods, nothing else) and labelled ``pdscale.io/role: proxy`` so the monitoring overlay's PodMonitor scrapes
  its ``pdscale_proxy_*`` series, the TTFT/ITL users see;
* its ``DisaggregatedAutoscaler``: the same model name, profile and namespace as the workers.

The workers need numpy, which the controller image leaves out: the image is built with the ``worker`` extra
(``make image-worker``). ``render_example()`` writes the folder's YAML; a test checks the file is current.
"""

from __future__ import annotations

import json
from typing import Any

from workers.vllm import KV_ROLES
from workers.vllm_manifests import ROLE_LABEL, grace_period_s, pod_deployment

NAMESPACE = "llm-emulated"
APP = "emulated-llama"
MODEL = "llama-3.1-8b-instruct"
PROFILE = "llama-3.1-8b-h100-tp1"
IMAGE = "ghcr.io/pdscale/pdscale-worker:0.1.0"
PORT = 8000
PRE_STOP_S = 5
DRAIN_S = 30
PROXY_NAME = f"{APP}-proxy"

_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}  # fmt: skip
_TMP = {"volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]}


def _container(name: str, args: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["pdscale"],
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip


def pool_selector(role: str) -> str:
    """The label selector of one pool's pods (the proxy's discovery and the Deployment's own selector)."""
    return f"app.kubernetes.io/name={APP},{ROLE_LABEL}={role}"


def worker_deployment(role: str) -> dict[str, Any]:
    kv_role = KV_ROLES[role]  # type: ignore[index]
    args = ["worker", "--host", "0.0.0.0", "--port", str(PORT), "--served-model-name", MODEL, "--role", role,
            "--profile", PROFILE, "--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector",
                                                                      "kv_role": kv_role}, separators=(",", ":")),
            "--drain-timeout-s", str(DRAIN_S)]  # fmt: skip
    return pod_deployment(_container("worker", args), name=f"{APP}-{role}", namespace=NAMESPACE,
                          labels={"app.kubernetes.io/name": APP, ROLE_LABEL: role}, replicas=1,
                          grace_s=grace_period_s(PRE_STOP_S, DRAIN_S),
                          pod_spec={"securityContext": dict(_POD_SECURITY), **_TMP})  # fmt: skip


def proxy_objects() -> list[dict[str, Any]]:
    """ServiceAccount, Role (list/watch pods: the proxy's one LIST and WATCH per pool), RoleBinding, Deployment,
    Service."""
    meta = {"name": PROXY_NAME, "namespace": NAMESPACE}
    labels = {"app.kubernetes.io/name": APP, ROLE_LABEL: "proxy"}
    args = ["proxy", "--host", "0.0.0.0", "--port", str(PORT), "--k8s-namespace", NAMESPACE, "--k8s-kind", "pods",
            "--k8s-prefill-selector", pool_selector("prefill"), "--k8s-decode-selector", pool_selector("decode"),
            "--model-name", MODEL, "--drain-timeout-s", str(DRAIN_S)]  # fmt: skip
    deployment = pod_deployment(_container("proxy", args), name=PROXY_NAME, namespace=NAMESPACE, labels=labels,
                                replicas=1, grace_s=grace_period_s(PRE_STOP_S, DRAIN_S),
                                pod_spec={"serviceAccountName": PROXY_NAME, "securityContext": dict(_POD_SECURITY),
                                          **_TMP})  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROXY_NAME},
         "subjects": [{"kind": "ServiceAccount", "name": PROXY_NAME, "namespace": NAMESPACE}]},
        deployment,
        {"apiVersion": "v1", "kind": "Service", "metadata": dict(meta),
         "spec": {"selector": dict(labels), "ports": [{"name": "http", "port": PORT, "targetPort": "http",
                                                       "protocol": "TCP"}]}},
    ]  # fmt: skip


def autoscaler() -> dict[str, Any]:
    """The pair's DisaggregatedAutoscaler. Emulated pods need no GPU; ``gpusPerReplica``/``gpuBudget`` still cap
    how many pods it may run (the budget counts what the pods stand for)."""

    def pool(role: str) -> dict[str, Any]:
        return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{APP}-{role}"},
                "minReplicas": 1, "maxReplicas": 8, "gpusPerReplica": 1}  # fmt: skip

    return {
        "apiVersion": "pdscale.io/v1alpha1",
        "kind": "DisaggregatedAutoscaler",
        "metadata": {"name": APP, "namespace": NAMESPACE},
        "spec": {
            "prefill": pool("prefill"),
            "decode": pool("decode"),
            "slo": {"ttft": {"percentile": 0.99, "targetSeconds": 1.0},
                    "itl": {"percentile": 0.99, "targetSeconds": 0.05}},
            "gpuBudget": 16,
            "podStartupSeconds": 20,
            "mode": "active",
            "profile": PROFILE,
            "metrics": {"source": "vllm", "proxy": True, "windowSeconds": 60,
                        "selector": {"matchLabels": {"model_name": MODEL, "namespace": NAMESPACE}}},
        },
    }  # fmt: skip


def render_example() -> str:
    """The YAML of ``manifests/examples/emulated/emulated.yaml``."""
    import yaml

    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            worker_deployment("prefill"), worker_deployment("decode"), *proxy_objects(), autoscaler()]  # fmt: skip
    header = ("# Generated by workers/emulated_manifests.py (render_example); tests/contract/test_emulated_manifests.py\n"
              "# checks it is current. pdscale's emulated vLLM workers as a prefill/decode pair behind pdscale proxy,\n"
              "# and their DisaggregatedAutoscaler: the whole loop on any cluster, no GPU. Image: make image-worker.\n"
              "# kubectl apply -k manifests/base && kubectl apply -k manifests/examples/emulated\n")  # fmt: skip
    return header + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)

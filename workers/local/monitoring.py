"""Prometheus scrape jobs for one machine: the pods through the pod runner's ``file_sd`` file, relabelled as the
Prometheus Operator relabels a PodMonitor, and fixed targets (the proxy, the controllers).

Debian's Prometheus is built without Kubernetes service discovery, so the pod runner writes the pods it runs to
a ``file_sd`` file with the labels Kubernetes pod discovery would attach (``__meta_kubernetes_*``,
``workers.local.pod_runner.file_sd_groups``). The job below then applies what the Operator generates for the
monitoring manifests' PodMonitor ``pdscale-vllm`` (``manifests/overlays/monitoring/podmonitor.yaml``): keep pods
whose ``pdscale.io/role`` is prefill, decode or proxy and their container port named ``http``, drop finished
pods, set ``namespace``, ``pod``, ``container``, ``endpoint`` and ``job``, then the PodMonitor's own
relabelling, which puts the pool on the series as ``role`` (``autoscaler.prometheus.MetricProfile.pool_label``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROLE_SOURCE = "__meta_kubernetes_pod_label_pdscale_io_role"
# the PodMonitor's spec.podMetricsEndpoints[0].relabelings, in Prometheus' own spelling
PODMONITOR_RELABELINGS: tuple[dict[str, Any], ...] = (
    {"source_labels": [ROLE_SOURCE], "target_label": "role", "action": "replace"},
)


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def pod_scrape_config(file_sd_path: Path, interval_s: float, *, job: str = "pdscale-system/pdscale-vllm",
                      refresh_s: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """The scrape job of the PodMonitor over the pod runner's ``file_sd`` file."""
    return {
        "job_name": f"podMonitor/{job}/0",
        "scrape_interval": _duration(interval_s),
        "scrape_timeout": _duration(min(interval_s, 10.0)),
        "metrics_path": "/metrics",
        "file_sd_configs": [{"files": [str(file_sd_path)], "refresh_interval": _duration(refresh_s)}],
        "relabel_configs": [
            {"source_labels": [ROLE_SOURCE, ROLE_SOURCE.replace("_label_", "_labelpresent_")],
             "regex": "(prefill|decode|proxy);true", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)", "action": "drop"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": job},
            {"target_label": "endpoint", "replacement": "http"},
            *(dict(r) for r in PODMONITOR_RELABELINGS),
        ],
    }  # fmt: skip


def static_scrape_config(job: str, targets: Sequence[str], labels: Mapping[str, str],
                         interval_s: float) -> dict[str, Any]:  # fmt: skip
    """A job of fixed targets with fixed labels (what a Service or PodMonitor would have attached)."""
    return {
        "job_name": job,
        "scrape_interval": _duration(interval_s),
        "scrape_timeout": _duration(min(interval_s, 10.0)),
        "static_configs": [{"targets": list(targets), "labels": dict(labels)}],
    }

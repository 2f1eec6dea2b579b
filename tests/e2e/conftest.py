"""The live controller's world for e2e tests: the Kubernetes emulator (kmock, over HTTP), vLLM-format series from
the known-distribution exporter, and the real Prometheus scraping them. ``pdscale run`` runs as a subprocess."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, LatencyMix, Load, VllmExporter
from workers.local.kube_emulator import CR, KubeEmulator
from workers.local.processes import ManagedProcess, ProcessRunner
from workers.local.prometheus import PrometheusServer

SCRAPE_S = 0.5
WINDOW_S = 5  # rate() window in the CRs: ten scrapes


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy; return it, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def loads(ttft_s: float, itl_s: float, rate_per_s: float = 4.0) -> tuple[Load, Load, Load]:
    """(prefill pod, decode pod, proxy) loads for two pods per pool with user TTFT ``ttft_s`` and ITL ``itl_s``."""
    prefill = Load(requests_per_s=rate_per_s / 2, ttft=LatencyMix.fixed(ttft_s / 2), prompt_tokens_per_request=1000,
                   output_tokens_per_request=1, waiting=1, running=2, kv_usage=0.2)
    decode = Load(requests_per_s=rate_per_s / 2, ttft=LatencyMix.fixed(ttft_s / 2), itl=LatencyMix.fixed(itl_s),
                  itl_samples_per_request=200, prompt_tokens_per_request=1000, output_tokens_per_request=200,
                  running=30, kv_usage=0.5)
    proxy = Load(requests_per_s=rate_per_s, ttft=LatencyMix.fixed(ttft_s), itl=LatencyMix.fixed(itl_s),
                 itl_samples_per_request=200)
    return prefill, decode, proxy


@dataclass
class Model:
    """One model deployment: its namespace, exported series and Deployments."""

    stack: Stack
    namespace: str

    @property
    def model(self) -> str:
        return f"m-{self.namespace}"

    def set_latency(self, ttft_s: float, itl_s: float) -> None:
        p, d, fe = loads(ttft_s, itl_s)
        for i in range(2):
            self.stack.exporter.set_load(f"{self.namespace}-p{i}", p)
            self.stack.exporter.set_load(f"{self.namespace}-d{i}", d)
        self.stack.exporter.set_load(f"{self.namespace}-proxy", fe)

    def replicas(self, name: str) -> int:
        obj = self.stack.kube.get("apps/v1/deployments", self.namespace, name)
        assert obj is not None
        return int(obj["spec"]["replicas"])

    def autoscaler(self, name: str) -> dict[str, Any]:
        obj = self.stack.kube.get(CR, self.namespace, name)
        assert obj is not None
        return obj

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for cond in self.autoscaler(name).get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return None

    def events(self) -> list[dict[str, Any]]:
        return self.stack.kube.list("v1/events", self.namespace)

    def lease(self) -> dict[str, Any] | None:
        obj = self.stack.kube.get("coordination.k8s.io/v1/leases", self.namespace, "pdscale-controller")
        return None if obj is None else dict(obj["spec"])

    def add_autoscaler(self, name: str, *, prefill: str = "prefill", decode: str = "decode",
                       **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": prefill},
                        "minReplicas": 2, "maxReplicas": 6},
            "decode": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": decode},
                       "minReplicas": 2, "maxReplicas": 6},
            "slo": {"ttft": {"percentile": 0.99, "targetSeconds": 1.0},
                    "itl": {"percentile": 0.99, "targetSeconds": 0.05}},
            "podStartupSeconds": 5,
            "metrics": {"selector": {"matchLabels": {"model_name": self.model, "namespace": self.namespace}},
                        "windowSeconds": WINDOW_S},
        }
        _deep_update(body, spec)
        return self.stack.kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                                        "metadata": {"name": name, "namespace": self.namespace}, "spec": body})

    def run(self, *args: str, name: str = "pdscale", identity: str = "pdscale-test") -> ManagedProcess:
        """Start ``pdscale run`` against this namespace (Lease in the same namespace)."""
        return self.stack.runner.start(
            self.stack.argv(self.namespace, *args, "--identity", identity), name=name
        )


def _deep_update(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


@dataclass
class Stack:
    kube: KubeEmulator
    exporter: VllmExporter
    prometheus: PrometheusServer
    runner: ProcessRunner
    kubeconfig: Path

    def argv(self, namespace: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "autoscaler.cli", "run", "--kubeconfig", str(self.kubeconfig),
                "--namespace", namespace, "--lease-namespace", namespace, "--prometheus-url", self.prometheus.url,
                "--kube-timeout-s", "1", "--prometheus-timeout-s", "1", *args]

    def model(self, namespace: str, *, ttft_s: float = 0.3, itl_s: float = 0.03, replicas: int = 2) -> Model:
        m = Model(self, namespace)
        p, d, fe = loads(ttft_s, itl_s)
        for i in range(2):
            self.exporter.add_pod(ExportedPod(name=f"{namespace}-p{i}", role="prefill", model_name=m.model,
                                              namespace=namespace, load=p))
            self.exporter.add_pod(ExportedPod(name=f"{namespace}-d{i}", role="decode", model_name=m.model,
                                              namespace=namespace, load=d))
        self.exporter.add_frontend(ExportedFrontend(name=f"{namespace}-proxy", model_name=m.model,
                                                    namespace=namespace, load=fe,
                                                    requests_metric="pdscale_proxy_requests"))
        self.kube.add_deployment(namespace, "prefill", replicas)
        self.kube.add_deployment(namespace, "decode", replicas)
        return m

    def wait_for_data(self) -> None:
        """Enough scrapes that rate() over the CR's window has data."""
        self.prometheus.wait_for_scrapes("vllm", 4, timeout_s=30)


def _stack(runner: ProcessRunner, base: Path) -> Iterator[Stack]:
    with KubeEmulator() as kube, VllmExporter() as exporter:
        prometheus = PrometheusServer(runner, base / "prometheus", static_targets={"vllm": [exporter.target]},
                                      scrape_interval_s=SCRAPE_S).start()
        try:
            yield Stack(kube, exporter, prometheus, runner, kube.kubeconfig(base / "kubeconfig"))
        finally:
            prometheus.stop()


@pytest.fixture
def stack(process_runner: ProcessRunner, tmp_path: Path) -> Iterator[Stack]:
    """A fresh world per test (tests that kill Prometheus or controllers use this one)."""
    yield from _stack(process_runner, tmp_path)

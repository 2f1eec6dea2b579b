"""The standalone adapter's refresh against the Kubernetes emulator: the controller's Lease decides whether the
desired replicas in status are current, a failed LIST keeps the previous snapshot (which then ages into 503), an
unreachable Prometheus makes the signal series unavailable but not the decisions; ``pdscale adapter`` refuses to
start with a clear message when it cannot authenticate requests."""

from __future__ import annotations

import datetime
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.kube import KubeClient
from autoscaler.prometheus import PrometheusMetricsSource
from metrics_adapter.provider import (
    DESIRED_REPLICAS,
    ExternalMetricsCache,
    MetricUnavailableError,
)
from metrics_adapter.refresh import StandaloneRefresher, read_controller_lease
from metrics_adapter.selectors import parse_selector
from workers.local.kube_emulator import CR, KubeEmulator
from workers.local.net import free_port

NS = "llm"
LEASES = "coordination.k8s.io/v1/leases"


def _micro(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def put_lease(kube: KubeEmulator, holder: str, renewed_s: float, duration_s: int = 15) -> None:
    kube.put(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "metadata": {"name": "pdscale-controller", "namespace": NS},
                      "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_s,
                               "renewTime": _micro(renewed_s)}})  # fmt: skip


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[KubeEmulator, KubeClient, Path]]:
    with KubeEmulator() as emu:
        path = emu.kubeconfig(tmp_path / "kubeconfig")
        yield emu, KubeClient.from_config(str(path)), path


def add_autoscaler(kube: KubeEmulator, name: str, desired: tuple[int, int] | None) -> None:
    obj = kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                        "metadata": {"name": name, "namespace": NS},
                        "spec": {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                                "name": "p"}},
                                 "decode": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                               "name": "d"}},
                                 "metrics": {"selector": {"matchLabels": {"model_name": name}}}}})  # fmt: skip
    if desired is not None:
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"],
                         "lastEvaluationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "prefill": {"desiredReplicas": desired[0]}, "decode": {"desiredReplicas": desired[1]}}
        kube.put(CR, obj)


def test_lease_states(kube: tuple[KubeEmulator, KubeClient, Path]) -> None:
    emu, client, _ = kube
    now = time.time()
    state = read_controller_lease(client, NS, "pdscale-controller", now)
    assert not state.alive and "HTTP 404" in state.reason
    put_lease(emu, "", now)
    assert "has no holder" in read_controller_lease(client, NS, "pdscale-controller", now).reason
    put_lease(emu, "ctl-a", now - 5)
    assert read_controller_lease(client, NS, "pdscale-controller", now).alive
    put_lease(emu, "ctl-a", now - 31)
    state = read_controller_lease(client, NS, "pdscale-controller", now)
    assert not state.alive and "not renewed for 31 s" in state.reason


def _closed_port_url() -> str:
    port = free_port()  # nothing listens there: connection refused at once
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    return f"http://127.0.0.1:{port}"


def test_refresh_serves_decisions_without_prometheus_and_keeps_the_last_snapshot_on_list_failure(
    kube: tuple[KubeEmulator, KubeClient, Path],
) -> None:
    emu, client, _ = kube
    add_autoscaler(emu, "llama", (4, 6))
    add_autoscaler(emu, "fresh", None)
    put_lease(emu, "ctl-a", time.time())
    cache = ExternalMetricsCache()
    source = PrometheusMetricsSource(_closed_port_url(), timeout_s=1.0, extra_percentiles=(0.5, 0.9, 0.99))
    refresher = StandaloneRefresher(client, source, cache, namespace=None, lease=(NS, "pdscale-controller"),
                                    stale_after_s=30.0)  # fmt: skip
    report = refresher.refresh_once()
    assert report.error is None and report.autoscalers == 2
    now = time.time()
    found = cache.lookup(NS, DESIRED_REPLICAS, parse_selector("autoscaler=llama"), now)
    assert sorted((s.labels["pool"], s.value) for s in found) == [("decode", 6.0), ("prefill", 4.0)]
    with pytest.raises(MetricUnavailableError, match="connection refused"):
        cache.lookup(NS, "pdscale_ttft_seconds", parse_selector("autoscaler=llama"), now)
    with pytest.raises(MetricUnavailableError, match="no decision in status yet"):
        cache.lookup(NS, DESIRED_REPLICAS, parse_selector("autoscaler=fresh"), now)

    published = cache.snapshot
    emu.add_fault("GET", r"/disaggregatedautoscalers$", status=500, times=1)
    report = refresher.refresh_once()
    assert report.error is not None and "HTTP 500" in report.error
    assert cache.snapshot is published, "a failed LIST publishes nothing: the last snapshot ages instead"
    with pytest.raises(MetricUnavailableError, match="last refreshed"):
        cache.lookup(NS, DESIRED_REPLICAS, parse_selector("autoscaler=llama"), now + 31)

    put_lease(emu, "ctl-a", time.time() - 120)  # the controller is gone: its last decisions are not current
    refresher.refresh_once()
    with pytest.raises(MetricUnavailableError, match="not renewed"):
        cache.lookup(NS, DESIRED_REPLICAS, parse_selector("autoscaler=llama"), time.time())


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``pdscale adapter`` installs its JSON log handler on the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_adapter_refuses_to_start_without_what_it_needs(kube: tuple[KubeEmulator, KubeClient, Path],
                                                        capsys: pytest.CaptureFixture[str], root_logging: None) -> None:
    _, _, kubeconfig = kube
    base = ["adapter", "--kubeconfig", str(kubeconfig), "--prometheus-url", "http://127.0.0.1:9",
            "--secure-port", "0", "--bind-address", "127.0.0.1"]  # fmt: skip
    assert main([*base, "--controller-lease", "no-slash"]) == 2
    assert "expected NAMESPACE/NAME" in capsys.readouterr().err
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "kube-system/extension-apiserver-authentication" in err and "HTTP 404" in err
    assert "extension-apiserver-authentication-reader" in err, "says which RBAC is missing"
    with pytest.raises(SystemExit):
        main([*base, "--refresh-s", "0"])
    assert "must be > 0" in capsys.readouterr().err

"""The External Metrics API end to end: a real Prometheus scrapes vLLM-format series with known latency
distributions, ``pdscale run --serve-external-metrics`` (advisory mode) and a standalone ``pdscale adapter`` serve
them over TLS with delegated authentication, and real consumers read them:

* the HPA's replica arithmetic ported in ``sim/baselines/hpa.py`` (``AverageValue`` target 1 on
  ``pdscale_desired_replicas``), polling with the front proxy's client certificate as the aggregator does and
  writing ``/scale`` in the Kubernetes emulator: the Deployment ends at pdscale's recommendation;
* the official ``kubernetes`` client (``ApiClient`` from a kubeconfig, bearer token checked by TokenReview) and
  ``kubectl get --raw``: discovery and values, equal to the known distributions' bucketed percentiles;
* a Prometheus outage: Prometheus-derived values answer 503 while desired replicas, read from the status the
  controller keeps writing, are still served.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.utils.quantity import parse_quantity

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S
from sim.baselines.hpa import external_average_value_replicas
from tests.e2e.conftest import Stack, _stack, wait_for
from tests.helpers.pki import CA, Issued, extension_auth_configmap
from tests.helpers.vllm_exporter import ExportedPod, LatencyMix, Load
from workers.local.kube_emulator import CR, AccessRule
from workers.local.net import free_port, wait_http_ok
from workers.local.processes import ManagedProcess, ProcessRunner

NS = "ext"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
BASE = "/apis/external.metrics.k8s.io/v1beta1"
PROXY_TTFT = LatencyMix(((0.3, 0.6), (1.2, 0.35), (2.5, 0.05)))  # p99 above the 1 s target: prefill must grow
PROXY_ITL = LatencyMix(((0.01, 0.45), (0.02, 0.5), (0.03, 0.05)))  # well inside 50 ms: decode stays
WORKER_P_TTFT = LatencyMix(((0.1, 0.7), (0.4, 0.3)))
WORKER_D_TTFT = LatencyMix(((0.02, 0.85), (0.08, 0.15)))  # no percentile on a bucket edge
WORKER_ITL = LatencyMix(((0.015, 0.8), (0.035, 0.2)))
QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class World:
    stack: Stack
    base: Path
    serving_ca: CA
    serving: Issued
    proxy: Issued
    controller: ManagedProcess
    controller_url: str
    adapter: ManagedProcess
    adapter_url: str

    def aggregator_get(self, url: str, path: str, selector: str | None = None) -> requests.Response:
        """A request as the aggregator forwards the HPA controller's: front-proxy certificate, user headers."""
        return requests.get(url + path, params={"labelSelector": selector} if selector else None, timeout=10,
                            cert=self.proxy.pair, verify=str(self.serving_ca.path),
                            headers={"X-Remote-User": HPA_USER, "X-Remote-Group": "system:authenticated"})

    def kubeconfig(self, url: str) -> Path:
        """A kubeconfig for the adapter at ``url`` with the dashboard's bearer token."""
        path = self.base / f"adapter-{url.rsplit(':', 1)[1]}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "adapter",
            "clusters": [{"name": "adapter", "cluster": {"server": url,
                                                         "certificate-authority": str(self.serving_ca.path)}}],
            "users": [{"name": "dashboard", "user": {"token": "dashboard-token"}}],
            "contexts": [{"name": "adapter", "context": {"cluster": "adapter", "user": "dashboard"}}],
        }))  # fmt: skip
        return path


def _exported(stack: Stack) -> None:
    """Model ``m-ext`` behind a proxy (autoscaler ``llama``); model ``w-ext`` with workers only (``workers``)."""
    m = stack.model(NS)
    stack.exporter.set_load(f"{NS}-proxy", Load(4.0, ttft=PROXY_TTFT, itl=PROXY_ITL, itl_samples_per_request=200))
    for i in range(2):
        stack.exporter.add_pod(ExportedPod(f"w-p{i}", "prefill", "w-ext", namespace=NS, load=Load(
            1.0, ttft=WORKER_P_TTFT, prompt_tokens_per_request=800, output_tokens_per_request=1, waiting=3,
            running=1, kv_usage=0.1)))  # fmt: skip
        stack.exporter.add_pod(ExportedPod(f"w-d{i}", "decode", "w-ext", namespace=NS, load=Load(
            1.0, ttft=WORKER_D_TTFT, itl=WORKER_ITL, itl_samples_per_request=100, output_tokens_per_request=101,
            running=20, kv_usage=0.6)))  # fmt: skip
    stack.kube.add_deployment(NS, "w-prefill", 2)
    stack.kube.add_deployment(NS, "w-decode", 2)
    m.add_autoscaler("llama", mode="advisory")
    m.add_autoscaler("workers", mode="advisory", prefill="w-prefill", decode="w-decode",
                     metrics={"selector": {"matchLabels": {"model_name": "w-ext"}}})  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("e2e-adapter")
    runner = ProcessRunner(base / "logs")
    front_proxy, serving_ca = CA("front-proxy", base), CA("serving", base)
    serving = serving_ca.issue("pdscale-metrics-adapter", hosts=["127.0.0.1"], stem="serving")
    tls = ["--tls-cert-file", str(serving.cert_path), "--tls-private-key-file", str(serving.key_path),
           "--bind-address", "127.0.0.1"]  # fmt: skip
    try:
        with contextlib.contextmanager(_stack)(runner, base) as stack:
            stack.kube.put("v1/configmaps", extension_auth_configmap(front_proxy))
            stack.kube.allow(AccessRule(users=(HPA_USER, "dashboard"), verbs=("list",),
                                        api_groups=("external.metrics.k8s.io",), namespaces=(NS,)))  # fmt: skip
            stack.kube.allow(AccessRule(groups=("system:authenticated",), verbs=("get",),
                                        non_resource_urls=("/apis", "/apis/*")))  # fmt: skip
            stack.kube.add_token("dashboard-token", "dashboard", ("system:authenticated",))
            _exported(stack)
            ports = free_port(), free_port()
            controller = runner.start(stack.argv(NS, "--tick-s", "0.5", "--lease-duration-s", "3", "--identity",
                                                 "ctl", "--serve-external-metrics", "--secure-port", str(ports[0]),
                                                 *tls), name="pdscale-run")  # fmt: skip
            adapter = runner.start([sys.executable, "-m", "autoscaler.cli", "adapter", "--kubeconfig",
                                    str(stack.kubeconfig), "-n", NS, "--prometheus-url", stack.prometheus.url,
                                    "--refresh-s", "0.5", "--controller-lease", f"{NS}/pdscale-controller",
                                    "--kube-timeout-s", "2", "--prometheus-timeout-s", "2",
                                    "--secure-port", str(ports[1]), *tls], name="pdscale-adapter")  # fmt: skip
            stack.wait_for_data()  # while both processes start
            urls = [f"https://127.0.0.1:{p}" for p in ports]
            for url, proc in zip(urls, (controller, adapter), strict=True):
                wait_http_ok_tls(url + "/readyz", serving_ca.path, proc)
            yield World(stack, base, serving_ca, serving, front_proxy.issue("front-proxy-client"), controller,
                        urls[0], adapter, urls[1])  # fmt: skip
            assert adapter.stop() == 0, adapter.tail()
            assert controller.stop() == 0, controller.tail()
    except BaseException:
        print(runner.report())
        raise
    finally:
        runner.stop_all()


def wait_http_ok_tls(url: str, ca: Path, proc: ManagedProcess, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        assert proc.running, f"{proc.name} exited: {proc.tail()}"
        try:
            resp = requests.get(url, verify=str(ca), timeout=2)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code} {resp.text.strip()}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout_s} s: {last}\n{proc.tail()}")


def values(resp: requests.Response) -> list[float]:
    assert resp.status_code == 200, resp.text
    return [float(parse_quantity(item["value"])) for item in resp.json()["items"]]


# ---------------------------------------------------------------- the HPA follows pdscale


def test_stock_hpa_arithmetic_follows_pdscale_desired_replicas(world: World) -> None:
    """One HPA per pool: External metric ``pdscale_desired_replicas`` {autoscaler=llama, pool=P}, AverageValue 1."""
    stack = world.stack
    api = k8s_config.new_client_from_config(str(stack.kubeconfig))
    apps = k8s.AppsV1Api(api)
    writes = {"prefill": 0, "decode": 0}

    def sync(pool: str) -> int | None:
        resp = world.aggregator_get(world.controller_url, f"{BASE}/namespaces/{NS}/pdscale_desired_replicas",
                                    f"autoscaler=llama,pool={pool}")  # fmt: skip
        items = values(resp)
        if not items:
            return None  # the HPA: "no metrics returned from external metrics API", no scaling
        scale = apps.read_namespaced_deployment_scale(pool, NS)
        assert scale.status is not None and scale.spec is not None
        desired = external_average_value_replicas(status_replicas=scale.status.replicas, usage=sum(items),
                                                  target_per_pod=1.0)  # fmt: skip
        if desired != scale.spec.replicas:
            apps.patch_namespaced_deployment_scale(pool, NS, {"spec": {"replicas": desired}})
            writes[pool] += 1
        return desired

    def converged() -> bool:
        for pool in ("prefill", "decode"):
            sync(pool)
        status = stack.kube.get(CR, NS, "llama")["status"]  # type: ignore[index]
        replicas = {p: stack.kube.get("apps/v1/deployments", NS, p)["spec"]["replicas"]  # type: ignore[index]
                    for p in ("prefill", "decode")}  # fmt: skip
        return all(replicas[p] == status[p]["desiredReplicas"] for p in replicas) and replicas["prefill"] > 2

    wait_for(converged, 30, "the HPA-driven Deployments to reach pdscale's recommendation (prefill scaled up)",
             interval_s=0.3)  # fmt: skip
    assert stack.kube.get("apps/v1/deployments", NS, "decode")["spec"]["replicas"] == 2  # type: ignore[index]
    scale_writes = sum(1 for m, p in stack.kube.requests() if m == "PATCH" and p.endswith(f"/{NS}/deployments/"
                                                                                          "prefill/scale"))
    assert scale_writes == writes["prefill"] >= 1, "advisory mode: only the HPA wrote replicas"


# ---------------------------------------------------------------- the standalone adapter, read by real clients


def expected(mix: LatencyMix, q: float, buckets: tuple[float, ...]) -> float:
    value = mix.bucketed_quantile(q, buckets)
    assert value is not None
    return value


def test_kubernetes_client_and_kubectl_read_the_standalone_adapter(world: World) -> None:
    api = k8s_config.new_client_from_config(str(world.kubeconfig(world.adapter_url)))
    groups = k8s.ApisApi(api).get_api_versions()
    assert [g.name for g in groups.groups] == ["external.metrics.k8s.io"]
    custom = k8s.CustomObjectsApi(api)
    resources = custom.get_api_resources("external.metrics.k8s.io", "v1beta1")
    assert resources is not None and "pdscale_ttft_p90_seconds" in {r.name for r in resources.resources}

    def read(metric: str, selector: str) -> list[tuple[dict[str, str], float]]:
        doc: Any = custom.list_namespaced_custom_object("external.metrics.k8s.io", "v1beta1", NS, metric,
                                                        label_selector=selector)  # fmt: skip
        assert doc["kind"] == "ExternalMetricValueList"
        return [(item["metricLabels"], float(parse_quantity(item["value"]))) for item in doc["items"]]

    def settled() -> bool:  # the controller has written its decision and the adapter has refreshed since
        try:
            return bool(read("pdscale_desired_replicas", "autoscaler=workers")) and bool(
                read("pdscale_ttft_p50_seconds", "autoscaler=workers"))
        except k8s.exceptions.ApiException:
            return False

    wait_for(settled, 20, "values from the standalone adapter")
    for q in QUANTILES:
        name = f"p{q * 100:g}"
        [(_, ttft)] = read(f"pdscale_ttft_{name}_seconds", "autoscaler=llama")
        assert ttft == pytest.approx(expected(PROXY_TTFT, q, TTFT_BUCKETS_S), rel=1e-6), f"proxy TTFT {name}"
        [(_, itl)] = read(f"pdscale_itl_{name}_seconds", "autoscaler=llama")
        assert itl == pytest.approx(expected(PROXY_ITL, q, ITL_BUCKETS_S), rel=1e-6), f"proxy ITL {name}"
        # no proxy: prefill-worker TTFT + decode-worker TTFT, decode-worker ITL
        [(_, ttft)] = read(f"pdscale_ttft_{name}_seconds", "autoscaler=workers")
        want = expected(WORKER_P_TTFT, q, TTFT_BUCKETS_S) + expected(WORKER_D_TTFT, q, TTFT_BUCKETS_S)
        assert ttft == pytest.approx(want, rel=1e-6), f"worker TTFT {name}"
        [(_, itl)] = read(f"pdscale_itl_{name}_seconds", "autoscaler=workers")
        assert itl == pytest.approx(expected(WORKER_ITL, q, ITL_BUCKETS_S), rel=1e-6), f"worker ITL {name}"
    [(labels, slo)] = read("pdscale_ttft_seconds", "autoscaler=llama")
    assert labels == {"autoscaler": "llama", "quantile": "0.99"} and slo == pytest.approx(
        expected(PROXY_TTFT, 0.99, TTFT_BUCKETS_S), rel=1e-6)  # fmt: skip
    # rate() underestimates until its window is full of samples: wait for 4 requests/s
    wait_for(lambda: read("pdscale_request_rate_per_second", "autoscaler=llama")[0][1] == pytest.approx(4.0, rel=0.05),
             15, "the request rate over a full window")  # fmt: skip
    assert read("pdscale_waiting_requests", "autoscaler=workers,pool=prefill") == [
        ({"autoscaler": "workers", "pool": "prefill"}, 6.0)]  # fmt: skip
    assert read("pdscale_kv_cache_usage_ratio", "autoscaler=workers,pool=decode")[0][1] == pytest.approx(0.6)
    assert sum(v for _, v in read("pdscale_running_requests", "autoscaler=workers")) == 42.0, "both pools summed"

    status = world.stack.kube.get(CR, NS, "workers")["status"]  # type: ignore[index]
    desired = dict((labels["pool"], v) for labels, v in read("pdscale_desired_replicas", "autoscaler=workers"))
    assert desired == {p: float(status[p]["desiredReplicas"]) for p in ("prefill", "decode")}
    # the in-process server of the controller serves the same Prometheus-derived values
    same = world.aggregator_get(world.controller_url, f"{BASE}/namespaces/{NS}/pdscale_itl_p90_seconds",
                                "autoscaler=workers")  # fmt: skip
    assert values(same) == pytest.approx([expected(WORKER_ITL, 0.9, ITL_BUCKETS_S)], rel=1e-6)

    raw = subprocess.run(["kubectl", "--kubeconfig", str(world.kubeconfig(world.adapter_url)), "get", "--raw",
                          f"{BASE}/namespaces/{NS}/pdscale_ttft_p99_seconds?labelSelector=autoscaler%3Dllama"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert raw.returncode == 0, raw.stderr
    assert '"metricName":"pdscale_ttft_p99_seconds"' in raw.stdout.replace(" ", "")


# ---------------------------------------------------------------- Prometheus down


def test_prometheus_outage_is_503_but_decisions_still_served(world: World) -> None:
    prometheus = world.stack.prometheus
    prometheus.kill()
    try:
        for url in (world.adapter_url, world.controller_url):
            def unavailable(url: str = url) -> bool:
                resp = world.aggregator_get(url, f"{BASE}/namespaces/{NS}/pdscale_ttft_seconds",
                                            "autoscaler=llama")  # fmt: skip
                return resp.status_code == 503 and "prometheus" in resp.json()["message"].lower()

            wait_for(unavailable, 15, f"503 from {url} while Prometheus is down")
            body = world.aggregator_get(url, f"{BASE}/namespaces/{NS}/pdscale_ttft_seconds", "autoscaler=llama")
            assert body.json()["kind"] == "Status" and body.json()["reason"] == "ServiceUnavailable"

            def decision_served(url: str = url) -> bool:
                status = world.stack.kube.get(CR, NS, "llama")["status"]  # type: ignore[index]
                failing = any(c["reason"] == "FailedGetMetrics" for c in status["conditions"])
                desired = world.aggregator_get(url, f"{BASE}/namespaces/{NS}/pdscale_desired_replicas",
                                               "autoscaler=llama,pool=prefill")  # fmt: skip
                return failing and values(desired) == [float(status["prefill"]["desiredReplicas"])]

            wait_for(decision_served, 10, "the controller's held decision, still served")
    finally:
        prometheus.start()
    wait_for(lambda: world.aggregator_get(world.adapter_url, f"{BASE}/namespaces/{NS}/pdscale_ttft_seconds",
                                          "autoscaler=llama").status_code == 200, 30, "recovery")  # fmt: skip
    wait_http_ok(prometheus.url + "/-/ready", 10)

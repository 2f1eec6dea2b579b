"""Bad data never shrinks a deployment (issue 14 item 1), end to end: ``pdscale run --once`` against the Kubernetes
emulator and a real Prometheus scraping vLLM-format series.

* Every request failing (the proxy counts them as ``outcome="5xx"``, the workers as ``finished_reason="error"``):
  the success counters go flat, and read as demand they would say "no load" (the controller scaled 6/6 -> 1/1).
  Failing requests are demand, and a failure ratio above ``metrics.maxFailureRatio`` holds the replicas
  (reason ``RequestsFailing``).
* A partial scrape (2 of 4 ready prefill pods report): the load it shows is a fraction of the real one, so it
  never scales down (reason ``PartialMetrics``); once every pod reports, the same load does scale down.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Model, Stack, _stack
from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, LatencyMix, Load
from workers.local.kube_emulator import CR
from workers.local.processes import ProcessRunner

FAST_DOWN = {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0,
                                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}]}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One emulator, exporter and Prometheus for the module; each test uses its own namespace."""
    base = tmp_path_factory.mktemp("failing-traffic")
    runner = ProcessRunner(base / "proc-logs")
    try:
        yield from _stack(runner, base)
    finally:
        runner.stop_all()


def quiet_loads(rate_per_s: float, failing: float) -> tuple[Load, Load, Load]:
    """(prefill pod, decode pod, proxy) at a light load, nothing queued, ``failing`` of the requests failing."""
    prefill = Load(requests_per_s=rate_per_s, ttft=LatencyMix.fixed(0.05), prompt_tokens_per_request=200,
                   output_tokens_per_request=1, kv_usage=0.05, failure_fraction=failing)
    decode = Load(requests_per_s=rate_per_s, ttft=LatencyMix.fixed(0.02), itl=LatencyMix.fixed(0.01),
                  itl_samples_per_request=20, prompt_tokens_per_request=200, output_tokens_per_request=20,
                  running=1, kv_usage=0.05, failure_fraction=failing)
    proxy = Load(requests_per_s=rate_per_s * 2, ttft=LatencyMix.fixed(0.08), itl=LatencyMix.fixed(0.01),
                 itl_samples_per_request=20, failure_fraction=failing)
    return prefill, decode, proxy


def deploy(stack: Stack, namespace: str, *, replicas: int, exporting: int, failing: float) -> Model:
    """Prefill and decode Deployments of ``replicas`` ready pods, of which ``exporting`` per pool are scraped."""
    m = Model(stack, namespace)
    p, d, fe = quiet_loads(0.5, failing)
    for i in range(exporting):
        stack.exporter.add_pod(ExportedPod(name=f"{namespace}-p{i}", role="prefill", model_name=m.model,
                                           namespace=namespace, load=p))
        stack.exporter.add_pod(ExportedPod(name=f"{namespace}-d{i}", role="decode", model_name=m.model,
                                           namespace=namespace, load=d))
    stack.exporter.add_frontend(ExportedFrontend(name=f"{namespace}-proxy", model_name=m.model, namespace=namespace,
                                                 load=fe, requests_metric="pdscale_proxy_requests"))
    stack.kube.add_deployment(namespace, "prefill", replicas)
    stack.kube.add_deployment(namespace, "decode", replicas)
    cr = m.add_autoscaler("llama", **FAST_DOWN)
    for pool in ("prefill", "decode"):
        cr["spec"][pool].update(minReplicas=1, maxReplicas=8)
    stack.kube.put(CR, cr)
    return m


def run_once(stack: Stack, namespace: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(stack.argv(namespace, "--once", "--json", "--identity", "once"),
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else {}), proc.stderr


def reasons(report: dict[str, Any]) -> tuple[str, str]:
    return report["decision"]["prefill"]["reason"], report["decision"]["decode"]["reason"]


def test_failing_requests_are_demand_and_hold_the_replicas(world: Stack) -> None:
    m = deploy(world, "failing", replicas=6, exporting=6, failing=1.0)
    world.prometheus.wait_for_scrapes("vllm", 12, timeout_s=30)  # rate() over the 5 s window has data

    rc, out, err = run_once(world, "failing")
    assert rc == 0, err
    report = out["autoscalers"][0]
    signals = report["observation"]["signals"]
    assert signals["request_rate_per_s"] == pytest.approx(1.0, rel=0.25)  # the proxy's 5xx count as demand
    assert signals["prompt_tokens_per_s"] == 0.0  # what the success counters say: "no load"
    assert signals["failed_request_rate_per_s"] == pytest.approx(signals["request_rate_per_s"], rel=0.01)
    assert reasons(report) == ("RequestsFailing", "RequestsFailing")
    assert "100% of requests failing" in report["decision"]["prefill"]["message"]
    assert (m.replicas("prefill"), m.replicas("decode")) == (6, 6)
    limited = m.condition("llama", "ScalingLimited")
    assert limited is not None and limited["reason"] == "RequestsFailing"

    # the traffic recovers: the same light load is now served, and the controller scales down
    p, d, fe = quiet_loads(0.5, 0.0)
    for i in range(6):
        world.exporter.set_load(f"failing-p{i}", p)
        world.exporter.set_load(f"failing-d{i}", d)
    world.exporter.set_load("failing-proxy", fe)
    world.prometheus.wait_for_scrapes("vllm", 12, timeout_s=30)  # a whole window of healthy traffic
    rc, out, err = run_once(world, "failing")
    assert rc == 0, err
    assert reasons(out["autoscalers"][0])[0] != "RequestsFailing"
    assert m.replicas("prefill") < 6, out["autoscalers"][0]["decision"]


def test_a_partial_scrape_never_scales_down(world: Stack) -> None:
    m = deploy(world, "partial", replicas=4, exporting=2, failing=0.0)  # 2 of 4 ready pods per pool scraped
    world.prometheus.wait_for_scrapes("vllm", 12, timeout_s=30)

    rc, out, err = run_once(world, "partial")
    assert rc == 0, err
    report = out["autoscalers"][0]
    assert report["observation"]["signals"]["prefill"]["pods_reporting"] == 2
    assert reasons(report) == ("PartialMetrics", "PartialMetrics")
    assert "2 of 4 ready prefill pods report metrics" in report["decision"]["prefill"]["message"]
    assert (m.replicas("prefill"), m.replicas("decode")) == (4, 4)

    # the other two pods get scraped: the same load, now seen whole, scales down
    p, d, _ = quiet_loads(0.5, 0.0)
    for i in (2, 3):
        world.exporter.add_pod(ExportedPod(name=f"partial-p{i}", role="prefill", model_name=m.model,
                                           namespace="partial", load=p))
        world.exporter.add_pod(ExportedPod(name=f"partial-d{i}", role="decode", model_name=m.model,
                                           namespace="partial", load=d))
    world.prometheus.wait_for_scrapes("vllm", 12, timeout_s=30)
    rc, out, err = run_once(world, "partial")
    assert rc == 0, err
    assert out["autoscalers"][0]["observation"]["signals"]["prefill"]["pods_reporting"] == 4
    assert m.replicas("prefill") < 4 and m.replicas("decode") < 4


def test_pods_reporting_counts_pods_not_series(world: Stack) -> None:
    """Two engines in one pod (data parallel) are one pod reporting."""
    m = deploy(world, "engines", replicas=2, exporting=1, failing=0.0)
    p, _, _ = quiet_loads(0.5, 0.0)
    world.exporter.add_pod(ExportedPod(name="engines-p0", role="prefill", model_name=m.model, namespace="engines",
                                       load=p, engine="1"))  # a second engine of the same pod
    world.prometheus.wait_for_scrapes("vllm", 4, timeout_s=30)
    _, out, err = run_once(world, "engines")
    signals = out["autoscalers"][0]["observation"]["signals"]
    assert signals["prefill"]["pods_reporting"] == 1, err

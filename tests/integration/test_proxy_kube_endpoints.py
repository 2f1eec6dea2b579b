"""The proxy's Kubernetes endpoint source against the kmock-based emulator through the official client: LIST then
WATCH of pods or EndpointSlices by label selector, readiness and termination, deletions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.helpers.kube_discovery import emulated_pod, emulated_slice
from workers.endpoints import DECODE, PREFILL, Snapshot
from workers.endpoints_kube import KubeEndpointSource
from workers.local.kube_emulator import ENDPOINTSLICES, KubeEmulator

NS = "serving"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emu:
        yield emu


async def _until(
    snaps: list[Snapshot], check: Callable[[Snapshot], bool], timeout_s: float = 10.0
) -> Snapshot:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if snaps and check(snaps[-1]):
            return snaps[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no snapshot matched within {timeout_s} s; last: {snaps[-1] if snaps else None}")


def _core(kubeconfig: Path) -> client.CoreV1Api:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.CoreV1Api(client.ApiClient(configuration))


async def test_pods_by_selector_follow_readiness_termination_and_deletion(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", NS)
    kube.put("v1/pods", emulated_pod(NS, "p-0", {"app": "m", "role": "prefill"}, 9100))
    kube.put("v1/pods", emulated_pod(NS, "d-0", {"app": "m", "role": "decode"}, 9200))
    kube.put("v1/pods", emulated_pod(NS, "other", {"app": "other", "role": "decode"}, 9300))
    kube.put("v1/pods", emulated_pod("elsewhere", "d-x", {"app": "m", "role": "decode"}, 9400))
    source = KubeEndpointSource(
        namespace=NS,
        selectors={PREFILL: "app=m,role=prefill", DECODE: "app=m,role=decode"},
        kubeconfig=str(kubeconfig),
    )
    snaps: list[Snapshot] = []
    task = asyncio.create_task(source.run(snaps.append))
    try:
        snap = await _until(snaps, lambda s: bool(s[PREFILL]) and bool(s[DECODE]))
        assert snap == {PREFILL: {"http://127.0.0.1:9100": True}, DECODE: {"http://127.0.0.1:9200": True}}

        kube.put("v1/pods", emulated_pod(NS, "d-1", {"app": "m", "role": "decode"}, 9201, ready=False))
        snap = await _until(snaps, lambda s: len(s[DECODE]) == 2)
        assert snap[DECODE] == {"http://127.0.0.1:9200": True, "http://127.0.0.1:9201": False}

        kube.put("v1/pods", emulated_pod(NS, "d-1", {"app": "m", "role": "decode"}, 9201, ready=True))
        await _until(snaps, lambda s: s[DECODE].get("http://127.0.0.1:9201") is True)

        terminating = emulated_pod(NS, "d-0", {"app": "m", "role": "decode"}, 9200)
        terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        kube.put("v1/pods", terminating)
        await _until(snaps, lambda s: s[DECODE].get("http://127.0.0.1:9200") is False)

        # the kubelet's final delete once the containers stopped (the API server keeps a terminating pod until then)
        await asyncio.to_thread(_core(kubeconfig).delete_namespaced_pod, "d-0", NS, grace_period_seconds=0)
        snap = await _until(snaps, lambda s: "http://127.0.0.1:9200" not in s[DECODE])
        assert snap[DECODE] == {"http://127.0.0.1:9201": True}
        assert all("9300" not in url and "9400" not in url for role in snap.values() for url in role)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_endpointslices_by_service(kube: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", NS)
    kube.put(ENDPOINTSLICES, emulated_slice(NS, "dec-a", "m-decode", 9500,
                                            [("127.0.0.1", True, False), ("127.0.0.2", False, False)]))  # fmt: skip
    kube.put(ENDPOINTSLICES, emulated_slice(NS, "pre-a", "m-prefill", 9600, [("127.0.0.1", True, False)]))
    source = KubeEndpointSource(
        namespace=NS,
        selectors={
            PREFILL: "kubernetes.io/service-name=m-prefill",
            DECODE: "kubernetes.io/service-name=m-decode",
        },
        kind="endpointslices",
        kubeconfig=str(kubeconfig),
    )
    snaps: list[Snapshot] = []
    task = asyncio.create_task(source.run(snaps.append))
    try:
        snap = await _until(snaps, lambda s: len(s[DECODE]) == 2 and bool(s[PREFILL]))
        assert snap[DECODE] == {"http://127.0.0.1:9500": True, "http://127.0.0.2:9500": False}
        assert snap[PREFILL] == {"http://127.0.0.1:9600": True}
        kube.put(ENDPOINTSLICES, emulated_slice(NS, "dec-a", "m-decode", 9500,
                                                [("127.0.0.1", False, True), ("127.0.0.2", True, False)]))  # fmt: skip
        snap = await _until(snaps, lambda s: s[DECODE].get("http://127.0.0.2:9500") is True)
        assert snap[DECODE]["http://127.0.0.1:9500"] is False  # terminating: takes nothing new
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="--k8s-kind"):
        KubeEndpointSource(namespace=NS, selectors={DECODE: "a=b"}, kind="services")
    with pytest.raises(ValueError, match="--k8s-decode-selector"):
        KubeEndpointSource(namespace=NS, selectors={DECODE: " "})
    with pytest.raises(ValueError, match="--k8s-port"):
        KubeEndpointSource(namespace=NS, selectors={DECODE: "a=b"}, port=70000)

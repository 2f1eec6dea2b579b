"""The emulator itself: also usable as kmock's own pytest fixture (in-loop server, sync client via to_thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from workers.local.kube_emulator import PdscaleKubeEmulator


def _apps(url: str) -> k8s.AppsV1Api:
    cfg = k8s.Configuration()
    cfg.host = url.rstrip("/")
    cfg.retries = False
    return k8s.AppsV1Api(k8s.ApiClient(cfg))


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "ns"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
}


@pytest.mark.kmock(cls=PdscaleKubeEmulator)
async def test_kmock_fixture_serves_scale_and_conflicts(kmock: PdscaleKubeEmulator) -> None:
    apps = _apps(str(kmock.url))
    created = await asyncio.to_thread(apps.create_namespaced_deployment, "ns", DEPLOYMENT)
    rv = created.metadata.resource_version
    assert rv and created.metadata.uid and created.metadata.generation == 1

    scale = await asyncio.to_thread(apps.read_namespaced_deployment_scale, "web", "ns")
    assert (scale.spec.replicas, scale.status.selector, scale.metadata.resource_version) == (1, "app=web", rv)
    body = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 3}}
    patched = await asyncio.to_thread(apps.patch_namespaced_deployment_scale, "web", "ns", body)
    assert patched.spec.replicas == 3 and patched.metadata.resource_version != rv
    with pytest.raises(ApiException) as info:  # the same precondition again is now stale
        await asyncio.to_thread(apps.patch_namespaced_deployment_scale, "web", "ns", body)
    assert info.value.status == 409

    # kmock's own assertions still work on the stored objects, with our stamping
    stored = kmock.objects["apps/v1/deployments", "ns", "web"]
    assert stored["spec"]["replicas"] == 3 and stored["metadata"]["generation"] == 2
    assert stored["status"]["readyReplicas"] == 3  # auto_ready stands in for the Deployment controller
    assert [v["spec"]["replicas"] for v in stored.history if v is not None] == [1, 3]


def test_a_write_whose_client_gave_up_is_dropped_and_who_wrote_is_recorded() -> None:
    """A delayed write answered within the client's timeout lands (late); one whose client hung up never does,
    as the API server drops a request whose context was canceled before storage."""
    import time

    from workers.local.kube_emulator import KubeEmulator

    with KubeEmulator() as emu:
        emu.add_deployment("ns", "web", 1)
        cfg = k8s.Configuration()
        cfg.host, cfg.retries, cfg.api_key = emu.url, False, {"authorization": "Bearer writer-a"}
        apps = k8s.AppsV1Api(k8s.ApiClient(cfg))
        emu.add_fault("PATCH", r"/deployments/web/scale$", status=None, delay_s=0.3)
        apps.patch_namespaced_deployment_scale("web", "ns", {"spec": {"replicas": 2}}, _request_timeout=2.0)
        emu.add_fault("PATCH", r"/deployments/web/scale$", status=None, delay_s=1.0)
        with pytest.raises(Exception, match="timed out"):
            apps.patch_namespaced_deployment_scale("web", "ns", {"spec": {"replicas": 5}}, _request_timeout=0.3)
        time.sleep(1.2)  # the delay is over
        assert emu.get("apps/v1/deployments", "ns", "web")["spec"]["replicas"] == 2  # type: ignore[index]
        assert [(m, p, who) for _, m, p, who in emu.applied()] == [("PATCH", "deployments/web/scale", "writer-a")]

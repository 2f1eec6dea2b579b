"""What kubectl and pod watchers need from the emulator: server-side Tables (built-in columns and a CRD's printer
columns), field selectors on LIST and WATCH, label selectors on WATCH, graceful pod deletion, typed list kinds,
short names in discovery. The same requests kubectl sends, made with urllib."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.local import kube_tables
from workers.local.kube_emulator import CR, KubeEmulator

REPO = Path(__file__).resolve().parents[2]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator(auto_ready=False) as emu:
        emu.apply_crds(REPO / "manifests" / "base" / "crd.yaml")
        yield emu


def _get(kube: KubeEmulator, path: str, accept: str = "application/json") -> Any:
    req = urllib.request.Request(kube.url + path, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _delete(kube: KubeEmulator, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(kube.url + path, method="DELETE", data=json.dumps(body or {}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _pod(name: str, labels: dict[str, str], **status: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "t", "labels": labels},
            "spec": {"containers": [{"name": "w"}], "terminationGracePeriodSeconds": 7},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "containerStatuses": [{"name": "w", "ready": True, "restartCount": 2}], **status}}


def test_discovery_has_short_names_on_main_resources_and_core_group_version(kube: KubeEmulator) -> None:
    core = _get(kube, "/api/v1")
    assert core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"] and by_name["pods/status"]["shortNames"] == []
    crs = {r["name"]: r for r in _get(kube, "/apis/pdscale.io/v1alpha1")["resources"]}
    assert crs["disaggregatedautoscalers"]["shortNames"] == ["pdas"]
    assert set(crs["disaggregatedautoscalers"]["categories"]) == {"all", "autoscaling"}


def test_tables_for_pods_deployments_and_the_crd_printer_columns(kube: KubeEmulator) -> None:
    kube.put("v1/pods", _pod("w-1", {"app": "w"}))
    kube.add_deployment("t", "dec", 3, ready=2)
    kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                  "metadata": {"name": "m", "namespace": "t"},
                  "spec": {"slo": {"ttft": {"targetSeconds": 1.5}}, "mode": "active"},
                  "status": {"prefill": {"currentReplicas": 2, "desiredReplicas": 4},
                             "observed": {"ttftSeconds": "2.100"},
                             "conditions": [{"type": "SLOMet", "status": "False"}]}})
    pods = _get(kube, "/api/v1/namespaces/t/pods", TABLE)
    assert pods["kind"] == "Table" and [c["name"] for c in pods["columnDefinitions"]][:5] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    assert pods["rows"][0]["cells"][:4] == ["w-1", "1/1", "Running", 2]
    assert pods["rows"][0]["object"]["metadata"]["name"] == "w-1"
    deploy = _get(kube, "/apis/apps/v1/namespaces/t/deployments/dec", TABLE)
    assert deploy["rows"][0]["cells"][:2] == ["dec", "2/3"]
    pdas = _get(kube, "/apis/pdscale.io/v1alpha1/namespaces/t/disaggregatedautoscalers", TABLE)
    names = [c["name"] for c in pdas["columnDefinitions"]]
    cells = dict(zip(names, pdas["rows"][0]["cells"], strict=True))
    assert (cells["P"], cells["P-Desired"], cells["TTFT"], cells["TTFT-Target"]) == (2, 4, "2.100", 1.5)
    assert cells["SLO"] == "False" and cells["D"] is None and cells["Age"].endswith("s")


def test_field_selectors_and_typed_list_kinds(kube: KubeEmulator) -> None:
    for name, obj in (("e1", "m"), ("e2", "other")):
        kube.put("v1/events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "t"},
                               "involvedObject": {"kind": "DisaggregatedAutoscaler", "name": obj},
                               "reason": "SuccessfulRescale", "type": "Normal"})
    found = _get(kube, "/api/v1/namespaces/t/events?fieldSelector=involvedObject.name%3Dm%2C"
                       "involvedObject.kind%3DDisaggregatedAutoscaler")
    assert found["kind"] == "EventList" and [e["metadata"]["name"] for e in found["items"]] == ["e1"]
    others = _get(kube, "/api/v1/namespaces/t/events?fieldSelector=involvedObject.name!%3Dm")
    assert [e["metadata"]["name"] for e in others["items"]] == ["e2"]


def test_watch_filters_by_label_selector(kube: KubeEmulator) -> None:
    seen: list[str] = []

    def watch() -> None:
        req = urllib.request.Request(kube.url + "/api/v1/namespaces/w/pods?watch=true&labelSelector=role%3Ddecode")
        with urllib.request.urlopen(req, timeout=10) as resp:
            for line in resp:
                if line.strip():
                    seen.append(json.loads(line)["object"]["metadata"]["name"])
                if "d-2" in seen:
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    for name, role in (("p-1", "prefill"), ("d-1", "decode"), ("p-2", "prefill"), ("d-2", "decode")):
        pod = _pod(name, {"role": role})
        pod["metadata"]["namespace"] = "w"
        kube.put("v1/pods", pod)
    thread.join(timeout=10)
    assert seen == ["d-1", "d-2"]


def test_pod_deletion_is_graceful_until_the_kubelet_deletes_with_grace_zero(kube: KubeEmulator) -> None:
    kube.put("v1/pods", _pod("g-1", {"app": "g"}))
    first = _delete(kube, "/api/v1/namespaces/t/pods/g-1")
    assert first["metadata"]["deletionTimestamp"] and first["metadata"]["deletionGracePeriodSeconds"] == 7
    stored = kube.get("v1/pods", "t", "g-1")
    assert stored is not None and stored["metadata"]["deletionTimestamp"]
    assert _get(kube, "/api/v1/namespaces/t/pods/g-1", TABLE)["rows"][0]["cells"][2] == "Terminating"
    _delete(kube, "/api/v1/namespaces/t/pods/g-1")  # a second graceful delete changes nothing
    assert kube.get("v1/pods", "t", "g-1") is not None
    _delete(kube, "/api/v1/namespaces/t/pods/g-1", {"gracePeriodSeconds": 0})
    assert kube.get("v1/pods", "t", "g-1") is None


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
                                               (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"), (50 * 3600, "2d2h")])
def test_human_duration_matches_apimachinery(seconds: float, text: str) -> None:
    assert kube_tables.human_duration(seconds) == text


def test_jsonpath_subset_of_printer_columns() -> None:
    obj = {"status": {"conditions": [{"type": "A", "status": "x"}, {"type": "SLOMet", "status": "True"}],
                      "items": [1, 2]}}
    assert kube_tables.jsonpath(obj, '.status.conditions[?(@.type=="SLOMet")].status') == "True"
    assert kube_tables.jsonpath(obj, ".status.items[1]") == 2
    assert kube_tables.jsonpath(obj, ".status.missing.deeper") is None
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        kube_tables.jsonpath(obj, ".status..x")

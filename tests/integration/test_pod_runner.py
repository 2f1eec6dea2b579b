"""The pod runner against the Kubernetes emulator with real processes (a tiny HTTP server per pod): ReplicaSets and
pods as the controllers make them, readiness from probes, the ReplicaSet's victim order, preStop then SIGTERM, the
grace period then SIGKILL, restarts after a crash, StatefulSet ordinals, Deployment status and the file_sd file."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from workers.local.kube_emulator import KubeEmulator
from workers.local.kubelet import KubeletOptions
from workers.local.pod_runner import PodRunner, PodRunnerOptions

NS = "pr"
# a pod: an HTTP server answering /health; TERM_IGNORED=1 makes it ignore SIGTERM (to exercise the SIGKILL)
SERVER = """
import http.server, os, signal, sys, threading, time
if os.environ.get("TERM_IGNORED") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(0)))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # a second thread (nice is per thread)
time.sleep(float(os.environ.get("LISTEN_AFTER_S", "0")))  # "loading"
http.server.HTTPServer(("127.0.0.1", int(os.environ["POD_PORT"])), H).serve_forever()
"""


def workload(kind: str, name: str, replicas: int, *, pre_stop_s: int = 0, grace_s: int = 30,
             env: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:  # fmt: skip
    labels = {"app": name, "pdscale.io/role": "decode"}
    container: dict[str, Any] = {
        "name": "server", "image": "python", "command": [sys.executable, "-c", SERVER],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }  # fmt: skip
    if pre_stop_s:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop_s}}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, **spec,
                     "template": {"metadata": {"labels": labels, "annotations": {"team": "serving"}},
                                  "spec": {"terminationGracePeriodSeconds": grace_s, "containers": [container]}}}}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[KubeEmulator, PodRunner]]:
    with KubeEmulator(auto_ready=False) as kube:
        runner = PodRunner(PodRunnerOptions(
            api_url=kube.url, namespace=NS, resync_s=0.1, file_sd_path=tmp_path / "sd.json",
            kubelet=KubeletOptions(log_dir=tmp_path / "pods", probe_period_s=0.1, restart_backoff_s=0.5),
        )).start()  # fmt: skip
        try:
            yield kube, runner
        finally:
            runner.stop()


def pods(kube: KubeEmulator, app: str) -> list[dict[str, Any]]:
    return [p for p in kube.list("v1/pods", NS) if p["metadata"]["labels"].get("app") == app]


def ready(kube: KubeEmulator, app: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods(kube, app)
                  if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))


def scale(kube: KubeEmulator, resource: str, name: str, replicas: int) -> None:
    obj = kube.get(resource, NS, name)
    assert obj is not None
    obj["spec"]["replicas"] = replicas
    kube.put(resource, obj)


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """``wanted`` appears in ``seen`` in this order (other events may come between)."""
    it = iter(seen)
    return all(any(x == w for x in it) for w in wanted)


def events(runner: PodRunner, pod: str) -> list[str]:
    return [e.event for e in runner.history if e.pod == pod]


def test_deployment_pods_status_endpoints_and_victims(world: tuple[KubeEmulator, PodRunner], tmp_path: Path) -> None:
    kube, runner = world
    kube.put("apps/v1/deployments", workload("Deployment", "web", 3, pre_stop_s=1))
    wait_for(lambda: len(ready(kube, "web")) == 3, 30, "three ready pods")
    (rs,) = kube.list("apps/v1/replicasets", NS)
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    for pod in pods(kube, "web"):
        meta = pod["metadata"]
        assert meta["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert meta["labels"]["pod-template-hash"] == rs["metadata"]["labels"]["pod-template-hash"]
        assert meta["annotations"]["team"] == "serving" and pod["spec"]["nodeName"] == "local"
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"] == "127.0.0.1"
    status = wait_for(lambda: (d := kube.get("apps/v1/deployments", NS, "web")) and
                      d.get("status", {}).get("readyReplicas") == 3 and d["status"], 10, "Deployment status")  # fmt: skip
    assert (status["replicas"], status["availableReplicas"], status["updatedReplicas"]) == (3, 3, 3)
    # Prometheus' view: every ready pod, with Kubernetes pod-discovery labels
    groups = json.loads((tmp_path / "sd.json").read_text())
    assert sorted(g["labels"]["__meta_kubernetes_pod_name"] for g in groups) == ready(kube, "web")
    assert all(g["labels"]["__meta_kubernetes_pod_label_pdscale_io_role"] == "decode" for g in groups)
    port = next(p["containerPort"] for p in pods(kube, "web")[0]["spec"]["containers"][0]["ports"])
    assert f"127.0.0.1:{port}" in {t for g in groups for t in g["targets"]}

    # scale-down: the lowest pod-deletion-cost goes first, whatever its age
    names = ready(kube, "web")
    keep_cost = {names[0]: "100", names[1]: "-5", names[2]: "50"}
    for name, cost in keep_cost.items():
        pod = kube.get("v1/pods", NS, name)
        assert pod is not None
        pod["metadata"].setdefault("annotations", {})["controller.kubernetes.io/pod-deletion-cost"] = cost
        kube.put("v1/pods", pod)
    scale(kube, "apps/v1/deployments", "web", 2)
    wait_for(lambda: names[1] not in {p["metadata"]["name"] for p in pods(kube, "web")}, 20, "the victim to go")
    assert sorted(p["metadata"]["name"] for p in pods(kube, "web")) == sorted([names[0], names[2]])
    steps = wait_for(lambda: "deleted" in (e := events(runner, names[1])) and e, 10, "the kubelet to finish")
    assert in_order(steps, ["terminating", "prestop", "sigterm", "exited", "deleted"]), steps
    assert "sigkill" not in steps
    times = {e.event: e.t_s for e in runner.history if e.pod == names[1]}
    assert times["sigterm"] - times["prestop"] >= 0.95  # the preStop sleep came first
    assert any(e.reason == "ScalingReplicaSet" for e in _events(kube, "Deployment"))
    assert any(e.reason == "SuccessfulDelete" for e in _events(kube, "ReplicaSet"))


class _Event:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.reason = raw.get("reason")


def _events(kube: KubeEmulator, kind: str) -> list[_Event]:
    return [_Event(e) for e in kube.list("v1/events", NS) if e["involvedObject"]["kind"] == kind]


def test_grace_period_ends_in_sigkill_and_a_crash_restarts_in_place(world: tuple[KubeEmulator, PodRunner]) -> None:
    kube, runner = world
    kube.put("apps/v1/deployments", workload("Deployment", "stubborn", 1, grace_s=1, env={"TERM_IGNORED": "1"}))
    wait_for(lambda: len(ready(kube, "stubborn")) == 1, 30, "a ready pod")
    (name,) = ready(kube, "stubborn")
    container = next(c for c in runner.kubelet.containers.values() if c.name == name)
    assert container.process is not None
    container.process.kill()  # a crash
    wait_for(lambda: container.restarts == 1 and container.ready, 20, "a restart in place")
    pod = kube.get("v1/pods", NS, name)
    assert pod is not None and pod["status"]["containerStatuses"][0]["restartCount"] == 1
    assert len(pods(kube, "stubborn")) == 1  # restarted, not replaced
    assert "crashed" in events(runner, name) and "restarted" in events(runner, name)

    started = time.monotonic()
    scale(kube, "apps/v1/deployments", "stubborn", 0)
    wait_for(lambda: not pods(kube, "stubborn"), 20, "the stubborn pod to be killed and deleted")
    assert time.monotonic() - started >= 0.9  # the grace period was waited out
    steps = wait_for(lambda: "deleted" in (e := events(runner, name)) and e, 10, "the kubelet to finish")
    assert in_order(steps, ["terminating", "sigterm", "sigkill", "exited", "deleted"]), steps


def test_statefulset_ordinals_ordered_ready(world: tuple[KubeEmulator, PodRunner]) -> None:
    kube, runner = world
    kube.put("apps/v1/statefulsets", workload("StatefulSet", "db", 3))
    wait_for(lambda: ready(kube, "db") == ["db-0", "db-1", "db-2"], 30, "db-0..2 ready")
    admitted = [e.pod for e in runner.history if e.event == "admitted" and e.pod.startswith("db-")]
    assert admitted == ["db-0", "db-1", "db-2"]  # OrderedReady: one after another
    scale(kube, "apps/v1/statefulsets", "db", 1)
    wait_for(lambda: [p["metadata"]["name"] for p in pods(kube, "db")] == ["db-0"], 30, "db-2 then db-1 removed")
    gone = wait_for(lambda: len(g := [e.pod for e in runner.history if e.event == "deleted"]) == 2 and g, 10,
                    "the kubelet to see both pods gone")  # fmt: skip
    assert gone == ["db-2", "db-1"]  # highest ordinal first, one at a time
    wait_for(lambda: (kube.get("apps/v1/statefulsets", NS, "db") or {}).get("status", {}).get("readyReplicas") == 1,
             10, "StatefulSet status")  # fmt: skip


def test_kubectl_delete_pod_is_replaced_by_the_replicaset(world: tuple[KubeEmulator, PodRunner]) -> None:
    import urllib.request

    kube, runner = world
    kube.put("apps/v1/deployments", workload("Deployment", "svc", 2))
    wait_for(lambda: len(ready(kube, "svc")) == 2, 30, "two ready pods")
    victim = ready(kube, "svc")[0]
    req = urllib.request.Request(f"{kube.url}/api/v1/namespaces/{NS}/pods/{victim}", method="DELETE",
                                 data=b"{}", headers={"Content-Type": "application/json"})  # fmt: skip
    urllib.request.urlopen(req, timeout=5).read()
    wait_for(lambda: len(ready(kube, "svc")) == 2 and victim not in ready(kube, "svc"), 30, "a replacement pod")
    assert "sigterm" in events(runner, victim) and "deleted" in events(runner, victim)


def _nice_of_threads(pid: int) -> set[int]:
    """The nice value of every thread of a process (field 19 of /proc/PID/task/TID/stat)."""
    values = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        values.add(int(stat.read_text().rsplit(")", 1)[1].split()[16]))
    return values


def test_a_pod_starts_at_startup_nice_and_runs_at_nice_once_ready(tmp_path: Path) -> None:
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    with KubeEmulator(auto_ready=False) as kube:
        runner = PodRunner(PodRunnerOptions(
            api_url=kube.url, namespace=NS, resync_s=0.1, file_sd_path=tmp_path / "sd.json",
            kubelet=KubeletOptions(log_dir=tmp_path / "pods", probe_period_s=0.1, nice=7, startup_nice=0),
        )).start()  # fmt: skip
        try:
            kube.put("apps/v1/deployments", workload("Deployment", "slow", 1, env={"LISTEN_AFTER_S": "2"}))
            started = wait_for(lambda: [e for e in runner.history if e.event == "started"], 20, "a started container")
            pid = int(started[0].detail.split()[-1])
            wait_for(lambda: len(_nice_of_threads(pid)) == 1 and len(list(Path(f"/proc/{pid}/task").iterdir())) >= 2,
                     10, "the container's second thread")  # fmt: skip
            assert _nice_of_threads(pid) == {base}  # loading at startup_nice (0 more than ours)
            wait_for(lambda: len(ready(kube, "slow")) == 1, 30, "the pod to be ready")
            wait_for(lambda: "reniced" in events(runner, started[0].pod), 10, "the renice")
            assert _nice_of_threads(pid) == {min(base + 7, 19)}  # every thread, from Ready on
            if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
                # its session's autogroup too (across autogroups only the group's nice counts)
                assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == "7"
        finally:
            runner.stop()

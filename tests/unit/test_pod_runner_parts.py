"""The pod runner's pure parts: the ReplicaSet controller's victim order, $(VAR) expansion, the file_sd labels
Prometheus relabels, the time-scaled profile file, and the simulated Prometheus' scrape phases."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from autoscaler.core.latency import scale_profile
from autoscaler.profiles import load_profile
from workers.local.kubelet import expand
from workers.local.pod_runner import file_sd_groups
from workers.local.scaled_profile import write_scaled_profile
from workers.local.victims import deletion_cost, deletion_order

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def _iso(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str, *, phase: str = "Running", ready_for_s: float | None = 600.0, cost: str | None = None,
        created_s_ago: float = 700.0, restarts: int = 0, node: str = "local") -> dict[str, Any]:  # fmt: skip
    conditions = [] if ready_for_s is None else [
        {"type": "Ready", "status": "True", "lastTransitionTime": _iso(ready_for_s)}]
    annotations = {} if cost is None else {"controller.kubernetes.io/pod-deletion-cost": cost}
    return {"metadata": {"name": name, "uid": name, "creationTimestamp": _iso(created_s_ago),
                         "annotations": annotations},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"restartCount": restarts}]}}  # fmt: skip


def order(*pods: dict[str, Any]) -> list[str]:
    return [p["metadata"]["name"] for p in deletion_order(list(pods), NOW.timestamp())]


@pytest.mark.parametrize(("pods", "first"), [
    ((pod("running"), pod("pending", phase="Pending", ready_for_s=None)), "pending"),
    ((pod("ready"), pod("unready", ready_for_s=None)), "unready"),
    ((pod("unready-costly", ready_for_s=None, cost="1000"), pod("ready-cheap", cost="-1000")), "unready-costly"),
    ((pod("costly", cost="10"), pod("cheap", cost="-10"), pod("default")), "cheap"),
    ((pod("bad-cost", cost="many"), pod("low", cost="-1")), "low"),
    # ready time on a log2 scale: 30 s vs 600 s are different powers of two; the newer-ready one goes
    ((pod("old", ready_for_s=600.0), pod("fresh", ready_for_s=30.0)), "fresh"),
    ((pod("few", restarts=0, ready_for_s=None), pod("many", restarts=3, ready_for_s=None)), "many"),
    ((pod("older", ready_for_s=None, created_s_ago=900), pod("newer", ready_for_s=None, created_s_ago=100)), "newer"),
    ((pod("scheduled"), pod("unscheduled", node="", phase="Pending", ready_for_s=None)), "unscheduled"),
])  # fmt: skip
def test_replicaset_victim_order(pods: tuple[dict[str, Any], ...], first: str) -> None:
    assert order(*pods)[0] == first
    assert order(*reversed(pods))[0] == first  # not by list position


def test_deletion_cost_parsing() -> None:
    assert deletion_cost(pod("a", cost="-7")) == -7
    assert deletion_cost(pod("a", cost="x")) == 0
    assert deletion_cost(pod("a", cost=str(2**40))) == 0  # outside int32: ignored, as the API validates it
    assert deletion_cost(pod("a")) == 0


def test_var_expansion_like_the_kubelet() -> None:
    env = {"POD_PORT": "8123", "NAME": "x"}
    assert expand("--port=$(POD_PORT)", env) == "--port=8123"
    assert expand("$(NAME)-$(MISSING)", env) == "x-$(MISSING)"  # undefined references stay as written


def test_file_sd_labels_are_kubernetes_pod_discovery_labels() -> None:
    p = {"metadata": {"name": "dec-1", "namespace": "llm", "uid": "u1",
                      "labels": {"pdscale.io/role": "decode", "app.kubernetes.io/name": "m"}},
         "spec": {"containers": [{"name": "vllm"}]},
         "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip
    other = {**p, "metadata": {**p["metadata"], "uid": "u2", "name": "not-serving"}}
    (group,) = file_sd_groups([p, other], {"u1": 9100})
    assert group["targets"] == ["127.0.0.1:9100"]
    labels = group["labels"]
    assert labels["__meta_kubernetes_pod_label_pdscale_io_role"] == "decode"
    assert labels["__meta_kubernetes_pod_labelpresent_pdscale_io_role"] == "true"
    assert labels["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == "m"
    assert (labels["__meta_kubernetes_namespace"], labels["__meta_kubernetes_pod_name"]) == ("llm", "dec-1")
    assert labels["__meta_kubernetes_pod_ready"] == "true"


def test_scaled_profile_file_loads_back_as_scale_profile(tmp_path: Path) -> None:
    written = write_scaled_profile(tmp_path / "p.yaml", "llama-3.1-8b-h100-tp1", 6.0, engine={"max_num_seqs": 8})
    want = scale_profile(load_profile("llama-3.1-8b-h100-tp1"), 6.0)
    assert written.max_num_seqs == 8
    assert written.step.decode_step_s(8, 8 * 600.0) == pytest.approx(want.step.decode_step_s(8, 8 * 600.0))
    assert written.step.prefill_step_s(3000.0) == pytest.approx(want.step.prefill_step_s(3000.0))
    with pytest.raises(ValueError, match="engine limit"):
        write_scaled_profile(tmp_path / "q.yaml", "llama-3.1-8b-h100-tp1", 2.0, engine={"max_seqs": 8})
    with pytest.raises(ValueError, match="time scale"):
        write_scaled_profile(tmp_path / "q.yaml", "llama-3.1-8b-h100-tp1", 0.0)


def test_simulated_prometheus_scrape_phases() -> None:
    from sim.view import SimPrometheus

    class _Engine:
        proxy = None

        def pods(self) -> list[Any]:
            return []

    prom = SimPrometheus(_Engine(), scrape_interval_s=4.0, scrape_phases=4)
    assert prom.scrape_times(8.0).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    phase = prom.phase_of("decode-1")
    assert phase == prom.phase_of("decode-1") and 0 <= phase < 4  # stable per target
    due = [float(t) for t in prom.scrape_times(8.0) if prom._due("decode-1", float(t))]
    assert due == [t for t in (phase, phase + 4.0, phase + 8.0) if t <= 8.0]  # once per interval, at its phase
    aligned = SimPrometheus(_Engine(), scrape_interval_s=4.0)
    assert aligned.scrape_times(8.0).tolist() == [0.0, 4.0, 8.0] and aligned._due("decode-1", 4.0)
    with pytest.raises(ValueError, match="scrape_phases"):
        SimPrometheus(_Engine(), scrape_interval_s=4.0, scrape_phases=0)

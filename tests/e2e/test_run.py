"""``pdscale run`` end to end: a subprocess against the Kubernetes emulator and a real Prometheus scraping
vLLM-format series with known latencies. Decisions must reach /scale, status and events; API faults and a
Prometheus outage must show up as conditions without wrong scaling; two replicas must never both write."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.request

from tests.e2e.conftest import Stack, wait_for
from workers.local.kube_emulator import CR
from workers.local.net import free_port, wait_http_ok


def run_once(stack: Stack, namespace: str, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run(stack.argv(namespace, "--once", "--json", "--identity", "once", *args),
                          capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, out, proc.stderr


def test_once_scales_writes_status_and_events(stack: Stack) -> None:
    m = stack.model("once", ttft_s=2.5, itl_s=0.03)  # TTFT p99 2.5 s against a 1 s target
    m.add_autoscaler("llama")
    stack.kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                        "metadata": {"name": "broken", "namespace": "once"},
                        "spec": {"prefill": {"minReplicas": 5, "maxReplicas": 2}}})
    stack.wait_for_data()

    rc, out, err = run_once(stack, "once")
    reports = {r["autoscaler"]: r for r in out["autoscalers"]}
    assert rc == 1, err  # one autoscaler is invalid; the other was served
    good, bad = reports["once/llama"], reports["once/broken"]
    assert not bad["valid"] and "spec.prefill.minReplicas" in bad["error"]

    dec = good["decision"]["prefill"]
    assert (dec["current_replicas"], dec["reason"]) == (2, "TTFTAboveTarget")
    assert dec["desired_replicas"] > 2
    assert good["observation"]["signals"]["ttft_s"] > 1.0
    assert good["applied"][0] == "prefill"
    assert m.replicas("prefill") == dec["desired_replicas"]  # reached /scale

    status = m.autoscaler("llama")["status"]
    assert status["prefill"]["desiredReplicas"] == dec["desired_replicas"]
    assert float(status["observed"]["ttftSeconds"]) > 1.0
    assert "lastScaleTime" in status and status["policyState"]
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds["AbleToScale"] == ("True", "SucceededRescale")
    assert conds["ScalingActive"] == ("True", "ValidMetricFound")
    assert conds["SLOMet"] == ("False", "TTFTAboveTarget")
    bad_conds = {c["type"]: c for c in m.autoscaler("broken")["status"]["conditions"]}
    assert bad_conds["AbleToScale"]["reason"] == "InvalidSpec"
    assert "spec.prefill.minReplicas" in bad_conds["AbleToScale"]["message"]

    events = {(e["involvedObject"]["name"], e["reason"]) for e in m.events()}
    assert ("llama", "SuccessfulRescale") in events and ("broken", "InvalidSpec") in events
    assert not (m.lease() or {}).get("holderIdentity")  # --once released the Lease on exit
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(rec.get("reason") == "TTFTAboveTarget" and rec.get("autoscaler") == "once/llama" for rec in logs)


def test_dry_run_and_advisory_write_no_replicas(stack: Stack) -> None:
    m = stack.model("dry", ttft_s=2.5, itl_s=0.03)
    m.add_autoscaler("llama")
    stack.wait_for_data()
    before = len(list(stack.kube.requests()))

    rc, out, err = run_once(stack, "dry", "--dry-run")
    assert rc == 0, err
    dec = out["autoscalers"][0]["decision"]["prefill"]
    assert dec["desired_replicas"] > dec["current_replicas"] == 2
    assert m.replicas("prefill") == 2
    assert "status" not in m.autoscaler("llama") and m.events() == [] and m.lease() is None
    writes = [r for r in list(stack.kube.requests())[before:] if r[0] in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes == []

    m.add_autoscaler("llama", mode="advisory")  # same object, advisory: status yes, replicas no
    rc, out, err = run_once(stack, "dry")
    assert rc == 0, err
    assert out["autoscalers"][0]["applied"] == []
    assert m.replicas("prefill") == 2
    able = m.condition("llama", "AbleToScale")
    assert able is not None and able["reason"] == "Advisory"
    assert m.autoscaler("llama")["status"]["prefill"]["desiredReplicas"] > 2


def test_faults_and_prometheus_outage_over_many_ticks(stack: Stack) -> None:
    m = stack.model("ticks", ttft_s=0.3, itl_s=0.03)  # within SLO: replicas stay at the minimum (2)
    m.add_autoscaler("llama")
    stack.wait_for_data()
    port = free_port()
    proc = m.run("--tick-s", "0.5", "--lease-duration-s", "3", "--metrics-port", str(port))
    try:
        wait_for(lambda: (m.condition("llama", "ScalingActive") or {}).get("status") == "True", 20,
                 "a first healthy tick")
        assert m.replicas("prefill") == 2
        # its own telemetry: probes and series
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            exposition = resp.read().decode()
        assert 'pdscale_desired_replicas{autoscaler="ticks/llama",pool="prefill"} 2.0' in exposition
        assert "pdscale_leader 1.0" in exposition

        # API server failing on /scale reads: a condition and an event say so, nothing is written
        # replicas are read from one LIST of Deployments per pass (no per-target GET): fail that LIST
        stack.kube.add_fault("GET", r"/namespaces/ticks/deployments$", status=500, times=10_000)
        cond = wait_for(lambda: (c := m.condition("llama", "AbleToScale")) and c["reason"] == "FailedGetScale" and c,
                        10, "AbleToScale=False FailedGetScale")
        assert cond["status"] == "False" and "HTTP 500" in cond["message"]
        assert any(e["reason"] == "FailedGetScale" for e in m.events())
        stack.kube.clear_faults()
        wait_for(lambda: (m.condition("llama", "AbleToScale") or {}).get("status") == "True", 10,
                 "AbleToScale=True once the API server recovers")

        # Prometheus dies while the latency goes bad: replicas hold and the condition says why
        conflict = stack.kube.add_fault("PATCH", r"/deployments/prefill/scale$", status=409, times=1)
        stack.prometheus.kill()
        m.set_latency(2.5, 0.03)
        cond = wait_for(lambda: (c := m.condition("llama", "ScalingActive")) and c["status"] == "False" and c,
                        10, "ScalingActive=False while Prometheus is down")
        assert cond["reason"] == "FailedGetMetrics" and "prometheus" in cond["message"].lower()
        time.sleep(1.5)  # several ticks without metrics
        assert (m.replicas("prefill"), m.replicas("decode")) == (2, 2)

        # Prometheus returns: scaling resumes, through one 409 Conflict that is retried
        stack.prometheus.start()
        wait_for(lambda: m.replicas("prefill") > 2, 30, "prefill scale-up after Prometheus returned")
        assert conflict.hits == 1
        # the same pass writes the status right after the scale (and its event): wait for it, do not race it
        wait_for(lambda: (m.condition("llama", "ScalingActive") or {}).get("status") == "True", 10,
                 "ScalingActive=True in the status written after the scale")
        assert any(e["reason"] == "SuccessfulRescale" for e in m.events())
    finally:
        rc = proc.stop(timeout_s=10)
    assert rc == 0, proc.tail()  # SIGTERM is a clean shutdown
    assert not (m.lease() or {}).get("holderIdentity")  # and it released the Lease


def test_two_replicas_one_leader_and_handover(stack: Stack) -> None:
    m = stack.model("ha", ttft_s=2.5, itl_s=0.03)
    m.add_autoscaler("llama")
    stack.wait_for_data()
    lease_s = 3.0
    args = ("--tick-s", "0.5", "--lease-duration-s", str(lease_s))
    a = m.run(*args, name="pdscale-a", identity="a")
    wait_for(lambda: (m.lease() or {}).get("holderIdentity") == "a", 20, "a to lead")
    b = m.run(*args, name="pdscale-b", identity="b")
    wait_for(lambda: m.replicas("prefill") == 6, 30, "prefill scaled to its max by the leader")
    time.sleep(1.0)  # b has been up and following for a while
    scaled_by = {e.get("reportingInstance") for e in m.events() if e["reason"] == "SuccessfulRescale"}
    assert scaled_by == {"a"}

    writes_before = sum(1 for meth, path in stack.kube.requests() if meth == "PATCH" and path.endswith("/scale"))
    a.kill()  # a crash: no release
    killed = time.monotonic()
    wait_for(lambda: (m.lease() or {}).get("holderIdentity") == "b", lease_s + 5, "b to take over")
    handover_s = time.monotonic() - killed
    assert handover_s <= lease_s + 2.0, handover_s
    assert (m.lease() or {})["leaseTransitions"] == 1

    time.sleep(1.5)  # b ticks several times on the state a left: nothing to redo
    writes_after = sum(1 for meth, path in stack.kube.requests() if meth == "PATCH" and path.endswith("/scale"))
    assert writes_after == writes_before
    history = [v["spec"]["replicas"] for v in stack.kube.history("apps/v1/deployments", "ha", "prefill")]
    assert all(x != y for x, y in itertools.pairwise(history)), history

    m.set_latency(0.3, 0.2)  # now ITL breaches: the new leader scales decode
    wait_for(lambda: m.replicas("decode") > 2, 30, "decode scale-up by the new leader")

    def decode_rescales() -> list[dict]:
        return [e for e in m.events() if e["reason"] == "SuccessfulRescale" and e["message"].startswith("decode:")]

    # the event is written right after the scale, in the same pass: wait for it, do not race it
    wait_for(decode_rescales, 10, "the decode scale-up's event")
    assert {e["reportingInstance"] for e in decode_rescales()} == {"b"}
    assert b.stop(timeout_s=10) == 0

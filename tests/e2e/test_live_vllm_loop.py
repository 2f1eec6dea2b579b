"""Real vLLM in the live loop: the pods are real vLLM servers on CPU (``.venv-vllm`` and the tiny local Llama from
``scripts/ensure-vllm.sh``), a prefill and a decode pool joined by the NixlConnector, behind ``pdscale proxy``, with
a real Prometheus and ``pdscale run``. Under load the controller scales the decode pool 1 -> 2; when the load
falls it scales back to 1 while requests still flow, and no request fails or comes back short.

Drain-safe scale-down with real vLLM needs what a cluster needs (reference/vllm-on-cpu.md: vLLM keeps /health at
200 while it drains and cuts streams on a bare SIGTERM): the pod is out of the proxy's endpoints as soon as it is
marked for deletion (the proxy reads ``deletionTimestamp``), a preStop sleep covers the propagation, vLLM runs with
``--shutdown-timeout`` and the grace period covers preStop + that timeout (``workers.local.cluster``, the same
settings as ``manifests/examples/vllm-pd``).

Budget: 3 vLLM servers at most on 2 cores (prefill on core 0, decode pods on core 1), ~2 GB each. Each Ready vLLM
pod is placed by the pod runner (``workers.local.cpu_placement``): vLLM's NIXL worker pins every model thread to
the machine's last core and NIXL's UCX progress thread busy-polls a core per server; without the placement the
decode pods' scrapes timed out and this test passed 1 run in 7.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import wait_for
from tests.helpers.real_vllm import real_vllm_cluster_spec
from workers.local.cluster import LocalCluster
from workers.local.load import LoadProcess, failures
from workers.local.prometheus import prometheus_binary

LENGTHS = "prompt=const(128),output=const(48)"


@pytest.fixture(scope="module")
def vllm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    prometheus_binary()
    spec = real_vllm_cluster_spec()
    cluster = LocalCluster(spec, tmp_path_factory.mktemp("vllm-live"))
    t0 = time.monotonic()
    cluster.start(wait_ready_s=420.0)
    print(f"\nstart (prefill and decode vLLM ready, controller up): {time.monotonic() - t0:.0f} s")
    try:
        yield cluster
    finally:
        cluster.stop()
        print(f"\nreal-vLLM live cluster logs: {cluster.workdir}")


def _load(c: LocalCluster, rate: float, requests: int, concurrency: int, seed: int) -> LoadProcess:
    """``requests`` Poisson arrivals at ``rate`` with at most ``concurrency`` in flight, from a process of its
    own (this one hosts the emulator and the pod runner, already short of CPU next to three vLLM servers)."""
    return LoadProcess(c.runner, c.workdir, url=c.proxy_url, model="tiny", seed=seed, max_requests=requests,
                       generator=f"poisson:rate={rate:g},duration={requests / rate:g},{LENGTHS}",
                       max_concurrency=concurrency, timeout_s=180.0)  # fmt: skip


@pytest.mark.timeout(720)
def test_real_vllm_decode_scales_1_to_2_and_back_without_losing_a_request(vllm_cluster: LocalCluster) -> None:
    c = vllm_cluster
    assert (c.replicas("prefill"), c.replicas("decode")) == (1, 1)
    records = []
    t_start = time.monotonic()
    # 1. saturate the decode server (6 requests in flight, 4 sequences per server) until the controller orders a
    #    second decode pod
    rounds = 0
    deadline = time.monotonic() + 120.0
    while c.replicas("decode") < 2 and time.monotonic() < deadline:
        records += _load(c, 20.0, 24, 6, seed=rounds).result(timeout_s=180)
        rounds += 1
    assert c.scale_writes("decode")[:2] == [1, 2], c.scale_writes("decode")
    t_ordered = time.monotonic()
    print(f"\nphase 1 (saturate until decode 1 -> 2 is ordered): {t_ordered - t_start:.0f} s")
    # 2. a light load (2 in flight) while the new vLLM server starts (nothing is scaled down while a pod is starting;
    #    the kubelet starts it at nice 0 beside the busy pods' nice 10), until it is ready, in the proxy's endpoints,
    #    and has served requests
    served_at: dict[str, float] | None = None
    deadline = time.monotonic() + 300.0
    while time.monotonic() < deadline:
        records += _load(c, 2.0, 8, 2, seed=rounds).result(timeout_s=180)
        rounds += 1
        if c.pool_state()["decode"].ready == 2 and c.proxy_ready().get("decode") == 2:
            if served_at is None:
                served_at = _decode_requests(c)
            elif len(served := _decode_requests(c)) == 2 and all(v > served_at.get(p, 0.0) for p, v in served.items()):
                break
    assert served_at is not None, "the second real vLLM decode pod never became ready"
    served = _decode_requests(c)
    assert len(served) == 2 and all(v > served_at.get(p, 0.0) for p, v in served.items()), (served_at, served)
    # 3. a trickle (0.5 req/s, one at a time) keeps requests in flight while the controller shrinks the pool back.
    #    The policy verifies a scale-down at the load raised by the recent swing (the on/off rounds above: x2): with
    #    the corrected latency model one decode pod holds 1.6 req/s but not 2 (128/48 tokens, x2 time scale), so a
    #    1 req/s trickle kept both pods; 0.5 req/s x2 x the online correction stays within one.
    t_served = time.monotonic()
    print(f"phase 2 (the new decode pod starts and serves): {t_served - t_ordered:.0f} s")
    trickle = _load(c, 0.5, 40, 1, seed=99)
    wait_for(lambda: c.replicas("decode") == 1, 120, "the controller to scale decode back to 1")
    wait_for(lambda: c.pool_state()["decode"].draining == 0, 90, "the removed vLLM pod to drain and exit")
    print(f"phase 3 (decode 2 -> 1 ordered and drained): {time.monotonic() - t_served:.0f} s")
    trickled = trickle.result(timeout_s=180)
    records += trickled
    print(f"phase 3 (the trickle ends): {time.monotonic() - t_served:.0f} s")
    writes = c.scale_writes("decode")
    assert failures(records) == []
    assert writes == [1, 2, 1], writes
    assert c.pods is not None
    stops = [e for e in c.pods.history if e.role == "decode" and e.event in ("prestop", "sigterm", "sigkill", "exited")]
    assert [e.event for e in stops] == ["prestop", "sigterm", "exited"], [(e.event, e.detail) for e in stops]
    # requests kept flowing through the scale-down: the trickle sent some after the removed pod's SIGTERM
    sent_wall_s = [trickle.started_s + r.sent_s for r in trickled]
    assert max(sent_wall_s) > stops[1].t_s, "the scale-down came after the trickle: no traffic flowed through it"
    assert stops[1].t_s - stops[0].t_s >= c.spec.pre_stop_s - 0.1  # out of the endpoints before SIGTERM
    assert stops[2].detail == "exit 0"
    placed = {e.pod: e.detail for e in c.pods.history if e.event == "placed"}
    print("CPU placement:", placed)
    started = {e.pod for e in c.pods.history if e.event == "started"}
    assert set(placed) == started, (placed, started)


def _decode_requests(c: LocalCluster) -> dict[str, float]:
    """Requests each decode pod finished, as Prometheus scraped them (vLLM's own counter)."""
    assert c.prometheus is not None
    rows = c.prometheus.query('sum by (pod) (vllm:request_success_total{namespace="vllm",role="decode"})')
    return {r["metric"]["pod"]: float(r["value"][1]) for r in rows}

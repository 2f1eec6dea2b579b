"""``pdscale proxy`` finding its upstreams: a watched endpoints file (what the live-loop pod runner writes) and
Kubernetes pods through the emulator, with real emulated workers behind the URLs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers.kube_discovery import emulated_pod
from tests.helpers.proxy_stack import outcome, start_proxy, wait_endpoints
from tests.helpers.workers import MODEL, WorkerHandle, scrape, start_worker
from workers.local.kube_emulator import KubeEmulator
from workers.local.processes import ProcessRunner


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerHandle]]:
    runner = ProcessRunner(tmp_path_factory.mktemp("discovery") / "logs")
    try:
        yield [start_worker(runner, role="aggregated", name=f"agg-{i}") for i in range(2)]
    finally:
        runner.stop_all()


def served(handle: WorkerHandle) -> float:
    return sum(v for (n, _), v in scrape(handle.url).items() if n == "vllm:request_success_total")


def ask(url: str) -> None:
    c = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=30.0)
    out = c.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=2, extra_body={"ignore_eos": True})
    assert out.usage is not None and out.usage.completion_tokens == 2


def write_atomic(path: Path, doc: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_endpoints_file_changes_move_the_traffic(
    workers: list[WorkerHandle], process_runner: ProcessRunner, tmp_path: Path
) -> None:
    w1, w2 = workers
    path = tmp_path / "endpoints.json"
    write_atomic(path, {"decode": [w1.url]})
    proxy = start_proxy(
        process_runner, extra_args=["--aggregated", "--endpoints-file", str(path)], wait=False
    )
    wait_endpoints(proxy, prefill=0, decode=1)
    before = served(w1), served(w2)
    for _ in range(3):
        ask(proxy.api_url)
    assert (served(w1) - before[0], served(w2) - before[1]) == (3, 0)
    write_atomic(path, {"decode": [w2.url]})
    wait_endpoints(proxy, prefill=0, decode=1)
    time.sleep(1.0)  # the file is polled every 0.5 s
    before = served(w1), served(w2)
    for _ in range(3):
        ask(proxy.api_url)
    assert (served(w1) - before[0], served(w2) - before[1]) == (0, 3)
    path.write_text("decode: [not-a-url")  # a broken file keeps the last good endpoints
    time.sleep(1.0)
    ask(proxy.api_url)
    assert "keeping the last endpoints" in proxy.proc.output()


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emu:
        yield emu


def test_kubernetes_pods_by_label(
    workers: list[WorkerHandle], kube: KubeEmulator, process_runner: ProcessRunner, tmp_path: Path
) -> None:
    w1, w2 = workers
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", "serving")
    kube.put("v1/pods", emulated_pod("serving", "m-0", {"app": "m", "role": "decode"}, w1.port))
    kube.put("v1/pods", emulated_pod("serving", "x-0", {"app": "x", "role": "decode"}, w2.port))
    proxy = start_proxy(process_runner, wait=False, extra_args=[
        "--aggregated", "--kubeconfig", str(kubeconfig), "--k8s-namespace", "serving",
        "--k8s-decode-selector", "app=m,role=decode",
    ])  # fmt: skip
    wait_endpoints(proxy, prefill=0, decode=1)
    before = served(w1), served(w2)
    ask(proxy.api_url)
    assert (served(w1) - before[0], served(w2) - before[1]) == (1, 0)
    kube.put("v1/pods", emulated_pod("serving", "m-0", {"app": "m", "role": "decode"}, w1.port, ready=False))
    wait_endpoints(proxy, prefill=0, decode=0)
    with pytest.raises(openai.APIStatusError) as info:
        ask(proxy.api_url)
    assert info.value.status_code == 503
    assert outcome(proxy.url, "no_upstream") == 1

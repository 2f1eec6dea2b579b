"""vLLM's own P/D router (PyPI `vllm-router`, --vllm-pd-disaggregation) in front of emulated prefill and decode
workers, driven by the `openai` client: the two-step NixlConnector protocol works end to end, usage and token
counts are right, and each worker's metrics say what a real P/D pair's would (vllm-metrics.md §6)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.helpers.workers import MODEL, WorkerHandle, sample, scrape, start_worker
from workers.local.net import LOOPBACK, free_port, wait_http_ok
from workers.local.processes import ProcessRunner

PROMPT_TOKENS = 300


@dataclass
class Stack:
    prefill: WorkerHandle
    decode: WorkerHandle
    router_url: str


def router_binary() -> str:
    found = shutil.which("vllm-router") or str(Path(sys.executable).with_name("vllm-router"))
    if not Path(found).exists():
        pytest.fail("vllm-router is not installed: it is in the project's `test` extra (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    runner = ProcessRunner(tmp_path_factory.mktemp("vllm-router"))
    try:
        prefill = start_worker(runner, role="prefill", extra_args=["--max-model-len", "4096"])
        decode = start_worker(runner, role="decode", extra_args=["--max-model-len", "4096"])
        port = free_port()
        proc = runner.start([
            router_binary(), "--host", LOOPBACK, "--port", str(port), "--vllm-pd-disaggregation",
            "--prefill", prefill.url, "--decode", decode.url, "--worker-startup-check-interval", "1",
            "--prometheus-port", str(free_port()), "--log-level", "warning",
        ], name="vllm-router")
        url = f"http://{LOOPBACK}:{port}"
        wait_http_ok(f"{url}/health", 60, alive=lambda: proc.running)
        yield Stack(prefill, decode, url)
    finally:
        runner.stop_all()
        print(runner.report(15))


def test_openai_client_through_vllm_router(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.router_url}/v1", api_key="unused", timeout=30, max_retries=0)
    before_p, before_d = scrape(stack.prefill.url), scrape(stack.decode.url)

    out = client.completions.create(model=MODEL, prompt=[5] * PROMPT_TOKENS, max_tokens=20)
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.completion_tokens) == (PROMPT_TOKENS, 20)
    assert out.choices[0].finish_reason == "length"

    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "w " * 100}], max_tokens=15, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks[1:] if c.choices]) == 15
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 15
    chat_prompt = chunks[-1].usage.prompt_tokens
    assert chat_prompt == 100 + 5 + 5

    time.sleep(0.2)
    after_p, after_d = scrape(stack.prefill.url), scrape(stack.decode.url)

    def delta(after: dict, before: dict, name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    prompts = PROMPT_TOKENS + chat_prompt
    # prefill worker: the whole prompt computed locally, one token per request, every request ends "length"
    assert delta(after_p, before_p, "vllm:request_success_total", finished_reason="length") == 2
    assert delta(after_p, before_p, "vllm:generation_tokens_total") == 2
    assert delta(after_p, before_p, "vllm:prompt_tokens_by_source_total", source="local_compute") == prompts
    assert delta(after_p, before_p, "vllm:inter_token_latency_seconds_count") == 0
    # decode worker: the whole prompt's KV came from the prefill worker (as vLLM 0.32 counts it), output made here
    assert delta(after_d, before_d, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer") == prompts
    assert delta(after_d, before_d, "vllm:prompt_tokens_by_source_total", source="local_compute") == 0
    assert delta(after_d, before_d, "vllm:nixl_xfer_time_seconds_count") == 2
    assert delta(after_p, before_p, "vllm:nixl_xfer_time_seconds_count") == 0
    assert delta(after_d, before_d, "vllm:generation_tokens_total") == 35
    assert delta(after_d, before_d, "vllm:inter_token_latency_seconds_count") == 19 + 14
    assert delta(after_d, before_d, "vllm:request_success_total", finished_reason="length") == 2
    for snap in (after_p, after_d):
        assert sample(snap, "vllm:num_requests_running") == 0
        assert sample(snap, "vllm:num_requests_waiting") == 0


def test_kv_both_worker_serves_either_leg(process_runner: ProcessRunner) -> None:
    """kv_role kv_both (llm-d's default): the proxy's two legs, by hand, against ONE worker."""
    both = start_worker(process_runner, role="both", extra_args=["--max-model-len", "4096"])
    client = openai.OpenAI(base_url=both.api_url, api_key="unused", timeout=30, max_retries=0)
    prefill_leg = client.completions.create(model=MODEL, prompt=[9] * 64, max_tokens=1, extra_body={
        "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                               "remote_block_ids": None, "remote_host": None, "remote_port": None}})
    params = (prefill_leg.model_extra or {})["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and params["remote_num_tokens"] == 64
    decode_leg = client.completions.create(model=MODEL, prompt=[9] * 64, max_tokens=6,
                                           extra_body={"kv_transfer_params": params})
    assert decode_leg.usage is not None and decode_leg.usage.completion_tokens == 6
    assert (decode_leg.model_extra or {})["kv_transfer_params"] is None
    snap = scrape(both.url)
    assert sample(snap, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer") == 64
    assert sample(snap, "vllm:prompt_tokens_by_source_total", source="local_compute") == 64

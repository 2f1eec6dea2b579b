"""`pdscale worker` over HTTP with the `openai` client: completions and chat, streaming and not, usage, errors,
metric count identities, a client that leaves mid-stream. One aggregated worker for the module."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from tests.helpers.workers import MODEL, WorkerHandle, sample, scrape, start_worker
from workers.local.processes import ProcessRunner
from workers.tokens import count_text_tokens

MAX_MODEL_LEN = 2048


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    runner = ProcessRunner(tmp_path_factory.mktemp("worker-http"))
    try:
        yield start_worker(runner, extra_args=["--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "16"])
    finally:
        runner.stop_all()
        for p in runner.processes:
            print(p.tail())


@pytest.fixture(scope="module")
def client(worker: WorkerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=worker.api_url, api_key="unused", timeout=30.0, max_retries=0)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def post_raw(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_service_endpoints(worker: WorkerHandle) -> None:
    status, _, body = get(f"{worker.url}/v1/models")
    card = json.loads(body)["data"][0]
    assert status == 200 and card["id"] == MODEL and card["owned_by"] == "vllm"
    assert card["max_model_len"] == MAX_MODEL_LEN and card["root"] and card["parent"] is None
    assert get(f"{worker.url}/health")[:1] == (200,)
    assert get(f"{worker.url}/ping")[:1] == (200,)
    assert json.loads(get(f"{worker.url}/version")[2]) == {"version": "0.32.0"}
    status, content_type, text = get(f"{worker.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain") and "vllm:num_requests_running" in text
    assert get(f"{worker.url}/v1/nothing")[0] == 404


def test_completion_token_ids_exact_usage(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt=list(range(100, 237)), max_tokens=9)
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (137, 9, 146)
    assert out.choices[0].finish_reason == "length"
    assert count_text_tokens(out.choices[0].text) == 9
    assert out.id.startswith("cmpl-") and out.object == "text_completion"


def test_completion_text_prompt_follows_the_documented_rule(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt="word " * 50, max_tokens=2)
    assert out.usage is not None and out.usage.prompt_tokens == 50


def test_without_max_tokens_the_context_is_filled(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt=[7] * (MAX_MODEL_LEN - 5))
    assert out.usage is not None and out.usage.completion_tokens == 5


def test_streamed_completion_with_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(model=MODEL, prompt=[1] * 40, max_tokens=12, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    token_chunks = [c for c in chunks if c.choices]
    assert len(token_chunks) == 12
    assert [c.choices[0].finish_reason for c in token_chunks] == [None] * 11 + ["length"]
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (40, 12)
    assert all(c.usage is None for c in token_chunks)
    assert count_text_tokens("".join(c.choices[0].text for c in token_chunks)) == 12


def test_streamed_chat_starts_with_the_role_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "say three words"}], max_completion_tokens=7,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    content = [c for c in chunks[1:] if c.choices]
    assert len(content) == 7 and content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert chunks[-1].usage.prompt_tokens == 3 + 5 + 5  # content + template + generation prompt
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_chat_not_streamed(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert out.choices[0].message.role == "assistant" and out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 4
    assert count_text_tokens(out.choices[0].message.content or "") == 4


def test_errors_reach_the_client_in_vllm_shape(client: openai.OpenAI, worker: WorkerHandle) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.completions.create(model="other", prompt="hi", max_tokens=1)
    assert nf.value.body["type"] == "NotFoundError"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as neg:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=-3)
    assert neg.value.body["param"] == "max_tokens"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model=MODEL, prompt=[1] * (MAX_MODEL_LEN + 1), max_tokens=1)
    assert "maximum context length" in long.value.body["message"]  # type: ignore[index]
    status, body = post_raw(f"{worker.api_url}/completions", b'{"model": "tiny", "prompt": ')
    assert status == 400 and body["error"]["type"] == "Bad Request" and body["error"]["code"] == 400
    # the worker is still fine afterwards
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=1).usage is not None


def test_count_identities_like_vllms_own_test(client: openai.OpenAI, worker: WorkerHandle) -> None:
    """10 requests x max_tokens 10: TTFT +10, ITL +90, 100 generation tokens, 10 successes (vLLM test_metrics)."""
    before = scrape(worker.url)
    for _ in range(10):
        client.completions.create(model=MODEL, prompt=[3] * 25, max_tokens=10)
    after = scrape(worker.url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("vllm:time_to_first_token_seconds_count") == 10
    assert delta("vllm:inter_token_latency_seconds_count") == 90
    assert delta("vllm:request_time_per_output_token_seconds_count") == 10
    assert delta("vllm:e2e_request_latency_seconds_count") == 10
    assert delta("vllm:generation_tokens_total") == 100
    assert delta("vllm:prompt_tokens_total") == 250
    assert delta("vllm:prompt_tokens_by_source_total", source="local_compute") == 250
    assert delta("vllm:request_success_total", finished_reason="length") == 10
    assert delta("vllm:request_generation_tokens_sum") == 100
    assert delta("vllm:iteration_tokens_total_sum") == 250 + 100
    assert sample(after, "vllm:num_requests_running") == 0


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not-streaming"])
def test_client_leaving_mid_request_frees_the_slot_and_counts_an_abort(worker: WorkerHandle, stream: bool) -> None:
    before = scrape(worker.url)
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    body = json.dumps({"model": MODEL, "prompt": [1] * 10, "max_tokens": 1500, "stream": stream})
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    if stream:
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read(6) == b"data: "  # streaming has begun (chunked decoding by http.client)
    else:
        deadline = time.monotonic() + 10
        while sample(scrape(worker.url), "vllm:num_requests_running") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the request is running
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(worker.url)
        aborted = sample(after, "vllm:request_success_total", finished_reason="abort") - sample(
            before, "vllm:request_success_total", finished_reason="abort")
        if aborted == 1 and sample(after, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert aborted == 1, "the abandoned request was not counted as abort"
    assert sample(after, "vllm:num_requests_running") == 0
    assert sample(after, "vllm:kv_cache_usage_perc") == 0

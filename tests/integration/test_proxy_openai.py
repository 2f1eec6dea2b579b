"""The `openai` client through ``pdscale proxy`` in front of emulated prefill and decode workers: vLLM's two-step
P/D flow end to end (streaming and not, completions and chat, the usage chunk), what each worker saw of it, bad
requests, the aggregated mode, and the proxy's exposition."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from autoscaler.core.buckets import ITL_BUCKETS_S, REQUEST_LATENCY_BUCKETS_S, TTFT_BUCKETS_S
from tests.helpers.proxy_stack import ProxyHandle, proxy_samples, sample, start_proxy
from tests.helpers.workers import MODEL, WorkerHandle, scrape, start_worker
from workers.local.processes import ProcessRunner

PROMPT = list(range(100, 400))  # 300 token ids: an exact prompt length whatever the tokenizer


@dataclass
class Stack:
    prefill: WorkerHandle
    decode: WorkerHandle
    proxy: ProxyHandle
    agg: WorkerHandle
    agg_proxy: ProxyHandle


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    runner = ProcessRunner(tmp_path_factory.mktemp("pd-stack") / "logs")
    try:
        prefill = start_worker(runner, role="prefill", extra_args=["--max-model-len", "4096"])
        decode = start_worker(runner, role="decode", extra_args=["--max-model-len", "4096"])
        agg = start_worker(runner, role="aggregated", extra_args=["--max-model-len", "4096"])
        proxy = start_proxy(runner, prefill=[prefill.url], decode=[decode.url])
        agg_proxy = start_proxy(runner, decode=[agg.url], extra_args=["--aggregated"], name="agg-proxy")
        yield Stack(prefill, decode, proxy, agg, agg_proxy)
    except BaseException:
        print(runner.report())
        raise
    finally:
        runner.stop_all()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=30.0)


def worker_total(handle: WorkerHandle, name: str, **labels: str) -> float:
    """Sum of a worker's samples named ``name`` whose labels include ``labels``."""
    return sum(v for (n, lab), v in scrape(handle.url).items() if n == name and set(labels.items()) <= lab)


def test_streaming_completion_goes_prefill_then_decode(stack: Stack) -> None:
    before_p = worker_total(stack.prefill, "vllm:generation_tokens_total")
    before_pp = worker_total(stack.prefill, "vllm:prompt_tokens_total")
    before_kv = worker_total(
        stack.decode, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer"
    )
    before_d = worker_total(stack.decode, "vllm:generation_tokens_total")
    before_px = proxy_samples(stack.proxy.url)
    before_ttft = sample(before_px, "pdscale_proxy_time_to_first_token_seconds_count", model_name=MODEL)
    stream = client(stack.proxy.api_url).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=20, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = list(stream)
    tokens = [c for c in chunks if c.choices]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(tokens) == 20
    assert tokens[-1].choices[0].finish_reason == "length"
    assert len(usage) == 1 and not chunks[-1].choices
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (300, 20)
    # the prefill worker ran the whole prompt and sampled one token; the decode worker pulled the KV
    assert worker_total(stack.prefill, "vllm:generation_tokens_total") - before_p == 1
    assert worker_total(stack.prefill, "vllm:prompt_tokens_total") - before_pp == 300
    assert (
        worker_total(stack.decode, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
        > before_kv
    )
    assert worker_total(stack.decode, "vllm:generation_tokens_total") - before_d == 20
    after = proxy_samples(stack.proxy.url)
    assert (
        sample(after, "pdscale_proxy_time_to_first_token_seconds_count", model_name=MODEL) == before_ttft + 1
    )
    # counted on arrival: the request and its 300 prompt tokens (the demand the controller reads)
    for name, more in (("pdscale_proxy_arrived_requests_total", 1), ("pdscale_proxy_arrived_prompt_tokens_total", 300)):
        assert sample(after, name, model_name=MODEL) - sample(before_px, name, model_name=MODEL) == more, name


def test_non_streaming_answer_is_one_body_and_still_timed(stack: Stack) -> None:
    before = proxy_samples(stack.proxy.url)
    answer = client(stack.proxy.api_url).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, extra_body={"ignore_eos": True}
    )
    assert answer.object == "text_completion"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        300,
        12,
    )
    assert len(answer.choices[0].text.split()) == 12 and answer.choices[0].finish_reason == "length"
    after = proxy_samples(stack.proxy.url)
    for name, more in (
        ("pdscale_proxy_time_to_first_token_seconds_count", 1),
        ("pdscale_proxy_inter_token_latency_seconds_count", 11),
        ("pdscale_proxy_e2e_request_latency_seconds_count", 1),
        ("pdscale_proxy_generation_tokens_total", 12),
    ):
        assert sample(after, name, model_name=MODEL) - sample(before, name, model_name=MODEL) == more, name


def test_chat_streaming_and_not(stack: Stack) -> None:
    c = client(stack.proxy.api_url)
    messages = [{"role": "user", "content": "one two three four five"}]
    chunks = list(c.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=6, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(content.split()) == 6
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    answer = c.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=4,
                                       extra_body={"ignore_eos": True})  # fmt: skip
    assert answer.object == "chat.completion"
    assert (
        answer.choices[0].message.role == "assistant"
        and len((answer.choices[0].message.content or "").split()) == 4
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 4


def test_bad_requests_come_back_in_vllms_shape_and_count_as_4xx(stack: Stack) -> None:
    before = sample(
        proxy_samples(stack.proxy.url), "pdscale_proxy_requests_total", model_name=MODEL, outcome="4xx"
    )
    before_unknown = sample(proxy_samples(stack.proxy.url), "pdscale_proxy_requests_total", model_name="unknown",
                            outcome="4xx")  # fmt: skip
    with pytest.raises(openai.BadRequestError) as info:
        client(stack.proxy.api_url).completions.create(model=MODEL, prompt=list(range(5000)), max_tokens=5)
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict) and "message" in body and body.get("code") == 400
    request = urllib.request.Request(f"{stack.proxy.api_url}/completions", data=b"{not json",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=10)
    assert raw.value.code == 400
    assert json.loads(raw.value.read())["error"]["type"] == "BadRequestError"
    after = proxy_samples(stack.proxy.url)
    assert sample(after, "pdscale_proxy_requests_total", model_name=MODEL, outcome="4xx") == before + 1
    assert (
        sample(after, "pdscale_proxy_requests_total", model_name="unknown", outcome="4xx")
        == before_unknown + 1
    )


def test_aggregated_mode_has_no_prefill_leg(stack: Stack) -> None:
    before = worker_total(stack.agg, "vllm:request_success_total")
    out = client(stack.agg_proxy.api_url).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, extra_body={"ignore_eos": True}
    )
    assert out.usage is not None and out.usage.completion_tokens == 8
    assert worker_total(stack.agg, "vllm:request_success_total") - before == 1  # one request, not two
    assert worker_total(stack.agg, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer") == 0


def test_models_and_health(stack: Stack) -> None:
    models = client(stack.proxy.api_url).models.list()
    assert [m.id for m in models.data] == [MODEL]
    with urllib.request.urlopen(f"{stack.proxy.url}/health", timeout=5) as resp:
        assert resp.status == 200


def test_exposition_has_vllms_buckets_and_every_outcome(stack: Stack) -> None:
    text = urllib.request.urlopen(f"{stack.proxy.url}/metrics", timeout=5).read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, edges in (
        ("pdscale_proxy_time_to_first_token_seconds", TTFT_BUCKETS_S),
        ("pdscale_proxy_inter_token_latency_seconds", ITL_BUCKETS_S),
        ("pdscale_proxy_e2e_request_latency_seconds", REQUEST_LATENCY_BUCKETS_S),
    ):
        fam = families[name]
        assert fam.type == "histogram"
        les = sorted({float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")})
        assert les == [*edges, float("inf")], name
        assert {s.labels["model_name"] for s in fam.samples} == {MODEL}
    outcomes = {s.labels["outcome"] for s in families["pdscale_proxy_requests"].samples
                if s.labels.get("model_name") == MODEL and s.name.endswith("_total")}  # fmt: skip
    assert outcomes == {"ok", "4xx", "5xx", "client_abort", "no_upstream"}
    for gauge in ("pdscale_proxy_requests_in_flight", "pdscale_proxy_requests_pending"):
        assert families[gauge].type == "gauge"

"""Emulated workers against real vLLM 0.32 on CPU, side by side: same requests, same answers' shapes.

A real NixlConnector prefill/decode pair (tiny random-weight Llama from scripts/ensure-vllm.sh, launched by
``pdscale worker --engine vllm --pd-pair``) and an emulated prefill/decode pair with the same served name and
limits, started once for the module. Plain requests go to the two decode instances (a decode instance computes a
prompt that arrives without KV itself). Compared: endpoints, non-streaming bodies, streaming chunk sequences
(object, fields, finish_reason, usage chunk), error bodies (status, type, param, message), the /metrics schema of
every ``vllm:`` family on both roles, metric count identities after the same requests, and the P/D hand-off
(the prefill leg's kv_transfer_params, the decode leg, what each side counts). Values that are the model's
(text, ids, timestamps, latencies) are not compared; their JSON shape is.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.real_vllm import RealVLLM, start_real_vllm
from tests.helpers.workers import MODEL, json_shape, sample, scrape, start_worker
from workers.local.processes import ProcessRunner

MAX_MODEL_LEN = 512
# The module's first test carries the real servers' start-up (tests/helpers/real_vllm.py START_TIMEOUT_S).
pytestmark = pytest.mark.timeout(600)


@dataclass
class Servers:
    """URLs of the two pairs; plain requests go to the decode instances."""

    real_prefill_url: str
    real_url: str  # decode
    emu_prefill_url: str
    emu_url: str  # decode


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("real-vllm")
    runner = ProcessRunner(base / "logs")
    real: RealVLLM | None = None
    limits = ["--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "8", "--block-size", "32"]
    try:
        emu_prefill = start_worker(runner, role="prefill", extra_args=limits)
        emu_decode = start_worker(runner, role="decode", extra_args=limits)
        real = start_real_vllm(runner, base / "vllm", max_model_len=MAX_MODEL_LEN, pd_pair=True)
        yield Servers(real.url, real.decode_url, emu_prefill.url, emu_decode.url)
    finally:
        if real is not None:
            real.stop()
        runner.stop_all()


def call(base: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, str, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def sse_events(body: bytes) -> list[Any]:
    events = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def both(pair: Servers, path: str, body: Any = None, raw: bytes | None = None) -> tuple[Any, Any]:
    return call(pair.real_url, path, body, raw), call(pair.emu_url, path, body, raw)


@pytest.mark.parametrize("path", ["/v1/models", "/version", "/health", "/ping"])
def test_service_endpoints(pair: Servers, path: str) -> None:
    (rs, rct, rb), (es, ect, eb) = both(pair, path)
    assert (es, ect.split(";")[0]) == (rs, rct.split(";")[0])
    if rb:
        assert json_shape(json.loads(eb)) == json_shape(json.loads(rb))
    else:
        assert eb == rb


COMPLETION = {"model": MODEL, "prompt": list(range(10, 60)), "max_tokens": 6, "ignore_eos": True}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5,
        "ignore_eos": True}


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", COMPLETION),
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 3, "max_tokens": None}),
], ids=["completion", "chat", "chat-max_completion_tokens"])
def test_non_streaming_bodies(pair: Servers, path: str, body: dict) -> None:
    (rs, _, rb), (es, _, eb) = both(pair, path, body)
    real, emu = json.loads(rb), json.loads(eb)
    assert (es, json_shape(emu)) == (rs, json_shape(real))
    assert emu["usage"]["completion_tokens"] == real["usage"]["completion_tokens"]
    assert emu["choices"][0]["finish_reason"] == real["choices"][0]["finish_reason"]
    if "prompt" in body:  # token ids: both count exactly
        assert emu["usage"]["prompt_tokens"] == real["usage"]["prompt_tokens"]


STREAMS = {
    "completion": ("/v1/completions", {**COMPLETION, "stream": True}),
    "completion-usage": ("/v1/completions", {**COMPLETION, "stream": True, "stream_options": {"include_usage": True}}),
    "completion-continuous-usage": ("/v1/completions", {**COMPLETION, "stream": True, "stream_options": {
        "include_usage": True, "continuous_usage_stats": True}}),
    "chat": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "chat-usage": ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
}


def runs(items: list[Any]) -> list[Any]:
    """Consecutive repeats collapsed: a loaded vLLM may bundle two tokens into one chunk (vllm-on-cpu.md)."""
    out: list[Any] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


@pytest.mark.parametrize("name", list(STREAMS))
def test_streaming_chunks(pair: Servers, name: str) -> None:
    path, body = STREAMS[name]
    (rs, rct, rb), (es, ect, eb) = both(pair, path, body)
    assert (es, ect) == (rs, rct)
    real, emu = sse_events(rb), sse_events(eb)
    assert runs([json_shape(e) for e in emu]) == runs([json_shape(e) for e in real])
    assert real[-1] == emu[-1] == "[DONE]"
    finish = runs([[c.get("finish_reason") for c in e["choices"]] for e in real[:-1]])
    assert runs([[c.get("finish_reason") for c in e["choices"]] for e in emu[:-1]]) == finish
    assert {e["object"] for e in emu[:-1]} == {e["object"] for e in real[:-1]}
    if "prompt" in body and "usage" in real[-2]:  # the totals (token-id prompts: both count exactly)
        assert emu[-2]["usage"] == real[-2]["usage"]
    token_chunks = [e for e in emu[:-1] if e["choices"] and e["choices"][0].get("delta", {}).get("role") is None]
    assert len(token_chunks) == body["max_tokens"]  # the emulator sends one chunk per token


BAD = {
    "unknown model": ("/v1/completions", {"model": "nope", "prompt": "hi", "max_tokens": 3}, None),
    "malformed json": ("/v1/completions", None, b"{not json"),
    "not an object": ("/v1/completions", None, b"[1, 2]"),
    "negative max_tokens": ("/v1/completions", {"model": MODEL, "prompt": [5, 6], "max_tokens": -1}, None),
    "zero max_tokens": ("/v1/completions", {"model": MODEL, "prompt": [5, 6], "max_tokens": 0}, None),
    "prompt over the context": ("/v1/completions", {"model": MODEL, "prompt": [5] * 600, "max_tokens": 3}, None),
    "prompt fills the context": ("/v1/completions", {"model": MODEL, "prompt": [5] * MAX_MODEL_LEN}, None),
    "max_tokens over max_model_len": ("/v1/completions", {"model": MODEL, "prompt": [5] * 10, "max_tokens": 600},
                                      None),
    "no prompt": ("/v1/completions", {"model": MODEL, "max_tokens": 3}, None),
    "no messages": ("/v1/chat/completions", {"model": MODEL, "max_tokens": 3}, None),
    "empty messages": ("/v1/chat/completions", {"model": MODEL, "messages": []}, None),
    "min_tokens over max": ("/v1/completions", {"model": MODEL, "prompt": [5], "max_tokens": 2, "min_tokens": 5},
                            None),
    "stream_options without stream": ("/v1/completions", {"model": MODEL, "prompt": [5], "max_tokens": 2,
                                                           "stream_options": {"include_usage": True}}, None),
    "max_tokens not an int": ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": "x"}, None),
    "unknown path": ("/v1/nothing", {"model": MODEL}, None),
}
# Messages that come from pydantic's validation of vLLM's request models: same status, type and param, and the
# same first line; the rest lists pydantic's union branches, which the emulator does not reproduce.
PYDANTIC = {"malformed json", "not an object", "no messages", "max_tokens not an int"}


@pytest.mark.parametrize("name", list(BAD))
def test_error_bodies(pair: Servers, name: str) -> None:
    path, body, raw = BAD[name]
    (rs, _, rb), (es, _, eb) = both(pair, path, body, raw)
    real, emu = json.loads(rb), json.loads(eb)
    assert es == rs
    assert json_shape(emu) == json_shape(real)
    if "error" in real:
        for key in ("type", "code") + (() if name in PYDANTIC else ("param",)):
            assert emu["error"][key] == real["error"][key], key
        if name in PYDANTIC:
            assert emu["error"]["message"].splitlines()[0] == real["error"]["message"].splitlines()[0]
        else:
            assert emu["error"]["message"] == real["error"]["message"]
    else:
        assert emu == real


def metric_schema(url: str) -> dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("vllm:"):
            continue
        labels = sorted({k for s in fam.samples for k in s.labels if k != "le"})
        edges = [s.labels["le"] for s in fam.samples if s.name.endswith("_bucket")]
        out[fam.name] = (fam.type, fam.documentation, tuple(labels), tuple(dict.fromkeys(edges)))
    return out


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_metrics_schema(pair: Servers, role: str) -> None:
    if role == "prefill":
        real, emu = metric_schema(pair.real_prefill_url), metric_schema(pair.emu_prefill_url)
    else:
        real, emu = metric_schema(pair.real_url), metric_schema(pair.emu_url)
    assert sorted(set(real) - set(emu)) == [], "vLLM families the emulator lacks"
    assert sorted(set(emu) - set(real)) == [], "families the emulator invents"
    diffs = [f"{n}: vllm {real[n]} != emulator {emu[n]}" for n in sorted(real) if real[n] != emu[n]]
    assert not diffs, "\n".join(diffs)


def test_metric_count_identities_match(pair: Servers) -> None:
    """The same 5 requests (40 prompt tokens, 8 outputs) move the same counters by the same amounts."""
    body = {"model": MODEL, "prompt": list(range(40)), "max_tokens": 8, "ignore_eos": True}
    keys = [("vllm:time_to_first_token_seconds_count", {}), ("vllm:inter_token_latency_seconds_count", {}),
            ("vllm:request_time_per_output_token_seconds_count", {}), ("vllm:e2e_request_latency_seconds_count", {}),
            ("vllm:request_queue_time_seconds_count", {}), ("vllm:generation_tokens_total", {}),
            ("vllm:prompt_tokens_total", {}), ("vllm:request_prompt_tokens_sum", {}),
            ("vllm:request_generation_tokens_sum", {}), ("vllm:request_params_max_tokens_sum", {}),
            ("vllm:iteration_tokens_total_sum", {}),
            ("vllm:request_success_total", {"finished_reason": "length"}),
            ("vllm:prompt_tokens_by_source_total", {"source": "local_compute"})]
    deltas = {}
    for label, url in (("real", pair.real_url), ("emu", pair.emu_url)):
        before = scrape(url)
        for _ in range(5):
            status, _, _ = call(url, "/v1/completions", body)
            assert status == 200
        time.sleep(0.5)  # vLLM's API server records stats just after the response
        after = scrape(url)
        deltas[label] = {name: sample(after, name, **lb) - sample(before, name, **lb) for name, lb in keys}
    assert deltas["emu"] == deltas["real"]


PD_PROMPT = list(range(100, 180))  # 80 tokens: three 32-token blocks
PREFILL_LEG = {"model": MODEL, "prompt": PD_PROMPT, "max_tokens": 1, "stream": False, "kv_transfer_params": {
    "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None, "remote_block_ids": None,
    "remote_host": None, "remote_port": None}}
PD_COUNTERS = [
    ("vllm:prompt_tokens_total", {}), ("vllm:generation_tokens_total", {}),
    ("vllm:prompt_tokens_by_source_total", {"source": "local_compute"}),
    ("vllm:prompt_tokens_by_source_total", {"source": "external_kv_transfer"}),
    ("vllm:external_prefix_cache_queries_total", {}), ("vllm:external_prefix_cache_hits_total", {}),
    ("vllm:prompt_tokens_cached_by_source_total", {"source": "p2p"}),
    ("vllm:time_to_first_token_seconds_count", {}), ("vllm:inter_token_latency_seconds_count", {}),
    ("vllm:request_success_total", {"finished_reason": "length"}), ("vllm:nixl_xfer_time_seconds_count", {}),
    ("vllm:nixl_num_descriptors_count", {}), ("vllm:request_prefill_kv_computed_tokens_sum", {}),
]


def test_pd_hand_off(pair: Servers) -> None:
    """Both legs of the NixlConnector protocol against each pair: same bodies' shapes, same counters moved."""
    results = {}
    for label, prefill, decode in (("real", pair.real_prefill_url, pair.real_url),
                                   ("emu", pair.emu_prefill_url, pair.emu_url)):
        before = (scrape(prefill), scrape(decode))
        status, _, body = call(prefill, "/v1/completions", PREFILL_LEG)
        assert status == 200, body
        first = json.loads(body)
        decode_leg = {"model": MODEL, "prompt": PD_PROMPT, "max_tokens": 6, "ignore_eos": True,
                      "kv_transfer_params": first["kv_transfer_params"]}
        status, _, body = call(decode, "/v1/completions", decode_leg)
        assert status == 200, body
        second = json.loads(body)
        time.sleep(0.5)
        after = (scrape(prefill), scrape(decode))
        deltas = [{f"{name}{lb or ''}": sample(a, name, **lb) - sample(b, name, **lb) for name, lb in PD_COUNTERS}
                  for a, b in zip(after, before, strict=True)]
        results[label] = (first, second, deltas)
    (rf, rs, rd), (ef, es, ed) = results["real"], results["emu"]
    assert json_shape(ef) == json_shape(rf) and json_shape(es) == json_shape(rs)
    assert ef["kv_transfer_params"]["remote_num_tokens"] == rf["kv_transfer_params"]["remote_num_tokens"] == 80
    assert len(ef["kv_transfer_params"]["remote_block_ids"][0]) == len(rf["kv_transfer_params"]["remote_block_ids"][0])
    assert (es["usage"], ef["usage"]) == (rs["usage"], rf["usage"])
    assert ed == rd, f"prefill/decode counter deltas: emulated {ed} != real {rd}"

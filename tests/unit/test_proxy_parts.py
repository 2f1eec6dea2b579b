"""The proxy's pure parts: endpoint pools and picking, endpoint documents and the watched file, SSE splitting,
token events and folding a stream into a non-streaming body, the prefill leg's body."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from workers.endpoints import (
    DECODE,
    DOWN,
    DRAINING,
    PREFILL,
    READY,
    EndpointError,
    EndpointPool,
    EndpointsFileWatcher,
    max_output_tokens_of,
    normalize_url,
    parse_endpoints_document,
    prompt_tokens_of,
)
from workers.proxy import prefill_body
from workers.proxy_stream import StreamFolder, foldable, is_token_event, sse_events


def _pool(*urls: str) -> EndpointPool:
    pool = EndpointPool(DECODE)
    pool.update({u: True for u in urls})
    for ep in pool:
        ep.health = READY
    return pool


def test_pick_prefers_least_outstanding_tokens_then_fewer_requests_then_url() -> None:
    pool = _pool("http://b:1", "http://a:1", "http://c:1")
    first = pool.pick(100)
    assert first is not None and first.endpoint.url == "http://a:1"  # all empty: the earliest URL
    second = pool.pick(10)
    assert second is not None and second.endpoint.url == "http://b:1"
    third = pool.pick(50)
    assert third is not None and third.endpoint.url == "http://c:1"
    fourth = pool.pick(1)  # b has 10, c 50, a 100
    assert fourth is not None and fourth.endpoint.url == "http://b:1"
    first.release()
    assert pool.get("http://a:1").outstanding_tokens == 0  # type: ignore[union-attr]
    assert pool.pick(1).endpoint.url == "http://a:1"  # type: ignore[union-attr]


def test_lease_consume_and_release_keep_the_account_exact() -> None:
    pool = _pool("http://a:1")
    lease = pool.pick(10)
    assert lease is not None
    lease.consume(3)
    ep = lease.endpoint
    assert (ep.outstanding_tokens, ep.in_flight) == (7, 1)
    lease.consume(100)  # never below what was charged
    assert ep.outstanding_tokens == 0
    lease.release()
    lease.release()  # idempotent
    assert (ep.outstanding_tokens, ep.in_flight) == (0, 0)


@pytest.mark.parametrize("health", [DRAINING, DOWN, "unknown"])
def test_only_ready_endpoints_take_requests(health: str) -> None:
    pool = _pool("http://a:1", "http://b:1")
    pool.get("http://a:1").health = health  # type: ignore[union-attr]
    picks = {pool.pick(1).endpoint.url for _ in range(5)}  # type: ignore[union-attr]
    assert picks == {"http://b:1"}
    pool.get("http://b:1").health = health  # type: ignore[union-attr]
    assert pool.pick(1) is None


def test_pick_excludes_endpoints_already_tried() -> None:
    pool = _pool("http://a:1", "http://b:1")
    assert pool.pick(1, exclude=["http://a:1"]).endpoint.url == "http://b:1"  # type: ignore[union-attr]
    assert pool.pick(1, exclude=["http://a:1", "http://b:1"]) is None


def test_source_not_ready_blocks_and_unlisted_endpoints_finish_their_requests() -> None:
    pool = _pool("http://a:1", "http://b:1")
    lease = pool.pick(5)
    assert lease is not None and lease.endpoint.url == "http://a:1"
    pool.update({"http://b:1": False})  # a leaves the source, b is listed but not ready
    assert pool.get("http://a:1") is not None  # a still has a request in flight
    assert pool.pick(1) is None
    lease.release()
    pool.forget_unlisted()
    assert pool.get("http://a:1") is None
    counts = pool.counts()
    assert counts["unready"] == 1 and counts[READY] == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.0.5:8000/", "http://10.0.0.5:8000"),
        (" https://h:1 ", "https://h:1"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "bad", ["10.0.0.5:8000", "http://", "ftp://h:1", "http://h:99999", "http://h:1/v1", ""]
)
def test_normalize_url_rejects_with_the_source_named(bad: str) -> None:
    with pytest.raises(EndpointError, match="--decode"):
        normalize_url(bad, "--decode")


def test_endpoints_document_shapes_and_errors() -> None:
    snap = parse_endpoints_document(
        {"prefill": ["http://p:1"], "decode": [{"url": "http://d:1", "ready": False}, "http://d:2"]}, "f"
    )
    assert snap == {PREFILL: {"http://p:1": True}, DECODE: {"http://d:1": False, "http://d:2": True}}
    assert parse_endpoints_document({"aggregated": ["http://a:1"]}, "f")[DECODE] == {"http://a:1": True}
    with pytest.raises(EndpointError, match=r"f: unknown key\(s\) decoder"):
        parse_endpoints_document({"decoder": []}, "f")
    with pytest.raises(EndpointError, match=r"f\.decode\[1\]"):
        parse_endpoints_document({"decode": ["http://d:1", "d:2"]}, "f")
    with pytest.raises(EndpointError, match=r"f\.prefill: expected a list"):
        parse_endpoints_document({"prefill": "http://p:1"}, "f")
    with pytest.raises(EndpointError, match=r"ready: expected true or false"):
        parse_endpoints_document({"decode": [{"url": "http://d:1", "ready": "yes"}]}, "f")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_file_watcher_reads_changes_and_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    watcher = EndpointsFileWatcher(path)
    assert watcher.poll() is None and "no such endpoints file" in (watcher.last_error or "")
    _write_atomic(path, json.dumps({"prefill": ["http://p:1"], "decode": ["http://d:1"]}))
    first = watcher.poll()
    assert first is not None and first[DECODE] == {"http://d:1": True}
    assert watcher.poll() is None  # unchanged
    time.sleep(0.01)
    _write_atomic(path, "decode: [http://d:1, http://d:2]\nprefill: []\n")  # YAML works too
    second = watcher.poll()
    assert second is not None and set(second[DECODE]) == {"http://d:1", "http://d:2"}
    _write_atomic(path, '{"decode": ["not a url"]}')
    assert watcher.poll() is None
    assert "decode[0]" in (watcher.last_error or "")
    assert watcher.snapshot == second  # the bad file did not empty the pool


def test_request_sizes() -> None:
    assert prompt_tokens_of({"prompt": [1, 2, 3]}) == 3
    assert prompt_tokens_of({"prompt": [[1, 2], [3]]}) == 3
    assert prompt_tokens_of({"prompt": "one two three, four"}) == 5  # the emulated worker's rule
    assert prompt_tokens_of({"prompt": ["a b", [1, 2, 3]]}) == 5
    assert prompt_tokens_of({"messages": [{"role": "user", "content": "a b c"}]}) == 3 + 5 + 5
    assert prompt_tokens_of({"prompt": ""}) == 1 and prompt_tokens_of({}) == 1
    assert max_output_tokens_of({"max_tokens": 7}) == 7
    assert max_output_tokens_of({"max_completion_tokens": 9, "max_tokens": 7}) == 9
    assert max_output_tokens_of({}, default=5) == 5


def test_prefill_body_is_vllms_two_step_first_leg() -> None:
    body = {"model": "m", "prompt": [1, 2], "max_tokens": 50, "max_completion_tokens": 50, "stream": True,
            "stream_options": {"include_usage": True}, "min_tokens": 10, "ignore_eos": True}  # fmt: skip
    out = prefill_body(body)
    assert out["stream"] is False and out["max_tokens"] == 1 and out["max_completion_tokens"] == 1
    assert "stream_options" not in out and "min_tokens" not in out
    assert out["ignore_eos"] is True and out["prompt"] == [1, 2]
    assert out["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False,
                                         "remote_engine_id": None, "remote_block_ids": None,
                                         "remote_host": None, "remote_port": None}  # fmt: skip
    assert body["max_tokens"] == 50 and "kv_transfer_params" not in body  # the client's body is untouched


async def _chunks(*pieces: bytes):  # type: ignore[no-untyped-def]
    for p in pieces:
        await asyncio.sleep(0)
        yield p


async def test_sse_events_split_across_pieces_and_a_cut_event_is_dropped() -> None:
    stream = _chunks(b'data: {"a":', b" 1}\n\ndata: [DO", b"NE]\r\n\r\n: comment\n\n", b'data: {"half')
    events = [e async for e in sse_events(stream)]
    assert [e.data for e in events] == ['{"a": 1}', "[DONE]", None]
    assert events[0].raw == b'data: {"a": 1}'


def test_token_events() -> None:
    assert is_token_event({"choices": [{"index": 0, "text": " w0", "finish_reason": None}]})
    assert not is_token_event({"choices": [], "usage": {"completion_tokens": 3}})
    assert not is_token_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    assert is_token_event({"choices": [{"index": 0, "delta": {"content": " w1"}}]})


@pytest.mark.parametrize("chat", [False, True])
def test_fold_rebuilds_the_non_streaming_body(chat: bool) -> None:
    folder = StreamFolder(chat=chat)

    def choice(text: str, finish: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {"index": 0, "finish_reason": finish, "stop_reason": None}
        if chat:
            body["delta"] = {"content": text}
        else:
            body["text"] = text
        return body

    for i, piece in enumerate([" w0", " w1", " w2"]):
        folder.add(
            {
                "id": "cmpl-1",
                "created": 5,
                "model": "m",
                "choices": [choice(piece, "length" if i == 2 else None)],
            }
        )
    folder.add({"id": "cmpl-1", "created": 5, "model": "m", "choices": [],
                "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}})  # fmt: skip
    body = folder.body()
    assert body["object"] == ("chat.completion" if chat else "text_completion")
    only = body["choices"][0]
    assert (only["message"]["content"] if chat else only["text"]) == " w0 w1 w2"
    assert only["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3 and body["id"] == "cmpl-1"


def test_foldable() -> None:
    assert foldable({"prompt": "x"})
    assert foldable({"messages": [], "logprobs": False})
    assert not foldable({"prompt": "x", "logprobs": 2})
    assert not foldable({"messages": [], "tools": [{"type": "function"}]})

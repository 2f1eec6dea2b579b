"""Graceful drain of `pdscale worker` on SIGTERM: /health 503 at once, new requests 503, every accepted request
completes, exit 0; past --drain-timeout-s the rest are cut with an SSE error and the exit status is 1."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import aiohttp
import openai

from tests.helpers.workers import MODEL, start_worker
from workers.local.processes import ProcessRunner

CONCURRENT = 24
MAX_TOKENS = 150


def status_of(url: str, body: dict | None = None) -> tuple[int, dict | None]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


async def test_sigterm_under_load_loses_no_accepted_request(process_runner: ProcessRunner) -> None:
    w = start_worker(process_runner, extra_args=["--drain-timeout-s", "60", "--max-num-seqs", "8"])
    client = openai.AsyncOpenAI(base_url=w.api_url, api_key="unused", timeout=60.0, max_retries=0)
    started = asyncio.Event()
    first_tokens = 0

    async def one(i: int) -> int:
        nonlocal first_tokens
        stream = await client.completions.create(
            model=MODEL, prompt=[i] * 50, max_tokens=MAX_TOKENS, stream=True, stream_options={"include_usage": True}
        )
        tokens, usage_tokens = 0, None
        async for chunk in stream:
            if chunk.choices:
                tokens += 1
                if tokens == 1:
                    first_tokens += 1
                    if first_tokens == 8:
                        started.set()
            elif chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
        assert usage_tokens == tokens
        return tokens

    tasks = [asyncio.create_task(one(i)) for i in range(CONCURRENT)]
    await asyncio.wait_for(started.wait(), timeout=30)  # 8 running, 16 queued: all accepted
    await asyncio.sleep(0.2)  # let every request reach the worker
    w.proc.popen.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    await asyncio.sleep(0.1)
    health, _ = await asyncio.to_thread(status_of, f"{w.url}/health")
    new_status, new_body = await asyncio.to_thread(
        status_of, f"{w.api_url}/completions", {"model": MODEL, "prompt": "late", "max_tokens": 2})
    assert health == 503
    assert new_status == 503 and new_body is not None
    assert new_body["error"]["type"] == "ServiceUnavailableError" and new_body["error"]["code"] == 503
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert results == [MAX_TOKENS] * CONCURRENT, "an accepted request lost tokens during the drain"
    rc = await asyncio.to_thread(w.proc.wait, 30)
    assert rc == 0, w.proc.tail()
    assert time.monotonic() - t0 < 60


async def test_drain_timeout_cuts_with_an_error_and_exits_1(process_runner: ProcessRunner) -> None:
    w = start_worker(process_runner, extra_args=["--drain-timeout-s", "0.5"])
    events: list[str] = []
    async with aiohttp.ClientSession() as session, session.post(f"{w.api_url}/completions", json={
        "model": MODEL, "prompt": [1] * 10, "max_tokens": 100000 // 100, "stream": True}) as resp:
        assert resp.status == 200
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        w.proc.popen.send_signal(signal.SIGTERM)
        async for line in resp.content:
            if line.startswith(b"data: "):
                events.append(line[6:].strip().decode())
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == 503 and "drain timeout" in error["message"]
    rc = await asyncio.to_thread(w.proc.wait, 30)
    assert rc == 1, w.proc.tail()

"""``pdscale proxy`` when things go wrong: no upstream, an upstream that dies before or during a stream, a worker
that starts draining, a client that hangs up, and the proxy's own drain. Every failure is counted by outcome."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import openai
import pytest

from tests.helpers.proxy_stack import ProxyHandle, outcome, proxy_samples, sample, start_proxy, wait_endpoints
from tests.helpers.workers import MODEL, WorkerHandle, scrape, start_worker
from workers.local.net import LOOPBACK, free_port
from workers.local.processes import ProcessRunner

PROMPT = list(range(100, 300))
LONG = 600  # output tokens of a request that must still be streaming a moment later (>= 2 s at 8B/H100 speed)


@pytest.fixture(scope="module")
def prefill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    """One prefill worker for the module: the failures below are on the decode side and at the proxy."""
    runner = ProcessRunner(tmp_path_factory.mktemp("failures") / "logs")
    try:
        yield start_worker(runner, role="prefill")
    finally:
        runner.stop_all()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=30.0)


def post(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    """POST JSON and read the whole answer (any status)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def stream_body(max_tokens: int) -> dict[str, object]:
    return {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}


def worker_requests(handle: WorkerHandle, reason: str | None = None) -> float:
    return sum(
        v
        for (n, lab), v in scrape(handle.url).items()
        if n == "vllm:request_success_total" and (reason is None or ("finished_reason", reason) in lab)
    )


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def streaming_through_a_new_decode(
    runner: ProcessRunner, prefill: WorkerHandle
) -> tuple[WorkerHandle, ProxyHandle, Streamer]:
    """A fresh decode worker behind a fresh proxy, with a LONG streaming request started through them."""
    decode = start_worker(runner, role="decode")
    proxy = start_proxy(runner, prefill=[prefill.url], decode=[decode.url])
    reader = Streamer(proxy.url, LONG)
    reader.start()
    return decode, proxy, reader


class Streamer(threading.Thread):
    """Reads one streaming request in the background; ``raw`` is every byte received."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.raw = b""
        self.status: int | None = None
        self.first_byte = threading.Event()

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/v1/completions", json.dumps(stream_body(self.max_tokens)),
                     {"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        self.status = resp.status
        while chunk := resp.read1(65536):
            self.raw += chunk
            self.first_byte.set()
        conn.close()

    def events(self) -> list[str]:
        return [e.removeprefix("data: ") for e in self.raw.decode().split("\n\n") if e.startswith("data: ")]


def test_no_upstream_is_503_with_retry_after(process_runner: ProcessRunner) -> None:
    dead = [f"http://{LOOPBACK}:{free_port()}", f"http://{LOOPBACK}:{free_port()}"]
    proxy = start_proxy(process_runner, prefill=dead[:1], decode=dead[1:], wait=False)
    wait_endpoints(proxy, prefill=0, decode=0)
    status, headers, body = post(f"{proxy.api_url}/completions", stream_body(5))
    assert status == 503 and headers.get("Retry-After") == "1"
    assert "no prefill upstream" in json.loads(body)["error"]["message"]
    wait_for(
        lambda: sample(proxy_samples(proxy.url), "pdscale_proxy_endpoints", role="decode", state="down") == 1
    )
    assert outcome(proxy.url, "no_upstream", model="unknown") == 1


def test_upstream_death_mid_stream_ends_with_an_sse_error(
    process_runner: ProcessRunner, prefill: WorkerHandle
) -> None:
    decode, proxy, reader = streaming_through_a_new_decode(process_runner, prefill)
    assert reader.first_byte.wait(20), "no first byte"
    decode.proc.kill()
    reader.join(30)
    assert reader.status == 200
    events = reader.events()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == 502
    assert "mid-stream" in error["message"] or "before [DONE]" in error["message"]
    assert 0 < len(events) - 2 < LONG  # some tokens, not all of them
    wait_for(lambda: outcome(proxy.url, "5xx") == 1, what="5xx counted")
    s = proxy_samples(proxy.url)
    assert sample(s, "pdscale_proxy_requests_total", model_name=MODEL, outcome="ok") == 0
    assert sample(s, "pdscale_proxy_e2e_request_latency_seconds_count", model_name=MODEL) == 1


def test_dead_upstream_is_retried_elsewhere_before_the_first_byte(
    process_runner: ProcessRunner, prefill: WorkerHandle
) -> None:
    d1 = start_worker(process_runner, role="decode")
    d2 = start_worker(process_runner, role="decode")
    # health probes far apart: only a failed request can tell the proxy that an upstream is gone
    proxy = start_proxy(process_runner, prefill=[prefill.url], decode=[d1.url, d2.url],
                        extra_args=["--health-interval-s", "60"])  # fmt: skip
    first = min(d1, d2, key=lambda w: w.url)  # an idle pool's first pick: the earliest URL
    first.proc.kill()
    c = client(proxy.api_url)
    for _ in range(4):
        out = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, extra_body={"ignore_eos": True})
        assert out.usage is not None and out.usage.completion_tokens == 5
    s = proxy_samples(proxy.url)
    assert sample(s, "pdscale_proxy_requests_total", model_name=MODEL, outcome="ok") == 4
    assert sample(s, "pdscale_proxy_retries_total", role="decode") == 1  # then it is known to be down
    assert sample(s, "pdscale_proxy_upstream_errors_total", role="decode", reason="connect") == 1
    assert sample(s, "pdscale_proxy_endpoints", role="decode", state="down") == 1


def test_a_draining_worker_gets_nothing_new(process_runner: ProcessRunner, prefill: WorkerHandle) -> None:
    d1 = start_worker(process_runner, role="decode", extra_args=["--drain-timeout-s", "30"])
    d2 = start_worker(process_runner, role="decode")
    proxy = start_proxy(process_runner, prefill=[prefill.url], decode=[d1.url, d2.url],
                        extra_args=["--health-interval-s", "60"])  # fmt: skip
    busy = min(d1, d2, key=lambda w: w.url)  # an idle pool's first pick: the earliest URL
    other = d2 if busy is d1 else d1
    first = Streamer(proxy.url, LONG)  # -> busy
    first.start()
    assert first.first_byte.wait(20)
    second = Streamer(proxy.url, LONG)  # -> other (busy has more outstanding tokens)
    second.start()
    assert second.first_byte.wait(20)
    assert (_running(busy), _running(other)) == (1, 1)
    # busy has streamed more of its answer: it has fewer outstanding tokens and is the next pick
    busy.proc.popen.send_signal(signal.SIGTERM)  # starts draining: 503 on /health and on new requests
    wait_for(lambda: _health(busy.url) == 503, what="worker draining")
    c = client(proxy.api_url)
    for _ in range(3):
        out = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, extra_body={"ignore_eos": True})
        assert out.usage is not None and out.usage.completion_tokens == 3
    for reader in (first, second):
        reader.join(30)
        assert reader.events()[-1] == "[DONE]" and len(reader.events()) == LONG + 1  # in-flight ones finished
    assert worker_requests(other) == 4  # its own long one and the three new ones
    assert busy.proc.wait(30) == 0  # drained: only its long request, then gone
    s = proxy_samples(proxy.url)
    assert sample(s, "pdscale_proxy_upstream_errors_total", role="decode", reason="draining") == 1
    assert sample(s, "pdscale_proxy_retries_total", role="decode") == 1  # the one request that met the 503
    assert sample(s, "pdscale_proxy_requests_total", model_name=MODEL, outcome="ok") == 5


def _running(handle: WorkerHandle) -> float:
    return sum(v for (n, _), v in scrape(handle.url).items() if n == "vllm:num_requests_running")


def _health(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_client_abort_frees_the_worker_and_is_counted(
    process_runner: ProcessRunner, prefill: WorkerHandle
) -> None:
    decode = start_worker(process_runner, role="decode", extra_args=[])
    proxy = start_proxy(process_runner, prefill=[prefill.url], decode=[decode.url])
    conn = http.client.HTTPConnection(LOOPBACK, proxy.port, timeout=30)
    conn.request(
        "POST", "/v1/completions", json.dumps(stream_body(LONG)), {"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(100)
    conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]  # hang up mid-stream
    resp.close()
    conn.close()
    wait_for(lambda: outcome(proxy.url, "client_abort") == 1, what="client_abort counted")
    wait_for(lambda: worker_requests(decode, "abort") == 1, what="the decode worker's abort")
    s = proxy_samples(proxy.url)
    assert sample(s, "pdscale_proxy_requests_in_flight", model_name=MODEL) == 0
    assert sample(s, "pdscale_proxy_requests_pending", model_name=MODEL) == 0


def test_proxy_drain_finishes_in_flight_refuses_new_and_exits_0(
    process_runner: ProcessRunner, prefill: WorkerHandle
) -> None:
    _, proxy, reader = streaming_through_a_new_decode(process_runner, prefill)
    assert reader.first_byte.wait(20)
    proxy.proc.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: _health(proxy.url) == 503, what="proxy readiness failing")
    status, headers, _ = post(f"{proxy.api_url}/completions", stream_body(3))
    assert status == 503 and headers.get("Retry-After") == "1"
    reader.join(30)
    events = reader.events()
    assert events[-1] == "[DONE]" and len(events) == LONG + 1  # every token, then [DONE]
    assert proxy.proc.wait(30) == 0

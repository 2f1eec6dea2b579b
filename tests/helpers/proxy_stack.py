"""Start ``pdscale proxy`` processes for tests and wait until they see their upstreams.

``start_proxy(runner, prefill=[url...], decode=[url...], extra_args=...)`` launches the proxy on a free loopback
port through the ProcessRunner (teardown always stops it) and waits until ``/metrics`` reports the expected
number of ready endpoints per role. ``proxy_samples(url)`` reads its exposition."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.helpers.workers import ServerHandle, scrape
from workers.local.net import LOOPBACK, free_port
from workers.local.processes import ProcessRunner


@dataclass
class ProxyHandle(ServerHandle):
    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"


def proxy_samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``url``/metrics keyed by (sample name, labels)."""
    return scrape(url)


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0.0 when absent: a counter not yet created has counted nothing)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def outcome(url: str, outcome_name: str, model: str = "tiny") -> float:
    return sample(proxy_samples(url), "pdscale_proxy_requests_total", model_name=model, outcome=outcome_name)


def wait_endpoints(handle: ProxyHandle, *, prefill: int, decode: int, timeout_s: float = 20.0) -> None:
    """Wait until the proxy reports exactly this many ready endpoints per role (fails fast if it died)."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        if not handle.proc.running:
            raise RuntimeError(f"proxy exited (rc {handle.proc.returncode}):\n{handle.proc.tail()}")
        try:
            s = proxy_samples(handle.url)
            ready = (
                sample(s, "pdscale_proxy_endpoints", role="prefill", state="ready"),
                sample(s, "pdscale_proxy_endpoints", role="decode", state="ready"),
            )
            if ready == (prefill, decode):
                return
            last = f"ready prefill/decode = {ready}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(
        f"proxy {handle.url}: wanted {prefill}/{decode} ready endpoints, {last}:\n{handle.proc.tail()}"
    )


def start_proxy(
    runner: ProcessRunner,
    *,
    prefill: Sequence[str] = (),
    decode: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    name: str = "proxy",
    wait: bool = True,
) -> ProxyHandle:
    port = free_port()
    argv = [sys.executable, "-m", "autoscaler.cli", "proxy", "--host", LOOPBACK, "--port", str(port),
            "--health-interval-s", "0.2"]  # fmt: skip
    for url in prefill:
        argv += ["--prefill", url]
    for url in decode:
        argv += ["--decode", url]
    handle = ProxyHandle(runner.start([*argv, *extra_args], name=name), port)
    if wait:
        wait_endpoints(handle, prefill=len(prefill), decode=len(decode))
    return handle

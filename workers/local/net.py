"""Loopback port allocation for servers started by tests."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

LOOPBACK = "127.0.0.1"


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST_PORT = 10000  # below this, ports that well-known services bind
_handed_out: set[int] = set()  # ports this process gave a server that may not have bound them yet


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports and bind-to-0 (Linux's default if unreadable)."""
    try:
        low, high = (int(x) for x in Path(EPHEMERAL_RANGE_FILE).read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _unclaimed(port: int) -> bool:
    """Not handed out by this process, and bindable on 127.0.0.1 a moment ago."""
    if port in _handed_out:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen BELOW the kernel's ephemeral range.

    A port the OS picks with bind-to-0 lies in the ephemeral range, which every outgoing connection (a Prometheus
    scrape, a health probe) and every other bind-to-0 (vLLM's own ZMQ and torch sockets) draws from too: a server
    that binds its port seconds later (a vLLM pod loads for 20-60 s) can find it taken ("Address already in use",
    seen on a NIXL side channel). Below that range only explicit binds compete; the choice is random and checked, and
    a port is not handed out twice by one process. Falls back to bind-to-0 when no port there is free."""
    import random

    low, _ = ephemeral_port_range()
    if low - LOWEST_PORT >= 1000:
        for _ in range(200):
            port = random.randrange(LOWEST_PORT, low)
            if _unclaimed(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port P with P + 1 free too, both handed out (a launcher that puts a second server on the next port, as
    ``pdscale worker --engine vllm --pd-pair`` does). Same range and checks as ``free_port``."""
    for _ in range(200):
        port = free_port()
        if port + 1 <= 65535 and _unclaimed(port + 1):
            _handed_out.add(port + 1)
            return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def wait_http_ok(
    url: str,
    timeout_s: float,
    *,
    interval_s: float = 0.1,
    alive: object = None,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Poll ``url`` until it answers 2xx; raise TimeoutError (with the last error) after ``timeout_s``.

    ``alive`` may be a callable returning False once the server process has died, to fail fast. ``context`` and
    ``headers`` are for servers behind TLS or auth.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"server exited before {url} answered (last error: {last_error})")
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(request, timeout=2.0, context=context) as resp:
                if 200 <= resp.status < 300:
                    return
                last_error = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = repr(exc)
        time.sleep(interval_s)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s (last error: {last_error})")

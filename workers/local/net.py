"""Loopback port allocation for servers started by tests."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; a tiny race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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

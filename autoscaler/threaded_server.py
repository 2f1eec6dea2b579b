"""An aiohttp application served on its own event loop in a daemon thread, so synchronous code (the controller's
loop, the metrics adapter's refresher) runs beside it without an event loop of its own. Used by the controller's
telemetry (``/metrics``, probes) and by the External Metrics API server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from ssl import SSLContext
from typing import Any, Self

from aiohttp import web


class ThreadedServer:
    """``make_app()`` on ``host:port`` (``port=0``: a free port, read ``port`` after ``start``), TLS with
    ``ssl_context``, plus an optional ``background`` coroutine run on the same loop until ``stop``."""

    def __init__(
        self,
        make_app: Callable[[], web.Application],
        *,
        host: str,
        port: int,
        name: str,
        ssl_context: SSLContext | None = None,
        background: Callable[[], Coroutine[Any, Any, None]] | None = None,
        runner_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.make_app = make_app
        self.host = host
        self.port = port
        self.name = name
        self.ssl_context = ssl_context
        self.background = background
        self.runner_args = dict(runner_args or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> Self:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                runner = web.AppRunner(self.make_app(), access_log=None, **self.runner_args)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
                loop.run_until_complete(site.start())
                if runner.addresses:  # the bound address tells the port chosen for port=0
                    self.port = int(runner.addresses[0][1])
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            task = loop.create_task(self.background()) if self.background is not None else None
            started.set()
            loop.run_forever()
            if task is not None:
                task.cancel()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise RuntimeError(f"{self.name} server on {self.host}:{self.port} did not start in {timeout_s} s")
        if failure:
            raise RuntimeError(f"{self.name} server on {self.host}:{self.port}: {failure[0]}") from failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10.0)
        self._thread = None

"""A prometheus_client registry served over HTTP on a free loopback port, as a scrape target for tests."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from workers.local.net import LOOPBACK


class MetricsExporter:
    """prometheus_client's own HTTP server for ``registry``; the OS picks the port (no race)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(0, addr=LOOPBACK, registry=registry)
        self.port = int(self._server.server_address[1])
        self.target = f"{LOOPBACK}:{self.port}"
        self.url = f"http://{self.target}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

"""Start emulated workers (``pdscale worker``) and read their /metrics, for tests.

``start_worker(runner, role=..., extra_args=...)`` launches ``python -m autoscaler.cli worker`` on a free loopback
port through the ProcessRunner (so teardown always stops it) and waits until /v1/models names the model.
``scrape(url)`` returns {(name, frozenset(labels.items())): value} for every sample of the exposition.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from workers.local.net import LOOPBACK, free_port
from workers.local.processes import ManagedProcess, ProcessRunner

MODEL = "tiny"


@dataclass
class ServerHandle:
    """A server process started on a loopback port, and its URLs."""

    proc: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"


@dataclass
class WorkerHandle(ServerHandle):
    role: str


def worker_argv(port: int, role: str, extra_args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "autoscaler.cli", "worker",
        "--host", LOOPBACK, "--port", str(port),
        "--served-model-name", MODEL,
        "--role", role,
        *extra_args,
    ]


def wait_models(url: str, proc: ManagedProcess, timeout_s: float = 30.0) -> None:
    """Wait until ``url``/v1/models lists MODEL (fails fast, with the log, if the process died)."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        if not proc.running:
            raise RuntimeError(f"worker exited (rc {proc.returncode}) before serving:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2.0) as resp:
                ids = [m["id"] for m in json.load(resp)["data"]]
                if MODEL in ids:
                    return
                last = f"models {ids}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"worker at {url} not serving after {timeout_s} s ({last}):\n{proc.tail()}")


def start_worker(
    runner: ProcessRunner, *, role: str = "aggregated", extra_args: Sequence[str] = (), name: str | None = None
) -> WorkerHandle:
    port = free_port()
    proc = runner.start(worker_argv(port, role, extra_args), name=name or f"worker-{role}")
    handle = WorkerHandle(proc, port, role)
    wait_models(handle.url, proc)
    return handle


def json_shape(value: Any) -> Any:
    """A JSON value's structure without its values: keys in order, element shapes, scalar type names."""
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_shape(v) for v in value]
    return "null" if value is None else type(value).__name__


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``url``/metrics keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5.0) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value; ``labels`` must match a subset of the sample's labels, and exactly one sample."""
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    if len(hits) != 1:
        raise KeyError(f"{name}{labels}: {len(hits)} samples match")
    return hits[0]

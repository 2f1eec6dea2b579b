"""What the client sees: host overheads around the engine, and closed-loop (N concurrent users) workloads.

The engine (``sim.engine``) simulates the vLLM engine's steps. Two things happen outside it, on the host:

* ``HostOverheads`` (BLIS's α terms, ``autoscaler.core.latency``): a request reaches the engine's queue
  α0 + α1·prompt after the client sent it (the engine applies this), and the client sees every token α2 later per
  token than the engine emitted it (first token + α2, each gap + α2; never on the engine clock): ``run_open`` adds
  that to the records.
* A closed loop (``ClosedLoopSpec``: ``vllm bench serve --max-concurrency N``): request j leaves when the
  (j − N)-th earliest client-side completion happens (plus think time). ``run_closed_loop`` runs it in one engine
  run: the engine schedules each send at the completion that frees its client (``ClosedLoopArrivals``, events of
  ``sim.events``), so the run is causal by construction and fast mode equals the per-step reference as for any
  workload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from sim.engine import ClosedLoopArrivals, Engine, EngineConfig
from sim.workload import ClosedLoopSpec, Workload

EngineFactory = Callable[[Workload], Engine]


class ClosedLoopError(RuntimeError):
    """A request never finished (no pod could take it)."""


@dataclass(frozen=True)
class ClientRun:
    """Per-request client-side times (seconds, request order) and the engine run behind them."""

    name: str
    arrival_s: np.ndarray  # client send time
    first_token_s: np.ndarray  # client-visible first token
    last_token_s: np.ndarray  # client-visible last token
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    engine: Engine

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return self.last_token_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """(last − first) / (output − 1) per request; NaN for one-token outputs (as vLLM's benchmark drops them)."""
        gaps = np.maximum(self.output_tokens - 1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gaps > 0, (self.last_token_s - self.first_token_s) / gaps, np.nan)


def run_open(workload: Workload, make_engine: EngineFactory) -> ClientRun:
    """Replay an open-loop workload (send times fixed) through a fresh engine; client view with its profile's
    host overheads (the engine itself delays dispatch by α0 + α1·prompt; α2 is added here per token)."""
    return _client_view(make_engine(workload), workload)


def _client_view(engine: Engine, workload: Workload) -> ClientRun:
    engine.finish()
    rec = engine.records()
    if not rec.finished.all():
        missing = int(np.flatnonzero(~rec.finished)[0])
        raise ClosedLoopError(f"workload {workload.name!r}: request {missing} never finished")
    host = engine.profile.host
    output = np.asarray(workload.output_tokens, dtype=np.int64)
    return ClientRun(
        workload.name, np.asarray(workload.arrival_s, dtype=np.float64),
        rec.first_token_s + host.output_token_s,  # α2 on the first token ...
        rec.last_token_s + host.output_token_s * output,  # ... and on every gap after it (BLIS)
        np.asarray(workload.prompt_tokens, dtype=np.int64), output, engine,
    )  # fmt: skip


def run_closed_loop(
    spec: ClosedLoopSpec, config: EngineConfig, initial_prefill: int = 0, initial_decode: int = 1
) -> ClientRun:
    """Run ``spec`` through one engine (``config``, the given pods) as a closed loop; the client view."""
    workload = Workload(
        spec.name, np.zeros(spec.requests), np.asarray(spec.prompt_tokens, dtype=np.int64),
        np.asarray(spec.output_tokens, dtype=np.int64),
    )  # fmt: skip
    engine = Engine(
        workload, config, initial_prefill, initial_decode,
        closed_loop=ClosedLoopArrivals(spec.users, spec.think_s),
    )  # fmt: skip
    run = _client_view(engine, workload)
    return replace(run, arrival_s=engine.records().arrival_s)  # the send times the loop chose

"""What the client sees: host overheads around the engine, and closed-loop (N concurrent users) workloads.

The engine (``sim.engine``) simulates the vLLM engine's steps. Two things happen outside it, on the host:

* ``HostOverheads`` (BLIS's α terms, ``autoscaler.core.latency``): a request reaches the engine's queue
  α0 + α1·prompt after the client sent it (the engine applies this), and the client sees every token α2 later per
  token than the engine emitted it (first token + α2, each gap + α2; never on the engine clock): ``run_open`` adds
  that to the records.
* A closed loop (``ClosedLoopSpec``: ``vllm bench serve --max-concurrency N``): request j leaves when the
  (j − N)-th earliest client-side completion happens. Send times depend on completions, which depend on send
  times; ``run_closed_loop`` solves that exactly by fixed-point iteration over whole engine runs: simulate with the
  current send times, recompute send times from the completions, repeat until they no longer change. The system
  is causal (a send time depends only on earlier completions), so the fixed point is the closed-loop run itself;
  the number of iterations is bounded by the number of "rounds" (requests / users) plus a few.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from sim.engine import Engine
from sim.workload import ClosedLoopSpec, Workload

EngineFactory = Callable[[Workload], Engine]


class ClosedLoopError(RuntimeError):
    """The closed-loop fixed point was not reached (or a request never finished)."""


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
    iterations: int = 1

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
    engine = make_engine(workload)
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


def run_closed_loop(spec: ClosedLoopSpec, make_engine: EngineFactory, max_iterations: int | None = None) -> ClientRun:
    """Run ``spec`` to its exact closed-loop fixed point (see the module docstring)."""
    n = spec.requests
    limit = max_iterations if max_iterations is not None else 2 * (n // spec.users) + 20
    workload_of = _workload_maker(spec)
    send = np.zeros(n, dtype=np.float64)  # first guess: everything leaves at once
    for iteration in range(1, limit + 1):
        run = run_open(workload_of(send), make_engine)
        nxt = spec.arrivals_from_completions(run.last_token_s)
        if np.array_equal(nxt, send):
            return replace(run, name=spec.name, iterations=iteration)
        send = nxt
    raise ClosedLoopError(
        f"closed-loop workload {spec.name!r}: send times still changing after {limit} engine runs"
    )


def _workload_maker(spec: ClosedLoopSpec) -> Callable[[np.ndarray], Workload]:
    prompt = np.asarray(spec.prompt_tokens, dtype=np.int64)
    output = np.asarray(spec.output_tokens, dtype=np.int64)

    def make(send: np.ndarray) -> Workload:
        # send times are non-decreasing in request order by construction (sorted completions + a constant)
        return Workload(spec.name, send, prompt, output)

    return make

"""Load in the background: ``pdscale loadgen``'s client (``workers.loadgen.run_plan``) on its own thread and event
loop, so a test, the live demo or the bench can watch the cluster while requests flow."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from workers.loadgen import Plan, Target, run_plan
from workers.loadgen_report import RequestRecord


class LoadThread(threading.Thread):
    """Sends every request of ``plan`` to ``target``; ``records`` holds the results once ``join()`` returns."""

    def __init__(self, plan: Plan, target: Target, *, seed: int = 0, max_concurrency: int | None = None) -> None:
        super().__init__(name="load", daemon=True)
        self.plan = plan
        self.target = target
        self.seed = seed
        self.max_concurrency = max_concurrency
        self.records: list[RequestRecord] = []
        self.error: BaseException | None = None
        self.started_s = 0.0  # wall clock of the plan's t = 0

    def run(self) -> None:
        self.started_s = time.time()
        try:
            self.records = asyncio.run(run_plan(self.plan, self.target, seed=self.seed,
                                                max_concurrency=self.max_concurrency))  # fmt: skip
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout_s: float) -> list[RequestRecord]:
        """Wait for the last request; raise what the load thread raised, or TimeoutError."""
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError(f"load {self.plan.name!r} still running after {timeout_s:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"load {self.plan.name!r} failed: {self.error!r}") from self.error
        return self.records


def failures(records: list[RequestRecord]) -> list[Any]:
    """Requests that failed or came back short (fewer tokens than asked): lost work, as a user sees it."""
    return [(r.index, r.error or f"{r.output_tokens}/{r.max_tokens} tokens")
            for r in records if not r.ok or r.output_tokens != r.max_tokens]  # fmt: skip

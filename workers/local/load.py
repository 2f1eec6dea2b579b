"""Load in the background: ``pdscale loadgen``'s client (``workers.loadgen.run_plan``) on its own thread and event
loop, so a test, the live demo or the bench can watch the cluster while requests flow."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
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


class LoadProcess:
    """The same load from a process of its own (``python -m workers.local.load``), so that measuring it shares no
    interpreter lock with whatever else this process runs (the emulator and the pod runner, in the bench and the
    live demo). ``started_s`` is the wall clock of the plan's t = 0, as that process read it."""

    def __init__(self, runner: Any, workdir: Path, *, url: str, model: str, generator: str, seed: int = 0,
                 timeout_s: float = 300.0, max_requests: int | None = None,
                 max_concurrency: int | None = None) -> None:  # fmt: skip
        self.records_path = workdir / "load-records.jsonl"
        self.t0_path = workdir / "load-t0.txt"
        for path in (self.records_path, self.t0_path):
            path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "workers.local.load", "--url", url, "--model", model, "--generator", generator,
                "--seed", str(seed), "--timeout-s", f"{timeout_s:g}", "--records", str(self.records_path),
                "--t0-file", str(self.t0_path)]  # fmt: skip
        if max_requests is not None:
            argv += ["--max-requests", str(max_requests)]
        if max_concurrency is not None:
            argv += ["--max-concurrency", str(max_concurrency)]
        self.proc = runner.start(argv, name="load")

    @property
    def started_s(self) -> float:
        try:
            return float(self.t0_path.read_text())
        except (OSError, ValueError):
            return 0.0

    def is_alive(self) -> bool:
        return bool(self.proc.running)

    def result(self, timeout_s: float) -> list[RequestRecord]:
        rc = self.proc.wait(timeout_s)
        if rc != 0 or not self.records_path.exists():
            raise RuntimeError(f"load process exited {rc}:\n{self.proc.tail(20)}")
        fields = {f.name for f in dataclasses.fields(RequestRecord)}
        return [RequestRecord(**{k: v for k, v in json.loads(line).items() if k in fields})
                for line in self.records_path.read_text().splitlines() if line.strip()]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m workers.local.load``: send one generator workload, write the wall clock of its t = 0 and then
    every request's record (JSON Lines)."""
    import argparse

    from workers.loadgen import build_plan
    from workers.loadgen_report import write_records

    ap = argparse.ArgumentParser(prog="python -m workers.local.load")
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--generator", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--records", required=True)
    ap.add_argument("--t0-file", required=True)
    ap.add_argument("--max-requests", type=int)
    ap.add_argument("--max-concurrency", type=int)
    args = ap.parse_args(argv)
    plan = build_plan(generator=args.generator, seed=args.seed, max_requests=args.max_requests)
    target = Target(f"{args.url.rstrip('/')}/v1", args.model, timeout_s=args.timeout_s)

    async def go() -> list[RequestRecord]:
        t0_file = Path(args.t0_file)
        t0_file.write_text(repr(time.time()))  # run_plan's own t = 0 follows within microseconds
        return await run_plan(plan, target, seed=args.seed, max_concurrency=args.max_concurrency)

    records = asyncio.run(go())
    write_records(records, Path(args.records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How many emulated vLLM pods (``pdscale worker`` processes) one CPU core sustains, and at what request rate,
with the token timing error under 5 ms at p99.

N worker processes are pinned to one core (``taskset``); this process, pinned to another core, sends an open-loop
Poisson load of streaming completions (aiohttp) spread evenly over the pods for ``--duration-s``. The timing
error is the worker's own accounting: ``pdscale_worker_token_delivery_lag_seconds`` observes, for every output
token, how long after its model deadline (the end of the engine step that produced it) the worker handed it to
the client connection. Its per-run delta is summed over all pods; p50/p99 are read from the buckets (edges at
0.5, 1, 2, 3, 5, 7.5, 10 ms, ...) and ``<=5ms`` is the exact share of tokens within 5 ms. The client also checks
that every request got all its tokens. ``core%`` is the worker processes' CPU time over the run's wall time and
``us/tok`` that CPU time per delivered token: on a shared machine the lag measures the contention as much as the
workers, while the CPU cost per token does not, so the last line turns it into a capacity estimate.

    .venv/bin/python bench/bench_worker_capacity.py [--pods 5,10,20,30] [--rate-per-pod 2] \\
        [--prompt-tokens 256] [--output-tokens 128] [--duration-s 20] [--json]

Measured under whatever else runs on the machine: quote medians of repeated runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autoscaler.core.histogram import histogram_quantile  # noqa: E402

LAG = "pdscale_worker_token_delivery_lag_seconds"
LOOPBACK = "127.0.0.1"


@dataclass
class Result:
    pods: int
    offered_req_per_s: float
    completed_req_per_s: float
    tokens_per_s: float
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    within_5ms: float
    worker_core_frac: float
    cpu_us_per_token: float
    incomplete_requests: int


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> tuple[dict[float, float], float]:
    """(cumulative lag buckets by upper bound, process CPU seconds) of one worker."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    buckets: dict[float, float] = {}
    cpu = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{LAG}_bucket":
                buckets[float(s.labels["le"])] = s.value
            elif s.name == "process_cpu_seconds_total":
                cpu = s.value
    return buckets, cpu


def start_workers(n: int, core: int, args: argparse.Namespace, log_dir: Path) -> list[tuple[subprocess.Popen[bytes], int]]:
    taskset = shutil.which("taskset")
    procs = []
    for i in range(n):
        port = free_port()
        argv = [sys.executable, "-m", "workers.worker_cli", "--host", LOOPBACK, "--port", str(port),
                "--served-model-name", "m", "--profile", args.profile, "--max-model-len", "4096",
                "--time-scale", str(args.time_scale)]
        if taskset:
            argv = [taskset, "-c", str(core), *argv]
        log = (log_dir / f"worker-{i}.log").open("wb")
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), port))
    deadline = time.monotonic() + 60 + 3 * n
    for proc, port in procs:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker on {port} exited: see {log_dir}")
            try:
                urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker on {port} not ready") from None
                time.sleep(0.2)
    return procs


def stop_workers(procs: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc, _ in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def load(ports: list[int], args: argparse.Namespace, seed: int) -> tuple[int, int, int]:
    """Open-loop Poisson arrivals over all pods; returns (requests sent, completed fully, tokens received)."""
    rng = random.Random(seed)
    rate = args.rate_per_pod * len(ports)
    prompt = list(range(args.prompt_tokens))
    done = full = tokens_total = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=args.duration_s + 120)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(port: int) -> None:
            nonlocal done, full, tokens_total
            body = {"model": "m", "prompt": prompt, "max_tokens": args.output_tokens, "stream": True}
            got = 0
            tail = b""
            async with session.post(f"http://{LOOPBACK}:{port}/v1/completions", json=body) as resp:
                async for chunk in resp.content.iter_any():  # cheap client: count events, parse nothing
                    data = tail + chunk
                    got += data.count(b"data: {")
                    tail = data[-6:]  # shorter than the marker: a match split across reads is counted once
            done += 1
            tokens_total += got
            full += got == args.output_tokens

        tasks = []
        t0 = time.monotonic()
        next_s = 0.0
        i = 0
        while next_s < args.duration_s:
            delay = t0 + next_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(ports[i % len(ports)])))
            i += 1
            next_s += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    return len(tasks), full, tokens_total


def run_one(n: int, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        procs = start_workers(n, args.worker_core, args, Path(tmp))
        try:
            ports = [p for _, p in procs]
            before = [scrape(p) for p in ports]
            t0 = time.monotonic()
            sent, full, tokens = asyncio.run(load(ports, args, seed=n))
            wall = time.monotonic() - t0
            after = [scrape(p) for p in ports]
        finally:
            stop_workers(procs)
    edges = sorted(after[0][0])
    cumulative = [sum(a[0][e] - b[0].get(e, 0.0) for a, b in zip(after, before, strict=True)) for e in edges]
    total = cumulative[-1]
    p50 = histogram_quantile(0.5, edges, cumulative)
    p99 = histogram_quantile(0.99, edges, cumulative)
    within = cumulative[edges.index(0.005)] / total if total else 0.0
    cpu = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return Result(
        pods=n,
        offered_req_per_s=round(args.rate_per_pod * n, 2),
        completed_req_per_s=round(full / wall, 2),
        tokens_per_s=round(tokens / wall, 1),
        lag_p50_ms=None if p50 is None else round(p50 * 1000, 2),
        lag_p99_ms=None if p99 is None else round(p99 * 1000, 2),
        within_5ms=round(within, 4),
        worker_core_frac=round(cpu / wall, 3),
        cpu_us_per_token=round(cpu / tokens * 1e6, 1) if tokens else float("nan"),
        incomplete_requests=sent - full,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", default="5,10,20,30")
    ap.add_argument("--rate-per-pod", type=float, default=2.0, help="requests/s per pod (default 2)")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--profile", default="llama-3.1-8b-h100-tp1")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--worker-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_core})
    results = [run_one(int(n), args) for n in args.pods.split(",")]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    print(f"profile {args.profile}, time-scale {args.time_scale}, {args.rate_per_pod} req/s per pod, prompt "
          f"{args.prompt_tokens} / output {args.output_tokens} tokens, {args.duration_s:.0f} s, workers on core "
          f"{args.worker_core}, client on core {args.client_core}")
    print(f"{'pods':>5} {'req/s':>7} {'done/s':>7} {'tok/s':>8} {'lag p50 ms':>10} {'lag p99 ms':>10} "
          f"{'<=5ms':>7} {'core%':>6} {'us/tok':>7} {'lost':>5}")
    for r in results:
        print(f"{r.pods:>5} {r.offered_req_per_s:>7} {r.completed_req_per_s:>7} {r.tokens_per_s:>8} "
              f"{r.lag_p50_ms!s:>10} {r.lag_p99_ms!s:>10} {r.within_5ms:>7.2%} {r.worker_core_frac:>6.0%} "
              f"{r.cpu_us_per_token:>7} {r.incomplete_requests:>5}")
    per_token_s = sorted(r.cpu_us_per_token for r in results)[len(results) // 2] / 1e6
    tokens_per_pod_s = args.rate_per_pod * args.output_tokens
    print(f"median worker CPU per delivered token: {per_token_s * 1e6:.0f} us -> one core busy {0.5 / per_token_s:,.0f} "
          f"tokens/s at 50% load, i.e. {0.5 / per_token_s / tokens_per_pod_s:.0f} pods at this per-pod load "
          "(core% below 100 with a large lag means other processes held the core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

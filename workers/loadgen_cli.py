"""``pdscale loadgen`` arguments (light imports only: the client is imported when the command runs)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, metavar="URL",
                   help="OpenAI-compatible server: pdscale proxy, vllm-router, pdscale worker, vLLM "
                        "(http://host:port or .../v1)")  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", metavar="FILE", help="trace file (Azure CSV, Mooncake JSONL, plain CSV)")
    src.add_argument(
        "--generator",
        metavar="SPEC",
        help='simulator generator spec, e.g. "poisson:rate=5,duration=60,prompt=const(512),output=const(64)", '
        'or a closed loop "closed:users=8,requests=200,think_s=0.5,prompt=const(256),output=const(128)"',
    )
    p.add_argument("--model", help="model name (default: the first one the server lists)")
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions",
                   help="completions with token-id prompts (exact lengths; default) or chat")  # fmt: skip
    p.add_argument("--rate-scale", type=float, default=1.0, metavar="K", help="arrivals K times denser")
    p.add_argument("--scale-mode", choices=("compress", "replicate"), default="compress",
                   help="how --rate-scale densifies (as pdscale sim run)")  # fmt: skip
    p.add_argument(
        "--duration-s", type=float, metavar="S", help="keep the first S (model) seconds of arrivals"
    )
    p.add_argument("--max-requests", type=int, metavar="N", help="send at most the first N requests")
    p.add_argument("--max-prompt-tokens", type=int, metavar="N", help="cap prompt lengths")
    p.add_argument("--max-output-tokens", type=int, metavar="N", help="cap output lengths")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="K",
                   help="as pdscale worker --time-scale K: arrivals stretched by K, durations reported / K (1)")  # fmt: skip
    p.add_argument(
        "--max-concurrency", type=int, metavar="N", help="at most N requests in flight (open loop)"
    )
    p.add_argument("--seed", type=int, default=0, help="workload and prompt seed (0)")
    p.add_argument("--goodput", nargs="+", metavar="METRIC:MS",
                   help="SLOs for goodput, vllm bench syntax: ttft:500 tpot:50 e2el:10000")  # fmt: skip
    p.add_argument(
        "--percentiles", default="50,90,99", metavar="LIST", help="reported percentiles (50,90,99)"
    )
    p.add_argument("--timeout-s", type=float, default=600.0, metavar="S", help="per-request client timeout")
    p.add_argument("--api-key", default="EMPTY", help="API key the client sends (EMPTY)")
    p.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos")
    p.add_argument("--records", metavar="FILE", help="write one JSON line per request here")
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON (no table, no progress bar)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "loadgen",
        help="replay a trace, generator or closed loop against an OpenAI-compatible server (vllm bench-style report)",
        description=(
            "Load generator on the openai client's streaming API: the simulator's workloads, exact prompt and "
            "output lengths, TTFT/TPOT/ITL/E2EL mean and percentiles, throughput and goodput."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from workers.loadgen import loadgen_command

    return loadgen_command(args)

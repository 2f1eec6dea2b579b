"""Time NVIDIA Dynamo's mocker (ai-dynamo 1.6.1) replaying a Mooncake trace with a fixed P/D cluster.

Runs in the bench-only environment (``scripts/setup-dynamo-bench.sh``); ``bench/bench_sim_speed.py`` calls it
beside pdscale's simulator in the same run and prints the ratio. Prints one JSON object:

    .venv-dynamo/bin/python bench/dynamo_mocker_speed.py --trace T.jsonl --timing T.npz --instances 10 \\
        [--router kv_router|round_robin] [--profile NAME]

CPU seconds are this process's (``time.process_time``: all its threads, the Rust ones included) around
``dynamo._core.run_mocker_trace_replay``, which includes reading the JSONL; ``mocker_wall_s`` is the mocker's own
``wall_time_ms`` (runtime construction and execution, no file reading).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DYN_LOG", "warn")  # the kv router logs every request at info

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.mocker_inputs import MOONCAKE_BLOCK_TOKENS, engine_args  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, required=True, help="Mooncake JSONL (bench/mocker_inputs.py)")
    ap.add_argument("--timing", type=Path, required=True, help="NPZ timing table (bench/mocker_inputs.py)")
    ap.add_argument("--instances", type=int, default=10, help="workers per pool")
    ap.add_argument("--router", choices=("kv_router", "round_robin"), default="kv_router")
    ap.add_argument("--profile", default="llama-3.1-8b-h100-tp1")
    ap.add_argument("--block-tokens", type=int, default=MOONCAKE_BLOCK_TOKENS)
    args = ap.parse_args()

    from dynamo._core import run_mocker_trace_replay  # type: ignore[import-not-found]

    from autoscaler.profiles import load_profile

    profile = load_profile(args.profile)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_mocker_trace_replay(
        [str(args.trace)],
        prefill_engine_args=engine_args(profile, "prefill", args.timing),
        decode_engine_args=engine_args(profile, "decode", args.timing),
        num_prefill_workers=args.instances,
        num_decode_workers=args.instances,
        router_mode=args.router,
        trace_block_size=args.block_tokens,
    )
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    s = result.summary
    requests = int(s["num_requests"]) if "num_requests" in s else int(s["completed_requests"])
    print(json.dumps({
        "router": args.router,
        "requests": requests,
        "completed": int(s["completed_requests"]),
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "mocker_wall_s": float(s["wall_time_ms"]) / 1e3,
        "req_per_cpu_s": requests / cpu_s,
        "sim_duration_s": float(s["duration_ms"]) / 1e3,
        "ttft_mean_s": float(s["mean_ttft_ms"]) / 1e3,
        "ttft_p99_s": float(s["p99_ttft_ms"]) / 1e3,
        "itl_mean_s": float(s["mean_itl_ms"]) / 1e3,
    }))  # fmt: skip


if __name__ == "__main__":
    main()

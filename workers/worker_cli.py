"""``pdscale worker``: an emulated vLLM server (or, with ``--engine vllm``, real vLLM) from vLLM-style flags.

Top-level imports stay light (argparse only): aiohttp, prometheus_client and the engine load in the handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_PROFILE = "llama-3.1-8b-h100-tp1"
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``pdscale worker`` (named like ``vllm serve``'s where they mean the same)."""
    p.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                   help="model name or path, as `vllm serve MODEL` (same as --model)")
    p.add_argument("--model", default=None, help=f"model name reported as `root` in /v1/models (default {DEFAULT_MODEL})")
    p.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="name(s) clients use in `model`; the first labels the metrics (default: --model)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--role", choices=("prefill", "decode", "both", "aggregated"), default=None,
                   help="P/D role; default from --kv-transfer-config kv_role (kv_producer: prefill, kv_consumer: "
                        "decode, kv_both: both legs, chosen per request by the proxy), else aggregated")
    p.add_argument("--kv-transfer-config", default=None, metavar="JSON",
                   help='vLLM\'s KV connector config, e.g. \'{"kv_connector":"NixlConnector","kv_role":"kv_producer"}\'')
    p.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|PATH",
                   help=f"pdscale latency profile (`pdscale profiles`; default {DEFAULT_PROFILE})")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="K",
                   help="multiply every modelled duration (steps, KV transfer) by K; 0.1 runs 10x faster (default 1)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context length: prompt + output tokens (default: min(KV capacity, 131072))")
    p.add_argument("--max-num-seqs", type=int, default=None, help="max running sequences (default: the profile's)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="token budget per scheduler step, chunked prefill (default: the profile's)")
    p.add_argument("--kv-cache-tokens", type=int, default=None,
                   help="KV cache capacity in tokens (default: the profile's kv capacity)")
    p.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (default 16)")
    p.add_argument("--kv-link-bytes-per-s", type=float, default=None,
                   help="decode role: KV transfer bandwidth (default: the engine's)")
    p.add_argument("--kv-base-latency-s", type=float, default=None,
                   help="decode role: fixed KV transfer latency (default: the engine's)")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, wait this long for in-flight requests, then cut them and exit 1 (default 30)")
    p.add_argument("--engine", choices=("emulated", "vllm"), default="emulated",
                   help="emulated (default), or launch real vLLM from the same flags (workers/vllm.py)")
    p.add_argument("--vllm-python", default=None, metavar="PATH",
                   help="--engine vllm: interpreter with vLLM installed (default $PDSCALE_VLLM_PYTHON, "
                        "else .venv-vllm/bin/python if present, else this one)")
    p.add_argument("--vllm-config", default=None, metavar="YAML",
                   help="--engine vllm: a workers.vllm VLLMConfig file (flags above override its fields)")
    p.add_argument("--pd-pair", action="store_true",
                   help="--engine vllm: launch a prefill AND a decode instance (ports --port and --port+1)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker",
        help="emulated vLLM worker (OpenAI API, vLLM metrics, P/D roles) or real vLLM",
        description="An OpenAI-compatible server that behaves like `vllm serve` (same endpoints, SSE chunks, "
                    "error bodies, /metrics), its timing from a pdscale latency profile driven in real time by "
                    "the simulator's scheduler. Roles prefill/decode speak NixlConnector's kv_transfer_params.",
    )
    add_worker_arguments(p)
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    if args.engine == "vllm":
        from workers.vllm import run_from_worker_args

        return run_from_worker_args(args)
    try:
        server = build_server(args)
    except ValueError as exc:
        print(f"pdscale worker: {exc}", file=sys.stderr)
        return 2
    import asyncio

    from workers.server import serve

    return asyncio.run(serve(server))


def build_server(args: argparse.Namespace) -> Any:
    """The WorkerServer the flags describe (ValueError with a clear message for bad flags)."""
    import dataclasses

    from autoscaler.core.latency import KvLink
    from autoscaler.profiles import ProfileError, load_profile
    from workers.kv_transfer import parse_kv_transfer_config, resolve_role
    from workers.realtime import RealtimeEngine
    from workers.server import WorkerConfig, WorkerServer

    if args.model_tag and args.model and args.model_tag != args.model:
        raise ValueError(f"model given twice ({args.model_tag!r} and --model {args.model!r})")
    model = args.model_tag or args.model or DEFAULT_MODEL
    names = tuple(args.served_model_name or [model])
    kv_config = parse_kv_transfer_config(args.kv_transfer_config)
    role = resolve_role(args.role, kv_config)
    if args.time_scale <= 0:
        raise ValueError(f"--time-scale must be > 0, got {args.time_scale}")
    for flag in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "kv_cache_tokens", "block_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise ValueError(str(exc)) from None
    overrides: dict[str, Any] = {}
    if args.max_num_seqs is not None:
        overrides["max_num_seqs"] = args.max_num_seqs
    if args.max_num_batched_tokens is not None:
        overrides["max_num_batched_tokens"] = args.max_num_batched_tokens
    if args.kv_cache_tokens is not None:
        overrides["kv_capacity_tokens"] = args.kv_cache_tokens
    profile = dataclasses.replace(profile, **overrides)
    if args.time_scale != 1.0:
        from autoscaler.core.latency import scale_profile

        profile = scale_profile(profile, args.time_scale)
    max_model_len = args.max_model_len or min(profile.kv_capacity_tokens, 131072)
    if max_model_len > profile.kv_capacity_tokens:
        raise ValueError(
            f"--max-model-len {max_model_len} exceeds the KV cache ({profile.kv_capacity_tokens} tokens): one "
            "request could never fit (vLLM refuses to start in this case too)"
        )
    link = KvLink(
        **{k: v for k, v in (("bytes_per_s", args.kv_link_bytes_per_s), ("base_latency_s", args.kv_base_latency_s))
           if v is not None}
    )
    if args.time_scale != 1.0:
        link = link.scaled(args.time_scale)
    engine = RealtimeEngine(profile, _engine_role(role), kv_link_bytes_per_s=link.bytes_per_s,
                            kv_base_latency_s=link.base_latency_s)
    config = WorkerConfig(
        served_model_names=names,
        model_root=model,
        role=role,
        max_model_len=max_model_len,
        block_size=args.block_size,
        host=args.host,
        port=args.port,
        drain_timeout_s=args.drain_timeout_s,
        kv_cache_memory_bytes=int(profile.kv_capacity_tokens * profile.kv_bytes_per_token),
        kv_bytes_per_token=profile.kv_bytes_per_token,
        max_num_seqs=profile.max_num_seqs,
    )
    return WorkerServer(config, engine, profile.kv_capacity_tokens)


def _engine_role(role: str) -> str:
    """The RealtimeEngine role: a decode engine also computes local prompts, so it serves both legs."""
    return {"aggregated": "agg", "both": "decode"}.get(role, role)


def default_vllm_python() -> str:
    """The interpreter that runs real vLLM: $PDSCALE_VLLM_PYTHON, else ./.venv-vllm, else this one."""
    env = os.environ.get("PDSCALE_VLLM_PYTHON")
    if env:
        return env
    local = os.path.join(os.getcwd(), ".venv-vllm", "bin", "python")
    return local if os.path.exists(local) else sys.executable


def main(argv: list[str] | None = None) -> int:
    """``python -m workers.worker_cli ...``: the same command without loading every other pdscale subcommand
    (a lighter process when one machine runs dozens of emulated pods)."""
    import logging

    parser = argparse.ArgumentParser(prog="pdscale worker")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_worker(args)


if __name__ == "__main__":
    sys.exit(main())

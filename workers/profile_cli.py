"""``pdscale profile``: measure step times with torch (or vLLM) on this machine and write a latency profile.

Top-level imports stay light (stdlib): torch is imported by the handler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

PROG = "pdscale profile"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure prefill/decode step times on this machine and write a latency profile",
        description="Build a Llama-shaped model with random weights (no downloads) from a built-in shape or a "
        "HF config.json, time prefill and decode steps over a grid with torch on --device, fit the profile's "
        "coefficients by least squares (residuals reported) and write a profile YAML that sim, bench, plan and "
        "the policy load. --engine vllm times the real vLLM engine on a local model directory instead.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="llama-3.1-8b", help="built-in shape (default llama-3.1-8b; 'tiny' for tests)")
    src.add_argument("--config", metavar="CONFIG.json", help="HF config.json of a Llama-shaped model")
    p.add_argument("--engine", choices=("torch", "vllm"), default="torch", help="what to time (default torch)")
    p.add_argument("--model-dir", metavar="DIR", help="local model directory for --engine vllm")
    p.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword for vllm.LLM with --engine vllm (repeatable; VALUE parsed as YAML)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), help="default bf16 on cuda, fp32 on cpu")
    p.add_argument("--layers", type=int, metavar="K", help="time K decoder layers and scale to the model's count")
    p.add_argument("--prefill-tokens", type=_ints, metavar="T,T,...", help="prefill grid (new tokens per step)")
    p.add_argument("--decode-batch", type=_ints, metavar="B,B,...", help="decode grid: batch sizes")
    p.add_argument("--decode-context", type=_ints, metavar="C,C,...", help="decode grid: context per sequence")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per point, median kept (5)")
    p.add_argument("--memory-gb", type=float, metavar="GB", help="device memory for the KV arithmetic")
    p.add_argument("--gpus-per-replica", type=int, default=1, metavar="N",
                   help="GPUs one replica uses, written into the profile's hardware section (default 1)")
    p.add_argument("--max-num-seqs", type=int, default=256, metavar="N",
                   help="the engine's max running sequences, written into the profile (default 256)")
    p.add_argument("--name", help="profile name (default: derived from model and device)")
    p.add_argument("--out", required=True, metavar="PROFILE.yaml", help="where to write the profile")
    p.set_defaults(func=profile_command)


def _vllm_args(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--vllm-arg {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def profile_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from workers.profiler import (
        MODELS,
        Grid,
        ProfilerError,
        check_profile,
        default_memory_bytes,
        fit_run,
        profile_document,
        shape_from_config,
        summary_lines,
        time_torch,
        time_vllm,
        write_profile,
    )

    console = Console(stderr=True)
    try:
        base = Grid()
        grid = Grid(
            args.prefill_tokens or base.prefill_tokens,
            args.decode_batch or base.decode_batch,
            args.decode_context or base.decode_context,
        )
        if args.repeats < 1:
            raise ProfilerError("--repeats must be >= 1")
        total = len(grid.prefill_tokens) + len(grid.decode_batch) * len(grid.decode_context)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("profiling", total=total)

            def tick(what: str) -> None:
                bar.update(task, advance=1, description=what)

            if args.engine == "vllm":
                if not args.model_dir:
                    raise ProfilerError("--engine vllm needs --model-dir (a local model directory)")
                run = time_vllm(args.model_dir, grid, progress=tick, engine_args=_vllm_args(args.vllm_arg))
            else:
                if args.config:
                    shape = shape_from_config(Path(args.config))
                elif args.model in MODELS:
                    shape = MODELS[args.model]
                else:
                    raise ProfilerError(f"--model: unknown {args.model!r}; built-in: {', '.join(MODELS)}")
                run = time_torch(shape, grid, args.device, args.dtype, args.layers, args.repeats, progress=tick)
        fit_run(run)
        memory = args.memory_gb * 1e9 if args.memory_gb else default_memory_bytes(args.device)
        name = args.name or f"{(args.config and Path(args.config).parent.name) or args.model}-{run.device}-profiled"
        doc = profile_document(run, name, memory, args.gpus_per_replica, args.max_num_seqs)
        out = Path(args.out)
        write_profile(doc, out)
        check_profile(out)
    except (ProfilerError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(run):
        print(line)
    print(f"wrote {out} (loads with --profile {out})")
    return 0

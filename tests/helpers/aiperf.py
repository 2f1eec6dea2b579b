"""Run NVIDIA's aiperf (an independent benchmark client) on the same requests as ``pdscale loadgen``.

``ensure_aiperf()`` builds ``.venv-aiperf`` and an offline tokenizer (scripts/ensure-aiperf.sh) and returns how to
call it. ``run_aiperf`` sends a custom single-turn dataset whose text prompts the emulated worker counts as exactly
the wanted lengths (one token per word, ``workers/tokens.py``), with ``output_length`` per request and
``ignore_eos``, at a fixed concurrency, and returns aiperf's JSON export. Token counts come from the server's usage
(``--use-server-token-count``): aiperf's own tokenizer would count the synthetic words differently.

aiperf's ``inter_token_latency`` is per request (e2e - TTFT) / (output tokens - 1), i.e. vLLM bench's TPOT;
its ``inter_chunk_latency`` is the gap between chunks, i.e. vLLM bench's ITL.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Aiperf:
    binary: str
    hf_home: str
    tokenizer: str


def ensure_aiperf(timeout_s: float = 900.0) -> Aiperf:
    """Build (first time, ~3 min) or find aiperf; raises RuntimeError with the script's output on failure."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "ensure-aiperf.sh")],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/ensure-aiperf.sh failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    binary, hf_home, tokenizer = proc.stdout.strip().splitlines()[-1].split()
    return Aiperf(binary, hf_home, tokenizer)


def word_prompt(n_tokens: int, seed: int) -> str:
    """Text the emulated worker counts as exactly ``n_tokens`` completion-prompt tokens."""
    return " ".join(f"t{(seed * 31 + j) % 97}" for j in range(n_tokens))


def write_dataset(
    path: Path,
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    send_times_s: Sequence[float] | None = None,
) -> Path:
    """One single-turn record per request; with ``send_times_s`` each carries its ``timestamp`` (ms) for aiperf's
    fixed-schedule replay."""
    with path.open("w") as f:
        for i, (p, o) in enumerate(zip(prompt_tokens, output_tokens, strict=True)):
            row: dict[str, Any] = {"text": word_prompt(int(p), i), "output_length": int(o)}
            if send_times_s is not None:
                row["timestamp"] = round(float(send_times_s[i]) * 1000.0, 3)
            f.write(json.dumps(row) + "\n")
    return path


def run_aiperf(
    tool: Aiperf,
    *,
    url: str,
    model: str,
    dataset: Path,
    requests: int,
    out_dir: Path,
    concurrency: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """One ``aiperf profile`` run (streaming completions); returns profile_export_aiperf.json. Without
    ``concurrency`` the dataset's timestamps are replayed (``--fixed-schedule``)."""
    pacing = (
        ["--concurrency", str(concurrency)]
        if concurrency
        else ["--fixed-schedule", "--fixed-schedule-auto-offset"]
    )
    argv = [
        tool.binary, "profile", "--model", model, "--url", url, "--endpoint-type", "completions", "--streaming",
        *pacing, "--request-count", str(requests),
        "--input-file", str(dataset), "--custom-dataset-type", "single_turn",
        "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
        "--tokenizer", tool.tokenizer, "--ui-type", "none", "--output-artifact-dir", str(out_dir),
        "--no-server-metrics", "--no-gpu-telemetry",
    ]  # fmt: skip
    env = {**os.environ, "HF_HOME": tool.hf_home, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    export = out_dir / "profile_export_aiperf.json"
    if proc.returncode != 0 or not export.exists():
        raise RuntimeError(
            f"aiperf failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(export.read_text())
    return result


def same_run(
    tool: Aiperf,
    *,
    worker_url: str,
    model: str,
    requests: int,
    rate_per_s: float,
    prompt_tokens: int,
    output_tokens: int,
    out_dir: Path,
    seed: int = 7,
    aiperf_first: bool = False,
) -> dict[str, tuple[float, float]]:
    """Send the same Poisson schedule (wall-clock ``rate_per_s``) of fixed-length requests with loadgen, then with
    aiperf (``--fixed-schedule``), or aiperf first; returns ``{metric: (loadgen_ms, aiperf_ms)}`` for TTFT mean/p50, TPOT mean/p50
    and ITL mean."""
    import asyncio

    import numpy as np

    from workers.loadgen import Plan, Target, run_plan
    from workers.loadgen_report import summarize

    prompts = np.full(requests, prompt_tokens)
    outputs = np.full(requests, output_tokens)
    send_s = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate_per_s, requests))
    send_s -= send_s[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = write_dataset(out_dir / "dataset.jsonl", prompts, outputs, send_s)

    def run_theirs() -> dict[str, Any]:
        return run_aiperf(tool, url=worker_url, model=model, dataset=dataset, requests=requests,
                          out_dir=out_dir / "aiperf")  # fmt: skip

    theirs = run_theirs() if aiperf_first else {}
    plan = Plan("poisson", prompts, outputs, send_s)
    ours = summarize(asyncio.run(run_plan(plan, Target(f"{worker_url}/v1", model))), percentiles=(50,))
    if ours["failed"]:
        raise RuntimeError(f"loadgen: {ours['failed']} requests failed: {ours['errors']}")
    if not aiperf_first:
        theirs = run_theirs()
    if (
        theirs["request_count"]["avg"] != requests
        or theirs["usage_completion_tokens"]["avg"] != output_tokens
    ):
        raise RuntimeError(f"aiperf did not complete the run as sent: {theirs['request_count']}, "
                           f"{theirs['usage_completion_tokens']}")  # fmt: skip
    return {
        "TTFT mean": (ours["ttft"]["mean_ms"], theirs["time_to_first_token"]["avg"]),
        "TTFT p50": (ours["ttft"]["p50_ms"], theirs["time_to_first_token"]["p50"]),
        "TPOT mean": (ours["tpot"]["mean_ms"], theirs["inter_token_latency"]["avg"]),
        "TPOT p50": (ours["tpot"]["p50_ms"], theirs["inter_token_latency"]["p50"]),
        "ITL mean": (ours["itl"]["mean_ms"], theirs["inter_chunk_latency"]["avg"]),
    }

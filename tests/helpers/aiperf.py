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


def write_dataset(path: Path, prompt_tokens: Sequence[int], output_tokens: Sequence[int]) -> Path:
    with path.open("w") as f:
        for i, (p, o) in enumerate(zip(prompt_tokens, output_tokens, strict=True)):
            f.write(json.dumps({"text": word_prompt(int(p), i), "output_length": int(o)}) + "\n")
    return path


def run_aiperf(
    tool: Aiperf,
    *,
    url: str,
    model: str,
    dataset: Path,
    requests: int,
    concurrency: int,
    out_dir: Path,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """One ``aiperf profile`` run (streaming completions); returns profile_export_aiperf.json."""
    argv = [
        tool.binary, "profile", "--model", model, "--url", url, "--endpoint-type", "completions", "--streaming",
        "--concurrency", str(concurrency), "--request-count", str(requests),
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

"""``pdscale loadgen`` and NVIDIA's aiperf measure the same workload against one emulated worker: the same
prompt and output lengths at the same concurrency, one after the other. Their TTFT and inter-token means and
medians must agree within tolerance (aiperf's per-request ``inter_token_latency`` is loadgen's TPOT, its
``inter_chunk_latency`` loadgen's ITL). The worker stretches its modelled times x4 (``--time-scale 4``) so that
client-side overheads, which differ between the two clients, stay small next to what is measured."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.aiperf import ensure_aiperf, run_aiperf, write_dataset
from tests.helpers.workers import MODEL, start_worker
from workers.loadgen import Plan, Target, run_plan
from workers.loadgen_report import summarize
from workers.local.processes import ProcessRunner

REQUESTS, CONCURRENCY = 48, 4
PROMPT_TOKENS, OUTPUT_TOKENS = 512, 48
TOLERANCE = 0.15  # relative, on a busy 2-core machine (the bench reports the figure; 10 % on a quiet one)


def test_loadgen_and_aiperf_agree(process_runner: ProcessRunner, tmp_path: Path) -> None:
    try:
        tool = ensure_aiperf()
    except RuntimeError as exc:
        pytest.fail(f"aiperf is needed for this cross-check: {exc}", pytrace=False)
    worker = start_worker(process_runner, role="aggregated", extra_args=["--time-scale", "4"])
    prompts = np.full(REQUESTS, PROMPT_TOKENS)
    outputs = np.full(REQUESTS, OUTPUT_TOKENS)

    plan = Plan("closed", prompts, outputs, np.zeros(REQUESTS))  # all due at once, CONCURRENCY at a time
    records = asyncio.run(run_plan(plan, Target(worker.api_url, MODEL), max_concurrency=CONCURRENCY))
    ours = summarize(records, percentiles=(50,))
    assert ours["failed"] == 0

    dataset = write_dataset(tmp_path / "dataset.jsonl", prompts, outputs)
    theirs = run_aiperf(tool, url=worker.url, model=MODEL, dataset=dataset, requests=REQUESTS,
                        concurrency=CONCURRENCY, out_dir=tmp_path / "aiperf")  # fmt: skip
    assert theirs["request_count"]["avg"] == REQUESTS
    assert theirs["usage_completion_tokens"]["avg"] == OUTPUT_TOKENS
    pairs = {
        "TTFT mean": (ours["ttft"]["mean_ms"], theirs["time_to_first_token"]["avg"]),
        "TTFT p50": (ours["ttft"]["p50_ms"], theirs["time_to_first_token"]["p50"]),
        "TPOT mean": (ours["tpot"]["mean_ms"], theirs["inter_token_latency"]["avg"]),
        "TPOT p50": (ours["tpot"]["p50_ms"], theirs["inter_token_latency"]["p50"]),
        "ITL mean": (ours["itl"]["mean_ms"], theirs["inter_chunk_latency"]["avg"]),
    }
    table = "\n".join(
        f"  {k:10s} loadgen {a:8.2f} ms  aiperf {b:8.2f} ms  ({a / b - 1:+.1%})"
        for k, (a, b) in pairs.items()
    )
    print(f"loadgen vs aiperf:\n{table}")
    for name, (a, b) in pairs.items():
        assert a == pytest.approx(b, rel=TOLERANCE), (
            f"{name}: loadgen {a:.2f} ms vs aiperf {b:.2f} ms\n{table}"
        )

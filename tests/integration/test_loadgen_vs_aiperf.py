"""``pdscale loadgen`` and NVIDIA's aiperf measure the same run against one emulated worker: the same requests
(prompt and output lengths) sent at the same times (a Poisson schedule; aiperf replays it with
``--fixed-schedule``), one client after the other. Their TTFT and inter-token means and medians must agree within
tolerance (aiperf's per-request ``inter_token_latency`` is loadgen's TPOT, its ``inter_chunk_latency`` loadgen's
ITL). The worker stretches its modelled times x4 (``--time-scale 4``) so that client-side overheads, which differ
between the two clients, stay small next to what is measured; both clients report wall time here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.aiperf import ensure_aiperf, same_run
from tests.helpers.workers import MODEL, start_worker
from workers.local.processes import ProcessRunner

# Relative. TPOT/ITL agree within ~1 %; loadgen's TTFT reads 5-9 % above aiperf's on this 2-core machine under a
# load average of 12-16 (the openai client's send and first-chunk path costs a few ms more than aiperf's aiohttp),
# so TTFT gets 15 % here; bench/bench_loadgen_vs_aiperf.py reports medians of repeated runs.
TOLERANCE = {"TTFT mean": 0.15, "TTFT p50": 0.15, "TPOT mean": 0.10, "TPOT p50": 0.10, "ITL mean": 0.10}


def test_loadgen_and_aiperf_agree(process_runner: ProcessRunner, tmp_path: Path) -> None:
    try:
        tool = ensure_aiperf()
    except RuntimeError as exc:
        pytest.fail(f"aiperf is needed for this cross-check: {exc}", pytrace=False)
    worker = start_worker(process_runner, role="aggregated", extra_args=["--time-scale", "4"])
    pairs = same_run(tool, worker_url=worker.url, model=MODEL, requests=40, rate_per_s=2.5, prompt_tokens=512,
                     output_tokens=48, out_dir=tmp_path)  # fmt: skip
    table = "\n".join(f"  {k:10s} loadgen {a:8.2f} ms  aiperf {b:8.2f} ms  ({a / b - 1:+.1%})" for k, (a, b) in pairs.items())  # fmt: skip
    print(f"loadgen vs aiperf:\n{table}")
    for name, (a, b) in pairs.items():
        assert a == pytest.approx(b, rel=TOLERANCE[name]), (
            f"{name}: loadgen {a:.2f} vs aiperf {b:.2f} ms\n{table}"
        )

"""Inputs for NVIDIA Dynamo's mocker, made from pdscale's own: a Mooncake JSONL trace and a timing table.

Bench-only (``bench/bench_vs_dynamo_mocker.py``, ``bench/bench_sim_speed.py``); imports numpy and pdscale only,
never ``dynamo``, so the main virtual environment can test it.

**Trace.** The mocker replays Mooncake-format JSONL (``dynamo._core.run_mocker_trace_replay``, default
``trace_format="mooncake"``): one object per request with ``timestamp`` (ms), ``input_length``,
``output_length`` and ``hash_ids`` (one id per ``trace_block_size``-token block of the prompt; equal ids mean a
shared prefix for its prefix cache). pdscale's simulator has no prefix cache, so every request gets fresh ids
and the mocker's cache can never hit: both simulators then do the same prefill work. The mocker re-bases time
on the first request (its clock reads 0 there, fractional milliseconds kept), so ``MooncakeTrace.offset_s``
records where its clock starts on the workload's clock.

**Timing.** The mocker's ``dynamo_profile`` timing model reads an NPZ file (ai-dynamo/dynamo
``lib/mocker/src/common/perf_model.rs``, ``PerfModel::from_npz``): ``prefill_isl`` / ``prefill_ttft_ms``, linear
in the step's total new tokens; ``decode_active_kv_tokens`` x ``decode_context_length`` -> ``decode_itl`` (ms),
bilinear, with the batch implied as active KV / mean context (as Dynamo's own converter from profiler data
builds it, ``dynamo/mocker/utils/planner_profiler_perf_data_converter.py``). ``timing_tables`` evaluates
pdscale's latency profile (``LatencyProfile.step``) on such grids, so the mocker times each scheduler step as
pdscale's simulator does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoscaler.core.latency import LatencyProfile
from sim.workload import Workload

MOONCAKE_BLOCK_TOKENS = 512  # Mooncake's published traces hash 512-token blocks; the mocker's default too
# vLLM --max-model-len of the deployment: a common cap for Llama-3.1-8B serving, above every Azure 2023 request
# (longest: 14,050 prompt + 1,000 output tokens). The mocker's default is unset (None).
DEFAULT_MAX_MODEL_LEN = 32768


@dataclass(frozen=True)
class MooncakeTrace:
    """Where a converted trace was written and how its clock maps to the workload's."""

    path: Path
    requests: int
    offset_s: float  # workload time of the mocker's t = 0 (its first request)
    block_tokens: int


def mooncake_records(workload: Workload, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> Iterator[dict[str, object]]:
    """One Mooncake record per request, in arrival order, with unique ``hash_ids`` (no shared prefixes)."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    next_id = 0
    for arrival_s, prompt, output in zip(
        workload.arrival_s.tolist(), workload.prompt_tokens.tolist(), workload.output_tokens.tolist(), strict=True
    ):
        blocks = -(-int(prompt) // block_tokens)
        yield {
            "timestamp": arrival_s * 1000.0,
            "input_length": int(prompt),
            "output_length": int(output),
            "hash_ids": list(range(next_id, next_id + blocks)),
        }
        next_id += blocks


def write_mooncake(workload: Workload, path: Path, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> MooncakeTrace:
    """Write ``workload`` as Mooncake JSONL at ``path``; a workload with no request is an error."""
    if len(workload) == 0:
        raise ValueError(f"workload {workload.name!r} has no requests: nothing to replay")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in mooncake_records(workload, block_tokens):
            out.write(json.dumps(record, separators=(",", ":")))
            out.write("\n")
    return MooncakeTrace(path, len(workload), float(workload.arrival_s[0]), block_tokens)


@dataclass(frozen=True)
class TimingTables:
    """The arrays of the mocker's NPZ timing model (milliseconds), see the module docstring."""

    prefill_isl: np.ndarray
    prefill_ttft_ms: np.ndarray
    decode_active_kv_tokens: np.ndarray
    decode_context_length: np.ndarray
    decode_itl: np.ndarray  # [kv index, context index]

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            np.savez(
                out,
                prefill_isl=self.prefill_isl,
                prefill_ttft_ms=self.prefill_ttft_ms,
                decode_active_kv_tokens=self.decode_active_kv_tokens,
                decode_context_length=self.decode_context_length,
                decode_itl=self.decode_itl,
            )
        return path


def timing_tables(
    profile: LatencyProfile,
    *,
    prefill_points: int = 257,
    kv_points: int = 129,
    context_points: int = 129,
    max_context_tokens: int = 32768,
) -> TimingTables:
    """pdscale's step model on the mocker's grids: one prefill step of T new tokens (T up to twice the
    chunk size, the mocker extrapolates linearly beyond), one decode step of kv / context sequences (at least
    one; fractional between grid points, so the bilinear interpolation sees a smooth surface) holding kv
    context tokens in all, for kv up to the profile's KV capacity."""
    step = profile.step
    isl = np.linspace(0.0, 2.0 * profile.max_num_batched_tokens, prefill_points)
    prefill_ms = np.array([step.prefill_step_s(t) * 1e3 if t > 0 else 0.0 for t in isl])
    kv = np.linspace(0.0, float(profile.kv_capacity_tokens), kv_points)
    ctx = np.linspace(1.0, float(max_context_tokens), context_points)
    itl = np.empty((kv_points, context_points))
    for i, k in enumerate(kv):
        for j, c in enumerate(ctx):
            itl[i, j] = step.decode_step_s(max(1.0, k / c), k) * 1e3
    return TimingTables(isl, prefill_ms, kv, ctx, itl)


def engine_args(
    profile: LatencyProfile,
    role: str,
    timing_path: Path,
    *,
    startup_s: float | None = None,
    kv_link_gb_per_s: float = 64.0,
    block_tokens: int = 16,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
) -> dict[str, object]:
    """The mocker's engine config for one pool (``role`` ``prefill`` or ``decode``), matched to pdscale's engine:
    the profile's step times (``timing_path``, from ``timing_tables``), chunk size, max sequences and KV capacity
    (``block_tokens``-token blocks, vLLM's default 16), no prefix cache, KV moved from prefill to decode at
    ``kv_link_gb_per_s`` (pdscale's simulator: 64 GB/s plus 1 ms), pods ready ``startup_s`` after the order.
    ``max_model_len`` (vLLM's ``--max-model-len``) is what a worker reports as its context length: Dynamo's
    planner sizes its prefill thresholds by it (queued prompt tokens / context length)."""
    if role not in ("prefill", "decode"):
        raise ValueError(f"role must be 'prefill' or 'decode', got {role!r}")
    engine: dict[str, object] = {
        "worker_type": role,
        "enable_prefix_caching": False,
        "enable_chunked_prefill": True,
        "block_size": block_tokens,
        "num_gpu_blocks": profile.kv_capacity_tokens // block_tokens,
        "max_num_seqs": profile.max_num_seqs,
        "max_num_batched_tokens": profile.max_num_batched_tokens,
        "max_model_len": max_model_len,
        "kv_transfer_bytes_per_token": profile.kv_bytes_per_token,
        "kv_transfer_bandwidth": kv_link_gb_per_s,
        "timing_model": {"type": "external", "provider": "dynamo_profile", "config": {"path": str(timing_path)}},
    }
    args: dict[str, object] = {"engine": engine, "tensor_parallel_size": profile.gpus_per_replica}
    if startup_s is not None:
        args["startup_time"] = float(startup_s)
    return args

"""bench/mocker_inputs.py: pdscale workloads as Mooncake JSONL, pdscale's profile as the mocker's timing table.

Pure functions: no ai-dynamo needed (the bench environment that has it is not the test environment)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoscaler.profiles import load_profile
from bench.mocker_inputs import engine_args, mooncake_records, timing_tables, write_mooncake
from sim.workload import Workload, load_trace, replicate

PROFILE = load_profile("llama-3.1-8b-h100-tp1")


def _workload() -> Workload:
    return Workload(
        "w",
        np.array([2.5, 2.5, 3.0004, 10.0]),
        np.array([1, 512, 513, 2000]),
        np.array([7, 1, 30, 400]),
    )


def test_records_carry_time_in_ms_lengths_and_one_hash_per_512_token_block() -> None:
    recs = list(mooncake_records(_workload()))
    assert [r["timestamp"] for r in recs] == pytest.approx([2500.0, 2500.0, 3000.4, 10000.0])
    assert [r["input_length"] for r in recs] == [1, 512, 513, 2000]
    assert [r["output_length"] for r in recs] == [7, 1, 30, 400]
    assert [len(r["hash_ids"]) for r in recs] == [1, 1, 2, 4]  # type: ignore[arg-type]


def test_hash_ids_never_repeat_so_the_mocker_prefix_cache_cannot_hit() -> None:
    ids = [i for r in mooncake_records(_workload(), block_tokens=64) for i in r["hash_ids"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) == 1 + 8 + 9 + 32


def test_written_trace_reads_back_identically_through_pdscales_mooncake_reader(tmp_path: Path) -> None:
    w = _workload()
    trace = write_mooncake(w, tmp_path / "sub" / "t.jsonl")
    assert (trace.requests, trace.offset_s, trace.block_tokens) == (4, 2.5, 512)
    back = load_trace(trace.path)  # pdscale's reader, like the mocker, starts the clock at the first request
    np.testing.assert_allclose(back.arrival_s + trace.offset_s, w.arrival_s, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(back.prompt_tokens, w.prompt_tokens)
    np.testing.assert_array_equal(back.output_tokens, w.output_tokens)
    first = json.loads(trace.path.read_text().splitlines()[0])
    assert set(first) == {"timestamp", "input_length", "output_length", "hash_ids"}


def test_replicated_azure_trace_converts_request_for_request(tmp_path: Path) -> None:
    csv = tmp_path / "mini.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:10.0000000,1020,3\n"
    )
    w = replicate(load_trace(csv), 3, spread_s=10.0, seed=1)
    trace = write_mooncake(w, tmp_path / "x3.jsonl")
    back = load_trace(trace.path)
    assert len(back) == 9
    np.testing.assert_allclose(back.arrival_s + trace.offset_s, w.arrival_s, atol=1e-9)
    np.testing.assert_array_equal(back.prompt_tokens, w.prompt_tokens)


def test_empty_workload_and_bad_block_size_are_refused(tmp_path: Path) -> None:
    empty = Workload("empty", np.array([]), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="no requests"):
        write_mooncake(empty, tmp_path / "e.jsonl")
    with pytest.raises(ValueError, match="block_tokens"):
        list(mooncake_records(_workload(), block_tokens=0))


def test_timing_tables_are_the_profiles_step_times_on_the_mocker_grids(tmp_path: Path) -> None:
    t = timing_tables(PROFILE, prefill_points=9, kv_points=5, context_points=4, max_context_tokens=4096)
    assert t.decode_itl.shape == (5, 4)
    i = 4  # 8192 new tokens: one full chunk
    assert t.prefill_isl[i] == PROFILE.max_num_batched_tokens
    assert t.prefill_ttft_ms[i] == pytest.approx(PROFILE.step.prefill_step_s(8192) * 1e3)
    assert t.prefill_ttft_ms[0] == 0.0
    kv, ctx = t.decode_active_kv_tokens[2], t.decode_context_length[1]
    assert t.decode_itl[2, 1] == pytest.approx(PROFILE.step.decode_step_s(kv / ctx, kv) * 1e3)  # type: ignore[arg-type]
    # more context at the same KV means fewer sequences: never slower
    assert np.all(np.diff(t.decode_itl, axis=1) <= 1e-12)
    assert np.all(np.diff(t.decode_itl, axis=0) >= -1e-12)
    saved = np.load(t.save(tmp_path / "p.npz"))
    assert set(saved.files) == {
        "prefill_isl", "prefill_ttft_ms", "decode_active_kv_tokens", "decode_context_length", "decode_itl",
    }  # fmt: skip
    np.testing.assert_array_equal(saved["decode_itl"], t.decode_itl)


def test_engine_args_match_the_profile_and_reject_unknown_roles(tmp_path: Path) -> None:
    args = engine_args(PROFILE, "decode", tmp_path / "p.npz", startup_s=120)
    engine = args["engine"]
    assert isinstance(engine, dict)
    assert engine["worker_type"] == "decode"
    assert engine["num_gpu_blocks"] * engine["block_size"] <= PROFILE.kv_capacity_tokens
    assert engine["max_num_seqs"] == PROFILE.max_num_seqs
    assert engine["enable_prefix_caching"] is False
    assert engine["timing_model"]["config"]["path"] == str(tmp_path / "p.npz")
    assert args["startup_time"] == 120.0
    assert "startup_time" not in engine_args(PROFILE, "prefill", tmp_path / "p.npz")
    with pytest.raises(ValueError, match="role"):
        engine_args(PROFILE, "aggregated", tmp_path / "p.npz")

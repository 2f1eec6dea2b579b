"""pdscale profile on CPU with a tiny Llama shape: measures, fits, writes a profile the loader accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.profiles import load_profile
from workers.profiler import (
    MODELS,
    Grid,
    ProfilerError,
    fit_nonnegative,
    fit_run,
    profile_document,
    shape_from_config,
    time_torch,
)

TINY_GRID = Grid((8, 32, 128, 256), (1, 4, 16), (16, 64))


def test_nonnegative_fit_recovers_known_coefficients() -> None:
    rows = [(1.0, t, float(t * t)) for t in (1, 10, 100, 1000)]
    times = [0.002 + 1e-5 * t + 3e-9 * t * t for _, t, _ in rows]
    fit = fit_nonnegative(rows, times)
    assert fit.coefficients == pytest.approx((0.002, 1e-5, 3e-9), rel=1e-6)
    assert fit.rms_residual_s < 1e-12


def test_nonnegative_fit_never_returns_a_negative_coefficient() -> None:
    rows = [(1.0, t, 0.0) for t in (1.0, 2.0, 3.0)]
    fit = fit_nonnegative(rows, [3.0, 2.0, 1.0])  # falling with t: the free fit wants b < 0
    assert min(fit.coefficients) >= 0.0


def test_cpu_run_writes_a_profile_that_loads(tmp_path: Path) -> None:
    run = fit_run(time_torch(MODELS["tiny"], TINY_GRID, "cpu", repeats=2, warmup=1))
    assert len(run.prefill) == 4 and len(run.decode) == 6
    assert all(s > 0 for _, s in run.prefill) and all(s > 0 for _, _, s in run.decode)
    doc = profile_document(run, "tiny-test", memory_bytes=1e9)
    path = tmp_path / "tiny.yaml"
    from workers.profiler import write_profile

    write_profile(doc, path)
    profile = load_profile(str(path))
    assert profile.name == "tiny-test"
    assert "torch" in profile.source and "Grid:" in profile.source
    assert profile.kv_bytes_per_token == MODELS["tiny"].kv_bytes_per_token(2)
    # the fitted model is increasing in work, as the loader's sanity check requires
    assert profile.step.prefill_step_s(256) >= profile.step.prefill_step_s(8) > 0


def test_cli_profile_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.yaml"
    rc = main([
        "profile", "--model", "tiny", "--device", "cpu", "--prefill-tokens", "8,32,128", "--decode-batch", "1,4",
        "--decode-context", "16,64", "--repeats", "2", "--memory-gb", "1", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "rms residual" in text and str(out) in text
    assert load_profile(str(out)).step.decode_step_s(4, 256.0) > 0


def test_cli_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():  # on a GPU machine the CUDA path must work instead
        rc = main(["profile", "--model", "tiny", "--device", "cuda", "--prefill-tokens", "8,16,32",
                   "--decode-batch", "1,2", "--decode-context", "8,16", "--memory-gb", "1",
                   "--out", str(tmp_path / "g.yaml")])  # fmt: skip
        assert rc == 0
        return
    rc = main(["profile", "--model", "tiny", "--device", "cuda", "--out", str(tmp_path / "g.yaml")])
    assert rc == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_engine_vllm_needs_vllm_or_a_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["profile", "--engine", "vllm", "--out", str(tmp_path / "v.yaml")])
    assert rc == 2
    assert "--model-dir" in capsys.readouterr().err


def test_shape_from_hf_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "_name_or_path": "x/y", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
    }))  # fmt: skip
    shape = shape_from_config(cfg)
    assert (shape.num_layers, shape.num_kv_heads, shape.dim_per_head) == (2, 2, 16)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ProfilerError, match="num_hidden_layers"):
        shape_from_config(bad)


def test_grid_needs_enough_points_to_fit() -> None:
    with pytest.raises(ProfilerError, match="prefill_tokens"):
        Grid((8, 16), (1, 2), (8, 16))

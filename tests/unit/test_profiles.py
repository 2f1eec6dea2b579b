"""autoscaler.profiles: built-in YAML profiles, validation errors, user profiles, the ``pdscale profiles`` CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from autoscaler.cli import main
from autoscaler.core.latency import PolyModel, RooflineModel, TableModel, prefill_tokens_per_s
from autoscaler.profiles import PROFILE_DIR, ProfileError, builtin_profiles, load_profile

H100_BW = 3.35e12
WEIGHTS_8B = 16.06e9


def test_required_builtins_exist() -> None:
    names = builtin_profiles()
    for required in ("llama-3.1-8b-h100-tp1", "llama-3.3-70b-h100-tp4", "llama-3.1-8b-h200-tp1-roofline"):
        assert required in names


@pytest.mark.parametrize("name", builtin_profiles())
def test_every_builtin_loads_and_cites(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert len(p.source) > 40
    assert p.kv_capacity_tokens > 100_000
    # A replica must hold at least one max-length prefill chunk's worth of KV many times over.
    assert p.kv_capacity_tokens > 10 * p.max_num_batched_tokens


@pytest.mark.parametrize(
    ("name", "model", "gpus", "kv_bytes", "capacity", "prefill_tok_s_range"),
    [
        pytest.param("llama-3.1-8b-h100-tp1", PolyModel, 1, 131072, 411_529, (40_000, 60_000), id="8b-h100"),
        pytest.param("llama-3.3-70b-h100-tp4", PolyModel, 4, 327680, 424_194, (10_000, 14_000), id="70b-tp4"),
        pytest.param("llama-3.1-8b-h200-tp1-roofline", RooflineModel, 1, 131072, 830_383, (30_000, 45_000),
                     id="8b-h200-roofline"),
    ],
)
def test_key_numbers(name: str, model: type, gpus: int, kv_bytes: int, capacity: int,
                     prefill_tok_s_range: tuple[float, float]) -> None:
    p = load_profile(name)
    assert isinstance(p.step, model)
    assert (p.gpus_per_replica, p.kv_bytes_per_token, p.kv_capacity_tokens) == (gpus, kv_bytes, capacity)
    # vLLM's OpenAI-server defaults on a >= 70 GiB GPU that is not an A100 (vllm/engine/arg_utils.py)
    assert (p.max_num_seqs, p.max_num_batched_tokens) == (1024, 8192)
    lo, hi = prefill_tok_s_range
    assert lo < prefill_tokens_per_s(p) < hi


def test_8b_poly_is_calibrated_on_measured_step_times() -> None:
    p = load_profile("llama-3.1-8b-h100-tp1")
    step = p.step
    assert isinstance(step, PolyModel)
    # fixed step: weights at the measured 0.79 bandwidth efficiency + CPU, fitted on the vLLM CI latency test
    assert step.decode_a_s == step.prefill_a_s == 7.66e-3
    assert step.decode_a_s > WEIGHTS_8B / (0.79 * H100_BW)
    assert (step.prefill_b_s_per_token, step.prefill_c_s_per_token2) == (19.3e-6, 4.3e-10)
    # the KV read at the paged decode-attention bandwidth (0.62 of HBM peak, public FA2/FA3 kernel measurements)
    assert step.decode_b_s_per_context_token == pytest.approx(131072 / (0.62 * H100_BW), rel=0.01)
    assert step.decode_c_s_per_seq == 6.0e-6  # BLIS beta2
    # BLIS alpha0/alpha1 as host overheads; alpha2 deliberately 0 (see the profile's source)
    assert (p.host.request_s, p.host.request_per_prompt_token_s, p.host.output_token_s) == (2.325e-4, 1.752e-6, 0)


@pytest.mark.parametrize("name", ["llama-3.1-8b-h100-tp1", "llama-3.1-8b-h100-tp1-roofline"])
@pytest.mark.parametrize("batch", [1, 16, 64, 256])
def test_8b_decode_step_above_bandwidth_floor(name: str, batch: int) -> None:
    p = load_profile(name)
    assert p.step.decode_step_s(batch, batch * 1024) >= WEIGHTS_8B / H100_BW  # ≈ 4.8 ms


def test_kv_capacity_arithmetic_in_file_matches() -> None:
    doc = yaml.safe_load((PROFILE_DIR / "llama-3.1-8b-h100-tp1.yaml").read_text())
    kv = doc["kv"]
    free = float(kv["memory_bytes"]) * kv["gpu_memory_utilization"] - float(kv["weight_bytes"]) - float(
        kv["activation_bytes"]
    )
    assert kv["capacity_tokens"] == int(free / kv["bytes_per_token"])


def _user_profile(**overrides: object) -> dict:
    doc: dict = {
        "name": "user-8b",
        "source": ["my own sweep"],
        "model": {"params": 8.03e9, "layers": 32, "hidden_size": 4096, "kv_heads": 8, "head_dim": 128,
                  "dtype_bytes": 2},
        "hardware": {"gpu": "H100", "gpus_per_replica": 1},
        "engine": {"max_num_seqs": 128, "max_num_batched_tokens": 4096},
        "kv": {"capacity_tokens": 300000},
        "step": {
            "type": "table",
            "prefill": {"tokens": [128, 1024, 8192], "step_s": [0.01, 0.03, 0.17]},
            "decode": {"batch": [1, 64, 256], "context_per_seq": [256, 4096],
                       "step_s": [[0.006, 0.0065], [0.008, 0.016], [0.014, 0.05]]},
        },
    }
    for dotted, value in overrides.items():
        node = doc
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return doc


def _write(tmp_path: Path, doc: object, name: str = "user.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return p


def test_user_table_profile_by_path(tmp_path: Path) -> None:
    p = load_profile(str(_write(tmp_path, _user_profile())))
    assert isinstance(p.step, TableModel)
    assert p.kv_bytes_per_token == 131072  # derived from the model shape
    assert (p.max_num_seqs, p.max_num_batched_tokens) == (128, 4096)
    assert p.step.prefill_step_s(1024) == 0.03


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param({"source": None}, "'source': missing", id="no-source"),
        pytest.param({"name": None}, "'name': missing", id="no-name"),
        pytest.param({"kv__capacity_tokens": None}, "'kv.capacity_tokens': missing", id="no-capacity"),
        pytest.param({"kv__capacity_tokens": -5}, "'kv.capacity_tokens': must be >= 1", id="negative-capacity"),
        pytest.param({"kv__bytes_per_token": 1000}, "'kv.bytes_per_token': 1000 disagrees", id="kv-mismatch"),
        pytest.param({"engine__max_num_seqs": 1.5}, "'engine.max_num_seqs': expected an integer", id="float-seqs"),
        pytest.param({"step__type": "magic"}, "'step.type': unknown step model 'magic'", id="bad-type"),
        pytest.param({"step__prefill__step_s": [0.01, "x", 0.17]}, "'step.prefill.step_s[1'", id="bad-number"),
        pytest.param({"step__prefill__tokens": [128, 64, 8192]}, "strictly increasing", id="table-order"),
        pytest.param({"step__prefill__step_s": [0.01, 0.03, 0.02]}, "non-decreasing", id="non-monotone"),
        pytest.param({"hardware": None}, "'hardware': missing", id="no-hardware"),
        pytest.param({"colour": "red"}, "unknown field(s) 'colour'", id="unknown-top"),
        pytest.param({"kv__memory_bytes": 80e9}, "'kv.gpu_memory_utilization': missing", id="partial-arith"),
        pytest.param({"kv__memory_bytes": 80e9, "kv__gpu_memory_utilization": 0.9, "kv__weight_bytes": 16.06e9,
                      "kv__activation_bytes": 2e9}, "'kv.capacity_tokens': 300000 disagrees", id="arith-mismatch"),
        pytest.param({"step": {"type": "roofline"}}, "'hardware.flops_per_s': missing", id="roofline-needs-gpu"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path: Path, overrides: dict, fragment: str) -> None:
    path = _write(tmp_path, _user_profile(**overrides))
    with pytest.raises(ProfileError) as exc:
        load_profile(str(path))
    assert str(path) in str(exc.value)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("name: [unclosed", "invalid YAML", id="bad-yaml"),
        pytest.param("- a\n- b\n", "mapping at the top level", id="not-a-mapping"),
    ],
)
def test_unparsable_files(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ProfileError, match=fragment):
        load_profile(str(_write(tmp_path, text)))


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(ProfileError, match=re.escape("llama-3.1-8b-h100-tp1")):
        load_profile("no-such-profile")
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile("/nonexistent/x.yaml")


# ---- CLI ----


def test_cli_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(builtin_profiles())
    r = by_name["llama-3.1-8b-h100-tp1"]
    assert r["prefill_tokens_per_s_at_8k"] == pytest.approx(8192 / (7.66e-3 + 19.3e-6 * 8192 + 4.3e-10 * 8192**2))
    assert r["decode_step_s_b1_ctx1k"] < r["decode_step_s_b64_ctx1k"] < r["decode_step_s_b256_ctx1k"]
    assert r["kv_capacity_tokens"] == 411_529


def test_cli_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in builtin_profiles():
        assert name in out


@pytest.mark.parametrize("use_path", [False, True], ids=["by-name", "by-path"])
def test_cli_show(capsys: pytest.CaptureFixture[str], use_path: bool) -> None:
    target = str(PROFILE_DIR / "llama-3.3-70b-h100-tp4.yaml") if use_path else "llama-3.3-70b-h100-tp4"
    assert main(["profiles", "show", target, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["gpus_per_replica"] == 4
    assert "BLIS" in shown["source"]
    assert main(["profiles", "show", target]) == 0
    assert "sources:" in capsys.readouterr().out


def test_cli_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "nope"]) == 1
    assert "unknown profile" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "batch", "context_per_seq", "published_s", "rel"),
    [
        # vLLM CI build 9515 on H200: Llama-3.1-8B TP1, input 32, output 128, batch 8 -> about 6.5 ms per step.
        pytest.param("llama-3.1-8b-h200-tp1-roofline", 8, 96, 6.5e-3, 0.10, id="h200-vllm-ci"),
        # vLLM CI latency test on H100: Llama-3.1-8B TP1, input 32, output 128, batch 8 -> 997.5 ms / 128 steps.
        pytest.param("llama-3.1-8b-h100-tp1", 8, 96, 997.542e-3 / 128, 0.05, id="h100-vllm-ci"),
        # NIM 70B TP2 FP8 ITL 18.6 ms at concurrency 1; our TP4 bf16 profile must be in the same range.
        pytest.param("llama-3.3-70b-h100-tp4", 1, 5000, 15e-3, 0.25, id="70b-nim-range"),
    ],
)
def test_calibration_anchors(name: str, batch: int, context_per_seq: float, published_s: float, rel: float) -> None:
    step = load_profile(name).step
    assert step.decode_step_s(batch, batch * context_per_seq) == pytest.approx(published_s, rel=rel)


def test_roofline_kv_bandwidth_efficiency_applies_to_the_kv_read_only() -> None:
    p = load_profile("llama-3.1-8b-h100-tp1-roofline")
    step = p.step
    assert isinstance(step, RooflineModel) and step.kv_bw_efficiency == 0.62
    from dataclasses import replace

    same_bw = replace(step, kv_bw_efficiency=None)
    # no context: only weights are read, both agree; with context the slower KV read costs more
    assert step.decode_step_s(8, 0.0) == pytest.approx(same_bw.decode_step_s(8, 0.0))
    extra = step.decode_step_s(64, 64 * 2048) - same_bw.decode_step_s(64, 64 * 2048)
    expected = 64 * 2048 * 131072 * (1 / (0.62 * H100_BW) - 1 / (step.bw_efficiency * H100_BW))
    assert extra == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="kv_bw_efficiency"):
        replace(step, kv_bw_efficiency=1.5)

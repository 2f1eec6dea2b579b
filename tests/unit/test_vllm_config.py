"""workers/vllm.py: one config -> the prefill and decode instances' `vllm serve` arguments and environment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from workers.vllm import (
    VLLMConfig,
    api_server_command,
    config_from_worker_args,
    kv_transfer_config,
    load_config,
    serve_args,
    serve_command,
    serve_env,
)
from workers.worker_cli import add_worker_arguments


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_gpu_pair_from_one_config() -> None:
    cfg = VLLMConfig(model="meta-llama/Llama-3.1-8B-Instruct", served_model_name="llama", max_model_len=16384,
                     max_num_seqs=256, max_num_batched_tokens=8192, shutdown_timeout_s=60)
    p, d = serve_args(cfg, "prefill"), serve_args(cfg, "decode")
    assert json.loads(flag(p, "--kv-transfer-config") or "") == {"kv_connector": "NixlConnector",
                                                                  "kv_role": "kv_producer"}
    assert json.loads(flag(d, "--kv-transfer-config") or "")["kv_role"] == "kv_consumer"
    for args in (p, d):
        assert flag(args, "--served-model-name") == "llama"
        assert flag(args, "--max-model-len") == "16384"
        assert flag(args, "--max-num-seqs") == "256"
        assert flag(args, "--max-num-batched-tokens") == "8192"
        assert flag(args, "--shutdown-timeout") == "60"
        assert flag(args, "--port") == "8000"  # separate pods: same port
        assert "--enforce-eager" not in args and "--dtype" not in args
    assert serve_env(cfg, "prefill")["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5600"
    assert serve_command(cfg, "decode")[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]
    assert kv_transfer_config(cfg, "aggregated") is None
    assert "--kv-transfer-config" not in serve_args(cfg, "aggregated")


def test_cpu_pair_on_one_machine_gets_distinct_ports_and_cores() -> None:
    cfg = VLLMConfig(model="/m", device="cpu", port=9000, decode_port=9001, kv_cache_memory_bytes=134217728,
                     cpu_threads_bind={"prefill": "0", "decode": "1"}, env={"HF_HUB_OFFLINE": "1"})
    p, d = serve_args(cfg, "prefill"), serve_args(cfg, "decode")
    assert (flag(p, "--port"), flag(d, "--port")) == ("9000", "9001")
    assert json.loads(flag(p, "--kv-transfer-config") or "")["kv_buffer_device"] == "cpu"
    for args in (p, d):  # what reference/vllm-on-cpu.md found NIXL on CPU needs
        assert flag(args, "--dtype") == "float32" and "--enforce-eager" in args
        assert flag(args, "--block-size") == "32" and "--no-enable-prefix-caching" in args
    ep, ed = serve_env(cfg, "prefill"), serve_env(cfg, "decode")
    assert (ep["VLLM_NIXL_SIDE_CHANNEL_PORT"], ed["VLLM_NIXL_SIDE_CHANNEL_PORT"]) == ("5600", "5601")
    assert (ep["VLLM_CPU_OMP_THREADS_BIND"], ed["VLLM_CPU_OMP_THREADS_BIND"]) == ("0", "1")
    assert ed["HF_HUB_OFFLINE"] == "1"
    cmd = api_server_command(cfg, "prefill", "/venv/bin/python")
    assert cmd[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]


def test_yaml_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "vllm.yaml"
    path.write_text("model: /m\nmax_model_len: 512\ndevice: cpu\nextra_args: [--seed, 1]\n")
    cfg = load_config(path)
    assert cfg.max_model_len == 512 and serve_args(cfg, "decode")[-2:] == ["--seed", "1"]
    path.write_text("model: /m\nmax_model_lenn: 512\n")
    with pytest.raises(ValueError, match=r"unknown field.*max_model_lenn"):
        load_config(path)
    with pytest.raises(ValueError, match="device"):
        VLLMConfig(model="/m", device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        serve_args(VLLMConfig(model="/m"), "router")


def test_worker_flags_map_onto_the_config(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    (tmp_path / "c.yaml").write_text("model: /base\nmax_num_seqs: 4\ndevice: cpu\n")
    args = parser.parse_args(["/m", "--engine", "vllm", "--port", "7000", "--max-model-len", "256",
                              "--pd-pair", "--vllm-config", str(tmp_path / "c.yaml"), "--drain-timeout-s", "12"])
    cfg, roles = config_from_worker_args(args)
    assert roles == ["prefill", "decode"]
    assert (cfg.model, cfg.port, cfg.decode_port, cfg.max_model_len, cfg.max_num_seqs, cfg.shutdown_timeout_s) == (
        "/m", 7000, 7001, 256, 4, 12)
    args = parser.parse_args(["--model", "/m", "--engine", "vllm", "--kv-transfer-config",
                              '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}'])
    assert config_from_worker_args(args)[1] == ["decode"]

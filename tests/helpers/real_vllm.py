"""Start a real vLLM server on CPU for tests (``.venv-vllm`` and the tiny local Llama from scripts/ensure-vllm.sh).

The command line and environment come from ``workers.vllm`` (the same code the manifests and
``pdscale worker --engine vllm`` use), with every cache and IPC path under the test's temp dir, the engine bound to
one core (``VLLM_CPU_OMP_THREADS_BIND``), HF offline. ``stop()`` sends SIGTERM to the process group, SIGKILL after
15 s, and only after a SIGKILL removes the /dev/shm entries that appeared while it ran (a SIGTERMed vLLM removes
its own).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.net import LOOPBACK, free_port
from tests.helpers.processes import ManagedProcess, ProcessRunner
from workers.vllm import VLLMConfig, api_server_command, serve_env

REPO = Path(__file__).resolve().parents[2]
VLLM_VERSION = "0.32.0"
MODEL_SNAPSHOT = "hf/hub/models--pdscale--tiny-llama/snapshots/0000000000000000000000000000000000000000"
START_TIMEOUT_S = 240.0


def vllm_python() -> str:
    venv = Path(os.environ.get("VLLM_VENV", REPO / ".venv-vllm"))
    if not (venv / f".pdscale-vllm-{VLLM_VERSION}").is_file():
        pytest.fail(f"real vLLM is not installed in {venv}: run `make vllm` (scripts/ensure-vllm.sh) first")
    return str(venv / "bin" / "python")


def tiny_model_dir() -> str:
    path = Path(os.environ.get("PDSCALE_CACHE", REPO / ".cache" / "pdscale")) / MODEL_SNAPSHOT
    if not (path / ".complete").is_file():
        pytest.fail(f"the tiny local Llama is missing at {path}: run `make vllm` (scripts/ensure-vllm.sh) first")
    return str(path)


@dataclass
class RealVLLM:
    proc: ManagedProcess
    port: int
    shm_before: frozenset[str]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        self.proc.stop(timeout_s=15.0)
        rc = self.proc.returncode
        if rc is not None and rc < 0 and rc == -9:
            for name in set(os.listdir("/dev/shm")) - self.shm_before:
                if name.startswith(("psm_", "vllm", "torch_")):
                    Path("/dev/shm", name).unlink(missing_ok=True)


def start_real_vllm(
    runner: ProcessRunner, work_dir: Path, *, served_model_name: str = "tiny", max_model_len: int = 512,
    max_num_seqs: int = 8, cpu_core: str = "0",
) -> RealVLLM:
    python, model = vllm_python(), tiny_model_dir()
    port = free_port()
    config = VLLMConfig(
        model=model, served_model_name=served_model_name, host=LOOPBACK, port=port, max_model_len=max_model_len,
        max_num_seqs=max_num_seqs, kv_cache_memory_bytes=128 * 1024 * 1024, device="cpu",
        cpu_threads_bind={"aggregated": cpu_core}, shutdown_timeout_s=0,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **serve_env(config, "aggregated"),
        "TMPDIR": str(work_dir), "VLLM_RPC_BASE_PATH": str(work_dir), "VLLM_CACHE_ROOT": str(work_dir / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(work_dir / "inductor"), "HF_HOME": str(work_dir / "hf"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    shm_before = frozenset(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else frozenset()
    proc = runner.start(api_server_command(config, "aggregated", python), name="real-vllm", env=env)
    server = RealVLLM(proc, port, shm_before)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.running:
            pytest.fail(f"real vLLM exited (rc {proc.returncode}) while starting:\n{proc.tail(60)}")
        try:
            with urllib.request.urlopen(f"{server.url}/v1/models", timeout=2.0) as resp:
                if served_model_name in [m["id"] for m in json.load(resp)["data"]]:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"real vLLM not serving after {START_TIMEOUT_S:.0f} s:\n{proc.tail(60)}")

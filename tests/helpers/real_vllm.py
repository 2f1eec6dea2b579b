"""Start real vLLM on CPU for tests (``.venv-vllm`` and the tiny local Llama from scripts/ensure-vllm.sh).

Launched through ``pdscale worker --engine vllm`` (so its command lines come from ``workers/vllm.py``, the code the
manifests use, and its SIGTERM forwarding is exercised at teardown), with every cache and IPC path under the
test's temp dir, each server bound to one core (``VLLM_CPU_OMP_THREADS_BIND``), NIXL side-channel ports picked
free, HF offline, and (P/D pair) NIXL's busy-polling threads at SCHED_IDLE once serving. ``stop()`` sends SIGTERM
to the process group, SIGKILL after 20 s, and only after a SIGKILL removes the /dev/shm entries that appeared while
it ran (a SIGTERMed vLLM removes its own).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workers.local.cluster import ClusterSpec
from workers.local.cpu_placement import place
from workers.local.net import LOOPBACK, free_port, free_port_pair
from workers.local.processes import ManagedProcess, ProcessRunner

REPO = Path(__file__).resolve().parents[2]
VLLM_VERSION = "0.32.0"
MODEL_SNAPSHOT = "hf/hub/models--pdscale--tiny-llama/snapshots/0000000000000000000000000000000000000000"
START_TIMEOUT_S = 420.0  # ~65 s on a quiet 2-core machine, 205-230 s measured while other sessions loaded it


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
    """One launcher process (``pdscale worker --engine vllm``) and the port(s) of the server(s) it runs."""

    proc: ManagedProcess
    port: int
    shm_before: frozenset[str]
    decode_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def decode_url(self) -> str:
        assert self.decode_port is not None
        return f"http://{LOOPBACK}:{self.decode_port}"

    def stop(self) -> None:
        self.proc.stop(timeout_s=20.0)
        if self.proc.returncode == -9:  # killed: a SIGTERMed vLLM removes its own segments
            for name in set(os.listdir("/dev/shm")) - self.shm_before:
                if name.startswith(("psm_", "vllm", "torch_")):
                    Path("/dev/shm", name).unlink(missing_ok=True)


def _failure_report(proc: ManagedProcess) -> str:
    """The lines naming errors (the root cause is often far above the tail) and the tail of the log."""
    lines = proc.output().splitlines()
    errors = [ln for ln in lines if any(w in ln for w in ("Error", "error:", "Killed", "No space", "Errno"))]
    return "\n".join(["errors:", *errors[:40], "tail:", *lines[-40:], f"(full log: {proc.log_path})"])


def _wait_serving(server: RealVLLM, url: str, name: str, deadline: float) -> None:
    proc = server.proc
    while time.monotonic() < deadline:
        if not proc.running:
            pytest.fail(f"real vLLM exited (rc {proc.returncode}) while starting:\n{_failure_report(proc)}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2.0) as resp:
                if name in [m["id"] for m in json.load(resp)["data"]]:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    report = _failure_report(proc)
    server.stop()
    pytest.fail(f"real vLLM at {url} not serving after {START_TIMEOUT_S:.0f} s:\n{report}")


def start_real_vllm(
    runner: ProcessRunner, work_dir: Path, *, served_model_name: str = "tiny", max_model_len: int = 512,
    max_num_seqs: int = 8, pd_pair: bool = False,
) -> RealVLLM:
    """Real vLLM through ``pdscale worker --engine vllm`` (one aggregated server, or with ``pd_pair`` a
    NixlConnector prefill server on ``port`` and decode server on ``port + 1``, one core each)."""
    python, model = vllm_python(), tiny_model_dir()
    port = free_port_pair() if pd_pair else free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "vllm.yaml"
    config.write_text(
        "device: cpu\n"
        "kv_cache_memory_bytes: 134217728\n"
        f"side_channel_port: {free_port()}\n"
        f"decode_side_channel_port: {free_port()}\n"
        "cpu_threads_bind: {aggregated: '0', prefill: '0', decode: '1'}\n"
    )
    env = {
        "TMPDIR": str(work_dir), "VLLM_RPC_BASE_PATH": str(work_dir), "VLLM_CACHE_ROOT": str(work_dir / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(work_dir / "inductor"), "HF_HOME": str(work_dir / "hf"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    argv = [sys.executable, "-m", "autoscaler.cli", "worker", "--engine", "vllm", model, "--vllm-python", python,
            "--vllm-config", str(config), "--host", LOOPBACK, "--port", str(port), "--served-model-name",
            served_model_name, "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--drain-timeout-s", "0", *(["--pd-pair"] if pd_pair else [])]
    shm_before = frozenset(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else frozenset()
    proc = runner.start(argv, name="real-vllm", env=env)
    server = RealVLLM(proc, port, shm_before, decode_port=port + 1 if pd_pair else None)
    deadline = time.monotonic() + START_TIMEOUT_S
    _wait_serving(server, server.url, served_model_name, deadline)
    if pd_pair:
        _wait_serving(server, server.decode_url, served_model_name, deadline)
        # NIXL's UCX progress thread busy-polls a core per server for as long as the module's tests run (an idle
        # pair used 2.0 cores): SCHED_IDLE, as the local pod runner does for a Ready pod (workers.local.cpu_placement)
        place(proc.pid, cpus=None, demote_busy_pollers=True)
    return server


def real_vllm_cluster_spec(**overrides: Any) -> ClusterSpec:
    """The one-machine cluster with real vLLM pods (a prefill and a decode pool, NixlConnector) that the live-loop
    test and ``bench/bench_vllm_cpu_placement.py`` run; ``overrides`` replace fields (``autoscaler`` whole).

    One controller, so a long Lease costs no failover time; its kube timeout (lease/4 = 10 s) rides out the
    emulator's slow answers while three vLLM servers load the two cores (at 15 s / 3.75 s the controller lost the
    Lease and could not list its autoscalers for minutes, and never scaled back). The vLLM pods run at nice 10
    (thread and session autogroup) once ready, at 0 while they start (KubeletOptions.startup_nice): a new server
    beside two busy ones then starts in ~40-60 s, not ~6 min."""
    fields: dict[str, Any] = dict(
        namespace="vllm", model="tiny", engine="vllm", vllm_python=vllm_python(), vllm_model_dir=tiny_model_dir(),
        vllm_max_model_len=512, max_num_seqs=4,
        # the controller's capacity model: 8B/H100 step times x2 ~ the tiny model on one busy CPU core
        time_scale=2.0, startup_s=120.0, tick_s=2.0, scrape_s=1.0, window_s=15.0, lease_s=40.0, controllers=1,
        ttft_target_s=5.0, itl_target_s=1.5, max_replicas=2, pre_stop_s=2, grace_s=40, probe_period_s=1.0,
        probe_timeout_s=5.0,
        autoscaler={"prefill": {"maxReplicas": 1},
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20,
                                               "policies": [{"type": "Pods", "value": 1, "periodSeconds": 2}]}}},
    )  # fmt: skip
    fields.update(overrides)
    return ClusterSpec(**fields)

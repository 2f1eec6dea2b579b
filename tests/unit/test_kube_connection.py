"""``pdscale run`` finds the cluster as kubectl does (autoscaler.kube.load_kube_connection): --kubeconfig, else
$KUBECONFIG's files merged, else ~/.kube/config, else the pod's service account; --context; the namespace of the
context (or the pod). The files are real kubeconfigs; the kubernetes client's own loaders read them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.kube import load_kube_connection
from tests.helpers.live import bare_autoscaler
from workers.local.kube_emulator import KubeEmulator

ROOT = Path(__file__).resolve().parents[2]


def kubeconfig(path: Path, *, clusters: dict[str, str] = {}, users: dict[str, str] = {},  # noqa: B006
               contexts: dict[str, tuple[str, str, str | None]] = {}, current: str | None = None) -> Path:  # noqa: B006
    """A kubeconfig with ``clusters`` (name -> server), ``users`` (name -> token), ``contexts``
    (name -> (cluster, user, namespace))."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in clusters.items()],
        "users": [{"name": n, "user": {"token": t}} for n, t in users.items()],
        "contexts": [{"name": n, "context": {"cluster": c, "user": u, **({"namespace": ns} if ns else {})}}
                     for n, (c, u, ns) in contexts.items()],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def one(path: Path, server: str, token: str, namespace: str | None = None, name: str = "c") -> Path:
    return kubeconfig(path, clusters={name: server}, users={name: token},
                      contexts={name: (name, name, namespace)}, current=name)


def token_of(conn: Any) -> str:
    return str(conn.configuration.api_key.get("authorization") or conn.configuration.api_key.get("BearerToken"))


@pytest.fixture
def pod(tmp_path: Path) -> dict[str, str]:
    """Environment of a pod: service host/port and a mounted service account (token, CA, namespace)."""
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (sa / "namespace").write_text("pod-ns")
    return {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOME": str(tmp_path / "h"),
            "SA": str(sa)}


def load(env: dict[str, str], kubeconfig: str | None = None, context: str | None = None) -> Any:
    return load_kube_connection(kubeconfig, context, environ=env, service_account_dir=env.get("SA", "/nonexistent"))


def test_flag_wins_over_kubeconfig_env_and_home(tmp_path: Path, pod: dict[str, str]) -> None:
    flag = one(tmp_path / "flag", "https://flag:6443", "flag-token", "flag-ns")
    env_file = one(tmp_path / "env", "https://env:6443", "env-token")
    home = Path(pod["HOME"]) / ".kube"
    home.mkdir(parents=True)
    one(home / "config", "https://home:6443", "home-token")
    conn = load({**pod, "KUBECONFIG": str(env_file)}, kubeconfig=str(flag))
    assert conn.configuration.host == "https://flag:6443"
    assert "flag-token" in token_of(conn)
    assert conn.namespace == "flag-ns" and "flag" in conn.source


def test_kubeconfig_env_list_is_merged_first_current_context_wins(tmp_path: Path, pod: dict[str, str]) -> None:
    # file a: the context (current) and its user; file b: the cluster, another current-context; c is missing
    a = kubeconfig(tmp_path / "a", users={"u": "a-token"}, contexts={"ctx-a": ("cl", "u", "team-a")},
                   current="ctx-a")
    b = kubeconfig(tmp_path / "b", clusters={"cl": "https://merged:6443"}, users={"u": "b-token"},
                   contexts={"ctx-b": ("cl", "u", None)}, current="ctx-b")
    env = {**pod, "KUBECONFIG": os.pathsep.join([str(a), str(tmp_path / "missing"), str(b)])}
    conn = load(env)
    assert conn.configuration.host == "https://merged:6443"  # cluster from b, context from a
    assert "a-token" in token_of(conn)  # the first file's user of that name wins
    assert conn.namespace == "team-a"
    other = load(env, context="ctx-b")
    assert other.namespace is None and other.configuration.host == "https://merged:6443"


def test_home_kube_config_before_in_cluster(pod: dict[str, str]) -> None:
    home = Path(pod["HOME"]) / ".kube"
    home.mkdir(parents=True)
    one(home / "config", "https://home:6443", "home-token", "home-ns")
    conn = load(pod)
    assert conn.configuration.host == "https://home:6443" and conn.namespace == "home-ns"


def test_in_cluster_when_no_kubeconfig(pod: dict[str, str]) -> None:
    conn = load(pod)
    assert conn.configuration.host == "https://10.0.0.1:443"
    assert "pod-token" in token_of(conn)
    assert conn.configuration.ssl_ca_cert == os.path.join(pod["SA"], "ca.crt")
    assert conn.namespace == "pod-ns" and conn.source == "in-cluster service account"
    assert load({**pod, "POD_NAMESPACE": "downward"}).namespace == "downward"


def test_kubeconfig_env_naming_only_missing_files_falls_back_to_in_cluster(tmp_path: Path, pod: dict[str, str]) -> None:
    conn = load({**pod, "KUBECONFIG": str(tmp_path / "nope")})
    assert conn.source == "in-cluster service account"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("nothing", "no Kubernetes configuration"),
        ("missing-flag-file", "--kubeconfig"),
        ("unknown-context", "context 'nope' not found (have ['c'])"),
        ("no-current-context", "no current-context set"),
        ("context-in-cluster", "--context x: no kubeconfig found"),
    ],
)
def test_clear_errors(tmp_path: Path, pod: dict[str, str], case: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        if case == "nothing":
            load({"HOME": str(tmp_path)})
        elif case == "missing-flag-file":
            load(pod, kubeconfig=str(tmp_path / "absent"))
        elif case == "unknown-context":
            load(pod, kubeconfig=str(one(tmp_path / "k", "https://x", "t")), context="nope")
        elif case == "no-current-context":
            path = kubeconfig(tmp_path / "k", clusters={"c": "https://x"}, users={"c": "t"},
                              contexts={"c": ("c", "c", None)})
            load(pod, kubeconfig=str(path))
        else:
            load(pod, context="x")
    assert message in str(info.value)


def test_pdscale_run_uses_kubeconfig_env_and_its_namespace(tmp_path: Path) -> None:
    """End to end: no --kubeconfig, no --namespace; $KUBECONFIG's context names the emulator and namespace."""
    with KubeEmulator() as kube:
        for ns in ("team-a", "team-b"):
            bare_autoscaler(kube, ns, f"m-{ns}", replicas=1)
        path = kube.kubeconfig(tmp_path / "kubeconfig", namespace="team-b")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "POD_"))}
        env.update(KUBECONFIG=str(path), HOME=str(tmp_path))
        proc = subprocess.run(
            [sys.executable, "-m", "autoscaler.cli", "run", "--once", "--dry-run", "--json",
             "--prometheus-url", "http://127.0.0.1:1", "--prometheus-timeout-s", "0.5"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
    assert '"autoscaler": "team-b/m-team-b"' in proc.stdout, proc.stderr
    assert "team-a" not in proc.stdout
    assert f"kubeconfig {path} (context emu)" in proc.stderr

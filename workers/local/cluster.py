"""One machine as a cluster running pdscale: what ``pdscale up``, ``pdscale demo --live``, the live-loop tests and
``bench/bench_sim_vs_live.py`` start.

* the Kubernetes API emulator (``workers.local.kube_emulator``) with the CRD of ``manifests/base/crd.yaml``, a
  prefill and a decode Deployment of one model and one ``DisaggregatedAutoscaler`` targeting them;
* the pod runner (``workers.local.pod_runner``): pods as real processes, emulated vLLM workers (``pdscale
  worker``) or real vLLM, with readiness probes, a preStop delay, SIGTERM and a grace period;
* a real Prometheus (Debian's package) scraping the pods through the pod runner's ``file_sd`` file with the
  monitoring manifests' relabelling, the proxy, and the controllers' own ``/metrics``;
* ``pdscale proxy`` in front of the pods it finds through the emulator (Pod objects: Running, Ready, not
  terminating), the URL clients and ``pdscale loadgen`` send to;
* ``pdscale run`` (active mode, Lease leader election), ``controllers`` replicas of it.

Every process runs in its own process group under one ``ProcessRunner``; ``stop()`` ends them all (controllers
first, so nothing scales while the pods go). The emulator and the pod runner run in this process's threads.

Time scaling (``ClusterSpec.time_scale`` = K): every modelled step duration of the workers is multiplied by K
through one profile file (``workers.local.scaled_profile``) that the workers, the autoscaler's ``spec.profile``
and the simulator all load. The P/D KV link keeps the workers' and the simulator's default (64 GB/s + 1 ms: a
few ms per prompt, not scaled, the same on both sides). K > 1 slows the model down so that
a loaded 2-core machine keeps up with it: the processes' own overheads (HTTP, the proxy hop, Python) shrink
next to the modelled times. The SLO targets, start-up, tick, scrape and rate windows are the spec's own
numbers, in wall seconds.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.local.kube_emulator import CR, KubeEmulator
from workers.local.kubelet import ROLE_LABEL, STARTUP_ANNOTATION, KubeletOptions
from workers.local.monitoring import pod_scrape_config, static_scrape_config
from workers.local.net import LOOPBACK, free_port, wait_http_ok
from workers.local.pod_runner import PodRunner, PodRunnerOptions, PoolState
from workers.local.processes import ManagedProcess, ProcessRunner
from workers.local.prometheus import PrometheusServer

log = logging.getLogger("pdscale.local")

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "base" / "crd.yaml"
ROLES = ("prefill", "decode")


@dataclass(frozen=True)
class ClusterSpec:
    """What to run. Seconds are wall-clock seconds of this machine."""

    namespace: str = "llm"
    model: str = "llama"  # served model name: model_name on every series
    profile: str = "llama-3.1-8b-h100-tp1"  # the workers' latency profile (name or path), before time scaling
    time_scale: float = 1.0
    max_num_seqs: int | None = None  # engine limit of every worker (and in the profile the controller reads)
    max_num_batched_tokens: int | None = None
    kv_cache_tokens: int | None = None
    prefill_replicas: int = 1
    decode_replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 8
    startup_s: float = 10.0  # a pod's start-up time as the autoscaler knows it (podStartupSeconds)
    tick_s: float = 2.0
    scrape_s: float = 1.0
    window_s: float = 10.0  # rate()/histogram window of the autoscaler's queries
    lease_s: float = 6.0
    controllers: int = 2
    ttft_target_s: float = 1.0
    itl_target_s: float = 0.05
    percentile: float = 0.99
    pre_stop_s: int = 2  # preStop sleep: endpoints are gone before SIGTERM
    grace_s: int = 60  # terminationGracePeriodSeconds: preStop + the worker's drain must fit
    probe_period_s: float = 0.5
    probe_timeout_s: float = 1.0  # the kubelet's readiness probes and the proxy's /health probes
    autoscaler: Mapping[str, Any] = field(default_factory=dict)  # merged into the DisaggregatedAutoscaler spec
    worker_args: Sequence[str] = ()  # added to every emulated worker's command line
    engine: str = "emulated"  # or "vllm": pods are real vLLM (workers/vllm.py), see vllm_*
    vllm_python: str = ""
    vllm_model_dir: str = ""
    vllm_max_model_len: int = 512
    # Prometheus rule files (e.g. the monitoring overlay's PrometheusRule groups), evaluated every ``scrape_s``
    rule_files: Sequence[str] = ()
    # nice(1) increment of the pods' processes (KubeletOptions.nice); None: 10 for real vLLM, which would otherwise
    # take both cores from the emulator and the controller, 0 for the light emulated workers
    pod_nice: int | None = None
    # nice(1) increment of a pod until it is first Ready (KubeletOptions.startup_nice); None: 0 for real vLLM (a new
    # server starting beside two busy ones at their nice 10 took ~6 min on 2 cores), ``pod_nice`` for emulated ones
    pod_startup_nice: int | None = None
    # real vLLM pods' CPUs (VLLM_CPU_OMP_THREADS_BIND, and KubeletOptions.cpus_by_role once Ready): prefill and
    # decode on cores of their own where the machine has two
    vllm_cpus: Mapping[str, str] = field(default_factory=lambda: {"prefill": "0", "decode": "1"})
    # place real vLLM pods once Ready (workers.local.cpu_placement: pinned threads to ``vllm_cpus``, busy-polling
    # threads to SCHED_IDLE); off only to measure what it changes (bench/bench_vllm_cpu_placement.py)
    place_vllm_pods: bool = True

    @property
    def kubelet_nice(self) -> int:
        return self.pod_nice if self.pod_nice is not None else (10 if self.engine == "vllm" else 0)

    @property
    def kubelet_startup_nice(self) -> int | None:
        return self.pod_startup_nice if self.pod_startup_nice is not None else (0 if self.engine == "vllm" else None)

    @property
    def placed_vllm(self) -> bool:
        return self.engine == "vllm" and self.place_vllm_pods

    @property
    def loading_s(self) -> float:
        """The pod runner's start-up delay: emulated workers start in a second and "load" for ``startup_s``; real
        vLLM takes its own time (no delay added)."""
        return 0.0 if self.engine == "vllm" else self.startup_s

    @property
    def drain_s(self) -> float:
        """How long a worker may drain after SIGTERM: the grace period minus the preStop delay, less a margin."""
        return max(1.0, self.grace_s - self.pre_stop_s - 2.0)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


class LocalCluster:
    """Start with ``start()`` (or as a context manager), stop with ``stop()``."""

    def __init__(self, spec: ClusterSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runner = ProcessRunner(workdir / "logs")
        self.kube = KubeEmulator(auto_ready=False)
        self.pods: PodRunner | None = None
        self.prometheus: PrometheusServer | None = None
        self.proxy: ManagedProcess | None = None
        self.proxy_port = 0
        self.controllers: dict[str, ManagedProcess] = {}
        self.controller_ports: dict[str, int] = {}
        self.profile_path = workdir / "profile.yaml"
        self.kubeconfig_path = workdir / "kubeconfig"
        self.file_sd_path = workdir / "pods.json"
        self.started_s = 0.0
        self._kube_running = False

    # ---------------------------------------------------------------- names
    @property
    def ns(self) -> str:
        return self.spec.namespace

    def deployment_name(self, role: str) -> str:
        return f"{self.spec.model}-{role}"

    @property
    def autoscaler_name(self) -> str:
        return self.spec.model

    @property
    def proxy_url(self) -> str:
        return f"http://{LOOPBACK}:{self.proxy_port}"

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None
        return self.prometheus.url

    # ---------------------------------------------------------------- objects
    def write_profile(self) -> None:
        from workers.local.scaled_profile import write_scaled_profile

        engine = {k: v for k, v in (("max_num_seqs", self.spec.max_num_seqs),
                                    ("max_num_batched_tokens", self.spec.max_num_batched_tokens)) if v}  # fmt: skip
        write_scaled_profile(self.profile_path, self.spec.profile, self.spec.time_scale, engine=engine,
                             kv_capacity_tokens=self.spec.kv_cache_tokens)  # fmt: skip

    def _container(self, role: str) -> dict[str, Any]:
        s = self.spec
        if s.engine == "vllm":
            return self._vllm_container(role)
        from workers.vllm import KV_ROLES

        kv_role = KV_ROLES[role]  # type: ignore[index]
        args = ["--host", LOOPBACK, "--port", "$(POD_PORT)", "--served-model-name", s.model, "--role", role,
                "--profile", str(self.profile_path),
                "--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": kv_role}),
                "--drain-timeout-s", f"{s.drain_s:g}", *s.worker_args]  # fmt: skip
        return {
            "name": "worker",
            "image": "pdscale-worker",
            "command": ["$(PDSCALE_PYTHON)", "-m", "workers.worker_cli"],
            "args": args,
            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
            "lifecycle": {"preStop": {"sleep": {"seconds": s.pre_stop_s}}},
        }

    def _vllm_container(self, role: str) -> dict[str, Any]:
        """The container of ``workers.vllm_manifests.deployment`` (the example manifests' code: readiness, preStop,
        vLLM's --shutdown-timeout), run by this machine's vLLM interpreter on the pod's own ports."""
        from workers.vllm import API_SERVER_MODULE, VLLMConfig, serve_args
        from workers.vllm_manifests import deployment

        s = self.spec
        if not (s.vllm_python and s.vllm_model_dir):
            raise ValueError("engine vllm needs vllm_python and vllm_model_dir (scripts/ensure-vllm.sh builds them)")
        config = VLLMConfig(model=s.vllm_model_dir, served_model_name=s.model, host=LOOPBACK, port=65535,
                            max_model_len=s.vllm_max_model_len, max_num_seqs=s.max_num_seqs, device="cpu",
                            kv_cache_memory_bytes=134217728, shutdown_timeout_s=int(s.drain_s),
                            side_channel_port=65534,
                            cpu_threads_bind=dict(s.vllm_cpus))  # fmt: skip
        container = dict(deployment(config, role, name="-", namespace=self.ns, pre_stop_s=s.pre_stop_s)
                         ["spec"]["template"]["spec"]["containers"][0])  # fmt: skip
        args = ["--model", s.vllm_model_dir, *serve_args(config, role)]
        container["command"] = ["$(PDSCALE_VLLM_PYTHON)", "-m", API_SERVER_MODULE]
        container["args"] = ["$(POD_PORT)" if a == "65535" else a for a in args]
        env = {e["name"]: ("$(POD_PORT_NIXL)" if e["value"] == "65534" else e["value"]) for e in container["env"]}
        env.update({"PDSCALE_VLLM_PYTHON": s.vllm_python, "TMPDIR": "$(POD_TMPDIR)",
                    "VLLM_RPC_BASE_PATH": "$(POD_TMPDIR)", "VLLM_CACHE_ROOT": "$(POD_TMPDIR)/cache",
                    "TORCHINDUCTOR_CACHE_DIR": "$(POD_TMPDIR)/inductor", "HF_HOME": "$(POD_TMPDIR)/hf",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})  # fmt: skip
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        container.pop("resources", None)  # no GPUs here
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": "http"}}  # the runner's probe period
        return container

    def deployment(self, role: str, replicas: int) -> dict[str, Any]:
        labels = {"app.kubernetes.io/name": self.spec.model, ROLE_LABEL: role}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.deployment_name(role), "namespace": self.ns, "labels": dict(labels)},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels),
                                 "annotations": {STARTUP_ANNOTATION: f"{self.spec.loading_s:g}"}},
                    "spec": {"terminationGracePeriodSeconds": self.spec.grace_s,
                             "containers": [self._container(role)]},
                },
            },
        }

    def autoscaler_spec(self) -> dict[str, Any]:
        s = self.spec

        def pool(role: str) -> dict[str, Any]:
            return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": self.deployment_name(role)},
                    "minReplicas": s.min_replicas, "maxReplicas": s.max_replicas}  # fmt: skip

        body: dict[str, Any] = {
            "prefill": pool("prefill"),
            "decode": pool("decode"),
            "slo": {"ttft": {"percentile": s.percentile, "targetSeconds": s.ttft_target_s},
                    "itl": {"percentile": s.percentile, "targetSeconds": s.itl_target_s}},
            "podStartupSeconds": s.startup_s,
            "mode": "active",
            "profile": str(self.profile_path),
            "metrics": {"source": "vllm", "proxy": True, "windowSeconds": s.window_s,
                        "selector": {"matchLabels": {"model_name": s.model, "namespace": self.ns}}},
        }  # fmt: skip
        return _merge(body, s.autoscaler)

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, wait_ready_s: float = 120.0, wait_leader_s: float = 30.0) -> LocalCluster:
        """Everything up, every pod Ready, and one controller holding the Lease (so it acts when this returns)."""
        try:
            self._start(wait_ready_s)
            if self.controllers:
                self.wait_for_leader(wait_leader_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, wait_ready_s: float) -> None:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        s = self.spec
        self.write_profile()
        self.kube.__enter__()
        self._kube_running = True
        self.kube.apply_crds(CRD_FILE)
        self.kube.kubeconfig(self.kubeconfig_path, namespace=self.ns)
        self.kube.put("apps/v1/deployments", self.deployment("prefill", s.prefill_replicas))
        self.kube.put("apps/v1/deployments", self.deployment("decode", s.decode_replicas))
        self.file_sd_path.write_text("[]")
        self.pods = PodRunner(PodRunnerOptions(
            api_url=self.kube.url, namespace=self.ns, file_sd_path=self.file_sd_path,
            kubelet=KubeletOptions(log_dir=self.workdir / "pods", startup_delay_s=s.loading_s,
                                   probe_period_s=s.probe_period_s, probe_timeout_s=s.probe_timeout_s, cwd=REPO,
                                   nice=s.kubelet_nice, startup_nice=s.kubelet_startup_nice,
                                   cpus_by_role=s.vllm_cpus if s.placed_vllm else {},
                                   demote_busy_pollers=s.placed_vllm),
        )).start()  # fmt: skip
        self.proxy_port = free_port()
        self.controller_ports = {f"controller-{chr(ord('a') + i)}": free_port() for i in range(s.controllers)}
        scrape = [
            pod_scrape_config(self.file_sd_path, s.scrape_s),
            static_scrape_config("proxy", [f"{LOOPBACK}:{self.proxy_port}"],
                                 {"namespace": self.ns, "pod": "proxy", "role": "proxy"}, s.scrape_s),
            static_scrape_config("pdscale-controller", [f"{LOOPBACK}:{p}" for p in self.controller_ports.values()],
                                 {"namespace": self.ns}, s.scrape_s),
        ]  # fmt: skip
        self.prometheus = PrometheusServer(self.runner, self.workdir / "prometheus", scrape_configs=scrape,
                                           scrape_interval_s=s.scrape_s,
                                           rule_files=[Path(f) for f in s.rule_files]).start()  # fmt: skip
        self.proxy = self.runner.start(self._proxy_argv(), name="proxy", cwd=REPO)
        self.kube.put(CR, {"apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
                           "metadata": {"name": self.autoscaler_name, "namespace": self.ns},
                           "spec": self.autoscaler_spec()})  # fmt: skip
        self.started_s = time.time()
        wait_http_ok(f"{self.proxy_url}/metrics", 60.0, alive=lambda: self.proxy is not None and self.proxy.running)
        self.wait_ready(wait_ready_s)
        for identity in self.controller_ports:
            self.start_controller(identity)

    def _proxy_argv(self) -> list[str]:
        selector = f"app.kubernetes.io/name={self.spec.model},{ROLE_LABEL}="
        return [sys.executable, "-m", "autoscaler.cli", "proxy", "--host", LOOPBACK, "--port", str(self.proxy_port),
                "--k8s-namespace", self.ns, "--k8s-kind", "pods", "--kubeconfig", str(self.kubeconfig_path),
                "--k8s-prefill-selector", selector + "prefill", "--k8s-decode-selector", selector + "decode",
                "--model-name", self.spec.model, "--health-interval-s", f"{min(1.0, self.spec.probe_period_s):g}",
                "--health-timeout-s", f"{self.spec.probe_timeout_s:g}",
                "--drain-timeout-s", f"{self.spec.drain_s:g}"]  # fmt: skip

    def controller_argv(self, identity: str) -> list[str]:
        s = self.spec
        return [sys.executable, "-m", "autoscaler.cli", "run", "--kubeconfig", str(self.kubeconfig_path),
                "--namespace", self.ns, "--lease-namespace", self.ns, "--prometheus-url", self.prometheus_url,
                "--tick-s", f"{s.tick_s:g}", "--lease-duration-s", f"{s.lease_s:g}", "--identity", identity,
                "--metrics-port", str(self.controller_ports[identity]),
                "--kube-timeout-s", f"{max(1.0, s.lease_s / 4):g}", "--prometheus-timeout-s", "2", "--status-refresh-s", f"{max(1.0, s.tick_s):g}"]  # fmt: skip

    def start_controller(self, identity: str) -> ManagedProcess:
        proc = self.runner.start(self.controller_argv(identity), name=identity, cwd=REPO)
        self.controllers[identity] = proc
        return proc

    def wait_ready(self, timeout_s: float) -> None:
        """Until every pod the Deployments ask for is Ready and the proxy routes to both pools."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            state = self.pool_state()
            last = state
            if all(state.get(r, PoolState()).ready >= 1 and state[r].ready == state[r].desired for r in ROLES) and \
                    self.proxy_ready() == {r: state[r].ready for r in ROLES}:  # fmt: skip
                return
            if self.proxy is not None and not self.proxy.running:
                raise RuntimeError(f"the proxy exited:\n{self.proxy.tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"the pods did not all become ready within {timeout_s:.0f} s: {last}, proxy sees "
                           f"{self.proxy_ready()}; logs under {self.workdir}")  # fmt: skip

    def wait_for_leader(self, timeout_s: float) -> str:
        """Until a controller holds the Lease; fails at once, with its log, when every controller has exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            holder = self.lease_holder()
            if holder is not None:
                return holder
            if self.controllers and not any(p.running for p in self.controllers.values()):
                tails = "\n".join(f"{i} (rc {p.returncode}):\n{p.tail(20)}" for i, p in self.controllers.items())
                raise RuntimeError(f"every controller exited before one took the Lease:\n{tails}")
            time.sleep(0.2)
        raise TimeoutError(f"no controller took the Lease within {timeout_s:.0f} s; logs under {self.workdir}")

    def stop(self) -> None:
        """Controllers first (nothing scales while the rest goes), then the proxy, the pods, Prometheus."""
        for proc in self.controllers.values():
            proc.stop(timeout_s=10.0)
        if self.proxy is not None:
            self.proxy.stop(timeout_s=5.0)
        if self.pods is not None:
            self.pods.stop(timeout_s=10.0)
        if self.prometheus is not None:
            self.prometheus.stop()
        self.runner.stop_all()
        if self._kube_running:
            self._kube_running = False
            self.kube.__exit__(None, None, None)

    # ---------------------------------------------------------------- observation
    def pool_state(self) -> dict[str, PoolState]:
        return self.pods.pool_state(self.ns) if self.pods is not None else {}

    def proxy_ready(self) -> dict[str, int]:
        """Ready endpoints per role as the proxy reports them on /metrics (empty when it does not answer)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"{self.proxy_url}/metrics", timeout=2.0) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out = {r: 0 for r in ROLES}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "pdscale_proxy_endpoints" and sample.labels.get("state") == "ready":
                    out[sample.labels["role"]] = int(sample.value)
        return out

    def replicas(self, role: str) -> int:
        obj = self.kube.get("apps/v1/deployments", self.ns, self.deployment_name(role))
        return int(((obj or {}).get("spec") or {}).get("replicas") or 0)

    def autoscaler(self) -> dict[str, Any]:
        return self.kube.get(CR, self.ns, self.autoscaler_name) or {}

    def condition(self, type_: str) -> dict[str, Any] | None:
        for cond in (self.autoscaler().get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def lease_holder(self) -> str | None:
        lease = self.kube.get("coordination.k8s.io/v1/leases", self.ns, "pdscale-controller")
        return ((lease or {}).get("spec") or {}).get("holderIdentity") or None

    def scale_writes(self, role: str) -> list[int]:
        """Every ``spec.replicas`` the Deployment of ``role`` has had, oldest first (repeats collapsed)."""
        history = self.kube.history("apps/v1/deployments", self.ns, self.deployment_name(role))
        out: list[int] = []
        for version in history:
            n = int((version.get("spec") or {}).get("replicas") or 0)
            if not out or out[-1] != n:
                out.append(n)
        return out

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.kube.list("v1/events", self.ns)
        return [e for e in items if reason is None or e.get("reason") == reason]

    def describe(self) -> str:
        """Where everything is, for a person at a terminal."""
        s = self.spec
        return "\n".join([
            f"Kubernetes API (emulator)  {self.kube.url}",
            f"  kubectl --kubeconfig {self.kubeconfig_path} get pdas,deploy,pods",
            f"Prometheus                 {self.prometheus_url}",
            f"proxy (OpenAI API)         {self.proxy_url}/v1   model {s.model!r}",
            f"controllers                {', '.join(f'{i} :{p}/metrics' for i, p in self.controller_ports.items())}"
            f"   leader {self.lease_holder() or 'none yet'}",
            f"pods' logs                 {self.workdir / 'pods'}",
            "send load:",
            f"  pdscale loadgen --url {self.proxy_url} --generator "
            f"\"poisson:rate=2,duration=120,prompt=const(512),output=const(64)\" --time-scale {s.time_scale:g}",
        ])  # fmt: skip

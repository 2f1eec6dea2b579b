"""A chaos run of the live controller with invariants checked after every tick (issue 14 item 8).

The world, all on loopback: the Kubernetes emulator (``kube_emulator.py``), vLLM-format series of known load from
``vllm_exporter.py`` scraped by a real Prometheus, and two controller replicas in this process, each the production
``Runner.serve()`` loop on its own thread with its own Kubernetes client (its own bearer token, so the emulator
knows who wrote what), Prometheus client and Lease elector. A driver moves the load through phases that make the
controller scale up (TTFT or ITL breach) and down (quiet), keeps one exported pod per replica of each Deployment
(``PodDriver``, the plug-in point for real pods or workers), and injects faults at random (seeded):

* ``api-409``: Conflict on ``/scale`` writes;  ``api-500``: 500 on a random API call (LIST, status, event, Lease);
* ``api-timeout``: a random API call held past the client's timeout (the emulator drops it once the client left);
* ``prometheus-restart``: Prometheus killed, started again 1-3 s later;
* ``leader-kill``: the leader stops without releasing its Lease (a crash), a new replica starts 1-3 s later;
* ``failing-traffic``: every request fails (proxy ``5xx``, workers ``finished_reason="error"``) for 2-5 s;
* ``scrape-gap``: one ready pod's series vanish for 2-4 s (a partial scrape).

Checked after every pass of either replica (violations must be 0):

* ``single-writer``: every write the API server applied came from the replica holding the Lease at that moment
  (the Lease's own versions, in the order the server applied them);
* ``bounds``: every replica count ever written to a Deployment is within the autoscaler's [min, max];
* ``no-scale-down-on-bad-data``: no scale-down was applied by a pass whose observation had a metrics error,
  missing load, failing requests above the threshold or fewer pods reporting than ready;
* ``reasons``: every decision carries a known reason and a message; every pass that decided nothing says why.

Later with the live loop (workers, proxy, drains): a ``PodDriver`` that starts real pods, and a check that no accepted
request was lost in a drain; the driver and checker take them as they are.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from autoscaler.core.types import Reason
from autoscaler.kube import KubeClient, KubeSettings
from autoscaler.leader import LeaderElector, LeaseConfig
from autoscaler.prometheus import PrometheusMetricsSource
from autoscaler.run import Runner, RunOptions
from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, LatencyMix, Load, VllmExporter
from workers.local.kube_emulator import CR, KubeEmulator
from workers.local.processes import ProcessRunner
from workers.local.prometheus import PrometheusServer

NS = "chaos"
MODEL = "m-chaos"
LEASE = "pdscale-controller"
MIN_REPLICAS, MAX_REPLICAS = 1, 6
REASONS = frozenset(r.value for r in Reason)
FAULT_KINDS = ("api-409", "api-500", "api-timeout", "prometheus-restart", "leader-kill", "failing-traffic",
               "scrape-gap")
# One round of faults, in a random order: every kind once, the cheap API faults twice. A Prometheus restart leaves
# the controller without metrics for ~5-8 s (Prometheus scrapes ~5 s after a start), a leader kill without a leader
# for up to a Lease duration: more of them would leave little time to scale in between.
ROUND = (*FAULT_KINDS, "api-409", "api-500", "api-timeout")


@dataclass(frozen=True)
class ChaosConfig:
    duration_s: float = 60.0
    tick_s: float = 0.5  # 30 x faster than the 15 s default: 60 s of chaos is 120 ticks, 30 minutes of 15 s ticks
    lease_s: float = 3.0
    kube_timeout_s: float = 0.4
    prometheus_timeout_s: float = 0.5
    scrape_s: float = 0.5
    window_s: float = 3.0  # the autoscaler's rate()/percentile window
    phase_s: float = 8.0  # load phase length
    fault_every_s: float = 1.5  # mean time between faults
    seed: int = 0


@dataclass(frozen=True)
class PassRecord:
    identity: str
    started_s: float
    ended_s: float
    reports: list[dict[str, Any]]


@dataclass
class ChaosReport:
    faults: Counter[str] = field(default_factory=Counter)
    passes: int = 0  # passes checked (both replicas)
    scale_writes: Counter[str] = field(default_factory=Counter)  # "up" / "down" applied
    handovers: int = 0  # changes of Lease holder
    violations: list[str] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)  # how many times each invariant was evaluated

    def summary(self) -> dict[str, Any]:
        return {"faults": dict(sorted(self.faults.items())), "faults_total": sum(self.faults.values()),
                "passes_checked": self.passes, "scale_writes": dict(self.scale_writes), "handovers": self.handovers,
                "checks": dict(self.checks), "violations": len(self.violations),
                "first_violations": self.violations[:10]}


# ---------------------------------------------------------------- load


def phase_loads(phase: str, failing: float, pods: int) -> tuple[Load, Load, Load]:
    """(prefill pod, decode pod, proxy) loads for one phase, the total spread over ``pods`` pods per pool."""
    ttft, itl, rate = {"busy-prefill": (2.5, 0.01, 4.0), "busy-decode": (0.1, 0.2, 4.0),
                       "quiet": (0.05, 0.01, 0.5)}[phase]
    n = max(1, pods)
    prefill = Load(requests_per_s=rate / n, ttft=LatencyMix.fixed(ttft / 2), prompt_tokens_per_request=200,
                   output_tokens_per_request=1, kv_usage=0.05, failure_fraction=failing)
    decode = Load(requests_per_s=rate / n, ttft=LatencyMix.fixed(ttft / 2), itl=LatencyMix.fixed(itl),
                  itl_samples_per_request=20, prompt_tokens_per_request=200, output_tokens_per_request=20,
                  running=1, kv_usage=0.05, failure_fraction=failing)
    proxy = Load(requests_per_s=rate, ttft=LatencyMix.fixed(ttft), itl=LatencyMix.fixed(itl),
                 itl_samples_per_request=20, failure_fraction=failing)
    return prefill, decode, proxy


class PodDriver:
    """Keeps one exported pod per replica of each Deployment (the emulator makes them ready at once) and the load
    of the current phase on them; ``hidden`` pods are ready but not scraped. Replace it to drive real pods."""

    def __init__(self, kube: KubeEmulator, exporter: VllmExporter) -> None:
        self.kube, self.exporter = kube, exporter
        self.phase, self.failing = "quiet", 0.0
        self.hidden: set[str] = set()
        self._pods: dict[str, set[str]] = {"prefill": set(), "decode": set()}
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            counts = {}
            for pool in ("prefill", "decode"):
                obj = self.kube.get("apps/v1/deployments", NS, pool)
                counts[pool] = int(obj["spec"]["replicas"]) if obj else 0
            p, d, fe = phase_loads(self.phase, self.failing, counts["prefill"])
            _, d, _ = phase_loads(self.phase, self.failing, counts["decode"])
            for pool, load, role in (("prefill", p, "prefill"), ("decode", d, "decode")):
                want = {f"{NS}-{pool[0]}{i}" for i in range(counts[pool])} - self.hidden
                for name in self._pods[pool] - want:
                    self.exporter.remove(name)
                for name in sorted(want):
                    if name in self._pods[pool]:
                        self.exporter.set_load(name, load)
                    else:
                        self.exporter.add_pod(ExportedPod(name=name, role=role, model_name=MODEL, namespace=NS,
                                                          load=load))
                self._pods[pool] = want
            self.exporter.set_load(f"{NS}-proxy", fe)


# ---------------------------------------------------------------- replicas


class RecordingRunner(Runner):
    """The production Runner, handing every pass's reports to ``sink``."""

    def __init__(self, *args: Any, sink: Callable[[PassRecord], None], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sink = sink

    def run_pass(self) -> list[dict[str, Any]]:
        started = time.monotonic()
        reports = super().run_pass()
        self.sink(PassRecord(self.options.identity, started, time.monotonic(), reports))
        return reports


@dataclass
class Replica:
    identity: str
    runner: RecordingRunner
    thread: threading.Thread

    def crash(self) -> None:
        """Stop without releasing the Lease (as a killed pod: its successor must wait the Lease out). A pass in
        flight still finishes; its writes are fenced like any other."""
        assert self.runner.elector is not None
        self.runner.elector.release = lambda: None  # type: ignore[method-assign]
        self.runner.stop.set()

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(timeout=30)


# ---------------------------------------------------------------- the run


class Chaos:
    def __init__(self, config: ChaosConfig, kube: KubeEmulator, exporter: VllmExporter,
                 prometheus: PrometheusServer) -> None:
        self.config = config
        self.kube, self.exporter, self.prometheus = kube, exporter, prometheus
        self.rng = random.Random(config.seed)
        self.report = ChaosReport()
        self.pods = PodDriver(kube, exporter)
        self.replicas: dict[str, Replica] = {}
        self._generation = 0
        self._records: list[PassRecord] = []
        self._records_lock = threading.Lock()
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._applied_seen = 0
        self._lease_holder: str | None = None  # who may write now (None: nobody, e.g. after a release)
        self._last_holder: str | None = None  # the last non-empty holder, to count handovers
        self._kinds: list[str] = []  # faults still to inject in this round (every kind once per round)
        self._lease_versions_seen = 0
        self._deploy_versions_seen = {"prefill": 0, "decode": 0}

    # -- world

    def seed_objects(self) -> None:
        for pool in ("prefill", "decode"):
            self.kube.add_deployment(NS, pool, 2)
        self.exporter.add_frontend(ExportedFrontend(name=f"{NS}-proxy", model_name=MODEL, namespace=NS,
                                                    requests_metric="pdscale_proxy_requests"))
        pool = {"minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS}
        self.kube.put(CR, {
            "apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
            "metadata": {"name": "llama", "namespace": NS},
            "spec": {
                "prefill": {**pool, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "prefill"}},
                "decode": {**pool, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "decode"}},
                "podStartupSeconds": 1,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2,
                                           "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}]}},
                "metrics": {"selector": {"matchLabels": {"model_name": MODEL, "namespace": NS}},
                            "windowSeconds": self.config.window_s},
            },
        })
        self.pods.sync()

    def start_replica(self) -> Replica:
        self._generation += 1
        identity = f"replica-{self._generation}"
        cfg = k8s.Configuration()
        cfg.host, cfg.retries = self.kube.url, False
        cfg.api_key = {"authorization": f"Bearer {identity}"}
        kube = KubeClient(k8s.ApiClient(cfg), KubeSettings(timeout_s=self.config.kube_timeout_s))
        lease_s = self.config.lease_s
        elector = LeaderElector(kube, LeaseConfig(NS, LEASE, identity, lease_duration_s=lease_s,
                                                  retry_period_s=max(0.2, lease_s / 5),
                                                  safety_margin_s=max(0.2, lease_s / 7.5)))
        metrics = PrometheusMetricsSource(self.prometheus.url, timeout_s=self.config.prometheus_timeout_s)
        options = RunOptions(namespace=NS, prometheus_url=self.prometheus.url, tick_s=self.config.tick_s,
                             lease_namespace=NS, lease_name=LEASE, lease_duration_s=lease_s, identity=identity,
                             kube_timeout_s=self.config.kube_timeout_s, workers=1, status_refresh_s=5.0)
        runner = RecordingRunner(options, kube, metrics, elector=elector, sink=self._record)
        thread = threading.Thread(target=runner.serve, name=identity, daemon=True)
        replica = Replica(identity, runner, thread)
        self.replicas[identity] = replica
        thread.start()
        return replica

    def _record(self, record: PassRecord) -> None:
        with self._records_lock:
            self._records.append(record)

    # -- faults

    def _later(self, delay_s: float, action: Callable[[], None]) -> None:
        self._timers.append((time.monotonic() + delay_s, action))

    def inject(self, kind: str) -> None:
        rng, t = self.rng, self.config.kube_timeout_s
        calls = [("GET", rf"/namespaces/{NS}/deployments$"), ("PATCH", r"/disaggregatedautoscalers/llama/status$"),
                 ("POST", rf"/namespaces/{NS}/events$"), ("GET", rf"/leases/{LEASE}$"), ("PUT", rf"/leases/{LEASE}$"),
                 ("GET", rf"/namespaces/{NS}/disaggregatedautoscalers$"), ("GET", r"/deployments/\w+/scale$")]
        if kind == "api-409":
            self.kube.add_fault("PATCH", r"/scale$", status=409, times=rng.randint(1, 3))
        elif kind == "api-500":
            method, path = rng.choice(calls)
            self.kube.add_fault(method, path, status=500, times=rng.randint(1, 4))
        elif kind == "api-timeout":
            method, path = rng.choice([*calls, ("PATCH", r"/scale$")])
            self.kube.add_fault(method, path, status=None, delay_s=2.5 * t, times=rng.randint(1, 2))
        elif kind == "prometheus-restart":
            if not self.prometheus.running:  # still down from the last restart
                return
            self.prometheus.kill()
            self._later(rng.uniform(1.0, 3.0), lambda: None if self.prometheus.running else self.prometheus.start())
        elif kind == "leader-kill":
            leader = next((r for r in self.replicas.values()
                           if r.runner.elector is not None and r.runner.elector.is_leader()
                           and not r.runner.stop.is_set()), None)
            if leader is None:  # no leader right now (a handover in progress): kill the follower instead
                leader = next((r for r in self.replicas.values() if not r.runner.stop.is_set()), None)
            if leader is None:
                return
            leader.crash()
            self._later(rng.uniform(1.0, 3.0), self.start_replica)
        elif kind == "failing-traffic":
            self.pods.failing = 1.0
            self._later(rng.uniform(2.0, 5.0), lambda: setattr(self.pods, "failing", 0.0))
        elif kind == "scrape-gap":
            obj = self.kube.get("apps/v1/deployments", NS, "decode")
            n = int(obj["spec"]["replicas"]) if obj else 0
            if n < 1:
                return
            name = f"{NS}-d{rng.randrange(n)}"
            self.pods.hidden.add(name)
            self._later(rng.uniform(2.0, 4.0), lambda: self.pods.hidden.discard(name))
        self.report.faults[kind] += 1

    # -- invariants

    def check(self) -> None:
        """Check every pass recorded since the last call, and every write applied since."""
        with self._records_lock:
            records, self._records = self._records, []
        for record in records:
            self.report.passes += 1
            for report in record.reports:
                self._check_report(record, report)
        self._check_writers()
        self._check_bounds()

    def _fail(self, what: str, detail: str) -> None:
        self.report.violations.append(f"{what}: {detail}")

    def _check_report(self, record: PassRecord, report: dict[str, Any]) -> None:
        self.report.checks["reasons"] += 1
        decision = report.get("decision")
        if decision is None:
            if not report.get("error") or not report.get("failures"):
                self._fail("reasons", f"{record.identity}: a pass without a decision says nothing: {report}")
            return
        for pool in ("prefill", "decode"):
            pd = decision[pool]
            if pd["reason"] not in REASONS or not pd["message"]:
                self._fail("reasons", f"{record.identity}: {pool} decided {pd['desired_replicas']} with reason "
                           f"{pd['reason']!r}: {pd['message']!r}")
        obs = report["observation"]
        for pool in report.get("applied", []):
            pd = decision[pool]
            direction = "up" if pd["desired_replicas"] > pd["current_replicas"] else "down"
            self.report.scale_writes[direction] += 1
            if direction == "down":
                self.report.checks["no-scale-down-on-bad-data"] += 1
                bad = bad_data(obs)
                if bad:
                    self._fail("no-scale-down-on-bad-data", f"{record.identity}: {pool} "
                               f"{pd['current_replicas']} -> {pd['desired_replicas']} while {bad}")

    def _check_writers(self) -> None:
        """Every applied write came from the Lease holder of that moment (the Lease's versions replayed in the
        order the server applied them)."""
        applied = self.kube.applied()
        new, self._applied_seen = applied[self._applied_seen:], len(applied)
        versions = self._lease_versions(self._lease_versions_seen)
        for _, _, path, who in new:
            if path.startswith(f"leases/{LEASE}"):
                spec = versions.pop(0)["spec"] if versions else {}
                self._lease_versions_seen += 1
                holder = spec.get("holderIdentity") or None
                if holder is not None and self._last_holder is not None and holder != self._last_holder:
                    self.report.handovers += 1
                self._last_holder = holder or self._last_holder
                self._lease_holder = holder  # None after a release: nobody may write until the next holder
                continue
            self.report.checks["single-writer"] += 1
            if who != self._lease_holder:
                self._fail("single-writer", f"{path} written by {who} while the Lease was held by "
                           f"{self._lease_holder}")

    def _lease_versions(self, start: int) -> list[dict[str, Any]]:
        try:
            return self.kube.history("coordination.k8s.io/v1/leases", NS, LEASE, start=start)
        except KeyError:  # no Lease yet
            return []

    def _check_bounds(self) -> None:
        for pool in ("prefill", "decode"):
            seen = self._deploy_versions_seen[pool]
            new = self.kube.history("apps/v1/deployments", NS, pool, start=seen)
            for version in new if seen else new[1:]:  # the first version is the seeded one
                self.report.checks["bounds"] += 1
                n = int(version["spec"]["replicas"])
                if not MIN_REPLICAS <= n <= MAX_REPLICAS:
                    self._fail("bounds", f"{pool} written to {n} outside [{MIN_REPLICAS}, {MAX_REPLICAS}]")
            self._deploy_versions_seen[pool] = seen + len(new)

    # -- main loop

    def run(self) -> ChaosReport:
        cfg = self.config
        self.seed_objects()
        self.prometheus.wait_for_scrapes("vllm", int(cfg.window_s / cfg.scrape_s) + 2, timeout_s=60)
        self.start_replica()
        self.start_replica()
        started = time.monotonic()
        phases = ("busy-prefill", "quiet", "busy-decode", "quiet")
        next_fault = started + self.rng.expovariate(1.0 / cfg.fault_every_s)
        try:
            while (now := time.monotonic()) < started + cfg.duration_s:
                self.pods.phase = phases[int((now - started) // cfg.phase_s) % len(phases)]
                for due, action in [t for t in self._timers if t[0] <= now]:
                    self._timers.remove((due, action))
                    action()
                if now >= next_fault:
                    if not self._kinds:  # a fresh random order of every kind: each one comes in every round
                        self._kinds = self.rng.sample(ROUND, len(ROUND))
                    self.inject(self._kinds.pop())
                    next_fault = now + self.rng.expovariate(1.0 / cfg.fault_every_s)
                self.pods.sync()
                self.check()
                time.sleep(0.1)
        finally:
            for replica in list(self.replicas.values()):
                replica.stop()
            self.kube.clear_faults()
            time.sleep(2.5 * cfg.kube_timeout_s)  # held requests have run out
            self.check()
        return self.report


def bad_data(observation: dict[str, Any]) -> str | None:
    """Why a tick's observation (``report["observation"]``) may not justify removing capacity, or None."""
    sig = observation["signals"]
    if sig.get("error"):
        return f"metrics failed ({sig['error']})"
    for name in ("request_rate_per_s", "prompt_tokens_per_s", "output_tokens_per_s"):
        if sig.get(name) is None:
            return f"{name} missing"
    rate, failed = sig["request_rate_per_s"], sig.get("failed_request_rate_per_s") or 0.0
    if rate > 0 and failed / rate > 0.05:
        return f"{failed / rate:.0%} of requests failing"
    for pool in ("prefill", "decode"):
        pods, ready = sig[pool].get("pods_reporting"), observation[pool]["ready"]
        if pods is not None and pods < ready:
            return f"{pods:.0f} of {ready} ready {pool} pods reporting"
    return None


@contextmanager
def chaos_world(base: Path, config: ChaosConfig) -> Iterator[Chaos]:
    """The emulator, the exporter and a real Prometheus scraping it, torn down on exit."""
    runner = ProcessRunner(base / "proc-logs")
    try:
        with KubeEmulator() as kube, VllmExporter() as exporter:
            prometheus = PrometheusServer(runner, base / "prometheus", static_targets={"vllm": [exporter.target]},
                                          scrape_interval_s=config.scrape_s).start()
            try:
                yield Chaos(config, kube, exporter, prometheus)
            finally:
                prometheus.stop()
    finally:
        runner.stop_all()

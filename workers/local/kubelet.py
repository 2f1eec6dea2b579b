"""The kubelet of one machine: a real process per pod, readiness from HTTP probes, graceful termination.

Per pod (the first container; every pod is scheduled on the one node ``local``):

* **Start.** The container's ``command`` + ``args`` run as a local process in its own process group, with the
  container's ``env`` (``value`` and the downward API's ``metadata.name``, ``metadata.namespace``,
  ``status.podIP``), ``$(VAR)`` references expanded as the kubelet expands them, and these variables added:
  ``POD_NAME``, ``POD_NAMESPACE``, ``POD_IP`` (127.0.0.1), ``POD_PORT`` and ``PDSCALE_PYTHON`` (this
  interpreter), ``POD_PORT_<NAME>`` per named container port and ``POD_TMPDIR`` (a directory of its own under the system temp dir, like
  an emptyDir, removed with the pod). On one machine every pod shares 127.0.0.1, so each container port gets a port of its own: its
  ``hostPort`` when the template sets one, else a free port; the pod's container ports are rewritten to them,
  so the proxy and Prometheus find the pod at ``POD_IP:port`` (``POD_PORT``: the port named ``http``, else the
  first). Output goes to ``<log dir>/<namespace>_<pod>.log``.
* **Start-up.** A container "loads its model" for the start-up delay (annotation
  ``pdscale.io/startup-delay-seconds`` on the pod, else the runner's default), counted from the moment its
  process started: the process starts at once (its own start-up overlaps the delay) but the kubelet neither
  probes it nor publishes it to Prometheus before the delay has passed, as a real vLLM answers neither
  ``/health`` nor ``/metrics`` while it loads.
* **Readiness.** After that, ``readinessProbe.httpGet`` (default ``GET /health`` on the pod's port) every
  ``readinessProbe.periodSeconds`` (else the runner's probe period), each within ``timeoutSeconds`` (else the
  runner's probe timeout): one success makes the pod Ready, ``failureThreshold`` (default 3) failures in a row
  make it not Ready, as the kubelet counts them. The pod's ``Ready`` condition carries ``lastTransitionTime``
  (the ReplicaSet's victim order and ``availableReplicas`` read it).
* **Crash.** A process that exits while its pod is not terminating is restarted in place (restartPolicy
  Always): ``restartCount`` + 1, ``CrashLoopBackOff`` for the back-off (``restart_backoff_s`` doubling per
  restart up to ``max_restart_backoff_s``), then a new process on the same port, loading again.
* **Termination.** A pod marked for deletion (``deletionTimestamp``; the ReplicaSet's scale-down, ``kubectl
  delete pod``) is cut from endpoints at once by whoever reads ``deletionTimestamp`` (the proxy does), then:
  the ``preStop`` hook (``sleep.seconds``, or an ``exec`` command run to completion), SIGTERM to the process
  group, up to ``deletionGracePeriodSeconds`` in all (counted from when termination began, preStop included,
  as the kubelet counts it), then SIGKILL; once the process is gone the pod is deleted for good (``DELETE``
  with ``gracePeriodSeconds=0``). A pod deleted outright (grace 0) gets SIGKILL.

Everything the kubelet does is recorded in ``history`` (wall time, pod, role, what happened), which the bench,
the live demo and the tests read.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.local.controllers import meta, terminating, uid
from workers.local.cpu_placement import parse_cpus, place
from workers.local.kube_json import KubeApiError, KubeJson, now_iso
from workers.local.net import LOOPBACK, free_port
from workers.local.processes import ManagedProcess, ProcessRunner

log = logging.getLogger("pdscale.podrunner.kubelet")

NODE = "local"
ROLE_LABEL = "pdscale.io/role"
STARTUP_ANNOTATION = "pdscale.io/startup-delay-seconds"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class KubeletOptions:
    log_dir: Path
    startup_delay_s: float = 0.0  # default model-loading time of a container (annotation overrides)
    probe_period_s: float = 0.5  # when the template's readinessProbe has no periodSeconds
    probe_timeout_s: float = 1.0
    restart_backoff_s: float = 1.0  # first CrashLoopBackOff; doubles per restart
    max_restart_backoff_s: float = 30.0
    env: Mapping[str, str] = field(default_factory=dict)  # added to every container's environment
    cwd: Path | None = None
    # CPU priority of the containers (nice(1) increment): on a cluster the control plane has CPU of its own
    # (system-reserved); on one machine the emulator, controller and Prometheus share the cores with the pods, and
    # CPU-hungry pods (real vLLM) would starve the API server into timeouts unless they run at a lower priority.
    # Each container is a session of its own, so where the kernel groups sessions (sched_autogroup, on by default
    # on most distributions) the session's autogroup nice is set too: across autogroups the threads' own nice
    # values do not count, each busy session gets an equal share (/proc/PID/autogroup, sched(7))
    nice: int = 0
    # nice increment of a container until it is first Ready, then ``nice`` (None: ``nice`` throughout). On a
    # cluster a new pod gets cores of its own; here it starts (three Python interpreters importing torch and vLLM)
    # on the same two cores as the busy pods, and at their priority a real vLLM server took ~6 min instead of ~40 s
    startup_nice: int | None = None
    # Once a container is first Ready (workers.local.cpu_placement, where the measurements are): threads its
    # program pinned move to its role's CPUs (role -> CPU list, e.g. {"prefill": "0", "decode": "1"}), and with
    # ``demote_busy_pollers`` threads that never block (NIXL's UCX progress thread in real vLLM) run SCHED_IDLE
    cpus_by_role: Mapping[str, str] = field(default_factory=dict)
    demote_busy_pollers: bool = False

    def __post_init__(self) -> None:
        for role, cpus in self.cpus_by_role.items():
            try:
                parse_cpus(cpus)
            except ValueError as exc:
                raise ValueError(f"KubeletOptions.cpus_by_role[{role!r}]: {exc}") from None


@dataclass
class HistoryEvent:
    t_s: float  # wall clock
    namespace: str
    pod: str
    role: str
    event: str  # admitted, started, loaded, ready, reniced, placed, unready, crashed, restarted, terminating,
    #            sigterm, sigkill, exited, deleted
    detail: str = ""


@dataclass
class _Container:
    namespace: str
    name: str
    uid: str
    role: str
    port: int
    startup_delay_s: float
    probe_path: str
    probe_period_s: float
    argv: list[str]
    env: dict[str, str]
    process: ManagedProcess | None = None
    started_s: float = math.nan
    started_iso: str = ""
    ready: bool = False
    ready_since_iso: str = ""
    serving: bool = False  # published to Prometheus (loaded once)
    restarts: int = 0
    backoff_until_s: float = 0.0
    last_exit: int | None = None
    terminating: bool = False
    gone: bool = False
    next_probe_s: float = 0.0
    probe: Future[bool] | None = None
    admitted_iso: str = ""
    tmpdir: Path | None = None  # POD_TMPDIR, removed with the pod
    probe_timeout_s: float = 1.0
    failure_threshold: int = 3  # consecutive failed probes before Ready turns False (Kubernetes' default)
    probe_failures: int = 0
    at_startup_nice: bool = False  # started at KubeletOptions.startup_nice, not yet reniced to ``nice``
    placed: bool = False  # cpu_placement applied (once, at the first Ready of each process)

    @property
    def loaded(self) -> bool:
        return self.process is not None and time.time() >= self.started_s + self.startup_delay_s


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` expansion as the kubelet does it: defined variables are replaced, others left as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _container_env(container: Mapping[str, Any], pod: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    fields = {"metadata.name": meta(pod).get("name", ""), "metadata.namespace": meta(pod).get("namespace", ""),
              "status.podIP": LOOPBACK, "spec.nodeName": NODE}  # fmt: skip
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        else:
            path = (((item.get("valueFrom") or {}).get("fieldRef")) or {}).get("fieldPath", "")
            env[item["name"]] = str(fields.get(path, ""))
    return env


def _grace_s(pod: Mapping[str, Any]) -> float:
    value = meta(pod).get("deletionGracePeriodSeconds")
    if value is None:
        value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return float(value)


class Kubelet:
    """Runs the pods of one node. ``sync(pods)`` once per pass; ``stop_all()`` at shutdown."""

    def __init__(self, api: KubeJson, options: KubeletOptions, runner: ProcessRunner | None = None) -> None:
        self.api = api
        self.options = options
        self.runner = runner or ProcessRunner(options.log_dir)
        self.containers: dict[str, _Container] = {}  # by pod uid
        self.history: list[HistoryEvent] = []
        self._lock = threading.Lock()
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self._threads: list[threading.Thread] = []
        self._status_written: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- bookkeeping
    def _record(self, c: _Container, event: str, detail: str = "") -> None:
        with self._lock:
            self.history.append(HistoryEvent(time.time(), c.namespace, c.name, c.role, event, detail))
        log.info("%s/%s %s %s", c.namespace, c.name, event, detail)

    def _event(self, pod: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        try:
            self.api.event(pod, reason, message, component="kubelet", type_=type_)
        except KubeApiError as exc:
            log.warning("event %s not recorded: %s", reason, exc)

    def serving_targets(self) -> list[tuple[Mapping[str, Any], int]]:
        """(pod labels and names, port) of every container Prometheus may scrape: loaded once, pod not gone."""
        with self._lock:
            return [({"namespace": c.namespace, "pod": c.name, "uid": c.uid, "role": c.role}, c.port)
                    for c in self.containers.values() if c.serving and not c.gone]  # fmt: skip

    # ---------------------------------------------------------------- one pass
    def sync(self, pods: Sequence[dict[str, Any]]) -> None:
        seen = set()
        for pod in pods:
            pod_uid = uid(pod)
            seen.add(pod_uid)
            c = self.containers.get(pod_uid)
            if c is None:
                if terminating(pod):
                    self._final_delete(pod)
                    continue
                c = self._admit(pod)
                if c is None:
                    continue
            if terminating(pod) and not c.terminating:
                c.terminating = True
                thread = threading.Thread(target=self._terminate, args=(c, pod), daemon=True,
                                          name=f"terminate-{c.name}")  # fmt: skip
                self._threads.append(thread)
                thread.start()
            self._step(c)
            self._write_status(c, pod)
        for pod_uid, c in list(self.containers.items()):
            if pod_uid not in seen and not c.gone:
                if not c.terminating:  # deleted outright (grace 0, or its owner's garbage collection)
                    c.terminating = True
                    if c.process is not None:
                        c.process.kill()
                    self._record(c, "sigkill", "pod deleted without a grace period")
                c.gone = True
                self._record(c, "deleted")
                if c.tmpdir is not None:
                    shutil.rmtree(c.tmpdir, ignore_errors=True)

    def _admit(self, pod: dict[str, Any]) -> _Container | None:
        containers = (pod.get("spec") or {}).get("containers") or []
        if not containers:
            return None
        container = containers[0]
        ports = container.get("ports") or []
        named = [p for p in ports if p.get("name") == "http"] or ports[:1]
        # every container port gets a port of its own on 127.0.0.1 (its hostPort when set): POD_PORT is the
        # http one, POD_PORT_<NAME> each named one (e.g. a NIXL side channel)
        assigned = [int(p["hostPort"]) if p.get("hostPort") else free_port() for p in ports] or [free_port()]
        port = assigned[ports.index(named[0])] if named else assigned[0]
        extra_ports = {f"POD_PORT_{str(p.get('name', i)).upper().replace('-', '_')}": str(a)
                       for i, (p, a) in enumerate(zip(ports, assigned, strict=False))}  # fmt: skip
        # short, under the system temp dir: servers put Unix sockets there (108-byte path limit)
        pod_tmp = Path(tempfile.mkdtemp(prefix="pdscale-pod-"))
        annotations = meta(pod).get("annotations") or {}
        try:
            delay = float(annotations.get(STARTUP_ANNOTATION, self.options.startup_delay_s))
        except ValueError:
            delay = self.options.startup_delay_s
        readiness = container.get("readinessProbe") or {}
        probe = readiness.get("httpGet") or {}
        period = readiness.get("periodSeconds")
        base = {**os.environ, **self.options.env, "POD_NAME": str(meta(pod).get("name")),
                "POD_NAMESPACE": str(meta(pod).get("namespace")), "POD_IP": LOOPBACK, "POD_PORT": str(port),
                **extra_ports, "POD_TMPDIR": str(pod_tmp), "PDSCALE_PYTHON": sys.executable}  # fmt: skip
        env = _container_env(container, pod, base)
        argv = [expand(str(a), env) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
        c = _Container(
            namespace=str(meta(pod).get("namespace")), name=str(meta(pod).get("name")), uid=uid(pod),
            role=str((meta(pod).get("labels") or {}).get(ROLE_LABEL, "")), port=port, startup_delay_s=delay,
            probe_path=str(probe.get("path", "/health")), argv=argv, env=env,
            probe_period_s=float(period) if period else self.options.probe_period_s, admitted_iso=now_iso(),
            tmpdir=pod_tmp, probe_timeout_s=float(readiness.get("timeoutSeconds") or self.options.probe_timeout_s),
            failure_threshold=int(readiness.get("failureThreshold") or 3),
        )  # fmt: skip
        self.containers[c.uid] = c
        self._record(c, "admitted", f"port {port}")
        if not argv:
            self._event(pod, "Failed", "container has no command (an image entrypoint cannot run here)", "Warning")
            c.backoff_until_s = math.inf
            return c
        ports_out = [dict(p, containerPort=a) for p, a in zip(ports, assigned, strict=False)] or [
            {"name": "http", "containerPort": port, "protocol": "TCP"}]
        spec_patch = {"nodeName": NODE, "containers": [dict(container, ports=ports_out), *containers[1:]]}
        try:
            self.api.patch("v1/pods", c.namespace, c.name, {"spec": spec_patch})
        except KubeApiError as exc:
            log.warning("binding pod %s/%s failed: %s", c.namespace, c.name, exc)
        self._event(pod, "Scheduled", f"Successfully assigned {c.namespace}/{c.name} to {NODE}")
        self._start(c, pod)
        return c

    def _start(self, c: _Container, pod: Mapping[str, Any] | None = None) -> None:
        increment = self.options.nice if self.options.startup_nice is None else self.options.startup_nice
        try:
            argv = ["nice", "-n", str(increment), *c.argv] if increment else c.argv
            c.process = self.runner.start(argv, name=f"{c.namespace}_{c.name}", env=c.env,
                                          cwd=self.options.cwd)  # fmt: skip
        except OSError as exc:
            c.last_exit = 127
            c.backoff_until_s = time.time() + self._backoff_s(c)
            self._record(c, "crashed", f"cannot start {shlex.join(c.argv)}: {exc}")
            return
        c.started_s, c.started_iso = time.time(), now_iso()
        c.at_startup_nice = increment != self.options.nice
        c.placed = False
        if increment:
            self._set_autogroup_nice(c, increment)
        c.next_probe_s = c.started_s + c.startup_delay_s
        self._record(c, "started", f"pid {c.process.pid}")
        if pod is not None:
            self._event(pod, "Started", f"Started container {(pod.get('spec') or {}).get('containers', [{}])[0].get('name', '')}")

    def _backoff_s(self, c: _Container) -> float:
        return float(min(self.options.max_restart_backoff_s,
                         self.options.restart_backoff_s * 2.0 ** max(0, c.restarts - 1)))

    def _step(self, c: _Container) -> None:
        now = time.time()
        if c.gone:
            return
        proc = c.process
        if proc is not None and not proc.running and not c.terminating:
            c.last_exit = proc.returncode
            c.process = None
            c.restarts += 1
            c.backoff_until_s = now + self._backoff_s(c)
            self._set_ready(c, False)
            self._record(c, "crashed", f"exit {c.last_exit}, restart {c.restarts} in {c.backoff_until_s - now:.1f} s")
            return
        if c.process is None and not c.terminating and now >= c.backoff_until_s:
            self._start(c)
            if c.process is not None:
                self._record(c, "restarted", f"restart {c.restarts}")
            return
        if c.process is None or not c.loaded:
            return
        if not c.serving:
            c.serving = True
            self._record(c, "loaded")
        if c.probe is not None and c.probe.done():
            ok = bool(c.probe.result()) and c.process is not None and c.process.running
            c.probe_failures = 0 if ok else c.probe_failures + 1
            if ok or c.probe_failures >= c.failure_threshold:
                self._set_ready(c, ok)
            c.probe = None
        if c.probe is None and now >= c.next_probe_s:
            c.next_probe_s = now + c.probe_period_s
            c.probe = self._probes.submit(self._probe_once, f"http://{LOOPBACK}:{c.port}{c.probe_path}",
                                          c.probe_timeout_s)  # fmt: skip

    def _probe_once(self, url: str, timeout_s: float) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return 200 <= int(resp.status) < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _set_ready(self, c: _Container, ready: bool) -> None:
        if ready != c.ready:
            c.ready = ready
            c.ready_since_iso = now_iso()
            self._record(c, "ready" if ready else "unready")
        if ready and c.at_startup_nice:
            self._renice(c)
        if ready and not c.placed:
            c.placed = True
            if self.options.cpus_by_role.get(c.role) or self.options.demote_busy_pollers:
                self._probes.submit(self._place, c)

    def _place(self, c: _Container) -> None:
        """``cpu_placement.place`` for the container's process group (in the probe pool: it samples for 1 s)."""
        proc = c.process
        if proc is None or not proc.running:
            return
        cpus_text = self.options.cpus_by_role.get(c.role)
        try:
            detail = place(proc.pid, cpus=parse_cpus(cpus_text) if cpus_text else None,
                           demote_busy_pollers=self.options.demote_busy_pollers)  # fmt: skip
        except OSError as exc:
            log.warning("%s/%s: CPU placement failed: %s", c.namespace, c.name, exc)
            return
        self._record(c, "placed", detail)

    def _renice(self, c: _Container) -> None:
        """Every process and thread of the container (its process group, and its session's autogroup) from
        ``startup_nice`` to ``nice``."""
        c.at_startup_nice = False
        if c.process is None or not c.process.running:
            return
        value = os.getpriority(os.PRIO_PROCESS, 0) + self.options.nice  # nice(1) increments are relative to ours
        try:
            os.setpriority(os.PRIO_PGRP, c.process.pid, value)
        except OSError as exc:
            log.warning("%s/%s: renice to %d failed: %s", c.namespace, c.name, value, exc)
            return
        group = self._set_autogroup_nice(c, self.options.nice)
        self._record(c, "reniced", f"nice {value}" + (f", autogroup nice {group}" if group is not None else ""))

    def _set_autogroup_nice(self, c: _Container, value: int) -> int | None:
        """The nice value of the container's session autogroup (None where the kernel has no autogroups)."""
        if c.process is None:
            return None
        path = Path(f"/proc/{c.process.pid}/autogroup")
        value = max(-20, min(19, value))
        try:
            if not path.exists() or Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
                return None
            path.write_text(f"{value}\n")
        except OSError as exc:  # lowering it needs CAP_SYS_NICE
            log.warning("%s/%s: autogroup nice %d not set: %s", c.namespace, c.name, value, exc)
            return None
        return value

    # ---------------------------------------------------------------- status
    def _status(self, c: _Container) -> dict[str, Any]:
        running = c.process is not None and c.process.running
        if running:
            state: dict[str, Any] = {"running": {"startedAt": c.started_iso}}
        elif c.restarts and c.last_exit is not None and not c.terminating:
            state = {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": f"back-off restarting failed container (exit {c.last_exit})"}}  # fmt: skip
        elif c.terminating:
            state = {"terminated": {"reason": "Completed" if c.last_exit == 0 else "Error", "exitCode": c.last_exit}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        since = c.ready_since_iso or c.admitted_iso
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": c.admitted_iso},
            {"type": "Initialized", "status": "True", "lastTransitionTime": c.admitted_iso},
            {"type": "ContainersReady", "status": str(c.ready), "lastTransitionTime": since},
            {"type": "Ready", "status": str(c.ready), "lastTransitionTime": since},
        ]
        last_state = {"terminated": {"exitCode": c.last_exit}} if c.restarts and c.last_exit is not None else {}
        return {
            "phase": "Running" if c.started_iso else "Pending",
            "podIP": LOOPBACK, "podIPs": [{"ip": LOOPBACK}], "hostIP": LOOPBACK,
            "startTime": c.admitted_iso,
            "conditions": conditions,
            "containerStatuses": [{"name": "main", "ready": c.ready, "restartCount": c.restarts, "started": running,
                                   "state": state, "lastState": last_state}],
        }  # fmt: skip

    def _write_status(self, c: _Container, pod: Mapping[str, Any]) -> None:
        if c.gone:
            return
        status = self._status(c)
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        cs = status["containerStatuses"][0]
        cs["name"] = containers[0].get("name", "main")
        cs["image"] = str(containers[0].get("image") or "local")
        cs["imageID"] = f"local://{cs['image']}"  # required fields of a ContainerStatus
        if c.process is not None:
            cs["containerID"] = f"local://{c.process.pid}"
        if self._status_written.get(c.uid) == status:
            return
        try:
            self.api.patch("v1/pods", c.namespace, c.name, {"status": status}, sub="status")
            self._status_written[c.uid] = status
        except KubeApiError as exc:
            if exc.status != 404:
                log.warning("status of pod %s/%s not written: %s", c.namespace, c.name, exc)

    # ---------------------------------------------------------------- termination
    def _terminate(self, c: _Container, pod: Mapping[str, Any]) -> None:
        began = time.time()
        grace = _grace_s(pod)
        deadline = began + grace
        self._record(c, "terminating", f"grace {grace:g} s")
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        self._event(pod, "Killing", f"Stopping container {container.get('name', 'main')}")
        pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
        if c.process is not None and pre_stop:
            self._run_pre_stop(c, pre_stop, deadline)
        proc = c.process
        if proc is not None and proc.running:
            proc.signal(signal.SIGTERM)
            self._record(c, "sigterm")
            while proc.running and time.time() < deadline:
                time.sleep(0.05)
            if proc.running:
                proc.signal(signal.SIGKILL)
                self._record(c, "sigkill", f"still running after the {grace:g} s grace period")
            try:
                c.last_exit = proc.wait(timeout_s=10.0)
            except subprocess.TimeoutExpired:
                c.last_exit = None
            proc.stop(timeout_s=1.0)  # reaps and clears what is left of its group
            self._record(c, "exited", f"exit {c.last_exit}")
        self._set_ready(c, False)
        self._final_delete(pod)

    def _run_pre_stop(self, c: _Container, hook: Mapping[str, Any], deadline: float) -> None:
        sleep_s = (hook.get("sleep") or {}).get("seconds")
        command = (hook.get("exec") or {}).get("command")
        if sleep_s is not None:
            self._record(c, "prestop", f"sleep {sleep_s} s")
            time.sleep(max(0.0, min(float(sleep_s), deadline - time.time())))
        elif command:
            self._record(c, "prestop", shlex.join(command))
            try:
                subprocess.run([expand(str(a), c.env) for a in command], env=c.env, cwd=self.options.cwd,
                               timeout=max(0.01, deadline - time.time()), capture_output=True, check=False)  # fmt: skip
            except (subprocess.TimeoutExpired, OSError) as exc:
                log.warning("preStop of %s/%s: %s", c.namespace, c.name, exc)

    def _final_delete(self, pod: Mapping[str, Any]) -> None:
        try:
            self.api.delete("v1/pods", meta(pod).get("namespace"), str(meta(pod).get("name")), grace_s=0)
        except KubeApiError as exc:
            log.warning("final delete of %s failed: %s", meta(pod).get("name"), exc)

    # ---------------------------------------------------------------- shutdown
    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every container (SIGTERM, then SIGKILL after ``timeout_s``) without touching the API."""
        self._probes.shutdown(wait=False, cancel_futures=True)
        self.runner.stop_all(timeout_s)
        for c in self.containers.values():
            if c.tmpdir is not None:
                shutil.rmtree(c.tmpdir, ignore_errors=True)
        for thread in self._threads:
            thread.join(timeout=1.0)

    def snapshot_history(self) -> list[HistoryEvent]:
        with self._lock:
            return list(self.history)

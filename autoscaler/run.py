"""``pdscale run``: the live controller process.

Per tick: list the DisaggregatedAutoscaler objects, refresh Prometheus once for all of them, tick one
``Controller`` per valid object (the same class the simulator drives), then write each object's status and one
event per scale. Only the Lease holder writes (``autoscaler.leader``); ``--dry-run`` and ``mode: advisory``
compute and report without writing replicas (``--dry-run`` writes nothing at all). SIGTERM finishes the
autoscalers in flight (at most ``workers``), starts no more, releases the Lease and exits 0. A pass that listed
the autoscalers and reached Prometheus (or needed it for none) marks the controller ready (``/readyz``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from autoscaler.controller import Controller, TickResult
from autoscaler.core.spec import AutoscalerSpec, Mode
from autoscaler.core.types import Pool
from autoscaler.kube import (
    NOT_CHECKED,
    UNFENCED,
    AutoscalerObject,
    EventRecorder,
    FencedError,
    KubeClient,
    KubeScaleTarget,
    KubeSettings,
    Ownership,
    PodLoad,
    ScaleError,
    StatusStateStore,
    TargetCache,
    WriteFence,
    api_error_text,
    as_dict,
    build_status,
    list_autoscalers,
    split_api_version,
    status_write_due,
    write_status,
)
from autoscaler.leader import LeaderElector, LeaseConfig, LeaseFence
from autoscaler.owners import OwnerChecker
from autoscaler.run_cli import (
    CONSENT_ANNOTATION,  # spelled where --help can say it without importing this module
)
from autoscaler.telemetry import ControllerTelemetry, JsonLogFormatter

log = logging.getLogger("pdscale.run")


class WallClock:
    def now_s(self) -> float:
        return time.time()


def make_policy(spec: AutoscalerSpec) -> Any:
    """The policy for one autoscaler: pdscale's own with the spec's latency profile. The one place it is built."""
    from autoscaler.core.policy import PdscalePolicy
    from autoscaler.profiles import load_profile

    return PdscalePolicy(profile=load_profile(spec.profile))


@dataclass(frozen=True)
class RunOptions:
    namespace: str | None  # None: all namespaces
    prometheus_url: str
    tick_s: float = 15.0
    once: bool = False
    dry_run: bool = False
    json_output: bool = False
    metrics_port: int | None = None
    lease_name: str = "pdscale-controller"
    lease_namespace: str = "default"
    lease_duration_s: float = 15.0
    identity: str = ""
    kube_timeout_s: float = 5.0
    prometheus_timeout_s: float = 5.0
    workers: int = 8  # autoscalers ticked at once (bounds concurrent API writes)
    status_refresh_s: float = 60.0  # observed values and policy state are re-written at most this often
    # opt-in consent: scale only targets annotated pdscale.io/autoscaler=<the autoscaler's name>
    require_target_annotation: bool = False


# Why an autoscaler could not be evaluated. The controller's own trouble (it cannot reach the API server or
# Prometheus) makes it unready; a user's (invalid spec, another owner of the target) does not: one broken
# DisaggregatedAutoscaler must not take the controller, and the metrics it serves, out of its Service.
USER_FAILURES = frozenset({"spec", "owner"})


@dataclass
class PassStats:
    """What one pass did, for telemetry, the bench and tests."""

    autoscalers: int = 0
    listed: bool = False  # listing the DisaggregatedAutoscalers worked
    list_error: str | None = None
    metrics_error: str | None = None  # Prometheus unreachable for the whole refresh
    target_lists: int = 0  # LIST requests for scale targets
    status_writes: int = 0
    status_unchanged: int = 0  # status computed but equal to the stored one up to timestamps: not written
    writes_fenced: int = 0  # writes not sent: this replica could not prove its leadership for their timeout
    duration_s: float = 0.0
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, str]]:
        """Every reason an autoscaler was not evaluated, the pass's own first (``{"kind", "message"}``)."""
        out = [] if self.list_error is None else [{"kind": "list", "message": self.list_error}]
        if self.metrics_error is not None:
            out.append({"kind": "metrics", "message": self.metrics_error})
        for report in self.reports:
            out += [{"autoscaler": report["autoscaler"], **f} for f in report.get("failures", [])]
        return out

    @property
    def succeeded(self) -> bool:
        """Every autoscaler listed was evaluated (``--once`` exits 0)."""
        return self.listed and self.metrics_error is None and not any(r.get("failures") for r in self.reports)

    @property
    def healthy(self) -> tuple[bool, str]:
        """(ready, why) for /readyz: the controller could do its job for at least one autoscaler (or there is
        none to serve). Failures caused by one autoscaler's own configuration do not count against it."""
        if not self.listed:
            return False, f"cannot list DisaggregatedAutoscalers: {self.list_error}"
        if self.metrics_error is not None:
            return False, f"metrics source failing: {self.metrics_error}"
        tried = [r for r in self.reports if not {f["kind"] for f in r.get("failures", [])} & USER_FAILURES]
        if tried and all(r.get("failures") for r in tried):
            first = tried[0]["failures"][0]
            return False, f"no autoscaler could be evaluated ({tried[0]['autoscaler']}: {first['message']})"
        return True, "ok"


@dataclass
class _Managed:
    """What survives between ticks for one autoscaler: its spec, policy and in-memory policy state."""

    uid: str
    spec: AutoscalerSpec
    policy: Any
    store: StatusStateStore


def _condition(obj: AutoscalerObject, type_: str) -> Mapping[str, Any]:
    """The object's current status condition of ``type_`` (empty when absent)."""
    return next((c for c in obj.status.get("conditions") or [] if c.get("type") == type_), {})


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, float) and value in (math.inf, -math.inf):  # nor is infinity (a histogram's le="+Inf")
        return "+Inf" if value > 0 else "-Inf"
    return value


class Runner:
    """One controller process. ``run_pass()`` is one tick over every autoscaler; ``serve()`` loops."""

    def __init__(
        self,
        options: RunOptions,
        kube: KubeClient,
        metrics: Any,
        *,
        elector: LeaderElector | None = None,
        telemetry: ControllerTelemetry | None = None,
        policy_factory: Callable[[AutoscalerSpec], Any] = make_policy,
        clock: WallClock | None = None,
        pod_load: PodLoad | None = None,
        external_metrics: Any = None,
    ) -> None:
        self.options = options
        self.kube = kube
        self.metrics = metrics
        self.elector = elector
        self.telemetry = telemetry
        self.policy_factory = policy_factory
        self.pod_load = pod_load  # per-pod load for pod-deletion-cost on scale-down; None: not marked
        # --serve-external-metrics: a metrics_adapter.refresh.ControllerFeed (record per autoscaler, publish per pass)
        self.external_metrics = external_metrics
        self.clock = clock or WallClock()
        # every write is fenced by the Lease: sent only when it would end before this replica's leadership can
        self.fence: WriteFence = LeaseFence(elector) if elector is not None else UNFENCED
        self.events = EventRecorder(kube, options.identity, self.fence)
        self.owners = OwnerChecker(kube)
        self.managed: dict[str, _Managed] = {}
        self.stop = threading.Event()
        self.last_pass = PassStats()
        self._stats_lock = threading.Lock()

    # -- leadership

    def may_write(self) -> bool:
        if self.options.dry_run:
            return False
        if self.elector is None:
            return True
        if not self.elector.is_leader():
            self.elector.step()
        return self.elector.is_leader()

    # -- one pass

    def run_pass(self) -> list[dict[str, Any]]:
        """One tick over every autoscaler; returns one report per autoscaler (sorted by key)."""
        started = time.monotonic()
        stats = PassStats()
        self.last_pass = stats
        try:
            objects = list_autoscalers(self.kube, self.options.namespace)
        except Exception as exc:
            stats.list_error = f"list DisaggregatedAutoscalers: {api_error_text(exc)}"
            log.error("%s", stats.list_error)
            if self.telemetry is not None:
                self.telemetry.record_error("list", api_error_text(exc))
                self.telemetry.mark_failure(stats.list_error)
            stats.duration_s = time.monotonic() - started
            return []
        stats.listed, stats.autoscalers = True, len(objects)
        specs = {o.key: o.spec for o in objects if o.spec is not None}
        self.metrics.refresh(specs, self.clock.now_s())
        stats.metrics_error = getattr(self.metrics, "last_fatal_error", None) if specs else None
        writes = self.may_write()  # steps the elector at most once per pass
        owners = self.owners.index(objects, self.options.namespace)
        cache = TargetCache(self.kube)

        def one(o: AutoscalerObject) -> dict[str, Any] | None:
            own = owners.ownership(o) if o.spec is not None else NOT_CHECKED
            return self._run_if_running(o, cache, writes, own)

        workers = max(1, min(self.options.workers, len(objects)))
        if workers == 1:
            done = [one(o) for o in objects]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pdscale-tick") as pool:
                done = list(pool.map(one, objects))
        reports = [r for r in done if r is not None]
        live = {o.key for o in objects}
        for key in list(self.managed):
            if key not in live:
                del self.managed[key]
                if self.telemetry is not None:
                    self.telemetry.forget(key)
        if self.external_metrics is not None:
            self.external_metrics.publish()
        stats.target_lists = cache.lists
        stats.reports = reports
        stats.duration_s = time.monotonic() - started
        if self.telemetry is not None:
            queries = getattr(self.metrics, "queries_last_refresh", None)
            self.telemetry.observe_pass(stats.duration_s, queries if isinstance(queries, int) else None)
            if stats.metrics_error:
                self.telemetry.record_error("metrics", stats.metrics_error)
            ready, why = stats.healthy
            if ready:
                self.telemetry.mark_success()
            else:
                self.telemetry.mark_failure(why)
            self.telemetry.set_failing({f.get("autoscaler", "*"): f"{f['kind']}: {f['message']}"
                                        for f in stats.failures})
        return reports

    def _run_if_running(
        self, obj: AutoscalerObject, cache: TargetCache, writes: bool, ownership: Ownership = NOT_CHECKED
    ) -> dict[str, Any] | None:
        if self.stop.is_set():  # SIGTERM: finish the autoscalers already started, start no more
            return None
        return self.run_one(obj, cache=cache, writes=writes, ownership=ownership)

    def _managed_for(self, obj: AutoscalerObject) -> _Managed:
        assert obj.spec is not None
        found = self.managed.get(obj.key)
        if found is None or found.uid != obj.uid or found.spec != obj.spec:
            policy = self.policy_factory(obj.spec)
            persisted = obj.status.get("policyState") if found is None or found.uid != obj.uid else None
            store = StatusStateStore(policy, obj.spec, persisted)
            if found is not None and found.uid == obj.uid:  # spec edited: keep learned state
                store.save(found.store.load())
            found = _Managed(obj.uid, obj.spec, policy, store)
            self.managed[obj.key] = found
        return found

    def _still_writing(self, writes: bool | None) -> bool:
        """``writes`` decided at the start of the pass, re-checked against the Lease's validity (no renewal)."""
        if writes is None:
            return self.may_write()
        return writes and (self.elector is None or self.elector.is_leader())

    def run_one(
        self,
        obj: AutoscalerObject,
        *,
        cache: TargetCache | None = None,
        writes: bool | None = None,
        ownership: Ownership = NOT_CHECKED,
    ) -> dict[str, Any]:
        report: dict[str, Any] = {"autoscaler": obj.key, "valid": obj.spec is not None, "failures": []}
        if obj.spec is None:
            report["error"] = obj.error
            report["failures"].append({"kind": "spec", "message": obj.error or "invalid spec"})
            log.warning("invalid autoscaler %s: %s", obj.key, obj.error, extra={"autoscaler": obj.key})
            if self.telemetry is not None:
                self.telemetry.record_error("spec", obj.error or "invalid spec")
            if self._still_writing(writes):
                if _condition(obj, "ScalingActive").get("message") != obj.error:
                    self.events.emit(obj, "Warning", "InvalidSpec", obj.error or "invalid spec")
                self._write_status(obj, build_status(obj, result=None))
            if self.external_metrics is not None:
                self.external_metrics.record(obj, None, obj.error)
            return report
        report["owner"] = {"exclusive": ownership.exclusive, "reason": ownership.reason,
                           "message": ownership.message}
        if ownership.exclusive is not False and self.options.require_target_annotation:
            ownership = self._consent(obj, cache, ownership)
        if ownership.exclusive is False:  # another writer scales a target, or it did not consent: hands off
            return self._refuse_shared_target(obj, report, ownership, writes)

        managed = self._managed_for(obj)
        writes = self._still_writing(writes)
        target = KubeScaleTarget(self.kube, obj.namespace, obj.spec, pod_load=self.pod_load, cache=cache,
                                 fence=self.fence)
        controller = Controller(
            obj.key,
            obj.spec,
            managed.policy,
            self.metrics.view(obj.key),
            target,
            self.clock,
            store=managed.store,
            dry_run=not writes,
        )
        report["mode"] = obj.spec.mode.value
        report["dryRun"] = self.options.dry_run
        report["leader"] = writes or self.options.dry_run
        result: TickResult | None = None
        error: str | None = None
        try:
            result = controller.tick()
        except ScaleError as exc:
            error = str(exc)
        except Exception as exc:  # one broken object must not stop the others
            error = api_error_text(exc)
            log.exception("tick of %s failed", obj.key)
        if result is not None:
            report["observation"] = _jsonable(result.observation)
            report["decision"] = _jsonable(result.decision)
            report["applied"] = [p.value for p in result.applied]
            report["errors"] = list(result.errors)
            if result.observation.signals.error:
                report["failures"].append({"kind": "metrics", "message": result.observation.signals.error})
            report["failures"] += [{"kind": "scale", "message": e} for e in result.errors]
            for pool in result.applied:
                pd = result.decision.pool(pool)
                log.info("scaled %s %s %d -> %d: %s", obj.key, pool.value, pd.current_replicas,
                         pd.desired_replicas, pd.reason,
                         extra={"autoscaler": obj.key, "pool": pool.value, "reason": str(pd.reason)})
        else:
            report["error"] = error
            report["failures"].append({"kind": "target", "message": error or "tick failed"})
            log.warning("autoscaler %s: %s", obj.key, error, extra={"autoscaler": obj.key})
        status = build_status(
            obj,
            result=result,
            error=error,
            scaled=bool(result and result.applied),
            dry_run=not writes or obj.spec.mode is Mode.ADVISORY,
            state=managed.store.to_dict(),
            ownership=ownership,
        )
        report["conditions"] = {c["type"]: f"{c['status']} {c['reason']}" for c in status["conditions"]}
        if writes:
            if result is not None:
                self.events.for_tick(obj, result)
            elif error and _condition(obj, "AbleToScale").get("message") != error:
                self.events.emit(obj, "Warning", "FailedGetScale", error)  # once per new failure, not per tick
            self._write_status(obj, status)
        if self.telemetry is not None:
            self.telemetry.update(obj.key, result, error, spec=obj.spec)
        if self.external_metrics is not None:
            self.external_metrics.record(obj, result, error)
        return report

    def _consent(self, obj: AutoscalerObject, cache: TargetCache | None, ownership: Ownership) -> Ownership:
        """With ``--require-target-annotation``: every target must carry ``pdscale.io/autoscaler: <name>``.
        A target that cannot be read is left to the tick, which reports the read failure."""
        assert obj.spec is not None
        missing = []
        for pool in (Pool.PREFILL, Pool.DECODE):
            ref = obj.spec.pool(pool).target
            if ref is None:
                continue
            try:
                found = cache.get(ref, obj.namespace) if cache is not None else None
                if found is None:
                    group, version = split_api_version(ref.api_version)
                    found = as_dict(self.kube.custom.get_namespaced_custom_object(
                        group, version, obj.namespace, self.kube.plural(group, version, ref.kind), ref.name,
                        _request_timeout=self.kube.timeout), f"get {ref.kind}/{ref.name}")
            except Exception:
                continue
            annotations = (found.get("metadata") or {}).get("annotations") or {}
            if annotations.get(CONSENT_ANNOTATION) != obj.name:
                missing.append(f"{pool.value} target {ref.kind}/{ref.name}")
        if not missing:
            return ownership
        return Ownership(False, "TargetNotConsenting", f"{', '.join(missing)} not annotated "
                         f"{CONSENT_ANNOTATION}={obj.name} (required by --require-target-annotation): not scaling")

    def _refuse_shared_target(
        self, obj: AutoscalerObject, report: dict[str, Any], ownership: Ownership, writes: bool | None
    ) -> dict[str, Any]:
        """No tick for an autoscaler whose target another writer scales (``autoscaler.owners``): status says who
        the others are, one event per new set of owners."""
        report["error"] = ownership.message
        report["failures"].append({"kind": "owner", "message": ownership.message})
        log.warning("autoscaler %s: %s", obj.key, ownership.message, extra={"autoscaler": obj.key,
                                                                             "reason": ownership.reason})
        if self._still_writing(writes):
            if _condition(obj, "ExclusiveOwner").get("message") != ownership.message:
                self.events.emit(obj, "Warning", ownership.reason, ownership.message)
            self._write_status(obj, build_status(obj, result=None, ownership=ownership))
        if self.telemetry is not None:
            self.telemetry.record_error("owner", ownership.message)
        if self.external_metrics is not None:
            self.external_metrics.record(obj, None, ownership.message)
        return report

    def _write_status(self, obj: AutoscalerObject, status: Mapping[str, Any]) -> None:
        """Write ``status`` when something acted on changed, or its volatile part (observed values, policy state)
        is ``status_refresh_s`` old; see ``status_write_due``."""
        stats = self.last_pass
        if not status_write_due(obj.status, status, now_s=time.time(), refresh_s=self.options.status_refresh_s):
            with self._stats_lock:
                stats.status_unchanged += 1
            return
        try:
            write_status(self.kube, obj, status, self.fence)
            with self._stats_lock:
                stats.status_writes += 1
        except FencedError as exc:
            with self._stats_lock:
                stats.writes_fenced += 1
            log.warning("%s", exc, extra={"autoscaler": obj.key})
        except Exception as exc:
            log.warning("status of %s not written: %s", obj.key, api_error_text(exc), extra={"autoscaler": obj.key})

    # -- the loop

    def serve(self) -> None:
        """Tick every ``tick_s`` until ``stop`` is set; renew the Lease between ticks."""
        next_tick = time.monotonic()
        retry_s = self.elector.config.retry_period_s if self.elector else self.options.tick_s
        while not self.stop.is_set():
            if self.elector is not None and not self.options.dry_run:
                leading = self.elector.step()
                if self.telemetry is not None:
                    self.telemetry.set_leader(leading)
                    if not leading and self.elector.last_error is None:
                        self.telemetry.mark_success()  # a healthy standby is ready
            if time.monotonic() >= next_tick:
                if self.options.dry_run or self.elector is None or self.elector.is_leader():
                    try:
                        self.run_pass()
                    except Exception:  # a bug in one pass must not end the controller; the next pass retries
                        log.exception("tick failed")
                        if self.telemetry is not None:
                            self.telemetry.record_error("tick", "unexpected error")
                next_tick = time.monotonic() + self.options.tick_s
            self.stop.wait(max(0.05, min(retry_s, next_tick - time.monotonic())))
        if self.elector is not None:
            self.elector.release()


def _setup_logging(verbose: bool) -> None:
    """Structured JSON logs on stderr (one object per line), the format log collectors parse."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def options_from_args(
    args: argparse.Namespace, *, prometheus_url: str = "", default_namespace: str | None = None
) -> RunOptions:
    """``default_namespace``: the kubeconfig context's (or the pod's) namespace, used without ``--namespace``."""
    identity = args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    namespace = args.namespace or default_namespace or os.environ.get("POD_NAMESPACE") or "default"
    lease_ns = args.lease_namespace or os.environ.get("POD_NAMESPACE") or namespace
    return RunOptions(
        namespace=None if args.all_namespaces else namespace,
        prometheus_url=prometheus_url,
        tick_s=args.tick_s,
        once=args.once,
        dry_run=args.dry_run,
        json_output=args.json,
        metrics_port=args.metrics_port,
        lease_name=args.lease_name,
        lease_namespace=lease_ns,
        lease_duration_s=args.lease_duration_s,
        identity=identity,
        kube_timeout_s=args.kube_timeout_s,
        prometheus_timeout_s=args.prometheus_timeout_s,
        workers=args.workers,
        status_refresh_s=args.status_refresh_s,
        require_target_annotation=args.require_target_annotation,
    )


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    _setup_logging(getattr(args, "verbose", False))
    from autoscaler import prometheus_connection
    from autoscaler.kube import load_kube_connection
    from autoscaler.prometheus import PrometheusMetricsSource

    try:
        connection = load_kube_connection(args.kubeconfig, args.context)
    except Exception as exc:
        print(f"pdscale run: cannot load Kubernetes config: {exc}", file=sys.stderr)
        return 2
    serve_external = getattr(args, "serve_external_metrics", False)
    try:
        prometheus = prometheus_connection.from_args(args)
        assert prometheus is not None  # require_url
    except ValueError as exc:
        print(f"pdscale run: {exc}", file=sys.stderr)
        return 2
    options = options_from_args(args, prometheus_url=prometheus.url, default_namespace=connection.namespace)
    log.info("connecting", extra={"kubernetes": connection.source, "prometheus": prometheus.url,
                                  "prometheusAuth": prometheus.authentication})
    kube = KubeClient.from_connection(connection, KubeSettings(timeout_s=options.kube_timeout_s))
    metrics = PrometheusMetricsSource(
        prometheus.url, timeout_s=options.prometheus_timeout_s, session=prometheus.session(),
        extra_percentiles=_external_quantiles() if serve_external else (),
    )
    elector = None
    if not options.dry_run:
        lease = LeaseConfig(
            namespace=options.lease_namespace,
            name=options.lease_name,
            identity=options.identity,
            lease_duration_s=options.lease_duration_s,
            retry_period_s=max(0.2, min(2.0, options.lease_duration_s / 5)),
            safety_margin_s=max(0.2, options.lease_duration_s / 7.5),
        )
        held_s = lease.lease_duration_s - lease.safety_margin_s - lease.retry_period_s
        if options.kube_timeout_s >= held_s:  # every write would be fenced: refuse the configuration
            print(f"pdscale run: --kube-timeout-s {options.kube_timeout_s:g} must be shorter than the time a "
                  f"renewed Lease is surely held between renewals ({held_s:g} s of --lease-duration-s "
                  f"{options.lease_duration_s:g}): a write is sent only if it ends while this replica leads",
                  file=sys.stderr)
            return 2
        elector = LeaderElector(kube, lease)
    try:
        telemetry = ControllerTelemetry(port=options.metrics_port) if options.metrics_port is not None else None
    except RuntimeError as exc:
        print(f"pdscale run: {exc}", file=sys.stderr)
        return 2
    feed = server = None
    if serve_external:  # the External Metrics API from this process's own ticks (metrics_adapter.refresh)
        from metrics_adapter.command import start_embedded

        try:
            feed, server = start_embedded(args, kube, metrics, telemetry, options.tick_s)
        except (ValueError, RuntimeError) as exc:
            print(f"pdscale run: --serve-external-metrics: {exc}", file=sys.stderr)
            if telemetry is not None:
                telemetry.close()
            return 2
    # pod-deletion-cost on Deployment scale-down: the least-busy pods (running requests, one query) go first
    runner = Runner(options, kube, metrics, elector=elector, telemetry=telemetry, pod_load=metrics.pod_load,
                    external_metrics=feed)
    try:
        return _run(runner, options, elector, out)
    finally:
        if telemetry is not None:
            telemetry.close()
        if server is not None:
            server.stop()


def _external_quantiles() -> tuple[float, ...]:
    from metrics_adapter.provider import QUANTILES

    return QUANTILES


def _run(runner: Runner, options: RunOptions, elector: LeaderElector | None, out: TextIO) -> int:
    if options.once:
        if elector is not None and not elector.step():
            lease = f"{options.lease_namespace}/{options.lease_name}"
            if elector.last_error:
                print(f"pdscale run --once: cannot take lease {lease}: {elector.last_error}", file=sys.stderr)
                return 2
            print(f"pdscale run --once: lease {lease} is held by another controller; nothing written "
                  "(use --dry-run to compute anyway)", file=sys.stderr)
            return 3
        try:
            reports = runner.run_pass()
        finally:
            if elector is not None:
                elector.release()
        stats = runner.last_pass
        if options.json_output:
            json.dump({"autoscalers": reports, "ok": stats.succeeded, "failures": stats.failures}, out, indent=2,
                      default=str)
            out.write("\n")
        else:
            for rep in reports:
                dec = rep.get("decision")
                if dec:
                    p, d = dec["prefill"], dec["decode"]
                    print(f"{rep['autoscaler']}: prefill {p['current_replicas']}->{p['desired_replicas']} "
                          f"({p['reason']}), decode {d['current_replicas']}->{d['desired_replicas']} "
                          f"({d['reason']})", file=out)
                else:
                    print(f"{rep['autoscaler']}: {rep.get('error')}", file=out)
            for failure in stats.failures:
                where = failure.get("autoscaler", "pass")
                print(f"not evaluated: {where}: {failure['kind']}: {failure['message']}", file=sys.stderr)
        # non-zero whenever some autoscaler could not be evaluated: listing, metrics, its target or its spec failed
        return 0 if stats.succeeded else 1

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after the current autoscaler", signum)
        runner.stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("pdscale run started", extra={"identity": options.identity, "namespace": options.namespace or "*"})
    runner.serve()
    log.info("pdscale run stopped", extra={"identity": options.identity})
    return 0

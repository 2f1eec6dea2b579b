"""The Kubernetes side of the live controller: DisaggregatedAutoscaler objects, the ``/scale`` subresource of
whatever they target, status conditions, events and pod deletion cost.

Every API call carries ``_request_timeout``; urllib3's own retries are off so that the only retry policy is the
one here (bounded, jittered, on 409 Conflict only). Scaling follows the HPA controller's shape
(``pkg/controller/podautoscaler/horizontal.go``): read ``/scale``, write ``spec.replicas`` with the resourceVersion
just read, retry on conflict. Unlike the HPA it re-checks that the replica count it decided from is still the
one on the target, so a decision made on stale data (another writer, a previous leader) is dropped, never applied
twice.

Per pass, ``TargetCache`` reads the replicas of every target from one LIST per kind and namespace (an informer's
store, refreshed each pass), so a pass over N autoscalers costs O(namespaces) reads, not 4 N GETs; ``/scale``
itself is read only right before a write. ``status_changed`` says whether a status write would change anything
but its evaluation timestamp (the HPA controller writes status only when it changed).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from autoscaler.controller import TickResult
from autoscaler.core.spec import AutoscalerSpec, TargetRef
from autoscaler.core.types import Pool, PoolDecision, PoolReplicas, Reason

log = logging.getLogger("pdscale.kube")

GROUP = "pdscale.io"
VERSION = "v1alpha1"
PLURAL = "disaggregatedautoscalers"
KIND = "DisaggregatedAutoscaler"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
MARKED = "pdscale.io/deletion-cost"  # set beside DELETION_COST on pods pdscale marked, so it only undoes its own
COMPONENT = "pdscale"

# (group, kind) -> plural, for kinds whose plural we know without asking the discovery API.
KNOWN_PLURALS: Mapping[tuple[str, str], str] = {
    ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets",
    ("apps", "ReplicaSet"): "replicasets",
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): "leaderworkersets",
}
LIMIT_REASONS = frozenset(
    {Reason.TOO_MANY_REPLICAS, Reason.TOO_FEW_REPLICAS, Reason.SCALE_UP_LIMIT, Reason.SCALE_DOWN_LIMIT,
     Reason.CAPPED_BY_BUDGET, Reason.REQUESTS_FAILING, Reason.PARTIAL_METRICS}
)

# (namespace, pool, pod names) -> load per pod (e.g. running requests); pods it omits count as busiest.
PodLoad = Callable[[str, Pool, Sequence[str]], Mapping[str, float]]


class ScaleError(RuntimeError):
    """A /scale read or write failed; the message is what a condition and an event should say."""


class StaleDecisionError(ScaleError):
    """The target's replicas changed after the decision was computed; nothing was written."""


class FencedError(ScaleError):
    """A write refused before it was sent: this replica cannot prove it holds the Lease until the write's own
    timeout would have run out (``autoscaler.leader.LeaseFence``)."""


class WriteFence(Protocol):
    """Asked before every write (scale, status, event, pod deletion cost): raise ``FencedError`` unless a write
    sent now, given up after ``timeout_s``, would surely end while this replica may still write."""

    def check(self, what: str, timeout_s: float) -> None: ...


class Unfenced:
    """No leader election (one replica, tests): every write may go."""

    def check(self, what: str, timeout_s: float) -> None:
        return None


UNFENCED = Unfenced()


def utc_now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error_text(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class KubeSettings:
    timeout_s: float = 5.0  # per API call
    conflict_retries: int = 4  # extra attempts after a 409
    retry_base_s: float = 0.05  # first backoff; doubles, with full jitter


class KubeClient:
    """The typed API groups pdscale uses, sharing one ApiClient, plus plural discovery for custom kinds."""

    def __init__(self, api_client: k8s.ApiClient, settings: KubeSettings | None = None) -> None:
        self.api_client = api_client
        self.settings = settings or KubeSettings()
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self._plurals: dict[tuple[str, str, str], str] = {}

    @classmethod
    def from_config(
        cls, kubeconfig: str | None = None, settings: KubeSettings | None = None, *, context: str | None = None
    ) -> KubeClient:
        """Connect as kubectl would (see ``load_kube_connection``)."""
        return cls.from_connection(load_kube_connection(kubeconfig, context), settings)

    @classmethod
    def from_connection(cls, connection: KubeConnection, settings: KubeSettings | None = None) -> KubeClient:
        return cls(k8s.ApiClient(connection.configuration), settings)

    @property
    def timeout(self) -> float:
        return self.settings.timeout_s

    def plural(self, group: str, version: str, kind: str) -> str:
        """The resource plural for a kind: the known table, else the discovery document of its group/version."""
        if (group, kind) in KNOWN_PLURALS:
            return KNOWN_PLURALS[(group, kind)]
        key = (group, version, kind)
        if key not in self._plurals:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            data = self._get_json(path)
            for res in data.get("resources", []):
                if res.get("kind") == kind and "/" not in res.get("name", ""):
                    self._plurals[key] = res["name"]
                    break
            else:
                raise ScaleError(f"kind {kind} not served by {group}/{version} (discovery has no such resource)")
        return self._plurals[key]

    def _get_json(self, path: str) -> dict[str, Any]:
        response = self.api_client.call_api(
            *self.api_client.param_serialize(
                "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
            ),
            _request_timeout=self.timeout,
        )
        response.read()  # type: ignore[no-untyped-call]  # untyped upstream
        if not 200 <= response.status < 300:
            raise ScaleError(f"discovery GET {path}: HTTP {response.status}")
        body: Any = response.data
        return as_dict(json.loads(body or b"{}"), f"discovery GET {path}")


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is and who we are, resolved like kubectl; ``namespace`` is the context's (or the
    pod's) namespace, None when the source names none."""

    configuration: k8s.Configuration
    namespace: str | None
    source: str  # for the start-up log: "kubeconfig PATH (context C)" or "in-cluster service account"


def load_kube_connection(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> KubeConnection:
    """kubectl's order (client-go ``clientcmd``): ``--kubeconfig`` alone when given; else the files of
    ``$KUBECONFIG`` (a ``:``-separated list, merged, missing files skipped, the first file to set
    ``current-context`` wins); else ``~/.kube/config``; else, when none of those exists, the pod's service
    account (in-cluster config). ``context`` picks a kubeconfig context. The kubernetes client's loaders do the
    loading (exec and auth-provider plugins, token refresh); this only picks the source. Raises ValueError
    naming what was tried."""
    env = os.environ if environ is None else environ
    configuration = k8s.Configuration()
    configuration.retries = False  # our retry policy only
    if kubeconfig:
        if not os.path.exists(os.path.expanduser(kubeconfig)):
            raise ValueError(f"--kubeconfig {kubeconfig}: no such file")
        paths = [os.path.expanduser(kubeconfig)]
        tried = f"--kubeconfig {kubeconfig}"
    elif env.get("KUBECONFIG"):
        listed = [os.path.expanduser(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
        paths = [p for p in listed if os.path.exists(p)]
        tried = f"$KUBECONFIG ({env['KUBECONFIG']})"
    else:
        home = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".kube", "config")
        paths = [home] if os.path.exists(home) else []
        tried = home
    if paths:
        merged = k8s_config.kube_config.KubeConfigMerger(os.pathsep.join(paths)).config  # type: ignore[no-untyped-call]
        items = [getattr(c, "value", c) for c in (merged.value.get("contexts") or [])] if merged else []
        contexts = {c["name"]: c for c in items if isinstance(c, dict) and c.get("name")}
        name = context or _first_current_context(paths)
        if not name:
            raise ValueError(f"{tried}: no current-context set; pass --context (one of {sorted(contexts)})")
        if name not in contexts:
            raise ValueError(f"{tried}: context {name!r} not found (have {sorted(contexts)})")
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped upstream
                config_file=os.pathsep.join(paths), context=name, client_configuration=configuration
            )
        except k8s_config.ConfigException as exc:
            raise ValueError(f"{tried}: {exc}") from None
        configuration.retries = False
        namespace = (contexts[name].get("context") or {}).get("namespace") or None
        return KubeConnection(configuration, namespace, f"kubeconfig {os.pathsep.join(paths)} (context {name})")
    token = os.path.join(service_account_dir, "token")
    if not (env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT") and os.path.isfile(token)):
        raise ValueError(
            f"no Kubernetes configuration: {tried} not found, and not in a pod (no KUBERNETES_SERVICE_HOST/PORT "
            f"or no {token}); pass --kubeconfig or set $KUBECONFIG"
        )
    if context:
        raise ValueError(f"--context {context}: no kubeconfig found ({tried}) to take it from")
    loader = k8s_config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=token, cert_filename=os.path.join(service_account_dir, "ca.crt"), environ=env
    )
    try:
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException as exc:
        raise ValueError(f"in-cluster config: {exc}") from None
    configuration.retries = False
    namespace = env.get("POD_NAMESPACE") or _read_text(os.path.join(service_account_dir, "namespace"))
    return KubeConnection(configuration, namespace or None, "in-cluster service account")


def _first_current_context(paths: Sequence[str]) -> str | None:
    """kubectl takes ``current-context`` from the first file that sets it (the client's merger: the last)."""
    import yaml

    for path in paths:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        if isinstance(data, dict) and data.get("current-context"):
            return str(data["current-context"])
    return None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def as_dict(value: object, where: str) -> dict[str, Any]:
    """A JSON object from the API (CustomObjectsApi is typed ``object``); anything else is a ScaleError."""
    if not isinstance(value, dict):
        raise ScaleError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


# ---------------------------------------------------------------- autoscaler objects


@dataclass(frozen=True)
class AutoscalerObject:
    """One DisaggregatedAutoscaler as listed: its parsed spec, or the error that made it unusable."""

    namespace: str
    name: str
    uid: str
    generation: int
    raw: Mapping[str, Any]
    spec: AutoscalerSpec | None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def status(self) -> Mapping[str, Any]:
        return self.raw.get("status") or {}


def parse_autoscaler(raw: Mapping[str, Any]) -> AutoscalerObject:
    """Parse one listed object with the shared config loader; a bad spec becomes ``error`` naming the field."""
    from autoscaler.config import ConfigError, spec_from_dict

    meta = raw.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    spec: AutoscalerSpec | None = None
    error: str | None = None
    try:
        spec = spec_from_dict(raw.get("spec") or {}, source=f"{KIND} {namespace}/{name}")
    except ConfigError as exc:
        error = str(exc)
    except (TypeError, ValueError, KeyError) as exc:  # a loader bug must not stop the other objects
        error = f"{KIND} {namespace}/{name}: {exc}"
    return AutoscalerObject(
        namespace=namespace,
        name=name,
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        raw=raw,
        spec=spec,
        error=error,
    )


def list_autoscalers(kube: KubeClient, namespace: str | None) -> list[AutoscalerObject]:
    """Every DisaggregatedAutoscaler in ``namespace`` (all namespaces when None), sorted by key."""
    if namespace is None:
        raw = kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=kube.timeout)
    else:
        raw = kube.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=kube.timeout
        )
    data = as_dict(raw, f"list {PLURAL}")
    objects = [parse_autoscaler(item) for item in data.get("items", [])]
    return sorted(objects, key=lambda o: o.key)


# ---------------------------------------------------------------- the /scale target


class TargetCache:
    """The scale targets of one pass, read like an informer's store: ONE LIST per (apiVersion, kind, namespace),
    fetched on first use and kept for the rest of the pass, instead of two GETs per pool.

    Only kinds in ``KNOWN_PLURALS`` are listed: their ``/scale`` reads ``spec.replicas``, so the listed object
    says what ``/scale`` would. Other kinds (a CRD's scale subresource may map any path) return None and the
    caller reads ``/scale`` itself. A failed LIST is remembered for the pass and raised as ScaleError for every
    target of that kind and namespace (one failing request, not one per autoscaler). Thread-safe."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.lists = 0  # LIST requests sent (for the bench and tests)
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._items: dict[tuple[str, str, str], dict[str, Mapping[str, Any]] | ScaleError] = {}

    def get(self, ref: TargetRef, namespace: str) -> Mapping[str, Any] | None:
        """The listed object ``ref`` names; None when its kind is not cached. Raises ScaleError when the LIST
        failed or the object does not exist."""
        group, version = split_api_version(ref.api_version)
        plural = KNOWN_PLURALS.get((group, ref.kind))
        if plural is None:
            return None
        key = (ref.api_version, ref.kind, namespace)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._items:
                self._items[key] = self._list(group, version, plural, ref.kind, namespace)
            found = self._items[key]
        if isinstance(found, ScaleError):
            raise found
        obj = found.get(ref.name)
        if obj is None:
            raise ScaleError(f"get {ref.kind}/{ref.name} scale: HTTP 404 Not Found")
        return obj

    def _list(
        self, group: str, version: str, plural: str, kind: str, namespace: str
    ) -> dict[str, Mapping[str, Any]] | ScaleError:
        self.lists += 1
        try:
            data = as_dict(
                self.kube.custom.list_namespaced_custom_object(
                    group, version, namespace, plural, _request_timeout=self.kube.timeout
                ),
                f"list {kind} in {namespace}",
            )
        except Exception as exc:  # API errors, timeouts, connection errors: the pass reports them per target
            return ScaleError(f"list {kind} in {namespace}: {api_error_text(exc)}")
        items: dict[str, Mapping[str, Any]] = {}
        for item in data.get("items") or []:
            name = (item.get("metadata") or {}).get("name")
            if name:
                items[str(name)] = item
        return items


@dataclass(frozen=True)
class ScaleRead:
    replicas: int
    resource_version: str
    selector: str


class KubeScaleTarget:
    """``ScaleTarget`` over the /scale subresource of each pool's target (Deployment, StatefulSet, any CRD)."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        spec: AutoscalerSpec,
        *,
        pod_load: PodLoad | None = None,
        cache: TargetCache | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        fence: WriteFence = UNFENCED,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.spec = spec
        self.fence = fence
        self.pod_load = pod_load
        self.cache = cache  # per-pass LIST snapshot for read_replicas; scale() always re-reads /scale
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.conflicts = 0  # 409s met (for tests and metrics)

    def _ref(self, pool: Pool) -> TargetRef:
        ref = self.spec.pool(pool).target
        if ref is None:
            raise ScaleError(f"{pool.value}: no scaleTargetRef")
        return ref

    def _is_apps(self, ref: TargetRef) -> bool:
        return split_api_version(ref.api_version)[0] == "apps" and ref.kind in ("Deployment", "StatefulSet")

    def read_scale(self, pool: Pool) -> ScaleRead:
        ref = self._ref(pool)
        t = self.kube.timeout
        try:
            if self._is_apps(ref):
                read = (
                    self.kube.apps.read_namespaced_deployment_scale
                    if ref.kind == "Deployment"
                    else self.kube.apps.read_namespaced_stateful_set_scale
                )
                scale = read(ref.name, self.namespace, _request_timeout=t)
                return ScaleRead(
                    replicas=int(scale.spec.replicas or 0) if scale.spec else 0,
                    resource_version=(scale.metadata.resource_version or "") if scale.metadata else "",
                    selector=(scale.status.selector or "") if scale.status else "",
                )
            group, version = split_api_version(ref.api_version)
            plural = self.kube.plural(group, version, ref.kind)
            data = as_dict(
                self.kube.custom.get_namespaced_custom_object_scale(
                    group, version, self.namespace, plural, ref.name, _request_timeout=t
                ),
                f"get {ref.kind}/{ref.name} scale",
            )
        except ApiException as exc:
            raise ScaleError(f"get {ref.kind}/{ref.name} scale: {api_error_text(exc)}") from exc
        except ScaleError:
            raise
        except Exception as exc:  # timeouts and connection errors from urllib3
            raise ScaleError(f"get {ref.kind}/{ref.name} scale: {api_error_text(exc)}") from exc
        return ScaleRead(
            replicas=int((data.get("spec") or {}).get("replicas") or 0),
            resource_version=str((data.get("metadata") or {}).get("resourceVersion") or ""),
            selector=str((data.get("status") or {}).get("selector") or ""),
        )

    def read_ready(self, pool: Pool) -> int:
        """Ready replicas from the target object's own status (``status.readyReplicas``)."""
        ref = self._ref(pool)
        group, version = split_api_version(ref.api_version)
        try:
            plural = self.kube.plural(group, version, ref.kind)
            obj = as_dict(
                self.kube.custom.get_namespaced_custom_object(
                    group, version, self.namespace, plural, ref.name, _request_timeout=self.kube.timeout
                ),
                f"get {ref.kind}/{ref.name}",
            )
        except ScaleError:
            raise
        except Exception as exc:
            raise ScaleError(f"get {ref.kind}/{ref.name}: {api_error_text(exc)}") from exc
        status = obj.get("status") or {}
        return int(status.get("readyReplicas") or 0)

    def read_replicas(self) -> dict[Pool, PoolReplicas]:
        out: dict[Pool, PoolReplicas] = {}
        for pool in (Pool.PREFILL, Pool.DECODE):
            listed = self.cache.get(self._ref(pool), self.namespace) if self.cache is not None else None
            if listed is not None:
                spec, status = listed.get("spec") or {}, listed.get("status") or {}
                out[pool] = PoolReplicas(
                    desired=int(spec.get("replicas") or 0), ready=max(0, int(status.get("readyReplicas") or 0))
                )
                continue
            desired = self.read_scale(pool).replicas
            out[pool] = PoolReplicas(desired=desired, ready=max(0, self.read_ready(pool)))
        return out

    def scale(self, decision: PoolDecision) -> None:
        """Write ``desired_replicas`` to /scale with the resourceVersion just read; retry 409 a bounded number
        of times with jittered exponential backoff. Raises StaleDecisionError when the target moved away from
        ``current_replicas`` since the decision (nothing written), ScaleError on any other failure."""
        ref = self._ref(decision.pool)
        attempts = 1 + self.kube.settings.conflict_retries
        for attempt in range(attempts):
            read = self.read_scale(decision.pool)
            if read.replicas == decision.desired_replicas:
                return  # already there (a previous leader or another writer did it): never scale twice
            if read.replicas != decision.current_replicas:
                raise StaleDecisionError(
                    f"{ref.kind}/{ref.name} has {read.replicas} replicas, decision was made at "
                    f"{decision.current_replicas}; skipped, next tick decides again"
                )
            if decision.desired_replicas < read.replicas and ref.kind == "Deployment":
                self.mark_pods_for_deletion(decision.pool, read, read.replicas - decision.desired_replicas)
            try:
                self._write_scale(ref, decision.desired_replicas, read.resource_version)
                return
            except FencedError:
                raise
            except ApiException as exc:
                if exc.status == 409 and attempt + 1 < attempts:
                    self.conflicts += 1
                    backoff = self.kube.settings.retry_base_s * (2**attempt)
                    self.sleep(self.rng.uniform(0.0, backoff))
                    continue
                raise ScaleError(f"update {ref.kind}/{ref.name} scale: {api_error_text(exc)}") from exc
            except Exception as exc:
                raise ScaleError(f"update {ref.kind}/{ref.name} scale: {api_error_text(exc)}") from exc
        raise ScaleError(f"update {ref.kind}/{ref.name} scale: still conflicting after {attempts} attempts")

    def _write_scale(self, ref: TargetRef, replicas: int, resource_version: str) -> None:
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        t = self.kube.timeout
        self.fence.check(f"scale of {ref.kind}/{ref.name} to {replicas}", t)
        if self._is_apps(ref):
            patch = (
                self.kube.apps.patch_namespaced_deployment_scale
                if ref.kind == "Deployment"
                else self.kube.apps.patch_namespaced_stateful_set_scale
            )
            patch(ref.name, self.namespace, body, _request_timeout=t)
            return
        group, version = split_api_version(ref.api_version)
        plural = self.kube.plural(group, version, ref.kind)
        self.kube.custom.patch_namespaced_custom_object_scale(
            group, version, self.namespace, plural, ref.name, body, _request_timeout=t
        )

    def mark_pods_for_deletion(self, pool: Pool, read: ScaleRead, count: int) -> list[str]:
        """Give the least-loaded ready pods a low ``pod-deletion-cost`` so the ReplicaSet removes them first.

        ``count`` is the decrease. The ReplicaSet removes unscheduled, not-Running and not-ready pods (starting
        ones: a cancelled order) before any ready pod, whatever its deletion cost (``ActivePodsWithRanks``), so
        only the decrease beyond those is marked, among the ready pods; marks left from an earlier attempt are
        undone. Best effort: without a load source or a selector it does nothing, and a failed pod patch is
        logged, never fatal (the scale-down itself still happens; the drain protects in-flight requests)."""
        if self.pod_load is None or not read.selector or count <= 0:
            return []
        try:
            pods = self.kube.core.list_namespaced_pod(
                self.namespace, label_selector=read.selector, _request_timeout=self.kube.timeout
            ).items
        except Exception as exc:
            log.warning("listing pods for deletion cost failed: %s", api_error_text(exc))
            return []
        live_pods = {
            p.metadata.name: p
            for p in pods
            if p.metadata is not None and p.metadata.name and not p.metadata.deletion_timestamp
        }
        live = {name: ((p.metadata.annotations if p.metadata else None) or {}) for name, p in live_pods.items()}
        removed_first = {name for name, p in live_pods.items() if not _ready_and_running(p)}
        count -= len(removed_first)
        names = sorted(n for n in live if n not in removed_first)
        chosen: list[str] = []
        if count > 0 and names:
            try:
                load = self.pod_load(self.namespace, pool, names)
            except Exception as exc:
                log.warning("pod load unavailable for deletion cost: %s", exc)
                return []
            if not load:
                return []
            ranked = sorted(names, key=lambda n: (load.get(n, float("inf")), n))
            chosen = [n for n in ranked[:count] if n in load]
        if removed_first:
            log.info(
                "%s scale-down: %d pods not ready go first (%s); marking %d ready pods",
                pool.value, len(removed_first), ", ".join(sorted(removed_first)), len(chosen),
            )
        patches: dict[str, dict[str, str | None]] = {
            name: {DELETION_COST: str(-1000 + i), MARKED: "true"} for i, name in enumerate(chosen)
        }
        for name, ann in live.items():  # undo our own marks from a scale-down that did not happen
            if name not in patches and MARKED in ann:
                patches[name] = {DELETION_COST: None, MARKED: None}
        for name, change in patches.items():
            try:
                self.fence.check(f"deletion cost of pod {name}", self.kube.timeout)
            except FencedError as exc:
                log.warning("%s", exc)
                return []
            try:
                self.kube.core.patch_namespaced_pod(
                    name,
                    self.namespace,
                    {"metadata": {"annotations": change}},
                    _request_timeout=self.kube.timeout,
                )
            except Exception as exc:
                log.warning("annotating pod %s failed: %s", name, api_error_text(exc))
        return chosen


def _ready_and_running(pod: Any) -> bool:
    """Scheduled, Running and Ready: the pods a ReplicaSet orders by deletion cost (the others go before them)."""
    spec, status = pod.spec, pod.status
    if spec is None or not spec.node_name or status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


# ---------------------------------------------------------------- state, status, events


def encode_state(policy: Any, state: Any) -> dict[str, Any] | None:
    """The policy state as a JSON-able dict, if the policy or its state offers one."""
    if state is None:
        return None
    if hasattr(policy, "state_to_dict"):
        return dict(policy.state_to_dict(state))
    if hasattr(state, "to_dict"):
        return dict(state.to_dict())
    return None


def decode_state(policy: Any, spec: AutoscalerSpec, data: Mapping[str, Any] | None) -> Any:
    if not data:
        return None
    if hasattr(policy, "state_from_dict"):
        return policy.state_from_dict(data)
    initial = policy.initial_state(spec)
    if hasattr(type(initial), "from_dict"):
        return type(initial).from_dict(data)
    return None


class StatusStateStore:
    """StateStore that keeps the policy state in memory and in the CR status (``status.policyState``), so a
    restarted or newly elected controller continues where the last one stopped."""

    def __init__(self, policy: Any, spec: AutoscalerSpec, persisted: Mapping[str, Any] | None) -> None:
        self.policy = policy
        self.spec = spec
        self._state: Any = None
        self._persisted = persisted

    def load(self) -> Any:
        if self._state is None and self._persisted:
            try:
                self._state = decode_state(self.policy, self.spec, self._persisted)
            except Exception as exc:  # a state from an older version: start afresh, say so
                log.warning("ignoring unreadable policy state in status: %s", exc)
            self._persisted = None
        return self._state

    def save(self, state: Any) -> None:
        self._state = state

    def to_dict(self) -> dict[str, Any] | None:
        try:
            return encode_state(self.policy, self._state)
        except Exception as exc:
            log.warning("policy state not serialisable: %s", exc)
            return None


AMBIGUOUS_OWNER = "AmbiguousOwner"


@dataclass(frozen=True)
class Ownership:
    """The owner check's verdict on one autoscaler (``autoscaler.owners``): ``exclusive`` True (no other writer
    of its targets), False (another writer: it must not scale) or None (could not be verified: it scales, and the
    condition says so)."""

    exclusive: bool | None
    reason: str
    message: str


NOT_CHECKED = Ownership(None, "NotChecked", "other owners of the targets were not checked")


@dataclass
class Conditions:
    """metav1.Condition list that keeps lastTransitionTime when a condition's status does not change."""

    previous: Sequence[Mapping[str, Any]]
    generation: int
    now_iso: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def set(self, type_: str, status: bool | None, reason: str, message: str) -> None:
        value = "Unknown" if status is None else ("True" if status else "False")
        old = next((c for c in self.previous if c.get("type") == type_), None)
        since = old.get("lastTransitionTime") if old and old.get("status") == value else None
        self.items.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message[:1000],
                "lastTransitionTime": since or self.now_iso,
                "observedGeneration": self.generation,
            }
        )


def _num(value: float | None) -> str | None:
    """Quantities in status as strings, like Kubernetes does; None stays absent."""
    return None if value is None else f"{value:.6g}"


def build_status(
    obj: AutoscalerObject,
    *,
    result: TickResult | None,
    error: str | None = None,
    scaled: bool = False,
    dry_run: bool = False,
    state: Mapping[str, Any] | None = None,
    now_iso: str | None = None,
    ownership: Ownership = NOT_CHECKED,
) -> dict[str, Any]:
    """The full ``status`` for one autoscaler after a tick (``result``), a failure before deciding (``error``) or
    a refusal to scale a target another writer also scales (``ownership.exclusive`` False)."""
    now = now_iso or utc_now_iso()
    prev = obj.status
    conds = Conditions(prev.get("conditions") or [], obj.generation, now)
    status: dict[str, Any] = {"observedGeneration": obj.generation, "lastEvaluationTime": now}
    if prev.get("lastScaleTime"):
        status["lastScaleTime"] = prev["lastScaleTime"]
    if scaled:
        status["lastScaleTime"] = now
    if state is not None:
        status["policyState"] = dict(state)
    elif prev.get("policyState") is not None:
        status["policyState"] = prev["policyState"]

    if obj.spec is None:
        conds.set("AbleToScale", False, "InvalidSpec", obj.error or "invalid spec")
        conds.set("ScalingActive", False, "InvalidSpec", obj.error or "invalid spec")
        conds.set("ScalingLimited", None, "InvalidSpec", "no decision")
        conds.set("SLOMet", None, "InvalidSpec", "no decision")
        conds.set("ExclusiveOwner", None, "InvalidSpec", "no targets to check")
        status["conditions"] = conds.items
        return status
    conds_owner = (ownership.exclusive, ownership.reason, ownership.message)
    if result is None:
        why = ownership.reason if ownership.exclusive is False else "FailedGetScale"
        msg = ownership.message if ownership.exclusive is False else (error or "no result")
        conds.set("AbleToScale", False, why, msg)
        conds.set("ScalingActive", False, why, msg)
        conds.set("ScalingLimited", None, why, "no decision")
        conds.set("SLOMet", None, why, "no decision")
        conds.set("ExclusiveOwner", *conds_owner)
        for pool in ("prefill", "decode"):
            if pool in prev:
                status[pool] = prev[pool]
        status["conditions"] = conds.items
        return status

    obs, dec = result.observation, result.decision
    for pool in (Pool.PREFILL, Pool.DECODE):
        pd, reps = dec.pool(pool), obs.replicas(pool)
        status[pool.value] = {
            "currentReplicas": reps.desired,
            "readyReplicas": reps.ready,
            "desiredReplicas": pd.desired_replicas,
            "reason": str(pd.reason),
            "message": pd.message[:500],
        }
    sig = obs.signals
    observed = {
        "ttftSeconds": _num(sig.ttft_s),
        "itlSeconds": _num(sig.itl_s),
        "requestRatePerSecond": _num(sig.request_rate_per_s),
        "promptTokensPerSecond": _num(sig.prompt_tokens_per_s),
        "outputTokensPerSecond": _num(sig.output_tokens_per_s),
        "prefillWaitingRequests": _num(sig.prefill.waiting_requests),
        "decodeRunningRequests": _num(sig.decode.running_requests),
        "decodeKvUsage": _num(sig.decode.kv_usage_fraction),
        "failedRequestRatePerSecond": _num(sig.failed_request_rate_per_s),
        "prefillPodsReporting": _num(sig.prefill.pods_reporting),
        "decodePodsReporting": _num(sig.decode.pods_reporting),
    }
    status["observed"] = {k: v for k, v in observed.items() if v is not None}

    # AbleToScale
    if result.errors:
        conds.set("AbleToScale", False, "FailedUpdateScale", "; ".join(result.errors))
    elif result.applied:
        conds.set("AbleToScale", True, "SucceededRescale", _describe(dec, result.applied))
    elif dry_run or obj.spec.mode.value == "advisory":
        conds.set("AbleToScale", True, "Advisory", "advisory mode: decisions are reported, not applied")
    else:
        stabilized = [p for p in (dec.prefill, dec.decode) if p.reason in (
            Reason.SCALE_DOWN_STABILIZED, Reason.SCALE_UP_STABILIZED)]
        if stabilized:
            conds.set("AbleToScale", True, str(stabilized[0].reason), stabilized[0].message)
        else:
            conds.set("AbleToScale", True, "ReadyForNewScale", "recommended size matches current size")
    # ScalingActive
    disabled = next((p for p in (dec.prefill, dec.decode) if p.reason == Reason.SCALING_DISABLED), None)
    if disabled is not None:
        conds.set("ScalingActive", False, str(Reason.SCALING_DISABLED), disabled.message)
    elif sig.error:
        conds.set("ScalingActive", False, "FailedGetMetrics", f"{sig.error}; holding replicas")
    elif sig.ttft_s is None and sig.itl_s is None:
        conds.set("ScalingActive", False, str(Reason.METRICS_UNAVAILABLE),
                  "no TTFT or ITL samples; holding replicas (never scaling down on missing metrics)")
    else:
        conds.set("ScalingActive", True, "ValidMetricFound", "TTFT and ITL percentiles read from Prometheus")
    # ScalingLimited
    limited = [p for p in (dec.prefill, dec.decode) if p.reason in LIMIT_REASONS]
    if limited:
        conds.set("ScalingLimited", True, str(limited[0].reason), f"{limited[0].pool.value}: {limited[0].message}")
    else:
        conds.set("ScalingLimited", False, "DesiredWithinRange", "desired replicas within min, max and budget")
    # SLOMet
    spec = obj.spec
    if sig.ttft_s is None or sig.itl_s is None:
        conds.set("SLOMet", None, str(Reason.METRICS_UNAVAILABLE), "latency percentiles not observed")
    else:
        ttft_ok = sig.ttft_s <= spec.ttft.target_s
        itl_ok = sig.itl_s <= spec.itl.target_s
        msg = (
            f"TTFT p{spec.ttft.percentile * 100:g} {sig.ttft_s:.3g}s vs {spec.ttft.target_s:g}s; "
            f"ITL p{spec.itl.percentile * 100:g} {sig.itl_s:.3g}s vs {spec.itl.target_s:g}s"
        )
        reason = "WithinTarget" if ttft_ok and itl_ok else (
            str(Reason.TTFT_ABOVE_TARGET) if not ttft_ok else str(Reason.ITL_ABOVE_TARGET))
        conds.set("SLOMet", ttft_ok and itl_ok, reason, msg)
    conds.set("ExclusiveOwner", *conds_owner)
    status["conditions"] = conds.items
    return status


def _describe(decision: Any, pools: Sequence[Pool]) -> str:
    parts = []
    for pool in pools:
        pd = decision.pool(pool)
        parts.append(f"{pool.value} {pd.current_replicas}->{pd.desired_replicas} ({pd.reason})")
    return "; ".join(parts)


# status fields that only say "evaluated again": a change to them alone is not worth a write (HPA's rule:
# updateStatusIfNeeded writes only when the status differs from what was read)
TIMESTAMP_ONLY_FIELDS = frozenset({"lastEvaluationTime"})
# Fields that move every tick: refreshed in the stored status at most every ``status_refresh_s`` (the controller's own
# /metrics carries them fresh). Everything else (replicas, reasons, conditions, lastScaleTime) is written at once.
VOLATILE_STATUS_FIELDS = frozenset({"lastEvaluationTime", "observed", "policyState"})
VOLATILE_POOL_FIELDS = frozenset({"message"})


def status_changed(
    previous: Mapping[str, Any], new: Mapping[str, Any], *, ignore: frozenset[str] = TIMESTAMP_ONLY_FIELDS
) -> bool:
    """Whether merge-patching ``new`` onto the stored ``previous`` would change anything but the ``ignore`` fields
    (only ``new``'s top-level keys are written). Condition ``lastTransitionTime`` needs no special case:
    ``Conditions`` keeps it while a condition's status holds."""

    plain = json.loads(json.dumps(dict(new)))  # tuples -> lists, as the stored copy has them
    return any(previous.get(k) != v for k, v in plain.items() if k not in ignore)


def _without_volatile(status: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in status.items():
        if key in VOLATILE_STATUS_FIELDS:
            continue
        if isinstance(value, Mapping) and key in ("prefill", "decode"):
            value = {k: v for k, v in value.items() if k not in VOLATILE_POOL_FIELDS}
        out[key] = value
    return out


def _parse_iso_s(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def status_write_due(
    previous: Mapping[str, Any], new: Mapping[str, Any], *, now_s: float, refresh_s: float
) -> bool:
    """Write at once when something people or tools act on changed; otherwise refresh the volatile part
    (observed values, policy state, messages) only when the stored one is ``refresh_s`` old. At 1,000 autoscalers
    this keeps status writes per tick proportional to what changed, not to N, while a restarted controller loses
    at most ``refresh_s`` of policy history."""
    if status_changed(_without_volatile(previous), _without_volatile(new)):
        return True
    if not status_changed(previous, new):
        return False
    written_s = _parse_iso_s(previous.get("lastEvaluationTime"))
    return written_s is None or now_s - written_s >= refresh_s


def write_status(
    kube: KubeClient, obj: AutoscalerObject, status: Mapping[str, Any], fence: WriteFence = UNFENCED
) -> None:
    """Merge-patch the status subresource. ``conditions`` is a list, so it is replaced whole. The patch carries
    the resourceVersion the object was listed at: a write delayed past a newer one (another leader's, a spec edit)
    is refused with 409 by the API server instead of overwriting it; the next pass writes again."""
    fence.check(f"status of {obj.key}", kube.timeout)
    body: dict[str, Any] = {"status": dict(status)}
    rv = (obj.raw.get("metadata") or {}).get("resourceVersion")
    if rv:
        body["metadata"] = {"resourceVersion": str(rv)}
    kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, obj.namespace, PLURAL, obj.name, body, _request_timeout=kube.timeout
    )


class EventRecorder:
    """core/v1 Events about an autoscaler (``kubectl describe pdas`` shows them)."""

    def __init__(self, kube: KubeClient, identity: str, fence: WriteFence = UNFENCED) -> None:
        self.kube = kube
        self.identity = identity
        self.fence = fence

    def emit(self, obj: AutoscalerObject, type_: str, reason: str, message: str) -> None:
        now = utc_now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{obj.name}.", "namespace": obj.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": obj.name,
                "namespace": obj.namespace,
                "uid": obj.uid,
            },
            "reason": reason,
            "message": message[:1000],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/{COMPONENT}",
            "reportingInstance": self.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.fence.check(f"event {reason} for {obj.key}", self.kube.timeout)
            self.kube.core.create_namespaced_event(  # the client serialises plain dicts as they are
                obj.namespace, body, _request_timeout=self.kube.timeout  # type: ignore[arg-type]
            )
        except Exception as exc:  # events are informative; a failure must not stop scaling
            log.warning("event %s for %s not recorded: %s", reason, obj.key, api_error_text(exc))

    def for_tick(self, obj: AutoscalerObject, result: TickResult) -> int:
        """One event per pool scaled (reason ``SuccessfulRescale``, message with pdscale's reason) and one per
        failed write (``FailedRescale``). Returns how many were sent."""
        sent = 0
        for pool in result.applied:
            pd = result.decision.pool(pool)
            self.emit(obj, "Normal", "SuccessfulRescale",
                      f"{pool.value}: new size {pd.desired_replicas} (was {pd.current_replicas}); "
                      f"reason: {pd.reason}: {pd.message}")
            sent += 1
        for err in result.errors:
            self.emit(obj, "Warning", "FailedRescale", err)
            sent += 1
        return sent

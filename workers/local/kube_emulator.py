"""A Kubernetes API emulator: kmock's ``KubernetesEmulator`` extended for what a scaling controller, a pod runner,
a P/D proxy and ``kubectl`` need. ``pdscale up`` serves it as the one machine's API server; the tests use it too.

kmock (0.8) keeps objects in memory and serves discovery, LIST, WATCH, GET, POST and merge-PATCH. It has no
``/scale`` routing, no resourceVersion, no PUT, no label selectors and no status subresource. This module adds them
by overriding the one request hook kmock offers (``_handle``), and keeps kmock's object store (``objects``), its
discovery documents and its WATCH streams for everything else:

- ``resourceVersion`` (one counter for the whole server), ``uid``, ``generation`` (bumped on spec changes) and
  ``creationTimestamp`` on every object; a write that carries a stale ``metadata.resourceVersion`` (PUT, or a
  PATCH that names one as a precondition) gets 409 Conflict, as the real API server does.
- PUT (replace) of whole objects, which Lease-based leader election needs.
- ``/scale`` GET, PATCH and PUT for Deployments, StatefulSets and custom resources with a scale subresource
  (``spec.replicas``, ``status.replicas``, the selector from ``status.selector`` or ``spec.selector``), as an
  ``autoscaling/v1`` ``Scale`` sharing the parent's resourceVersion.
- ``/status`` PATCH and PUT that touch only ``status``.
- GET and LIST served from the store directly (kmock's own get slower with every stored version: a Lease GET took
  130 ms after 300 renewals), LIST with label selectors
  (equality, inequality, set-based and existence terms) and the server's current resourceVersion.
- faults injected on chosen requests: an HTTP status (409, 500, ...) or a delay (a client timeout). A request
  whose client hung up during its delay is dropped unapplied, as the API server does when a request's context is
  canceled before it reaches storage; one answered within the client's timeout is applied after the delay.
  ``applied`` records when each write took effect, and who sent it (the bearer token).
- ``absent``: resources the server does not serve (404), e.g. KEDA's ScaledObject CRD not installed.
- ``auto_ready``: a stand-in for the workload controllers, which makes every replica ready at once when
  ``spec.replicas`` changes (tests that need starting pods turn it off and set ``status`` themselves).
- delegated authentication and authorization, for aggregated API servers (the External Metrics adapter):
  ``TokenReview`` (POST ``authentication.k8s.io/v1/tokenreviews``) answers from ``tokens`` (token -> user info),
  ``SubjectAccessReview`` (POST ``authorization.k8s.io/v1/subjectaccessreviews``) from ``access_rules`` (RBAC-like
  grants, see ``AccessRule``; nothing is allowed unless a rule says so). Both are answered, never stored, and
  appear in the request log like any other call. ConfigMaps are ordinary objects (``v1/configmaps``), e.g.
  ``kube-system/extension-apiserver-authentication``.
- what ``kubectl`` and controllers watching pods need: short names (``deploy``, ``po``, ``pdas``, ...), the
  ``Table`` of ``kubectl get`` (``workers/local/kube_tables.py``: the API server's columns, a CRD's printer
  columns), ``fieldSelector`` on LIST and WATCH (``kubectl describe`` finds events by ``involvedObject.*``),
  ``labelSelector`` on WATCH (kmock streams every object otherwise), ReplicaSets and EndpointSlices, CRDs
  (storing one registers its short names, categories and printer columns), and graceful pod deletion: DELETE
  sets ``deletionTimestamp`` and ``deletionGracePeriodSeconds`` (from the DeleteOptions, else the pod's
  ``terminationGracePeriodSeconds``, else 30) and the pod stays until whoever runs it deletes it with
  ``gracePeriodSeconds=0``, as a kubelet does.

Two ways to run it:

- kmock's pytest fixture, for async tests: ``@pytest.mark.kmock(cls=PdscaleKubeEmulator)`` then the ``kmock``
  fixture; sync ``kubernetes`` client calls must go through ``asyncio.to_thread`` (the server shares the loop).
- ``KubeEmulator`` (a context manager), for everything else: kmock's server runs in a background thread on its own
  loop, so sync tests and ``pdscale run`` subprocesses can talk to it; thread-safe helpers seed and inspect objects
  and inject faults.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import datetime
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering
from kmock._internal.k8s import KubernetesError, KubernetesObjectNotFoundError

from metrics_adapter.selectors import Selector, parse_selector
from workers.local import kube_tables

# group/version/plural -> (kind, namespaced, subresources)
RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "apps/v1/deployments": ("Deployment", True, ("scale", "status")),
    "apps/v1/statefulsets": ("StatefulSet", True, ("scale", "status")),
    "apps/v1/replicasets": ("ReplicaSet", True, ("scale", "status")),
    "leaderworkerset.x-k8s.io/v1/leaderworkersets": ("LeaderWorkerSet", True, ("scale", "status")),
    # any other CRD with a scale subresource; its plural is not in pdscale's table, so discovery must find it
    "serving.example.com/v1alpha1/modelpools": ("ModelPool", True, ("scale", "status")),
    "coordination.k8s.io/v1/leases": ("Lease", True, ()),
    "v1/events": ("Event", True, ()),
    "v1/pods": ("Pod", True, ("status",)),
    "pdscale.io/v1alpha1/disaggregatedautoscalers": ("DisaggregatedAutoscaler", True, ("status",)),
    # other writers of scale targets (pdscale's ownership check lists them)
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, ("status",)),
    "keda.sh/v1alpha1/scaledobjects": ("ScaledObject", True, ("status",)),
    "v1/configmaps": ("ConfigMap", True, ()),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True, ()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, ("status",)),
    "authentication.k8s.io/v1/tokenreviews": ("TokenReview", False, ()),
    "authorization.k8s.io/v1/subjectaccessreviews": ("SubjectAccessReview", False, ()),
}
REVIEWS = frozenset({"tokenreviews", "subjectaccessreviews"})
CR = "pdscale.io/v1alpha1/disaggregatedautoscalers"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
ENDPOINTSLICES = "discovery.k8s.io/v1/endpointslices"
# the API server's short names and categories of the built-in kinds (`kubectl api-resources`)
SHORT_NAMES: dict[str, tuple[str, ...]] = {
    "apps/v1/deployments": ("deploy",), "apps/v1/statefulsets": ("sts",), "apps/v1/replicasets": ("rs",),
    "v1/pods": ("po",), "v1/events": ("ev",), "v1/configmaps": ("cm",),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("crd", "crds"),
    "leaderworkerset.x-k8s.io/v1/leaderworkersets": ("lws",),
}  # fmt: skip
CATEGORIES: dict[str, tuple[str, ...]] = {
    "apps/v1/deployments": ("all",), "apps/v1/statefulsets": ("all",), "apps/v1/replicasets": ("all",),
    "v1/pods": ("all",),
}  # fmt: skip


@dataclass
class Fault:
    """Fail the next ``times`` requests matching ``method`` and the ``path`` regex (searched)."""

    method: str
    path: str
    status: int | None = 500  # None: only delay
    delay_s: float = 0.0
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and self.method.upper() == method.upper() and bool(re.search(self.path, path))


@dataclass(frozen=True)
class AccessRule:
    """One grant for the emulated SubjectAccessReview: ``users`` or ``groups`` may do ``verbs`` on ``resources`` of
    ``api_groups`` in ``namespaces`` (``"*"`` matches anything), or GET the ``non_resource_urls`` (a trailing ``*``
    matches a prefix), like an RBAC rule bound to those subjects."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("*",)
    api_groups: tuple[str, ...] = ("*",)
    resources: tuple[str, ...] = ("*",)
    namespaces: tuple[str, ...] = ("*",)
    non_resource_urls: tuple[str, ...] = ()

    def allows(self, spec: Mapping[str, Any]) -> bool:
        if spec.get("user") not in self.users and not set(spec.get("groups") or ()) & set(self.groups):
            return False
        res = spec.get("resourceAttributes")
        if res is not None:
            return (
                _any(self.verbs, res.get("verb")) and _any(self.api_groups, res.get("group", ""))
                and _any(self.resources, res.get("resource")) and _any(self.namespaces, res.get("namespace", ""))
            )  # fmt: skip
        path = (spec.get("nonResourceAttributes") or {}).get("path", "")
        verb = (spec.get("nonResourceAttributes") or {}).get("verb")
        return _any(self.verbs, verb) and any(
            path == u or (u.endswith("*") and path.startswith(u[:-1])) for u in self.non_resource_urls
        )


def _any(allowed: tuple[str, ...], value: Any) -> bool:
    return "*" in allowed or value in allowed


def _now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): dicts merge, None deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


FieldTerm = tuple[str, str, str]  # (dotted path, operator, value)


def parse_field_selector(selector: str) -> tuple[FieldTerm, ...]:
    """``a.b=c,d!=e`` (``==`` too) into its terms; raises ValueError naming a term it cannot read."""
    terms = []
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ValueError(f"unparsable field selector term {term!r}")
        path, op, want = m.groups()
        terms.append((path, op, want))
    return tuple(terms)


def field_selector_matches(terms: tuple[FieldTerm, ...], obj: Mapping[str, Any]) -> bool:
    """Field-selector semantics over an object's dotted paths; a missing field reads as the empty string, as the API
    server compares it."""
    for path, op, want in terms:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        have = "" if value is None else str(value)
        if (have == want) != (op != "!="):
            return False
    return True


def _selected(obj: Mapping[str, Any], labels: Selector | None, fields: tuple[FieldTerm, ...]) -> bool:
    if labels is not None and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
        return False
    return not fields or field_selector_matches(fields, obj)


def _selectors(params: Mapping[str, str]) -> tuple[Selector | None, tuple[FieldTerm, ...]]:
    """The request's label and field selectors, checked once per request: a bad one is the client's error (400),
    as the API server answers it, not a 500 from deep inside the list or a broken watch stream."""
    labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
    try:
        return (parse_selector(labels) if labels else None), parse_field_selector(fields)
    except ValueError as exc:  # SelectorError is a ValueError
        raise KubernetesError(status=400, reason="BadRequest", message=str(exc)) from exc


def _key(res: kmock.resource) -> str:
    """``group/version/plural`` (``v1/pods`` for the core group), the key of ``RESOURCES``."""
    return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"


def _selector_string(obj: Mapping[str, Any]) -> str:
    status_sel = (obj.get("status") or {}).get("selector")
    if isinstance(status_sel, str) and status_sel:
        return status_sel
    match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(match.items()))


class Conflict(KubernetesError):
    pass


def _client_gone(request: rendering.Request) -> bool:
    """Whether the client hung up (e.g. its timeout ran out while an injected delay held the request)."""
    raw = getattr(request, "_raw_request", None)
    transport = getattr(raw, "transport", None)
    return raw is not None and (transport is None or transport.is_closing())


@attrs.define(kw_only=True)
class PdscaleKubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus resourceVersion, PUT, /scale, /status, selectors and faults (see module doc)."""

    auto_ready: bool = True
    absent: frozenset[str] = frozenset()  # RESOURCES keys not served (404), e.g. a CRD not installed
    faults: list[Fault] = attrs.field(factory=list)
    served: list[tuple[str, str]] = attrs.field(factory=list)  # (method, path) of every request
    queries: list[str] = attrs.field(factory=list)  # the query string of every request, in the same order
    # (monotonic time, method, "plural/name[/sub]", bearer token) of every write the store applied, after any delay
    applied: list[tuple[float, str, str, str]] = attrs.field(factory=list)
    busy_s: float = 0.0  # wall time spent inside the request hook (server-side cost, for benchmarks)
    tokens: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # bearer token -> TokenReview status.user
    access_rules: list[AccessRule] = attrs.field(factory=list)  # what SubjectAccessReview allows
    # group/version/plural -> the additionalPrinterColumns of a stored CRD (kubectl get's columns)
    printer_columns: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    _rv: int = attrs.field(default=1000, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, (kind, namespaced, subs) in RESOURCES.items():
            if key in self.absent:
                continue
            self.resources[key] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                singular=kind.lower(),
                subresources=set(subs),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                shortnames=set(SHORT_NAMES.get(key, ())),
                categories=set(CATEGORIES.get(key, ())),
            )

    # ---- storage helpers (called inside the loop) ----
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _stamp(self, obj: dict[str, Any], *, old: Mapping[str, Any] | None) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        old_meta = (old or {}).get("metadata") or {}
        meta["uid"] = old_meta.get("uid") or meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = old_meta.get("creationTimestamp") or meta.get("creationTimestamp") or _now_iso()
        generation = int(old_meta.get("generation", 0) or 0)
        if old is None or obj.get("spec") != old.get("spec"):
            generation += 1
        meta["generation"] = max(generation, 1)
        meta["resourceVersion"] = self._next_rv()
        spec = obj.get("spec")
        if (
            self.auto_ready
            and old is not None
            and isinstance(spec, dict)
            and "replicas" in spec
            and (old.get("spec") or {}).get("replicas") != spec["replicas"]
        ):
            n = int(spec["replicas"])
            status = obj.setdefault("status", {})
            status.update(replicas=n, readyReplicas=n, availableReplicas=n, updatedReplicas=n)
        return obj

    def _get(self, res: kmock.resource, ns: str | None, name: str) -> dict[str, Any] | None:
        key = (res, ns, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    async def _store(self, res: kmock.resource, ns: str | None, name: str, obj: dict[str, Any], event: str) -> None:
        key = (res, ns, name)
        if key in self.objects and not self.objects[key].empty:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        await self._buses[res].put({"type": event, "object": copy.deepcopy(obj)})

    @staticmethod
    def _check_rv(current: Mapping[str, Any], body: Any) -> None:
        wanted = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, Mapping) else None
        have = (current.get("metadata") or {}).get("resourceVersion")
        if wanted and str(wanted) != have:
            name = (current.get("metadata") or {}).get("name")
            raise Conflict(
                status=409,
                reason="Conflict",
                message=f'Operation cannot be fulfilled on "{name}": the object has been modified; '
                f"please apply your changes to the latest version and try again (have {have}, got {wanted})",
            )

    def _scale_of(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 0))},
            "status": {
                "replicas": int((obj.get("status") or {}).get("replicas", 0)),
                "selector": _selector_string(obj),
            },
        }

    # ---- the request hook ----
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        started = time.perf_counter()
        try:
            return await self._handle_timed(request)
        finally:
            self.busy_s += time.perf_counter() - started

    async def _handle_timed(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        method = request.method.value if request.method is not None else ""
        path = request.url.path
        who = str(request.headers.get("Authorization", "")).removeprefix("Bearer ")
        self.served.append((method, path))
        self.queries.append(request.url.query_string)
        for fault in self.faults:
            if fault.matches(method, path):
                fault.hits += 1
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                    if _client_gone(request):  # like the API server's canceled request context: never applied
                        return aiohttp.web.Response(status=499)
                if fault.status is not None:
                    raise KubernetesError(
                        status=fault.status,
                        reason="Conflict" if fault.status == 409 else "InternalError",
                        message=f"injected fault {fault.status} on {method} {path}",
                        details={},
                    )
                break
        res = request.resource
        if res is None or res.plural is None or res.group is None:
            return await super()._handle(request)
        res = kmock.resource(res.group, res.version, res.plural)
        if "/".join(p for p in (res.group, res.version, res.plural) if p) in self.absent:
            raise KubernetesObjectNotFoundError(message="the server could not find the requested resource",
                                                details={})
        if res.plural in REVIEWS and method == "POST":
            return aiohttp.web.json_response(self._review(res.plural, request.data), status=201)
        ns, name, sub = request.namespace, request.name, request.subresource
        as_table = kube_tables.wants_table(request.headers.get("Accept", ""))
        async with self._lock:
            if (name is not None and sub in ("scale", "status")) or method == "PUT" or request.action in (
                kmock.action.UPDATE,
                kmock.action.CREATE,
            ):
                payload, status = await self._mutate_or_read(res, ns, name, sub, method, request.data, who)
                if _key(res) == CRDS and sub is None and method in ("POST", "PUT"):
                    self.register_crd(payload)
                return aiohttp.web.json_response(payload, status=status)
            if method == "DELETE" and res.plural == "pods" and name is not None:
                payload = await self._delete_pod(res, ns, name, request)
                return aiohttp.web.json_response(payload)
            if method == "GET" and name is not None and sub is None and not as_table:  # kmock's own GET slows down
                found = self._get(res, ns, name)
                if found is None:
                    raise KubernetesObjectNotFoundError(message=f'{res.plural} "{name}" not found', details={})
                return aiohttp.web.json_response(found)
            if request.action == kmock.action.LIST:  # kmock's own LIST slows down as objects gain history
                labels, fields = _selectors(request.params)
                items = [
                    copy.deepcopy(obj.raw)
                    for (r, o_ns, _), obj in self.objects.items()
                    if r == res and not obj.deleted and (ns is None or o_ns == ns)
                    if _selected(obj.raw, labels, fields)
                ]
                if as_table:
                    return aiohttp.web.json_response(self._table(res, items))
                info = self.resources.get(_key(res))  # typed Go clients (kubectl) decode by the list's own kind
                kind_name = getattr(info, "kind", None)
                kind = f"{kind_name}List" if kind_name else "List"
                version = f"{res.group}/{res.version}" if res.group else str(res.version)
                return aiohttp.web.json_response(
                    {"kind": kind, "apiVersion": version, "metadata": {"resourceVersion": str(self._rv)},
                     "items": items}
                )
            if as_table and request.action == kmock.action.FETCH and name is not None and sub is None:
                found = self._get(res, ns, name)
                if found is None:
                    raise KubernetesObjectNotFoundError(message=f'{res.plural} "{name}" not found', details={})
                return aiohttp.web.json_response(self._table(res, [found]))
        return await super()._handle(request)

    async def _serve_version(self, request: rendering.Request) -> Any:
        """kmock's resource list with the core group's ``groupVersion`` spelled ``v1`` (kmock writes ``/v1``,
        which makes kubectl drop every core resource) and short names and categories on main resources only
        (kubectl warns about ambiguous short names otherwise)."""
        doc = await super()._serve_version(request)
        if isinstance(doc, dict):
            doc["groupVersion"] = str(doc.get("groupVersion", "")).lstrip("/")
            for entry in doc.get("resources") or []:
                if "/" in entry.get("name", ""):
                    entry["shortNames"], entry["categories"] = [], []
        return doc

    def _table(self, res: kmock.resource, items: list[dict[str, Any]]) -> dict[str, Any]:
        return kube_tables.table(res.plural or "", items, str(self._rv), self.printer_columns.get(_key(res), ()))

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        """kmock's WATCH, filtered by ``labelSelector`` and ``fieldSelector`` as the API server filters it."""
        labels, fields = _selectors(request.params)
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or _selected(event.get("object") or {}, labels, fields):
                yield event

    async def _delete_pod(self, res: kmock.resource, ns: str | None, name: str,
                          request: rendering.Request) -> dict[str, Any]:  # fmt: skip
        """Graceful pod deletion: mark ``deletionTimestamp`` first; gone only on a delete with grace 0 (the
        kubelet's, once the containers stopped) or a second delete after the grace period began at 0."""
        current = self._get(res, ns, name)
        if current is None:
            raise KubernetesObjectNotFoundError(message=f'pods "{name}" not found', details={})
        body = request.data if isinstance(request.data, Mapping) else {}
        grace_raw = body.get("gracePeriodSeconds", request.params.get("gracePeriodSeconds"))
        meta = current.setdefault("metadata", {})
        if grace_raw is not None and int(grace_raw) == 0:
            key = (res, ns, name)
            self.objects[key].delete()
            await self._buses[res].put({"type": "DELETED", "object": copy.deepcopy(current)})
            return current
        if meta.get("deletionTimestamp"):
            return current  # already terminating: the kubelet finishes it
        grace = int(grace_raw) if grace_raw is not None else int(
            (current.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        new = copy.deepcopy(current)
        new["metadata"]["deletionTimestamp"] = _now_iso()
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        self._stamp(new, old=current)
        await self._store(res, ns, name, new, "MODIFIED")
        return new

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve the resource a CustomResourceDefinition defines, with its names and printer columns."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural = spec.get("group"), names.get("plural")
        if not group or not plural:
            return
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            key = f"{group}/{version['name']}/{plural}"
            self.resources[key] = kmock.ResourceInfo(
                kind=names.get("kind"),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or str(names.get("kind", "")).lower(),
                subresources=set((version.get("subresources") or {}).keys()),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                shortnames=set(names.get("shortNames") or ()),
                categories=set(names.get("categories") or ()),
            )
            self.printer_columns[key] = list(version.get("additionalPrinterColumns") or [])

    def _review(self, plural: str, body: Any) -> dict[str, Any]:
        """TokenReview / SubjectAccessReview answered from ``tokens`` / ``access_rules``."""
        review = copy.deepcopy(body) if isinstance(body, dict) else {}
        spec = review.get("spec") or {}
        if plural == "tokenreviews":
            user = self.tokens.get(spec.get("token", ""))
            review["status"] = {"authenticated": True, "user": copy.deepcopy(user)} if user else {
                "authenticated": False, "error": "invalid bearer token"}
        else:
            allowed = any(rule.allows(spec) for rule in self.access_rules)
            review["status"] = {"allowed": allowed, "reason": "allowed by an emulator access rule" if allowed
                                else "no emulator access rule allows it"}  # fmt: skip
        return review

    async def _mutate_or_read(
        self, res: kmock.resource, ns: str | None, name: str | None, sub: str | None, method: str, body: Any,
        who: str = "",
    ) -> tuple[dict[str, Any], int]:
        if method == "POST" and name is None:
            meta = (body or {}).get("metadata") or {}
            name = meta.get("name") or (meta.get("generateName", "obj-") + uuid.uuid4().hex[:5])
            ns = ns or meta.get("namespace")
            if self._get(res, ns, name) is not None:
                raise KubernetesError(status=409, reason="AlreadyExists", message=f'"{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"] = {**meta, "name": name, **({"namespace": ns} if ns else {})}
            obj["metadata"].pop("resourceVersion", None)
            self._stamp(obj, old=None)
            await self._store(res, ns, name, obj, "ADDED")
            self.applied.append((time.monotonic(), method, f"{res.plural}/{name}", who))
            return obj, 201
        assert name is not None
        current = self._get(res, ns, name)
        if current is None:
            raise KubernetesObjectNotFoundError(message=f'{res.plural} "{name}" not found', details={})
        if sub == "scale":
            if method == "GET":
                return self._scale_of(current), 200
            self._check_rv(current, body)
            replicas = ((body or {}).get("spec") or {}).get("replicas")
            if replicas is None:
                raise KubernetesError(status=422, reason="Invalid", message="spec.replicas is required", details={})
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["replicas"] = int(replicas)
        elif sub == "status":
            if method == "GET":
                return current, 200
            self._check_rv(current, body)
            new = copy.deepcopy(current)
            if method == "PUT":
                new["status"] = copy.deepcopy((body or {}).get("status"))
            else:
                new = _merge(new, {"status": (body or {}).get("status")})
        elif method == "PUT":
            self._check_rv(current, body)
            new = copy.deepcopy(body)
            new["metadata"] = {**current["metadata"], **(body.get("metadata") or {})}
            if res.plural != "leases":  # like the real server: PUT on the main resource ignores status
                new["status"] = current.get("status")
        elif method == "PATCH":
            if isinstance(body, list):
                raise KubernetesError(status=415, reason="UnsupportedMediaType", message="json-patch unsupported")
            self._check_rv(current, body)
            new = _merge(current, {k: v for k, v in (body or {}).items() if k != "status"})
        else:
            return current, 200
        self._stamp(new, old=current)
        await self._store(res, ns, name, new, "MODIFIED")
        self.applied.append((time.monotonic(), method, f"{res.plural}/{name}" + (f"/{sub}" if sub else ""), who))
        return (self._scale_of(new) if sub == "scale" else new), 200


class KubeEmulator:
    """Runs a ``PdscaleKubeEmulator`` on 127.0.0.1 in a background thread; thread-safe helpers for tests."""

    def __init__(self, *, auto_ready: bool = True, absent: frozenset[str] = frozenset()) -> None:
        self.handler = PdscaleKubeEmulator(auto_ready=auto_ready, absent=absent)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._stop: asyncio.Event | None = None
        self._server: kmock.Server | None = None
        self.url = ""

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        self.url = self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._shutdown(), timeout_s=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _start(self) -> str:
        await self.handler.__aenter__()
        self._server = kmock.Server(self.handler)
        await self._server.__aenter__()
        return str(self._server.url).rstrip("/")

    async def _shutdown(self) -> None:
        assert self._server is not None
        await self._server.__aexit__(None, None, None)
        await self.handler.__aexit__(None, None, None)

    def _call(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout_s)

    # ---- seeding and inspection ----
    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object as the API server would store it (stamped, watch event sent)."""

        async def go() -> dict[str, Any]:
            res = kmock.resource(resource)
            meta = obj.setdefault("metadata", {})
            ns, name = meta.get("namespace"), meta["name"]
            async with self.handler._lock:
                old = self.handler._get(res, ns, name)
                new = self.handler._stamp(copy.deepcopy(obj), old=old)
                await self.handler._store(res, ns, name, new, "ADDED" if old is None else "MODIFIED")
                return new

        return self._call(go())  # type: ignore[no-any-return]

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        async def go() -> dict[str, Any] | None:
            async with self.handler._lock:
                return self.handler._get(kmock.resource(resource), namespace, name)

        return self._call(go())  # type: ignore[no-any-return]

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        async def go() -> builtins.list[dict[str, Any]]:
            res = kmock.resource(resource)
            async with self.handler._lock:
                return [
                    copy.deepcopy(obj.raw)
                    for (r, ns, _), obj in self.handler.objects.items()
                    if r == res and not obj.deleted and (namespace is None or ns == namespace)
                ]

        return self._call(go())  # type: ignore[no-any-return]

    def delete(self, resource: str, namespace: str | None, name: str) -> None:
        """Remove an object at once (no grace period, no finalizers), sending the DELETED watch event."""

        async def go() -> None:
            res = kmock.resource(resource)
            async with self.handler._lock:
                key = (res, namespace, name)
                if key in self.handler.objects and not self.handler.objects[key].deleted:
                    raw = copy.deepcopy(self.handler.objects[key].raw)
                    self.handler.objects[key].delete()
                    await self.handler._buses[res].put({"type": "DELETED", "object": raw})

        self._call(go())

    def apply_crds(self, path: Path) -> builtins.list[str]:
        """Store every CustomResourceDefinition of a YAML file (e.g. ``manifests/base/crd.yaml``) and serve the
        resources they define; returns their names."""
        names: builtins.list[str] = []
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                stored = self.put(CRDS, doc)
                self._call(self._register(stored))
                names.append(str(doc["metadata"]["name"]))
        return names

    async def _register(self, crd: dict[str, Any]) -> None:
        self.handler.register_crd(crd)

    def history(self, resource: str, namespace: str | None, name: str, start: int = 0) -> builtins.list[dict[str, Any]]:
        """Every stored version of one object, oldest first (deletions skipped); from the ``start``-th one on (a
        checker polling a long-lived object reads only what is new)."""

        async def go() -> builtins.list[dict[str, Any]]:
            async with self.handler._lock:
                obj = self.handler.objects[kmock.resource(resource), namespace, name]
                versions = [v for v in obj.history.raw if v is not None]
                return [copy.deepcopy(v.raw) for v in versions[start:]]

        return self._call(go())  # type: ignore[no-any-return]

    def requests(self) -> Iterator[tuple[str, str]]:
        """(method, path) of every request served so far."""
        yield from list(self.handler.served)

    def request_log(self) -> builtins.list[tuple[str, str, str]]:
        """(method, path, query string) of every request served so far (tests/helpers/rbac.py reads it)."""
        served, queries = list(self.handler.served), list(self.handler.queries)
        return [(m, p, q) for (m, p), q in zip(served, queries, strict=False)]

    def add_fault(self, method: str, path: str, *, status: int | None = 500, delay_s: float = 0.0,
                  times: int = 1) -> Fault:
        fault = Fault(method=method, path=path, status=status, delay_s=delay_s, times=times)
        self._loop.call_soon_threadsafe(self.handler.faults.append, fault)
        return fault

    def applied(self) -> builtins.list[tuple[float, str, str, str]]:
        """(monotonic time, method, "plural/name[/sub]", bearer token of the writer) of every write applied so
        far, in order, after any injected delay."""
        return list(self.handler.applied)

    def busy_s(self) -> float:
        """Seconds the server has spent handling requests so far (inside its request hook)."""
        return self.handler.busy_s

    def clear_faults(self) -> None:
        self._loop.call_soon_threadsafe(self.handler.faults.clear)

    # ---- delegated authentication and authorization ----
    def add_token(self, token: str, username: str, groups: tuple[str, ...] = (), uid: str = "") -> None:
        """Make ``token`` authenticate as ``username`` in TokenReview."""
        user = {"username": username, "uid": uid or f"uid-{username}", "groups": list(groups)}

        async def go() -> None:
            self.handler.tokens[token] = user

        self._call(go())

    def allow(self, rule: AccessRule) -> None:
        """Add a grant to what SubjectAccessReview allows."""

        async def go() -> None:
            self.handler.access_rules.append(rule)

        self._call(go())

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at this emulator (plain HTTP, a dummy token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
            "users": [{"name": "emu", "user": {"token": "emulator"}}],
            "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu", "namespace": namespace}}],
            "current-context": "emu",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- typical objects ----
    def add_deployment(self, namespace: str, name: str, replicas: int, *, kind: str = "Deployment",
                       ready: int | None = None) -> dict[str, Any]:
        resource = next(key for key, (k, _, subs) in RESOURCES.items() if k == kind and "scale" in subs)
        api_version = resource.rsplit("/", 1)[0]
        ready_n = replicas if ready is None else ready
        status: dict[str, Any] = {"replicas": replicas, "readyReplicas": ready_n}
        if api_version != "apps/v1":  # CRDs publish the selector string in status (LWS: hpaPodSelector)
            status["hpaPodSelector"] = f"app={name}"
            status["selector"] = f"app={name}"
        obj = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
                },
            },
            "status": status,
        }
        return self.put(resource, obj)

    def add_pod(self, namespace: str, name: str, labels: Mapping[str, str], *, ready: bool = True) -> dict[str, Any]:
        """A pod scheduled on the one node and Running; Ready unless ``ready`` is False (still starting)."""
        return self.put("v1/pods", {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"nodeName": "local", "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]},
        })

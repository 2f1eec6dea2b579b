"""Kubernetes RBAC, read from requests and from manifests, for the contract test that derives pdscale's RBAC from
what it actually calls (tests/contract/test_rbac.py).

``request_attributes`` turns one HTTP request into the attributes the API server authorizes (verb, API group,
resource, subresource, namespace, name), following the API server's request-info rules
(k8s.io/apiserver/pkg/endpoints/request/requestinfo.go): ``GET`` of a collection is ``list``, or ``watch`` with
``?watch=true``; ``GET`` of one object ``get``; ``POST`` ``create``; ``PUT`` ``update``; ``PATCH`` ``patch``;
``DELETE`` ``delete`` (``deletecollection`` without a name). Discovery paths (``/api``, ``/apis/g/v``) are
non-resource requests that every authenticated user may make (the ``system:discovery`` role).

``Grants`` holds the rules bound to one ServiceAccount by the manifests' (Cluster)RoleBindings and answers
``allows(attrs)`` with RBAC's semantics: a ClusterRole bound by a ClusterRoleBinding applies everywhere, a Role
or a ClusterRole bound by a RoleBinding only in that binding's namespace; a rule matches on apiGroups,
resources (``resource/subresource`` for a subresource), verbs and, when it lists them, resourceNames (which can
never match ``create``/``list``/``watch``, whose requests carry no name)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}

# Roles every cluster has (Kubernetes' bootstrap RBAC policy, plugin/pkg/auth/authorizer/rbac/bootstrappolicy),
# which manifests bind without defining: (kind, namespace, name) -> rules.
BOOTSTRAP_ROLES: dict[tuple[str, str, str], list[dict[str, Any]]] = {
    ("ClusterRole", "", "system:auth-delegator"): [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ],
    ("Role", "kube-system", "extension-apiserver-authentication-reader"): [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["extension-apiserver-authentication"],
         "verbs": ["get", "list", "watch"]},
    ],
}


@dataclass(frozen=True)
class RequestAttributes:
    verb: str
    group: str
    resource: str  # "" for a non-resource request
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def request_attributes(method: str, path: str, query: str = "") -> RequestAttributes:
    parts = [p for p in path.split("/") if p]
    params = urllib.parse.parse_qs(query)
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
        group = ""
    if not rest:  # discovery: /api, /api/v1, /apis, /apis/g, /apis/g/v
        return RequestAttributes(verb=method.lower(), group="", resource="", path=path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:  # the Namespace object itself
        rest = ["namespaces", rest[1]]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    method = method.upper()
    watching = params.get("watch", [""])[0] in ("true", "1")
    if method == "GET":
        verb = "get" if name else ("watch" if watching else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    return RequestAttributes(verb, group, resource, subresource, namespace, name, path)


@dataclass(frozen=True)
class Rule:
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str]
    namespace: str | None  # None: every namespace (ClusterRole + ClusterRoleBinding)
    source: str  # "ClusterRole/x via ClusterRoleBinding/y"
    bootstrap: bool = False  # a role of Kubernetes' own (its extra verbs cannot be trimmed by us)

    def matches(self, a: RequestAttributes) -> bool:
        if self.namespace is not None and a.namespace != self.namespace:
            return False
        if not (self.api_groups & {a.group, "*"}):
            return False
        if not (self.resources & {a.full_resource, "*"}):
            return False
        if not (self.verbs & {a.verb, "*"}):
            return False
        return not self.resource_names or a.name in self.resource_names

    def triples(self) -> set[tuple[str, str, str]]:
        return {(g, r, v) for g in self.api_groups for r in self.resources for v in self.verbs}


class Grants:
    """The rules the manifests bind to ``namespace/service_account``."""

    def __init__(self, documents: Iterable[Mapping[str, Any]], namespace: str, service_account: str) -> None:
        docs = list(documents)
        roles: dict[tuple[str, str, str], Mapping[str, Any]] = {
            key: {"rules": rules, "bootstrap": True} for key, rules in BOOTSTRAP_ROLES.items()}
        roles.update({(d["kind"], (d["metadata"].get("namespace") or ""), d["metadata"]["name"]): d
                      for d in docs if d.get("kind") in ("Role", "ClusterRole")})
        self.rules: list[Rule] = []
        self.bindings: list[str] = []
        for binding in docs:
            if binding.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            subjects = binding.get("subjects") or []
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
                       and s.get("namespace") == namespace for s in subjects):
                continue
            ref = binding["roleRef"]
            scope = None if binding["kind"] == "ClusterRoleBinding" else binding["metadata"]["namespace"]
            role_ns = "" if ref["kind"] == "ClusterRole" else binding["metadata"]["namespace"]
            role = roles.get((ref["kind"], role_ns, ref["name"]))
            if role is None:
                raise ValueError(f"{binding['kind']}/{binding['metadata']['name']}: {ref['kind']}/{ref['name']} "
                                 "is not in the manifests")
            source = f"{ref['kind']}/{ref['name']} via {binding['kind']}/{binding['metadata']['name']}"
            self.bindings.append(source)
            for rule in role.get("rules") or []:
                self.rules.append(Rule(frozenset(rule.get("apiGroups") or []), frozenset(rule.get("resources") or []),
                                       frozenset(rule.get("verbs") or []), frozenset(rule.get("resourceNames") or []),
                                       scope, source, bool(role.get("bootstrap"))))

    def allows(self, a: RequestAttributes) -> bool:
        return not a.is_resource or any(r.matches(a) for r in self.rules)

    def unused(self, calls: Iterable[RequestAttributes]) -> list[tuple[str, str, str, str]]:
        """(source, group, resource, verb) granted by our own roles but matched by none of ``calls``."""
        seen = [c for c in calls if c.is_resource]
        out = []
        for rule in self.rules:
            if rule.bootstrap:
                continue
            for group, resource, verb in sorted(rule.triples()):
                probe = Rule(frozenset({group}), frozenset({resource}), frozenset({verb}), rule.resource_names,
                             rule.namespace, rule.source)
                if not any(probe.matches(c) for c in seen):
                    out.append((rule.source, group, resource, verb))
        return out

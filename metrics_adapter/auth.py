"""Authentication and authorization delegated to the Kubernetes API server, as an aggregated API server does
(k8s.io/apiserver's DelegatingAuthenticationOptions / DelegatingAuthorizationOptions).

Authentication, first match wins:

1. **Front proxy.** A client certificate issued by a CA of ``requestheader-client-ca-file`` (ConfigMap
   ``kube-system/extension-apiserver-authentication``), whose common name is in ``requestheader-allowed-names``
   (any name when that list is empty), is the aggregator speaking for a user: the user comes from the request
   headers named there (``X-Remote-User``, ``X-Remote-Uid``, ``X-Remote-Group``, ``X-Remote-Extra-<key>``). Those
   headers are read on such connections ONLY; on any other they are ignored, so sending them proves nothing.
2. **Client certificate** issued by a CA of ``client-ca-file``: user = common name, groups = organizations.
3. **Bearer token**: a ``TokenReview`` asks the API server (answers cached ``token_ttl_s``, by token hash).
4. Otherwise the request is anonymous and refused with 401 (anonymous access is off).

Authorization: ``system:masters`` is always allowed (the aggregator's own discovery checks come as that group);
anything else is a ``SubjectAccessReview``: a resource check (``list`` on the metric name in group
``external.metrics.k8s.io``, the request's namespace) for metric values, a non-resource check (``get`` on the
path) for discovery and OpenAPI. Decisions are cached ``allow_ttl_s``/``deny_ttl_s`` (10 s, the apiserver's
defaults) and concurrent identical checks share one review. ``/healthz``, ``/livez`` and ``/readyz`` need neither.

The API calls (``KubeReviews``) use the official client, run off the event loop in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"
ALWAYS_ALLOW_GROUPS = ("system:masters",)
ALWAYS_ALLOW_PATHS = frozenset({"/healthz", "/livez", "/readyz"})


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()  # sorted by key


@dataclass(frozen=True)
class Attributes:
    """What a request does, for a SubjectAccessReview: a resource request when ``resource`` is set."""

    verb: str
    path: str
    namespace: str | None = None
    group: str | None = None
    version: str | None = None
    resource: str | None = None


def _json_list(data: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None or not raw.strip():
        return ()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {key}: not a JSON list: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {key}: expected a JSON list of strings")
    return tuple(v for v in value if v)


def _certificates(data: Mapping[str, str], key: str) -> tuple[x509.Certificate, ...]:
    pem = data.get(key) or ""
    if not pem.strip():
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(pem.encode()))
    except ValueError as exc:
        raise ValueError(f"ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {key}: {exc}") from None


@dataclass(frozen=True)
class AuthenticationConfig:
    """The contents of ``kube-system/extension-apiserver-authentication`` that authentication needs."""

    client_cas: tuple[x509.Certificate, ...] = ()
    front_proxy_cas: tuple[x509.Certificate, ...] = ()
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ()
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ()
    extra_prefixes: tuple[str, ...] = ()
    ca_pem: str = ""  # both bundles, for the TLS context's trust store

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AuthenticationConfig:
        """Parse the ConfigMap's ``data``; raise ValueError naming the key at fault."""
        front_proxy = _certificates(data, "requestheader-client-ca-file")
        users = _json_list(data, "requestheader-username-headers")
        if front_proxy and not users:
            raise ValueError(
                f"ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: requestheader-client-ca-file is set but "
                "requestheader-username-headers is empty"
            )
        return cls(
            client_cas=_certificates(data, "client-ca-file"),
            front_proxy_cas=front_proxy,
            allowed_names=_json_list(data, "requestheader-allowed-names"),
            username_headers=users,
            uid_headers=_json_list(data, "requestheader-uid-headers"),
            group_headers=_json_list(data, "requestheader-group-headers"),
            extra_prefixes=tuple(p.lower() for p in _json_list(data, "requestheader-extra-headers-prefix")),
            ca_pem="\n".join(
                p for p in (data.get("requestheader-client-ca-file"), data.get("client-ca-file")) if p and p.strip()
            ),
        )


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _names(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


@dataclass
class _Cached:
    value: Any
    expires_s: float


@dataclass
class _TTLCache:
    """A small TTL cache with in-flight sharing: concurrent misses for one key await the same lookup."""

    max_entries: int = 10_000
    entries: dict[Any, _Cached] = field(default_factory=dict)
    inflight: dict[Any, asyncio.Future[Any]] = field(default_factory=dict)  # key -> the running lookup

    async def get(self, key: Any, compute: Callable[[], Any], ttl: Callable[[Any], float],
                  clock: Callable[[], float]) -> Any:  # fmt: skip
        found = self.entries.get(key)
        if found is not None and found.expires_s > clock():
            return found.value
        task = self.inflight.get(key)
        if task is None:  # the lookup runs as its own task: a cancelled requester does not cancel it for others
            task = asyncio.ensure_future(asyncio.to_thread(compute))
            self.inflight[key] = task

            def done(t: asyncio.Future[Any]) -> None:
                self.inflight.pop(key, None)
                if t.cancelled() or t.exception() is not None:
                    return
                if len(self.entries) >= self.max_entries:
                    self.entries.clear()
                self.entries[key] = _Cached(t.result(), clock() + ttl(t.result()))

            task.add_done_callback(done)
        return await asyncio.shield(task)


class ReviewError(RuntimeError):
    """A TokenReview or SubjectAccessReview could not be made (API server unreachable, forbidden, ...)."""


TokenReview = Callable[[str], "UserInfo | None"]
AccessReview = Callable[[UserInfo, Attributes], "tuple[bool, str]"]


class Authenticator:
    """See the module doc. ``config`` may be replaced at any time (ConfigMap refresh)."""

    def __init__(self, config: AuthenticationConfig, token_review: TokenReview | None = None, *,
                 token_ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.token_review = token_review
        self.token_ttl_s = token_ttl_s
        self.clock = clock
        self._certs: dict[bytes, tuple[str, x509.Certificate | None]] = {}
        self._config = config
        self._tokens = _TTLCache()

    @property
    def config(self) -> AuthenticationConfig:
        return self._config

    @config.setter
    def config(self, config: AuthenticationConfig) -> None:
        """A new ConfigMap: certificates are classified again against its CAs."""
        self._config = config
        self._certs = {}

    def _classify(self, der: bytes) -> tuple[str, x509.Certificate | None]:
        """("front-proxy" | "client" | "unknown", certificate) for a verified peer certificate, cached per
        certificate until the config changes (a TLS connection presents the same one for every request)."""
        config, certs = self._config, self._certs
        found = certs.get(der)
        if found is not None:
            return found
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            result: tuple[str, x509.Certificate | None] = ("unknown", None)
        else:
            if _issued_by(cert, config.front_proxy_cas):
                result = ("front-proxy", cert)
            elif _issued_by(cert, config.client_cas):
                result = ("client", cert)
            else:
                result = ("unknown", cert)
        if len(certs) >= 1024:
            certs.clear()
        certs[der] = result
        return result

    def _from_headers(self, cert: x509.Certificate, headers: Any) -> UserInfo | None:
        """The user the front proxy names in ``headers`` (a case-insensitive multidict), or None when the
        certificate's common name is not allowed or no user header is set."""
        config = self.config
        if config.allowed_names and not set(_names(cert.subject, NameOID.COMMON_NAME)) & set(config.allowed_names):
            return None
        name = next((headers[h] for h in config.username_headers if headers.get(h)), "")
        if not name:
            return None
        uid = next((headers[h] for h in config.uid_headers if headers.get(h)), "")
        groups = [v for h in config.group_headers for v in headers.getall(h, ()) if v]
        extra: dict[str, list[str]] = {}
        for header, value in headers.items():
            lowered = header.lower()
            prefix = next((p for p in config.extra_prefixes if lowered.startswith(p) and len(lowered) > len(p)), None)
            if prefix is not None:
                extra.setdefault(urllib.parse.unquote(lowered[len(prefix):]), []).append(value)
        return UserInfo(name, uid, tuple(groups), tuple(sorted((k, tuple(v)) for k, v in extra.items())))

    async def authenticate(self, peer_der: bytes | None, headers: Any) -> tuple[UserInfo | None, str]:
        """(user, how) or (None, why not). ``headers`` is the request's multidict of headers."""
        why = "no credentials (anonymous requests are not allowed)"
        if peer_der:
            kind, cert = self._classify(peer_der)
            if kind == "front-proxy" and cert is not None:
                user = self._from_headers(cert, headers)
                if user is not None:
                    return user, "front-proxy"
                why = ("front-proxy certificate without an allowed common name or a user header "
                       f"({', '.join(self.config.username_headers)})")  # fmt: skip
            elif kind == "client" and cert is not None:
                cns = _names(cert.subject, NameOID.COMMON_NAME)
                if cns and cns[0]:
                    return UserInfo(cns[0], groups=tuple(_names(cert.subject, NameOID.ORGANIZATION_NAME))), "x509"
                why = "client certificate without a common name"
            else:
                why = "client certificate not issued by a CA of the authentication ConfigMap"
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            if self.token_review is None:
                return None, "bearer tokens are not accepted (no TokenReview configured)"
            review = self.token_review
            token = token.strip()
            digest = hashlib.sha256(token.encode()).hexdigest()
            try:
                user = await self._tokens.get(digest, lambda: review(token), lambda _v: self.token_ttl_s, self.clock)
            except ReviewError as exc:
                return None, f"token review failed: {exc}"
            return (user, "token") if user is not None else (None, "token not authenticated by the API server")
        return None, why


class Authorizer:
    """SubjectAccessReviews with a decision cache; ``system:masters`` always allowed."""

    def __init__(self, access_review: AccessReview, *, allow_ttl_s: float = 10.0, deny_ttl_s: float = 10.0,
                 always_allow_groups: Sequence[str] = ALWAYS_ALLOW_GROUPS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.access_review = access_review
        self.allow_ttl_s = allow_ttl_s
        self.deny_ttl_s = deny_ttl_s
        self.always_allow_groups = frozenset(always_allow_groups)
        self.clock = clock
        self._cache = _TTLCache()

    async def authorize(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason). Raises ReviewError when the API server could not be asked."""
        if self.always_allow_groups & set(user.groups):
            return True, "always-allowed group"
        review = self.access_review
        decision: tuple[bool, str] = await self._cache.get(
            (user, attrs),
            lambda: review(user, attrs),
            lambda d: self.allow_ttl_s if d[0] else self.deny_ttl_s,
            self.clock,
        )
        return decision

    @property
    def cached_decisions(self) -> int:
        return len(self._cache.entries)


def forbidden_message(user: UserInfo, attrs: Attributes) -> str:
    """The API server's wording for a denied request."""
    if attrs.resource is None:
        return f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else ""
    return (
        f'{attrs.resource}.{attrs.group} is forbidden: User "{user.name}" cannot {attrs.verb} resource '
        f'"{attrs.resource}" in API group "{attrs.group}"{where}'
    )


class KubeReviews:
    """TokenReview and SubjectAccessReview through the official client (blocking; called in a worker thread)."""

    def __init__(self, api_client: Any, *, timeout_s: float = 5.0) -> None:
        from kubernetes import client as k8s

        self.authn = k8s.AuthenticationV1Api(api_client)
        self.authz = k8s.AuthorizationV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.timeout_s = timeout_s

    def _error(self, what: str, exc: Exception) -> ReviewError:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException):
            return ReviewError(f"{what}: HTTP {exc.status} {exc.reason or ''}".strip())
        return ReviewError(f"{what}: {type(exc).__name__}: {exc}")

    def token_review(self, token: str) -> UserInfo | None:
        from kubernetes import client as k8s

        body = k8s.V1TokenReview(api_version="authentication.k8s.io/v1", kind="TokenReview",
                                 spec=k8s.V1TokenReviewSpec(token=token))  # fmt: skip
        try:
            result = self.authn.create_token_review(body, _request_timeout=self.timeout_s)
        except Exception as exc:
            raise self._error("TokenReview", exc) from None
        status = result.status
        if status is None or not status.authenticated or status.user is None or not status.user.username:
            return None
        u = status.user
        extra = {k: tuple(v) for k, v in (u.extra or {}).items()}
        return UserInfo(str(u.username), u.uid or "", tuple(u.groups or ()), tuple(sorted(extra.items())))

    def access_review(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        from kubernetes import client as k8s

        spec: dict[str, Any] = {
            "user": user.name,
            "groups": list(user.groups),
            "extra": {k: list(v) for k, v in user.extra},
        }
        if user.uid:
            spec["uid"] = user.uid
        if attrs.resource is not None:
            spec["resourceAttributes"] = {
                "verb": attrs.verb, "group": attrs.group, "version": attrs.version, "resource": attrs.resource,
                **({"namespace": attrs.namespace} if attrs.namespace else {}),
            }  # fmt: skip
        else:
            spec["nonResourceAttributes"] = {"verb": attrs.verb, "path": attrs.path}
        parsed = k8s.V1SubjectAccessReviewSpec.from_dict(spec)
        assert parsed is not None, "from_dict of a dict is never None"
        body = k8s.V1SubjectAccessReview(api_version="authorization.k8s.io/v1", kind="SubjectAccessReview",
                                         spec=parsed)  # fmt: skip
        try:
            result = self.authz.create_subject_access_review(body, _request_timeout=self.timeout_s)
        except Exception as exc:
            raise self._error("SubjectAccessReview", exc) from None
        status = result.status
        if status is None:
            return False, "SubjectAccessReview without status"
        return bool(status.allowed) and not bool(status.denied), status.reason or ""

    def authentication_config(self) -> AuthenticationConfig:
        """Read and parse ``kube-system/extension-apiserver-authentication``; raise ValueError saying what failed."""
        try:
            cm = self.core.read_namespaced_config_map(CONFIGMAP_NAME, CONFIGMAP_NAMESPACE,
                                                      _request_timeout=self.timeout_s)  # fmt: skip
        except Exception as exc:
            raise ValueError(
                f"cannot read ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} ({self._error('GET', exc)}); the "
                "adapter's ServiceAccount needs the RoleBinding to extension-apiserver-authentication-reader"
            ) from None
        return AuthenticationConfig.from_configmap(cm.data or {})

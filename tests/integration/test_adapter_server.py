"""The External Metrics API server over real TLS, with authentication and authorization delegated to the Kubernetes
emulator (ConfigMap ``kube-system/extension-apiserver-authentication``, TokenReview, SubjectAccessReview): who gets
in (front-proxy certificates with user headers, client certificates, bearer tokens) and who does not (anonymous,
forged headers, a front proxy whose name is not allowed, a certificate from an unknown CA); hostile and malformed
requests each answered by a clean ``Status``; stale data answered 503; certificate and ConfigMap reloads."""

from __future__ import annotations

import concurrent.futures
import copy
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from autoscaler.core.spec import AutoscalerSpec, MetricsSpec
from autoscaler.core.types import Pool, PoolSignals, Signals
from autoscaler.kube import KubeClient
from metrics_adapter.auth import Authenticator, Authorizer, KubeReviews
from metrics_adapter.provider import (
    AutoscalerSeries,
    ExternalMetricsCache,
    Snapshot,
    desired_entries,
    signal_entries,
)
from metrics_adapter.server import AdapterServer
from metrics_adapter.tls import ServingTLS
from tests.helpers.pki import CA, Issued, extension_auth_configmap
from workers.local.kube_emulator import AccessRule, KubeEmulator

HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
BASE = "/apis/external.metrics.k8s.io/v1beta1"
REVIEW_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass
class World:
    kube: KubeEmulator
    cache: ExternalMetricsCache
    server: AdapterServer
    url: str
    serving_ca: CA
    serving: Issued
    front_proxy_ca: CA
    proxy: Issued
    evil_proxy: Issued
    alice: Issued
    rogue: Issued
    configmap: dict[str, Any]

    def get(self, path: str, *, cert: Issued | None = None, user: str | None = HPA_USER,
            group: str | None = "system:authenticated", token: str | None = None, headers: dict[str, str] | None = None,
            params: dict[str, str] | None = None, method: str = "GET") -> requests.Response:  # fmt: skip
        """A request with user headers as the aggregator sends them (one group: what requests can send)."""
        hdrs = dict(headers or {})
        if user is not None:
            hdrs["X-Remote-User"] = user
        if group is not None:
            hdrs["X-Remote-Group"] = group
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, params=params, headers=hdrs, timeout=10,
                                verify=str(self.serving_ca.path), cert=None if cert is None else cert.pair)

    def proxied(self, path: str, **kw: Any) -> requests.Response:
        return self.get(path, cert=self.proxy, **kw)

    def reviews(self) -> int:
        return sum(1 for method, path in self.kube.requests() if method == "POST" and path == REVIEW_PATH)


def publish(cache: ExternalMetricsCache, now: float, *, stale_after_s: float = 300.0) -> None:
    spec = AutoscalerSpec(metrics=MetricsSpec(selector=(("model_name", "m"),), window_s=60.0))
    sig = Signals(time_s=now, ttft_s=0.35, itl_s=0.0305, request_rate_per_s=12.5,
                  decode=PoolSignals(waiting_requests=3.0, kv_usage_fraction=0.42))  # fmt: skip
    pct = {"ttft": {0.5: 0.1, 0.9: 0.2, 0.99: 0.35}, "itl": {0.5: 0.01, 0.9: 0.02, 0.99: 0.0305}}
    entries = signal_entries("llama", spec, sig, pct, fresh_until_s=now + stale_after_s)
    entries += desired_entries("llama", {Pool.PREFILL: 3, Pool.DECODE: 5}, timestamp_s=now,
                               fresh_until_s=now + stale_after_s)  # fmt: skip
    down = signal_entries("broken", spec, Signals(time_s=now, error="prometheus: connection refused"), pct,
                          fresh_until_s=now + stale_after_s)  # fmt: skip
    cache.publish(Snapshot.build([AutoscalerSeries("llm", "llama", tuple(entries)),
                                  AutoscalerSeries("llm", "broken", tuple(down))],
                                 published_at_s=now, stale_after_s=stale_after_s))  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("adapter-pki")
    front_proxy, clients, serving_ca, rogue_ca = (CA(n, base) for n in ("front-proxy", "clients", "serving", "rogue"))
    serving = serving_ca.issue("pdscale-metrics-adapter", hosts=["127.0.0.1", "localhost"], stem="serving")
    configmap = extension_auth_configmap(front_proxy, clients)
    with KubeEmulator() as kube:
        kube.put("v1/configmaps", copy.deepcopy(configmap))
        kube.allow(AccessRule(users=(HPA_USER, "dashboard"), verbs=("get", "list"),
                              api_groups=("external.metrics.k8s.io",), namespaces=("llm", "kube-system")))
        kube.allow(AccessRule(groups=("system:authenticated",), verbs=("get",),
                              non_resource_urls=("/apis", "/apis/*", "/openapi/*")))  # fmt: skip
        kube.add_token("dashboard-token", "dashboard", ("system:authenticated",))
        kube.add_token("viewer-token", "viewer", ("system:authenticated",))
        client = KubeClient.from_config(str(kube.kubeconfig(base / "kubeconfig")))
        reviews = KubeReviews(client.api_client, timeout_s=5.0)
        cache = ExternalMetricsCache()
        publish(cache, time.time())
        server = AdapterServer(
            cache, Authenticator(reviews.authentication_config(), reviews.token_review),
            Authorizer(reviews.access_review), ServingTLS(*serving.pair), host="127.0.0.1", port=0,
            load_config=reviews.authentication_config, config_refresh_s=0.3, cert_check_s=0.1,
        ).start()  # fmt: skip
        try:
            yield World(kube, cache, server, f"https://127.0.0.1:{server.port}", serving_ca, serving, front_proxy,
                        front_proxy.issue("front-proxy-client"), front_proxy.issue("evil-proxy"),
                        clients.issue("alice", organizations=("team-a",)), rogue_ca.issue("front-proxy-client"),
                        configmap)  # fmt: skip
        finally:
            server.stop()


def status_of(resp: requests.Response, code: int) -> dict[str, Any]:
    """The response is a metav1.Status failure with ``code``."""
    assert resp.status_code == code, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == code and body["message"]
    return dict(body)


# ---------------------------------------------------------------- what is served


def test_discovery_and_values(world: World) -> None:
    assert world.proxied("/apis").json()["groups"][0]["name"] == "external.metrics.k8s.io"
    assert world.proxied("/apis/external.metrics.k8s.io").json()["kind"] == "APIGroup"
    resources = world.proxied(BASE).json()
    assert resources["kind"] == "APIResourceList" and "pdscale_desired_replicas" in {
        r["name"] for r in resources["resources"]}  # fmt: skip
    assert world.proxied("/openapi/v2").json()["swagger"] == "2.0"
    assert world.proxied("/openapi/v3").json()["paths"]
    doc = world.proxied(f"{BASE}/namespaces/llm/pdscale_desired_replicas",
                        params={"labelSelector": "autoscaler=llama,pool=prefill"}).json()  # fmt: skip
    assert doc["kind"] == "ExternalMetricValueList"
    assert [(i["metricLabels"], i["value"]) for i in doc["items"]] == [({"autoscaler": "llama", "pool": "prefill"},
                                                                        "3")]  # fmt: skip
    itl = world.proxied(f"{BASE}/namespaces/llm/pdscale_itl_seconds", params={"labelSelector": "autoscaler=llama"})
    assert itl.json()["items"][0]["value"] == "30500u" and itl.json()["items"][0]["window"] == 60


def test_health_needs_no_credentials(world: World) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        resp = requests.get(world.url + path, verify=str(world.serving_ca.path), timeout=5)
        assert resp.status_code == 200, (path, resp.text)
    assert "1 autoscalers" not in requests.get(world.url + "/readyz", verify=str(world.serving_ca.path),
                                               timeout=5).text, "two autoscalers published"  # fmt: skip


# ---------------------------------------------------------------- authentication


def test_anonymous_is_refused(world: World) -> None:
    body = status_of(world.get(f"{BASE}/namespaces/llm/pdscale_ttft_seconds", user=None), 401)
    assert body["reason"] == "Unauthorized" and "anonymous" in body["message"]


def test_forged_headers_without_a_front_proxy_certificate_prove_nothing(world: World) -> None:
    path = f"{BASE}/namespaces/llm/pdscale_ttft_seconds"
    status_of(world.get(path, user=HPA_USER, group="system:masters"), 401)
    # a real token plus forged headers: the token's user, not the header's, and not system:masters
    body = status_of(world.get(path, token="viewer-token", user=HPA_USER, group="system:masters"), 403)
    assert 'User "viewer" cannot list resource "pdscale_ttft_seconds"' in body["message"]
    # a user's own client certificate plus forged headers: the certificate's user
    body = status_of(world.get(path, cert=world.alice, user=HPA_USER, group="system:masters"), 403)
    assert 'User "alice"' in body["message"] and body["reason"] == "Forbidden"


def test_front_proxy_name_must_be_allowed(world: World) -> None:
    body = status_of(world.get(f"{BASE}/namespaces/llm/pdscale_ttft_seconds", cert=world.evil_proxy), 401)
    assert "allowed common name" in body["message"]


def test_unknown_ca_fails_the_handshake(world: World) -> None:
    # TLS 1.3: the client may see the refusal as a failed handshake or as the connection closed right after it
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        world.get(f"{BASE}/namespaces/llm/pdscale_ttft_seconds", cert=world.rogue)


def test_tokens_and_groups(world: World) -> None:
    path = f"{BASE}/namespaces/llm/pdscale_request_rate_per_second"
    llama = {"labelSelector": "autoscaler=llama"}
    assert world.get(path, token="dashboard-token", user=None, params=llama).json()["items"][0]["value"] == "12500m"
    body = status_of(world.get(path, token="no-such-token", user=None), 401)
    assert "not authenticated" in body["message"]
    status_of(world.proxied(path, user="someone"), 403)
    assert world.proxied(path, user="admin", group="system:masters", params=llama).status_code == 200, (
        "always-allowed group")
    status_of(world.proxied(f"{BASE}/namespaces/prod/pdscale_request_rate_per_second"), 403), "not in prod"


def test_decisions_are_cached_and_shared(world: World) -> None:
    path = f"{BASE}/namespaces/llm/pdscale_desired_replicas?labelSelector=autoscaler%3Dllama"
    before = world.reviews()
    for _ in range(5):
        assert world.proxied(path, user="dashboard").status_code == 200
    assert world.reviews() - before == 1, "one SubjectAccessReview, then the cache"
    # twenty concurrent first requests of a new identity while the API server is slow: still one review
    world.kube.add_fault("POST", "subjectaccessreviews$", status=None, delay_s=0.5)
    before = world.reviews()
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(lambda _: world.proxied(path, user="dashboard", group="g").status_code,
                              range(20)))  # fmt: skip
    assert codes == [200] * 20 and world.reviews() - before == 1


# ---------------------------------------------------------------- hostile and malformed requests


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ('autoscaler="llama"', "invalid label value"),
        ('autoscaler=llama"}', "invalid label value"),
        ('autoscaler=llama"} or vector(1) #', "invalid label value"),
        ("autoscaler=ll\nama", "expected ',' or the end"),
        ("autoscaler=~.*", "invalid label value"),
        ("autoscaler=.*", "invalid label value"),
        ("autoscaler in (llama|other)", "invalid label value"),
        ("autoscaler=(llama)", "expected a value"),
        ("autoscaler in ()", "must not be empty"),
        ("autoscaler=llama\\", "invalid label value"),
        ("x" * 3000, "characters long; the limit is 2048"),
        ("a=b," * 20_000, "characters long"),  # 80 KB: past the 64 KiB request line as well
    ],
    ids=["quotes", "quote-brace", "promql-injection", "newline", "regex-match", "regex", "alternation",
         "parenthesis", "empty-set", "backslash", "oversized", "huge"],
)  # fmt: skip
def test_hostile_selectors_get_a_clean_bad_request(world: World, selector: str, fragment: str) -> None:
    resp = world.proxied(f"{BASE}/namespaces/llm/pdscale_ttft_seconds", params={"labelSelector": selector})
    if len(resp.request.url or "") > 65536:  # aiohttp's own limit on the request line: refused before the app
        assert resp.status_code in (400, 414)
        return
    body = status_of(resp, 400)
    assert body["reason"] == "BadRequest" and fragment in body["message"]


def test_a_valid_selector_with_newlines_and_metacharacter_free_values_works(world: World) -> None:
    doc = world.proxied(f"{BASE}/namespaces/llm/pdscale_ttft_seconds",
                        params={"labelSelector": "autoscaler=llama\n,\tquantile in (0.99,0.9)"}).json()  # fmt: skip
    assert [i["value"] for i in doc["items"]] == ["350m"]


@pytest.mark.parametrize(
    ("path", "code", "fragment"),
    [
        (f"{BASE}/namespaces/llm/cpu_usage", 404, "could not find the metric 'cpu_usage'"),
        (f"{BASE}/namespaces/llm/pdscale_ttft_seconds%22%7D", 404, "could not find the metric"),
        (f"{BASE}/namespaces/kube-system/pdscale_ttft_seconds", 404, "no DisaggregatedAutoscaler there"),
        (f"{BASE}/namespaces/LLM/pdscale_ttft_seconds", 400, "invalid namespace 'LLM'"),
        (f"{BASE}/namespaces/{'n' * 64}/pdscale_ttft_seconds", 400, "invalid namespace"),
        (f"{BASE}/namespaces/a.b/pdscale_ttft_seconds", 400, "invalid namespace"),
        (f"{BASE}/namespaces/llm%2Fx/pdscale_ttft_seconds", 400, "invalid namespace 'llm/x'"),
        (f"{BASE}/namespaces/llm", 404, "Not Found"),
        ("/apis/custom.metrics.k8s.io/v1beta1", 404, "Not Found"),
    ],
    ids=["unknown-metric", "quoted-metric", "namespace-without-autoscalers", "upper-case-namespace",
         "long-namespace", "dotted-namespace", "encoded-slash", "no-metric", "other-group"],
)  # fmt: skip
def test_unknown_metrics_and_wrong_namespaces(world: World, path: str, code: int, fragment: str) -> None:
    body = status_of(world.proxied(path), code)
    assert fragment in body["message"]


def test_malformed_requests(world: World) -> None:
    path = f"{BASE}/namespaces/llm/pdscale_ttft_seconds"
    body = status_of(world.get(path + "?labelSelector=a%3Db&labelSelector=c%3Dd", cert=world.proxy), 400)
    assert "given 2 times" in body["message"]
    assert status_of(world.proxied(path, method="POST"), 405)["reason"] == "MethodNotAllowed"


def test_unavailable_and_stale_values_are_503(world: World) -> None:
    body = status_of(world.proxied(f"{BASE}/namespaces/llm/pdscale_ttft_p90_seconds",
                                   params={"labelSelector": "autoscaler=broken"}), 503)  # fmt: skip
    assert body["reason"] == "ServiceUnavailable" and "connection refused" in body["message"]
    publish(world.cache, time.time() - 600, stale_after_s=60)
    try:
        body = status_of(world.proxied(f"{BASE}/namespaces/llm/pdscale_desired_replicas"), 503)
        assert "last refreshed 600 s ago" in body["message"]
        assert requests.get(world.url + "/readyz", verify=str(world.serving_ca.path), timeout=5).status_code == 503
    finally:
        publish(world.cache, time.time())


# ---------------------------------------------------------------- reloads


def _served_serial(world: World) -> int:
    ctx = ssl.create_default_context(cafile=str(world.serving_ca.path))
    with socket.create_connection(("127.0.0.1", world.server.port), timeout=5) as sock, ctx.wrap_socket(
        sock, server_hostname="localhost") as tls:  # fmt: skip
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_serving_certificate_is_reloaded_when_its_files_change(world: World) -> None:
    assert _served_serial(world) == world.serving.cert.serial_number
    fresh = world.serving_ca.issue("pdscale-metrics-adapter", hosts=["127.0.0.1", "localhost"], stem="serving-next")
    world.serving.key_path.write_bytes(fresh.key_pem)
    world.serving.cert_path.write_bytes(fresh.cert_pem)
    deadline = time.monotonic() + 10
    while _served_serial(world) != fresh.cert.serial_number:
        assert time.monotonic() < deadline, "the new certificate was not picked up"
        time.sleep(0.1)
    assert world.proxied(BASE).status_code == 200


def test_authentication_configmap_changes_apply(world: World) -> None:
    path = f"{BASE}/namespaces/llm/pdscale_ttft_seconds?labelSelector=autoscaler%3Dllama"
    assert world.proxied(path).status_code == 200
    changed = copy.deepcopy(world.configmap)
    changed["data"]["requestheader-allowed-names"] = json.dumps(["another-proxy"])
    world.kube.put("v1/configmaps", changed)
    try:
        deadline = time.monotonic() + 10
        while world.proxied(path).status_code != 401:
            assert time.monotonic() < deadline, "the new allowed names were not applied"
            time.sleep(0.1)
    finally:
        world.kube.put("v1/configmaps", copy.deepcopy(world.configmap))
    deadline = time.monotonic() + 10
    while world.proxied(path).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_self_signed_default_certificate(tmp_path: Path) -> None:
    tls = ServingTLS(hosts=["pdscale-metrics-adapter.pdscale-system.svc", "127.0.0.1"])
    try:
        assert tls.self_signed and not tls.reload_if_changed()
        cert = x509.load_pem_x509_certificate(Path(tls.cert_file).read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "pdscale-metrics-adapter.pdscale-system.svc" in sans.get_values_for_type(x509.DNSName)
        assert cert.issuer == cert.subject
        assert (Path(tls.key_file).stat().st_mode & 0o777) == 0o600
    finally:
        tls.close()
    assert not Path(tls.cert_file).exists(), "the temporary key is removed"
    with pytest.raises(ValueError, match="go together"):
        ServingTLS(str(tmp_path / "a.crt"), None)

"""pdscale reaches a Prometheus that is locked down the way admins lock it down, through the options of
autoscaler/prometheus_connection.py:

* the real Prometheus with its own ``--web.config.file``: TLS, a client certificate required and verified, and
  basic auth (bcrypt) -- CA file, client cert/key, username/password file, insecure-skip-verify;
* the same Prometheus behind a tenant gateway (the shape of Mimir/Cortex/Thanos front ends and OAuth proxies):
  ``Authorization: Bearer`` from a token file that rotates, and ``X-Scope-OrgID``.

Both are started once per module on free loopback ports."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import logging
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from autoscaler import prometheus_connection
from autoscaler.prometheus import PrometheusError, PrometheusMetricsSource
from autoscaler.prometheus_connection import PrometheusConnection
from workers.local.net import LOOPBACK, free_port
from workers.local.processes import ProcessRunner
from workers.local.prometheus import PrometheusServer, require_prometheus

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-for-tests"


# ---------------------------------------------------------------- a CA, a server and a client certificate


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, ip: str | None = None,
          client: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("pdscale test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("prometheus", server_key, ca.subject, ca_key, ip=LOOPBACK)
    client = _cert("pdscale", client_key, ca.subject, ca_key, client=True)
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.crt").write_bytes(server.public_bytes(pem))
    (folder / "client.crt").write_bytes(client.public_bytes(pem))
    return Pki(folder / "ca.crt", folder / "server.crt", _write_key(server_key, folder / "server.key"),
               folder / "client.crt", _write_key(client_key, folder / "client.key"))


# ---------------------------------------------------------------- a tenant gateway in front of Prometheus


class TenantGateway:
    """Forwards /api/v1/* to Prometheus when the request carries ``Authorization: Bearer <token>`` and
    ``X-Scope-OrgID: <tenant>`` (401 / 403 otherwise), as Mimir's or an OAuth proxy's front end would."""

    def __init__(self, upstream: str, token: str, tenant: str) -> None:
        self.upstream, self.token, self.tenant = upstream, token, tenant
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.seen: list[dict[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="tenant-gateway")
        self._runner: aiohttp.web.AppRunner | None = None

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.seen.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return aiohttp.web.json_response({"status": "error", "error": "bad token"}, status=401)
        if request.headers.get("X-Scope-OrgID") != self.tenant:
            return aiohttp.web.json_response({"status": "error", "error": "no tenant"}, status=403)
        body = await request.read()
        async with aiohttp.ClientSession() as client, client.request(
            request.method, f"{self.upstream}{request.path_qs}", data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "")},
        ) as upstream:
            return aiohttp.web.Response(body=await upstream.read(), status=upstream.status,
                                        content_type="application/json")

    async def _start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/api/v1/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, LOOPBACK, self.port).start()

    def __enter__(self) -> TenantGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# ---------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class World:
    pki: Pki
    secure: PrometheusServer  # TLS + client cert + basic auth
    plain: PrometheusServer
    gateway: TenantGateway
    password_file: Path
    token_file: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_prometheus()
    base = tmp_path_factory.mktemp("prometheus-connection")
    pki = make_pki(base)
    runner = ProcessRunner(base / "proc-logs")
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    basic = "Basic " + __import__("base64").b64encode(f"admin:{PASSWORD}".encode()).decode()
    web_config = {
        "tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                              "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki.ca)},
        "basic_auth_users": {"admin": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()},
    }
    secure = PrometheusServer(runner, base / "secure", web_config=web_config, client_context=client,
                              client_headers={"Authorization": basic})
    plain = PrometheusServer(runner, base / "plain")
    password_file = base / "password"
    password_file.write_text(PASSWORD + "\n")
    token_file = base / "token"
    token_file.write_text("token-1\n")
    try:
        secure.start()
        plain.start()
        with TenantGateway(plain.url, "token-1", "team-a") as gateway:
            yield World(pki, secure, plain, gateway, password_file, token_file)
    finally:
        runner.stop_all()


def one(conn: PrometheusConnection) -> float:
    """``vector(1)`` through the controller's own query path."""
    data = PrometheusMetricsSource(conn.url, timeout_s=5, session=conn.session()).query("vector(1)")
    return float(data["result"][0]["value"][1])


def secure_conn(world: World, **changes: Any) -> PrometheusConnection:
    fields: dict[str, Any] = dict(url=world.secure.url, ca_file=str(world.pki.ca),
                                  cert_file=str(world.pki.client_cert), key_file=str(world.pki.client_key),
                                  username="admin", password_file=str(world.password_file))
    fields.update(changes)
    return PrometheusConnection(**fields)


# ---------------------------------------------------------------- TLS, client certificates, basic auth


def test_tls_with_client_certificate_and_basic_auth(world: World, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.secure.url.startswith("https://")
    assert one(secure_conn(world)) == 1.0
    # a bundle in the environment (set in many images) must not replace --prometheus-ca-file (requests#3829)
    other = make_pki(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other.ca))
    assert one(secure_conn(world)) == 1.0


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"ca_file": None}, "TLS: server certificate not trusted"),  # the system's CAs do not know our test CA
        ({"cert_file": None, "key_file": None}, "client certificate"),  # Go ends TLS 1.3 with EOF or an alert
        ({"username": None, "password_file": None}, "HTTP 401"),
    ],
    ids=["no-ca", "no-client-cert", "no-basic-auth"],
)
def test_each_missing_credential_is_refused(world: World, changes: dict[str, Any], error: str) -> None:
    with pytest.raises(PrometheusError) as info:
        one(secure_conn(world, **changes))
    assert error in str(info.value)


def test_password_file_is_reread_when_it_changes(world: World, tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("wrong\n")
    conn = secure_conn(world, password_file=str(path))
    session_source = PrometheusMetricsSource(conn.url, timeout_s=5, session=conn.session())
    with pytest.raises(PrometheusError, match="HTTP 401"):
        session_source.query("vector(1)")
    tmp = tmp_path / "password.new"
    tmp.write_text(PASSWORD)
    os.replace(tmp, path)  # how kubelet updates a mounted Secret: a new file swapped in
    assert session_source.query("vector(1)")["result"][0]["value"][1] == "1"


def test_insecure_skip_verify_works_and_says_so(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pdscale.prometheus"):
        assert one(secure_conn(world, ca_file=None, insecure_skip_verify=True)) == 1.0
    assert any("verification for Prometheus" in r.getMessage() and "is OFF" in r.getMessage()
               for r in caplog.records)


# ---------------------------------------------------------------- bearer token (rotating) and tenant header


def test_bearer_token_file_rotates_and_tenant_header_is_sent(world: World) -> None:
    conn = PrometheusConnection(url=world.gateway.url, bearer_token_file=str(world.token_file),
                                headers=(("X-Scope-OrgID", "team-a"),))
    source = PrometheusMetricsSource(conn.url, timeout_s=5, session=conn.session())
    assert source.query("vector(1)")["result"][0]["value"][1] == "1"
    world.gateway.token = "token-2"  # the issuer rotated the token; the file is not updated yet
    with pytest.raises(PrometheusError, match="HTTP 401"):
        source.query("vector(1)")
    tmp = world.token_file.with_suffix(".new")
    tmp.write_text("token-2\n")
    os.replace(tmp, world.token_file)
    assert source.query("vector(1)")["result"][0]["value"][1] == "1"  # same session, new token
    world.gateway.token = "token-1"
    world.token_file.write_text("token-1\n")


def test_without_tenant_header_the_gateway_refuses(world: World) -> None:
    with pytest.raises(PrometheusError, match="HTTP 403"):
        one(PrometheusConnection(url=world.gateway.url, bearer_token_file=str(world.token_file)))


def test_settings_come_from_the_environment_and_flags_win(world: World) -> None:
    parser = argparse.ArgumentParser()
    prometheus_connection.add_arguments(parser)
    env = {
        "PDSCALE_PROMETHEUS_URL": world.gateway.url,
        "PDSCALE_PROMETHEUS_BEARER_TOKEN_FILE": str(world.token_file),
        "PDSCALE_PROMETHEUS_HEADERS": "X-Scope-OrgID: team-b\nX-Extra: 1\n",
    }
    conn = prometheus_connection.from_args(parser.parse_args(["--prometheus-header", "X-Scope-OrgID: team-a"]), env)
    assert conn is not None and dict(conn.headers) == {"X-Scope-OrgID": "team-a", "X-Extra": "1"}
    assert one(conn) == 1.0
    assert world.gateway.seen[-1]["X-Extra"] == "1"


def test_pdscale_promql_json_through_the_gateway(world: World, tmp_path: Path) -> None:
    """The command an admin runs to check the wiring, configured only by environment variables."""
    spec = tmp_path / "a.yaml"
    spec.write_text(
        "apiVersion: pdscale.io/v1alpha1\nkind: DisaggregatedAutoscaler\nmetadata: {name: m, namespace: ns}\n"
        "spec:\n  prefill: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: p}}\n"
        "  decode: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: d}}\n"
    )
    env = {**os.environ, "PDSCALE_PROMETHEUS_URL": world.gateway.url,
           "PDSCALE_PROMETHEUS_BEARER_TOKEN_FILE": str(world.token_file),
           "PDSCALE_PROMETHEUS_HEADERS": "X-Scope-OrgID: team-a"}
    proc = subprocess.run([sys.executable, "-m", "autoscaler.cli", "promql", "--json", str(spec)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout)
    assert out["prometheusQueries"] > 0 and out["queries"]
    assert out["signals"]["ns/m"]["error"] is None, out["signals"]["ns/m"]  # reached, authorised, no data yet
    bad = subprocess.run([sys.executable, "-m", "autoscaler.cli", "promql", "--json", str(spec)], cwd=ROOT,
                         env={**env, "PDSCALE_PROMETHEUS_HEADERS": ""}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "HTTP 403" in json.loads(bad.stdout)["signals"]["ns/m"]["error"]

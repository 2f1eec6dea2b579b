"""The adapter's TLS: its serving certificate and the client CAs it accepts, as one ``ssl.SSLContext``.

Serving certificate: ``--tls-cert-file``/``--tls-private-key-file`` in production (cert-manager, a Secret),
re-read when either file's modification time changes (checked by ``reload_if_changed``, which the server calls
every few seconds; new connections get the new certificate, open ones keep theirs). Without files, a self-signed
certificate is made at start-up for the given host names, as kube-apiserver-based adapters do; the APIService then
needs ``insecureSkipTLSVerify: true`` (the aggregator cannot check who it talks to, see manifests/README.md).

Client certificates are asked for, not required (``CERT_OPTIONAL``): the aggregator presents its front-proxy
certificate, other clients may use a bearer token. Whatever CA verified a certificate during the handshake, the
authenticator (``metrics_adapter.auth``) decides afterwards which of the current CAs issued it. CA bundles from a
rotated ConfigMap are added to the context's store (OpenSSL cannot remove one); the authenticator's own check
uses only the current bundles, so a removed CA stops being trusted for identity at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def self_signed_pem(hosts: Sequence[str], *, days: int = 365, common_name: str = "pdscale-metrics-adapter",
                    ) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): an ECDSA P-256 serving certificate for ``hosts`` (DNS names or IPs),
    signed by its own key."""
    if not hosts:
        raise ValueError("a self-signed certificate needs at least one host name")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def default_hosts(service: str = "pdscale-metrics-adapter", namespace: str | None = None) -> list[str]:
    """The names the aggregator and local clients use: the Service's DNS names, localhost, 127.0.0.1."""
    namespace = namespace or os.environ.get("POD_NAMESPACE") or "pdscale-system"
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", service, "localhost",
            "127.0.0.1"]  # fmt: skip


class ServingTLS:
    """The server context. ``cert_file``/``key_file`` both given, or neither (self-signed for ``hosts``)."""

    def __init__(self, cert_file: str | None = None, key_file: str | None = None, *,
                 hosts: Sequence[str] = ()) -> None:  # fmt: skip
        if (cert_file is None) != (key_file is None):
            raise ValueError("--tls-cert-file and --tls-private-key-file go together")
        self._tmpdir: str | None = None
        if cert_file is None or key_file is None:
            cert_pem, key_pem = self_signed_pem(hosts or default_hosts())
            self._tmpdir = tempfile.mkdtemp(prefix="pdscale-tls-")  # 0700
            cert_file = os.path.join(self._tmpdir, "tls.crt")
            key_file = os.path.join(self._tmpdir, "tls.key")
            Path(cert_file).write_bytes(cert_pem)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key_pem)
        self.cert_file = cert_file
        self.key_file = key_file
        self.self_signed = self._tmpdir is not None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self.context.verify_mode = ssl.CERT_NONE
        self._client_cas: set[str] = set()
        self._stamp: tuple[float, float] | None = None
        self._load()

    def _mtimes(self) -> tuple[float, float]:
        return os.stat(self.cert_file).st_mtime, os.stat(self.key_file).st_mtime

    def _load(self) -> None:
        try:
            stamp = self._mtimes()
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"serving certificate {self.cert_file} / key {self.key_file}: {exc}") from exc
        self._stamp = stamp

    def reload_if_changed(self) -> bool:
        """Re-read the certificate and key when a file changed; True when reloaded. A half-written pair (the key
        does not match yet) raises ValueError and the previous certificate stays in use."""
        if self.self_signed:
            return False
        try:
            stamp = self._mtimes()
        except OSError as exc:
            raise ValueError(f"serving certificate: {exc}") from exc
        if stamp == self._stamp:
            return False
        self._load()
        return True

    def trust_client_cas(self, pem: str) -> None:
        """Ask for client certificates and accept those issued by the CAs in ``pem`` (added to earlier ones)."""
        if not pem.strip() or pem in self._client_cas:
            return
        try:
            self.context.load_verify_locations(cadata=pem)
        except ssl.SSLError as exc:
            raise ValueError(f"client CA bundle: {exc}") from exc
        self._client_cas.add(pem)
        self.context.verify_mode = ssl.CERT_OPTIONAL

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

"""Certificates for tests of TLS servers with client-certificate authentication (the External Metrics adapter):
certificate authorities, client and serving certificates made with ``cryptography``, written to files for
``ssl``/``requests``/the ``kubernetes`` client, and the ``kube-system/extension-apiserver-authentication``
ConfigMap that tells an aggregated API server which CA the front proxy's certificates come from.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FRONT_PROXY_CN = "front-proxy-client"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, in PEM and as files (``cert_path``, ``key_path``)."""

    cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path

    @property
    def pair(self) -> tuple[str, str]:
        """(cert, key) paths, as ``requests`` takes ``cert=``."""
        return str(self.cert_path), str(self.key_path)


class CA:
    """A self-signed certificate authority that issues certificates into ``directory``."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(tz=datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.path = directory / f"{name}-ca.crt"
        self.path.write_bytes(self.pem)

    def issue(self, common_name: str, *, organizations: Sequence[str] = (), hosts: Sequence[str] = (),
              stem: str | None = None) -> Issued:  # fmt: skip
        """A leaf certificate: a server certificate for ``hosts`` when given, else a client certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = datetime.datetime.now(tz=datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )  # fmt: skip
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = stem or f"{self.name}-{common_name}".replace(":", "_").replace("/", "_")
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key)
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        return Issued(cert, cert_pem, key_pem, cert_path, key_path)


def extension_auth_configmap(front_proxy: CA | None, client: CA | None = None, *,
                             allowed_names: Sequence[str] = (FRONT_PROXY_CN,)) -> dict[str, Any]:  # fmt: skip
    """``kube-system/extension-apiserver-authentication`` as kube-apiserver publishes it (JSON-list values)."""
    import json

    data: dict[str, str] = {}
    if client is not None:
        data["client-ca-file"] = client.pem.decode()
    if front_proxy is not None:
        data.update({
            "requestheader-client-ca-file": front_proxy.pem.decode(),
            "requestheader-allowed-names": json.dumps(list(allowed_names)),
            "requestheader-username-headers": json.dumps(["X-Remote-User"]),
            "requestheader-uid-headers": json.dumps(["X-Remote-Uid"]),
            "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
            "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
        })  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": data,
    }

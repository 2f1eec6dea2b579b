"""How pdscale reaches Prometheus (or Thanos, Mimir, Cortex, VictoriaMetrics behind the same API): URL, auth, TLS
and extra headers, with the options of Prometheus' own ``http_config`` (``bearer_token_file``, ``basic_auth``,
``tls_config``, ``http_headers``), each settable by a flag and an environment variable (the Deployment sets them
from a ConfigMap and Secrets).

| flag | environment | meaning |
|---|---|---|
| ``--prometheus-url`` | ``PDSCALE_PROMETHEUS_URL`` | base URL (``http://`` or ``https://``, any path prefix) |
| ``--prometheus-bearer-token-file`` | ``PDSCALE_PROMETHEUS_BEARER_TOKEN_FILE`` | ``Authorization: Bearer``; re-read when the file changes (rotated tokens) |
| | ``PDSCALE_PROMETHEUS_BEARER_TOKEN`` | the token itself (from a Secret); never a flag (``ps`` shows flags) |
| ``--prometheus-username`` | ``PDSCALE_PROMETHEUS_USERNAME`` | basic auth user |
| ``--prometheus-password-file`` | ``PDSCALE_PROMETHEUS_PASSWORD_FILE`` | basic auth password, re-read when it changes |
| | ``PDSCALE_PROMETHEUS_PASSWORD`` | the password itself (from a Secret) |
| ``--prometheus-ca-file`` | ``PDSCALE_PROMETHEUS_CA_FILE`` | PEM bundle that signs the server's certificate (instead of the system's) |
| ``--prometheus-cert-file``, ``--prometheus-key-file`` | ``PDSCALE_PROMETHEUS_CERT_FILE``, ``..._KEY_FILE`` | client certificate (mTLS) |
| ``--prometheus-insecure-skip-verify`` | ``PDSCALE_PROMETHEUS_INSECURE_SKIP_VERIFY=true`` | no certificate check (logged as a warning) |
| ``--prometheus-header 'Name: value'`` (repeatable) | ``PDSCALE_PROMETHEUS_HEADERS`` (one ``Name: value`` a line) | extra headers, e.g. ``X-Scope-OrgID`` for a Mimir/Cortex/Thanos tenant |

A flag wins over its variable; headers from both are merged (the flag's value wins for the same name). Bearer
token and basic auth exclude each other, as in Prometheus' config. This module's top-level imports are light
(``pdscale run --help`` imports it); ``requests`` is imported when a session is built.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

log = logging.getLogger("pdscale.prometheus")

ENV_PREFIX = "PDSCALE_PROMETHEUS_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# header names the options above own; setting them through --prometheus-header would silently fight them
_RESERVED_HEADERS = frozenset({"authorization", "host", "content-length", "content-type"})


@dataclass(frozen=True)
class PrometheusConnection:
    """Everything needed to open a session to one Prometheus API; validated by ``from_args``."""

    url: str
    bearer_token_file: str | None = None
    bearer_token: str | None = None
    username: str | None = None
    password_file: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus url must start with http:// or https://, got {self.url!r}")
        if (self.bearer_token_file or self.bearer_token) and self.username is not None:
            raise ValueError("prometheus: bearer token and basic auth (username) exclude each other")
        if self.bearer_token_file and self.bearer_token:
            raise ValueError("prometheus: both a bearer token and a bearer token file; give one")
        if self.password_file and self.password is not None:
            raise ValueError("prometheus: both a password and a password file; give one")
        if (self.password_file or self.password is not None) and self.username is None:
            raise ValueError("prometheus: a password without a username")
        if self.key_file and not self.cert_file:
            raise ValueError("prometheus: --prometheus-key-file without --prometheus-cert-file")
        for flag, path in (
            ("--prometheus-bearer-token-file", self.bearer_token_file),
            ("--prometheus-password-file", self.password_file),
            ("--prometheus-ca-file", self.ca_file),
            ("--prometheus-cert-file", self.cert_file),
            ("--prometheus-key-file", self.key_file),
        ):
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"{flag} {path}: not a readable file")

    @property
    def authentication(self) -> str:
        """What the start-up log says about auth (never a secret)."""
        if self.bearer_token_file:
            return f"bearer token from {self.bearer_token_file}"
        if self.bearer_token:
            return "bearer token (environment)"
        if self.username is not None:
            return f"basic auth as {self.username}"
        return "none"

    def session(self) -> requests.Session:
        """A ``requests.Session`` with this connection's auth, TLS and headers, and NO retries (a retry would
        stall the control loop; the next tick is the retry)."""
        import requests
        import requests.adapters

        class _Session(requests.Session):
            """TLS settings passed with each request: requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE
            override a session's ``verify`` (psf/requests#3829), which would drop --prometheus-ca-file."""

            def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                kwargs.setdefault("verify", self.verify)
                kwargs.setdefault("cert", self.cert)
                return super().request(method, url, *args, **kwargs)

        session = _Session()
        adapter = requests.adapters.HTTPAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(dict(self.headers))
        if self.bearer_token_file or self.bearer_token:
            session.auth = _BearerAuth(_Secret(self.bearer_token_file, self.bearer_token))
        elif self.username is not None:
            session.auth = _BasicAuth(self.username, _Secret(self.password_file, self.password or ""))
        if self.insecure_skip_verify:
            import urllib3

            log.warning(
                "TLS certificate verification for Prometheus at %s is OFF (--prometheus-insecure-skip-verify): "
                "anyone on the path can read and forge the metrics this controller scales on",
                self.url,
            )
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # said once above, not per query
            session.verify = False
        elif self.ca_file:
            session.verify = self.ca_file
        if self.cert_file:
            session.cert = (self.cert_file, self.key_file) if self.key_file else self.cert_file
        return session


class _Secret:
    """A value from a file, re-read whenever the file changes (kubelet swaps projected tokens and Secret files
    by symlink), or a fixed value."""

    def __init__(self, path: str | None, value: str | None) -> None:
        self.path = path
        self._value = value or ""
        self._stamp: tuple[int, int, int] | None = None

    def get(self) -> str:
        if self.path is None:
            return self._value
        st = os.stat(self.path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.path) as fh:
                self._value = fh.read().strip()
            self._stamp = stamp
        return self._value


class _BearerAuth:
    def __init__(self, token: _Secret) -> None:
        self.token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token.get()}"
        return request


class _BasicAuth:
    def __init__(self, username: str, password: _Secret) -> None:
        self.username = username
        self.password = password

    def __call__(self, request: Any) -> Any:
        import requests.auth

        return requests.auth.HTTPBasicAuth(self.username, self.password.get())(request)


def parse_header(text: str, where: str) -> tuple[str, str]:
    """``Name: value`` (curl's form; ``Name=value`` is accepted too) -> (name, value)."""
    sep = ":" if ":" in text else "="
    name, found, value = text.partition(sep)
    name, value = name.strip(), value.strip()
    if not found or not name or any(c.isspace() for c in name):
        raise ValueError(f"{where}: {text!r} is not 'Name: value'")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{where}: {name} is set by pdscale (use the auth options for Authorization)")
    return name, value


def add_arguments(parser: argparse.ArgumentParser, *, url_help: str = "Prometheus base URL") -> None:
    """The connection flags; ``from_args`` reads them together with the environment."""
    group = parser.add_argument_group(
        "Prometheus connection",
        "Each flag can come from the environment instead: --prometheus-ca-file from $PDSCALE_PROMETHEUS_CA_FILE, "
        "and so on; headers from $PDSCALE_PROMETHEUS_HEADERS (one 'Name: value' a line); a token or password "
        "without a file from $PDSCALE_PROMETHEUS_BEARER_TOKEN or $PDSCALE_PROMETHEUS_PASSWORD. Flags win.",
    )
    group.add_argument("--prometheus-url", metavar="URL", help=f"{url_help} ($PDSCALE_PROMETHEUS_URL)")
    group.add_argument("--prometheus-bearer-token-file", metavar="PATH",
                       help="send its content as 'Authorization: Bearer'; re-read when it changes")
    group.add_argument("--prometheus-username", metavar="USER", help="basic auth user")
    group.add_argument("--prometheus-password-file", metavar="PATH", help="basic auth password, from this file")
    group.add_argument("--prometheus-ca-file", metavar="PATH", help="CA bundle (PEM) for the server certificate")
    group.add_argument("--prometheus-cert-file", metavar="PATH", help="client certificate (PEM) for mTLS")
    group.add_argument("--prometheus-key-file", metavar="PATH", help="client certificate key (PEM)")
    group.add_argument("--prometheus-insecure-skip-verify", action="store_true", default=None,
                       help="do not verify the server certificate (logged as a warning)")
    group.add_argument("--prometheus-header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="extra request header, repeatable (e.g. 'X-Scope-OrgID: tenant-a')")


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"${name}={env[name]!r}: expected true or false")


def from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, *, require_url: bool = True
) -> PrometheusConnection | None:
    """The connection the flags and ``environ`` describe; None when no URL is given and ``require_url`` is
    False. Raises ValueError naming the flag or variable at fault."""
    env = os.environ if environ is None else environ

    def pick(flag: str | None, name: str) -> str | None:
        value = flag if flag else env.get(ENV_PREFIX + name)
        return value or None

    url = pick(args.prometheus_url, "URL")
    if url is None:
        if require_url:
            raise ValueError(f"no Prometheus URL: pass --prometheus-url or set ${ENV_PREFIX}URL")
        return None
    headers: dict[str, str] = {}
    env_headers = env.get(ENV_PREFIX + "HEADERS", "")
    for line in env_headers.splitlines():
        if line.strip():
            name, value = parse_header(line, f"${ENV_PREFIX}HEADERS")
            headers[name] = value
    for text in _strings(args.prometheus_header):
        name, value = parse_header(text, "--prometheus-header")
        headers[name] = value
    insecure = args.prometheus_insecure_skip_verify
    return PrometheusConnection(
        url=url,
        bearer_token_file=pick(args.prometheus_bearer_token_file, "BEARER_TOKEN_FILE"),
        bearer_token=None if args.prometheus_bearer_token_file else env.get(ENV_PREFIX + "BEARER_TOKEN") or None,
        username=pick(args.prometheus_username, "USERNAME"),
        password_file=pick(args.prometheus_password_file, "PASSWORD_FILE"),
        password=None if args.prometheus_password_file else env.get(ENV_PREFIX + "PASSWORD"),
        ca_file=pick(args.prometheus_ca_file, "CA_FILE"),
        cert_file=pick(args.prometheus_cert_file, "CERT_FILE"),
        key_file=pick(args.prometheus_key_file, "KEY_FILE"),
        insecure_skip_verify=bool(insecure) if insecure is not None else _env_bool(
            env, ENV_PREFIX + "INSECURE_SKIP_VERIFY"
        ),
        headers=tuple(sorted(headers.items())),
    )


def _strings(values: Sequence[str] | None) -> list[str]:
    return list(values or [])

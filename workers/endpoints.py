"""Upstream endpoints of the P/D proxy: who is there, who may take a request, and how loaded each one is.

An :class:`EndpointPool` holds the endpoints of one role (``prefill`` or ``decode``; aggregated serving uses the
``decode`` pool alone, the pool-label convention of ``autoscaler/prometheus.py``). An endpoint takes new
requests only when its source lists it as ready AND its last health probe answered 200: a worker that answers
503 (on ``/health`` or on a request) is draining and gets nothing new from that moment on, a refused connection
marks it down; both come back only through a 200 on ``/health``.

Picking is least outstanding tokens (vLLM-router's and llm-d's "least load" on the unit that drives step time):
prompt tokens for prefill, prompt plus not-yet-generated output tokens for decode; ties go to the endpoint with
fewer requests in flight, then to the earlier URL, so a pick is deterministic. Requests already running on an
endpoint that leaves the source are allowed to finish; the endpoint is forgotten when it has none left.

Sources, each producing ``{role: {url: ready}}`` snapshots: flags (static), a JSON/YAML file polled for changes
(the live-loop pod runner rewrites it), or Kubernetes (``workers/endpoints_kube.py``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from workers.tokens import chat_prompt_tokens, count_text_tokens

log = logging.getLogger("pdscale.proxy.endpoints")

PREFILL = "prefill"
DECODE = "decode"
ROLES = (PREFILL, DECODE)

# endpoint health, as last observed
UNKNOWN = "unknown"  # not probed yet: takes no requests
READY = "ready"
DRAINING = "draining"  # answered 503: finishing its work, takes nothing new
DOWN = "down"  # connection refused / timed out
HEALTH_STATES = (UNKNOWN, READY, DRAINING, DOWN)

Snapshot = dict[str, dict[str, bool]]  # role -> url -> ready (as the source sees it)


class EndpointError(ValueError):
    """A bad endpoint URL or endpoints file; the message names the source and the entry."""


def normalize_url(url: str, where: str = "endpoint") -> str:
    """``http://host:port`` without a trailing slash; raises EndpointError naming ``where`` otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise EndpointError(f"{where}: expected a URL like http://10.0.0.5:8000, got {url!r}")
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"{where}: expected a URL like http://10.0.0.5:8000, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise EndpointError(f"{where}: bad port in {url!r}") from None
    if parts.path not in ("",):
        raise EndpointError(f"{where}: give the server's base URL without a path, got {url!r}")
    return text


@dataclass
class Endpoint:
    """One upstream server and the proxy's running account of what it has been given."""

    url: str
    role: str
    listed: bool = True  # present in the source
    source_ready: bool = True  # the source says ready (Kubernetes readiness; flags and files: always)
    health: str = UNKNOWN
    outstanding_tokens: int = 0
    in_flight: int = 0
    served: int = 0  # requests handed to it, for tests and logs

    @property
    def routable(self) -> bool:
        return self.listed and self.source_ready and self.health == READY


@dataclass
class Lease:
    """A request's hold on an endpoint: tokens charged at pick time, released (or decremented) as it runs."""

    endpoint: Endpoint
    tokens: int
    released: bool = field(default=False)

    def consume(self, tokens: int) -> None:
        """Some of the charged work is done (a decode token streamed): it no longer counts as outstanding."""
        if self.released or tokens <= 0:
            return
        done = min(tokens, self.tokens)
        self.tokens -= done
        self.endpoint.outstanding_tokens -= done

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.endpoint.outstanding_tokens -= self.tokens
        self.endpoint.in_flight -= 1
        self.tokens = 0


class EndpointPool:
    """The endpoints of one role. Not thread-safe: the proxy's event loop is its only user."""

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.role = role
        self._endpoints: dict[str, Endpoint] = {}

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(list(self._endpoints.values()))

    def __len__(self) -> int:
        return len(self._endpoints)

    def get(self, url: str) -> Endpoint | None:
        return self._endpoints.get(url)

    def update(self, listed: Mapping[str, bool]) -> list[Endpoint]:
        """Make the listed set ``{url: source_ready}``; returns the endpoints that are new (to probe at once)."""
        new: list[Endpoint] = []
        for url, ready in listed.items():
            ep = self._endpoints.get(url)
            if ep is None:
                ep = Endpoint(url=url, role=self.role, source_ready=ready)
                self._endpoints[url] = ep
                new.append(ep)
            else:
                ep.listed = True
                ep.source_ready = ready
        for url, ep in list(self._endpoints.items()):
            if url not in listed:
                ep.listed = False
        self.forget_unlisted()
        return new

    def forget_unlisted(self) -> None:
        for url, ep in list(self._endpoints.items()):
            if not ep.listed and ep.in_flight == 0:
                del self._endpoints[url]

    def routable(self) -> list[Endpoint]:
        return [ep for ep in self._endpoints.values() if ep.routable]

    def pick(self, tokens: int, exclude: Iterable[str] = ()) -> Lease | None:
        """Lease the least-loaded routable endpoint not in ``exclude``, charging it ``tokens``; None if none."""
        skip = set(exclude)
        candidates = [ep for ep in self._endpoints.values() if ep.routable and ep.url not in skip]
        if not candidates:
            return None
        best = min(candidates, key=lambda ep: (ep.outstanding_tokens, ep.in_flight, ep.url))
        best.outstanding_tokens += tokens
        best.in_flight += 1
        best.served += 1
        return Lease(best, tokens)

    def counts(self) -> dict[str, int]:
        """Endpoints per health state (listed ones only; ``unready`` when the source holds them back)."""
        out = {state: 0 for state in (*HEALTH_STATES, "unready")}
        for ep in self._endpoints.values():
            if ep.listed:
                out[ep.health if ep.source_ready else "unready"] += 1
        return out


# ---------------------------------------------------------------------------------------------------------------
# Sources


def static_snapshot(prefill: Iterable[str], decode: Iterable[str]) -> Snapshot:
    """Endpoints given as flags: always listed, readiness from health probes alone."""
    return {
        PREFILL: {normalize_url(u, "--prefill"): True for u in prefill},
        DECODE: {normalize_url(u, "--decode"): True for u in decode},
    }


def parse_endpoints_document(data: object, where: str) -> Snapshot:
    """``{"prefill": [url, ...], "decode": [url, ...]}`` (either list may be absent or empty; ``aggregated`` is an
    alias of ``decode``). Each entry is a URL string or ``{"url": URL, "ready": bool}``."""
    if not isinstance(data, Mapping):
        raise EndpointError(
            f"{where}: expected a mapping with prefill/decode lists, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - {PREFILL, DECODE, "aggregated"})
    if unknown:
        raise EndpointError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: prefill, decode)"
        )
    if DECODE in data and "aggregated" in data:
        raise EndpointError(f"{where}: give decode or aggregated, not both")
    out: Snapshot = {PREFILL: {}, DECODE: {}}
    for key in (PREFILL, DECODE, "aggregated"):
        items = data.get(key) or []
        role = PREFILL if key == PREFILL else DECODE
        if not isinstance(items, list):
            raise EndpointError(f"{where}.{key}: expected a list of URLs, got {type(items).__name__}")
        for i, item in enumerate(items):
            here = f"{where}.{key}[{i}]"
            ready = True
            if isinstance(item, Mapping):
                ready_value = item.get("ready", True)
                if not isinstance(ready_value, bool):
                    raise EndpointError(f"{here}.ready: expected true or false, got {ready_value!r}")
                ready = ready_value
                item = item.get("url")
            out[role][normalize_url(item, here)] = ready
    return out


def read_endpoints_file(path: Path) -> Snapshot:
    """Read and parse an endpoints file (JSON, or YAML when PyYAML parses it and JSON does not)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EndpointError(f"{path}: neither JSON nor YAML: {exc}") from None
    return parse_endpoints_document(data if data is not None else {}, str(path))


class EndpointsFileWatcher:
    """Polls a file's (mtime, size, inode) and re-reads it when they change.

    A file that vanishes or does not parse keeps the last good snapshot (a writer caught mid-write, or a typo,
    must not empty the pool); the error is logged once per change. Writers should replace the file atomically
    (write a temp file, then rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int, int] | None = None
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None

    def poll(self) -> Snapshot | None:
        """The new snapshot when the file changed and parsed, else None."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._note_error(f"{self.path}: no such endpoints file (keeping the last endpoints)")
            return None
        stamp = (st.st_mtime, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            snap = read_endpoints_file(self.path)
        except (OSError, UnicodeDecodeError, EndpointError) as exc:
            self._note_error(f"{exc} (keeping the last endpoints)")
            return None
        self.last_error = None
        self.snapshot = snap
        return snap

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message


# ---------------------------------------------------------------------------------------------------------------
# Request size, for least-outstanding-tokens picking


def prompt_tokens_of(body: Mapping[str, object]) -> int:
    """Prompt size of a completions or chat request body: exact for token-id prompts; text is counted by the
    emulated worker's rule (``workers/tokens.py``), an estimate for a real tokenizer, which is all that picking
    the least-loaded endpoint needs."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        total = 0
        for p in prompt:  # a batch of prompts
            if isinstance(p, list):
                total += len(p)
            elif isinstance(p, str):
                total += count_text_tokens(p)
        return max(total, 1)
    if isinstance(prompt, str):
        return max(count_text_tokens(prompt), 1)
    messages = body.get("messages")
    if isinstance(messages, list):
        return max(chat_prompt_tokens([m for m in messages if isinstance(m, Mapping)]), 1)
    return 1


def max_output_tokens_of(body: Mapping[str, object], default: int = 256) -> int:
    """The request's output budget (max_completion_tokens, else max_tokens, else ``default``)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default

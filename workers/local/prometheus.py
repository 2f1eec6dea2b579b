"""The real Prometheus server (Debian's ``prometheus`` binary) on a free loopback port, for integration tests.

Config is generated: static targets per job, file_sd jobs whose target files a test rewrites, or raw scrape
configs. Storage lives in a temporary directory that survives ``stop()``/``start()``, so a test can take
Prometheus down mid-run and bring it back with its data and on the same URL.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from workers.local.net import LOOPBACK, free_port, wait_http_ok
from workers.local.processes import ManagedProcess, ProcessRunner

MISSING_BINARY = (
    "the `prometheus` binary is not on PATH; integration tests run the real server. "
    "Install it with scripts/ensure-prometheus.sh (or `make prometheus`)."
)


class PrometheusMissingError(RuntimeError):
    pass


class PrometheusQueryError(RuntimeError):
    pass


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise PrometheusMissingError(MISSING_BINARY)
    return path


def require_prometheus() -> None:
    """Fail the calling test (never skip it) when the prometheus binary is missing."""
    import pytest

    try:
        prometheus_binary()
    except PrometheusMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


def _selector(job_or_target: str) -> str:
    """``host:port`` selects an instance, anything else a job."""
    label = "instance" if ":" in job_or_target else "job"
    return f'{{{label}="{job_or_target}"}}'


class PrometheusServer:
    """One Prometheus process. Create through the ``prometheus`` fixture, which also stops it at teardown."""

    def __init__(
        self,
        runner: ProcessRunner,
        workdir: Path,
        *,
        static_targets: Mapping[str, Sequence[str]] | None = None,
        file_sd: Iterable[str] = (),
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float | None = None,
        extra_args: Sequence[str] = (),
        web_config: Mapping[str, Any] | None = None,
        rule_files: Sequence[Path] = (),
        client_context: ssl.SSLContext | None = None,
        client_headers: Mapping[str, str] | None = None,
    ) -> None:
        """``web_config``: Prometheus' ``--web.config.file`` (TLS, basic auth); the URL is then https when it
        has ``tls_server_config``, and the fixture's own requests use ``client_context``/``client_headers``."""
        self.runner = runner
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_path = workdir / "tsdb"
        self.config_path = workdir / "prometheus.yml"
        self.file_sd_dir = workdir / "file_sd"
        self.scrape_interval_s = scrape_interval_s
        self.port = free_port()
        scheme = "https" if web_config and "tls_server_config" in web_config else "http"
        self.url = f"{scheme}://{LOOPBACK}:{self.port}"
        self.extra_args = list(extra_args)
        self.client_context = client_context
        self.client_headers = dict(client_headers or {})
        if web_config is not None:
            web_path = workdir / "web.yml"
            web_path.write_text(yaml.safe_dump(dict(web_config), sort_keys=False))
            self.extra_args.append(f"--web.config.file={web_path}")
        self.process: ManagedProcess | None = None

        interval = _duration(scrape_interval_s)
        jobs: list[dict[str, Any]] = []
        for job, targets in (static_targets or {}).items():
            jobs.append({"job_name": job, "static_configs": [{"targets": list(targets)}]})
        for job in file_sd:
            self.file_sd_dir.mkdir(exist_ok=True)
            self.set_file_sd_targets(job, [])
            jobs.append(
                {"job_name": job, "file_sd_configs": [{"files": [str(self._file_sd_path(job))], "refresh_interval": "1s"}]}
            )
        jobs.extend(dict(c) for c in scrape_configs)
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": _duration(min(scrape_interval_s, 10.0)),
                "evaluation_interval": _duration(evaluation_interval_s or scrape_interval_s),
            },
            "scrape_configs": jobs,
        }
        if rule_files:
            config["rule_files"] = [str(path) for path in rule_files]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self, ready_timeout_s: float = 30.0) -> PrometheusServer:
        """Start (or restart after ``stop``) on the same port and storage; returns once /-/ready answers."""
        if self.process is not None and self.process.running:
            raise RuntimeError(f"prometheus at {self.url} is already running (pid {self.process.pid})")
        argv = [
            prometheus_binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage_path}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            *self.extra_args,
        ]
        self.process = self.runner.start(argv, name="prometheus", cwd=self.workdir)
        proc = self.process
        try:
            wait_http_ok(f"{self.url}/-/ready", ready_timeout_s, alive=lambda: proc.running,
                         context=self.client_context, headers=self.client_headers)
        except (TimeoutError, RuntimeError) as exc:
            tail = proc.tail(30)
            proc.stop()
            raise RuntimeError(f"prometheus did not become ready: {exc}\n--- {proc.log_path} ---\n{tail}") from exc
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM, SIGKILL after ``timeout_s``). Safe to call when already stopped."""
        if self.process is not None:
            self.process.stop(timeout_s)

    def kill(self) -> None:
        """Crash it (SIGKILL): the WAL is replayed on the next ``start``."""
        if self.process is not None:
            self.process.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def reload(self) -> None:
        """Re-read the config file (POST /-/reload)."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST", headers=self.client_headers)
        with urllib.request.urlopen(req, timeout=10.0, context=self.client_context) as resp:
            if resp.status != 200:
                raise PrometheusQueryError(f"reload failed: HTTP {resp.status}")

    # ---- targets ---------------------------------------------------------------------------------------
    def _file_sd_path(self, job: str) -> Path:
        return self.file_sd_dir / f"{job}.json"

    def set_file_sd_targets(
        self, job: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
    ) -> None:
        """Atomically rewrite the file_sd file of ``job`` (Prometheus notices the change within ~1 s)."""
        path = self._file_sd_path(job)
        if not self.file_sd_dir.exists():
            raise ValueError(f"job {job!r} was not declared with file_sd=[...]")
        groups = [{"targets": list(targets), "labels": dict(labels or {})}] if targets else []
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, path)

    def targets(self) -> list[dict[str, Any]]:
        """Active targets as /api/v1/targets reports them (scrapeUrl, health, lastError, labels, ...)."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return list(data["activeTargets"])

    # ---- queries ---------------------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            request = urllib.request.Request(url, headers=self.client_headers)
            with urllib.request.urlopen(request, timeout=10.0, context=self.client_context) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{path} {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at_s: float | None = None) -> list[dict[str, Any]]:
        """Instant query. Vector results as returned ({"metric": {...}, "value": [t, "v"]}); a scalar is
        wrapped as one result with empty labels."""
        params = {"query": promql}
        if at_s is not None:
            params["time"] = repr(at_s)
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] != "vector":
            raise PrometheusQueryError(f"{promql!r} returned a {data['resultType']}, expected an instant vector")
        return list(data["result"])

    def query_value(self, promql: str, at_s: float | None = None) -> float | None:
        """The single value of an instant query as a float (NaN and ±Inf parsed), None when empty."""
        result = self.query(promql, at_s)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusQueryError(f"{promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for_scrapes(
        self, job_or_target: str, n: int = 1, timeout_s: float = 30.0, *, fresh: bool = True, successful: bool = True
    ) -> int:
        """Wait until every target of the job (or the ``host:port`` instance) has ``n`` scrapes; return the count.

        ``fresh`` counts only scrapes that STARTED after this call, so they read what the exporter held at the
        call (data changed just before is in Prometheus once this returns); otherwise every scrape of the last
        hour counts. ``successful`` counts up == 1 only (else failed scrapes count too).
        """
        func = "sum_over_time" if successful else "count_over_time"
        selector = _selector(job_or_target)
        t0 = time.time()
        deadline = time.monotonic() + timeout_s
        seen: float | None = None
        while True:
            now = time.time()
            window = _duration(max(now - t0, 0.001)) if fresh else "1h"
            seen = self.query_value(f"min({func}(up{selector}[{window}]))", at_s=now)
            if seen is not None and not math.isnan(seen) and seen >= n:
                return int(seen)
            if time.monotonic() > deadline:
                break
            time.sleep(min(0.2, self.scrape_interval_s / 4))
        raise TimeoutError(
            f"{job_or_target}: {0 if seen is None else seen:.0f} of {n} scrapes after {timeout_s} s; "
            f"targets: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in self.targets()]}"
        )


def _duration(seconds: float) -> str:
    """Prometheus duration string; milliseconds keep sub-second intervals exact."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"duration must be positive, got {seconds} s")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"

"""Fixtures shared by every test tier: free ports, managed subprocesses, the real Prometheus, exporters.

Fixtures (classes in tests/helpers/, importable as ``tests.helpers.<module>``):

  free_tcp_port -> int                 a free TCP port on 127.0.0.1 (function: workers.local.net.free_port())
  process_runner -> ProcessRunner      .start(argv, *, name=None, env=None, cwd=None) -> ManagedProcess
                                       (.pid .running .returncode .log_path .output() .tail(n) .stop(timeout_s=10)
                                       .kill() .wait(timeout_s)); stdout+stderr go to a file; every process is
                                       SIGTERMed, then SIGKILLed, at teardown; log tails are printed on failure
  prometheus(...) -> PrometheusServer  factory, function scope; module_prometheus: same, shared by a module.
      keyword args: static_targets={job: ["127.0.0.1:PORT", ...]}, file_sd=[job, ...],
      scrape_configs=[raw Prometheus scrape_config dicts], scrape_interval_s=1.0, evaluation_interval_s=None,
      extra_args=[prometheus flags], start=True.  Fails (no skip) naming scripts/ensure-prometheus.sh when
      the binary is missing.  Server API: .url .port .storage_path .config_path .running
      .start(ready_timeout_s=30) .stop(timeout_s=10) .kill() .reload()
      .query(promql, at_s=None) -> list[{"metric": {...}, "value": [t, "v"]}]
      .query_value(promql, at_s=None) -> float | None (one series; NaN/Inf parsed)
      .wait_for_scrapes(job_or_"host:port", n=1, timeout_s=30, *, fresh=True, successful=True) -> int
      .set_file_sd_targets(job, targets, labels=None)  .targets() -> /api/v1/targets activeTargets
      Storage and port survive stop()/kill()/start(). Prometheus 2.42 scrapes a target ~5 s after a (re)start
      or a file_sd change (its discovery updates are throttled to 5 s); later scrapes follow the interval.
  metrics_exporter(registry) -> MetricsExporter   prometheus_client's own HTTP server for a CollectorRegistry
                                       on 127.0.0.1 (.target "127.0.0.1:PORT", .url, .port, .stop());
                                       module_metrics_exporter: module scope
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

# Make `tests.helpers` importable however pytest was started (no tests/__init__.py; rootdir-relative).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.helpers.exporter import MetricsExporter  # noqa: E402
from workers.local.net import free_port  # noqa: E402
from workers.local.processes import ProcessRunner  # noqa: E402
from workers.local.prometheus import PrometheusMissingError, PrometheusServer, prometheus_binary  # noqa: E402

PrometheusFactory = Callable[..., PrometheusServer]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report on the item so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"_report_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()


def _runner_fixture(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[ProcessRunner]:
    runner = ProcessRunner(log_dir)
    try:
        yield runner
    finally:
        runner.stop_all()
        if runner.processes and _failed(request):
            print(f"\nsubprocess logs ({log_dir}):\n{runner.report()}")


@pytest.fixture
def process_runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessRunner]:
    yield from _runner_fixture(request, tmp_path / "proc-logs")


def _prometheus_factory(runner: ProcessRunner, base: Path) -> tuple[PrometheusFactory, list[PrometheusServer]]:
    servers: list[PrometheusServer] = []

    def make(
        *,
        static_targets: Mapping[str, Sequence[str]] | None = None,
        file_sd: Sequence[str] = (),
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float | None = None,
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> PrometheusServer:
        try:
            prometheus_binary()
        except PrometheusMissingError as exc:
            pytest.fail(str(exc), pytrace=False)
        server = PrometheusServer(
            runner,
            base / f"prometheus-{len(servers)}",
            static_targets=static_targets,
            file_sd=file_sd,
            scrape_configs=scrape_configs,
            scrape_interval_s=scrape_interval_s,
            evaluation_interval_s=evaluation_interval_s,
            extra_args=extra_args,
        )
        servers.append(server)
        return server.start() if start else server

    return make, servers


@pytest.fixture
def prometheus(process_runner: ProcessRunner, tmp_path: Path) -> Iterator[PrometheusFactory]:
    """``prometheus(static_targets={"job": ["127.0.0.1:PORT"]}, file_sd=["job2"], scrape_interval_s=1.0)``."""
    make, servers = _prometheus_factory(process_runner, tmp_path)
    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def module_prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusFactory]:
    """Like ``prometheus`` but the servers live for the whole test module (one start, many tests)."""
    base = tmp_path_factory.mktemp("module-prometheus")
    runner = ProcessRunner(base / "proc-logs")
    make, servers = _prometheus_factory(runner, base)
    try:
        yield make
    finally:
        for server in servers:
            server.stop()
        runner.stop_all()


def _exporter_factory() -> tuple[Callable[[CollectorRegistry], MetricsExporter], list[MetricsExporter]]:
    exporters: list[MetricsExporter] = []

    def make(registry: CollectorRegistry) -> MetricsExporter:
        exporter = MetricsExporter(registry)
        exporters.append(exporter)
        return exporter

    return make, exporters


@pytest.fixture
def metrics_exporter() -> Iterator[Callable[[CollectorRegistry], MetricsExporter]]:
    """``metrics_exporter(registry)`` serves a prometheus_client registry on a free loopback port."""
    make, exporters = _exporter_factory()
    try:
        yield make
    finally:
        for exporter in exporters:
            exporter.stop()


@pytest.fixture(scope="module")
def module_metrics_exporter() -> Iterator[Callable[[CollectorRegistry], MetricsExporter]]:
    make, exporters = _exporter_factory()
    try:
        yield make
    finally:
        for exporter in exporters:
            exporter.stop()

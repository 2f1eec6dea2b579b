"""The monitoring overlay for real: the generated files are current; ``promtool check rules`` accepts the
PrometheusRule's groups and ``promtool test rules`` shows each alert firing when it should (and not before);
and against a real Prometheus -- scraping vLLM-format workers and a proxy (tests/helpers/vllm_exporter.py) and a
running ``pdscale run`` -- every recording rule and every dashboard query executes without error and returns
data, and each alert expression is non-empty exactly in the situation it describes.

Emulated data: the known-distribution exporter, until ``pdscale worker``/``pdscale proxy`` land in main."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import wait_for
from tests.helpers.live import DEPLOYMENT, export_model, put_autoscaler
from tests.helpers.vllm_exporter import VllmExporter
from workers.local.kube_emulator import KubeEmulator
from workers.local.net import free_port, wait_http_ok
from workers.local.processes import ProcessRunner
from workers.local.prometheus import PrometheusServer, require_prometheus

ROOT = Path(__file__).resolve().parents[2]
NS = "mon"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_monitoring", ROOT / "scripts" / "gen_monitoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
RULE = yaml.safe_load(GEN.RULE_FILE.read_text())
BOARD = json.loads(GEN.DASHBOARD_FILE.read_text())
RECORDS = [r for g in RULE["spec"]["groups"] for r in g["rules"] if "record" in r]
ALERTS = {r["alert"]: r for g in RULE["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_generated_files_are_current() -> None:
    for path, text in GEN.rendered().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run scripts/gen_monitoring.py"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not on PATH: it ships with Debian's prometheus (scripts/ensure-prometheus.sh)",
                    pytrace=False)
    return path


def _rules_file(folder: Path, *, interval: str | None = None) -> Path:
    groups = copy.deepcopy(RULE["spec"]["groups"])
    for group in groups:
        if interval:
            group["interval"] = interval
    path = folder / "pdscale-rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=100_000))
    return path


def test_promtool_check_rules(tmp_path: Path) -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(_rules_file(tmp_path))], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(RECORDS) + len(ALERTS)} rules found" in proc.stdout


def _expected(name: str, labels: dict[str, str]) -> dict[str, Any]:
    rule = ALERTS[name]
    annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v)
                   for k, v in rule["annotations"].items()}
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def test_promtool_alert_unit_tests(tmp_path: Path) -> None:
    """Synthetic controller series, one minute apart: each alert pending until its ``for`` has passed, then
    firing with its labels and rendered annotations."""
    a = {"autoscaler": "llm/a"}
    tests = [{
        "interval": "1m",
        "input_series": [
            # ticks every minute for 10 minutes, then stops
            {"series": 'pdscale_last_successful_tick_timestamp_seconds{pod="c0"}', "values": "0+60x10 600x20"},
            {"series": 'pdscale_leader{pod="c0"}', "values": "1x10 0x20"},
            {"series": 'pdscale_decisions_total{autoscaler="llm/a",pool="decode",reason="MetricsUnavailable"}',
             "values": "0+4x30"},
            {"series": 'pdscale_decisions_total{autoscaler="llm/a",pool="prefill",reason="CappedByBudget"}',
             "values": "0+4x30"},
            {"series": 'pdscale_errors_total{kind="scale"}', "values": "0x10 1+1x20"},
            {"series": 'pdscale_observed_latency_seconds{autoscaler="llm/a",signal="ttft"}', "values": "2x30"},
            {"series": 'pdscale_slo_target_seconds{autoscaler="llm/a",signal="ttft",quantile="0.99"}',
             "values": "1x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "PdscaleControllerNotTicking", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "PdscaleControllerNotTicking",
             "exp_alerts": [_expected("PdscaleControllerNotTicking", {})]},
            {"eval_time": "5m", "alertname": "PdscaleNoLeader", "exp_alerts": []},
            {"eval_time": "14m", "alertname": "PdscaleNoLeader", "exp_alerts": [_expected("PdscaleNoLeader", {})]},
            {"eval_time": "5m", "alertname": "PdscaleMetricsUnavailable", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "PdscaleMetricsUnavailable",
             "exp_alerts": [_expected("PdscaleMetricsUnavailable", {**a, "pool": "decode"})]},
            {"eval_time": "8m", "alertname": "PdscaleFailedRescale", "exp_alerts": []},
            {"eval_time": "13m", "alertname": "PdscaleFailedRescale",
             "exp_alerts": [_expected("PdscaleFailedRescale", {})]},
            {"eval_time": "3m", "alertname": "PdscaleSLOBreached", "exp_alerts": []},
            {"eval_time": "7m", "alertname": "PdscaleSLOBreached",
             "exp_alerts": [_expected("PdscaleSLOBreached", {**a, "signal": "ttft"})]},
            {"eval_time": "10m", "alertname": "PdscaleCappedByBudget", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "PdscaleCappedByBudget",
             "exp_alerts": [_expected("PdscaleCappedByBudget", {**a, "pool": "prefill"})]},
        ],
    }]
    rules = _rules_file(tmp_path)
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests},
                                        sort_keys=False, width=100_000))
    proc = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    covered = {t["alertname"] for t in tests[0]["alert_rule_test"]}
    assert covered == set(ALERTS)


# ---------------------------------------------------------------- live: a real Prometheus and pdscale run


@dataclass
class Live:
    prometheus: PrometheusServer
    kube: KubeEmulator


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    require_prometheus()
    base = tmp_path_factory.mktemp("monitoring")
    runner = ProcessRunner(base / "proc-logs")
    metrics_port = free_port()
    with KubeEmulator() as kube, VllmExporter() as exporter:
        # SLO breached and scaled; no series at all (MetricsUnavailable); held by its GPU budget; /scale failing
        export_model(exporter, NS, "m-slo", ttft_s=2.5, itl_s=0.03)
        export_model(exporter, NS, "m-capped", ttft_s=2.5, itl_s=0.2)
        export_model(exporter, NS, "m-failing", ttft_s=2.5, itl_s=0.03)
        for name in ("slo", "nodata", "capped", "failing"):
            kube.add_deployment(NS, f"{name}-p", 2)
            kube.add_deployment(NS, f"{name}-d", 2)
            extra: dict[str, Any] = {"gpuBudget": 4} if name == "capped" else {}
            put_autoscaler(kube, NS, name, (*DEPLOYMENT, f"{name}-p"), (*DEPLOYMENT, f"{name}-d"), f"m-{name}",
                           **extra)
        kube.add_fault("PATCH", rf"/namespaces/{NS}/deployments/failing-p/scale$", status=500, times=1_000_000)
        prometheus = PrometheusServer(
            runner, base / "prometheus", scrape_interval_s=0.5,
            static_targets={"vllm": [exporter.target], "pdscale": [f"127.0.0.1:{metrics_port}"]},
            rule_files=[_rules_file(base, interval="1s")], evaluation_interval_s=1.0,
        )
        try:
            prometheus.start()
            prometheus.wait_for_scrapes("vllm", 4, timeout_s=30)
            runner.start([sys.executable, "-m", "autoscaler.cli", "run", "-n", NS, "--kubeconfig",
                          str(kube.kubeconfig(base / "kubeconfig")), "--prometheus-url", prometheus.url,
                          "--tick-s", "0.5", "--metrics-port", str(metrics_port), "--lease-namespace", NS,
                          "--lease-duration-s", "3", "--kube-timeout-s", "1", "--identity", "monitoring-test"],
                         name="pdscale")
            controller = runner.processes[-1]
            wait_http_ok(f"http://127.0.0.1:{metrics_port}/metrics", 30, alive=lambda: controller.running)
            prometheus.wait_for_scrapes("pdscale", 6, timeout_s=30)
            yield Live(prometheus, kube)
        finally:
            runner.stop_all()


def _query(live: Live, expr: str) -> list[dict[str, Any]]:
    return live.prometheus.query(expr)


def _dashboard_expr(expr: str) -> str:
    return expr.replace("$autoscaler", ".*").replace("$__rate_interval", "30s")


@pytest.mark.parametrize("rule", RECORDS, ids=[r["record"] for r in RECORDS])
def test_recording_rule_has_data(live: Live, rule: dict[str, str]) -> None:
    assert _query(live, rule["expr"]), rule["expr"]
    wait_for(lambda: _query(live, rule["record"]), 15, f"recorded series {rule['record']}")


@pytest.mark.parametrize(("title", "expr"), GEN.dashboard_expressions(BOARD),
                         ids=[f"{t}: {e[:40]}" for t, e in GEN.dashboard_expressions(BOARD)])
def test_dashboard_query_has_data(live: Live, title: str, expr: str) -> None:
    result = wait_for(lambda: _query(live, _dashboard_expr(expr)), 20, f"data for {title!r}: {expr}")
    assert result


def test_dashboard_variable_lists_the_autoscalers(live: Live) -> None:
    names = {r["metric"]["autoscaler"] for r in _query(live, "group by (autoscaler) (pdscale_desired_replicas)")}
    assert names == {f"{NS}/{n}" for n in ("slo", "nodata", "capped", "failing")}


@pytest.mark.parametrize(
    ("alert", "firing_for"),
    [
        ("PdscaleSLOBreached", {f"{NS}/slo", f"{NS}/capped", f"{NS}/failing"}),
        ("PdscaleMetricsUnavailable", {f"{NS}/nodata"}),
        ("PdscaleCappedByBudget", {f"{NS}/capped"}),
        ("PdscaleFailedRescale", None),
        ("PdscaleControllerNotTicking", set()),  # it ticks
        ("PdscaleNoLeader", set()),  # it leads
    ],
)
def test_alert_expression_matches_the_situation(live: Live, alert: str, firing_for: set[str] | None) -> None:
    expr = ALERTS[alert]["expr"]
    if firing_for == set():
        time.sleep(1.0)
        assert _query(live, expr) == [], expr
        return
    result = wait_for(lambda: _query(live, expr), 20, f"{alert} to be active: {expr}")
    if firing_for is not None:
        wait_for(lambda: {r["metric"].get("autoscaler") for r in _query(live, expr)} >= firing_for, 20,
                 f"{alert} for {sorted(firing_for)}")
        assert {r["metric"].get("autoscaler") for r in _query(live, expr)} <= firing_for | {None}
    else:
        assert result

"""The monitoring overlay for real: the generated files are current; ``promtool check rules`` accepts the
PrometheusRule's groups and ``promtool test rules`` shows each alert firing when it should (and not before);
and against real pdscale components -- ``workers.local.cluster.LocalCluster`` (what ``pdscale up`` starts: one
prefill and one decode ``pdscale worker`` pod run by the pod runner, scraped through the PodMonitor's
relabelling, ``pdscale proxy`` in front of them, a real Prometheus loading the PrometheusRule's groups, ``pdscale
run``) under traffic from ``pdscale loadgen``'s client -- every recording rule, every dashboard query and every
alert expression executes without error and returns data.

No hand-set series: every value comes from a process serving requests or from the controller deciding on them.
The alert situations are made real: the SLO targets are set below what the workers can serve and the GPU budget
to the two running pods (SLO breached, capped by budget); a second autoscaler selects a model nobody serves
(metrics unavailable); a third one's /scale writes fail (failed rescale, injected by the Kubernetes emulator).
The scale targets of those two are LeaderWorkerSets, which the pod runner does not run: they have no pods here."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import wait_for
from tests.helpers.live import put_autoscaler
from workers.local.cluster import ClusterSpec, LocalCluster
from workers.local.kube_emulator import CR
from workers.local.load import LoadProcess
from workers.local.prometheus import require_prometheus

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


# ---------------------------------------------------------------- live: real workers, proxy, Prometheus, pdscale run

LWS = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
SPEC = ClusterSpec(
    namespace=NS, model="m", startup_s=1.0, tick_s=1.0, scrape_s=0.5, window_s=4.0, lease_s=3.0, controllers=1,
    probe_period_s=0.25, pre_stop_s=1, grace_s=10, max_replicas=4,
    # below what the workers serve: the SLO is breached and the controller wants more pods than the budget allows
    ttft_target_s=0.001, itl_target_s=0.0001, autoscaler={"gpuBudget": 2},
)  # fmt: skip
# light and steady: requests in every rate window for the whole module (teardown stops it)
TRAFFIC = "poisson:rate=2,duration=600,prompt=const(128),output=const(16)"
MAIN, NODATA, FAILING = f"{NS}/m", f"{NS}/nodata", f"{NS}/failing"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_prometheus()
    base = tmp_path_factory.mktemp("monitoring")
    spec = dataclasses.replace(SPEC, rule_files=[str(_rules_file(base, interval="1s"))])
    cluster = LocalCluster(spec, base / "cluster")
    cluster.start(wait_ready_s=60.0)
    try:
        kube = cluster.kube
        for name, replicas in (("nodata-p", 1), ("nodata-d", 1), ("failing-p", 1), ("failing-d", 1)):
            kube.add_deployment(NS, name, replicas, kind=LWS[1])
        put_autoscaler(kube, NS, "nodata", (*LWS, "nodata-p"), (*LWS, "nodata-d"), "served-by-nobody")
        # below its minReplicas: the controller writes 2 to /scale, and every write fails
        kube.add_fault("PATCH", rf"/namespaces/{NS}/leaderworkersets/failing-p/scale$", status=500, times=1_000_000)
        put_autoscaler(kube, NS, "failing", (*LWS, "failing-p"), (*LWS, "failing-d"), "served-by-nobody")
        failing = kube.get(CR, NS, "failing")
        assert failing is not None
        failing["spec"]["prefill"]["minReplicas"] = 2
        kube.put(CR, failing)
        LoadProcess(cluster.runner, base, url=cluster.proxy_url, model=spec.model, generator=TRAFFIC)
        yield cluster
    finally:
        cluster.stop()


def _query(live: LocalCluster, expr: str) -> list[dict[str, Any]]:
    assert live.prometheus is not None
    return live.prometheus.query(expr)


def _finite(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with a number (histogram_quantile over a pool that saw no such samples is NaN, e.g. the prefill
    pool's ITL: a prefill worker emits one token per request)."""
    return [r for r in rows if math.isfinite(float(r["value"][1]))]


def _dashboard_expr(expr: str) -> str:
    return expr.replace("$autoscaler", ".*").replace("$__rate_interval", "30s")


def test_pods_are_labelled_by_role_as_the_podmonitor_does(live: LocalCluster) -> None:
    """The vLLM series carry ``role`` (from the pod label pdscale.io/role), ``namespace`` and ``pod`` of the pods
    the pod runner runs; the proxy's series are scraped too."""
    pods = {p["metadata"]["name"] for p in live.kube.list("v1/pods", NS)}
    query = f'vllm:num_requests_running{{namespace="{NS}"}}'
    wait_for(lambda: {r["metric"]["role"] for r in _query(live, query)} == {"prefill", "decode"}, 20,
             "series of both pools")
    rows = _query(live, query)
    assert {r["metric"]["pod"] for r in rows} <= pods
    assert {r["metric"]["job"] for r in rows} == {"pdscale-system/pdscale-vllm"}  # the Operator's job label
    wait_for(lambda: _finite(_query(live, f'pdscale_proxy_requests_total{{namespace="{NS}",outcome="ok"}} > 0')),
             30, "requests through the proxy")


@pytest.mark.parametrize("rule", RECORDS, ids=[r["record"] for r in RECORDS])
def test_recording_rule_has_data(live: LocalCluster, rule: dict[str, str]) -> None:
    wait_for(lambda: _finite(_query(live, rule["expr"])), 30, f"a value of {rule['expr']}")
    wait_for(lambda: _finite(_query(live, rule["record"])), 15, f"recorded series {rule['record']}")


@pytest.mark.parametrize(("title", "expr"), GEN.dashboard_expressions(BOARD),
                         ids=[f"{t}: {e[:40]}" for t, e in GEN.dashboard_expressions(BOARD)])
def test_dashboard_query_has_data(live: LocalCluster, title: str, expr: str) -> None:
    wait_for(lambda: _finite(_query(live, _dashboard_expr(expr))), 30, f"data for {title!r}: {expr}")


def test_dashboard_variable_lists_the_autoscalers(live: LocalCluster) -> None:
    query = BOARD["templating"]["list"][1]["definition"]
    assert query == "label_values(pdscale_desired_replicas, autoscaler)"
    wait_for(lambda: {r["metric"]["autoscaler"] for r in _query(live, "group by (autoscaler) (pdscale_desired_replicas)")}
             == {MAIN, NODATA, FAILING}, 30, "the three autoscalers in pdscale_desired_replicas")  # fmt: skip


@pytest.mark.parametrize(
    ("alert", "firing_for", "may_also"),
    [
        ("PdscaleSLOBreached", {MAIN}, set()),  # targets below what the workers serve
        ("PdscaleCappedByBudget", {MAIN}, set()),  # gpuBudget 2 = the two running pods
        # their selector matches no series; the main autoscaler too for its first ticks, before traffic reached
        # its window (the rate over 2m remembers them)
        ("PdscaleMetricsUnavailable", {NODATA, FAILING}, {MAIN}),
        ("PdscaleFailedRescale", {None}, set()),  # failing-p's /scale answers 500 (a sum: no autoscaler label)
    ],
)
def test_alert_expression_is_active_in_its_situation(live: LocalCluster, alert: str, firing_for: set[str | None],
                                                     may_also: set[str]) -> None:  # fmt: skip
    expr = ALERTS[alert]["expr"]
    seen: list[set[str | None]] = []

    def active_for() -> bool:
        rows = _finite(_query(live, expr))
        seen.append({r["metric"].get("autoscaler") for r in rows})
        return firing_for <= seen[-1] <= firing_for | may_also

    try:
        wait_for(active_for, 30, f"{alert} active for {sorted(map(str, firing_for))}: {expr}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last active for {seen[-1]}") from None


# Alerts that are empty by design while the controller is healthy (it ticks and leads here): the whole expression
# is checked empty, and its inner expression -- the value the threshold is applied to -- non-empty and healthy.
@pytest.mark.parametrize(
    ("alert", "inner", "healthy"),
    [
        ("PdscaleControllerNotTicking", "time() - max(pdscale_last_successful_tick_timestamp_seconds)",
         lambda v: 0 <= v < 30),
        ("PdscaleNoLeader", "max(pdscale_leader)", lambda v: v == 1),
    ],
)  # fmt: skip
def test_healthy_alert_is_empty_and_its_inner_expression_has_data(live: LocalCluster, alert: str, inner: str,
                                                                   healthy: Any) -> None:  # fmt: skip
    expr = ALERTS[alert]["expr"]
    assert inner in expr, f"{alert}: {inner!r} is no longer part of {expr!r}"
    rows = wait_for(lambda: _finite(_query(live, inner)), 30, f"{alert}'s inner expression {inner}")
    assert healthy(float(rows[0]["value"][1])), rows
    assert _query(live, expr) == [], expr

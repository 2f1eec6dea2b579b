"""Write the monitoring overlay's generated files: the PrometheusRule (recording rules + alerts) and the Grafana
dashboard JSON. Run it after changing a query, a metric or a panel; tests/contract/test_monitoring.py fails when
the committed files differ from what this writes, executes every expression against a real Prometheus, and runs
``promtool check rules`` / ``promtool test rules`` on the rule groups.

    .venv/bin/python scripts/gen_monitoring.py [--check]

The recording rules are built by ``autoscaler.prometheus.aggregate_query`` -- the controller's own query builder
without an autoscaler's selector -- so what the dashboard plots is what the controller decides on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler import prometheus as promql  # noqa: E402

OVERLAY = ROOT / "manifests" / "overlays" / "monitoring"
RULE_FILE = OVERLAY / "prometheusrule.yaml"
DASHBOARD_FILE = OVERLAY / "dashboards" / "pdscale.json"

BY = ("namespace", "model_name")  # the labels the examples' selectors use; one series per deployment and pool
WINDOW_S = 60.0
QUANTILES = (0.5, 0.9, 0.99)

# alert thresholds (documented in the README's install section)
NOT_TICKING_S = 120  # no successful tick for this long (ticks every 15 s by default)
METRICS_UNAVAILABLE_FOR = "10m"
SLO_BREACH_FOR = "5m"  # five 1-minute windows in a row above target
CAPPED_FOR = "15m"


def _q(quantile: float) -> str:
    return f"p{quantile * 100:g}".replace(".", "_")


def recording_rules() -> list[dict[str, str]]:
    vllm = promql.BUILTIN_PROFILES["vllm"]
    w = "1m"  # = WINDOW_S, in the record names
    rules: list[tuple[str, str]] = []
    for q in QUANTILES:
        rules.append((f"model_role:vllm_time_to_first_token_seconds:{_q(q)}_{w}",
                      promql.aggregate_query(promql.W_TTFT_Q, vllm, BY, WINDOW_S, q)))
        rules.append((f"model_role:vllm_inter_token_latency_seconds:{_q(q)}_{w}",
                      promql.aggregate_query(promql.W_ITL_Q, vllm, BY, WINDOW_S, q)))
        rules.append((f"model:pdscale_proxy_time_to_first_token_seconds:{_q(q)}_{w}",
                      promql.aggregate_query(promql.FE_TTFT_Q, vllm, BY, WINDOW_S, q)))
        rules.append((f"model:pdscale_proxy_inter_token_latency_seconds:{_q(q)}_{w}",
                      promql.aggregate_query(promql.FE_ITL_Q, vllm, BY, WINDOW_S, q)))
    rules += [
        (f"model_role:vllm_request_success:rate{w}", promql.aggregate_query(promql.W_REQUESTS, vllm, BY, WINDOW_S)),
        (f"model_role:vllm_prompt_tokens:rate{w}", promql.aggregate_query(promql.W_PROMPT, vllm, BY, WINDOW_S)),
        (f"model_role:vllm_generation_tokens:rate{w}", promql.aggregate_query(promql.W_OUTPUT, vllm, BY, WINDOW_S)),
        ("model_role:vllm_num_requests_waiting:sum", promql.aggregate_query(promql.W_WAITING, vllm, BY, WINDOW_S)),
        ("model_role:vllm_num_requests_running:sum", promql.aggregate_query(promql.W_RUNNING, vllm, BY, WINDOW_S)),
        ("model_role:vllm_kv_cache_usage_perc:avg", promql.aggregate_query(promql.W_KV, vllm, BY, WINDOW_S)),
        (f"model:pdscale_proxy_requests:rate{w}", promql.aggregate_query(promql.FE_REQUESTS, vllm, BY, WINDOW_S)),
    ]
    return [{"record": name, "expr": expr} for name, expr in rules]


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


def alerts() -> list[dict[str, Any]]:
    return [
        _alert(
            "PdscaleControllerNotTicking",
            f"(time() - max(pdscale_last_successful_tick_timestamp_seconds) > {NOT_TICKING_S})"
            " or absent(pdscale_last_successful_tick_timestamp_seconds)",
            "1m", "critical",
            f"pdscale has not completed a tick for more than {NOT_TICKING_S} s",
            "No pdscale controller replica finished a tick in the last "
            f"{NOT_TICKING_S} s (or none is scraped): nothing is being scaled. Check the controller's logs, "
            "its access to the API server and to Prometheus (kubectl -n pdscale-system logs deploy/pdscale-controller).",
        ),
        _alert(
            "PdscaleNoLeader",
            "max(pdscale_leader) < 1",
            "2m", "critical",
            "No pdscale controller replica holds the leader Lease",
            "Both replicas are followers: decisions are computed but never written. Check the Lease "
            "pdscale-system/pdscale-controller and the controller's RBAC for leases.",
        ),
        _alert(
            "PdscaleMetricsUnavailable",
            'sum by (autoscaler, pool) (rate(pdscale_decisions_total{reason="MetricsUnavailable"}[2m])) > 0',
            METRICS_UNAVAILABLE_FOR, "warning",
            "{{ $labels.autoscaler }} {{ $labels.pool }}: no usable metrics, replicas held",
            "The autoscaler's TTFT/ITL series are missing, stale or NaN, so pdscale holds replicas (it never "
            "scales down on missing data). Check the metric wiring with `pdscale promql` and the selector labels.",
        ),
        _alert(
            "PdscaleFailedRescale",
            'sum(increase(pdscale_errors_total{kind="scale"}[10m])) > 0',
            "0m", "warning",
            "pdscale could not write replicas to a scale target",
            "Writes to /scale failed in the last 10 minutes. `kubectl describe pdas -A` shows the FailedRescale "
            "events with the API error (RBAC, a missing target, conflicts).",
        ),
        _alert(
            "PdscaleSLOBreached",
            "max by (autoscaler, signal) (pdscale_observed_latency_seconds)"
            " > on (autoscaler, signal) group_left max by (autoscaler, signal) (pdscale_slo_target_seconds)",
            SLO_BREACH_FOR, "warning",
            "{{ $labels.autoscaler }}: {{ $labels.signal }} above its SLO target for " + SLO_BREACH_FOR,
            "The observed percentile has been above target for every window of " + SLO_BREACH_FOR + ". "
            "pdscale orders capacity on a breach; a lasting one means pods are not starting, maxReplicas or "
            "the GPU budget is reached, or the latency profile is far off.",
        ),
        _alert(
            "PdscaleCappedByBudget",
            'sum by (autoscaler, pool) (rate(pdscale_decisions_total{reason="CappedByBudget"}[5m])) > 0',
            CAPPED_FOR, "info",
            "{{ $labels.autoscaler }} {{ $labels.pool }}: held below its need by the GPU budget",
            "spec.gpuBudget stops the pool from getting the replicas its SLO needs; raise the budget or accept "
            "the latency.",
        ),
    ]


def rule_groups() -> list[dict[str, Any]]:
    return [
        {"name": "pdscale.recording", "interval": "30s", "rules": recording_rules()},
        {"name": "pdscale.alerts", "rules": alerts()},
    ]


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "pdscale", "namespace": "pdscale-system",
                     "labels": {"app.kubernetes.io/name": "pdscale", "app.kubernetes.io/component": "monitoring"}},
        "spec": {"groups": rule_groups()},
    }


# ---------------------------------------------------------------- the dashboard

SEL = 'autoscaler=~"$autoscaler"'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr, "legendFormat": legend,
            "refId": ref}


def _panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int,
           *, w: int = 12, h: int = 8, description: str = "", stack: bool = False) -> dict[str, Any]:
    custom: dict[str, Any] = {"lineWidth": 1, "fillOpacity": 10 if stack else 0, "showPoints": "never"}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def _replicas(pool: str) -> list[tuple[str, str]]:
    sel = f'{SEL},pool="{pool}"'
    return [
        (f"pdscale_desired_replicas{{{sel}}}", "{{autoscaler}} desired"),
        (f"pdscale_current_replicas{{{sel}}}", "{{autoscaler}} ordered"),
        (f"pdscale_ready_replicas{{{sel}}}", "{{autoscaler}} ready"),
        (f"pdscale_current_replicas{{{sel}}} - pdscale_ready_replicas{{{sel}}}", "{{autoscaler}} starting"),
    ]


def _latency(signal: str) -> list[tuple[str, str]]:
    sel = f'{SEL},signal="{signal}"'
    return [
        (f"pdscale_observed_latency_seconds{{{sel}}}", "{{autoscaler}} observed"),
        (f"pdscale_slo_target_seconds{{{sel}}}", "{{autoscaler}} target (q {{quantile}})"),
    ]


def dashboard() -> dict[str, Any]:
    panels = [
        _panel(1, "Load", "reqps", [(f"pdscale_observed_request_rate_per_second{{{SEL}}}", "{{autoscaler}}")],
               0, 0, description="Request rate the controller observed (per autoscaler)."),
        _panel(2, "Decisions by reason", "short",
               [(f"sum by (autoscaler, pool, reason) (increase(pdscale_decisions_total{{{SEL}}}[$__rate_interval]))",
                 "{{autoscaler}} {{pool}} {{reason}}")],
               12, 0, stack=True, description="Every decision carries a reason (status conditions, events)."),
        _panel(3, "Prefill replicas: desired, ordered, ready, starting", "short", _replicas("prefill"), 0, 8),
        _panel(4, "Decode replicas: desired, ordered, ready, starting", "short", _replicas("decode"), 12, 8),
        _panel(5, "TTFT at the SLO percentile vs target", "s", _latency("ttft"), 0, 16),
        _panel(6, "ITL at the SLO percentile vs target", "s", _latency("itl"), 12, 16),
        _panel(7, "vLLM workers: TTFT and ITL p99 by pool", "s", [
            ("model_role:vllm_time_to_first_token_seconds:p99_1m", "TTFT {{namespace}}/{{model_name}} {{role}}"),
            ("model_role:vllm_inter_token_latency_seconds:p99_1m", "ITL {{namespace}}/{{model_name}} {{role}}"),
            ("model:pdscale_proxy_time_to_first_token_seconds:p99_1m", "user TTFT {{namespace}}/{{model_name}}"),
        ], 0, 24, description="From the monitoring overlay's recording rules (the controller's own queries)."),
        _panel(8, "vLLM workers: queue and KV cache", "short", [
            ("model_role:vllm_num_requests_waiting:sum", "waiting {{namespace}}/{{model_name}} {{role}}"),
            ("model_role:vllm_num_requests_running:sum", "running {{namespace}}/{{model_name}} {{role}}"),
            ("model_role:vllm_kv_cache_usage_perc:avg", "KV usage {{namespace}}/{{model_name}} {{role}}"),
        ], 12, 24),
        _panel(9, "Controller: tick duration p99 and PromQL queries per tick", "s", [
            ("histogram_quantile(0.99, sum by (le) (rate(pdscale_tick_duration_seconds_bucket[$__rate_interval])))",
             "tick p99"),
            ("max(pdscale_prometheus_queries_per_tick)", "queries per tick"),
        ], 0, 32),
        _panel(10, "Controller: errors by kind, leader", "short", [
            ("sum by (kind) (increase(pdscale_errors_total[$__rate_interval]))", "errors {{kind}}"),
            ("max by (pod) (pdscale_leader)", "leader {{pod}}"),
        ], 12, 32),
    ]
    return {
        "uid": "pdscale-overview",
        "title": "pdscale: disaggregated autoscaling",
        "description": "Per DisaggregatedAutoscaler: load, replicas per pool, TTFT/ITL vs SLO, decisions by reason.",
        "tags": ["pdscale", "vllm", "autoscaling"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "editable": True,
        "graphTooltip": 1,
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
             "current": {}, "hide": 0},
            {"name": "autoscaler", "type": "query", "label": "autoscaler",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(pdscale_desired_replicas, autoscaler)", "refId": "autoscaler"},
             "definition": "label_values(pdscale_desired_replicas, autoscaler)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1, "current": {}, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query the dashboard sends (the tests run them)."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def rendered() -> dict[Path, str]:
    header = ("# Generated by scripts/gen_monitoring.py (recording rules from autoscaler.prometheus.aggregate_query,"
              " the controller's query builder). Edit the script, not this file.\n")
    return {
        RULE_FILE: header + yaml.safe_dump(prometheus_rule(), sort_keys=False, width=100_000),
        DASHBOARD_FILE: json.dumps(dashboard(), indent=2) + "\n",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed file differs")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

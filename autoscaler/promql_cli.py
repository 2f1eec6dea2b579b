"""``pdscale promql``: the PromQL one controller tick sends for some DisaggregatedAutoscaler files, and with a
Prometheus URL, what each autoscaler would observe. The check an admin runs before installing: are the labels
on my series the ones pdscale queries? Light on purpose (see autoscaler/cli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autoscaler import prometheus_connection

DESCRIPTION = (
    "Print every PromQL query one controller tick sends for the DisaggregatedAutoscalers in the given YAML "
    "files (grouped as the controller groups them; multi-document files and kubectl kustomize output are fine, "
    "other kinds are skipped; - reads standard input). With a Prometheus URL, run one refresh and print each "
    "autoscaler's signals (missing values are null). --json prints one JSON object instead."
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "promql",
        help="print the PromQL pdscale sends for autoscaler specs; with --prometheus-url, run it",
        description=DESCRIPTION,
    )
    p.add_argument("specs", nargs="+", metavar="FILE",
                   help="YAML with DisaggregatedAutoscaler objects or a bare spec; - for standard input")
    prometheus_connection.add_arguments(p, url_help="run the queries against this Prometheus")
    p.add_argument("--timeout-s", type=float, default=5.0, metavar="S", help="per query (5)")
    p.add_argument("--metric-profiles", metavar="FILE", help="YAML of metric profile overrides")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"queries": [{"kind", "promql"}], "errors": {...}, and with a URL '
                   '"signals": {autoscaler: {...}}}')
    p.set_defaults(func=promql_command)


def promql_command(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time

    from autoscaler.config import load_spec_documents
    from autoscaler.prometheus import (
        BUILTIN_PROFILES,
        WORKER_LATENCY_KINDS,
        PrometheusMetricsSource,
        build_query,
        load_metric_profiles,
        plan_queries,
    )

    try:
        profiles = dict(BUILTIN_PROFILES)
        if args.metric_profiles:
            profiles.update(load_metric_profiles(args.metric_profiles))
        specs: dict[str, Any] = {}
        for path in args.specs:
            text = sys.stdin.read() if path == "-" else None
            for name, spec in load_spec_documents("<stdin>" if path == "-" else path, text=text):
                if name in specs:
                    raise ValueError(f"{path}: autoscaler {name} is also in an earlier file")
                specs[name] = spec
        connection = prometheus_connection.from_args(args, require_url=False)
    except ValueError as exc:  # ConfigError is a ValueError and names file, line and field
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = plan_queries(specs, profiles)
    queries = [
        {"kind": key.kind, "promql": build_query(key, profiles.get(key.profile), values),
         "onlyWithoutFrontend": key.kind in WORKER_LATENCY_KINDS}
        for key, values in plan.values_by_key.items()
    ]
    errors = dict(plan.spec_errors)
    if not args.json:
        for name, error in errors.items():
            print(f"error: {name}: {error}", file=sys.stderr)
        for q in queries:
            note = "  # only for autoscalers without frontend series" if q["onlyWithoutFrontend"] else ""
            print(f"# {q['kind']}{note}\n{q['promql']}\n")
    if connection is None:
        if args.json:
            print(json.dumps({"queries": queries, "errors": errors}, indent=2))
        return 1 if errors else 0
    source = PrometheusMetricsSource(connection.url, timeout_s=args.timeout_s, profiles=profiles,
                                     session=connection.session())
    now = time.time()
    source.refresh(specs, now)
    signals = {name: dataclasses.asdict(source.signals(name, now)) for name in specs}
    if args.json:
        print(json.dumps({"queries": queries, "errors": errors, "prometheusQueries": source.queries_last_refresh,
                          "signals": signals}, indent=2))
    else:
        print(json.dumps({"queries": source.queries_last_refresh, "signals": signals}, indent=2))
    return 1 if errors or any(r["error"] for r in signals.values()) else 0

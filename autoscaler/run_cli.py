"""``pdscale run`` arguments. Light on purpose (see autoscaler/cli.py): the controller (autoscaler.run, the
Kubernetes client, the Prometheus source) is imported when the command runs, not for ``--help``."""

from __future__ import annotations

import argparse
from typing import Any

from autoscaler import prometheus_connection
from autoscaler.argtypes import positive_float as positive
from autoscaler.argtypes import positive_int

# the annotation a target carries to accept an autoscaler with --require-target-annotation (autoscaler.run)
CONSENT_ANNOTATION = "pdscale.io/autoscaler"

DESCRIPTION = (
    "The live controller. Every tick: list the DisaggregatedAutoscaler objects, query Prometheus once for all of "
    "them, decide each one's prefill and decode replicas, and write them to the targets' /scale subresource, "
    "with status conditions and events. Only the holder of the Lease writes; --dry-run and mode: advisory "
    "compute and report without writing replicas. Connects to Kubernetes like kubectl: --kubeconfig, else "
    "$KUBECONFIG (a :-separated list), else ~/.kube/config, else the pod's service account."
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run the live controller against a Kubernetes cluster",
                              description=DESCRIPTION)
    p.add_argument("--kubeconfig", metavar="PATH",
                   help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster service account)")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current-context)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", metavar="NS",
                       help="watch one namespace (default: the context's, else the pod's own)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    prometheus_connection.add_arguments(p)
    p.add_argument("--tick-s", type=positive, default=15.0, metavar="S", help="seconds between ticks (15)")
    p.add_argument("--once", action="store_true", help="one tick, then exit")
    p.add_argument("--dry-run", action="store_true", help="compute and report; write nothing")
    p.add_argument("--json", action="store_true", help="with --once: print observations and decisions as JSON")
    p.add_argument("--metrics-port", type=int, metavar="P", help="serve /metrics, /healthz, /readyz on this port")
    p.add_argument("--lease-name", default="pdscale-controller", metavar="N", help="leader-election Lease name")
    p.add_argument("--lease-namespace", metavar="NS", help="namespace of the Lease (default: the pod's own)")
    p.add_argument("--lease-duration-s", type=positive, default=15.0, metavar="S", help="Lease duration (15)")
    p.add_argument("--identity", metavar="ID", help="this replica's identity (default: $POD_NAME or host-pid)")
    p.add_argument("--kube-timeout-s", type=positive, default=5.0, metavar="S", help="per API call (5)")
    p.add_argument("--prometheus-timeout-s", type=positive, default=5.0, metavar="S", help="per query (5)")
    p.add_argument("--workers", type=positive_int, default=8, metavar="N",
                   help="autoscalers ticked at once; bounds concurrent API writes (8)")
    p.add_argument("--require-target-annotation", action="store_true",
                   help=f"scale only targets annotated {CONSENT_ANNOTATION}=<autoscaler name>, so an autoscaler "
                   "cannot take over any Deployment of its namespace")
    p.add_argument("--status-refresh-s", type=positive, default=60.0, metavar="S",
                   help="re-write observed values and policy state in status at most this often; replica, reason "
                   "and condition changes are written at once (60)")
    p.add_argument("--serve-external-metrics", action="store_true",
                   help="also serve external.metrics.k8s.io from this process's ticks (one replica; see README)")
    from metrics_adapter.command import add_serving_args  # light: argparse only

    add_serving_args(p, title="external metrics API (with --serve-external-metrics)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from autoscaler.run import run_command

    return run_command(args)

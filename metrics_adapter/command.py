"""``pdscale adapter`` (the standalone External Metrics API server) and the serving options it shares with
``pdscale run --serve-external-metrics``. Top-level imports stay light (argparse only): ``pdscale --help`` must not
load aiohttp, cryptography or the Kubernetes client."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from autoscaler import prometheus_connection
from autoscaler.argtypes import positive_float as _positive

log = logging.getLogger("pdscale.adapter")

DEFAULT_PORT = 6443
DEFAULT_LEASE = "pdscale-system/pdscale-controller"


def add_serving_args(p: argparse.ArgumentParser, *, title: str = "external metrics API server") -> None:
    """Options of the HTTPS server (both commands)."""
    g = p.add_argument_group(title)
    g.add_argument("--secure-port", type=int, default=DEFAULT_PORT, metavar="P",
                   help=f"HTTPS port of external.metrics.k8s.io (default {DEFAULT_PORT}; 0 picks a free one)")
    g.add_argument("--bind-address", default="0.0.0.0", metavar="ADDR", help="address to listen on (0.0.0.0)")
    g.add_argument("--tls-cert-file", metavar="PATH",
                   help="serving certificate (PEM); re-read when it changes. Default: self-signed at start-up")
    g.add_argument("--tls-private-key-file", metavar="PATH", help="its private key (PEM)")
    g.add_argument("--tls-san", action="append", metavar="HOST",
                   help="host name or IP for the self-signed certificate (repeatable; default: the Service's "
                        "DNS names in $POD_NAMESPACE, localhost, 127.0.0.1)")
    g.add_argument("--stale-after-s", type=_positive, metavar="S",
                   help="answer 503 for values older than this (default: 3 refresh periods, at least 30 s)")


def stale_after_s(args: argparse.Namespace, period_s: float) -> float:
    return float(args.stale_after_s) if args.stale_after_s else max(30.0, 3.0 * period_s)


def build_server(args: argparse.Namespace, kube: Any, cache: Any, *, timeout_s: float) -> Any:
    """The ``AdapterServer`` (not started): TLS, authentication ConfigMap, TokenReview, SubjectAccessReview.
    Raises ValueError with a message for the user."""
    from metrics_adapter.auth import Authenticator, Authorizer, KubeReviews
    from metrics_adapter.server import AdapterServer
    from metrics_adapter.tls import ServingTLS, default_hosts

    reviews = KubeReviews(kube.api_client, timeout_s=timeout_s)
    config = reviews.authentication_config()
    tls = ServingTLS(args.tls_cert_file, args.tls_private_key_file, hosts=args.tls_san or default_hosts())
    return AdapterServer(
        cache,
        Authenticator(config, reviews.token_review),
        Authorizer(reviews.access_review),
        tls,
        host=args.bind_address,
        port=args.secure_port,
        load_config=reviews.authentication_config,
    )


def start_embedded(args: argparse.Namespace, kube: Any, source: Any, telemetry: Any, tick_s: float) -> tuple[Any, Any]:
    """For ``pdscale run --serve-external-metrics``: (ControllerFeed for the Runner, started AdapterServer).
    ``source`` must have been made with ``extra_percentiles=QUANTILES``."""
    from metrics_adapter.provider import ExternalMetricsCache
    from metrics_adapter.refresh import ControllerFeed

    cache = ExternalMetricsCache()
    on_percentiles = telemetry.observe_quantiles if telemetry is not None else None
    feed = ControllerFeed(cache, percentiles=source.percentiles, stale_after_s=stale_after_s(args, tick_s),
                          on_percentiles=on_percentiles)  # fmt: skip
    server = build_server(args, kube, cache, timeout_s=args.kube_timeout_s).start()
    log.info("external metrics API on https://%s:%d", args.bind_address, server.port)
    return feed, server


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "adapter",
        help="serve pdscale's metrics and recommendations on external.metrics.k8s.io (for HPA and KEDA)",
        description="The External Metrics API server. Every --refresh-s it lists the DisaggregatedAutoscalers, "
        "runs one grouped PromQL query set for all of them and reads each one's desired replicas from its status "
        "(written by the leading controller); requests are answered from that cache over HTTPS, with "
        "authentication and authorization delegated to the Kubernetes API server.",
    )
    p.add_argument("--kubeconfig", metavar="PATH",
                   help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster service account)")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current-context)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", metavar="NS", help="serve one namespace's autoscalers")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (default)")
    prometheus_connection.add_arguments(p)
    p.add_argument("--refresh-s", type=_positive, default=15.0, metavar="S", help="seconds between refreshes (15)")
    p.add_argument("--controller-lease", default=DEFAULT_LEASE, metavar="NS/NAME",
                   help=f"the controller's Lease: desired replicas are served while it is held ({DEFAULT_LEASE})")
    p.add_argument("--kube-timeout-s", type=_positive, default=5.0, metavar="S", help="per API call (5)")
    p.add_argument("--prometheus-timeout-s", type=_positive, default=10.0, metavar="S", help="per query (10)")
    add_serving_args(p)
    p.set_defaults(func=run_adapter)


def run_adapter(args: argparse.Namespace) -> int:
    from autoscaler.kube import KubeClient, KubeSettings
    from autoscaler.prometheus import PrometheusMetricsSource
    from autoscaler.run import _setup_logging
    from metrics_adapter.provider import QUANTILES, ExternalMetricsCache
    from metrics_adapter.refresh import StandaloneRefresher

    _setup_logging(getattr(args, "verbose", False))
    lease_ns, slash, lease_name = args.controller_lease.partition("/")
    if not slash or not lease_ns or not lease_name:
        print(f"pdscale adapter: --controller-lease: expected NAMESPACE/NAME, got {args.controller_lease!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        kube = KubeClient.from_config(args.kubeconfig, KubeSettings(timeout_s=args.kube_timeout_s),
                                      context=args.context)
    except Exception as exc:
        print(f"pdscale adapter: cannot load Kubernetes config: {exc}", file=sys.stderr)
        return 2
    try:
        prometheus = prometheus_connection.from_args(args)
        assert prometheus is not None  # require_url
        source = PrometheusMetricsSource(prometheus.url, timeout_s=args.prometheus_timeout_s,
                                         extra_percentiles=QUANTILES, session=prometheus.session())
        cache = ExternalMetricsCache()
        server = build_server(args, kube, cache, timeout_s=args.kube_timeout_s)
    except ValueError as exc:
        print(f"pdscale adapter: {exc}", file=sys.stderr)
        return 2
    refresher = StandaloneRefresher(kube, source, cache, namespace=args.namespace, lease=(lease_ns, lease_name),
                                    refresh_s=args.refresh_s, stale_after_s=stale_after_s(args, args.refresh_s))
    try:
        server.start()
    except RuntimeError as exc:
        print(f"pdscale adapter: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("pdscale adapter serving https://%s:%d (pid %d)", args.bind_address, server.port, os.getpid())
    try:
        refresher.run(stop)
    finally:
        server.stop()
    return 0

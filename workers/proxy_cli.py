"""``pdscale proxy`` arguments (light imports only: the server is imported when the command runs)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "proxy",
        help="prefill/decode proxy (vLLM's two-step P/D protocol) exporting user-visible TTFT/ITL histograms",
        description=(
            "OpenAI-compatible proxy in front of vLLM (or pdscale worker) prefill and decode servers: vLLM's "
            "two-step disaggregated flow, least-outstanding-tokens picking, retries before the first byte, "
            "graceful drain on SIGTERM, and pdscale_proxy_* metrics on /metrics."
        ),
    )
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="listen port (default 8000; 0 picks a free one)")
    p.add_argument("--prefill", action="append", metavar="URL", help="prefill server base URL (repeatable)")
    p.add_argument("--decode", action="append", metavar="URL", help="decode server base URL (repeatable)")
    p.add_argument("--upstream", action="append", dest="decode", metavar="URL",
                   help="alias of --decode, for --aggregated")  # fmt: skip
    p.add_argument("--aggregated", action="store_true", help="one pool of aggregated servers, no prefill leg")
    p.add_argument(
        "--endpoints-file",
        metavar="FILE",
        help='JSON/YAML {"prefill": [URL...], "decode": [URL...]}, re-read whenever it changes',
    )
    k = p.add_argument_group("Kubernetes endpoints")
    k.add_argument(
        "--k8s-prefill-selector", metavar="SELECTOR", help="label selector of the prefill pods/slices"
    )
    k.add_argument(
        "--k8s-decode-selector", metavar="SELECTOR", help="label selector of the decode pods/slices"
    )
    k.add_argument("--k8s-namespace", default="default", metavar="NS", help="namespace of the pods/slices (default)")
    k.add_argument("--k8s-kind", choices=("pods", "endpointslices"), default="pods",
                   help="discover Pods or EndpointSlices (pods)")
    k.add_argument("--k8s-port", type=int, metavar="PORT", help="target port (default: the named port)")
    k.add_argument("--k8s-port-name", default="http", metavar="NAME", help="container/slice port name (http)")
    k.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster, then ~/.kube/config)"
    )
    p.add_argument("--model-name", metavar="NAME",
                   help="model_name label of every series (default: the request's model, when an upstream "
                        "serves it)")  # fmt: skip
    p.add_argument(
        "--max-attempts", type=int, default=3, metavar="N", help="tries per leg before giving up (3)"
    )
    p.add_argument(
        "--health-interval-s", type=float, default=1.0, metavar="S", help="/health probe period (1)"
    )
    p.add_argument(
        "--health-timeout-s", type=float, default=1.0, metavar="S",
        help="a /health probe slower than this counts as failed (1)",
    )
    p.add_argument("--connect-timeout-s", type=float, default=5.0, metavar="S",
                   help="TCP connect timeout to a worker, seconds (5)")
    p.add_argument("--upstream-timeout-s", type=float, default=600.0, metavar="S",
                   help="longest silence of an upstream before it counts as failed (600)")  # fmt: skip
    p.add_argument("--drain-timeout-s", type=float, default=60.0, metavar="S",
                   help="on SIGTERM, how long in-flight requests may take to finish (60)")  # fmt: skip
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from workers.proxy import proxy_command

    return proxy_command(args)

"""``pdscale up``: pdscale on one machine, no cluster: the Kubernetes emulator, pods that start and drain, a real
Prometheus, the P/D proxy and two leader-elected controllers (``workers.local.cluster``).

Top-level imports stay light (argparse): the cluster is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe the one-machine cluster (shared by ``pdscale up`` and ``pdscale demo --live``)."""
    g = p.add_argument_group("the one-machine cluster")
    g.add_argument("--namespace", default="llm", help="namespace of everything (llm)")
    g.add_argument("--model", default="llama", help="served model name, model_name on the series (llama)")
    g.add_argument("--profile", default="llama-3.1-8b-h100-tp1", metavar="NAME|PATH",
                   help="the workers' latency profile before time scaling (llama-3.1-8b-h100-tp1)")
    g.add_argument("--time-scale", type=float, default=4.0, metavar="K",
                   help="every modelled duration x K, so that this machine keeps up (4)")
    g.add_argument("--max-num-seqs", type=int, default=16, metavar="N", help="running sequences per worker (16)")
    g.add_argument("--prefill", type=int, default=1, metavar="N", help="initial prefill replicas (1)")
    g.add_argument("--decode", type=int, default=1, metavar="N", help="initial decode replicas (1)")
    g.add_argument("--max-replicas", type=int, default=6, metavar="N", help="per pool (6)")
    g.add_argument("--startup-s", type=float, default=10.0, metavar="S", help="pod start-up (model loading) (10)")
    g.add_argument("--tick-s", type=float, default=2.0, metavar="S", help="controller tick (2)")
    g.add_argument("--scrape-s", type=float, default=1.0, metavar="S", help="Prometheus scrape interval (1)")
    g.add_argument("--window-s", type=float, default=10.0, metavar="S", help="rate()/histogram window (10)")
    g.add_argument("--ttft-target-s", type=float, default=2.0, metavar="S", help="TTFT p99 target (2)")
    g.add_argument("--itl-target-s", type=float, default=0.1, metavar="S", help="ITL p99 target (0.1)")
    g.add_argument("--controllers", type=int, default=2, choices=(1, 2), help="pdscale run replicas (2)")
    g.add_argument("--workdir", metavar="DIR", help="logs, Prometheus data, kubeconfig (default: a new temp dir)")


def spec_from_args(args: argparse.Namespace) -> Any:
    from workers.local.cluster import ClusterSpec

    for name in ("time_scale", "startup_s", "tick_s", "scrape_s", "window_s", "ttft_target_s", "itl_target_s"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("max_num_seqs", "prefill", "decode", "max_replicas"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if max(args.prefill, args.decode) > args.max_replicas:
        raise ValueError(f"--prefill/--decode exceed --max-replicas {args.max_replicas}")
    return ClusterSpec(
        namespace=args.namespace, model=args.model, profile=args.profile, time_scale=args.time_scale,
        max_num_seqs=args.max_num_seqs, prefill_replicas=args.prefill, decode_replicas=args.decode,
        max_replicas=args.max_replicas, startup_s=args.startup_s, tick_s=args.tick_s, scrape_s=args.scrape_s,
        window_s=args.window_s, ttft_target_s=args.ttft_target_s, itl_target_s=args.itl_target_s,
        controllers=args.controllers, lease_s=max(3.0, 3 * args.tick_s),
    )  # fmt: skip


def workdir_from_args(args: argparse.Namespace, prefix: str) -> Path:
    return Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix=prefix))


def up_command(args: argparse.Namespace) -> int:
    import signal
    import threading

    from workers.local.cluster import LocalCluster

    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        print(f"pdscale up: {exc}", file=sys.stderr)
        return 2
    workdir = workdir_from_args(args, "pdscale-up-")
    print(f"pdscale up: starting in {workdir} ...", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C is how `up` is stopped, even when started from a non-interactive shell's background job, which
    # inherits SIGINT ignored (POSIX) and would otherwise keep running through Ctrl-C sent to it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cluster = LocalCluster(spec, workdir)
    try:
        cluster.start()
        print(cluster.describe())
        print("Ctrl-C stops everything.", flush=True)
        while not stop.wait(0.5):
            for name, proc in [("proxy", cluster.proxy), *cluster.controllers.items()]:
                if proc is not None and not proc.running:
                    print(f"pdscale up: {name} exited (rc {proc.returncode}):\n{proc.tail(20)}", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        print(f"pdscale up: {exc}", file=sys.stderr)
        return 1
    finally:
        print("pdscale up: stopping ...", file=sys.stderr)
        cluster.stop()
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "up",
        help="pdscale on this machine: Kubernetes emulator, pods, Prometheus, proxy, controllers (no cluster)",
        description="pdscale on one machine, no cluster: the Kubernetes emulator, pods that start and drain, a real "
                    "Prometheus, the P/D proxy and two leader-elected controllers. Prints where everything is; "
                    "Ctrl-C stops every process it started.",
    )
    add_cluster_arguments(p)
    p.set_defaults(func=up_command)

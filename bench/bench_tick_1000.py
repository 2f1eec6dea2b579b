"""One controller tick for 10, 100 and 1,000 autoscalers (up to 2,000 pools): the Prometheus side alone, and a
FULL ``Runner.run_pass()`` against the Kubernetes emulator holding the DisaggregatedAutoscalers and their 2 N
Deployments (``--full``).

Every autoscaler is a vLLM P/D deployment (model ``model-NNNN`` in one of 10 namespaces) with one prefill pod,
two decode pods and a proxy, all exported in vLLM format (tests/helpers/vllm_exporter.py) and scraped by the
real Prometheus every 15 s; the rate window is the spec default, 60 s. What is timed is
``PrometheusMetricsSource.refresh()`` for the first N autoscalers: the number of PromQL queries must not depend
on N, and the wall time at 1,000 should stay under 2 s.

Generating the 1,000-deployment exposition (~2*10^5 series, ~30 MB) costs seconds of Python CPU, so the
exporter regenerates it only during warm-up and then serves the last body unchanged (counters flat); every
refresh is evaluated at one fixed instant just after warm-up, where each series has >= 2 distinct samples in
its window, so the exporter takes no CPU from the timed part.

    .venv/bin/python bench/bench_tick_1000.py [--sizes 10 100 1000] [--repeats 5] [--json]

``run(n_autoscalers)`` (one size, its own Prometheus) and ``TickBench`` (one Prometheus, many sizes) time the
Prometheus refresh alone. ``TickBench.run_full(n)`` times the whole pass: list the CRs, one Prometheus refresh,
read replicas (one LIST of Deployments per namespace), decide with pdscale's policy, write ``/scale`` where a
pool changes and status where it changed. Pass 1 ("cold") writes every status and the first scale-ups; the
passes after it are the steady state that is reported (median of ``repeats``). The emulator is Python and runs
in this process (its own thread, sharing the GIL): ``kube_server_s`` is the time spent inside its request
handler, so what is left of the wall time is the client side (policy, HTTP client, JSON decoding).

    .venv/bin/python bench/bench_tick_1000.py --full [--sizes 10 100 1000] [--repeats 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from autoscaler.core.buckets import ITL_BUCKETS_S, TTFT_BUCKETS_S  # noqa: E402
from autoscaler.core.spec import AutoscalerSpec, MetricsSpec  # noqa: E402
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision  # noqa: E402
from autoscaler.prometheus import PrometheusMetricsSource  # noqa: E402
from autoscaler.run import Runner, RunOptions, make_policy  # noqa: E402
from tests.helpers.vllm_exporter import ExportedFrontend, ExportedPod, LatencyMix, Load, VllmExporter  # noqa: E402
from workers.local.processes import ProcessRunner  # noqa: E402
from workers.local.prometheus import PrometheusServer  # noqa: E402

SCRAPE_INTERVAL_S = 15.0
WINDOW_S = 60.0
NAMESPACES = 10
PROXY_TTFT = LatencyMix(((0.1, 0.6), (0.6, 0.38), (4.0, 0.02)))
PROXY_ITL = LatencyMix(((0.03, 0.95), (0.2, 0.05)))
WORKER_TTFT = LatencyMix(((0.05, 0.5), (0.3, 0.45), (3.0, 0.05)))


def model_name(i: int) -> str:
    return f"model-{i:04d}"


def namespace(i: int) -> str:
    return f"ns-{i % NAMESPACES}"


def autoscaler_specs(n: int, proxy: bool = True) -> dict[str, AutoscalerSpec]:
    """N autoscalers selecting their deployment by namespace and model name (two selector labels).
    ``proxy=False`` ignores the proxies: TTFT/ITL come from the (larger) worker histograms, the worst case."""
    return {
        f"{namespace(i)}/{model_name(i)}": AutoscalerSpec(
            metrics=MetricsSpec(
                selector=(("namespace", namespace(i)), ("model_name", model_name(i))),
                window_s=WINDOW_S,
                proxy=proxy,
            )
        )
        for i in range(n)
    }


def build_exporter(n: int) -> VllmExporter:
    ex = VllmExporter()
    for i in range(n):
        m, ns = model_name(i), namespace(i)
        rate = 1.0 + (i % 7)
        ex.add_pod(ExportedPod(f"{m}-prefill-0", "prefill", m, namespace=ns, load=Load(
            rate, ttft=WORKER_TTFT, prompt_tokens_per_request=800, output_tokens_per_request=1,
            waiting=i % 5, running=2, kv_usage=0.3)))  # fmt: skip
        for j in range(2):
            ex.add_pod(ExportedPod(f"{m}-decode-{j}", "decode", m, namespace=ns, load=Load(
                rate / 2, ttft=WORKER_TTFT, itl=PROXY_ITL, itl_samples_per_request=150, prompt_tokens_per_request=800,
                output_tokens_per_request=151, waiting=0, running=20 + j, kv_usage=0.5)))  # fmt: skip
        ex.add_frontend(ExportedFrontend(f"{m}-proxy", m, namespace=ns, load=Load(
            rate, ttft=PROXY_TTFT, itl=PROXY_ITL, itl_samples_per_request=150)))  # fmt: skip
    return ex


class TickBench:
    """One exporter with ``n_max`` deployments, one Prometheus scraping it; ``run(n)`` times refreshes."""

    def __init__(self, n_max: int, *, workdir: Path | None = None, verbose: bool = True) -> None:
        self.n_max = n_max
        self.verbose = verbose
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-tick-") if workdir is None else None
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.runner = ProcessRunner(self.workdir / "logs")
        self.exporter = build_exporter(n_max)
        self.prom: PrometheusServer | None = None
        self.eval_at_s: float | None = None
        self.series_bytes = 0

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def start(self) -> TickBench:
        started = time.monotonic()
        self.series_bytes = self.exporter.hold_exposition()
        self.exporter.start()
        self.prom = PrometheusServer(
            self.runner, self.workdir / "prometheus", static_targets={"vllm": [self.exporter.target]},
            scrape_interval_s=SCRAPE_INTERVAL_S,
        ).start()  # fmt: skip
        self._say(f"exporter {self.series_bytes / 1e6:.1f} MB per scrape; warming up ...")
        # keep regenerating (counters advance) until Prometheus holds 3 scrapes, then freeze the body
        stop = threading.Event()

        def regenerate() -> None:
            while not stop.is_set():
                self.exporter.hold_exposition()

        thread = threading.Thread(target=regenerate, daemon=True)
        thread.start()
        try:
            self.prom.wait_for_scrapes("vllm", n=3, timeout_s=5 * SCRAPE_INTERVAL_S + 30, fresh=False)
        finally:
            stop.set()
            thread.join()
        self.eval_at_s = time.time() - 1.0
        self._say(f"warm-up {time.monotonic() - started:.0f} s")
        return self

    def stop(self) -> None:
        if self.prom is not None:
            self.prom.stop()
        self.runner.stop_all()
        self.exporter.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> TickBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(
        self, n_autoscalers: int, repeats: int = 5, max_concurrency: int = 4, proxy: bool = True
    ) -> dict[str, Any]:
        """Refresh the first ``n_autoscalers`` ``repeats`` times (after one untimed warm query); check answers."""
        if self.prom is None or self.eval_at_s is None:
            raise RuntimeError("TickBench.start() first")
        if not 1 <= n_autoscalers <= self.n_max:
            raise ValueError(f"n_autoscalers must be in 1..{self.n_max}, got {n_autoscalers}")
        specs = autoscaler_specs(n_autoscalers, proxy)
        source = PrometheusMetricsSource(self.prom.url, timeout_s=30.0, max_concurrency=max_concurrency)
        source.refresh(specs, self.eval_at_s)  # untimed: first touch of the data
        walls: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            source.refresh(specs, self.eval_at_s)
            walls.append(time.perf_counter() - t0)
        if proxy:
            expected_ttft = PROXY_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S)
        else:  # prefill-worker TTFT + decode-worker TTFT (same mix on both pools here)
            expected_ttft = 2 * WORKER_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S)  # type: ignore[operator]
        expected_itl = PROXY_ITL.bucketed_quantile(0.99, ITL_BUCKETS_S)
        wrong = errors = 0
        for key, spec in specs.items():
            sig = source.view(key).observe(spec, self.eval_at_s)
            errors += sig.error is not None
            ok = (
                sig.ttft_s is not None and abs(sig.ttft_s - expected_ttft) < 1e-6 * expected_ttft  # type: ignore[operator]
                and sig.itl_s is not None and abs(sig.itl_s - expected_itl) < 1e-6 * expected_itl  # type: ignore[operator]
                and sig.decode.running_requests == 41.0 and sig.prefill.running_requests == 2.0
            )  # fmt: skip
            wrong += not ok
        slowest = max(source.query_seconds_last_refresh, key=lambda kv: kv[1])
        return {
            "autoscalers": n_autoscalers,
            "max_concurrency": max_concurrency,
            "proxy": proxy,
            "pools": 2 * n_autoscalers,
            "pods": 3 * n_autoscalers,
            "queries_per_tick": source.queries_last_refresh,
            "tick_wall_s_median": statistics.median(walls),
            "tick_wall_s_min": min(walls),
            "tick_wall_s_max": max(walls),
            "slowest_query": {"kind": slowest[0], "wall_s": slowest[1]},
            "autoscalers_with_error": errors,
            "autoscalers_with_wrong_signals": wrong,
        }


    def run_full(
        self,
        n_autoscalers: int,
        repeats: int = 3,
        workers: int = 8,
        separate_process: bool = True,
        policy: str = "pdscale",
    ) -> dict[str, Any]:
        """Time full ``Runner`` passes over ``n_autoscalers`` CRs in a fresh Kubernetes emulator, by default in
        its own process (as an API server is: it does not share this process' GIL)."""
        if self.prom is None or self.eval_at_s is None:
            raise RuntimeError("TickBench.start() first")
        from kubernetes import client as k8s

        from autoscaler.kube import KubeClient, KubeSettings
        from workers.local.kube_emulator import KubeEmulator

        eval_at_s = self.eval_at_s
        emulator: Any = EmulatorProcess(n_autoscalers) if separate_process else _seeded(KubeEmulator(), n_autoscalers)
        with emulator as emu:
            cfg = k8s.Configuration()
            cfg.host = emu.url
            cfg.retries = False
            cfg.connection_pool_maxsize = max(4, workers)
            kube = KubeClient(k8s.ApiClient(cfg), KubeSettings(timeout_s=30.0))
            source = PrometheusMetricsSource(self.prom.url, timeout_s=30.0)
            options = RunOptions(namespace=None, prometheus_url=self.prom.url, identity="bench", workers=workers)
            factory = {"pdscale": make_policy, "hold": lambda spec: HoldPolicy()}[policy]
            runner = Runner(options, kube, source, clock=_FixedClock(eval_at_s), policy_factory=factory)
            passes = [_timed_pass(runner, emu) for _ in range(1 + repeats)]
            replicas = {
                (d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"]["replicas"]
                for d in emu.list("apps/v1/deployments")
            }
        cold, steady = passes[0], passes[1:]
        reports = steady[-1]["reports"]
        errors = sum(1 for r in reports if "decision" not in r or r.get("errors"))
        median = statistics.median(p["wall_s"] for p in steady)
        mid = min(steady, key=lambda p: abs(p["wall_s"] - median))
        return {
            "autoscalers": n_autoscalers,
            "pools": 2 * n_autoscalers,
            "workers": workers,
            "emulator_process": "separate" if separate_process else "in-process thread",
            "policy": policy,
            "queries_per_tick": mid["queries"],
            "kube_calls_per_tick": mid["kube_calls"],
            "kube_calls_by_kind": mid["kube_calls_by_kind"],
            "tick_wall_s_median": median,
            "tick_wall_s_all": [p["wall_s"] for p in steady],
            "prometheus_refresh_s": mid["refresh_s"],
            "kube_server_s": mid["server_s"],
            "client_side_s": median - mid["server_s"] - mid["refresh_s"],
            "status_writes": mid["status_writes"],
            "cold": {k: cold[k] for k in ("wall_s", "kube_calls", "kube_calls_by_kind", "server_s", "queries")},
            "autoscalers_with_error": errors,
            "scaled_targets": sum(1 for v in replicas.values() if v not in (1, 2)),
        }


class _seeded:
    """A context manager: the emulator, entered and seeded."""

    def __init__(self, emu: Any, n: int) -> None:
        self.emu, self.n = emu, n

    def __enter__(self) -> Any:
        self.emu.__enter__()
        seed_kubernetes(self.emu, self.n)
        return self.emu

    def __exit__(self, *exc: object) -> None:
        self.emu.__exit__(*exc)


def _emulator_main(conn: Any, n: int) -> None:
    """Child process: a seeded emulator answering (command, arg) messages until "stop"."""
    from workers.local.kube_emulator import KubeEmulator

    with KubeEmulator() as emu:
        seed_kubernetes(emu, n)
        conn.send(emu.url)
        while True:
            command, arg = conn.recv()
            if command == "stop":
                break
            if command == "requests":
                conn.send(list(emu.requests()))
            elif command == "busy_s":
                conn.send(emu.busy_s())
            elif command == "list":
                conn.send(emu.list(arg))
    conn.close()


class EmulatorProcess:
    """``KubeEmulator`` (seeded with ``n`` autoscalers) in a child process, with the inspection methods the
    bench uses (``url``, ``requests()``, ``busy_s()``, ``list()``)."""

    def __init__(self, n: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_emulator_main, args=(child, n), daemon=True)
        self.n = n
        self.url = ""

    def __enter__(self) -> EmulatorProcess:
        self._process.start()
        if not self._conn.poll(300):
            raise RuntimeError("emulator process did not start in 300 s")
        self.url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send(("stop", None))
        finally:
            self._process.join(timeout=30)

    def _ask(self, command: str, arg: Any = None) -> Any:
        self._conn.send((command, arg))
        return self._conn.recv()

    def requests(self) -> list[tuple[str, str]]:
        return list(self._ask("requests"))

    def busy_s(self) -> float:
        return float(self._ask("busy_s"))

    def list(self, resource: str) -> list[dict[str, Any]]:
        return list(self._ask("list", resource))


class HoldPolicy:
    """Keeps every pool where it is and has no state: the floor of a pass whose status never changes (pdscale's
    own policy state moves every tick, so with it every pass writes every status)."""

    name = "hold"

    def initial_state(self, spec: AutoscalerSpec) -> None:
        return None

    def decide(self, observation: Observation, state: None, spec: AutoscalerSpec) -> tuple[Decision, None]:
        def hold(pool: Pool) -> PoolDecision:
            n = observation.replicas(pool).desired
            return PoolDecision(pool, n, n, "DesiredWithinRange", "hold")

        return Decision(observation.time_s, hold(Pool.PREFILL), hold(Pool.DECODE)), None


class _FixedClock:
    """The instant every series was evaluated at in ``TickBench`` (the exposition is frozen after warm-up)."""

    def __init__(self, at_s: float) -> None:
        self.at_s = at_s

    def now_s(self) -> float:
        return self.at_s


def seed_kubernetes(emu: Any, n: int) -> None:
    """N DisaggregatedAutoscalers over 2 N Deployments (prefill 1 replica, decode 2: the exported pods)."""
    from workers.local.kube_emulator import CR

    for i in range(n):
        m, ns = model_name(i), namespace(i)
        emu.add_deployment(ns, f"{m}-prefill", 1)
        emu.add_deployment(ns, f"{m}-decode", 2)
        emu.put(CR, {
            "apiVersion": "pdscale.io/v1alpha1", "kind": "DisaggregatedAutoscaler",
            "metadata": {"name": m, "namespace": ns},
            "spec": {
                "prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{m}-prefill"},
                            "minReplicas": 1, "maxReplicas": 16},
                "decode": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{m}-decode"},
                           "minReplicas": 1, "maxReplicas": 16},
                "metrics": {"selector": {"matchLabels": {"namespace": ns, "model_name": m}},
                            "windowSeconds": WINDOW_S, "proxy": True},
            },
        })  # fmt: skip


def _timed_pass(runner: Runner, emu: Any) -> dict[str, Any]:
    before_calls = len(list(emu.requests()))
    before_busy = emu.busy_s()
    t0 = time.perf_counter()
    reports = runner.run_pass()
    wall = time.perf_counter() - t0
    calls = list(emu.requests())[before_calls:]
    by_kind: dict[str, int] = {}
    for method, path in calls:
        tail = path.rsplit("/", 1)[-1]
        what = tail if tail in ("scale", "status", "deployments", "disaggregatedautoscalers", "events") else "other"
        by_kind[f"{method} {what}"] = by_kind.get(f"{method} {what}", 0) + 1
    return {
        "wall_s": wall,
        "kube_calls": len(calls),
        "kube_calls_by_kind": by_kind,
        "server_s": emu.busy_s() - before_busy,
        "refresh_s": runner.metrics.last_refresh_duration_s,
        "queries": runner.metrics.queries_last_refresh,
        "status_writes": runner.last_pass.status_writes,
        "reports": reports,
    }


def run(n_autoscalers: int, repeats: int = 5, max_concurrency: int = 4, proxy: bool = True) -> dict[str, Any]:
    """One size with its own exporter and Prometheus (slow to set up; prefer TickBench for several sizes)."""
    with TickBench(n_autoscalers, verbose=False) as bench:
        return bench.run(n_autoscalers, repeats, max_concurrency, proxy)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4], help="max concurrent queries (4)")
    parser.add_argument(
        "--proxy", choices=["on", "off", "both"], default="both",
        help="read TTFT/ITL from the proxies (on), from worker histograms (off), or both (default)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--full", action="store_true",
                        help="time full Runner passes (Kubernetes emulator + Prometheus) instead of refreshes")
    parser.add_argument("--workers", type=int, default=8, help="with --full: autoscalers ticked at once (8)")
    parser.add_argument("--emulator-in-process", action="store_true",
                        help="with --full: run the Kubernetes emulator in a thread of this process (shares the GIL)")
    parser.add_argument("--policy", choices=["pdscale", "hold", "both"], default="pdscale",
                        help="with --full: pdscale's policy, a stateless hold policy (status never changes), or both")
    args = parser.parse_args(argv)
    if args.full:
        return _main_full(args)
    with TickBench(max(args.sizes)) as bench:
        proxies = {"on": [True], "off": [False], "both": [True, False]}[args.proxy]
        rows = [
            bench.run(n, args.repeats, c, p) for p in proxies for c in args.concurrency for n in args.sizes
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = ("autoscalers", "pools", "conc", "proxy", "queries/tick", "median s", "min s", "max s")
        print(" ".join(f"{h:>12}" for h in head), " slowest query")
        for r in rows:
            cells = (
                r["autoscalers"],
                r["pools"],
                r["max_concurrency"],
                str(r["proxy"]),
                r["queries_per_tick"],
            )
            times = (r["tick_wall_s_median"], r["tick_wall_s_min"], r["tick_wall_s_max"])
            slow = r["slowest_query"]
            print(" ".join(f"{c:>12}" for c in cells), " ".join(f"{t:>12.3f}" for t in times),
                  f" {slow['kind']} {slow['wall_s']:.3f} s")  # fmt: skip
        first = rows[0]
        for r in rows[1 : len(args.sizes)]:
            print(f"ratio {r['autoscalers']} / {first['autoscalers']} autoscalers: "
                  f"{r['tick_wall_s_median'] / first['tick_wall_s_median']:.1f}x wall, "
                  f"{r['queries_per_tick'] / first['queries_per_tick']:.1f}x queries")  # fmt: skip
    bad = [r for r in rows if r["autoscalers_with_error"] or r["autoscalers_with_wrong_signals"]]
    for r in bad:
        print(f"WRONG: {r}", file=sys.stderr)
    return 1 if bad else 0


def _main_full(args: argparse.Namespace) -> int:
    with TickBench(max(args.sizes)) as bench:
        policies = ["pdscale", "hold"] if args.policy == "both" else [args.policy]
        rows = [bench.run_full(n, max(3, args.repeats), args.workers, not args.emulator_in_process, policy)
                for policy in policies for n in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Kubernetes emulator: {rows[0]['emulator_process']}; workers {rows[0]['workers']}; "
          f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    head = ("policy", "N", "queries/tick", "k8s calls/tick", "tick s (med)", "prom s", "k8s server s", "client s",
            "status writes")
    print(" ".join(f"{h:>14}" for h in head))
    for r in rows:
        cells = (r["policy"], r["autoscalers"], r["queries_per_tick"], r["kube_calls_per_tick"])
        times = (r["tick_wall_s_median"], r["prometheus_refresh_s"], r["kube_server_s"], r["client_side_s"])
        print(" ".join(f"{c:>14}" for c in cells), " ".join(f"{t:>14.3f}" for t in times),
              f"{r['status_writes']:>14}")  # fmt: skip
    for r in rows:
        print(f"{r['policy']} N={r['autoscalers']}: steady passes {[round(w, 3) for w in r['tick_wall_s_all']]} s; "
              f"calls {r['kube_calls_by_kind']}; cold pass {r['cold']['wall_s']:.3f} s, "
              f"{r['cold']['kube_calls']} calls {r['cold']['kube_calls_by_kind']}, "
              f"server {r['cold']['server_s']:.3f} s; scaled targets {r['scaled_targets']}, "
              f"autoscalers with errors {r['autoscalers_with_error']}")  # fmt: skip
    for r in rows:
        first = next(f for f in rows if f["policy"] == r["policy"])
        if r is first:
            continue
        print(f"{r['policy']}: ratio {r['autoscalers']} / {first['autoscalers']} autoscalers: "
              f"{r['tick_wall_s_median'] / first['tick_wall_s_median']:.1f}x wall, "
              f"{r['queries_per_tick'] / first['queries_per_tick']:.1f}x queries, "
              f"{r['kube_calls_per_tick'] / first['kube_calls_per_tick']:.1f}x Kubernetes calls")  # fmt: skip
    return 1 if any(r["autoscalers_with_error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

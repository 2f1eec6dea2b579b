"""The External Metrics API adapter at 1,000 autoscalers, side by side with what prometheus-adapter does per
request (the equivalent PromQL query against the same Prometheus), in one run.

The world is bench_tick_1000's: 1,000 vLLM P/D deployments (a proxy, one prefill and two decode pods each, ~2*10^5
series) scraped by the real Prometheus every 15 s, plus the Kubernetes emulator holding the 1,000
DisaggregatedAutoscalers (their status carries the controller's desired replicas; a held controller Lease), the
``kube-system/extension-apiserver-authentication`` ConfigMap and a grant for the HPA controller's user.
``pdscale adapter`` runs as its own process over TLS and refreshes once (one LIST, one grouped query set); every
request is then answered from its cache. Clients authenticate as the aggregator does (front-proxy client
certificate, ``X-Remote-User``), on kept-alive connections.

What is compared is an HPA asking for one autoscaler's TTFT p99:

* adapter: ``GET .../namespaces/ns-3/pdscale_ttft_p99_seconds?labelSelector=autoscaler=model-0003`` (TLS, front-
  proxy authentication, cached SubjectAccessReview, selector parse, lookup, JSON);
* prometheus-adapter: the PromQL its ``externalRules`` would run for that request,
  ``histogram_quantile(0.99, sum by (le) (rate(pdscale_proxy_time_to_first_token_seconds_bucket{namespace="ns-3",
  model_name="model-0003"}[60s])))``, sent straight to Prometheus (prometheus-adapter's own Go overhead and its
  aggregator hop are NOT counted, which flatters it).

Latency: one request at a time (p50, p99, client-observed, so including the client's own Python time), after one
request per (namespace, metric) has filled the adapter's authorization cache (see ``warm``).
Throughput: ``--concurrency`` kept-alive connections for ``--seconds``; requests per CPU-second of the serving
process (``/proc/<pid>/stat`` user + system time) is "requests/s per core". Targets: adapter p99 < 5 ms and at
least 1,000 requests/s per core.

    .venv/bin/python bench/bench_adapter.py [--autoscalers 1000] [--requests 2000] [--seconds 8] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from autoscaler.core.buckets import TTFT_BUCKETS_S  # noqa: E402
from bench.bench_tick_1000 import PROXY_TTFT, TickBench, model_name, namespace, seed_kubernetes  # noqa: E402
from tests.helpers.pki import CA, extension_auth_configmap  # noqa: E402
from workers.local.kube_emulator import CR, AccessRule, KubeEmulator  # noqa: E402
from workers.local.net import free_port  # noqa: E402

HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
BASE = "/apis/external.metrics.k8s.io/v1beta1"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def seed(emu: KubeEmulator, n: int, front_proxy: CA) -> None:
    """The autoscalers (with a current decision in status), the Lease, authentication and a grant."""
    seed_kubernetes(emu, n)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i in range(n):
        obj = emu.get(CR, namespace(i), model_name(i))
        assert obj is not None
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "lastEvaluationTime": now,
                         "prefill": {"desiredReplicas": 1 + i % 5}, "decode": {"desiredReplicas": 2 + i % 3}}
        emu.put(CR, obj)
    emu.put("coordination.k8s.io/v1/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "pdscale-controller", "namespace": "bench"},
        "spec": {"holderIdentity": "bench", "leaseDurationSeconds": 3600,
                 "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())},
    })  # fmt: skip
    emu.put("v1/configmaps", extension_auth_configmap(front_proxy))
    emu.allow(AccessRule(users=(HPA_USER,), verbs=("list",), api_groups=("external.metrics.k8s.io",)))


class Client:
    """One kept-alive connection; ``get(path)`` -> (status, body)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None, headers: dict[str, str]) -> None:
        if context is None:
            self.conn: http.client.HTTPConnection = http.client.HTTPConnection(host, port, timeout=60)
        else:
            self.conn = http.client.HTTPSConnection(host, port, timeout=60, context=context)
        self.headers = headers

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def warm(make: Callable[[], Client], paths: list[str]) -> None:
    """One request per distinct (namespace, metric): the adapter's SubjectAccessReview cache (10 s, the
    apiserver's default) then holds every decision the run needs, so what is timed is the adapter itself. A miss
    costs one review round trip to the API server (here the emulator, a Python thread of this process)."""
    client = make()
    for path in {p.split("?")[0]: p for p in paths}.values():
        client.get(path)


def latency(make: Callable[[], Client], paths: list[str]) -> dict[str, float]:
    warm(make, paths)
    client = make()
    client.get(paths[0])  # connect (TLS handshake) outside the timing
    samples = []
    for path in paths:
        t0 = time.perf_counter()
        status, body = client.get(path)
        samples.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}: {body[:300]!r}")
    samples.sort()
    return {"requests": len(samples), "p50_ms": 1000 * samples[len(samples) // 2],
            "p99_ms": 1000 * samples[int(len(samples) * 0.99)], "max_ms": 1000 * samples[-1]}  # fmt: skip


def throughput(make: Callable[[], Client], paths: list[str], pid: int, concurrency: int, seconds: float) -> dict[str, float]:
    warm(make, paths)
    clients = [make() for _ in range(concurrency)]
    for c in clients:
        c.get(paths[0])
    done = [0] * concurrency
    failures: list[str] = []
    stop = threading.Event()

    def work(k: int) -> None:
        rng = random.Random(k)
        while not stop.is_set():
            status, body = clients[k].get(rng.choice(paths))
            if status != 200:
                failures.append(f"HTTP {status}: {body[:200]!r}")
                return
            done[k] += 1

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(concurrency)]
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    if failures:
        raise RuntimeError(failures[0])
    total = sum(done)
    return {"requests": total, "wall_s": wall, "requests_per_s": total / wall, "server_cpu_s": cpu,
            "requests_per_cpu_s": total / cpu if cpu > 0 else float("inf")}  # fmt: skip


def run(n: int, n_requests: int, seconds: float, concurrency: int, verbose: bool = True) -> dict[str, Any]:
    def say(text: str) -> None:
        if verbose:
            print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        base = Path(tmp)
        front_proxy, serving_ca = CA("front-proxy", base), CA("serving", base)
        serving = serving_ca.issue("adapter", hosts=["127.0.0.1"], stem="serving")
        proxy = front_proxy.issue("front-proxy-client")
        with KubeEmulator() as emu:
            say(f"seeding {n} autoscalers ...")
            seed(emu, n, front_proxy)
            kubeconfig = emu.kubeconfig(base / "kubeconfig")
            with TickBench(n, workdir=base / "tick", verbose=verbose) as tick:
                assert tick.prom is not None and tick.prom.process is not None
                port = free_port()
                adapter = tick.runner.start([
                    sys.executable, "-m", "autoscaler.cli", "adapter", "--kubeconfig", str(kubeconfig), "-A",
                    "--prometheus-url", tick.prom.url, "--prometheus-timeout-s", "60", "--refresh-s", "3600",
                    "--stale-after-s", "7200", "--controller-lease", "bench/pdscale-controller",
                    "--secure-port", str(port), "--bind-address", "127.0.0.1",
                    "--tls-cert-file", str(serving.cert_path), "--tls-private-key-file", str(serving.key_path),
                ], name="pdscale-adapter")  # fmt: skip
                context = ssl.create_default_context(cafile=str(serving_ca.path))
                context.load_cert_chain(*proxy.pair)
                headers = {"X-Remote-User": HPA_USER, "X-Remote-Group": "system:authenticated"}

                def adapter_client() -> Client:
                    return Client("127.0.0.1", port, context, headers)

                started = time.monotonic()
                while True:  # ready = first refresh published
                    try:
                        if adapter_client().get("/readyz")[0] == 200:
                            break
                    except OSError:
                        pass
                    if not adapter.running or time.monotonic() - started > 120:
                        raise RuntimeError(f"adapter not ready:\n{adapter.tail()}")
                    time.sleep(0.2)
                say(f"adapter ready in {time.monotonic() - started:.1f} s (one LIST + one grouped query set)")

                rng = random.Random(0)
                picks = [rng.randrange(n) for _ in range(n_requests)]
                ttft_paths = [f"{BASE}/namespaces/{namespace(i)}/pdscale_ttft_p99_seconds?labelSelector="
                              f"autoscaler%3D{model_name(i)}" for i in picks]  # fmt: skip
                mixed_paths = [
                    f"{BASE}/namespaces/{namespace(i)}/{metric}?labelSelector={urllib.parse.quote(sel)}"
                    for i in picks
                    for metric, sel in [rng.choice([
                        ("pdscale_desired_replicas", f"autoscaler={model_name(i)},pool=prefill"),
                        ("pdscale_desired_replicas", f"autoscaler={model_name(i)},pool=decode"),
                        ("pdscale_ttft_seconds", f"autoscaler={model_name(i)}"),
                        ("pdscale_itl_p90_seconds", f"autoscaler={model_name(i)}"),
                    ])]
                ]  # fmt: skip
                status, body = adapter_client().get(ttft_paths[0])
                item = json.loads(body)["items"][0]
                want = PROXY_TTFT.bucketed_quantile(0.99, TTFT_BUCKETS_S)
                from kubernetes.utils.quantity import parse_quantity

                got = float(parse_quantity(item["value"]))
                if status != 200 or want is None or abs(got - want) > 1e-6 * want:
                    raise RuntimeError(f"adapter answered {item}, expected TTFT p99 {want}")

                prom_host, prom_port = urllib.parse.urlsplit(tick.prom.url).netloc.split(":")
                prom_paths = [
                    "/api/v1/query?" + urllib.parse.urlencode({"query": (
                        'histogram_quantile(0.99, sum by (le) (rate(pdscale_proxy_time_to_first_token_seconds_bucket'
                        f'{{namespace="{namespace(i)}",model_name="{model_name(i)}"}}[60s])))')})
                    for i in picks
                ]  # fmt: skip

                def prom_client() -> Client:
                    return Client(prom_host, int(prom_port), None, {})

                say("adapter: latency ...")
                a_lat = latency(adapter_client, ttft_paths)
                a_mixed = latency(adapter_client, mixed_paths)
                say("adapter: throughput ...")
                a_thr = throughput(adapter_client, ttft_paths, adapter.pid, concurrency, seconds)
                say("prometheus (what prometheus-adapter runs per request): latency ...")
                p_lat = latency(prom_client, prom_paths)
                say("prometheus: throughput ...")
                p_thr = throughput(prom_client, prom_paths, tick.prom.process.pid, concurrency, seconds)
                adapter.stop()
    return {
        "autoscalers": n,
        "concurrency": concurrency,
        "adapter": {"ttft_p99_request": a_lat, "mixed_requests": a_mixed, "throughput": a_thr},
        "prometheus_adapter_equivalent": {"ttft_p99_query": p_lat, "throughput": p_thr},
        "ratios": {
            "p50_latency_prometheus_over_adapter": p_lat["p50_ms"] / a_lat["p50_ms"],
            "p99_latency_prometheus_over_adapter": p_lat["p99_ms"] / a_lat["p99_ms"],
            "requests_per_cpu_s_adapter_over_prometheus": a_thr["requests_per_cpu_s"] / p_thr["requests_per_cpu_s"],
        },
        "targets_met": {"adapter_p99_under_5_ms": a_lat["p99_ms"] < 5.0,
                        "adapter_1000_requests_per_cpu_s": a_thr["requests_per_cpu_s"] >= 1000},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--autoscalers", type=int, default=1000)
    p.add_argument("--requests", type=int, default=2000, help="per latency run (1,000 autoscalers drawn at random)")
    p.add_argument("--seconds", type=float, default=8.0, help="per throughput run")
    p.add_argument("--concurrency", type=int, default=8, help="kept-alive connections in the throughput runs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = run(args.autoscalers, args.requests, args.seconds, args.concurrency)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    a, pr = out["adapter"], out["prometheus_adapter_equivalent"]
    print(f"{out['autoscalers']} autoscalers; latency one request at a time; throughput {out['concurrency']} "
          "connections; per core = per CPU-second of the serving process")
    print(f"{'':44} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'req/CPU-s':>10}")
    print(f"{'adapter, TTFT p99 of one autoscaler':44} {a['ttft_p99_request']['p50_ms']:8.2f} "
          f"{a['ttft_p99_request']['p99_ms']:8.2f} {a['throughput']['requests_per_s']:8.0f} "
          f"{a['throughput']['requests_per_cpu_s']:10.0f}")
    print(f"{'adapter, mixed (desired replicas, TTFT, ITL)':44} {a['mixed_requests']['p50_ms']:8.2f} "
          f"{a['mixed_requests']['p99_ms']:8.2f} {'':>8} {'':>10}")
    print(f"{'Prometheus, the same request as PromQL':44} {pr['ttft_p99_query']['p50_ms']:8.2f} "
          f"{pr['ttft_p99_query']['p99_ms']:8.2f} {pr['throughput']['requests_per_s']:8.0f} "
          f"{pr['throughput']['requests_per_cpu_s']:10.0f}")
    r = out["ratios"]
    print(f"ratios: p50 latency Prometheus/adapter {r['p50_latency_prometheus_over_adapter']:.1f}x, p99 "
          f"{r['p99_latency_prometheus_over_adapter']:.1f}x; requests per CPU-second adapter/Prometheus "
          f"{r['requests_per_cpu_s_adapter_over_prometheus']:.1f}x")
    print(f"targets: {out['targets_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

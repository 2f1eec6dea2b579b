"""How fast ``pdscale`` starts and how much memory the live controller holds.

Figures (medians of ``--repeats`` runs, each a fresh interpreter):

* ``pdscale --help`` and ``pdscale run --help``: wall time of ``python -m autoscaler.cli ...``;
* ``import autoscaler.run``: wall time of an interpreter that imports what ``pdscale run`` needs before its first
  tick (the controller, the Kubernetes client, the Prometheus source, telemetry);
* ``pdscale run`` RSS: resident memory (``VmRSS``) and its peak (``VmHWM``) of a ``pdscale run --dry-run --tick-s
  0.5`` process after three passes against the Kubernetes emulator (tests/helpers/kube_emulator.py) holding one
  DisaggregatedAutoscaler; Prometheus is a closed port, so the pass is the controller's full path with a metrics
  outage (no data held).

Run it from a checkout's root with that checkout's interpreter; to compare two checkouts run it in both, one
after the other, on the same (quiet) machine::

    .venv/bin/python bench/bench_cli_startup.py [--repeats 11] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wall_s(argv: list[str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - started)
    return out


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def run_rss_kib(repeats: int) -> list[tuple[int, int]]:
    """(VmRSS, VmHWM) in KiB of ``pdscale run`` after three passes, ``repeats`` times."""
    from tests.helpers.live import bare_autoscaler
    from workers.local.kube_emulator import KubeEmulator
    from workers.local.net import free_port

    results = []
    with KubeEmulator() as kube, tempfile.TemporaryDirectory() as tmp:
        bare_autoscaler(kube, "bench")
        kubeconfig = kube.kubeconfig(Path(tmp) / "kubeconfig")
        closed = f"http://127.0.0.1:{free_port()}"
        for _ in range(repeats):
            before = sum(1 for m, p in kube.requests() if m == "GET" and p.endswith("/disaggregatedautoscalers"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "autoscaler.cli", "run", "--kubeconfig", str(kubeconfig), "-n", "bench",
                 "--prometheus-url", closed, "--dry-run", "--tick-s", "0.5", "--prometheus-timeout-s", "0.2"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    passes = sum(1 for m, p in kube.requests()
                                 if m == "GET" and p.endswith("/disaggregatedautoscalers")) - before
                    if passes >= 3:
                        break
                    if proc.poll() is not None:
                        raise RuntimeError(f"pdscale run exited with {proc.returncode}")
                    time.sleep(0.05)
                else:
                    raise RuntimeError("pdscale run did not make three passes in 60 s")
                results.append((_status_kib(proc.pid, "VmRSS"), _status_kib(proc.pid, "VmHWM")))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    py = sys.executable
    figures: dict[str, float] = {}
    for name, argv in (
        ("pdscale --help (s)", [py, "-m", "autoscaler.cli", "--help"]),
        ("pdscale run --help (s)", [py, "-m", "autoscaler.cli", "run", "--help"]),
        ("import autoscaler.run (s)", [py, "-c", "import autoscaler.run, autoscaler.prometheus"]),
        ("python -c pass (s)", [py, "-c", "pass"]),
    ):
        figures[name] = statistics.median(wall_s(argv, args.repeats))
    rss = run_rss_kib(max(3, args.repeats // 3))
    figures["pdscale run VmRSS (MiB)"] = statistics.median(r for r, _ in rss) / 1024
    figures["pdscale run VmHWM (MiB)"] = statistics.median(h for _, h in rss) / 1024
    figures["load average (1 min)"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:32s} {value:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

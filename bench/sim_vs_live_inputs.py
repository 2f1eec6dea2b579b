"""Which policy input does a live run of the surge scenario read differently from the simulator's Prometheus view?

Reads the Prometheus TSDB a live run of ``bench/bench_sim_vs_live.py`` left in its work directory (a copy of it,
served by a Prometheus of its own), and at every simulated tick ``t`` compares the ``Signals`` the real
``autoscaler.prometheus.PrometheusMetricsSource`` reads at the live run's ``t0 + t`` with the ``Signals``
``sim.view.SimMetricsSource`` gives the simulated controller at ``t``:

1. per signal, the median relative difference over the ticks (``--ticks`` prints them side by side);
2. hybrids: the simulator's cluster (its pods, start-ups, replica counts) driven by the live signals, all of them
   and one group at a time (and the reverse: the live signals with one group taken from the simulator). If the
   live signals reproduce the live run's replicas, the difference is in what the policy reads, not in the pods;
   the groups that carry it are the ones to look at.

Usage:
  python bench/sim_vs_live_inputs.py /tmp/pdscale-sim-vs-live-XXXX            # the workdir of a live run
  python bench/sim_vs_live_inputs.py WORKDIR --ticks 80 140                    # plus the inputs per tick in [80, 140] s
CPU: a few seconds per hybrid (it answers ~100 ticks x ~10 PromQL queries from the saved TSDB, cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sim.replay as replay_module  # noqa: E402
from autoscaler.core.types import Signals  # noqa: E402
from autoscaler.prometheus import PrometheusMetricsSource  # noqa: E402
from sim.policies import make_policy  # noqa: E402
from sim.view import SimMetricsSource  # noqa: E402
from workers.local.cluster import LocalCluster  # noqa: E402
from workers.local.processes import ProcessRunner  # noqa: E402
from workers.local.prometheus import PrometheusServer  # noqa: E402
from workers.local.surge import CLUSTER, scenario_for  # noqa: E402

DISCOVERY_S = 2.5  # bench_sim_vs_live.DISCOVERY_S

FIELDS: dict[str, Callable[[Signals], float | None]] = {
    "req/s": lambda s: s.request_rate_per_s,
    "prompt tok/s": lambda s: s.prompt_tokens_per_s,
    "output tok/s": lambda s: s.output_tokens_per_s,
    "TTFT p": lambda s: s.ttft_s,
    "ITL p": lambda s: s.itl_s,
    "prefill waiting": lambda s: s.prefill.waiting_requests,
    "prefill running": lambda s: s.prefill.running_requests,
    "prefill req/s": lambda s: s.prefill.request_rate_per_s,
    "prefill pods": lambda s: s.prefill.pods_reporting,
    "decode waiting": lambda s: s.decode.waiting_requests,
    "decode running": lambda s: s.decode.running_requests,
    "decode KV": lambda s: s.decode.kv_usage_fraction,
    "decode pods": lambda s: s.decode.pods_reporting,
}
# Signals fields swapped together in the hybrids ("pool.field" for PoolSignals)
GROUPS: dict[str, tuple[str, ...]] = {
    "request rate": ("request_rate_per_s",),
    "prompt tokens/s": ("prompt_tokens_per_s",),
    "output tokens/s": ("output_tokens_per_s",),
    "TTFT/ITL percentiles and means": ("ttft_s", "ttft_mean_s", "itl_s", "itl_mean_s"),
    "prefill waiting/running": ("prefill.waiting_requests", "prefill.running_requests"),
    "decode waiting/running/KV": ("decode.waiting_requests", "decode.running_requests", "decode.kv_usage_fraction"),
    "per-pool request rates": ("prefill.request_rate_per_s", "decode.request_rate_per_s"),
    "pods reporting": ("prefill.pods_reporting", "decode.pods_reporting"),
}


def merge(base: Signals, other: Signals, fields: tuple[str, ...]) -> Signals:
    """``base`` with ``fields`` taken from ``other``."""
    out = dataclasses.replace(base, **{f: getattr(other, f) for f in fields if "." not in f})
    for pool in ("prefill", "decode"):
        sub = {f.split(".")[1]: getattr(getattr(other, pool), f.split(".")[1]) for f in fields
               if f.startswith(pool + ".")}  # fmt: skip
        if sub:
            out = dataclasses.replace(out, **{pool: dataclasses.replace(getattr(out, pool), **sub)})
    return out


class Inputs:
    """The live signals at ``t0 + t`` (cached) and a simulated run whose controller reads a chosen mix."""

    def __init__(self, prometheus_url: str, t0: float, scenario: Any, discovery_s: float = 0.0) -> None:
        self.source = PrometheusMetricsSource(prometheus_url, timeout_s=30.0)
        self.t0 = t0
        self.scenario = scenario
        self.discovery_s = discovery_s
        self._live: dict[float, Signals] = {}

    def live(self, t_s: float) -> Signals:
        if t_s not in self._live:
            self.source.refresh({"surge": self.scenario.spec}, self.t0 + t_s)
            signals = self.source.signals("surge", self.t0 + t_s)
            self._live[t_s] = dataclasses.replace(signals, time_s=t_s)
        return self._live[t_s]

    def simulate(self, mix: Callable[[Signals, Signals], Signals] | None) -> tuple[Any, dict[float, Signals]]:
        """``mix(sim, live)`` -> what the simulated controller reads (None: the simulator's own view)."""
        seen: dict[float, Signals] = {}
        inputs = self

        class Mixed(SimMetricsSource):
            def observe(self, spec: Any, now_s: float) -> Signals:
                own = super().observe(spec, now_s)
                seen[now_s] = own
                return own if mix is None else mix(own, inputs.live(now_s))

        original = replay_module.SimMetricsSource
        replay_module.SimMetricsSource = Mixed  # type: ignore[misc]
        try:
            result = replay_module.replay(self.scenario, make_policy("pdscale", self.scenario.profile,
                                                                     self.scenario.spec),
                                          discovery_s=self.discovery_s)  # fmt: skip
        finally:
            replay_module.SimMetricsSource = original  # type: ignore[misc]
        return result, seen


def outcome(scenario: Any, result: Any) -> str:
    ticks = np.arange(0.0, scenario.workload.duration_s + 1e-9, scenario.tick_s)
    t = result.timeline["time_s"]
    idx = np.clip(np.searchsorted(t, ticks, side="right") - 1, 0, t.size - 1)
    p, d = (result.timeline[f"{pool}_desired"][idx].astype(int) for pool in ("prefill", "decode"))
    return (f"prefill max {p.max()}, decode max {d.max()}, GPU-hours {result.summary['gpu_hours']:.3f}, "
            f"compliance {result.summary['window_compliance']:.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="a live run's work directory (prometheus/tsdb, load-t0.txt)")
    ap.add_argument("--seed", type=int, default=0, help="the live run's seed")
    ap.add_argument("--discovery-s", type=float, default=DISCOVERY_S, metavar="S",
                    help=f"the simulated Prometheus' discovery delay (default {DISCOVERY_S:g}, as bench_sim_vs_live)")
    ap.add_argument("--ticks", nargs=2, type=float, metavar=("FROM_S", "TO_S"), help="print the inputs per tick")
    args = ap.parse_args(argv)
    tsdb = args.workdir / "prometheus" / "tsdb"
    if not tsdb.is_dir() or not (args.workdir / "load-t0.txt").is_file():
        ap.error(f"{args.workdir}: no prometheus/tsdb or load-t0.txt (the work directory of a live run?)")
    t0 = float((args.workdir / "load-t0.txt").read_text())
    with tempfile.TemporaryDirectory(prefix="pdscale-inputs-") as tmp:
        shutil.copytree(tsdb, Path(tmp) / "prom" / "tsdb")
        runner = ProcessRunner(Path(tmp) / "logs")
        prometheus = PrometheusServer(runner, Path(tmp) / "prom")  # 1 d retention: a run of today
        prometheus.start()
        try:
            cluster = LocalCluster(CLUSTER, Path(tmp) / "cluster")
            cluster.write_profile()
            scenario = scenario_for(cluster, args.seed)
            inputs = Inputs(prometheus.url, t0, scenario, args.discovery_s)
            report(inputs, scenario, args.ticks)
        finally:
            runner.stop_all()
    return 0


def report(inputs: Inputs, scenario: Any, ticks: list[float] | None) -> None:
    sim_result, sim_inputs = inputs.simulate(None)
    print("median relative difference live vs simulated, per signal, over the ticks in [20 s, end - 20 s]:")
    end = scenario.workload.duration_s - 20.0
    for name, get in FIELDS.items():
        diffs = [abs(a - b) / max(abs(a), 1e-9) for t, s in sim_inputs.items() if 20.0 <= t <= end
                 and (a := get(inputs.live(t))) is not None and (b := get(s)) is not None]  # fmt: skip
        missing = sum(1 for t, s in sim_inputs.items() if 20.0 <= t <= end and (get(s) is None) != (get(inputs.live(t)) is None))
        print(f"  {name:16s} {np.median(diffs) if diffs else float('nan'):6.3f}   present on one side only: {missing} ticks")
    if ticks:
        print(f"\ninputs per tick in [{ticks[0]:g}, {ticks[1]:g}] s, live / sim:")
        print("  t_s   side " + " ".join(f"{n[:12]:>12s}" for n in FIELDS))
        for t in sorted(sim_inputs):
            if ticks[0] <= t <= ticks[1]:
                for side, s in (("live", inputs.live(t)), ("sim ", sim_inputs[t])):
                    cells = " ".join("           -" if (v := f(s)) is None else f"{v:12.3f}" for f in FIELDS.values())
                    print(f"  {t:6.1f} {side} {cells}")
    print("\nthe simulator's cluster reading ... :")
    print(f"  its own view                        {outcome(scenario, sim_result)}")
    print(f"  the live signals                    {outcome(scenario, inputs.simulate(lambda s, live: live)[0])}")
    for group, fields in GROUPS.items():
        plus = inputs.simulate(lambda s, live, f=fields: merge(s, live, f))[0]  # type: ignore[misc]
        minus = inputs.simulate(lambda s, live, f=fields: merge(live, s, f))[0]  # type: ignore[misc]
        print(f"  its own + live {group:30s} {outcome(scenario, plus)}")
        print(f"  live + its own {group:30s} {outcome(scenario, minus)}")


if __name__ == "__main__":
    sys.exit(main())

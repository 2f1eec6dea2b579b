"""The live surge scenario: what ``pdscale demo --live`` plays and ``bench/bench_sim_vs_live.py`` measures, and its
simulated twin.

A 24-minute surge scenario at production time constants (pods start in 120 s, a 15 s tick and scrape, a 60 s
rate window, a 240 s scale-down window removing at most 25 % per minute, compliance over 60 s windows),
compressed ``COMPRESSION`` = 4x into 6 minutes: 30 s start-up, 3.75 s tick and scrape, 15 s rate window, a 60 s
scale-down window removing at most 25 % per 15 s, compliance over 15 s windows. Arrivals are generated on the
compressed axis. Both sides run exactly this; nothing is rescaled between them.

The model: ``llama-3.1-8b-h100-tp1`` with every step time x ``TIME_SCALE`` = 6 (``workers.local.scaled_profile``,
one file loaded by the workers, the controller and the simulator) and 8 sequences per replica: a decode step of
~36 ms at 8 sequences, so that the emulated workers' own overheads on a loaded 2-core machine stay small next to
the modelled times. The P/D KV link is the default of both sides (64 GB/s + 1 ms). SLO: TTFT p99 <= 1.5 s, ITL
p99 <= 0.1 s.

Load: 1 req/s of mixed requests throughout (prompts ~600 tokens, answers ~64); a prompt-heavy surge of +1.5
req/s with ~3,000-token prompts (60-150 s) and a generation-heavy surge of +2 req/s with ~100-token answers
(210-300 s), each ramping up and down over 20 s.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.local.cluster import ClusterSpec, LocalCluster
from workers.local.kubelet import HistoryEvent
from workers.local.live_result import TimelineSampler
from workers.local.load import LoadProcess

COMPRESSION = 4.0
TIME_SCALE = 6.0
DURATION_S = 360.0
SUMMARY_WINDOW_S = 60.0 / COMPRESSION


def _ramp(start_s: float, end_s: float, peak: float, ramp_s: float = 20.0, every_s: float = 5.0) -> str:
    n = int((end_s - start_s) // every_s)
    mids = (np.arange(n) + 0.5) * every_s
    rates = peak * np.clip(np.minimum(mids / ramp_s, (end_s - start_s - mids) / ramp_s), 0.0, 1.0)
    return (f"piecewise:rates={'/'.join(f'{r:.3g}' for r in rates)},every={every_s:g},"
            f"duration={end_s - start_s:g},start={start_s:g}")  # fmt: skip


WORKLOAD = " + ".join([
    f"poisson:name=baseline,rate=1,duration={DURATION_S:g},prompt=lognormal(600,0.6),output=lognormal(64,0.5),"
    "max_prompt=4096,max_output=256",
    _ramp(60, 150, 1.5) + ",prompt=lognormal(3000,0.4),output=exp(16),max_prompt=6000,max_output=128",
    _ramp(210, 300, 2.0) + ",prompt=lognormal(300,0.5),output=lognormal(96,0.4),max_prompt=2048,max_output=256",
])  # fmt: skip

CLUSTER = ClusterSpec(
    namespace="surge", model="llama", time_scale=TIME_SCALE, max_num_seqs=8,
    startup_s=120.0 / COMPRESSION, tick_s=15.0 / COMPRESSION, scrape_s=15.0 / COMPRESSION,
    window_s=60.0 / COMPRESSION, lease_s=15.0, controllers=1, ttft_target_s=1.5, itl_target_s=0.15,
    max_replicas=8, pre_stop_s=2, grace_s=60, probe_period_s=0.5,
    autoscaler={"behavior": {"scaleDown": {"stabilizationWindowSeconds": int(240 / COMPRESSION), "selectPolicy": "Max",
                                           "policies": [{"type": "Percent", "value": 25,
                                                         "periodSeconds": int(60 / COMPRESSION)}]}}},
)  # fmt: skip


def scenario_for(cluster: LocalCluster, seed: int) -> Any:
    """The simulated twin (``sim.scenario.Scenario``) of a live run of ``cluster``: the same workload (generator
    spec and seed), profile file, autoscaler spec (the same loader), time constants, 1 + 1 replicas at t = 0."""
    from autoscaler.config import spec_from_dict
    from autoscaler.profiles import load_profile_file
    from sim.scenario import Scenario
    from sim.workload import generate

    s = cluster.spec
    return Scenario(
        workload=generate(WORKLOAD, seed=seed), profile=load_profile_file(cluster.profile_path),
        spec=spec_from_dict(cluster.autoscaler_spec(), source="live surge autoscaler"), initial_prefill=1,
        initial_decode=1, startup_s=s.startup_s, tick_s=s.tick_s, scrape_interval_s=s.scrape_s,
        window_s=SUMMARY_WINDOW_S, seed=seed, name="live-surge", policy="pdscale", drain_s=120.0,
    )  # fmt: skip


@dataclass
class LiveRun:
    """What a live run of the scenario left behind (enough to rebuild its ``SimResult`` later)."""

    records: list[Any]  # workers.loadgen_report.RequestRecord
    history: list[HistoryEvent]
    t0: float  # wall clock of the workload's t = 0
    timeline: dict[str, np.ndarray]
    scale_events: int
    wall_s: float
    proxy_outcomes: dict[str, float]


def run_live(cluster: LocalCluster, seed: int, *, every_s: float = 0.5,
             on_sample: Callable[[float], None] | None = None) -> LiveRun:  # fmt: skip
    """Send the scenario's load through ``cluster`` (started) and record what happens every ``every_s``."""
    load = LoadProcess(cluster.runner, cluster.workdir, url=cluster.proxy_url, model=cluster.spec.model,
                       generator=WORKLOAD, seed=seed)  # fmt: skip
    sampler = TimelineSampler()
    desired: list[tuple[int, int]] = []
    wall0 = time.perf_counter()
    while not load.started_s and load.is_alive():
        time.sleep(0.01)
    t0 = load.started_s or time.time()
    while load.is_alive():
        t = time.time() - t0
        state = cluster.pool_state()
        sampler.sample(t, state)
        now = (state["prefill"].desired, state["decode"].desired)
        if not desired or desired[-1] != now:
            desired.append(now)
        if on_sample is not None:
            on_sample(t)
        time.sleep(every_s)
    records = load.result(timeout_s=120.0)
    assert cluster.prometheus is not None and cluster.pods is not None
    rows = cluster.prometheus.query(f'sum by (outcome) (pdscale_proxy_requests_total{{namespace="{cluster.ns}"}})')
    outcomes = {r["metric"]["outcome"]: float(r["value"][1]) for r in rows}
    changes = sum(int(a[0] != b[0]) + int(a[1] != b[1]) for a, b in itertools.pairwise(desired))
    return LiveRun(records, cluster.pods.history, t0, sampler.timeline(), changes, time.perf_counter() - wall0,
                   outcomes)  # fmt: skip


def progress_line(cluster: LocalCluster, t_s: float) -> str:
    state = cluster.pool_state()
    p, d = state.get("prefill"), state.get("decode")
    slo = (cluster.condition("SLOMet") or {}).get("reason", "-")
    return (f"live t={t_s:5.0f} s  prefill {p.ready if p else 0}/{p.desired if p else 0}  decode "
            f"{d.ready if d else 0}/{d.desired if d else 0} (ready/desired)  SLO {slo}")  # fmt: skip


def print_progress(cluster: LocalCluster, every_s: float = 30.0) -> Callable[[float], None]:
    """An ``on_sample`` callback printing one progress line to stderr every ``every_s``."""
    last = [-every_s]

    def show(t_s: float) -> None:
        if t_s - last[0] >= every_s:
            last[0] = t_s
            print(f"  {progress_line(cluster, t_s)}", file=sys.stderr, flush=True)

    return show

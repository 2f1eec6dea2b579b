"""The same surge scenario live on this machine and in the simulator, with the same policy: how far apart are they?

Live: ``workers.local.cluster.LocalCluster`` (what ``pdscale up`` runs: the Kubernetes emulator, the pod runner
with emulated vLLM workers as real processes, a real Prometheus, the P/D proxy, ``pdscale run``) under
``pdscale loadgen``'s client. Simulated: ``sim.replay.replay`` of a ``Scenario`` built from the very same
objects: the workload from the same generator spec and seed, the profile file the live workers and the live
controller load, the ``DisaggregatedAutoscaler`` spec the live controller reads (parsed by the same loader),
1 prefill + 1 decode replica ready at t = 0, the same start-up, tick, scrape interval and rate window.

The scenario is ``workers/local/surge.py`` (also what ``pdscale demo --live`` plays): a 24-minute surge
scenario at production time constants compressed 4x into 6 minutes (30 s start-up, 3.75 s tick and scrape, 15 s
rate window, 15 s compliance windows), the 8B/H100 profile with every step time x 6 and 8 sequences per replica,
a prompt-heavy and then a generation-heavy surge. Both sides run exactly that; nothing is rescaled between them.

Printed per pool: replica trajectories (desired at each tick, live vs simulated), the share of ticks within
+-1 replica, window compliance, TTFT/ITL p99 per window and GPU-hours of both, with the differences, against the
targets: compliance within 0.05, GPU-hours within 10 %, replicas within +-1 at 90 % of ticks.

Usage:
  python bench/bench_sim_vs_live.py                 # ~8 min: the live run, then the simulation
  python bench/bench_sim_vs_live.py --save run.json # keep the live run's raw data
  python bench/bench_sim_vs_live.py --load run.json # simulate again against a saved live run (after a sim fix)
Timing figures taken on a shared machine are noisy: run it a few times and quote medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sim.policies import make_policy  # noqa: E402
from sim.replay import SimResult, replay  # noqa: E402
from sim.scenario import Scenario  # noqa: E402
from workers.loadgen_report import RequestRecord  # noqa: E402
from workers.local.cluster import LocalCluster  # noqa: E402
from workers.local.kubelet import HistoryEvent  # noqa: E402
from workers.local.live_result import live_result  # noqa: E402
from workers.local.surge import CLUSTER, DURATION_S, LiveRun, print_progress, run_live, scenario_for  # noqa: E402

TARGETS = {"compliance": 0.05, "gpu_hours_rel": 0.10, "replicas_within_1": 0.90}
# A live pod is first scraped 1.1-5.5 s after it is ready (mean 3.6 s, 11 pods; file_sd, then Prometheus' discovery
# manager's 5 s update cycle, then the target's scrape slot): the simulated Prometheus waits half the 5 s cycle.
DISCOVERY_S = 2.5


# ---------------------------------------------------------------- comparison


def at_ticks(timeline: dict[str, np.ndarray], key: str, ticks: np.ndarray) -> np.ndarray:
    """The value of a sampled series at each tick time (the last sample at or before it)."""
    t = timeline["time_s"]
    idx = np.clip(np.searchsorted(t, ticks, side="right") - 1, 0, t.size - 1)
    return timeline[key][idx]


def compare(scenario: Scenario, live: SimResult, sim: SimResult) -> dict[str, Any]:
    end_s = scenario.workload.duration_s
    ticks = np.arange(0.0, end_s + 1e-9, scenario.tick_s)
    out: dict[str, Any] = {"pools": {}, "windows": {}}
    for pool in ("prefill", "decode"):
        lv, sv = at_ticks(live.timeline, f"{pool}_desired", ticks), at_ticks(sim.timeline, f"{pool}_desired", ticks)
        out["pools"][pool] = {
            "within_1": float(np.mean(np.abs(lv - sv) <= 1)),
            "mean_abs_diff": float(np.mean(np.abs(lv - sv))),
            "live_max": int(lv.max()), "sim_max": int(sv.max()),
            "ticks": ticks.tolist(), "live": lv.astype(int).tolist(), "sim": sv.astype(int).tolist(),
        }  # fmt: skip
    w_l, w_s = live.windows, sim.windows
    n = min(w_l["start_s"].size, w_s["start_s"].size, round(end_s / scenario.window_s))
    for name, res in (("live", live), ("sim", sim)):  # pods' GPU-seconds over the load's span, both sides alike
        out[f"{name}_gpu_s"] = {pool: float(np.sum(res.windows[f"{pool}_gpu_seconds"][:n]))
                                for pool in ("prefill", "decode")}  # fmt: skip
    out["windows"] = {k: {"live": w_l[k][:n].tolist(), "sim": w_s[k][:n].tolist()}
                      for k in ("start_s", "ttft_p99_s", "itl_p99_s", "arrivals", "ok")}  # fmt: skip
    comp_l, comp_s = float(np.mean(w_l["ok"][:n])), float(np.mean(w_s["ok"][:n]))
    gl, gs = sum(out["live_gpu_s"].values()) / 3600, sum(out["sim_gpu_s"].values()) / 3600
    out["compliance"] = {"live": comp_l, "sim": comp_s, "diff": comp_l - comp_s}
    out["gpu_hours"] = {"live": gl, "sim": gs, "rel_diff": (gl - gs) / gs if gs else float("nan")}
    out["targets_met"] = {
        "compliance": abs(comp_l - comp_s) <= TARGETS["compliance"],
        "gpu_hours": abs(out["gpu_hours"]["rel_diff"]) <= TARGETS["gpu_hours_rel"],
        "replicas": all(p["within_1"] >= TARGETS["replicas_within_1"] for p in out["pools"].values()),
    }
    return out


def print_report(scenario: Scenario, cmp: dict[str, Any], live: SimResult, sim: SimResult,
                 outcomes: dict[str, float]) -> None:  # fmt: skip
    s = scenario
    print(f"scenario: {s.workload.name}, {len(s.workload)} requests over {s.workload.duration_s:.0f} s, profile "
          f"{s.profile.name} (max {s.profile.max_num_seqs} seqs), start-up {s.startup_s:g} s, tick {s.tick_s:g} s, "
          f"scrape {s.scrape_interval_s:g} s, rate window {s.spec.metrics.window_s:g} s, compliance windows "
          f"{s.window_s:g} s; SLO TTFT p{s.spec.ttft.percentile * 100:g} <= {s.spec.ttft.target_s:g} s, ITL "
          f"p{s.spec.itl.percentile * 100:g} <= {s.spec.itl.target_s:g} s")  # fmt: skip
    print("\nreplicas (desired) at each tick, live / sim:")
    for pool, p in cmp["pools"].items():
        pairs = " ".join(f"{a}/{b}" for a, b in zip(p["live"], p["sim"], strict=True))
        print(f"  {pool:7s} {pairs}")
    print("\nper 15 s window: TTFT p99 live/sim (s), ITL p99 live/sim (ms), SLO met live/sim")
    w = cmp["windows"]
    for i, start in enumerate(w["start_s"]["live"]):
        tl, ts = w["ttft_p99_s"]["live"][i], w["ttft_p99_s"]["sim"][i]
        il, is_ = w["itl_p99_s"]["live"][i], w["itl_p99_s"]["sim"][i]
        ok = f"{'y' if w['ok']['live'][i] else 'N'}/{'y' if w['ok']['sim'][i] else 'N'}"
        print(f"  {start:5.0f} s  n={w['arrivals']['live'][i]:4.0f}  TTFT {tl:6.3f} / {ts:6.3f}   "
              f"ITL {il * 1000:6.1f} / {is_ * 1000:6.1f}   {ok}")
    print("\n| pool | live max | sim max | ticks within +-1 (target >= 0.90) | mean abs diff |")
    print("|---|---|---|---|---|")
    for pool, p in cmp["pools"].items():
        print(f"| {pool} | {p['live_max']} | {p['sim_max']} | {p['within_1']:.2f} | {p['mean_abs_diff']:.2f} |")
    c, g = cmp["compliance"], cmp["gpu_hours"]
    print("\n| | live | sim | difference | target |")
    print("|---|---|---|---|---|")
    print(f"| window compliance | {c['live']:.3f} | {c['sim']:.3f} | {c['diff']:+.3f} | within 0.05 |")
    for pool in ("prefill", "decode"):
        print(f"| GPU-hours {pool} | {cmp['live_gpu_s'][pool] / 3600:.3f} | {cmp['sim_gpu_s'][pool] / 3600:.3f} | "
              f"{(cmp['live_gpu_s'][pool] - cmp['sim_gpu_s'][pool]) / 3600:+.3f} | |")
    print(f"| GPU-hours | {g['live']:.3f} | {g['sim']:.3f} | {g['rel_diff']:+.1%} | within 10 % |")
    for key in ("ttft_p99_s", "itl_p99_s"):
        print(f"| whole-run {key} | {live.summary[key]:.4f} | {sim.summary[key]:.4f} | "
              f"{live.summary[key] - sim.summary[key]:+.4f} | |")
    print(f"| requests completed | {live.summary['completed']}/{live.summary['requests']} | "
          f"{sim.summary['completed']}/{sim.summary['requests']} | | |")
    print(f"\nproxy outcomes (live): {outcomes}")
    print(f"targets met: {cmp['targets_met']}")


# ---------------------------------------------------------------- saving a live run


def save(path: Path, run: LiveRun) -> None:
    data = {"records": [dataclasses.asdict(r) for r in run.records],
            "history": [dataclasses.asdict(e) for e in run.history],
            "t0": run.t0, "timeline": {k: v.tolist() for k, v in run.timeline.items()},
            "scale_events": run.scale_events, "wall_s": run.wall_s, "proxy_outcomes": run.proxy_outcomes}  # fmt: skip
    path.write_text(json.dumps(data))


def load(path: Path) -> LiveRun:
    data = json.loads(path.read_text())
    return LiveRun([RequestRecord(**r) for r in data["records"]], [HistoryEvent(**e) for e in data["history"]],
                   data["t0"],
                   {k: np.asarray(v, dtype=np.float64) for k, v in data["timeline"].items()}, data["scale_events"],
                   data["wall_s"], data["proxy_outcomes"])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", metavar="FILE", help="write the live run's raw data here")
    ap.add_argument("--load", metavar="FILE", help="skip the live run: compare against a saved one")
    ap.add_argument("--workdir", metavar="DIR", help="the live cluster's logs (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    ap.add_argument("--scrape-phases", type=int, default=1, metavar="N",
                    help="simulated Prometheus scrapes each target at one of N phases of the interval (1: all at "
                         "the tick instants)")
    ap.add_argument("--discovery-s", type=float, default=DISCOVERY_S, metavar="S",
                    help="simulated Prometheus makes a ready pod a scrape target this long after it is ready "
                         f"(default {DISCOVERY_S:g}: half Prometheus' 5 s discovery update cycle; 0: at once)")
    ap.add_argument("--sim-only", action="store_true", help="only simulate the scenario (its shape, in seconds)")
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack if a run seems stuck
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pdscale-sim-vs-live-"))
    cluster = LocalCluster(CLUSTER, workdir)
    if args.sim_only:
        cluster.write_profile()
        scenario = scenario_for(cluster, args.seed)
        sim = replay(scenario, make_policy("pdscale", scenario.profile, scenario.spec), discovery_s=args.discovery_s)
        ticks = np.arange(0.0, scenario.workload.duration_s + 1e-9, scenario.tick_s)
        for pool in ("prefill", "decode"):
            print(pool, at_ticks(sim.timeline, f"{pool}_desired", ticks).astype(int).tolist())
        print({k: sim.summary[k] for k in ("window_compliance", "gpu_hours", "ttft_p99_s", "itl_p99_s", "requests")})
        return 0
    if args.load:
        cluster.write_profile()  # the same profile file the live run used
        run = load(Path(args.load))
    else:
        print(f"live run ({DURATION_S:.0f} s of load, logs in {workdir}) ...", file=sys.stderr, flush=True)
        with cluster:
            run = run_live(cluster, args.seed, on_sample=print_progress(cluster))
        if args.save:
            save(Path(args.save), run)
    scenario = scenario_for(cluster, args.seed)
    live = live_result(scenario, run.records, run.history, run.t0, run.timeline, CLUSTER.namespace,
                       scale_events=run.scale_events, wall_s=run.wall_s)  # fmt: skip
    print("simulating ...", file=sys.stderr, flush=True)
    sim = replay(scenario, make_policy("pdscale", scenario.profile, scenario.spec), scrape_phases=args.scrape_phases,
                 discovery_s=args.discovery_s)
    cmp = compare(scenario, live, sim)
    if args.json:
        json.dump({k: v for k, v in cmp.items()}, sys.stdout, indent=1, default=str)
        print()
    else:
        print_report(scenario, cmp, live, sim, run.proxy_outcomes)
    return 0 if all(cmp["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

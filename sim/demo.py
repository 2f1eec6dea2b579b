"""``pdscale demo``: pdscale scaling a simulated Llama-3.1-8B P/D deployment through two opposite surges.

No files and no cluster: the embedded demo workload (``sim.workload.demo_workload``: a prompt-heavy surge, then a
generation-heavy one), the built-in ``llama-3.1-8b-h100-tp1`` profile, pods that take 120 s to start, and the
pdscale policy in the real ``Controller``. The simulation itself takes a few seconds; the terminal view then
plays the recorded run back at ``--speed`` simulated seconds per wall second (live ``rich`` panels on a TTY,
one line per decision otherwise), and ends with a summary table and the paths of the PNG plots.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.core.spec import AutoscalerSpec, PoolSpec
from autoscaler.core.types import Decision, Pool, Reason

PROFILE = "llama-3.1-8b-h100-tp1"
STARTUP_S = 120.0
QUIET_REASONS = {
    Reason.WITHIN_TARGET.value,
    Reason.SCALE_DOWN_STABILIZED.value,
    Reason.SCALE_DOWN_LIMIT.value,
}


def demo_spec() -> AutoscalerSpec:
    """The demo's autoscaler: SLO TTFT p99 <= 1 s and ITL p99 <= 50 ms, 1..32 replicas per pool, pdscale's default
    behavior (HPA's rules with a 240 s scale-down window and at most 25 % removed per minute,
    ``autoscaler.core.spec.pdscale_default_behavior``)."""
    return AutoscalerSpec(
        prefill=PoolSpec(min_replicas=1, max_replicas=32),
        decode=PoolSpec(min_replicas=1, max_replicas=32),
        pod_startup_s=STARTUP_S,
    )


def run_demo_simulation(seed: int = 0) -> Any:
    """Replay the demo scenario under pdscale; returns ``sim.replay.SimResult``."""
    from autoscaler.profiles import load_profile
    from sim.policies import make_policy
    from sim.replay import replay
    from sim.scenario import Scenario
    from sim.workload import demo_workload

    profile = load_profile(PROFILE)
    spec = demo_spec()
    scenario = Scenario(
        workload=demo_workload(seed),
        profile=profile,
        spec=spec,
        initial_prefill=2,
        initial_decode=2,
        startup_s=STARTUP_S,
        seed=seed,
        name="demo",
        policy="pdscale",
        drain_s=300.0,
    )
    return replay(scenario, make_policy("pdscale", profile, spec))


def decision_lines(decisions: list[tuple[float, Decision]]) -> Iterator[tuple[float, str]]:
    """One line per pool decision worth reading: replica changes and changes of reason."""
    last: dict[Pool, str] = {}
    for t_s, decision in decisions:
        for pd in (decision.prefill, decision.decode):
            interesting = pd.changes or (pd.reason != last.get(pd.pool) and pd.reason not in QUIET_REASONS)
            last[pd.pool] = pd.reason
            if interesting:
                arrow = f"{pd.current_replicas:>2d} -> {pd.desired_replicas:<2d}"
                yield t_s, f"t={t_s:6.0f}s {pd.pool.value:<7s} {arrow} {pd.reason}: {pd.message}"


def _at(series: dict[str, np.ndarray], key: str, t_s: float, time_key: str) -> float:
    times = series[time_key]
    i = int(np.searchsorted(times, t_s, side="right")) - 1
    return float(series[key][i]) if 0 <= i < times.size else float("nan")


def _window_at(result: Any, t_s: float) -> dict[str, float]:
    """The last complete 60 s window before ``t_s`` (exact per-request percentiles, what a user saw)."""
    w = result.windows
    done = np.nonzero(w["end_s"] <= t_s)[0]
    if done.size == 0:
        return {}
    i = int(done[-1])
    return {k: float(w[k][i]) for k in ("arrival_rate_per_s", "prompt_tokens_per_s", "output_tokens_per_s",
                                         "ttft_p99_s", "itl_p99_s")}  # fmt: skip


@dataclass(frozen=True)
class Frame:
    """One moment of the demo's terminal view, whatever produced it (a simulated run, or the live cluster)."""

    title: str
    window: str  # what the load and latency rows cover, e.g. "last 60 s"
    load: tuple[float, float, float] | None  # requests/s, prompt tokens/s, output tokens/s
    pools: dict[str, tuple[float, float, float]]  # pool -> (ready, starting, desired)
    latency: dict[str, tuple[float, float]]  # "ttft"/"itl" -> (p99 seconds or NaN, target seconds)
    log: list[str]


def frame_at(result: Any, t_s: float, log: list[str]) -> Frame:
    """The view of a recorded (simulated) run at ``t_s``."""
    s = result.summary
    win = _window_at(result, t_s)
    tl = result.timeline
    load = (win["arrival_rate_per_s"], win["prompt_tokens_per_s"], win["output_tokens_per_s"]) if win else None
    pools = {pool: (_at(tl, f"{pool}_ready", t_s, "time_s"), _at(tl, f"{pool}_starting", t_s, "time_s"),
                    _at(tl, f"{pool}_desired", t_s, "time_s")) for pool in ("prefill", "decode")}  # fmt: skip
    latency = {key: (win.get(f"{key}_p99_s", float("nan")), s[f"{key}_target_s"]) for key in ("ttft", "itl")}
    title = f"pdscale demo  t = {t_s:5.0f} s / {s['sim_duration_s']:.0f} s"
    return Frame(title, f"last {result.scenario.window_s:g} s" if result.scenario else "last window", load, pools,
                 latency, log)  # fmt: skip


def render(frame: Frame) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table(title=frame.title, expand=True)
    for col in ("", "value", "target / detail"):
        table.add_column(col)
    if frame.load is not None:
        rate, prompt, output = frame.load
        table.add_row(f"load ({frame.window})", f"{rate:.1f} req/s",
                      f"prompt {prompt / 1000:.1f}k tok/s, output {output / 1000:.2f}k tok/s")  # fmt: skip
    for pool, (ready, starting, desired) in frame.pools.items():
        table.add_row(f"{pool} replicas", f"{ready:.0f} ready + {starting:.0f} starting", f"desired {desired:.0f}")
    for key, (value, target) in frame.latency.items():
        colour = "green" if value <= target else "red"
        shown = f"[{colour}]{value:.3f} s[/{colour}]" if np.isfinite(value) else "-"
        table.add_row(f"{key.upper()} p99 ({frame.window})", shown, f"<= {target:g} s")
    text = Text("\n".join(frame.log[-8:]) or "waiting for the first decision", no_wrap=True, overflow="ellipsis")
    return Group(table, Panel(text, title="decisions"))


def play(result: Any, speed: float, live: bool) -> None:
    """Show the recorded run at ``speed`` simulated seconds per wall second."""
    lines = list(decision_lines(result.decisions))
    end_s = float(result.summary["sim_duration_s"])
    if not live:
        for _, line in lines:
            print(line)
        return
    from rich.live import Live

    log: list[str] = []
    k = 0
    step_s = 15.0
    with Live(render(frame_at(result, 0.0, log)), refresh_per_second=8, transient=False) as view:
        t = 0.0
        while t <= end_s:
            while k < len(lines) and lines[k][0] <= t:
                log.append(lines[k][1])
                k += 1
            view.update(render(frame_at(result, t, log)))
            time.sleep(step_s / speed)
            t += step_s


def summary_table(result: Any) -> Any:
    from rich.table import Table

    s = result.summary
    window_s = result.scenario.window_s if result.scenario is not None else 60.0
    table = Table(title=f"pdscale demo{' --live' if 'live' in str(s.get('policy', '')) else ''}: summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("requests (completed)", f"{s['requests']} ({s['completed']})"),
        ("TTFT p99 / target", f"{s['ttft_p99_s']:.3f} s / {s['ttft_target_s']:g} s"),
        ("ITL p99 / target", f"{s['itl_p99_s'] * 1000:.1f} ms / {s['itl_target_s'] * 1000:g} ms"),
        ("request SLO attainment", f"{s['request_slo_attainment']:.1%}"),
        (f"{window_s:g} s windows meeting both SLOs", f"{s['windows_ok']}/{s['windows_total']} ({s['window_compliance']:.1%})"),
        ("GPU-hours (prefill + decode)", f"{s['gpu_hours']:.2f} ({s['gpu_hours_prefill']:.2f} + {s['gpu_hours_decode']:.2f})"),
        ("max replicas prefill / decode", f"{s['prefill_replicas_max']} / {s['decode_replicas_max']}"),
        ("scale events", str(s["scale_events"])),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def _prom_value(prom: Any, query: str) -> float:
    try:
        rows = prom.query(query)
    except Exception:  # Prometheus restarting or a query error: show "-"
        return float("nan")
    return float(rows[0]["value"][1]) if rows else float("nan")


def live_frame(cluster: Any, t_s: float, end_s: float, t0: float, window_s: float) -> Frame:
    """The view of the live cluster now: load and p99s as Prometheus sees them at the proxy over the rate
    window, replicas from the pod runner, decisions from the autoscaler's Kubernetes events."""
    from workers.local.kube_tables import parse_time

    ns, w = cluster.ns, f"{window_s:g}s"
    prom = cluster.prometheus
    sel = f'namespace="{ns}"'
    load = tuple(_prom_value(prom, f"sum(rate({m}{{{sel}}}[{w}]))") for m in (
        "pdscale_proxy_requests_total", "pdscale_proxy_prompt_tokens_total", "pdscale_proxy_generation_tokens_total"))
    latency = {key: (_prom_value(prom, f"histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{{{sel}}}[{w}])))"),
                     target) for key, metric, target in (
        ("ttft", "pdscale_proxy_time_to_first_token_seconds", cluster.spec.ttft_target_s),
        ("itl", "pdscale_proxy_inter_token_latency_seconds", cluster.spec.itl_target_s))}  # fmt: skip
    pools = {pool: (float(st.ready), float(st.starting), float(st.desired))
             for pool, st in sorted(cluster.pool_state().items(), key=lambda kv: kv[0] != "prefill")}  # fmt: skip
    log = []
    for e in sorted(cluster.events("SuccessfulRescale"), key=lambda e: str(e.get("lastTimestamp"))):
        when = parse_time(e.get("lastTimestamp"))
        log.append(f"t={(when.timestamp() - t0) if when else 0.0:6.0f}s {e.get('message', '')}")
    return Frame(f"pdscale demo --live  t = {t_s:5.0f} s / {end_s:.0f} s", f"last {window_s:g} s, Prometheus",
                 load if all(np.isfinite(load)) else None, pools, latency, log)  # fmt: skip


def live_demo(args: argparse.Namespace) -> int:
    """The surge scenario through the one-machine cluster (``pdscale up``'s), with the same view and plots."""
    from rich.console import Console

    from sim.report import write_plots
    from workers.local.cluster import LocalCluster
    from workers.local.live_result import live_result
    from workers.local.surge import (
        CLUSTER,
        DURATION_S,
        SUMMARY_WINDOW_S,
        progress_line,
        run_live,
        scenario_for,
    )

    console = Console()
    live = console.is_terminal and not args.no_live
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pdscale-demo-live-"))
    print(f"starting the one-machine cluster in {workdir} (Kubernetes emulator, pods, Prometheus, proxy, "
          "controller) ...", file=sys.stderr)  # fmt: skip
    cluster = LocalCluster(CLUSTER, workdir)
    with cluster:
        print(cluster.describe(), file=sys.stderr)
        view: Any = None
        shown = [0.0, -15.0]  # last frame, last printed line

        def on_sample(t_s: float) -> None:
            if view is not None and t_s - shown[0] >= 1.0:
                shown[0] = t_s
                view.update(render(live_frame(cluster, t_s, DURATION_S, time.time() - t_s, CLUSTER.window_s)))
            elif view is None and t_s - shown[1] >= 15.0:
                shown[1] = t_s
                print(progress_line(cluster, t_s), flush=True)

        if live:
            from rich.live import Live

            with Live(console=console, refresh_per_second=4, transient=False) as view:
                run = run_live(cluster, args.seed, on_sample=on_sample)
        else:
            run = run_live(cluster, args.seed, on_sample=on_sample)
            for e in cluster.events("SuccessfulRescale"):
                print(e.get("message", ""))
        scenario = scenario_for(cluster, args.seed)
    result = live_result(scenario, run.records, run.history, run.t0, run.timeline, CLUSTER.namespace,
                         scale_events=run.scale_events, wall_s=run.wall_s)  # fmt: skip
    if scenario.window_s != SUMMARY_WINDOW_S:  # pragma: no cover - one definition of the scenario
        raise AssertionError("surge scenario windows disagree")
    console.print(summary_table(result))
    out = Path(args.out) if args.out else workdir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    for path in write_plots(result, out):
        console.print(f"plot: {path}")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.report import write_plots

    if args.live:
        return live_demo(args)
    console = Console()
    if args.speed <= 0:
        print("pdscale demo: --speed must be > 0", file=sys.stderr)
        return 2
    live = console.is_terminal and not args.no_live
    print("simulating (Llama-3.1-8B on H100, 120 s pod start-up, prompt-heavy then generation-heavy surge)...",
          file=sys.stderr)  # fmt: skip
    result = run_demo_simulation(args.seed)
    play(result, args.speed, live)
    console.print(summary_table(result))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pdscale-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    for path in write_plots(result, out):
        console.print(f"plot: {path}")
    return 0

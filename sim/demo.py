"""``pdscale demo``: pdscale scaling a simulated Llama-3.1-8B P/D deployment through two opposite surges, side by
side with a stock HPA and a fixed allocation on the same scenario.

No files and no cluster: the embedded demo workload (``sim.workload.demo_workload``: a prompt-heavy surge, then a
generation-heavy one), the built-in ``llama-3.1-8b-h100-tp1`` profile, pods that take 120 s to start, and the
pdscale policy in the real ``Controller``. The simulation itself takes a few seconds; the terminal view then
plays the recorded run back at ``--speed`` simulated seconds per wall second (live ``rich`` panels with pdscale's
decisions and reasons on a TTY, one line per decision otherwise). Meanwhile two worker processes replay the same
scenario under the ``hpa`` baseline (an HPA per pool on the TTFT / ITL p99, autoscaling/v2 defaults) and under
the cheapest fixed allocation that meets the SLO in every window (found with hindsight by ``sim.oracle``'s
search). The demo ends with the side-by-side table (windows met, request SLO, GPU-hours, minutes above target),
pdscale's answer to each surge against the physical minimum (``sim.surges``), and PNG plots of pdscale's run and
of all three together.
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
INITIAL_REPLICAS = 2
COMPARISONS = ("hpa", "fixed")
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


def demo_scenario(seed: int = 0, policy: str = "pdscale") -> Any:
    """The demo's ``sim.scenario.Scenario``: 2 prefill and 2 decode replicas warm at t = 0."""
    from autoscaler.profiles import load_profile
    from sim.scenario import Scenario
    from sim.workload import demo_workload

    return Scenario(
        workload=demo_workload(seed),
        profile=load_profile(PROFILE),
        spec=demo_spec(),
        initial_prefill=INITIAL_REPLICAS,
        initial_decode=INITIAL_REPLICAS,
        startup_s=STARTUP_S,
        seed=seed,
        name="demo",
        policy=policy,
        drain_s=300.0,
    )


def run_demo_simulation(seed: int = 0, policy: str = "pdscale") -> Any:
    """Replay the demo scenario under ``policy`` (a registry name); returns ``sim.replay.SimResult``."""
    from sim.policies import make_policy
    from sim.replay import replay

    scenario = demo_scenario(seed, policy)
    return replay(scenario, make_policy(policy, scenario.profile, scenario.spec))


def compact(result: Any, label: str) -> dict[str, Any]:
    """What the side-by-side needs of a run (plain arrays: it crosses process boundaries)."""
    keep_w = ("start_s", "ok", "counted", "ttft_p99_s", "itl_p99_s")
    keep_t = ("time_s", "prefill_desired", "prefill_ready", "decode_desired", "decode_ready")
    return {
        "label": label,
        "summary": dict(result.summary),
        "windows": {k: np.asarray(result.windows[k]) for k in keep_w},
        "timeline": {k: np.asarray(result.timeline[k]) for k in keep_t},
    }


def comparison_run(kind: str, seed: int) -> dict[str, Any]:
    """One side-by-side run in a worker process: ``hpa``, or ``fixed`` (the cheapest fixed prefill/decode
    allocation meeting the SLO in every window, searched with hindsight on the demo workload)."""
    if kind == "hpa":
        return compact(run_demo_simulation(seed, "hpa"), "hpa")
    if kind != "fixed":
        raise ValueError(f"unknown comparison run {kind!r}")
    from dataclasses import replace

    from sim.oracle import SimSettings, StaticSearch
    from sim.replay import replay

    scenario = demo_scenario(seed, "static")
    search = StaticSearch(scenario.workload, SimSettings.of(scenario), scenario.window_s, target=1.0)
    best = search.search((INITIAL_REPLICAS, INITIAL_REPLICAS))
    p, d = (best.prefill, best.decode) if best is not None else (scenario.spec.prefill.max_replicas,) * 2
    result = replay(replace(scenario, initial_prefill=p, initial_decode=d, startup_s=0.0))
    return compact(result, f"fixed {p}P/{d}D" + ("" if best is not None else " (none met the SLO: max)"))


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
    """pdscale's own run in detail."""
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


def side_by_side_table(runs: list[dict[str, Any]], window_s: float = 60.0) -> Any:
    """One row per policy on the same scenario: windows met, request SLO, GPU-hours, minutes above target."""
    from rich.table import Table

    table = Table(title="side by side on the same scenario (25 min, pods start in 120 s)")
    # columns: policy, windows met, request SLO, GPU-hours, minutes above target, max replicas, scale events
    for col in ("policy", "60 s windows met", "request SLO", "GPU-hours", "minutes above target",
                "max replicas P / D", "scale events"):
        table.add_column(col, justify="left" if col == "policy" else "right")  # fmt: skip
    for run in runs:
        s = run["summary"]
        failed = s["windows_total"] - s["windows_ok"]
        table.add_row(
            run["label"],
            f"{s['windows_ok']}/{s['windows_total']}",
            f"{s['request_slo_attainment']:.1%}",
            f"{s['gpu_hours']:.2f}",
            f"{failed * window_s / 60.0:.0f}",
            f"{s['prefill_replicas_max']} / {s['decode_replicas_max']}",
            str(s["scale_events"]),
        )
    return table


def surge_table(result: Any) -> Any:
    """pdscale's answer to each of the demo's surges against the physical minimum (``sim.surges``)."""
    from rich.table import Table

    from sim.suite import Surge
    from sim.surges import surge_report
    from sim.workload import DEMO_DECODE_SURGE_S, DEMO_PROMPT_SURGE_S

    scenario = result.scenario
    table = Table(title="pdscale per surge: minutes above target vs the physical minimum "
                  "(start-up + draining the backlog with what was ordered at the first signal)")  # fmt: skip
    for col in ("surge", "pool", "first order after", "ready → ordered", "drain", "minutes above target",
                "physical minimum"):
        table.add_column(col, justify="left" if col in ("surge", "pool") else "right")  # fmt: skip
    run = compact(result, "pdscale")
    for (start, end), label in ((DEMO_PROMPT_SURGE_S, "prompt-heavy"), (DEMO_DECODE_SURGE_S, "generation-heavy")):
        rows = surge_report(Surge(start, end, label), run, scenario.workload, scenario.profile, scenario.spec,
                            STARTUP_S, scenario.window_s)  # fmt: skip
        for r in rows:
            drain = r["drain_s"]
            table.add_row(
                label, r["pool"],
                "-" if r["detect_s"] is None else f"{r['detect_s']:.0f} s",
                "-" if r["ordered"] is None else f"{r['ready_before']} → {r['ordered']}",
                "-" if drain is None else ("never" if not np.isfinite(drain) else f"{drain:.0f} s"),
                f"{r['minutes_above_target']:.0f}",
                "-" if r["physical_min_minutes"] is None else f"{r['physical_min_minutes']:.1f}",
            )  # fmt: skip
    return table


def write_comparison_plot(runs: list[dict[str, Any]], target_ttft_s: float, target_itl_s: float, out: Path) -> Path:
    """comparison.png: ordered replicas per pool and window p99s against the targets, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    for run in runs:
        tl, w = run["timeline"], run["windows"]
        minutes = tl["time_s"] / 60.0
        for ax, pool in zip(axes[:2], ("prefill", "decode"), strict=True):
            ax.step(minutes, tl[f"{pool}_desired"], where="post", label=run["label"])
        mid = (w["start_s"] + 30.0) / 60.0
        for ax, key in ((axes[2], "ttft_p99_s"), (axes[3], "itl_p99_s")):
            values = np.asarray(w[key], dtype=float)
            ax.plot(mid, np.where(np.isfinite(values), values, np.nan), ".-", label=run["label"])
    for ax, name in zip(axes[:2], ("prefill", "decode"), strict=True):
        ax.set_ylabel(f"{name} replicas (ordered)")
    for ax, name, target in ((axes[2], "TTFT p99 (s)", target_ttft_s), (axes[3], "ITL p99 (s)", target_itl_s)):
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label="target")
        ax.set_yscale("log")
        ax.set_ylabel(name)
    axes[0].legend(loc="upper left", fontsize="small")
    axes[2].legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("time (min)")
    axes[0].set_title("pdscale, HPA and a fixed allocation on the same scenario")
    fig.tight_layout()
    path = out / "comparison.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    from concurrent.futures import ProcessPoolExecutor

    from rich.console import Console

    from sim.report import write_plots

    if args.live:
        return live_demo(args)
    console = Console()
    if args.speed <= 0:
        print("pdscale demo: --speed must be > 0", file=sys.stderr)
        return 2
    live = console.is_terminal and not args.no_live
    print("simulating (Llama-3.1-8B on H100, 120 s pod start-up, prompt-heavy then generation-heavy surge; "
          "HPA and a fixed allocation alongside)...", file=sys.stderr)  # fmt: skip
    with ProcessPoolExecutor(max_workers=len(COMPARISONS)) as pool:
        others = [pool.submit(comparison_run, kind, args.seed) for kind in COMPARISONS]
        result = run_demo_simulation(args.seed)
        play(result, args.speed, live)
        runs = [compact(result, "pdscale"), *(f.result() for f in others)]
    console.print(summary_table(result))
    console.print(side_by_side_table(runs, result.scenario.window_s))
    console.print(
        "  hpa: a stock HPA per pool on the TTFT / ITL p99 (autoscaling/v2 defaults); fixed: the cheapest fixed "
        "allocation meeting the SLO in every window, found with hindsight; minutes above target: 60 s windows "
        "that missed the SLO"
    )
    console.print(surge_table(result))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pdscale-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    s = result.summary
    paths = [*write_plots(result, out), write_comparison_plot(runs, s["ttft_target_s"], s["itl_target_s"], out)]
    for path in paths:
        console.print(f"plot: {path}")
    return 0

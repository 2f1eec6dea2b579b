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


def _render(result: Any, t_s: float, log: list[str]) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    s = result.summary
    win = _window_at(result, t_s)
    tl = result.timeline
    table = Table(title=f"pdscale demo  t = {t_s:5.0f} s / {s['sim_duration_s']:.0f} s", expand=True)
    for col in ("", "value", "target / detail"):
        table.add_column(col)
    if win:
        table.add_row(
            "load (last 60 s)",
            f"{win['arrival_rate_per_s']:.1f} req/s",
            f"prompt {win['prompt_tokens_per_s'] / 1000:.0f}k tok/s, output {win['output_tokens_per_s'] / 1000:.1f}k tok/s",
        )
    for pool in ("prefill", "decode"):
        ready = _at(tl, f"{pool}_ready", t_s, "time_s")
        starting = _at(tl, f"{pool}_starting", t_s, "time_s")
        desired = _at(tl, f"{pool}_desired", t_s, "time_s")
        table.add_row(
            f"{pool} replicas", f"{ready:.0f} ready + {starting:.0f} starting", f"desired {desired:.0f}"
        )
    for key, target in (("ttft", s["ttft_target_s"]), ("itl", s["itl_target_s"])):
        value = win.get(f"{key}_p99_s", float("nan"))
        ok = value <= target
        colour = "green" if ok else "red"
        shown = f"[{colour}]{value:.3f} s[/{colour}]" if np.isfinite(value) else "-"
        table.add_row(f"{key.upper()} p99 (last 60 s)", shown, f"<= {target:g} s")
    text = Text("\n".join(log[-8:]) or "waiting for the first decision", no_wrap=True, overflow="ellipsis")
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
    with Live(_render(result, 0.0, log), refresh_per_second=8, transient=False) as view:
        t = 0.0
        while t <= end_s:
            while k < len(lines) and lines[k][0] <= t:
                log.append(lines[k][1])
                k += 1
            view.update(_render(result, t, log))
            time.sleep(step_s / speed)
            t += step_s


def summary_table(result: Any) -> Any:
    from rich.table import Table

    s = result.summary
    table = Table(title="pdscale demo: summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("requests (completed)", f"{s['requests']} ({s['completed']})"),
        ("TTFT p99 / target", f"{s['ttft_p99_s']:.3f} s / {s['ttft_target_s']:g} s"),
        ("ITL p99 / target", f"{s['itl_p99_s'] * 1000:.1f} ms / {s['itl_target_s'] * 1000:g} ms"),
        ("request SLO attainment", f"{s['request_slo_attainment']:.1%}"),
        ("60 s windows meeting both SLOs", f"{s['windows_ok']}/{s['windows_total']} ({s['window_compliance']:.1%})"),
        ("GPU-hours (prefill + decode)", f"{s['gpu_hours']:.2f} ({s['gpu_hours_prefill']:.2f} + {s['gpu_hours_decode']:.2f})"),
        ("max replicas prefill / decode", f"{s['prefill_replicas_max']} / {s['decode_replicas_max']}"),
        ("scale events", str(s["scale_events"])),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def demo_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.report import write_plots

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

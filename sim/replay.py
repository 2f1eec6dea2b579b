"""Replay a scenario: the simulated cluster, the simulated Prometheus and the real ``Controller``, in lock-step.

Time advances over the union of scrape times (every ``scrape_interval_s``) and controller ticks (every
``tick_s``), both from t=0: the engine runs up to t, Prometheus scrapes at t, then the controller ticks at t
(so a tick sees the scrape taken at the same instant, as a Prometheus query right after a scrape would).
Ticks stop after the last arrival; the engine then finishes in-flight work for at most ``drain_s`` more seconds.
A closed loop (``Scenario.closed_loop``) has no arrival times up front: ticks run to its ``duration`` if it has one,
else until its users have sent the last request of the list (the schedule is extended as the run goes).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoscaler.controller import Controller
from autoscaler.core.types import Decision, Pool
from autoscaler.ports import Policy
from sim.policies import make_policy
from sim.scenario import MAX_STEPS, Scenario
from sim.view import SimClock, SimMetricsSource, SimPrometheus, SimScaleTarget

TIMELINE_KEYS = (
    "time_s",
    "prefill_desired", "prefill_ready", "prefill_starting", "prefill_draining",
    "decode_desired", "decode_ready", "decode_starting", "decode_draining",
    "prefill_waiting", "prefill_running", "prefill_kv_usage",
    "decode_waiting", "decode_running", "decode_kv_usage",
)  # fmt: skip


@dataclass
class SimResult:
    summary: dict[str, Any]
    windows: dict[str, np.ndarray]
    records: Any  # sim.engine.RequestRecords
    decisions: list[tuple[float, Decision]]
    # Cluster truth at every scrape time (all pods, visible or not), keys TIMELINE_KEYS: desired = ordered
    # (ready + starting), ready = taking new work (draining excluded), waiting/running summed and KV usage
    # averaged over the pool's serving (ready or draining) pods.
    timeline: dict[str, np.ndarray]
    scenario: Scenario | None = None
    tick_errors: list[tuple[float, str]] = field(default_factory=list)

    @property
    def replicas(self) -> dict[str, np.ndarray]:
        """The replica timeline (desired/ready/starting/draining per pool over time)."""
        keys = [
            k
            for k in TIMELINE_KEYS
            if k == "time_s" or k.endswith(("desired", "ready", "starting", "draining"))
        ]
        return {k: self.timeline[k] for k in keys}


_FIRST_OPEN_ENDED_SPAN_S = 3600.0  # a closed loop bounded by its request count: first guess of its span


def _snapshot(engine: Any, t_s: float) -> list[float]:
    """Exact cluster state at ``t_s`` (not the scraped view): replicas by state, queue, batch, KV usage."""
    row: list[float] = [t_s]
    loads: list[float] = []
    for pool in (Pool.PREFILL, Pool.DECODE):
        reps = engine.replicas(pool)
        pods = engine.pods(pool)
        states = [p.state for p in pods]
        row += [reps.desired, reps.ready, states.count("starting"), states.count("draining")]
        serving = [p for p in pods if p.state in ("ready", "draining")]
        kv = [p.counters.kv_cache_usage_perc for p in serving]
        loads += [
            float(sum(p.counters.num_requests_waiting for p in serving)),
            float(sum(p.counters.num_requests_running for p in serving)),
            float(np.mean(kv)) if kv else math.nan,
        ]
    return row + loads


def _times(end_s: float, step_s: float) -> np.ndarray:
    return np.arange(0, math.floor(end_s / step_s + 1e-9) + 1) * step_s


def replay(
    scenario: Scenario,
    policy: Policy[Any] | None = None,
    *,
    progress: bool = False,
    scrape_phases: int = 1,
    discovery_s: float = 0.0,
) -> SimResult:
    """Run ``scenario`` under ``policy`` (default: the scenario's policy, itself 'static' unless named).

    ``scrape_phases`` > 1 scrapes each target at its own phase of the interval (``SimPrometheus``), as a real
    Prometheus does; 1 scrapes every target at the tick instants. ``discovery_s``: how long after it is ready a pod
    becomes a scrape target (``SimPrometheus``)."""
    # the engine is imported late so that tooling can load this module
    from sim.engine import ClosedLoopArrivals, Engine, EngineConfig
    from sim.summary import summarize

    wall0 = time.perf_counter()
    if policy is None:
        policy = make_policy(scenario.policy, scenario.profile, scenario.spec, **dict(scenario.policy_params))
    config = EngineConfig(
        profile=scenario.profile,
        mode=scenario.mode,
        router=scenario.router,
        startup_s=scenario.startup_s,
        startup_jitter=scenario.startup_jitter,
        seed=scenario.seed,
    )
    loop = scenario.closed_loop
    arrivals = None
    if loop is not None:
        arrivals = ClosedLoopArrivals(
            loop.users, loop.think_s, math.inf if loop.duration_s is None else loop.duration_s, loop.more_lengths
        )
    engine = Engine(
        scenario.workload, config, scenario.initial_prefill, scenario.initial_decode, closed_loop=arrivals
    )
    prom = SimPrometheus(
        engine,
        scrape_interval_s=scenario.scrape_interval_s,
        retention_s=max(3600.0, 4 * scenario.spec.metrics.window_s),
        scrape_phases=scrape_phases,
        discovery_s=discovery_s,
        # the proxy counts each request as it arrives: an open loop's arrivals are known up front
        arrivals=None if loop is not None else (scenario.workload.arrival_s, scenario.workload.prompt_tokens),
    )
    clock = SimClock()
    target = SimScaleTarget(engine, clock, mode=scenario.mode)
    controller: Controller[Any] = Controller(
        scenario.name, scenario.spec, policy, SimMetricsSource(prom, mode=scenario.mode), target, clock
    )

    # Until when the controller ticks: the workload's span; a closed loop without a duration until its last send,
    # found as the run goes (the schedule doubles until then, at most MAX_STEPS ticks).
    open_ended = loop is not None and loop.duration_s is None
    if loop is not None:
        tick_end_s = loop.duration_s or _FIRST_OPEN_ENDED_SPAN_S
    else:
        last_arrival_s = float(scenario.workload.arrival_s[-1]) if len(scenario.workload) else 0.0
        tick_end_s = max(scenario.workload.duration_s, last_arrival_s)

    decisions: list[tuple[float, Decision]] = []
    errors: list[tuple[float, str]] = []
    rows: list[list[float]] = []
    bar = _progress(progress, tick_end_s)
    done_until_s = -math.inf
    while True:
        scrapes = prom.scrape_times(tick_end_s)
        ticks = _times(tick_end_s, scenario.tick_s)
        events = np.union1d(scrapes, ticks)
        scrape_set, tick_set = set(scrapes.tolist()), set(ticks.tolist())
        for t in events[events > done_until_s].tolist():
            engine.run_until(t)
            if t in scrape_set:
                prom.scrape(t)
                rows.append(_snapshot(engine, t))
            if t in tick_set:
                clock.set(t)
                result = controller.tick()
                decisions.append((t, result.decision))
                errors += [(t, e) for e in result.errors]
            if bar is not None:
                bar.update(t)
            done_until_s = t
            if open_ended and not engine.sending:
                break
        if not (open_ended and engine.sending):
            break
        assert loop is not None
        if tick_end_s / scenario.tick_s > MAX_STEPS:
            raise ValueError(
                f"{scenario.name}: the closed loop ({loop.users} users) had not sent its {loop.requests} requests "
                f"after {tick_end_s:,.0f} simulated seconds ({MAX_STEPS:,} controller ticks); give it a duration="
            )
        tick_end_s *= 2
    # After the last tick: let in-flight work finish, scraping on (for the timeline) up to the horizon.
    horizon_s = done_until_s + scenario.drain_s
    t = done_until_s
    while t < horizon_s and not _all_done(engine):
        t = min(horizon_s, t + scenario.scrape_interval_s)
        engine.run_until(t)
        prom.scrape(t)
        rows.append(_snapshot(engine, t))
    engine.finish(max_time_s=horizon_s)
    if bar is not None:
        bar.close()

    timeline = {k: np.array([r[i] for r in rows], dtype=np.float64) for i, k in enumerate(TIMELINE_KEYS)}
    records = engine.records()
    end_s = max(t, _last_event_s(records))
    windows, summary = summarize(
        records=records,
        scenario=scenario,
        policy_name=getattr(policy, "name", type(policy).__name__),
        timeline=timeline,
        decisions=decisions,
        pods=engine.pods(),
        gpu_seconds=engine.gpu_seconds(end_s),
        end_s=end_s,
        wall_s=time.perf_counter() - wall0,
        scale_events=len(target.writes),
    )
    summary["tick_errors"] = len(errors)
    return SimResult(summary, windows, records, decisions, timeline, scenario, errors)


def _all_done(engine: Any) -> bool:
    return bool(engine.all_done)


def _last_event_s(records: Any) -> float:
    last = np.asarray(records.last_token_s, dtype=np.float64)
    last = last[np.isfinite(last)]
    return float(last.max()) if last.size else 0.0


class _Bar:
    """A rich progress bar on stderr, over simulated seconds."""

    def __init__(self, total_s: float) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeElapsedColumn(), console=Console(stderr=True), transient=True,
        )  # fmt: skip
        self._task = self._progress.add_task("sim", total=max(total_s, 1.0))
        self._progress.start()

    def update(self, t_s: float) -> None:
        self._progress.update(self._task, completed=t_s)

    def close(self) -> None:
        self._progress.stop()


def _progress(enabled: bool, total_s: float) -> _Bar | None:
    if not enabled or not sys.stderr.isatty():
        return None
    return _Bar(total_s)

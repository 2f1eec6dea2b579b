"""pdscale's policy against NVIDIA Dynamo's planner, both inside Dynamo's own simulator (the mocker, ai-dynamo 1.6.1).

    make bench-dynamo            # creates .venv-dynamo (scripts/setup-dynamo-bench.sh), then runs this
    .venv-dynamo/bin/python bench/bench_vs_dynamo_mocker.py [--policy P,...] [--trace FILE] [--rate-scale K]
        [--duration-s S] [--startup-s S] [--latency-signal estimate|mean|none] [--json] [--out DIR]

One trace (default: the Azure 2023 conversation trace at x50, replicated as ``pdscale bench`` does), one engine
model (pdscale's latency profile as the mocker's timing table, ``bench/mocker_inputs.py``), one start-up time, one
initial allocation, and for each policy one replay in ``dynamo._core.run_mocker_trace_replay`` with that policy
as its ``scaling_policy``. Policies (``--policy``, comma-separated):

* any name of pdscale's policy registry (``pdscale``, ``dynamo-sla``: pdscale's port of Dynamo's G2 SLA-planner
  formulas, ``sim/baselines/dynamo.py``; ``static``; ``hpa``; ``keda-queue``), driven through
  ``MockerPolicyHook``: every ``--tick-s`` the mocker's snapshot becomes an ``Observation``
  (``bench/mocker_observation.py`` documents every field and what the snapshot lacks: no percentiles);
* ``dynamo-planner:<target>``: Dynamo's OWN planner, imported from the installed package and handed to the mocker
  exactly as ``dynamo.replay.run_trace_replay(planner_config=...)`` does (``create_replay_planner_adapter``,
  ``dynamo/planner/offline/replay_adapter.py``), with ``optimization_target`` ``throughput`` (its default),
  ``latency`` or ``sla``. ``sla`` cannot run here: its perf model lives in ``aisimulate_core``, which cannot be
  installed (``bench/dynamo_planner_import.py``); its row says so, with Dynamo's own error.

Scored from the mocker's per-request records with pdscale's definitions (``sim.summary.window_table``): window
compliance (share of 60 s windows whose TTFT p99 and ITL p99 meet the targets) and request SLO attainment;
GPU-hours from the mocker's worker-seconds (start-up included); scale events = the mocker's planner-scale
operations. Numbers, not pass/fail; re-run unchanged after model or policy changes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("DYN_LOG", "warn")  # the mocker's router logs every request at info

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autoscaler.core.latency import LatencyProfile  # noqa: E402
from autoscaler.core.spec import AutoscalerSpec  # noqa: E402
from bench.mocker_inputs import (  # noqa: E402
    DEFAULT_MAX_MODEL_LEN,
    MooncakeTrace,
    engine_args,
    timing_tables,
    write_mooncake,
)
from bench.mocker_observation import (  # noqa: E402
    LATENCY_SIGNALS,
    FpmCache,
    TrafficTotals,
    TrafficWindow,
    observation_from_snapshot,
)
from sim.bench import BenchConfig, BenchError, base_scenario, load_workloads  # noqa: E402
from sim.scenario import Scenario  # noqa: E402

DEFAULT_TRACE = REPO_ROOT.parent / "shared" / "traces" / "azure_llm_2023_conv.csv"
DEFAULT_POLICIES = (
    "pdscale", "dynamo-sla", "dynamo-planner:throughput", "dynamo-planner:latency", "dynamo-planner:sla", "static",
)  # fmt: skip
DYNAMO_TARGETS = ("throughput", "latency", "sla")
PLANNER_PREFIX = "dynamo-planner:"


class MockerPolicyHook:
    """The mocker's ``scaling_policy`` for a pdscale-style policy (``decide(observation, state, spec)``)."""

    def __init__(
        self,
        policy: Any,
        spec: AutoscalerSpec,
        profile: LatencyProfile,
        *,
        offset_s: float,
        tick_s: float,
        latency_signal: str,
        kv_transfer_s_per_token: float,
    ) -> None:
        self.policy, self.spec, self.profile = policy, spec, profile
        self.offset_s, self.tick_ms = offset_s, tick_s * 1e3
        self.latency_signal = latency_signal
        self.kv_transfer_s_per_token = kv_transfer_s_per_token
        self.state = policy.initial_state(spec)
        self.window = TrafficWindow(spec.metrics.window_s)
        self.prefill_fpms, self.decode_fpms = FpmCache(), FpmCache()
        self.messages: list[tuple[float, str, str]] = []

    def initial_tick_ms(self) -> float:
        return self.tick_ms

    def on_tick(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        now_ms = float(snapshot["now_ms"])
        totals = self.window.add(now_ms / 1e3, TrafficTotals.of(snapshot.get("traffic") or {}))
        prefill = self.prefill_fpms.update(snapshot.get("prefill_fpm_snapshots", []), snapshot["active_prefill_ids"])
        decode = self.decode_fpms.update(snapshot.get("decode_fpm_snapshots", []), snapshot["active_decode_ids"])
        obs = observation_from_snapshot(
            snapshot, totals, prefill, decode, profile=self.profile, offset_s=self.offset_s,
            latency_signal=self.latency_signal, kv_transfer_s_per_token=self.kv_transfer_s_per_token,
        )  # fmt: skip
        decision, self.state = self.policy.decide(obs, self.state, self.spec)
        out: dict[str, Any] = {"target_prefill": None, "target_decode": None, "next_tick_ms": now_ms + self.tick_ms}
        for key, pool_decision, replicas in (
            ("target_prefill", decision.prefill, obs.prefill),
            ("target_decode", decision.decode, obs.decode),
        ):
            if pool_decision.desired_replicas != replicas.desired:
                out[key] = int(pool_decision.desired_replicas)
                self.messages.append((obs.time_s, pool_decision.reason, pool_decision.message))
        return out


@dataclass
class Run:
    """One policy's replay in the mocker, scored."""

    policy: str
    ran: bool
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def dynamo_planner(
    target: str, profile: LatencyProfile, spec: AutoscalerSpec, report_dir: Path, max_model_len: int
) -> Any:
    """Dynamo's planner as ``dynamo.replay`` builds it for planner-in-the-loop replay (``prepare_planner_replay``
    in ``dynamo/replay/planner.py``, which itself cannot be imported without aisimulate): the same
    ``PlannerConfig`` fields, engine capabilities derived from the same engine limits as ``_engine_caps``, advisory
    (the mocker applies the targets), and no AIS benchmark bootstrap (the AIS session needs aisimulate_core;
    ``throughput``/``latency`` targets skip it, as ``prepare_planner_replay`` does for them)."""
    from bench.dynamo_planner_import import install_missing_aisimulate_core

    install_missing_aisimulate_core()
    from dynamo.planner.config.planner_config import PlannerConfig  # type: ignore[import-not-found]
    from dynamo.planner.core.types import (  # type: ignore[import-not-found]
        EngineCapabilities,
        WorkerCapabilities,
    )
    from dynamo.planner.offline.replay_adapter import (  # type: ignore[import-not-found]
        create_replay_planner_adapter,
    )

    gpus = profile.gpus_per_replica
    config = PlannerConfig.model_validate(
        {
            "mode": "disagg",
            "backend": "mocker",
            "optimization_target": target,
            "prefill_engine_num_gpu": gpus,
            "decode_engine_num_gpu": gpus,
            "max_gpu_budget": (spec.prefill.max_replicas + spec.decode.max_replicas) * gpus,
            "ttft_ms": spec.ttft.target_s * 1e3,
            "itl_ms": spec.itl.target_s * 1e3,
            "report_output_dir": str(report_dir),
        }
    )
    config.advisory = True
    caps = EngineCapabilities(
        num_gpu=gpus,
        max_num_batched_tokens=profile.max_num_batched_tokens,
        max_num_seqs=profile.max_num_seqs,
        context_length=max_model_len,
        max_kv_tokens=profile.kv_capacity_tokens,
    )
    return create_replay_planner_adapter(
        planner_config=config,
        capabilities=WorkerCapabilities(prefill=caps, decode=caps),
        capture_details=False,
    )


def score(
    result: Any, scenario: Scenario, offset_s: float, gpus_per_replica: int
) -> dict[str, Any]:
    """pdscale's definitions (``sim.summary``) on the mocker's per-request records."""
    from sim.summary import quantile, window_table

    recs = result.per_request or []
    nan = math.nan

    def col(key: str, scale: float = 1.0) -> np.ndarray:
        return np.array([nan if r.get(key) is None else float(r[key]) * scale for r in recs], dtype=np.float64)

    records = SimpleNamespace(
        arrival_s=col("arrival_time_ms", 1e-3) + offset_s,
        first_token_s=col("first_token_ms", 1e-3) + offset_s,
        itl_mean_s=col("itl_ms", 1e-3),
        output_tokens=np.array([int(r["requested_output_length"]) for r in recs], dtype=np.int64),
        prompt_tokens=np.array([int(r["input_length"]) for r in recs], dtype=np.int64),
        finished=np.array([r.get("terminal_status") == "completed" for r in recs], dtype=bool),
    )
    end_s = float(result.summary["duration_ms"]) / 1e3 + offset_s
    windows = window_table(records, scenario, None, [], end_s)
    spec = scenario.spec
    ttft = np.where(np.isfinite(records.first_token_s), records.first_token_s - records.arrival_s, np.inf)
    has_itl = records.output_tokens >= 2
    itl = np.where(has_itl, np.where(records.finished, records.itl_mean_s, np.inf), np.nan)
    good = records.finished & (ttft <= spec.ttft.target_s) & (~has_itl | (np.nan_to_num(itl) <= spec.itl.target_s))
    counted = windows["counted"]
    ok = windows["ok"]
    worst = {}
    for key in ("ttft_p99_s", "itl_p99_s"):
        vals = windows[key][counted]
        vals = vals[~np.isnan(vals)]
        worst[f"worst_window_{key}"] = float(vals.max()) if vals.size else None
    scale_events = sum(
        1 for op in result.lifecycle_operations if op.get("cause") == "planner_scale"
    )
    s = result.summary
    gpu_s = (float(s["prefill_worker_seconds"]) + float(s["decode_worker_seconds"])) * gpus_per_replica
    return {
        "requests": len(recs),
        "completed": int(records.finished.sum()),
        "window_compliance": float(ok.sum() / counted.sum()) if counted.sum() else None,
        "windows_ok": int(ok.sum()),
        "windows_total": int(counted.sum()),
        "request_slo_attainment": float(good.sum() / len(recs)) if recs else None,
        "ttft_p99_s": quantile(ttft[np.isfinite(ttft)], 0.99),
        "itl_p99_s": quantile(itl[has_itl & np.isfinite(itl)], 0.99),
        **worst,
        "gpu_hours": gpu_s / 3600.0,
        "scale_events": scale_events,
        "mocker_wall_s": float(s["wall_time_ms"]) / 1e3,
        "windows": {k: np.asarray(windows[k]).tolist() for k in ("start_s", "ttft_slo_s", "itl_slo_s", "ok")},
        "scale_operations": [
            [op["at_ms"] / 1e3 + offset_s, op["pool"], len(op["state_after_batch"]["active"])
             + len(op["state_after_batch"]["starting"])]
            for op in result.lifecycle_operations if op.get("cause") == "planner_scale"
        ],
    }


def initial_allocation(scenario: Scenario, startup_s: float, window_s: float) -> tuple[int, int]:
    """The cheapest fixed (P, D) that holds every window before a first ordered pod could be ready, searched in
    pdscale's simulator (``sim.bench.warm_start_continuous``'s rule, started from 1P/1D): every policy starts
    there, so none is scored on the starting point."""
    from sim.bench import _cut, _warm_windows
    from sim.oracle import SimSettings, StaticSearch

    prefix = _cut(scenario.workload, _warm_windows(window_s, startup_s) * window_s)
    found = StaticSearch(prefix, SimSettings.of(scenario), window_s, target=1.0).search((1, 1))
    if found is None:
        return scenario.spec.prefill.max_replicas, scenario.spec.decode.max_replicas
    return found.prefill, found.decode


def run_policy(
    name: str,
    *,
    trace: MooncakeTrace,
    timing_path: Path,
    scenario: Scenario,
    args: argparse.Namespace,
    initial: tuple[int, int],
    work_dir: Path,
) -> Run:
    from dynamo._core import run_mocker_trace_replay  # type: ignore[import-not-found]

    from sim.policies import make_policy

    profile, spec = scenario.profile, scenario.spec
    kv_s_per_token = profile.kv_bytes_per_token / (args.kv_link_gb_per_s * 1e9)
    hook: Any
    if name.startswith(PLANNER_PREFIX):
        target = name[len(PLANNER_PREFIX):]
        try:
            hook = dynamo_planner(target, profile, spec, work_dir / "planner_reports", args.max_model_len)
        except ImportError as exc:  # the AIS perf model (sla target) needs aisimulate_core
            return Run(name, False, error=f"Dynamo's planner raised at construction: {exc}")
    else:
        hook = MockerPolicyHook(
            make_policy(name, profile, spec), spec, profile, offset_s=trace.offset_s, tick_s=args.tick_s,
            latency_signal=args.latency_signal, kv_transfer_s_per_token=kv_s_per_token,
        )  # fmt: skip
    engine = {
        role: engine_args(profile, role, timing_path, startup_s=args.startup_s,
                          kv_link_gb_per_s=args.kv_link_gb_per_s, max_model_len=args.max_model_len)
        for role in ("prefill", "decode")
    }
    t0 = time.process_time()
    try:
        result = run_mocker_trace_replay(
            [str(trace.path)],
            prefill_engine_args=engine["prefill"],
            decode_engine_args=engine["decode"],
            num_prefill_workers=initial[0],
            num_decode_workers=initial[1],
            router_mode=args.router,
            trace_block_size=trace.block_tokens,
            capture_per_request=True,
            capture_planner_details=True,  # keeps lifecycle_operations (the scale events)
            scaling_policy=hook,
        )
    finally:
        close = getattr(hook, "close", None)
        if close is not None:
            close()
    summary = score(result, scenario, trace.offset_s, profile.gpus_per_replica)
    summary["cpu_s"] = time.process_time() - t0
    if isinstance(hook, MockerPolicyHook):
        summary["decisions"] = [list(m) for m in hook.messages]
    return Run(name, True, summary)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def render(runs: list[Run], header: str, static_gpu_h: float | None) -> str:
    cols = ("policy", "window compliance", "request SLO", "worst TTFT p99 s", "worst ITL p99 ms", "GPU-h",
            "÷ static start", "scale events")  # fmt: skip
    rows = []
    for run in runs:
        s = run.summary
        if not run.ran:
            rows.append((run.policy, "cannot run", "", "", "", "", "", ""))
            continue
        itl = s.get("worst_window_itl_p99_s")
        rows.append((
            run.policy,
            f"{_fmt(s['window_compliance'], '.3f')} ({s['windows_ok']}/{s['windows_total']})",
            _fmt(s["request_slo_attainment"], ".4f"),
            _fmt(s.get("worst_window_ttft_p99_s"), ".2f"),
            _fmt(None if itl is None else itl * 1e3, ".1f"),
            _fmt(s["gpu_hours"], ".2f"),
            _fmt(s["gpu_hours"] / static_gpu_h if static_gpu_h else None, ".2f"),
            str(s["scale_events"]),
        ))  # fmt: skip
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines += [f"  {run.policy}: {run.error}" for run in runs if not run.ran]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=",".join(DEFAULT_POLICIES), help="comma-separated policies (see above)")
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="trace file (CSV or Mooncake JSONL)")
    ap.add_argument("--rate-scale", type=float, default=50.0, help="K x the request rate, replicated copies")
    ap.add_argument("--duration-s", type=float, help="keep only the first S seconds (after scaling)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="llama-3.1-8b-h100-tp1")
    ap.add_argument("--ttft-p99", type=float, default=1.0, help="TTFT p99 target, seconds")
    ap.add_argument("--itl-p99", type=float, default=0.05, help="ITL p99 target, seconds")
    ap.add_argument("--startup-s", type=float, default=120.0, help="pod start-up time, seconds")
    ap.add_argument("--max-replicas", type=int, default=64, help="per pool")
    ap.add_argument("--tick-s", type=float, default=15.0, help="tick of registry policies (pdscale's default)")
    ap.add_argument("--latency-signal", choices=LATENCY_SIGNALS, default="estimate",
                    help="what stands for the TTFT/ITL percentiles the snapshot lacks")  # fmt: skip
    ap.add_argument("--router", choices=("kv_router", "round_robin"), default="kv_router")
    ap.add_argument("--kv-link-gb-per-s", type=float, default=64.0)
    ap.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN,
                    help="the workers' context length (vLLM --max-model-len); Dynamo's prefill thresholds use it")
    ap.add_argument("--combine", type=Path, nargs="+", metavar="RESULTS_JSON",
                    help="print one table from results.json files of runs split by --policy, and exit")
    ap.add_argument("--initial", metavar="P,D", help="initial replicas (default: the warm start, see above)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--out", type=Path, help="keep the trace, timing table and results.json here")
    args = ap.parse_args(argv)
    if args.combine:
        payloads = [json.loads(p.read_text(encoding="utf-8")) for p in args.combine]
        headers = {p["header"] for p in payloads}
        if len(headers) != 1:
            ap.error("--combine: the results differ in trace or settings:\n  " + "\n  ".join(sorted(headers)))
        print(render_payloads(payloads))
        return 0

    from autoscaler.profiles import load_profile

    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    bad = [p for p in policies if p.startswith(PLANNER_PREFIX) and p[len(PLANNER_PREFIX):] not in DYNAMO_TARGETS]
    if bad or not policies:
        ap.error(f"--policy: {', '.join(bad) or 'none given'}; Dynamo's targets: {', '.join(DYNAMO_TARGETS)}")
    cfg = BenchConfig(
        traces=(str(args.trace),), rate_scale=args.rate_scale, duration_s=args.duration_s, profile=args.profile,
        ttft_p99_s=args.ttft_p99, itl_p99_s=args.itl_p99, startups_s=(args.startup_s,), seed=args.seed,
        max_replicas=args.max_replicas,
    )  # fmt: skip
    try:
        profile = load_profile(args.profile)
        label, workload = load_workloads(cfg)[0]
    except (BenchError, KeyError, ValueError, OSError) as exc:
        ap.error(str(exc))
    scenario = base_scenario(cfg, workload, profile, args.startup_s)
    if args.initial:
        p_text, _, d_text = args.initial.partition(",")
        if not (p_text.isdigit() and d_text.isdigit() and int(p_text) >= 1 and int(d_text) >= 1):
            ap.error(f"--initial: expected P,D with P, D >= 1, got {args.initial!r}")
        initial = (int(p_text), int(d_text))
    else:
        initial = initial_allocation(scenario, args.startup_s, scenario.window_s)
    work = Path(tempfile.mkdtemp(prefix="pdscale-vs-dynamo-")) if args.out is None else args.out
    work.mkdir(parents=True, exist_ok=True)
    trace = write_mooncake(workload, work / f"{label}.jsonl")
    timing_path = timing_tables(profile).save(work / f"{profile.name}.npz")
    header = (
        f"{label}: {len(workload)} requests over {workload.duration_s / 60:.0f} min in Dynamo's mocker (ai-dynamo "
        f"1.6.1, {args.router}), {profile.name} step times, start-up {args.startup_s:g} s, initial "
        f"{initial[0]}P/{initial[1]}D, TTFT p99 <= {args.ttft_p99:g} s, ITL p99 <= {args.itl_p99 * 1e3:g} ms, "
        f"latency signal: {args.latency_signal}"
    )
    payload: dict[str, Any] = {
        "header": header, "trace": label, "requests": len(workload), "initial": list(initial),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": [],
    }  # fmt: skip
    for name in policies:
        if not args.json:
            print(f"running {name} ...", file=sys.stderr, flush=True)
        run = run_policy(name, trace=trace, timing_path=timing_path, scenario=scenario, args=args,
                         initial=initial, work_dir=work)  # fmt: skip
        payload["runs"].append({"policy": run.policy, "ran": run.ran, "error": run.error, **run.summary})
        # written after every policy: a long run keeps what it finished
        (work / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(payload, default=float))
    else:
        print(render_payloads([payload]))
    return 0


def render_payloads(payloads: list[dict[str, Any]]) -> str:
    """One table from the ``results.json`` of one or more runs (same trace and settings, policies split)."""
    runs = [
        Run(r["policy"], r["ran"], {k: v for k, v in r.items() if k not in ("policy", "ran", "error")}, r["error"])
        for p in payloads
        for r in p["runs"]
    ]
    static = next((r for r in runs if r.policy == "static" and r.ran), None)
    return render(runs, payloads[0]["header"], None if static is None else static.summary["gpu_hours"])


if __name__ == "__main__":
    sys.exit(main())

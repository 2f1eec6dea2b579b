"""Simulator speed: simulated requests per wall-clock second, fast (event-skipping) mode vs the per-step reference.

Workload: the Azure 2023 conversation trace at rate scale K, realised as K superposed copies of the trace, each
shifted by a seeded offset spread over the trace span (circularly, ``sim.workload.replicate``), so the duration stays ~1 h and the request count is K × 19,366
(K = 20: ~387k requests, ~110 req/s). Cluster: the llama-3.1-8b-h100-tp1 profile, disaggregated, ``--instances``
pods per pool, default router. The reference mode runs on a prefix of the workload (its rate is per request, so it
scales), and the fast mode's records on that prefix are compared with the reference's.

    .venv/bin/python bench/bench_sim_speed.py [--rate-scale 20] [--instances 10] [--reference-requests 10000]

Numbers, not pass/fail: one core; rates per CPU second of this process (fair on a shared machine) and per
wall-clock second. Two figures for pdscale:

* **engine** (``fast``): the bare engine (``Engine(...).finish()``), fixed pools of ``--instances`` pods each;
* **replay**: the full closed loop as ``pdscale sim run`` / ``pdscale bench`` run it (``sim.replay.replay``): the
  engine, the simulated Prometheus scraping every pod every 15 s, the real ``Controller`` and ``--replay-policy``
  (default pdscale) ticking every 15 s and scaling the pools (starting from ``--instances`` pods each, pods start
  in 120 s), the timeline and the summary. The same workload; CPU seconds of the ``replay()`` call (no imports,
  no trace reading).

The engine compiled by mypyc (``make sim-native``, ``sim.native``) against the same source as plain Python, in this
checkout, alternately (every figure above uses the compiled engine when a current build exists; the output says
which ran):

    .venv/bin/python bench/bench_sim_speed.py --native [--repeats 5] [--measure replay]

Where the time goes (``--cprofile [N]``): the fast run under cProfile, per simulated request: events handled by kind
(prefill steps, decode segments, KV arrivals, segment cuts, stale heap entries), heap pushes and pops (the event
queue and the decode instances' finish heaps together), Python calls, and the N functions with the most own time.
cProfile roughly triples the run time and weighs calls heavily; the shares are a guide, the counts are exact.

Side by side with another checkout (e.g. main before a change: ``git worktree add --detach ../base main``):

    .venv/bin/python bench/bench_sim_speed.py --compare-with ../base [--repeats 5]

runs the fast replay alternately with the other checkout's ``sim`` and this one's, each in a fresh interpreter,
prints each side's median req/CPU-s and their ratio, and checks that both produce the same records.

Beside a peer: NVIDIA Dynamo's mocker (ai-dynamo 1.6.1, a Rust serving simulator) replays the same workload in the
same run, written as Mooncake JSONL with pdscale's latency profile as its timing table (``bench/mocker_inputs.py``),
the same number of prefill and decode workers, no autoscaling, once per ``--dynamo-routers`` entry
(``bench/dynamo_mocker_speed.py``, run with ``--dynamo-python``, the bench-only environment that
``scripts/setup-dynamo-bench.sh`` creates; ``--no-dynamo`` leaves it out). Both model vLLM-like chunked prefill,
continuous batching, KV capacity with preemption and the P/D KV transfer; the mocker also models paged KV blocks,
a prefix cache (no hits here: every prompt block is unique) and its routers (``kv_router``: load-aware, the
nearest to pdscale's least-outstanding-tokens; ``round_robin``); pdscale's engine also keeps per-request records
for the policy's simulated Prometheus. Ratio = pdscale fast mode's requests per CPU second / the mocker's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if "--child-root" in sys.argv:  # compare mode's child: import sim/ and autoscaler/ from the checkout named
    sys.path.insert(0, sys.argv[sys.argv.index("--child-root") + 1])

from autoscaler.profiles import load_profile
from sim.engine import Engine, EngineConfig
from sim.workload import Workload, default_workload, load_trace, merge, replicate

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure_llm_2023_conv.csv"  # ../shared beside the repo
REPO = Path(__file__).resolve().parents[1]
DYNAMO_PYTHON = REPO / ".venv-dynamo" / "bin" / "python"
FIELDS = ("prefill_end_s", "first_token_s", "last_token_s", "itl_mean_s", "itl_max_s")


def tiled_trace(path: Path, rate_scale: int) -> Workload:
    """K copies over the trace's own span (``sim.workload.replicate``, shifts spread over the whole span)."""
    base = load_trace(path)
    return replicate(base, rate_scale, spread_s=base.duration_s, seed=0)


def synthetic(rate_scale: int, duration_s: float = 3502.0) -> Workload:
    """Stand-in where the trace file is absent: K independent Azure-conv-like streams (sim.workload)."""
    return merge(
        [default_workload(seed=i, duration_s=duration_s) for i in range(rate_scale)], name="synthetic"
    )


def prefix(w: Workload, n: int) -> Workload:
    return Workload(f"{w.name}[:{n}]", w.arrival_s[:n], w.prompt_tokens[:n], w.output_tokens[:n])


def timed_run(w: Workload, cfg: EngineConfig, instances: int) -> tuple[Engine, float, float]:
    """(engine, wall seconds, CPU seconds of this process): CPU time is the fairer figure on a shared machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    e = Engine(w, cfg, instances, instances)
    e.finish()
    return e, time.perf_counter() - t0, time.process_time() - c0


def records_digest(e: Engine) -> str:
    r = e.records()
    h = hashlib.sha256()
    for f in ("arrival_s", "prefill_start_s", "prefill_end_s", "kv_ready_s", "first_token_s", "last_token_s",
              "itl_max_s", "prefill_pod", "decode_pod", "preemptions", "finished"):  # fmt: skip
        h.update(np.ascontiguousarray(getattr(r, f)).tobytes())
    return h.hexdigest()


def timed_replay(w: Workload, profile_name: str, instances: int, policy: str) -> tuple[Any, float, float]:
    """(SimResult, wall seconds, CPU seconds) of the closed-loop replay of ``w`` under ``policy``."""
    import sim.summary  # noqa: F401  (imported by replay on its first call: not part of the timing)
    from sim.policies import make_policy
    from sim.replay import replay
    from sim.scenario import build_scenario

    scenario = build_scenario(
        {"name": "speed", "profile": profile_name, "policy": policy, "prefill": instances, "decode": instances}
    )
    scenario = dataclasses.replace(scenario, workload=w)
    make_policy(scenario.policy, scenario.profile, scenario.spec)  # the policy registry's imports, untimed
    t0, c0 = time.perf_counter(), time.process_time()
    result = replay(scenario)
    return result, time.perf_counter() - t0, time.process_time() - c0


def replay_digest(result: Any) -> str:
    """sha256 of the replay's per-request records, decisions and timeline (what must not change)."""
    h = hashlib.sha256()
    r = result.records
    for f in ("first_token_s", "last_token_s", "itl_max_s", "prefill_pod", "decode_pod", "preemptions"):
        h.update(np.ascontiguousarray(getattr(r, f)).tobytes())
    for t, d in result.decisions:
        h.update(repr((t, d)).encode())
    for k in sorted(result.timeline):
        h.update(np.ascontiguousarray(result.timeline[k]).tobytes())
    return h.hexdigest()


PROFILED_EVENTS = (  # (label, function name as pstats reports it): what one simulated request costs, by kind
    ("arrivals dispatched", "_arrive"),
    ("prefill steps (formed)", "_form_prefill_step"),
    ("KV arrivals", "_on_kv_arrival"),
    ("decode segments (committed)", "commit_segment"),
    ("decode segments cut for an admission", "end_segment_for_admission"),
    ("decode steps formed", "_form_batch_step"),
    ("heap pushes", "<built-in method _heapq.heappush>"),
    ("heap pops", "<built-in method _heapq.heappop>"),
)


def profile_run(w: Workload, cfg: EngineConfig, instances: int, top: int) -> None:
    """The fast run under cProfile: per-request counts of the engine's events and heap operations, and the top
    functions by own time."""
    import cProfile
    import pstats

    if engine_kind() == "compiled":
        sys.exit("--cprofile: cProfile sees no calls inside the compiled engine; run with PDSCALE_SIM_NATIVE=0")
    profiler = cProfile.Profile()
    profiler.enable()
    e = Engine(w, cfg, instances, instances)
    e.finish()
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    calls: dict[str, int] = {}
    for (_, _, name), (_, ncalls, _, _, _) in raw.items():
        calls[name] = calls.get(name, 0) + ncalls
    n = len(w)
    total_s = stats.total_tt  # type: ignore[attr-defined]
    print(f"profile    {w.name}: {n} requests, {total_s:.2f} s under cProfile, "
          f"{stats.total_calls / n:.1f} calls per request")  # type: ignore[attr-defined]  # fmt: skip
    for label, name in PROFILED_EVENTS:
        print(f"  {calls.get(name, 0) / n:>6.2f} {label} per request")
    # every finish pops the finish heap once; every other pop is the event queue's, and those that were not a step
    # end or a KV arrival are stale step ends (a cut segment's first end) or rare events (pod ready)
    queue_pops = calls.get("<built-in method _heapq.heappop>", 0) - calls.get("_finish_decoding", 0)
    handled = calls.get("commit_segment", 0) + calls.get("_after_prefill_step", 0) + calls.get("_on_kv_arrival", 0)
    print(f"  {(queue_pops - handled) / n:>6.2f} other event-queue pops (stale step ends, pod-ready) per request")
    print(f"top {top} by own time (share of the profiled time)")
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (path, line, name), (_, ncalls, tt, ct, _) in ranked:
        where = f"{Path(path).name}:{line}" if line else ""
        print(f"  {tt / total_s * 100:>5.1f} % own {ct / total_s * 100:>5.1f} % incl {ncalls / n:>6.2f}/req  {name} {where}")


def child(args: argparse.Namespace, w: Workload) -> None:
    """One timed fast run (``--measure engine``) or closed-loop replay (``replay``); prints JSON for the parent."""
    if args.measure == "replay":
        result, wall, cpu = timed_replay(w, args.profile, args.instances, args.replay_policy)
        digest = replay_digest(result)
    else:
        e, wall, cpu = timed_run(w, EngineConfig(load_profile(args.profile)), args.instances)
        digest = records_digest(e)
    print(json.dumps({"cpu_s": cpu, "wall_s": wall, "requests": len(w), "digest": digest, "engine": engine_kind()}))


def engine_kind() -> str:
    """Which engine this process runs: the mypyc-compiled one (``sim.native``) or plain Python."""
    try:
        from sim.native import is_active
    except ImportError:  # a checkout from before sim.native
        return "python"
    return "compiled" if is_active() else "python"


def compare(args: argparse.Namespace, n_requests: int) -> None:
    """Alternate runs of two sides (another checkout and this one, or this one as plain Python and compiled);
    medians and ratio of req/CPU-s, and whether the records are identical."""
    this_root = Path(__file__).resolve().parents[1]
    sides: dict[str, tuple[Path, dict[str, str]]]  # name -> (checkout, environment overrides)
    if args.native:
        from sim.native import DISABLE_ENV, usable_build

        if usable_build() is None:
            sys.exit("--native: no current compiled build of the engine (make sim-native)")
        sides = {"python": (this_root, {DISABLE_ENV: "0"}), "compiled": (this_root, {DISABLE_ENV: "1"})}
    else:
        sides = {"baseline": (args.compare_with.resolve(), {}), "this": (this_root, {})}
    (base_name, (base_root, _)), (this_name, _) = sides.items()
    argv = [a for a in sys.argv[1:] if a != "--native"]
    if "--compare-with" in argv:
        i = argv.index("--compare-with")
        del argv[i : i + 2]
    rates: dict[str, list[float]] = {k: [] for k in sides}
    digests: dict[str, set[str]] = {k: set() for k in sides}
    kinds: dict[str, set[str]] = {k: set() for k in sides}
    print(f"{len(sides) * args.repeats} {args.measure} runs of {n_requests} requests, alternating "
          f"({base_name} = {base_root}, {this_name} = {this_root})", flush=True)  # fmt: skip
    for rep in range(args.repeats):
        for name, (root, overrides) in sides.items():
            env = dict(os.environ, PYTHONPATH=str(root), **overrides)
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), *argv, "--child-root", str(root)],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rates[name].append(res["requests"] / res["cpu_s"])
            digests[name].add(res["digest"])
            kinds[name].add(res["engine"])
            print(f"  run {rep + 1} {name:<8} {rates[name][-1]:>9,.0f} req/CPU-s ({res['cpu_s']:.2f} CPU s, "
                  f"{res['engine']} engine)", flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    same = digests[base_name] == digests[this_name] and len(digests[this_name]) == 1
    for k in sides:
        print(f"{k:<10} {med[k]:>9,.0f} req/CPU-s median of {args.repeats}, best {best[k]:,.0f} "
              f"({'/'.join(sorted(kinds[k]))} engine)")  # fmt: skip
    print(f"ratio      {med[this_name] / med[base_name]:>9.3f} median, {best[this_name] / best[base_name]:.3f} best "
          f"({this_name} / {base_name}; > 1 is faster)")  # fmt: skip
    what = "records, decisions and timeline" if args.measure == "replay" else "records"
    print(f"records    {'identical' if same else 'DIFFER'} (sha256 of the per-request {what})")
    if not same:
        sys.exit(1)


def dynamo_mocker_runs(
    w: Workload, profile_name: str, instances: int, python: Path, routers: list[str]
) -> list[dict[str, Any]]:
    """The mocker on ``w`` once per router, in its own environment; an entry with ``error`` when it cannot run."""
    if str(REPO) not in sys.path:  # run as a script, sys.path[0] is bench/
        sys.path.insert(0, str(REPO))
    from bench.mocker_inputs import timing_tables, write_mooncake

    if not python.exists():
        return [{"router": r, "error": f"{python} not found: run scripts/setup-dynamo-bench.sh"} for r in routers]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pdscale-mocker-speed-") as tmp:
        trace = write_mooncake(w, Path(tmp) / "trace.jsonl")
        timing = timing_tables(load_profile(profile_name)).save(Path(tmp) / "timing.npz")
        for router in routers:
            argv = [str(python), str(REPO / "bench" / "dynamo_mocker_speed.py"), "--trace", str(trace.path),
                    "--timing", str(timing), "--instances", str(instances), "--router", router,
                    "--profile", profile_name]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                tail = proc.stderr.strip().splitlines()[-3:]
                out.append({"router": router, "error": f"exit {proc.returncode}: {' | '.join(tail)}"})
            else:
                out.append(json.loads(lines[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument(
        "--synthetic", action="store_true", help="use K embedded Azure-conv-like streams instead of the trace"
    )
    ap.add_argument("--rate-scale", type=int, default=20)
    ap.add_argument("--instances", type=int, default=10, help="pods per pool")
    ap.add_argument("--profile", default="llama-3.1-8b-h100-tp1")
    ap.add_argument("--requests", type=int, default=0, help="limit the fast run to a prefix (0 = all)")
    ap.add_argument("--reference-requests", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dynamo-python", type=Path, default=DYNAMO_PYTHON,
                    help="python of the bench-only Dynamo environment (scripts/setup-dynamo-bench.sh)")  # fmt: skip
    ap.add_argument("--dynamo-routers", default="kv_router,round_robin", help="mocker routers to time")
    ap.add_argument("--no-dynamo", action="store_true", help="do not time Dynamo's mocker")
    ap.add_argument("--compare-with", type=Path, metavar="CHECKOUT", help="time this checkout's engine against it")
    ap.add_argument(
        "--native", action="store_true",
        help="time this checkout's engine as plain Python against its compiled build (sim.native), alternately",
    )  # fmt: skip
    ap.add_argument("--repeats", type=int, default=5, help="runs per side with --compare-with or --native")
    ap.add_argument(
        "--measure", choices=("engine", "replay"), default="engine", help="what --compare-with times"
    )
    ap.add_argument("--replay-policy", default="pdscale", help="the closed-loop replay's policy")
    ap.add_argument("--no-replay", action="store_true", help="do not time the closed-loop replay")
    ap.add_argument("--cprofile", type=int, nargs="?", const=25, default=0, metavar="N",
                    help="profile the fast run instead (cProfile): events per request and the top N functions")  # fmt: skip
    ap.add_argument("--child-root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    w = synthetic(args.rate_scale) if args.synthetic else tiled_trace(args.trace, args.rate_scale)
    if args.requests:
        w = prefix(w, args.requests)
    if args.child_root is not None:
        child(args, w)
        return
    if args.compare_with is not None or args.native:
        compare(args, len(w))
        return
    if args.cprofile:
        profile_run(w, EngineConfig(load_profile(args.profile)), args.instances, args.cprofile)
        return
    profile = load_profile(args.profile)
    fast_cfg = EngineConfig(profile)
    ref_cfg = EngineConfig(profile, reference=True)

    fast, fast_wall, fast_cpu = timed_run(w, fast_cfg, args.instances)
    r = fast.records()
    n_ref = min(args.reference_requests, len(w))
    wp = prefix(w, n_ref)
    ref, ref_wall, ref_cpu = timed_run(wp, ref_cfg, args.instances)
    fast_p, _, _ = timed_run(wp, fast_cfg, args.instances)
    rr, rf = ref.records(), fast_p.records()
    max_diff = max(float(np.nanmax(np.abs(getattr(rr, f) - getattr(rf, f)))) for f in FIELDS)
    replayed: dict[str, Any] = {}
    if not args.no_replay:
        result, rp_wall, rp_cpu = timed_replay(w, args.profile, args.instances, args.replay_policy)
        replayed = {
            "replay_policy": args.replay_policy,
            "replay_wall_s": rp_wall,
            "replay_cpu_s": rp_cpu,
            "replay_req_per_s": len(w) / rp_wall,
            "replay_req_per_cpu_s": len(w) / rp_cpu,
            "replay_gpu_hours": result.summary["gpu_hours"],
            "replay_scale_events": result.summary["scale_events"],
        }

    out = {
        "engine": engine_kind(),
        "requests": len(w),
        "sim_duration_s": float(np.nanmax(r.last_token_s)),
        "completed": int(r.finished.sum()),
        "instances_per_pool": args.instances,
        "fast_wall_s": fast_wall,
        "fast_cpu_s": fast_cpu,
        "fast_req_per_s": len(w) / fast_wall,
        "fast_req_per_cpu_s": len(w) / fast_cpu,
        "reference_requests": n_ref,
        "reference_wall_s": ref_wall,
        "reference_cpu_s": ref_cpu,
        "reference_req_per_s": n_ref / ref_wall,
        "reference_req_per_cpu_s": n_ref / ref_cpu,
        "speedup": (len(w) / fast_cpu) / (n_ref / ref_cpu),
        "prefix_max_abs_diff_s": max_diff,
        "ttft_p50_s": float(np.nanpercentile(r.ttft_s, 50)),
        "ttft_p99_s": float(np.nanpercentile(r.ttft_s, 99)),
        "itl_mean_s": float(np.nanmean(r.itl_mean_s)),
        "preemptions": int(r.preemptions.sum()),
        **replayed,
    }
    if not args.no_dynamo:
        routers = [x.strip() for x in args.dynamo_routers.split(",") if x.strip()]
        mocker = dynamo_mocker_runs(w, args.profile, args.instances, args.dynamo_python, routers)
        for m in mocker:
            if "req_per_cpu_s" in m:
                m["pdscale_vs_mocker_cpu"] = out["fast_req_per_cpu_s"] / m["req_per_cpu_s"]
                m["pdscale_vs_mocker_wall"] = out["fast_req_per_s"] / (m["requests"] / m["wall_s"])
        out["dynamo_mocker"] = mocker
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"workload   {w.name}: {len(w)} requests over {out['sim_duration_s']:.0f} simulated s")
    print(f"cluster    {args.profile}, disagg, {args.instances} prefill + {args.instances} decode pods; "
          f"{out['engine']} engine (sim.native)")  # fmt: skip
    print(
        f"fast       {out['fast_req_per_cpu_s']:>9,.0f} req/CPU-s {out['fast_req_per_s']:>9,.0f} req/wall-s  "
        f"({fast_cpu:.2f} CPU s, {fast_wall:.2f} wall s, {out['completed']} completed)"
    )
    if replayed:
        print(
            f"replay     {out['replay_req_per_cpu_s']:>9,.0f} req/CPU-s {out['replay_req_per_s']:>9,.0f} req/wall-s  "
            f"({out['replay_cpu_s']:.2f} CPU s, {out['replay_wall_s']:.2f} wall s; closed loop, policy "
            f"{args.replay_policy}: {out['replay_scale_events']} scale events, {out['replay_gpu_hours']:.2f} GPU-h)"
        )
    print(
        f"reference  {out['reference_req_per_cpu_s']:>9,.0f} req/CPU-s {out['reference_req_per_s']:>9,.0f} "
        f"req/wall-s  ({ref_cpu:.2f} CPU s, {ref_wall:.2f} wall s, first {n_ref} requests)"
    )
    print(
        f"ratio      {out['speedup']:>9.1f} x (CPU time; fast vs reference on the prefix: max |Δ| = {max_diff:.2e} s)"
    )
    print(
        f"results    TTFT p50 {out['ttft_p50_s'] * 1e3:.1f} ms, p99 {out['ttft_p99_s'] * 1e3:.1f} ms, "
        f"ITL mean {out['itl_mean_s'] * 1e3:.2f} ms, preemptions {out['preemptions']}"
    )
    for m in out.get("dynamo_mocker", []):
        name = f"mocker/{m['router']}"
        if "error" in m:
            print(f"{name:<18} not measured: {m['error']}")
            continue
        print(
            f"{name:<18} {m['req_per_cpu_s']:>9,.0f} req/CPU-s {m['requests'] / m['wall_s']:>9,.0f} req/wall-s  "
            f"({m['cpu_s']:.2f} CPU s, {m['wall_s']:.2f} wall s, {m['completed']} completed; TTFT p99 "
            f"{m['ttft_p99_s'] * 1e3:.1f} ms, ITL mean {m['itl_mean_s'] * 1e3:.2f} ms)"
        )
        print(
            f"{'':<18} pdscale fast / mocker: {m['pdscale_vs_mocker_cpu']:.1f} x per CPU second, "
            f"{m['pdscale_vs_mocker_wall']:.1f} x per wall second"
        )


if __name__ == "__main__":
    main()

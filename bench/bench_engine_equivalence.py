"""Replays identical to a baseline checkout: the engine's records, pods' counters and gauges, bit for bit.

A refactor or speed pass of ``sim/`` must not change what the simulator predicts. This bench runs a matrix of
replays (both Azure 2023 traces × K through ``sim.workload.replicate``, agg and disagg, every router, a
preemption-heavy small-KV case, TableModel and RooflineModel profiles, scaling with startup jitter, scrapes at
intermediate times, the per-step reference mode on a prefix, the ITL gap log) once with this checkout's ``sim`` and
once with a baseline checkout's, each in its own interpreter, and compares every array exactly (NaN == NaN).
It also prints each side's CPU seconds per case (one run each: a rough figure; ``bench_sim_speed.py --compare-with``
measures speed properly).

    git worktree add --detach ../pdscale-base main          # the baseline, once
    .venv/bin/python bench/bench_engine_equivalence.py --against ../pdscale-base [--rate-scale 2] [--only NAME]

Exit status 1 when anything differs. Uses only the engine's public API (``Engine``, ``EngineConfig``,
``records()``, ``pods()``, ``proxy``, ``set_desired``, ``run_until``, ``finish``, ``gpu_seconds``, ``itl_gaps``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
RECORD_FIELDS = (
    "arrival_s", "prefill_start_s", "prefill_end_s", "kv_ready_s", "first_token_s", "last_token_s", "itl_mean_s",
    "itl_max_s", "prefill_pod", "decode_pod", "prompt_tokens", "output_tokens", "preemptions", "finished",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    trace: str  # "conv" | "code"
    mode: str
    router: str
    prefill_pods: int
    decode_pods: int
    profile: str = "poly"  # "poly" | "table" | "roofline" | "small-kv"
    reference: bool = False
    max_requests: int = 0  # 0: the whole replicated trace
    scale: bool = False  # scale pools up and down during the run (startup jitter), scrape at intermediate times
    gaps: bool = False  # record_itl_gaps


def cases() -> list[Case]:
    out: list[Case] = []
    for trace in ("conv", "code"):
        for router in ("round-robin", "least-outstanding-tokens", "least-kv", "central-fcfs"):
            out.append(Case(f"{trace}-disagg-{router}", trace, "disagg", router, 2, 2))
            out.append(Case(f"{trace}-agg-{router}", trace, "agg", router, 0, 3))
    out += [
        Case("conv-disagg-small-kv", "conv", "disagg", "least-outstanding-tokens", 1, 2, "small-kv"),
        Case("conv-agg-small-kv", "conv", "agg", "least-kv", 0, 2, "small-kv"),
        Case("code-disagg-table", "code", "disagg", "least-kv", 2, 2, "table"),
        Case("conv-agg-table", "conv", "agg", "least-outstanding-tokens", 0, 3, "table", max_requests=12_000),
        Case("conv-disagg-roofline", "conv", "disagg", "least-outstanding-tokens", 2, 2, "roofline"),
        Case("code-agg-roofline", "code", "agg", "round-robin", 0, 3, "roofline"),
        Case("conv-disagg-scale", "conv", "disagg", "least-outstanding-tokens", 1, 1, scale=True, gaps=True),
        Case("code-agg-scale-table", "code", "agg", "least-kv", 0, 1, "table", scale=True),
        Case("conv-disagg-small-kv-reference", "conv", "disagg", "least-kv", 1, 2, "small-kv", True, 4000,
             scale=True),
        Case("conv-agg-small-kv-reference", "conv", "agg", "central-fcfs", 0, 2, "small-kv", True, 3000),
        Case("conv-agg-table-reference", "conv", "agg", "round-robin", 0, 3, "table", True, 3000, gaps=True),
    ]  # fmt: skip
    return out


# ---------------------------------------------------------------- one side (runs inside the checkout's interpreter)
def _profiles() -> dict[str, Callable[[], Any]]:
    from autoscaler.core.latency import LatencyProfile, TableModel
    from autoscaler.profiles import load_profile

    def poly() -> LatencyProfile:
        return load_profile("llama-3.1-8b-h100-tp1")

    def small_kv() -> LatencyProfile:
        # KV for a handful of conversations: decode pods preempt under load
        return replace(poly(), name="small-kv", kv_capacity_tokens=12_000, max_num_seqs=64)

    def table() -> LatencyProfile:
        p = poly()
        toks = (1.0, 256.0, 1024.0, 4096.0, 8192.0)
        batch = (1.0, 8.0, 32.0, 128.0, 256.0)
        ctx = (128.0, 1024.0, 4096.0, 16384.0)
        # a slightly convex decode surface so that no step model shortcut applies
        model = TableModel(
            toks, tuple(p.step.prefill_step_s(t) for t in toks), batch, ctx,
            tuple(tuple(p.step.decode_step_s(int(b), b * c) * (1 + 0.02 * (i % 2)) for c in ctx)
                  for i, b in enumerate(batch)),
        )  # fmt: skip
        return replace(p, name="table", step=model)

    def roofline() -> LatencyProfile:
        return load_profile("llama-3.1-8b-h100-tp1-roofline")

    return {"poly": poly, "small-kv": small_kv, "table": table, "roofline": roofline}


def _workload(case: Case, rate_scale: float) -> Any:
    from sim.workload import load_trace, replicate

    base = load_trace(TRACES / f"azure_llm_2023_{case.trace}.csv", max_prompt_tokens=8000, max_output_tokens=2000)
    w = replicate(base, rate_scale, spread_s=base.duration_s, seed=0)
    if case.max_requests:
        w = type(w)(w.name, w.arrival_s[: case.max_requests], w.prompt_tokens[: case.max_requests],
                    w.output_tokens[: case.max_requests])  # fmt: skip
    return w


def _pod_rows(engine: Any) -> Iterator[tuple[str, np.ndarray]]:
    for p in engine.pods():
        c = p.counters
        yield f"pod/{p.name}/times", np.array([p.created_s, p.ready_s, p.gone_s, p.running_seq_s])
        yield f"pod/{p.name}/state", np.array([p.state])
        for h in ("ttft", "itl"):
            hist = getattr(c, h)
            yield f"pod/{p.name}/{h}", np.concatenate([hist.counts.astype(np.float64), [hist.sum, hist.count]])
        yield f"pod/{p.name}/totals", np.array(
            [c.prompt_tokens_total, c.generation_tokens_total, c.request_success_total, c.num_preemptions_total,
             c.num_requests_running, c.num_requests_waiting, c.kv_cache_usage_perc], dtype=np.float64,
        )  # fmt: skip


def _proxy_row(engine: Any) -> np.ndarray:
    px = engine.proxy
    return np.concatenate([
        px.ttft.counts.astype(np.float64), [px.ttft.sum, px.ttft.count],
        px.itl.counts.astype(np.float64), [px.itl.sum, px.itl.count],
        [px.prompt_tokens_total, px.generation_tokens_total, px.request_success_total, px.num_requests_running,
         px.num_requests_waiting],
    ])  # fmt: skip


def run_case(case: Case, rate_scale: float) -> tuple[dict[str, np.ndarray], float]:
    """Every observable of one replay, keyed by name; and the CPU seconds the replay took."""
    from autoscaler.core.types import Pool
    from sim.engine import Engine, EngineConfig

    w = _workload(case, rate_scale)
    cfg = EngineConfig(
        _profiles()[case.profile](), mode=case.mode, router=case.router, reference=case.reference,
        startup_s=60.0, startup_jitter="lognormal:0.3" if case.scale else "fixed", seed=3, record_itl_gaps=case.gaps,
    )  # fmt: skip
    out: dict[str, np.ndarray] = {}
    c0 = time.process_time()
    e = Engine(w, cfg, case.prefill_pods, case.decode_pods)
    if case.scale:
        span = float(w.arrival_s[-1])
        front = Pool.PREFILL if case.mode == "disagg" else Pool.DECODE
        plan = [(0.1, Pool.DECODE, 3), (0.25, front, 2), (0.4, Pool.DECODE, 1), (0.45, Pool.DECODE, 2),
                (0.6, front, 1), (0.7, Pool.DECODE, 4), (0.85, Pool.DECODE, 2)]  # fmt: skip
        for i, (frac, pool, reps) in enumerate(plan):
            t = frac * span
            e.run_until(t - 7.3)
            out[f"scrape{i}/proxy"] = _proxy_row(e)
            out.update((f"scrape{i}/{k}", v) for k, v in _pod_rows(e))
            e.set_desired(pool, reps, t)
    e.finish()
    cpu_s = time.process_time() - c0
    r = e.records()
    out.update((f"records/{f}", np.asarray(getattr(r, f))) for f in RECORD_FIELDS)
    out.update(_pod_rows(e))
    out["proxy"] = _proxy_row(e)
    g = e.gpu_seconds(float(np.nanmax(r.last_token_s)) + 1.0)
    out["gpu_seconds"] = np.array([g[Pool.PREFILL], g[Pool.DECODE]])
    if case.gaps:
        for name, arr in zip(("time", "gap", "count"), e.itl_gaps(), strict=True):
            out[f"itl_gaps/{name}"] = arr
    return out, cpu_s


def dump(path: Path, rate_scale: float, only: list[str]) -> None:
    import sim.engine

    print(f"  engine: {sim.engine.__file__}", file=sys.stderr, flush=True)
    arrays: dict[str, np.ndarray] = {}
    for case in cases():
        if only and case.name not in only:
            continue
        obs, cpu_s = run_case(case, rate_scale)
        arrays.update((f"{case.name}|{k}", v) for k, v in obs.items())
        arrays[f"{case.name}|cpu_s"] = np.array([cpu_s])
        print(f"  {case.name:<34} {cpu_s:6.2f} CPU s", file=sys.stderr, flush=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]


# ---------------------------------------------------------------- compare two sides
def _side(root: Path, out: Path, rate_scale: float, only: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--dump", str(out), "--root", str(root),
           "--rate-scale", str(rate_scale), *(a for o in only for a in ("--only", o))]  # fmt: skip
    print(f"{root}:", file=sys.stderr, flush=True)
    subprocess.run(cmd, env=env, check=True, cwd=root)


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Per case, the keys whose arrays differ (or exist on one side only)."""
    diffs: dict[str, list[str]] = {}
    for key in sorted(set(a) | set(b)):
        case, _, what = key.partition("|")
        if what == "cpu_s":
            continue
        same = key in a and key in b and a[key].shape == b[key].shape and (
            np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f")
        )
        if not same:
            diffs.setdefault(case, []).append(what)
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--against", type=Path,
        help="baseline: a checkout (its sim/ and autoscaler/ are imported) or an .npz saved by --save-baseline",
    )
    ap.add_argument("--save-baseline", type=Path, metavar="NPZ", help="keep the baseline's observables here")
    ap.add_argument("--rate-scale", type=float, default=2.0, help="K copies of each trace (default 2)")
    ap.add_argument("--only", action="append", default=[], metavar="CASE", help="run only this case (repeatable)")
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # internal: one side, into an .npz
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump:
        sys.path.insert(0, str(args.root or REPO))
        dump(args.dump, args.rate_scale, args.only)
        return
    if args.against is None:
        ap.error("--against PATH (a baseline checkout) is required")
    with tempfile.TemporaryDirectory() as tmp:
        base_npz, new_npz = Path(tmp) / "base.npz", Path(tmp) / "new.npz"
        if args.against.suffix == ".npz":
            base_npz = args.against
        else:
            _side(args.against.resolve(), base_npz, args.rate_scale, args.only)
            if args.save_baseline:
                shutil.copyfile(base_npz, args.save_baseline)
        _side(REPO, new_npz, args.rate_scale, args.only)
        with np.load(base_npz) as fa, np.load(new_npz) as fb:
            a = {k: fa[k] for k in fa.files}
            b = {k: fb[k] for k in fb.files}
    diffs = compare(a, b)
    names = sorted({k.partition("|")[0] for k in a} | {k.partition("|")[0] for k in b})
    print(f"{'case':<34} {'base CPU s':>10} {'new CPU s':>10}  result")
    for name in names:
        ca, cb = a.get(f"{name}|cpu_s", [np.nan])[0], b.get(f"{name}|cpu_s", [np.nan])[0]
        verdict = "identical" if name not in diffs else "DIFFERS: " + ", ".join(diffs[name][:6])
        print(f"{name:<34} {ca:>10.2f} {cb:>10.2f}  {verdict}")
    n_keys = len({k for k in a if not k.endswith("|cpu_s")})
    print(f"{len(names) - len(diffs)}/{len(names)} cases identical ({n_keys} arrays compared)")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()

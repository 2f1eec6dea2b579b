"""pdscale policy variants on suite workloads, against cached references: how parameters were chosen (issue 16).

    .venv/bin/python bench/bench_policy_variants.py --workloads flat,code-s0 \\
        --variant default --variant 'q95:headroom_quantile_up=0.95' --jobs 2

For each workload of ``pdscale bench --suite`` (``--suite``, default generalization; ``--workloads``/``--role``
select) the references that do not depend on the policy are computed once and cached in ``--cache`` (a JSON file
keyed by the workload, start-up time, profile and a fingerprint of the simulator's and the profile's sources): the
oracle's per-window need, the warm start every autoscaled run begins from, the cheapest fixed allocation meeting
the SLO (static-best), and the clairvoyant bound. Then every ``--variant NAME:key=value,...`` of ``PdscalePolicy``
(dotted keys reach the nested parameter objects: ``surprise.memory_s=1800``, ``forecast_params.trend_time_constant_s
=90``; ``none`` sets None) is replayed exactly as ``pdscale bench`` replays pdscale, and one table per workload
prints window compliance, GPU-hours, the ratios to static-best, the oracle and the clairvoyant, and which windows
failed. A variant that holds every window at the lowest GPU-hours on the training workloads is the candidate; the
held-out workloads check it. Numbers, not pass/fail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sim.bench import (  # noqa: E402
    BenchConfig,
    BenchError,
    Case,
    _compact,
    _split,
    _static_best_task,
    _window_task,
    base_scenario,
    load_cases,
    warm_start_continuous,
)
from sim.oracle import DEFAULT_COMPLIANCE_TARGET, OracleSchedule  # noqa: E402

FINGERPRINT_SOURCES = ("sim/engine.py", "sim/scheduler.py", "sim/skipping.py", "sim/cluster.py", "sim/router.py",
                       "sim/oracle.py", "sim/summary.py", "autoscaler/core/latency.py",
                       "sim/clairvoyant.py", "autoscaler/core/capacity.py")  # fmt: skip


def fingerprint(profile_name: str) -> str:
    """Changes whenever the engine, the oracle, the capacity model, the clairvoyant or the profile change (the cache is
    then stale). The policy is not in it: the clairvoyant uses the default policy's margin_up and models."""
    from autoscaler.profiles import load_profile

    h = hashlib.sha256()
    for rel in FINGERPRINT_SOURCES:
        path = REPO_ROOT / rel
        if path.exists():
            h.update(path.read_bytes())
    h.update(repr(load_profile(profile_name)).encode())
    return h.hexdigest()[:16]


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,...`` -> (name, overrides); values are JSON (numbers, true/false), ``none`` or strings."""
    name, _, rest = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--variant {text!r}: {item!r} is not key=value")
        if value.lower() == "none":
            overrides[key] = None
        else:
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
    return name, overrides


def build_policy(profile: Any, spec: Any, overrides: dict[str, Any]) -> Any:
    """``PdscalePolicy`` with ``overrides``: dotted keys replace fields of nested dataclass parameters."""
    from autoscaler.core import forecast as fc
    from autoscaler.core.policy import make_pdscale_policy

    policy = make_pdscale_policy(profile, spec)
    flat = {k: v for k, v in overrides.items() if "." not in k}
    policy = replace(policy, **{k: _coerce(policy, k, v) for k, v in flat.items()})
    for key, value in overrides.items():
        if "." not in key:
            continue
        outer, inner = key.split(".", 1)
        current = getattr(policy, outer)
        if current is None:  # a switched-off parameter object: start from its defaults
            current = {"surprise": fc.SurpriseParams, "burst": fc.BurstParams}[outer]()
        if not is_dataclass(current) or inner not in {f.name for f in fields(current)}:
            raise SystemExit(f"--variant: {outer} has no parameter {inner!r}")
        policy = replace(policy, **{outer: replace(current, **{inner: value})})  # type: ignore[type-var]
    return policy


def _coerce(policy: Any, key: str, value: Any) -> Any:
    from autoscaler.core import forecast as fc
    from autoscaler.core.spec import Forecaster

    if key == "forecaster" and isinstance(value, str):
        return Forecaster(value)
    if key in ("surprise", "burst") and value is True:
        return {"surprise": fc.SurpriseParams, "burst": fc.BurstParams}[key]()
    return value


def _oracle_task(case: Case, cfg: BenchConfig, startup_s: float) -> dict[str, Any]:
    from autoscaler.profiles import load_profile

    profile = load_profile(cfg.profile)
    sc = base_scenario(cfg, case.workload, profile, startup_s, case)
    from sim.oracle import SimSettings

    settings = SimSettings.of(sc)
    needs = [_window_task(part, lo, cfg.window_s, settings) for part, lo in _split(case.label, case.workload,
                                                                                  cfg.window_s)]  # fmt: skip
    oracle = OracleSchedule(cfg.window_s, tuple(needs), profile.gpus_per_replica)
    start = warm_start_continuous(sc, oracle, startup_s, cfg.window_s)
    return {
        "oracle_gpu_hours": oracle.gpu_hours,
        "oracle_windows": [[w.prefill, w.decode] for w in needs],
        "oracle_peak": list(oracle.peak),
        "warm_start": list(start),
    }


def _static_task(case: Case, cfg: BenchConfig, startup_s: float, peak: list[int]) -> dict[str, Any]:
    from autoscaler.profiles import load_profile

    sc = base_scenario(cfg, case.workload, load_profile(cfg.profile), startup_s, case)
    out = _static_best_task(sc, (peak[0], peak[1]), DEFAULT_COMPLIANCE_TARGET)
    return {"summary": _summary(out), "static_best": out["static_best"]}


def _replay(case: Case, cfg: BenchConfig, startup_s: float, start: list[int], policy_name: str,
            overrides: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    from autoscaler.core.policy import PdscalePolicy
    from autoscaler.profiles import load_profile
    from sim.clairvoyant import make_clairvoyant
    from sim.replay import replay

    profile = load_profile(cfg.profile)
    sc = base_scenario(cfg, case.workload, profile, startup_s, case)
    sc = replace(sc, initial_prefill=start[0], initial_decode=start[1])
    policy = build_policy(profile, sc.spec, overrides)
    corrections: dict[str, list[float]] = {"prefill": [], "decode": []}
    if policy_name == "clairvoyant":
        assert isinstance(policy, PdscalePolicy)
        policy = make_clairvoyant(sc.workload, policy, sc.spec, window_s=sc.window_s, tick_s=sc.tick_s)
    else:
        policy = _CorrectionRecorder(policy, corrections)
    out = _compact(replay(sc, policy))
    w = out["windows"]
    failed = [
        int(s // 60) for s, ok, c in zip(w["start_s"], w["ok"], w["counted"], strict=True) if c and not ok
    ]
    correction = {
        pool: (float(np.median(v)), float(np.max(v))) if v else (float("nan"), float("nan"))
        for pool, v in corrections.items()
    }
    return {"summary": _summary(out), "failed_minutes": failed, "timeline": out["timeline"], "correction": correction}


class _CorrectionRecorder:
    """pdscale's policy, recording each tick's online correction per pool (how far the model is from what is
    observed: near 1 when the model knows the load it sizes for)."""

    def __init__(self, policy: Any, out: dict[str, list[float]]) -> None:
        self.policy, self.out, self.name = policy, out, policy.name

    def initial_state(self, spec: Any) -> Any:
        return self.policy.initial_state(spec)

    def decide(self, observation: Any, state: Any, spec: Any) -> Any:
        decision, new_state = self.policy.decide(observation, state, spec)
        self.out["prefill"].append(new_state.prefill.correction)
        self.out["decode"].append(new_state.decode.correction)
        return decision, new_state


def _summary(out: dict[str, Any]) -> dict[str, Any]:
    keys = ("window_compliance", "request_slo_attainment", "gpu_hours", "gpu_hours_prefill", "gpu_hours_decode",
            "prefill_replicas_max", "decode_replicas_max", "scale_events", "worst_window_ttft_p99_s",
            "worst_window_itl_p99_s")  # fmt: skip
    return {k: out["summary"].get(k) for k in keys}


def _pair(values: list[float]) -> str:
    return f"{values[0]:.2f} / {values[1]:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="generalization")
    ap.add_argument("--workloads", default="", help="comma-separated suite workloads (default: all)")
    ap.add_argument("--role", choices=("train", "held-out"))
    ap.add_argument("--startup-s", type=float, default=120.0)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                    help="a PdscalePolicy variant (repeatable; default: the defaults)")  # fmt: skip
    ap.add_argument("--no-clairvoyant", action="store_true", help="skip the clairvoyant reference")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", default=str(REPO_ROOT / ".bench-cache" / "references.json"))
    ap.add_argument("--json-out", help="write every result here")
    args = ap.parse_args(argv)
    cfg = BenchConfig(suite=args.suite, suite_workloads=tuple(filter(None, args.workloads.split(","))),
                      suite_role=args.role, startups_s=(args.startup_s,))  # fmt: skip
    try:
        cases = load_cases(cfg)
    except BenchError as exc:
        raise SystemExit(f"bench_policy_variants: {exc}") from None
    variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    cache_path = Path(args.cache)
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    fp = fingerprint(cfg.profile)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        refs: dict[str, dict[str, Any]] = {}
        pending: dict[str, Future[dict[str, Any]]] = {}
        for case in cases:
            key = f"{case.label}|{args.startup_s:g}|{fp}"
            if key in cache and "oracle_gpu_hours" in cache[key]:
                refs[case.label] = cache[key]
            else:
                pending[case.label] = pool.submit(_oracle_task, case, cfg, args.startup_s)
        for label, fut in pending.items():
            refs[label] = {**cache.get(f"{label}|{args.startup_s:g}|{fp}", {}), **fut.result()}
        statics: dict[str, Future[dict[str, Any]]] = {}
        clair: dict[str, Future[dict[str, Any]]] = {}
        for case in cases:
            ref = refs[case.label]
            if "static_best" not in ref:
                statics[case.label] = pool.submit(_static_task, case, cfg, args.startup_s, ref["oracle_peak"])
            if not args.no_clairvoyant and "clairvoyant" not in ref:
                clair[case.label] = pool.submit(_replay, case, cfg, args.startup_s, ref["warm_start"],
                                                "clairvoyant", {})  # fmt: skip
        runs = {
            (case.label, name): pool.submit(
                _replay, case, cfg, args.startup_s, refs[case.label]["warm_start"], "pdscale", overrides
            )
            for case in cases
            for name, overrides in variants
        }
        for label, fut in statics.items():
            refs[label]["static_best"] = fut.result()
        for label, fut in clair.items():
            refs[label]["clairvoyant"] = {k: v for k, v in fut.result().items() if k != "timeline"}
        for label, ref in refs.items():
            cache[f"{label}|{args.startup_s:g}|{fp}"] = ref
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
        for (label, name), fut in runs.items():
            results.setdefault(label, {})[name] = fut.result()
    for case in cases:
        ref = refs[case.label]
        static_h = ref["static_best"]["summary"]["gpu_hours"]
        sb = ref["static_best"]["static_best"]
        oracle_h = ref["oracle_gpu_hours"]
        clair_s = ref.get("clairvoyant", {}).get("summary")
        print(f"\n== {case.label} ({case.role}): static-best {sb['prefill']}P/{sb['decode']}D {static_h:.2f} GPU-h, "
              f"oracle {oracle_h:.2f} ({oracle_h / static_h:.2f}x static), warm start {ref['warm_start']}"
              + (f", clairvoyant {clair_s['window_compliance']:.3f} / {clair_s['gpu_hours']:.2f}"
                 f" ({clair_s['gpu_hours'] / oracle_h:.2f}x oracle)" if clair_s else ""))  # fmt: skip
        print(f"{'variant':24s} {'compl':>6s} {'GPU-h':>7s} {'÷static':>7s} {'÷oracle':>7s} {'÷clair':>7s} "
              f"{'P-h':>6s} {'D-h':>6s} {'Pmax':>4s} {'Dmax':>4s} {'P-corr med/max':>14s} {'D-corr med/max':>14s}"
              "  failed minutes")  # fmt: skip
        for name, _ in variants:
            r = results[case.label][name]
            s = r["summary"]
            ratio_c = s["gpu_hours"] / clair_s["gpu_hours"] if clair_s else float("nan")
            print(f"{name:24s} {s['window_compliance']:6.3f} {s['gpu_hours']:7.2f} {s['gpu_hours'] / static_h:7.3f} "
                  f"{s['gpu_hours'] / oracle_h:7.3f} {ratio_c:7.3f} {s['gpu_hours_prefill']:6.2f} "
                  f"{s['gpu_hours_decode']:6.2f} {s['prefill_replicas_max']:4d} {s['decode_replicas_max']:4d} "
                  f"{_pair(r['correction']['prefill']):>14s} {_pair(r['correction']['decode']):>14s}  "
                  f"{r['failed_minutes']}")  # fmt: skip
    print(f"\nwall {time.perf_counter() - t0:.0f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"refs": refs, "results": results}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

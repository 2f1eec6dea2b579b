"""Can any autoscaler hold every window of the suite's sudden changes, and at what cost? (issue 16)

    .venv/bin/python bench/surge_feasibility.py --jobs 2

Issue 16 asks, on every suite workload, for window compliance >= 0.99 (with 60 one-minute windows: all of them)
and GPU-hours <= the cheapest fixed allocation that meets the SLO (static-best). This bench asks whether a policy
that does not know WHEN a change comes can meet both on the suite's three sudden changes (flash-crowd,
prompt-shift, lull-surge), whatever its forecasting, from three facts:

1. Capacity ready at time t was ordered by t - start-up. So in every window that ends within one start-up of the
   change, the pods ready were all ordered before the change, on what the load showed before it.
2. Before the change, the workload is the no-change one (its counterfactual, ``SuiteEntry.counterfactual``,
   spliced here: the workload's own requests before the change, the no-change process after it, so the two are
   identical before the change).
   Whatever a policy does before the change, it does on both.
3. A window passes only if the pods ready in it reach at least the oracle's need for it (``sim/oracle.py``: the
   fewest replicas that meet the SLO for that window's requests, simulated alone on warm pools starting empty, so
   a lower bound; fewer pods throughout the window fail it by the oracle's own search).

So a policy that holds every window of the change must hold, before the change, H = the largest oracle need of the
windows ending within one start-up after it. Not knowing the change's minute, it must hold H at every minute
(pods ready only now and then pay a start-up each time), on the changed workload and on the counterfactual alike.
Printed per workload and pool: the need before the change, H and their ratio (the headroom required), and the
GPU-hours that lower bound implies: on the changed workload (H until one start-up after the change, the oracle's
need after) against its static-best, and on the counterfactual (H all the time) against ITS static-best. A bound
above static-best means no policy meets both targets there; a bound below leaves room, and says how much.
Deterministic; references cost one oracle search (~60 short simulations) and one static-best search per workload.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for _p in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_policy_variants import _oracle_task, _static_task, fingerprint  # noqa: E402

from sim.bench import BenchConfig, Case, load_cases  # noqa: E402
from sim.feasibility import hold_bound_gpu_hours, spliced, windows_ordered_before  # noqa: E402
from sim.suite import Counterfactual, SuiteEntry, suite  # noqa: E402
from sim.workload import generate  # noqa: E402

WINDOW_S = 60.0


@dataclass(frozen=True)
class Change:
    """A suite workload's sudden change (its first surge's start) and the same traffic without it."""

    workload: str
    at_s: float
    what: str
    no_change: Counterfactual

    @staticmethod
    def of(entry: SuiteEntry) -> Change:
        assert entry.counterfactual is not None and entry.surges
        return Change(entry.name, entry.surges[0].start_s, entry.description, entry.counterfactual)


CHANGES = tuple(Change.of(e) for e in suite("generalization") if e.counterfactual is not None)


def references(case: Case, cfg: BenchConfig, startup_s: float) -> dict[str, Any]:
    """The oracle's per-window needs and the static-best, stored as bench_policy_variants.py caches them."""
    ref = _oracle_task(case, cfg, startup_s)
    ref["static_best"] = _static_task(case, cfg, startup_s, ref["oracle_peak"])
    return ref


def _static_best(ref: dict[str, Any]) -> list[Any]:
    """[prefill, decode, GPU-hours] of a reference's static-best (as bench_policy_variants.py caches it)."""
    best = ref["static_best"]
    return [best["static_best"]["prefill"], best["static_best"]["decode"], best["summary"]["gpu_hours"]]


def analyse(
    change: Change, ref: dict[str, Any], cf_ref: dict[str, Any], startup_s: float, gpus: int
) -> dict[str, Any]:
    needs, cf_needs = ref["oracle_windows"], cf_ref["oracle_windows"]
    first = int(change.at_s // WINDOW_S)
    decided = windows_ordered_before(change.at_s, startup_s, WINDOW_S, len(needs))
    before = needs[max(0, first - 10) : first]  # the 10 minutes before the change: what the policy sized for
    pre = (max(n[0] for n in before), max(n[1] for n in before))
    hold = (max(needs[i][0] for i in decided), max(needs[i][1] for i in decided))
    until = decided[-1] + 1
    static = _static_best(ref)[2]
    cf_static = _static_best(cf_ref)[2]
    lb = hold_bound_gpu_hours(needs, hold, until, WINDOW_S, gpus)
    cf_lb = hold_bound_gpu_hours(cf_needs, hold, len(cf_needs), WINDOW_S, gpus)
    return {
        "workload": change.workload,
        "change": change.what,
        "windows_decided_before_change": [int(i) for i in decided],
        "need_before": list(pre),
        "hold": list(hold),
        "headroom": [hold[k] / pre[k] for k in range(2)],
        "static_best": _static_best(ref),
        "bound_gpu_h": lb,
        "bound_vs_static": lb / static,
        "counterfactual": change.no_change.description,
        "cf_static_best": _static_best(cf_ref),
        "cf_bound_gpu_h": cf_lb,
        "cf_bound_vs_static": cf_lb / cf_static,
        "oracle_gpu_h": ref["oracle_gpu_hours"],
        "cf_oracle_gpu_h": cf_ref["oracle_gpu_hours"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    ap.add_argument("--workloads", default=",".join(c.workload for c in CHANGES),
                    help="comma-separated, of: " + ", ".join(c.workload for c in CHANGES))  # fmt: skip
    ap.add_argument("--startup-s", type=float, default=120.0, help="pod start-up time (default 120)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--cache", default=str(REPO_ROOT / ".bench-cache" / "references.json"),
                    help="bench_policy_variants.py's reference cache, read (never written) for the suite's own "
                         "workloads")  # fmt: skip
    ap.add_argument("--json-out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    by_name = {c.workload: c for c in CHANGES}
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        ap.error(f"--workloads: unknown {', '.join(unknown)}; known: {', '.join(by_name)}")
    cfg = BenchConfig(suite="generalization", suite_workloads=tuple(wanted))
    cases = {c.label: c for c in load_cases(cfg)}
    cache_path = Path(args.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    fp = fingerprint(cfg.profile)
    from autoscaler.profiles import load_profile

    gpus = load_profile(cfg.profile).gpus_per_replica
    started = time.monotonic()
    results = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {}
        for name in wanted:
            change, case = by_name[name], cases[name]
            cf_workload = spliced(case.workload, generate(change.no_change.generator, seed=case.seed), change.at_s,
                                  f"{name}-no-change")  # fmt: skip
            cf_case = Case(f"{name}-no-change", cf_workload, case.ttft_p99_s, case.itl_p99_s, case.seed)
            cached = cache.get(f"{name}|{args.startup_s:g}|{fp}", {})
            own = (
                None
                if "oracle_windows" in cached and "static_best" in cached
                else pool.submit(references, case, cfg, args.startup_s)
            )
            futures[name] = (cached, own, pool.submit(references, cf_case, cfg, args.startup_s))
        for name in wanted:
            cached, own, cf = futures[name]
            ref = cached if own is None else own.result()
            results.append(analyse(by_name[name], ref, cf.result(), args.startup_s, gpus))
    print(f"start-up {args.startup_s:g} s, 60 s windows, oracle needs as [prefill, decode]; "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    for r in results:
        pre, hold, head = r["need_before"], r["hold"], r["headroom"]
        sp, sd, sh = r["static_best"]
        cp, cd, ch = r["cf_static_best"]
        print(f"\n== {r['workload']}: {r['change']}")
        print(
            f"  windows whose pods were all ordered before the change: minutes {r['windows_decided_before_change']}"
        )
        print(
            f"  oracle need, 10 min before the change {pre} -> those windows {hold} "
            f"(headroom needed x{head[0]:.2f} prefill, x{head[1]:.2f} decode)"
        )
        print(f"  holding every window, not knowing the minute: >= {r['bound_gpu_h']:.2f} GPU-h on {r['workload']} "
              f"(static-best {sp}P/{sd}D {sh:.2f}: x{r['bound_vs_static']:.2f}); >= {r['cf_bound_gpu_h']:.2f} GPU-h "
              f"on the same traffic without the change ({r['counterfactual']}; static-best {cp}P/{cd}D {ch:.2f}: "
              f"x{r['cf_bound_vs_static']:.2f})")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

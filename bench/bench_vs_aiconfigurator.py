"""pdscale's latency model and simulator beside NVIDIA's AIConfigurator on Llama-3.1-8B / H100 / vLLM.

AIConfigurator (``aiconfigurator cli estimate``, PyPI, offline: it ships an H100 perf database measured with
vLLM and the Llama-3.1-8B shape) is an independent estimate built from measured kernel times. For each
(ISL, OSL, concurrency) point this prints its TTFT and TPOT next to

* pdscale's latency model (``llama-3.1-8b-h100-tp1``): TPOT = decode step at batch = concurrency and mean context
  ISL + OSL/2, plus α2; TTFT = prefill of one ISL prompt plus the host overheads (α0 + α1·ISL + α2);
* pdscale's simulator, a closed loop of ``concurrency`` users (``closed:``), aggregated serving, two ways:
  ``sim`` sends ISL/OSL requests of constant length: the users start together and, every answer taking as long,
  stay in lock-step waves (each wave's prompts queue behind each other), mean TTFT and TPOT over all requests;
  ``staggered`` draws the output lengths from uniform(OSL/2, 3·OSL/2) (same mean), so the users drift apart into
  the steady state AIConfigurator assumes; its TTFT is the mean after the first wave (the t = 0 burst).

AIConfigurator runs from a separate virtual environment (never the product's install): ``make bench-aic-venv``
creates ``.venv-aic``; ``AIC_BIN`` overrides the executable. Each estimate takes 10-60 s; ``--aic-from FILE``
reuses the AIConfigurator columns of an earlier ``--json`` output (the pdscale columns are always recomputed).
Usage::

    .venv/bin/python bench/bench_vs_aiconfigurator.py [--points 1000:200:8,4000:500:32,...] [--json]
    .venv/bin/python bench/bench_vs_aiconfigurator.py --aic-from earlier.json

"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from autoscaler.core.latency import prefill_time_s
from autoscaler.profiles import load_profile
from sim.closed_loop import run_closed_loop
from sim.engine import EngineConfig
from sim.workload import parse_closed_loop

ROOT = Path(__file__).resolve().parent.parent
AIC_BIN = os.environ.get("AIC_BIN", str(ROOT / ".venv-aic" / "bin" / "aiconfigurator"))
PROFILE = "llama-3.1-8b-h100-tp1"
DEFAULT_POINTS = ((1000, 200, 8), (4000, 500, 32), (1000, 1000, 64), (2000, 200, 128))


def aic_estimate(isl: int, osl: int, batch: int) -> dict[str, float]:
    cmd = [
        AIC_BIN, "cli", "estimate", "--model-path", "meta-llama/Meta-Llama-3.1-8B", "--system", "h100_sxm",
        "--backend", "vllm", "--isl", str(isl), "--osl", str(osl), "--batch-size", str(batch), "--tp-size", "1",
        "--estimate-mode", "agg",
    ]  # fmt: skip
    if not Path(AIC_BIN).exists():
        raise SystemExit(f"{AIC_BIN} not found: run `make bench-aic-venv` (or set AIC_BIN)")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    text = out.stdout + out.stderr
    found = {k: re.search(rf"{k}:\s+([\d.,]+) ms", text) for k in ("TTFT", "TPOT")}
    version = re.search(r"Backend:\s+vllm \(([^)]+)\)", text)
    if out.returncode != 0 or not all(found.values()):
        raise SystemExit(f"aiconfigurator failed ({out.returncode}):\n{text[-2000:]}")
    return {
        "ttft_s": float(found["TTFT"].group(1).replace(",", "")) / 1000,  # type: ignore[union-attr]
        "tpot_s": float(found["TPOT"].group(1).replace(",", "")) / 1000,  # type: ignore[union-attr]
        "aic_vllm_db": version.group(1) if version else "?",
    }


def pdscale_model(isl: int, osl: int, batch: int) -> dict[str, float]:
    p = load_profile(PROFILE)
    ctx = isl + osl / 2
    return {
        "ttft_s": prefill_time_s(p, isl) + p.host.first_token_delay_s(isl),
        "tpot_s": p.host.client_gap_s(p.step.decode_step_s(batch, batch * ctx)),
    }


def pdscale_sim(isl: int, osl: int, batch: int, *, staggered: bool = False) -> dict[str, float]:
    """A closed loop of ``batch`` users, six requests each; ``staggered``: output lengths spread around OSL so the
    users fall out of step, and TTFT over the requests after the first wave."""
    p = load_profile(PROFILE)
    cfg = EngineConfig(p, mode="agg", router="round-robin")
    output = f"uniform({osl // 2},{osl * 3 // 2})" if staggered else f"const({osl})"
    spec = parse_closed_loop(f"closed:users={batch},requests={batch * 6},prompt=const({isl}),output={output}", seed=0)
    run = run_closed_loop(spec, cfg)
    ttft = run.ttft_s[batch:] if staggered else run.ttft_s
    return {"ttft_s": float(np.mean(ttft)), "tpot_s": float(np.nanmean(run.tpot_s))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", help="ISL:OSL:CONCURRENCY,... (default 1000:200:8,4000:500:32,1000:1000:64,2000:200:128)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aic-from", metavar="FILE", help="reuse the AIConfigurator estimates of an earlier --json run")
    args = ap.parse_args()
    points = DEFAULT_POINTS
    if args.points:
        points = tuple(tuple(int(x) for x in p.split(":")) for p in args.points.split(","))  # type: ignore[assignment]
    earlier = {}
    if args.aic_from:
        earlier = {(r["isl"], r["osl"], r["concurrency"]): r["aic"] for r in json.loads(Path(args.aic_from).read_text())}
    rows = []
    for isl, osl, batch in points:
        aic = earlier.get((isl, osl, batch)) or aic_estimate(isl, osl, batch)
        model = pdscale_model(isl, osl, batch)
        sim = pdscale_sim(isl, osl, batch)
        staggered = pdscale_sim(isl, osl, batch, staggered=True)
        rows.append(
            {"isl": isl, "osl": osl, "concurrency": batch, "aic": aic, "model": model, "sim": sim,
             "staggered": staggered}
        )  # fmt: skip
        print(f"done {isl}/{osl}/{batch}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Llama-3.1-8B, 1x H100 SXM, vLLM; AIConfigurator perf DB vLLM {rows[0]['aic']['aic_vllm_db']}; "
          f"pdscale profile {PROFILE}")
    print(f"{'ISL/OSL/conc':>15} | {'TTFT ms: AIC':>12} {'model':>7} {'sim':>7} {'stagger':>7} | "
          f"{'TPOT ms: AIC':>12} {'model':>7} {'sim':>7} {'stagger':>7} | {'TPOT sim/AIC':>12}")
    for r in rows:
        a, m, s, g = r["aic"], r["model"], r["sim"], r["staggered"]
        print(f"{r['isl']:>6}/{r['osl']:>4}/{r['concurrency']:>3} | {1e3 * a['ttft_s']:>12.1f} "
              f"{1e3 * m['ttft_s']:>7.1f} {1e3 * s['ttft_s']:>7.1f} {1e3 * g['ttft_s']:>7.1f} | "
              f"{1e3 * a['tpot_s']:>12.2f} {1e3 * m['tpot_s']:>7.2f} {1e3 * s['tpot_s']:>7.2f} "
              f"{1e3 * g['tpot_s']:>7.2f} | {s['tpot_s'] / a['tpot_s']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pdscale's latency model and simulator beside NVIDIA's AIConfigurator on Llama-3.1-8B / H100 / vLLM.

AIConfigurator (``aiconfigurator cli estimate``, PyPI, offline: it ships an H100 perf database measured with
vLLM and the Llama-3.1-8B shape) is an independent estimate built from measured kernel times. For each
(ISL, OSL, concurrency) point this prints its TTFT and TPOT next to

* pdscale's latency model (``llama-3.1-8b-h100-tp1``): TPOT = decode step at batch = concurrency and mean context
  ISL + OSL/2, plus α2; TTFT = prefill of one ISL prompt plus the host overheads (α0 + α1·ISL + α2);
* pdscale's simulator: a closed loop of ``concurrency`` users sending ISL/OSL requests (``closed:``), mean TTFT and
  mean TPOT over the requests.

AIConfigurator runs from a separate virtual environment (never the product's install): ``make bench-aic-venv``
creates ``.venv-aic``; ``AIC_BIN`` overrides the executable. Each estimate takes 10-60 s. Usage::

    .venv/bin/python bench/bench_vs_aiconfigurator.py [--points 1000:200:8,4000:500:32,...] [--json]
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


def pdscale_sim(isl: int, osl: int, batch: int) -> dict[str, float]:
    p = load_profile(PROFILE)
    cfg = EngineConfig(p, mode="agg", router="round-robin")
    spec = parse_closed_loop(
        f"closed:users={batch},requests={batch * 6},prompt=const({isl}),output=const({osl})", seed=0
    )
    run = run_closed_loop(spec, cfg)
    return {"ttft_s": float(np.mean(run.ttft_s)), "tpot_s": float(np.nanmean(run.tpot_s))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", help="ISL:OSL:CONCURRENCY,... (default 1000:200:8,4000:500:32,1000:1000:64,2000:200:128)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    points = DEFAULT_POINTS
    if args.points:
        points = tuple(tuple(int(x) for x in p.split(":")) for p in args.points.split(","))  # type: ignore[assignment]
    rows = []
    for isl, osl, batch in points:
        aic = aic_estimate(isl, osl, batch)
        model = pdscale_model(isl, osl, batch)
        sim = pdscale_sim(isl, osl, batch)
        rows.append({"isl": isl, "osl": osl, "concurrency": batch, "aic": aic, "model": model, "sim": sim})
        print(f"done {isl}/{osl}/{batch}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Llama-3.1-8B, 1x H100 SXM, vLLM; AIConfigurator perf DB vLLM {rows[0]['aic']['aic_vllm_db']}; "
          f"pdscale profile {PROFILE}")
    print(f"{'ISL/OSL/conc':>15} | {'TTFT ms: AIC':>12} {'model':>7} {'sim':>7} | "
          f"{'TPOT ms: AIC':>12} {'model':>7} {'sim':>7} | {'TPOT sim/AIC':>12}")
    for r in rows:
        a, m, s = r["aic"], r["model"], r["sim"]
        print(f"{r['isl']:>6}/{r['osl']:>4}/{r['concurrency']:>3} | {1e3 * a['ttft_s']:>12.1f} "
              f"{1e3 * m['ttft_s']:>7.1f} {1e3 * s['ttft_s']:>7.1f} | {1e3 * a['tpot_s']:>12.2f} "
              f"{1e3 * m['tpot_s']:>7.2f} {1e3 * s['tpot_s']:>7.2f} | {s['tpot_s'] / a['tpot_s']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

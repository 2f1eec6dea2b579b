"""The chaos run (tests/helpers/chaos.py), bounded for CI: two controller replicas with Lease election, the
Kubernetes emulator and a real Prometheus, every fault kind injected several times in 60 s of 0.5 s ticks (about
30 minutes of 15 s ticks), invariants checked after every pass. ``bench/bench_chaos.py --minutes N`` runs it longer.
``PDSCALE_CHAOS_S`` / ``PDSCALE_CHAOS_SEED`` change the length and the seed of this test's run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers.chaos import FAULT_KINDS, Chaos, ChaosConfig, PassRecord, bad_data, chaos_world


def test_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    config = ChaosConfig(duration_s=float(os.environ.get("PDSCALE_CHAOS_S", "60")),
                         seed=int(os.environ.get("PDSCALE_CHAOS_SEED", "0")))
    with chaos_world(tmp_path, config) as chaos:
        report = chaos.run()
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    assert report.violations == [], summary
    assert set(report.faults) == set(FAULT_KINDS), summary  # every kind was injected
    assert report.passes >= 40 and report.checks["single-writer"] >= 40, summary
    assert report.scale_writes["up"] >= 2 and report.scale_writes["down"] >= 1, "the run scaled both ways"
    assert report.handovers >= 1, "a leader was killed and another took over"


OBSERVATION = {
    "signals": {"error": None, "request_rate_per_s": 4.0, "prompt_tokens_per_s": 800.0, "output_tokens_per_s": 80.0,
                "failed_request_rate_per_s": 0.0, "prefill": {"pods_reporting": 2.0},
                "decode": {"pods_reporting": 2.0}},
    "prefill": {"desired": 2, "ready": 2}, "decode": {"desired": 2, "ready": 2},
}


def test_the_checker_catches_a_scale_down_on_bad_data() -> None:
    """The invariant can fail: a scale-down applied on failing traffic is a violation, one on good data is not."""
    def pass_with(signals: dict[str, object]) -> PassRecord:
        obs = {**OBSERVATION, "signals": {**OBSERVATION["signals"], **signals}}  # type: ignore[dict-item]
        decision = {pool: {"current_replicas": 2, "desired_replicas": 1 if pool == "decode" else 2,
                           "reason": "LoadBelowCapacity", "message": "m"} for pool in ("prefill", "decode")}
        return PassRecord("r", 0.0, 1.0, [{"autoscaler": "chaos/llama", "observation": obs, "decision": decision,
                                          "applied": ["decode"], "failures": []}])

    assert bad_data(OBSERVATION) is None
    assert bad_data({**OBSERVATION, "signals": {**OBSERVATION["signals"], "failed_request_rate_per_s": 1.0}})
    chaos = Chaos.__new__(Chaos)
    chaos.report = __import__("tests.helpers.chaos", fromlist=["ChaosReport"]).ChaosReport()
    for record in (pass_with({}), pass_with({"failed_request_rate_per_s": 4.0}), pass_with({"error": "down"})):
        for report in record.reports:
            chaos._check_report(record, report)
    assert len(chaos.report.violations) == 2 and chaos.report.scale_writes["down"] == 3

"""``pdscale bench`` on a small generated workload: structure, relations between policies, JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from autoscaler.cli import main
from sim import bench
from sim.bench import (
    ALL_POLICIES,
    BenchConfig,
    BenchError,
    BenchResult,
    render,
    run_bench,
    warm_start,
    write_plots,
)
from sim.oracle import OracleSchedule, WindowNeed
from sim.summary import SUMMARY_KEYS
from sim.workload import generate, replicate

# a load step at 90 s: the autoscalers have something to do, yet it runs in seconds
GEN = "step:rate=6,to=24,at=90,duration=180,prompt=lognormal(2000,0.6),output=exp(150)"
CFG = BenchConfig(
    generators=(GEN,), rate_scale=1.0, startups_s=(30.0, 60.0), jobs=1, max_replicas=16, policies=ALL_POLICIES
)


@pytest.fixture(scope="module")
def result() -> BenchResult:
    return run_bench(CFG)


def test_every_policy_runs_once_per_startup(result: BenchResult) -> None:
    rows = result.rows()
    names = [r["policy"] for r in rows]
    assert names.count("static-best") == 1 and names.count("oracle") == 1
    for name in ("hpa", "keda-queue", "dynamo-sla", "pdscale", "clairvoyant"):
        assert sorted(r["startup_s"] for r in rows if r["policy"] == name) == [30.0, 60.0]
    assert {r["trace"] for r in rows} == {"step"}
    for r in rows:
        assert set(SUMMARY_KEYS) <= set(r)
        assert {"worst_window_ttft_p99_s", "worst_window_itl_p99_s", "gpu_hours_vs_oracle"} <= set(r)


def test_static_best_meets_the_slo(result: BenchResult) -> None:
    sb = next(r for r in result.rows() if r["policy"] == "static-best")
    assert sb["window_compliance"] >= 0.99
    info = result.traces[0].static_best
    assert info is not None and info["found"]
    assert (sb["prefill_replicas_max"], sb["decode_replicas_max"]) == (info["prefill"], info["decode"])


def test_oracle_is_a_lower_bound(result: BenchResult) -> None:
    """Below static-best always; below any policy that met the SLO (a policy that misses it may be cheaper)."""
    rows = result.rows()
    oracle = next(r for r in rows if r["policy"] == "oracle")
    assert oracle["gpu_hours"] == pytest.approx(result.traces[0].oracle.gpu_hours)
    for r in rows:
        if r["policy"] == "static-best" or (r["window_compliance"] or 0) >= 0.99:
            assert oracle["gpu_hours"] <= r["gpu_hours"] + 1e-9, r["policy"]


def test_ratios(result: BenchResult) -> None:
    rows = result.rows()
    oracle_h = result.traces[0].oracle.gpu_hours
    static_h = next(r["gpu_hours"] for r in rows if r["policy"] == "static-best")
    for r in rows:
        assert r["gpu_hours_vs_oracle"] == pytest.approx(r["gpu_hours"] / oracle_h)
        assert r["gpu_hours_vs_static_best"] == pytest.approx(r["gpu_hours"] / static_h)


def test_tables_and_plots(result: BenchResult, tmp_path: Path) -> None:
    console = Console(record=True, width=220)
    render(result, console)
    text = console.export_text()
    for name in ALL_POLICIES:
        assert name in text
    assert "startup sweep" in text
    paths = write_plots(result, tmp_path)
    assert [p.name for p in paths] == ["bench_step.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--generator", GEN, "--rate-scale", "1", "--policies", "static-best,hpa,oracle",
               "--startup-s", "30", "--jobs", "1", "--max-replicas", "16", "--json"])  # fmt: skip
    assert rc == 0
    payload = json.loads(capsys.readouterr().out, parse_constant=_reject)
    assert [(r["trace"], r["policy"]) for r in payload["runs"]] == [
        ("step", "static-best"), ("step", "hpa"), ("step", "oracle")
    ]  # fmt: skip
    for r in payload["runs"]:
        assert isinstance(r["window_compliance"], float) and isinstance(r["gpu_hours"], float)


def _reject(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--policies", "nope"], "unknown nope", id="unknown-policy"),
        pytest.param(["--rate-scale", "0"], "--rate-scale", id="bad-rate-scale"),
        pytest.param(["--traces", "/nonexistent/t.csv"], "/nonexistent/t.csv", id="missing-trace"),
    ],
)
def test_cli_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = [] if "--traces" in argv else ["--generator", GEN]
    assert main(["bench", *base, *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_default_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "DEFAULT_TRACE_DIR", Path("/nonexistent/shared/traces"))
    with pytest.raises(BenchError, match="default traces not found in /nonexistent/shared/traces"):
        bench.resolve_traces((), ())


@pytest.mark.parametrize(
    ("k", "factor"), [pytest.param(3.0, 3, id="integer"), pytest.param(2.5, 2.5, id="fraction")]
)
def test_replicate_keeps_length_and_scales_rate(k: float, factor: float) -> None:
    w = generate("poisson:rate=20,duration=300", seed=0)
    r = replicate(w, k, spread_s=60.0, seed=1)
    assert len(r) == pytest.approx(factor * len(w), rel=0.05)
    assert r.duration_s == pytest.approx(w.duration_s, abs=2.0)
    assert float(r.arrival_s.max()) < w.duration_s
    assert np.all(np.diff(r.arrival_s) >= 0)
    assert np.array_equal(replicate(w, k, spread_s=60.0, seed=1).arrival_s, r.arrival_s)
    if float(k).is_integer():  # exactly K copies of every request
        assert np.array_equal(np.sort(r.prompt_tokens), np.sort(np.tile(w.prompt_tokens, int(k))))
    assert abs(float(np.mean(r.prompt_tokens)) - float(np.mean(w.prompt_tokens))) < 0.1 * float(
        np.mean(w.prompt_tokens)
    )


@pytest.mark.parametrize(
    ("startup_s", "expected"),
    [(0.0, (2, 1)), (60.0, (5, 1)), (120.0, (5, 4)), (600.0, (9, 4))],
    ids=["instant-start-covers-first-window", "one-minute", "two-minutes", "longer-than-the-trace"],
)
def test_warm_start_covers_what_arrives_before_a_pod_could_start(
    startup_s: float, expected: tuple[int, int]
) -> None:
    needs = [(2, 1), (5, 1), (3, 4), (9, 2)]
    windows = tuple(
        WindowNeed(start_s=60.0 * i, arrivals=10, prefill=p, decode=d, feasible=True, simulations=1)
        for i, (p, d) in enumerate(needs)
    )
    assert warm_start(OracleSchedule(60.0, windows, 1), startup_s) == expected


def test_warm_start_holds_the_windows_no_decision_can_change() -> None:
    """The warm start is the cheapest fixed allocation, searched from the oracle's, under which every window
    before a first ordered pod could be ready passes when run continuously (a ramp's queue carries over)."""
    from autoscaler.profiles import load_profile
    from sim.bench import _cut, base_scenario, warm_start_continuous
    from sim.oracle import SimSettings, StaticSearch, oracle_schedule

    ramp = "step:rate=10,to=40,at=60,duration=240,prompt=lognormal(2000,0.6),output=exp(150)"
    w = generate(ramp, seed=3)
    cfg = BenchConfig(generators=(ramp,), rate_scale=1.0, max_replicas=16)
    sc = base_scenario(cfg, w, load_profile(cfg.profile), 120.0)
    settings = SimSettings.of(sc)
    oracle = oracle_schedule(w, settings)
    p, d = warm_start_continuous(sc, oracle, 120.0, 60.0)
    prefix = StaticSearch(_cut(w, 180.0), settings, 60.0, target=1.0)
    assert prefix.compliance(p, d).window_compliance == 1.0
    for smaller in ((p - 1, d), (p, d - 1)):
        if min(smaller) >= 1:
            assert prefix.compliance(*smaller).window_compliance < 1.0, smaller

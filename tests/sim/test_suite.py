"""``pdscale bench --suite``: the generalization suite's entries, selection, and a suite run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from autoscaler.cli import main
from sim import suite as suite_module
from sim.bench import BenchConfig, BenchError, render, run_bench
from sim.suite import ROLES, Counterfactual, SuiteEntry, Surge, rate_profile, select, suite
from sim.workload import generate

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def test_generalization_has_every_shape_and_both_traces_with_three_seeds() -> None:
    entries = suite("generalization")
    names = [e.name for e in entries]
    for shape in ("flat", "diurnal", "flash-crowd", "lull-surge", "prompt-shift", "long-prompts",
                  "very-long-prompts"):  # fmt: skip
        assert shape in names
    for trace in ("conv", "code"):
        assert [n for n in names if n.startswith(trace)] == [f"{trace}-s{s}" for s in (0, 1, 2)]
    assert {e.role for e in entries} == set(ROLES)
    assert all(e.surges for e in entries if e.name in ("flash-crowd", "lull-surge", "prompt-shift"))
    assert next(e for e in entries if e.name == "long-prompts").ttft_p99_s == 10.0


def test_a_generated_entry_is_seeded_and_shaped_as_described() -> None:
    entry = next(e for e in suite("generalization") if e.name == "very-long-prompts")
    a, b = entry.workload(TRACES), entry.workload(TRACES)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert a.name == "very-long-prompts" and a.duration_s == 3600.0
    p50, p99 = np.percentile(a.prompt_tokens, [50, 99])
    assert 27_000 < p50 < 33_000 and 100_000 < p99 <= 131_072


def test_rate_profile_is_piecewise_linear_at_step_mids() -> None:
    rates = [float(x) for x in rate_profile([(0, 10.0), (100, 10.0), (200, 30.0)], 300.0, 50.0).split("/")]
    assert rates == [10.0, 10.0, 15.0, 25.0, 30.0, 30.0]
    with pytest.raises(ValueError, match="time order"):
        rate_profile([(100, 1.0), (0, 2.0)], 300.0)


def test_select_by_name_and_role() -> None:
    entries = suite("generalization")
    assert [e.name for e in select(entries, ["flat", "conv-s1"])] == ["flat", "conv-s1"]
    assert {e.role for e in select(entries, role="held-out")} == {"held-out"}
    with pytest.raises(KeyError, match="unknown suite workload"):
        select(entries, ["nope"])
    with pytest.raises(KeyError, match="unknown suite"):
        suite("nope")
    with pytest.raises(ValueError, match="exactly one"):
        SuiteEntry("x", "", "train")


def test_cli_lists_the_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--suite", "generalization", "--list"]) == 0
    out = capsys.readouterr().out
    assert "lull-surge" in out and "held-out" in out and "TTFT p99 <= 10 s" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--suite", "nope"], "unknown suite", id="unknown-suite"),
        pytest.param(["--suite", "generalization", "--workloads", "nope"], "unknown suite workload", id="name"),
        pytest.param(["--workloads", "flat"], "select workloads of a --suite", id="no-suite"),
        pytest.param(["--suite", "generalization", "--generator", "poisson:rate=1,duration=60"], "replaces",
                     id="suite-and-generator"),
    ],
)
def test_cli_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv, "--jobs", "1"]) == 2
    assert message in capsys.readouterr().err


TINY = (
    SuiteEntry(
        "tiny-surge", "a step from 4 to 20 req/s at 240 s", "train",
        "step:rate=4,to=20,at=240,duration=600,prompt=lognormal(2000,0.5),output=exp(100)",
        ttft_p99_s=2.0, surges=(Surge(240.0, 600.0, "step"),),
    ),
    SuiteEntry("tiny-flat", "4 req/s", "held-out", "poisson:rate=4,duration=300,output=exp(100)", seed=3),
)  # fmt: skip


def test_a_suite_run_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each workload keeps its own SLO, seed and role; targets and the surge report come out per workload."""
    monkeypatch.setitem(suite_module.SUITES, "tiny", lambda: TINY)
    cfg = BenchConfig(suite="tiny", startups_s=(60.0,), jobs=1, max_replicas=16,
                      policies=("static-best", "pdscale", "clairvoyant", "oracle"))  # fmt: skip
    result = run_bench(cfg)
    assert [(t.label, t.role, t.ttft_p99_s) for t in result.traces] == [
        ("tiny-surge", "train", 2.0), ("tiny-flat", "held-out", 1.0)
    ]  # fmt: skip
    rows = result.rows()
    assert {r["ttft_target_s"] for r in rows if r["trace"] == "tiny-surge"} == {2.0}
    targets = result.targets()
    assert [t["trace"] for t in targets] == ["tiny-surge", "tiny-flat"]
    for t in targets:
        assert t["vs_clairvoyant"] and t["clairvoyant_vs_oracle"] and t["vs_static_best"]
        assert isinstance(t["meets_compliance"], bool)
    surge_rows = result.traces[0].surge_reports
    assert surge_rows and {r["pool"] for r in surge_rows} <= {"prefill", "decode"}
    assert not result.traces[1].surge_reports
    console = Console(record=True, width=250)
    render(result, console)
    text = console.export_text()
    assert "tiny-surge (train)" in text and "pdscale ÷ clairvoyant" in text and "physical minimum" in text
    payload = result.to_json()
    assert payload["workloads"]["tiny-flat"]["role"] == "held-out" and payload["surges"]
    with pytest.raises(BenchError, match=r"no workload selected: --role held-out excludes .*tiny-surge is train"):
        run_bench(BenchConfig(suite="tiny", suite_role="held-out", suite_workloads=("tiny-surge",)))


def test_sudden_changes_have_counterfactuals_that_match_them_before_the_change() -> None:
    """The feasibility bound splices each sudden change with the same traffic without it: the counterfactual's
    streams are the entry's own, so the flash crowd's (whose base stream is unchanged) is request for request the
    same before minute 20; prompt-shift's and lull-surge's change a stream's later rates, so their arrival counts
    before the change agree only in expectation."""
    entries = {e.name: e for e in suite("generalization")}
    assert {n for n, e in entries.items() if e.counterfactual} == {"flash-crowd", "prompt-shift", "lull-surge"}
    for name in ("flash-crowd", "prompt-shift", "lull-surge"):
        e = entries[name]
        assert e.counterfactual is not None and e.generator is not None
        at = e.surges[0].start_s
        w = generate(e.generator, seed=e.seed)
        cf = generate(e.counterfactual.generator, seed=e.seed)
        n_w, n_cf = int((w.arrival_s < at).sum()), int((cf.arrival_s < at).sum())
        assert abs(n_w - n_cf) < 4 * np.sqrt(n_w), (name, n_w, n_cf)
        assert (cf.arrival_s >= at).sum() < (w.arrival_s >= at).sum() or name == "prompt-shift", name
    flash = entries["flash-crowd"]
    assert flash.counterfactual is not None and flash.generator is not None
    w = generate(flash.generator, seed=0)
    cf = generate(flash.counterfactual.generator, seed=0)
    np.testing.assert_array_equal(w.arrival_s[w.arrival_s < 1200], cf.arrival_s[cf.arrival_s < 1200])


def test_a_counterfactual_needs_a_surge() -> None:
    spec = "poisson:rate=1,duration=10"
    with pytest.raises(ValueError, match="counterfactual needs the surge"):
        SuiteEntry("x", "x", "train", spec, counterfactual=Counterfactual(spec, "x"))

"""pdscale sim fidelity: the shipped rows replay within tolerance; bad rows and misses are reported as such."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from autoscaler.cli import main
from autoscaler.core.latency import HostOverheads
from autoscaler.profiles import ProfileError, load_profile, parse_profile
from sim.closed_loop import run_closed_loop, run_open
from sim.engine import Engine, EngineConfig
from sim.fidelity import DATA_PATH, FidelityDataError, failures, load_rows, run_fidelity
from sim.workload import SpecError, Workload, generate, parse_closed_loop

PROFILE = load_profile("llama-3.1-8b-h100-tp1")


def _config(profile=PROFILE, host=None, reference=False):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return EngineConfig(
        profile if host is None else replace(profile, host=host), mode="agg", router="round-robin",
        reference=reference,
    )  # fmt: skip


def _engine(profile=PROFILE, host=None):  # type: ignore[no-untyped-def]
    cfg = _config(profile, host)
    return lambda w: Engine(w, cfg, 0, 1)


def test_shipped_rows_are_cited_and_every_covered_row_is_within_tolerance() -> None:
    rows = load_rows()
    assert {r.split for r in rows} == {"fit", "holdout"}
    assert any(r.profile is None for r in rows), "uncovered rows must be listed, not dropped"
    for r in rows:
        assert r.source and r.conditions
        assert (r.profile is None) != (r.not_covered is None)
    results = run_fidelity(rows)
    covered = [x for x in results if x["covered"]]
    assert covered and any(x["split"] == "holdout" for x in covered)
    # every miss is declared with its reason, and every declared miss still misses
    assert not failures(results), failures(results)
    assert all(x["ok"] for x in covered if x["split"] == "fit"), "a fit row must hold its tolerance"
    assert any(x["covered"] and x["metric"].startswith(("tpot", "output")) for x in results), "served rows covered"


def _write_rows(tmp_path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump({"rows": rows}))
    return path


ROW = {
    "id": "toy", "split": "holdout", "source": "test", "conditions": "test", "profile": "llama-3.1-8b-h100-tp1",
    "workload": {"kind": "batch", "requests": 8, "prompt_tokens": 32, "output_tokens": 128, "frontend": False},
    "metrics": {"batch_latency_s": 0.997542},
}  # fmt: skip


def test_cli_exit_status_follows_the_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_rows(tmp_path, [ROW])
    assert main(["sim", "fidelity", "--data", str(good), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["passed"] == 1 and doc["results"][0]["simulated"] > 0
    off = _write_rows(tmp_path, [{**ROW, "metrics": {"batch_latency_s": 0.5}}])  # the model is ~2x this
    assert main(["sim", "fidelity", "--data", str(off)]) == 1
    assert "NO" in capsys.readouterr().out


def test_a_declared_miss_is_printed_and_must_keep_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    off = {**ROW, "metrics": {"batch_latency_s": 0.5}, "known_miss": "the toy row is half the real latency"}
    assert main(["sim", "fidelity", "--data", str(_write_rows(tmp_path, [off]))]) == 0
    out = capsys.readouterr().out
    assert "known miss toy" in out and "half the real latency" in out
    stale = {**ROW, "known_miss": "no longer true"}  # within tolerance: the declaration must go
    assert main(["sim", "fidelity", "--data", str(_write_rows(tmp_path, [stale]))]) == 1
    assert "remove known_miss" in capsys.readouterr().out
    with pytest.raises(FidelityDataError, match="known_miss"):
        load_rows(_write_rows(tmp_path, [{**ROW, "known_miss": ""}]))


def test_uncovered_rows_are_listed_with_their_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = {k: v for k, v in ROW.items() if k not in ("profile", "workload")}
    path = _write_rows(tmp_path, [{**row, "not_covered": "FP8 weights"}])
    assert main(["sim", "fidelity", "--data", str(path)]) == 0
    assert "FP8 weights" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": "train"}, "split"),
        ({"metrics": {"ttft_p50": 1.0}}, "unknown"),
        ({"metrics": {"ttft_mean_s": -1.0}}, "> 0"),
        ({"not_covered": "and a profile"}, "exactly one"),
        ({"workload": {"kind": "trace"}}, "workload.kind"),
    ],
)
def test_malformed_rows_are_named(tmp_path: Path, change: dict, message: str) -> None:  # type: ignore[type-arg]
    path = _write_rows(tmp_path, [{**ROW, **change}])
    with pytest.raises(FidelityDataError, match=message):
        load_rows(path)
    assert main(["sim", "fidelity", "--data", str(path)]) == 2


def test_data_file_default_is_the_shipped_one() -> None:
    assert DATA_PATH.name == "fidelity_data.yaml" and DATA_PATH.is_file()


# ------------------------------------------------------------------ closed loop
def test_closed_loop_is_the_semaphore_fixed_point() -> None:
    spec = parse_closed_loop("closed:users=4,requests=40,prompt=lognormal(500,0.5),output=exp(60)", seed=3)
    run = run_closed_loop(spec, _config())
    # every send is the completion that freed a client (client-side: + alpha2 per token), exactly
    assert np.array_equal(run.arrival_s, spec.arrivals_from_completions(run.last_token_s))
    # never more than `users` requests in flight
    events = sorted([(t, 1) for t in run.arrival_s] + [(t, -1) for t in run.last_token_s], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 4


def test_closed_loop_runs_in_one_engine_run_at_any_size() -> None:
    # the retired fixed-point solver needed one engine run per round and did not converge here
    spec = parse_closed_loop("closed:users=8,requests=160,prompt=const(1024),output=const(128)", seed=0)
    run = run_closed_loop(spec, _config())
    assert run.engine.all_done and np.isfinite(run.arrival_s).all()
    assert np.count_nonzero(run.arrival_s == 0.0) == 8


def test_one_user_sends_each_request_when_the_last_one_ends_plus_think() -> None:
    spec = parse_closed_loop("closed:users=1,requests=5,think_s=0.5,prompt=const(100),output=const(10)", seed=0)
    run = run_closed_loop(spec, _config(host=HostOverheads()))
    assert run.arrival_s[1:] == pytest.approx(run.last_token_s[:-1] + 0.5)
    # alone, every request sees the same latency
    assert np.ptp(run.e2e_s) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "spec", ["closed:users=0,requests=4", "closed:users=2", "closed:users=2,requests=3,think_s=-1",
             "closed:users=2,requests=3,rate=4"],
)  # fmt: skip
def test_bad_closed_specs_are_errors(spec: str) -> None:
    with pytest.raises(SpecError):
        parse_closed_loop(spec, seed=0)


def test_open_loop_generator_rejects_a_closed_stream() -> None:
    with pytest.raises(SpecError, match="closed-loop"):
        generate("closed:users=2,requests=4", seed=0)


# ------------------------------------------------------------------ host overheads (BLIS alpha semantics)
def test_host_overheads_shift_ttft_and_add_alpha2_per_token() -> None:
    w = Workload("one", np.zeros(1), np.array([1000]), np.array([50]))
    plain = run_open(w, _engine(host=HostOverheads()))
    host = HostOverheads(request_s=0.01, request_per_prompt_token_s=2e-6, output_token_s=0.003)
    shifted = run_open(w, _engine(host=host))
    assert shifted.ttft_s[0] == pytest.approx(plain.ttft_s[0] + 0.01 + 2e-6 * 1000 + 0.003)
    assert shifted.e2e_s[0] == pytest.approx(plain.e2e_s[0] + 0.01 + 2e-6 * 1000 + 50 * 0.003)
    assert shifted.tpot_s[0] == pytest.approx(plain.tpot_s[0] + 0.003)


def test_admission_delay_reorders_arrivals_but_not_the_records() -> None:
    # the long prompt is sent first but reaches the engine after the short one (alpha1 per prompt token)
    w = Workload("two", np.array([0.0, 0.001]), np.array([8000, 10]), np.array([5, 5]))
    run = run_open(w, _engine(host=HostOverheads(request_per_prompt_token_s=1e-5)))
    assert list(run.prompt_tokens) == [8000, 10]
    rec = run.engine.records()
    assert rec.prefill_start_s[1] < rec.prefill_start_s[0]  # the short prompt got through first


def test_profile_host_block_is_validated() -> None:
    doc = yaml.safe_load(Path("autoscaler/profiles/llama-3.1-8b-h100-tp1.yaml").read_text())
    assert parse_profile(doc, "x").host.request_per_prompt_token_s == pytest.approx(1.752e-6)
    with pytest.raises(ProfileError, match=r"host\.alpha2"):
        parse_profile({**doc, "host": {"alpha2": 1.0}}, "x")
    with pytest.raises(ProfileError, match="output_token_s"):
        parse_profile({**doc, "host": {"output_token_s": -1.0}}, "x")
    with pytest.raises(ValueError, match="finite"):
        HostOverheads(request_s=float("nan"))


def test_engine_applies_host_overheads_same_in_fast_and_reference_mode() -> None:
    from dataclasses import replace

    host = HostOverheads(request_s=0.005, request_per_prompt_token_s=2e-5, output_token_s=0.002)
    profile = replace(PROFILE, host=host)
    w = generate("poisson:rate=30,duration=20,prompt=lognormal(1500,0.8),output=exp(80)", seed=4)
    runs = []
    for reference in (False, True):
        e = Engine(w, EngineConfig(profile, mode="agg", router="round-robin", reference=reference), 0, 2)
        e.finish()
        runs.append((e.records(), e.proxy))
    (fast, px), (ref, _) = runs
    # equal up to float rounding of closed-form vs step-by-step sums (as tests/sim/test_engine.py compares them)
    np.testing.assert_allclose(fast.first_token_s, ref.first_token_s, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.last_token_s, ref.last_token_s, rtol=0, atol=1e-9)
    # nothing starts before it got through the host: prefill_start >= arrival + α0 + α1·prompt
    delay = host.request_s + host.request_per_prompt_token_s * fast.prompt_tokens.astype(float)
    assert np.all(fast.prefill_start_s >= fast.arrival_s + delay - 1e-12)
    # the proxy's TTFT is the client's: first token − client arrival + α2
    assert px.ttft.sum == pytest.approx(float(np.sum(fast.first_token_s - fast.arrival_s)) + len(w) * 0.002)

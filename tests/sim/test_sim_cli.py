"""``pdscale sim run`` end to end through ``autoscaler.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.cli import main
from sim.summary import SUMMARY_KEYS

GEN = "poisson:rate=3,duration=180,prompt=lognormal(600,0.5),output=exp(80)"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def run_json(capsys, *argv: str) -> dict:
    assert main(["sim", "run", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_json_summary_keys_and_values(capsys):
    s = run_json(capsys, "--generator", GEN, "--prefill", "1", "--decode", "2", "--seed", "1")
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["requests"] > 400 and s["completed"] == s["requests"]
    assert 180 <= s["sim_duration_s"] <= 180 + 900
    assert 0 < s["ttft_p50_s"] <= s["ttft_p99_s"]
    assert 0 < s["itl_p50_s"] <= s["itl_p99_s"]
    assert 0 <= s["request_slo_attainment"] <= 1 and 0 <= s["window_compliance"] <= 1
    assert (s["prefill_replicas_max"], s["decode_replicas_max"], s["scale_events"]) == (1, 2, 0)
    assert s["gpu_hours"] == pytest.approx(3 * s["sim_duration_s"] / 3600)
    assert s["policy"] == "static"


def test_flags_change_the_outcome(capsys):
    base = run_json(capsys, "--generator", GEN, "--prefill", "1", "--decode", "1")
    tight = run_json(capsys, "--generator", GEN, "--prefill", "1", "--decode", "1", "--ttft-p99", "0.001")
    heavy = run_json(capsys, "--generator", GEN, "--prefill", "1", "--decode", "1", "--rate-scale", "2")
    assert (
        tight["ttft_target_s"] == 0.001 and tight["request_slo_attainment"] < base["request_slo_attainment"]
    )
    assert heavy["requests"] == base["requests"]  # same arrivals, twice as dense
    assert heavy["sim_duration_s"] < base["sim_duration_s"]
    agg = run_json(capsys, "--generator", GEN, "--mode", "agg", "--decode", "2")
    assert agg["mode"] == "agg" and agg["prefill_replicas_max"] == 0


def test_scale_mode_replicate_keeps_the_span_and_multiplies_requests(capsys):
    base = run_json(capsys, "--generator", GEN, "--prefill", "2", "--decode", "2")
    dense = run_json(capsys, "--generator", GEN, "--prefill", "2", "--decode", "2", "--rate-scale", "3",
                     "--scale-mode", "replicate")  # fmt: skip
    assert dense["requests"] == 3 * base["requests"]  # three shifted copies of the same arrivals
    assert dense["sim_duration_s"] >= 180  # still the generator's 180 s span, not 60 s as with compress


def test_out_dir_files(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["sim", "run", "--generator", GEN, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "request_slo_attainment" in printed and "static" in printed
    names = {p.name for p in out.iterdir()}
    assert {"requests.csv", "windows.csv", "decisions.csv", "summary.json", "load.png", "replicas.png",
            "latency.png"} <= names  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "requests.csv").read_text().splitlines()
    assert len(lines) == summary["requests"] + 1 and lines[0].startswith("request,arrival_s")
    windows = (out / "windows.csv").read_text().splitlines()
    assert windows[0].startswith("start_s,end_s,arrivals") and len(windows) >= 4
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scenario_file_with_flag_override(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(f'workload:\n  generator: "{GEN}"\nprefill: 2\ndecode: 1\nseed: 4\n')
    s = run_json(capsys, str(path), "--decode", "3")
    assert (s["prefill_replicas_max"], s["decode_replicas_max"], s["scenario"]) == (2, 3, "s")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace", "/no/such/trace.csv"], "--trace: no such file: /no/such/trace.csv"),
        (["--rate-scale", "0"], "--rate-scale must be a positive number"),
        (["--ttft-p99", "-1"], "--ttft-p99 must be a positive number"),
        (["--decode", "-2"], "--decode must be >= 0"),
        (["--generator", "poisson:rate=x"], "workload.generator"),
        (["--policy", "nope", "--generator", GEN], "unknown policy 'nope'"),
        (["--profile", "no-such-profile", "--generator", GEN], "field profile"),
        (["/no/such/scenario.yaml"], "/no/such/scenario.yaml: no such scenario file"),
        (["--mode", "agg", "--prefill", "1", "--generator", GEN], "aggregated mode"),
    ],
    ids=[
        "missing-trace",
        "rate-scale",
        "ttft",
        "decode",
        "generator",
        "policy",
        "profile",
        "scenario",
        "agg",
    ],
)
def test_bad_inputs_give_one_clear_line_and_exit_2(argv, message, capsys):
    assert main(["sim", "run", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pdscale sim run: error:") and message in lines[0]


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_scenarios_load(name):
    from sim.policies import policy_names
    from sim.scenario import load_scenario

    sc = load_scenario(EXAMPLES / name)
    assert len(sc.workload) > 0 and sc.initial_decode >= 1
    assert sc.policy in policy_names()


def test_examples_exist():
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 3

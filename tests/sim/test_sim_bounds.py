"""``pdscale sim run`` on hostile input: every input below crashed with a traceback, exhausted memory or ran without
end before the bounds in ``sim.workload`` / ``sim.scenario``; each must now be ONE clear line and exit status 2,
refused before any large allocation, with the numbers that broke the bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.cli import main
from sim.scenario import ScenarioError, build_scenario


def fails_cleanly(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["sim", "run", *argv, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pdscale sim run: error:"), captured.err
    return lines[0]


def test_a_1e20_token_count_in_a_mooncake_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was: OverflowError (Python int too large to convert to C long) out of the JSONL reader."""
    trace = tmp_path / "big.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 1e20, "output_length": 5}\n'
                     '{"timestamp": 1000, "input_length": 10, "output_length": 5}\n')
    line = fails_cleanly(capsys, "--trace", str(trace))
    assert "big.jsonl:1" in line and "input_length" in line and "100000000000000000000" in line
    assert "at most 100,000,000" in line


def test_a_1e20_token_count_from_a_generator(capsys: pytest.CaptureFixture[str]) -> None:
    """Was: a cast overflow to a negative count, reported as 'prompt_tokens must be >= 1'."""
    line = fails_cleanly(capsys, "--generator", "poisson:rate=1,duration=10,prompt=const(1e20)")
    assert "prompt" in line and "1e+20" in line and "at most 100,000,000" in line


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        ('1: x\nworkload: {generator: "poisson:rate=1,duration=10"}\n', "top level"),
        ('workload: {generator: "poisson:rate=1,duration=10", 3: 4}\n', "field workload"),
        ('policy: {name: pdscale, params: {1: 2}}\nworkload: {generator: "poisson:rate=1,duration=10"}\n',
         "field policy.params"),
    ],
    ids=["top-level", "workload", "policy-params"],
)
def test_a_non_string_yaml_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str,
                               where: str) -> None:
    """Was: TypeError (sorting or joining an int with strings; keywords must be strings)."""
    scenario = tmp_path / "keys.yaml"
    scenario.write_text(yaml_text)
    line = fails_cleanly(capsys, str(scenario))
    assert where in line and "keys must be strings" in line


def test_an_absurd_arrival_rate_is_refused_before_generating(capsys: pytest.CaptureFixture[str]) -> None:
    """Was: numpy trying to allocate 7.28 TiB for the arrivals (rate 1e9/s for 1,000 s)."""
    line = fails_cleanly(capsys, "--generator", "poisson:rate=1e9,duration=1000")
    assert "1,000,000,000,000 requests" in line and "limit of 10,000,000" in line


def test_an_absurd_replication_is_refused_before_copying(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails_cleanly(capsys, "--generator", "poisson:rate=1,duration=100", "--rate-scale", "1e12",
                         "--scale-mode", "replicate")
    assert "requests" in line and "limit of 10,000,000" in line


def test_an_absurd_tick_is_refused_before_allocating(capsys: pytest.CaptureFixture[str]) -> None:
    """Was: numpy trying to allocate 7 TiB of tick times (1e-12 s ticks over 1,000 s)."""
    line = fails_cleanly(capsys, "--generator", "poisson:rate=1,duration=100", "--tick-s", "1e-12")
    assert "controller ticks" in line and "limit of 1,000,000" in line


def test_a_trace_with_a_huge_gap_is_refused_not_run_forever(tmp_path: Path) -> None:
    """Was: 67 million controller ticks over the 31-year gap (a run that never ends)."""
    trace = tmp_path / "gap.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,5\n1000000000,10,5\n")
    with pytest.raises(ScenarioError) as err:
        build_scenario({"workload": {"trace": str(trace)}}, source="gap")
    message = str(err.value)
    assert "1,000,000,000 s" in message and "workload.window" in message and "limit of 1,000,000" in message


def test_sane_runs_stay_accepted() -> None:
    """The bounds leave room: a day of traffic at 15 s ticks and a 1 s scrape builds."""
    scenario = build_scenario({"workload": {"generator": "poisson:rate=0.01,duration=86400"},
                               "scrapeIntervalSeconds": 1.0}, source="day")
    assert scenario.workload.duration_s == 86400

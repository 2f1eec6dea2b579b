"""Load generator parts without a server: workload plans from the simulator's readers, prompts of exact size, the
vllm-bench-style summary and goodput."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from workers.loadgen import LoadgenError, base_url_of, build_plan, chat_text, token_id_prompt
from workers.loadgen_report import RequestRecord, parse_goodput, summarize, write_records


def test_plan_from_generator_matches_the_simulators_workload() -> None:
    from sim.workload import generate

    spec = "poisson:rate=10,duration=30,prompt=const(128),output=exp(50)"
    plan = build_plan(generator=spec, seed=3)
    w = generate(spec, seed=3)
    assert np.array_equal(plan.arrival_s, w.arrival_s)
    assert np.array_equal(plan.output_tokens, w.output_tokens)
    assert set(plan.prompt_tokens.tolist()) == {128}


def test_plan_rate_scale_duration_and_caps(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,200,20\n2,300,30\n3,400,40\n")
    plan = build_plan(trace=str(trace), rate_scale=2.0)
    assert plan.arrival_s.tolist() == [0.0, 0.5, 1.0, 1.5]
    plan = build_plan(trace=str(trace), rate_scale=2.0, duration_s=1.0, max_prompt_tokens=150)
    assert plan.arrival_s.tolist() == [0.0, 0.5]
    assert plan.prompt_tokens.tolist() == [100, 150]
    plan = build_plan(trace=str(trace), max_requests=3, max_output_tokens=25)
    assert plan.output_tokens.tolist() == [10, 20, 25]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --trace"),
        ({"generator": "poisson:rate=1,duration=5", "rate_scale": 0.0}, "--rate-scale"),
        ({"generator": "poisson:rate=1,duration=5", "duration_s": -1.0}, "--duration-s"),
        ({"generator": "poisson:rate=1"}, "duration"),
        ({"generator": "poisson:rate=0.001,duration=1"}, "no requests"),
        ({"trace": "/nonexistent.csv"}, "no such trace file"),
    ],
)
def test_plan_errors_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LoadgenError, match=message):
        build_plan(**kwargs)  # type: ignore[arg-type]


def test_prompts_have_exact_sizes() -> None:
    rng = np.random.default_rng(0)
    assert len(token_id_prompt(777, rng)) == 777
    assert len(token_id_prompt(1, rng)) == 1
    # the worker's rule: one token per word; the chat template adds 10 (workers/tokens.py)
    assert len(chat_text(500).split()) == 490


def test_base_url() -> None:
    assert base_url_of("http://h:1") == "http://h:1/v1"
    assert base_url_of("http://h:1/v1/") == "http://h:1/v1"
    with pytest.raises(LoadgenError, match="--url"):
        base_url_of("h:1")


def _rec(i: int, sent: float, ttft: float, gaps: list[float], ok: bool = True) -> RequestRecord:
    r = RequestRecord(index=i, scheduled_s=sent, sent_s=sent, prompt_tokens=10, max_tokens=len(gaps) + 1)
    r.ok = ok
    if ok:
        r.ttft_s = ttft
        r.itl_s = list(gaps)
        r.e2e_s = ttft + sum(gaps)
        r.output_tokens = len(gaps) + 1
        r.usage_prompt_tokens = 10
    else:
        r.error, r.status, r.e2e_s = "HTTP 503: busy", 503, 0.01
    return r


def test_summary_follows_vllm_bench_definitions() -> None:
    records = [
        _rec(0, 0.0, 0.1, [0.02, 0.02, 0.02]),  # e2e 0.16, tpot 0.02
        _rec(1, 1.0, 0.3, [0.04]),  # e2e 0.34, tpot 0.04
        _rec(2, 1.5, 0.0, [], ok=False),
    ]
    s = summarize(records, percentiles=(50, 99), goodput_slo_s={"ttft": 0.2, "tpot": 0.05})
    assert (s["completed"], s["failed"]) == (2, 1)
    assert s["duration_s"] == pytest.approx(1.51)  # first send -> last completion (a failure counts)
    assert s["total_output_tokens"] == 6 and s["total_input_tokens"] == 20
    assert s["request_throughput_per_s"] == pytest.approx(2 / 1.51)
    assert s["ttft"]["mean_ms"] == pytest.approx(200.0)
    assert s["tpot"]["mean_ms"] == pytest.approx(30.0)
    assert s["itl"]["mean_ms"] == pytest.approx(25.0)  # pooled over the 4 gaps
    assert s["itl"]["p50_ms"] == pytest.approx(20.0)
    assert s["e2el"]["median_ms"] == pytest.approx(250.0)
    assert s["goodput"]["good_requests"] == 1  # request 1 misses ttft
    assert s["errors"] == {"HTTP 503": 1}


def test_summary_of_nothing_has_no_numbers() -> None:
    s = summarize([_rec(0, 0.0, 0.0, [], ok=False)])
    assert s["completed"] == 0 and s["ttft"]["mean_ms"] is None and s["request_throughput_per_s"] == 0.0


def test_goodput_parsing() -> None:
    assert parse_goodput(["ttft:500", "tpot:50"]) == {"ttft": 0.5, "tpot": 0.05}
    assert parse_goodput(["e2el:1000,ttft:200"]) == {"e2el": 1.0, "ttft": 0.2}
    for bad in (["itl:5"], ["ttft"], ["ttft:x"], ["ttft:-1"]):
        with pytest.raises(ValueError, match="--goodput"):
            parse_goodput(bad)


def test_records_file_is_one_json_line_per_request(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records([_rec(1, 1.0, 0.3, [0.04]), _rec(0, 0.0, 0.1, [0.02, 0.02])], path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    assert math.isclose(rows[0]["tpot_s"], 0.02) and rows[1]["itl_s"] == [0.04]

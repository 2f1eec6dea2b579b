"""``pdscale loadgen`` end to end against an emulated worker: exact prompt and output lengths (completions with
token ids, chat with counted words), a closed loop that never has more than N requests out, a trace replayed with
--rate-scale/--duration-s on schedule, failures reported rather than lost, the JSON summary and records file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.workers import WorkerHandle, start_worker
from workers.local.processes import ProcessRunner


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    runner = ProcessRunner(tmp_path_factory.mktemp("loadgen") / "logs")
    try:
        yield start_worker(runner, role="aggregated")
    finally:
        runner.stop_all()


def loadgen(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoscaler.cli", "loadgen", "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout_s)  # fmt: skip


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_exact_lengths_and_the_summary(worker: WorkerHandle, tmp_path: Path, endpoint: str) -> None:
    out = tmp_path / "records.jsonl"
    spec = "poisson:rate=20,duration=1,prompt=uniform(50,400),output=uniform(2,30)"
    proc = loadgen("--url", worker.url, "--generator", spec, "--endpoint", endpoint, "--json", "--records", str(out),
                   "--goodput", "ttft:60000", "tpot:60000")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    rows = records(out)
    assert summary["failed"] == 0 and summary["completed"] == len(rows) > 5
    for r in rows:
        assert r["ok"] and r["usage_prompt_tokens"] == r["prompt_tokens"], r
        assert r["output_tokens"] == r["max_tokens"] and len(r["itl_s"]) == r["max_tokens"] - 1  # type: ignore[arg-type]
    assert summary["total_output_tokens"] == sum(r["max_tokens"] for r in rows)  # type: ignore[misc]
    assert summary["goodput"]["good_requests"] == len(rows)
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert summary[metric]["p90_ms"] >= summary[metric]["p50_ms"] > 0
    assert summary["ttft"]["mean_ms"] < summary["e2el"]["mean_ms"]


def test_closed_loop_keeps_n_requests_out(worker: WorkerHandle, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    proc = loadgen("--url", worker.url, "--generator", "closed:users=3,requests=15,prompt=const(64),output=const(25)",
                   "--json", "--records", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = records(out)
    assert len(rows) == 15 and all(r["ok"] for r in rows)
    spans = [(float(r["sent_s"]), float(r["sent_s"]) + float(r["e2e_s"])) for r in rows]  # type: ignore[arg-type]
    starts = sorted(s for s, _ in spans)
    assert starts[2] - starts[0] < 0.5  # the three users start together
    for s, _ in spans:  # never more than 3 out at once (a new one leaves only after one came back)
        assert sum(1 for a, b in spans if a <= s < b) <= 3
    assert max(sum(1 for a, b in spans if a <= s < b) for s, _ in spans) == 3


def test_trace_replay_is_on_schedule(worker: WorkerHandle, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{i * 0.4},{100 + i},{5}\n" for i in range(20))
    )
    out = tmp_path / "records.jsonl"
    proc = loadgen("--url", worker.url, "--trace", str(trace), "--rate-scale", "2", "--duration-s", "2",
                   "--records", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Successful requests" in proc.stdout and "Mean TTFT (ms)" in proc.stdout  # the table
    rows = records(out)
    assert [r["prompt_tokens"] for r in rows] == [100 + i for i in range(10)]  # 0.2 s apart, first 2 s
    for r in rows:
        assert abs(float(r["sent_s"]) - float(r["scheduled_s"])) < 0.25  # type: ignore[arg-type]


def test_failures_are_reported_not_lost(worker: WorkerHandle, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    proc = loadgen("--url", worker.url, "--model", "no-such-model", "--generator",
                   "poisson:rate=10,duration=0.5,prompt=const(10),output=const(3)", "--json", "--records", str(out))  # fmt: skip
    assert proc.returncode == 1  # nothing completed
    summary = json.loads(proc.stdout)
    assert summary["completed"] == 0 and summary["failed"] == len(records(out)) > 0
    assert summary["errors"] == {"HTTP 404": summary["failed"]}
    proc = loadgen("--url", "http://127.0.0.1:9", "--generator", "poisson:rate=20,duration=1")
    assert proc.returncode == 1 and "127.0.0.1:9" in proc.stderr
    proc = loadgen("--url", worker.url, "--generator", "poisson:rate=1")
    assert proc.returncode == 2 and "duration" in proc.stderr

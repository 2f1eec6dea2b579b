"""sim.validate: the engine configured as a queue is exactly that queue, and agrees with queueing theory."""

from __future__ import annotations

import argparse
import heapq
import json

import numpy as np
import pytest

from sim import validate, validate_cli
from sim.validate import CASES, TOKENS_PER_S, _queue_case, run_validation


def fcfs_waits(arrival: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """Kiefer–Wolfowitz recursion for FCFS M/G/c: each arrival takes the earliest free server."""
    free = [0.0] * servers
    out = np.empty(arrival.size)
    for i, (a, s) in enumerate(zip(arrival, service, strict=True)):
        start = max(heapq.heappop(free), a)
        out[i] = start - a
        heapq.heappush(free, start + s)
    return out


@pytest.mark.parametrize(
    ("lam", "servers", "law"),
    [
        (0.7, 1, "deterministic"),
        (3.2, 4, "exponential"),
        (0.8, 1, "lognormal"),
        (2.5, 3, "lognormal"),
    ],
    ids=["md1", "mm4", "mg1-lognormal", "mg3-lognormal"],
)
def test_engine_is_exactly_the_fcfs_queue(lam: float, servers: int, law: str) -> None:
    laws = {
        "deterministic": lambda r, k: np.ones(k),
        "exponential": lambda r, k: r.exponential(1.0, k),
        "lognormal": validate._lognormal,
    }
    n = 4000
    waits = _queue_case(lam, servers, laws[law], n, seed=5)
    rng = np.random.default_rng(5)  # the same draws, in the same order, as _queue_case
    arrival = np.cumsum(rng.exponential(1.0 / lam, n))
    service = np.maximum(1, np.rint(laws[law](rng, n) * TOKENS_PER_S)) / TOKENS_PER_S
    expected = fcfs_waits(arrival, service, servers)
    np.testing.assert_allclose(waits, expected, rtol=0, atol=1e-9)
    assert (waits > 0).mean() > 0.3  # the queue is loaded, the check is not vacuous


def test_validation_agrees_with_theory() -> None:
    rows = run_validation(n_requests=150_000)
    assert [(r["case"], r["metric"]) for r in rows] == [
        ("md1", "wq_mean_s"), ("md1", "wq_p99_s"), ("mm4", "wq_mean_s"), ("mm4", "wq_p99_s"),
        ("mg1-lognormal", "wq_mean_s"), ("mg1-lognormal", "wq_p99_s"),
        ("decode-fixed-point", "batch_mean"), ("decode-fixed-point", "itl_mean_s"),
    ]  # fmt: skip
    base = {"wq_mean_s": 0.03, "wq_p99_s": 0.05, "batch_mean": 0.02, "itl_mean_s": 0.02}
    for r in rows:
        assert r["ok"], r
        assert r["tolerance"] >= base[r["metric"]]
        assert r["tolerance"] <= 3 * base[r["metric"]] + 0.1, r  # the run is precise enough to mean something
        assert r["rel_error"] == pytest.approx((r["simulated"] - r["analytic"]) / r["analytic"])
    analytic = {(r["case"], r["metric"]): r["analytic"] for r in rows}
    assert analytic["md1", "wq_mean_s"] == pytest.approx(1.1667, abs=1e-4)  # queueing.md §8 vectors
    assert analytic["mm4", "wq_p99_s"] == pytest.approx(5.110, abs=1e-3)
    assert analytic["mg1-lognormal", "wq_p99_s"] == pytest.approx(38.84, rel=2e-3)
    assert analytic["decode-fixed-point", "batch_mean"] == pytest.approx(13.333, abs=1e-3)


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pdscale sim")
    validate_cli.register_validate(parser.add_subparsers(dest="sim_command"))
    return parser.parse_args(argv)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(["validate", "--json", "--requests", "20000", "--case", "decode-fixed-point"])
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["metric"] for r in rows] == ["batch_mean", "itl_mean_s"]
    assert {"case", "metric", "analytic", "simulated", "rel_error"} <= set(rows[0])


def test_cli_table_and_failure_exit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate.analytic, "md1_mean_wait", lambda lam, d: 2.0)  # a wrong oracle must fail
    args = _cli(["validate", "--requests", "20000", "--case", "md1"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "wq_mean_s" in out and "NO" in out and "yes" in out


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"cases": ["mm5"]}, "unknown"), ({"n_requests": 10}, "n_requests"), ({"seeds": 0}, "seeds")],
    ids=["case", "requests", "seeds"],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run_validation(**kwargs)


def test_case_names() -> None:
    assert CASES == ("md1", "mm4", "mg1-lognormal", "decode-fixed-point")

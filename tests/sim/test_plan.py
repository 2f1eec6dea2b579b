"""``pdscale plan`` on a small generated workload: the options, their relations and the JSON schema."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import main

GEN = "poisson:rate=20,duration=180,prompt=lognormal(2500,0.6),output=exp(200)"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("plan")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["plan", "--generator", GEN, "--gpu-price-per-hour", "2.5", "--max-replicas", "16",
                   "--startup-s", "30", "--jobs", "1", "--json", "--out", str(out)])  # fmt: skip
    assert rc == 0
    return json.loads(buf.getvalue()), out


def _opt(result: dict[str, Any], option: str) -> dict[str, Any]:
    return next(p for p in result["plans"] if p["option"] == option)


def test_every_option_is_reported(plan: tuple[dict[str, Any], Path]) -> None:
    result, out = plan
    assert [p["option"] for p in result["plans"]] == [
        "static disaggregated", "static aggregated", "pdscale autoscaled", "oracle (lower bound)"
    ]  # fmt: skip
    assert result["workload"]["requests"] > 3000
    assert (out / "plan.json").exists() and (out / "plan.png").read_bytes()[:4] == b"\x89PNG"


def test_static_plans_meet_the_slo_with_headroom(plan: tuple[dict[str, Any], Path]) -> None:
    result, _ = plan
    for option in ("static disaggregated", "static aggregated"):
        p = _opt(result, option)
        assert p["found"] and p["window_compliance"] >= 0.99
        assert p["headroom"] is not None and p["headroom"] >= 0
    assert _opt(result, "static aggregated")["prefill"] == 0


def test_oracle_is_cheapest_and_costs_follow_price(plan: tuple[dict[str, Any], Path]) -> None:
    result, _ = plan
    oracle = _opt(result, "oracle (lower bound)")
    for option in ("static disaggregated", "pdscale autoscaled"):
        assert oracle["gpu_hours"] <= _opt(result, option)["gpu_hours"] + 1e-9
    for p in result["plans"]:
        assert p["cost"] == pytest.approx(p["gpu_hours"] * 2.5)
    auto = _opt(result, "pdscale autoscaled")
    assert auto["headroom"] == pytest.approx(auto["gpu_hours"] / oracle["gpu_hours"] - 1)


def test_needs_a_workload(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan"])
    assert "--trace" in capsys.readouterr().err


def test_bad_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--generator", GEN, "--profile", "no-such-profile"]) == 2
    assert "no-such-profile" in capsys.readouterr().err

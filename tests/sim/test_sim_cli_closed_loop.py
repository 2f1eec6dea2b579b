"""``pdscale sim run`` with a closed-loop workload (``closed:users=N,...``), end to end through ``autoscaler.cli.main``.

A closed loop's users each wait for their answer (plus think time) before sending again, so what is asserted is
the loop's law: never more than ``users`` requests out at once, all of them out while the loop runs, and a
throughput of users / (client-side latency + think time).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.profiles import load_profile

PROFILE = "llama-3.1-8b-h100-tp1"
SHORT = "prompt=const(300),output=const(30)"  # ~0.3 s a request: thousands of requests in a few minutes


def run_json(capsys, *argv: str) -> dict:
    assert main(["sim", "run", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def read_requests(out: Path) -> dict[str, np.ndarray]:
    with (out / "requests.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in rows[0]}


def in_flight(start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
    """Requests out after every send and completion, in time order, ties counted completion-first."""
    times = np.concatenate([start_s, end_s])
    steps = np.concatenate([np.ones_like(start_s), -np.ones_like(end_s)])
    order = np.lexsort((steps, times))  # at equal times the completion (-1) first, as the engine orders them
    return np.cumsum(steps[order])


def test_duration_bound_loop_keeps_users_busy_and_obeys_littles_law(tmp_path, capsys):
    users, think_s, duration_s = 6, 0.2, 240.0
    out = tmp_path / "res"
    spec = f"closed:users={users},duration={duration_s:g},think_s={think_s:g},{SHORT}"
    assert main(["sim", "run", "--generator", spec, "--profile", PROFILE, "--decode", "2", "--out", str(out),
                 "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    req = read_requests(out)
    n = req["arrival_s"].size
    assert summary["requests"] == summary["completed"] == n > 1024  # past the first block of drawn lengths
    assert np.all(req["arrival_s"] <= duration_s)  # nobody sends after the loop's end
    assert np.count_nonzero(req["arrival_s"] == 0.0) == users
    host = load_profile(PROFILE).host
    client_done_s = req["last_token_s"] + host.output_token_s * req["output_tokens"]
    out_now = in_flight(req["arrival_s"], client_done_s)
    assert out_now.max() == users  # never more than one request per user...
    # ... and each user's next send is its previous completion + think time: the sends after the first `users`
    # are exactly the earliest completions shifted by the think time
    np.testing.assert_allclose(
        np.sort(req["arrival_s"])[users:], np.sort(client_done_s)[: n - users] + think_s, rtol=0, atol=1e-9
    )
    # Little's law: throughput = users / (client-side latency + think)
    latency_s = float(np.mean(client_done_s - req["arrival_s"]))
    throughput = n / duration_s
    assert throughput == pytest.approx(users / (latency_s + think_s), rel=0.03)


def test_request_bound_loop_sends_exactly_the_list(capsys):
    s = run_json(capsys, "--generator", f"closed:users=4,requests=300,{SHORT}", "--seed", "3")
    assert s["requests"] == s["completed"] == 300
    again = run_json(capsys, "--generator", f"closed:users=4,requests=300,{SHORT}", "--seed", "3")
    assert again == {**s, "wall_s": again["wall_s"]}  # same seed, same run
    more_users = run_json(capsys, "--generator", f"closed:users=32,requests=300,{SHORT}", "--seed", "3")
    assert more_users["sim_duration_s"] < s["sim_duration_s"]  # more users, same list: done sooner
    assert more_users["ttft_p99_s"] > s["ttft_p99_s"]  # ... with more queueing


def test_an_autoscaling_policy_scales_a_heavy_closed_loop(capsys):
    spec = "closed:users=256,duration=900,think_s=2,prompt=lognormal(1000,0.5),output=exp(200)"
    static = run_json(capsys, "--generator", spec, "--prefill", "1", "--decode", "1")
    scaled = run_json(capsys, "--generator", spec, "--prefill", "1", "--decode", "1", "--policy", "pdscale")
    assert static["scale_events"] == 0
    assert scaled["scale_events"] >= 1
    assert scaled["prefill_replicas_max"] + scaled["decode_replicas_max"] > 2
    # the users get answers sooner, so they send more requests in the same 15 minutes
    assert scaled["requests"] > static["requests"]


def test_scenario_file_closed_loop_workload(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text(
        f"name: loop\nworkload:\n  generator: 'closed:users=3,requests=50,{SHORT}'\nprefill: 1\ndecode: 1\n",
        encoding="utf-8",
    )
    s = run_json(capsys, str(path))
    assert (s["scenario"], s["requests"], s["completed"]) == ("loop", 50, 50)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--generator", "closed:users=4"], "requests=M"),
        (["--generator", "closed:requests=4"], "users= is required"),
        (["--generator", "closed:users=0,requests=4"], "users must be an integer >= 1"),
        (["--generator", "closed:users=2,duration=-5"], "duration must be a positive number"),
        (["--generator", "closed:users=2,requests=5,think_s=-1"], "think_s must be >= 0"),
        (["--generator", "closed:users=2,requests=5,rate=3"], "unknown parameter 'rate'"),
        (["--generator", "closed:users=2,requests=5 + poisson:rate=1,duration=10"], "one stream"),
        (["--generator", "poisson:rate=1,duration=10 + closed:users=2,requests=5"], "cannot be superposed"),
        (["--generator", "closed:users=2,requests=5", "--rate-scale", "2"], "change users= instead"),
        (["--generator", "closed:users=2,requests=5,prompt=const(500000)"], "kv_capacity_tokens"),
    ],
)
def test_bad_closed_loop_specs_give_one_clear_line_and_exit_2(argv, message, capsys):
    assert main(["sim", "run", *argv, "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdscale sim run: error:") and message in err, err
    assert "\n" not in err and "Traceback" not in err


def test_scenario_caps_on_a_closed_loop_are_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text(
        "workload:\n  generator: 'closed:users=3,requests=50'\n  maxPromptTokens: 100\n", encoding="utf-8"
    )
    assert main(["sim", "run", str(path), "--json"]) == 2
    assert "max_prompt=K" in capsys.readouterr().err

"""Replay wiring (real Engine, simulated Prometheus, real Controller), scenario loading and the policy registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from autoscaler.core.spec import AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, Reason
from sim.policies import make_policy, policy_names, register_policy
from sim.replay import replay
from sim.scenario import ScenarioError, build_scenario, load_scenario, with_slo_targets
from sim.summary import SUMMARY_KEYS

GEN = "poisson:rate=4,duration=240,prompt=lognormal(800,0.5),output=exp(100)"


def scenario(**raw):
    base = {"workload": {"generator": GEN}, "prefill": 1, "decode": 1, "startupSeconds": 60.0}
    return build_scenario({**base, **raw}, source="test")


def test_static_replay_holds_replicas_and_serves_everything():
    sc = scenario()
    result = replay(sc)
    assert set(SUMMARY_KEYS) <= set(result.summary)
    assert result.summary["requests"] == len(sc.workload) == len(result.records)
    assert result.summary["completed"] == len(sc.workload)
    assert result.summary["scale_events"] == 0
    assert {d.decode.reason for _, d in result.decisions} == {Reason.STATIC.value}
    assert [t for t, _ in result.decisions] == [15.0 * k for k in range(len(result.decisions))]
    assert set(result.timeline["decode_ready"]) == {1.0}
    # 1 prefill + 1 decode GPU for the whole simulated span
    assert result.summary["gpu_hours"] == pytest.approx(2 * result.summary["sim_duration_s"] / 3600)
    assert 0.0 <= result.summary["request_slo_attainment"] <= 1.0


@dataclass(frozen=True)
class StepUpPolicy:
    """Test-only: decode to 3 replicas from t >= 60 s, prefill unchanged; records what it observed."""

    seen: list
    name: str = "step-up"

    def initial_state(self, spec: AutoscalerSpec) -> None:
        return None

    def decide(self, obs: Observation, state: None, spec: AutoscalerSpec) -> tuple[Decision, None]:
        self.seen.append(obs)
        p, d = obs.prefill.desired, obs.decode.desired
        want = 3 if obs.time_s >= 60 else d
        return (
            Decision(
                obs.time_s,
                PoolDecision(Pool.PREFILL, p, p, "Hold", ""),
                PoolDecision(Pool.DECODE, d, want, "Test", ""),
            ),
            None,
        )


def test_scale_up_honours_startup_delay_and_scrape_visibility():
    seen: list[Observation] = []
    result = replay(scenario(), StepUpPolicy(seen))
    assert result.summary["scale_events"] == 1
    assert result.summary["decode_replicas_max"] == 3
    by_t = {o.time_s: o for o in seen}
    # ordered at 60 s, startup 60 s: starting until 120 s, ready from then on
    assert (by_t[75.0].decode.desired, by_t[75.0].decode.ready) == (3, 1)
    assert (by_t[120.0].decode.desired, by_t[120.0].decode.ready) == (3, 3)
    t = result.timeline["time_s"]
    assert result.timeline["decode_starting"][t == 90.0][0] == 2
    assert result.timeline["decode_ready"][t == 135.0][0] == 3


def test_signals_seen_by_the_policy_track_the_true_load():
    seen: list[Observation] = []
    sc = scenario()
    replay(sc, StepUpPolicy(seen))
    first = seen[0].signals
    assert first.ttft_s is None and first.request_rate_per_s is None  # one scrape: no rate yet
    late = [o.signals for o in seen if 120 <= o.time_s <= 240]
    rates = np.array([s.request_rate_per_s for s in late])
    assert np.all(np.abs(rates / 4.0 - 1) < 0.4)  # Poisson 4/s over a 60 s window
    assert all(s.ttft_s is not None and s.itl_s is not None for s in late)
    assert all(s.decode.running_requests is not None for s in late)
    assert np.mean([s.mean_prompt_tokens for s in late]) == pytest.approx(800, rel=0.25)


def test_agg_mode_has_no_prefill_pool():
    result = replay(scenario(mode="agg", prefill=0, decode=2))
    assert result.summary["prefill_replicas_max"] == 0
    assert result.summary["gpu_hours_prefill"] == 0.0
    assert result.summary["completed"] == result.summary["requests"]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"mode": "both"}, "test: field mode: must be one of disagg, agg"),
        ({"prefill": -1}, "test: field prefill: must be >= 0"),
        ({"decode": 0}, "test: field decode: must be >= 1"),
        ({"tickSeconds": 0}, "test: field tickSeconds: must be > 0"),
        ({"rateScale": "x"}, "test: field rateScale: must be a number"),
        ({"workload": {"trace": "/no/such.csv"}}, "test: field workload.trace: .*no such trace file"),
        ({"workload": {"generator": "nonsense"}}, "test: field workload.generator"),
        ({"workload": {"trace": "a", "generator": "b"}}, "give only one of"),
        ({"workload": {"bogus": 1}}, "unknown key.*bogus"),
        ({"profile": "no-such-profile"}, "test: field profile"),
        ({"policy": {"name": "static", "extra": 1}}, "field policy: unknown key"),
        ({"mode": "agg", "prefill": 2}, "field prefill: aggregated mode"),
        ({"colour": "red"}, "unknown field.*colour"),
        ({"router": "random"}, "field router: must be one of"),
    ],
    ids=[
        "mode", "neg-prefill", "zero-decode", "zero-tick", "rate-type", "missing-trace", "bad-generator",
        "two-sources", "workload-key", "profile", "policy-key", "agg-prefill", "unknown-top", "router",
    ],
)  # fmt: skip
def test_scenario_errors_name_source_and_field(raw, match):
    with pytest.raises(ScenarioError, match=match):
        scenario(**raw)


def test_scenario_file_resolves_relative_trace_and_names_file(tmp_path: Path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,10\n1.0,200,20\n2.5,300,5\n")
    path = tmp_path / "s.yaml"
    path.write_text("workload:\n  trace: t.csv\nrateScale: 2\ndecode: 2\npolicy: {name: static}\nseed: 3\n")
    sc = load_scenario(path)
    assert sc.workload.arrival_s.tolist() == [0.0, 0.5, 1.25]
    assert (sc.initial_prefill, sc.initial_decode, sc.seed, sc.policy, sc.name) == (1, 2, 3, "static", "s")
    path.write_text("decode: [1]\n")
    with pytest.raises(ScenarioError, match=rf"{path}: field decode: must be an integer"):
        load_scenario(path)
    path.write_text("decode: [1\n")
    with pytest.raises(ScenarioError, match=rf"{path}: not valid YAML"):
        load_scenario(path)


def test_slo_overrides():
    sc = with_slo_targets(scenario(), ttft_p99_s=0.5, itl_p99_s=0.02)
    assert (sc.spec.ttft.percentile, sc.spec.ttft.target_s, sc.spec.itl.target_s) == (0.99, 0.5, 0.02)
    with pytest.raises(ScenarioError, match="ttft_p99_s must be a positive"):
        with_slo_targets(sc, ttft_p99_s=-1.0)


def test_policy_registry():
    sc = scenario()
    assert "static" in policy_names()
    policy = make_policy("static", sc.profile, sc.spec)
    assert policy.name == "static"
    with pytest.raises(KeyError, match=r"unknown policy 'nope'; known: .*static"):
        make_policy("nope", sc.profile, sc.spec)
    with pytest.raises(ValueError, match="takes no parameters"):
        make_policy("static", sc.profile, sc.spec, target=3)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("static", lambda profile, spec: policy)


def test_replay_is_deterministic():
    sc = dataclasses.replace(scenario(), startup_jitter="uniform:0.5")
    a, b = replay(sc, StepUpPolicy([])), replay(sc, StepUpPolicy([]))
    assert {k: v for k, v in a.summary.items() if k != "wall_s"} == {
        k: v for k, v in b.summary.items() if k != "wall_s"
    }


def test_observed_ttft_percentile_lies_in_the_exact_percentiles_bucket():
    """End to end: engine proxy histogram -> scrapes -> rate -> histogram_quantile lands in the bucket that holds
    the exact p99 of the TTFTs observed in the same window (vLLM edges limit the resolution, nothing else)."""
    from autoscaler.core.buckets import TTFT_BUCKETS_S
    from sim.summary import quantile

    seen: list[Observation] = []
    sc = scenario(
        workload={"generator": "poisson:rate=6,duration=300,prompt=lognormal(2000,0.8),output=exp(50)"}
    )
    result = replay(sc, StepUpPolicy(seen))
    rec = result.records
    first, ttft = rec.first_token_s, rec.first_token_s - rec.arrival_s
    edges = np.array((*TTFT_BUCKETS_S, np.inf))
    same = checked = 0
    for obs in seen:
        t = obs.time_s
        sel = (first > t - 60) & (first <= t)
        if t < 60 or not sel.any():
            continue
        exact = quantile(ttft[sel], 0.99)
        got = obs.signals.ttft_s
        assert got is not None
        b_exact = int(np.searchsorted(edges, exact, side="left"))
        b_got = int(np.searchsorted(edges, got, side="left"))
        assert abs(b_exact - b_got) <= 1, (t, exact, got)
        same += b_exact == b_got
        checked += 1
    assert checked >= 10 and same >= 0.9 * checked


def test_autoscaler_section_is_parsed_by_the_shared_config_loader():
    sc = scenario(
        startupSeconds=90.0,
        autoscaler={
            "slo": {"ttft": {"percentile": "p95", "targetSeconds": 0.5}, "itl": {"targetSeconds": 0.03}},
            "decode": {"minReplicas": 1, "maxReplicas": 8},
            "metrics": {"windowSeconds": 120, "proxy": False},
        },
    )
    spec = sc.spec
    assert (spec.ttft.percentile, spec.ttft.target_s, spec.itl.target_s) == (0.95, 0.5, 0.03)
    assert (spec.decode.max_replicas, spec.metrics.window_s, spec.metrics.proxy) == (8, 120.0, False)
    assert spec.pod_startup_s == 90.0  # follows startupSeconds when the section does not say
    explicit = scenario(startupSeconds=90.0, autoscaler={"podStartupSeconds": 200})
    assert explicit.spec.pod_startup_s == 200.0 and explicit.startup_s == 90.0


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"decode": {"minReplicas": -1}}, r"test: autoscaler\.decode\.minReplicas"),
        ({"slo": {"ttft": {"targetSeconds": "fast"}}}, r"test: autoscaler\.slo\.ttft\.targetSeconds"),
        ([1, 2], "field autoscaler: must be a mapping"),
    ],
    ids=["negative-min", "bad-target", "not-a-mapping"],
)
def test_autoscaler_section_errors_name_file_and_field(section, match):
    with pytest.raises(ScenarioError, match=match):
        scenario(autoscaler=section)


def test_agg_mode_pins_the_prefill_pool_at_zero():
    sc = scenario(mode="agg", prefill=0, autoscaler={"prefill": {"minReplicas": 2}})
    assert (sc.spec.prefill.min_replicas, sc.spec.prefill.max_replicas) == (0, 0)

"""sim.workload: trace readers on the real Azure traces, error messages, generators' statistics, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.workload import (
    DEMO_DECODE_SURGE_S,
    DEMO_PROMPT_SURGE_S,
    SpecError,
    TraceError,
    Workload,
    arrival_stats,
    default_workload,
    demo_workload,
    generate,
    load_trace,
    merge,
)

TRACES = Path(os.environ.get("PDSCALE_TRACES", Path(__file__).resolve().parents[3] / "shared" / "traces"))
CONV = TRACES / "azure_llm_2023_conv.csv"
CODE = TRACES / "azure_llm_2023_code.csv"

@pytest.fixture
def _traces_present() -> None:
    """The traces are part of the test data (../shared/traces): their absence is a failure, not a skip."""
    assert CONV.exists() and CODE.exists(), f"Azure traces not found under {TRACES} (set PDSCALE_TRACES)"


needs_traces = pytest.mark.usefixtures("_traces_present")


# ---- real traces ----


@needs_traces
@pytest.mark.parametrize(
    ("path", "rows", "prompt_mean", "output_mean", "duration_s"),
    [
        pytest.param(CONV, 19_366, 1155, 211, 3502, id="azure-conv"),
        pytest.param(CODE, 8_819, 2048, 28, 3436, id="azure-code"),
    ],
)
def test_azure_trace_stats(
    path: Path, rows: int, prompt_mean: float, output_mean: float, duration_s: float
) -> None:
    w = load_trace(path)
    assert len(w) == rows
    assert w.arrival_s[0] == 0.0
    assert np.all(np.diff(w.arrival_s) >= 0)
    assert w.prompt_tokens.mean() == pytest.approx(prompt_mean, rel=0.002)
    assert w.output_tokens.mean() == pytest.approx(output_mean, rel=0.01)
    assert w.duration_s == pytest.approx(duration_s, abs=1.0)


@needs_traces
def test_first_timestamp_fraction_parsed() -> None:
    w = load_trace(CONV)
    # 18:15:46.6805900 -> 18:15:50.9951690 (first two rows of the file)
    assert w.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)


@needs_traces
@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        pytest.param(
            {"rate_scale": 2.0}, lambda w, b: w.duration_s == pytest.approx(b.duration_s / 2), id="rate-x2"
        ),
        pytest.param(
            {"window_s": (600.0, 1200.0)},
            lambda w, b: (
                len(w) == int(((b.arrival_s >= 600) & (b.arrival_s < 1200)).sum())
                and w.arrival_s.min() >= 0
                and w.duration_s == 600.0
            ),
            id="window",
        ),
        pytest.param(
            {"window_s": (600.0, 1200.0), "rate_scale": 2.0},
            lambda w, b: w.duration_s == 300.0 and w.arrival_s.max() < 300.0,
            id="window-then-scale",
        ),
        pytest.param(
            {"max_prompt_tokens": 2048, "max_output_tokens": 100},
            lambda w, b: len(w) == len(b) and w.prompt_tokens.max() == 2048 and w.output_tokens.max() == 100,
            id="caps-keep-rows",
        ),
    ],
)
def test_transformations(kwargs: dict, check) -> None:  # type: ignore[no-untyped-def]
    base = load_trace(CONV)
    assert check(load_trace(CONV, **kwargs), base)


# ---- formats and errors (tmp files) ----


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("name", "text", "arrival", "prompt", "output"),
    [
        pytest.param(
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.5,10,2\n2023-11-16 18:15:48.0,20,3\n",
            [0.0, 1.5],
            [10, 20],
            [2, 3],
            id="azure",
        ),
        pytest.param(
            "p.csv",
            "arrival_s,prompt_tokens,output_tokens\n1.0,5,6\n3.5,7,8\n",
            [0.0, 2.5],
            [5, 7],
            [6, 8],
            id="plain",
        ),
        pytest.param(
            "v.csv",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,6\n2,7,8\n",
            [0.0, 2.0],
            [5, 7],
            [6, 8],
            id="vidur",
        ),
        pytest.param(
            "m.jsonl",
            '{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1, 2]}\n'
            '{"timestamp": 3000, "input_length": 200, "output_length": 6, "hash_ids": [1]}\n',
            [0.0, 3.0],
            [100, 200],
            [5, 6],
            id="mooncake",
        ),
        pytest.param(
            "u.csv",
            "arrival_s,prompt_tokens,output_tokens\n5,1,1\n1,2,2\n3,3,3\n",
            [0.0, 2.0, 4.0],
            [2, 3, 1],
            [2, 3, 1],
            id="unsorted-kept-and-sorted",
        ),
    ],
)
def test_formats(tmp_path: Path, name: str, text: str, arrival: list, prompt: list, output: list) -> None:
    w = load_trace(_write(tmp_path, name, text))
    np.testing.assert_allclose(w.arrival_s, arrival)
    assert w.prompt_tokens.tolist() == prompt
    assert w.output_tokens.tolist() == output


AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
PL = "arrival_s,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        pytest.param("e.csv", "", ["empty"], id="empty"),
        pytest.param("h.csv", AZ, ["no rows"], id="header-only"),
        pytest.param("x.csv", "a,b,c\n1,2,3\n", [":1:", "unrecognised CSV header"], id="bad-header"),
        pytest.param(
            "t.csv",
            AZ + "2023-11-16 18:15:46.5,10,2\n2023-11-16 18:1x:48.0,20,3\n",
            [":3:", "TIMESTAMP", "18:1x"],
            id="bad-timestamp",
        ),
        pytest.param(
            "i.csv",
            AZ + "2023-11-16 18:15:46.5,10,2\n2023-11-16 18:15:47,1.5,3\n",
            [":3:", "ContextTokens", "integer"],
            id="non-integer-prompt",
        ),
        pytest.param(
            "z.csv",
            AZ + "2023-11-16 18:15:46.5,10,2\n2023-11-16 18:15:47,10,0\n",
            [":3:", "GeneratedTokens", ">= 1"],
            id="zero-output",
        ),
        pytest.param(
            "n.csv", PL + "0,10,2\n1,10,-4\n", [":3:", "output_tokens", ">= 1"], id="negative-output"
        ),
        pytest.param("f.csv", PL + "0,10,2\n1,10\n", [":3:", "expected 3 fields"], id="missing-field"),
        pytest.param("g.csv", PL + "0,10,2\nnan,10,2\n", [":3:", "arrival_s", "finite"], id="nan-arrival"),
        pytest.param(
            "j.jsonl",
            '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{"timestamp": 1,',
            [":2:", "invalid JSON"],
            id="jsonl-bad-json",
        ),
        pytest.param(
            "k.jsonl",
            '{"timestamp": 0, "input_length": 1}\n',
            [":1:", "output_length", "missing"],
            id="jsonl-missing-field",
        ),
        pytest.param(
            "l.jsonl",
            '{"timestamp": "x", "input_length": 1, "output_length": 1}\n',
            [":1:", "timestamp", "not a number"],
            id="jsonl-bad-timestamp",
        ),
        pytest.param(
            "o.jsonl",
            '{"timestamp": 0, "input_length": 1, "output_length": 0}\n',
            [":1:", "output_length", ">= 1"],
            id="jsonl-zero-output",
        ),
    ],
)
def test_malformed_traces_name_file_line_field(tmp_path: Path, name: str, text: str, fragments: list) -> None:
    p = _write(tmp_path, name, text)
    with pytest.raises(TraceError) as exc:
        load_trace(p)
    msg = str(exc.value)
    assert name in msg
    for frag in fragments:
        assert frag in msg


def test_missing_file_is_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "nope.csv")


# ---- generators ----


def _gaps_cv(w: Workload) -> float:
    g = np.diff(w.arrival_s)
    return float(g.std() / g.mean())


@pytest.mark.parametrize(
    ("spec", "rate", "cv"),
    [
        pytest.param("poisson:rate=20,duration=2000", 20.0, 1.0, id="poisson"),
        pytest.param("gamma:rate=10,cv=3,duration=4000", 10.0, 3.0, id="gamma-cv3"),
        pytest.param("gamma:rate=10,cv=0.5,duration=2000", 10.0, 0.5, id="gamma-cv0.5"),
    ],
)
def test_renewal_rate_and_cv(spec: str, rate: float, cv: float) -> None:
    w = generate(spec, seed=3)
    assert len(w) / w.duration_s == pytest.approx(rate, rel=0.05 * max(cv, 1.0))
    assert _gaps_cv(w) == pytest.approx(cv, rel=0.08)


@pytest.mark.parametrize(
    ("spec", "windows"),
    [
        # (start, end, expected rate) triples
        pytest.param("step:rate=5,to=20,at=500,duration=1000", [(0, 500, 5.0), (500, 1000, 20.0)], id="step"),
        pytest.param(
            "spike:rate=5,peak=40,at=300,width=100,duration=1000",
            [(0, 300, 5.0), (300, 400, 40.0), (400, 1000, 5.0)],
            id="spike",
        ),
        pytest.param(
            "sine:rate=10,amplitude=0.5,period=400,duration=2000",
            [
                (50, 150, 10 * (1 + 0.5 * 2 / np.pi * np.sqrt(2))),
                (250, 350, 10 * (1 - 0.5 * 2 / np.pi * np.sqrt(2))),
            ],
            id="sine",
        ),
        pytest.param(
            "piecewise:rates=2/10/4,every=300,duration=900",
            [(0, 300, 2.0), (300, 600, 10.0), (600, 900, 4.0)],
            id="piecewise",
        ),
        pytest.param("ramp:rate=0,to=20,at=0,width=1000,duration=1000", [(0, 1000, 10.0)], id="ramp"),
        pytest.param("poisson:rate=10,duration=300,start=100", [(0, 100, 0.0), (100, 400, 10.0)], id="start"),
    ],
)
def test_time_varying_rates(spec: str, windows: list) -> None:
    w = generate(spec, seed=11)
    t = w.arrival_s
    for lo, hi, rate in windows:
        n = int(((t >= lo) & (t < hi)).sum())
        expected = rate * (hi - lo)
        if spec.startswith("sine"):  # a sine window repeats every period: count all repeats
            period, k = 400.0, np.arange(5)
            n = sum(int(((t >= lo + p) & (t < hi + p)).sum()) for p in period * k)
            expected *= 5
        assert abs(n - expected) <= 4.5 * np.sqrt(max(expected, 1.0)) + 1, (lo, hi, n, expected)


def test_superposed_streams_add_rates_and_keep_lengths() -> None:
    w = generate(
        "poisson:rate=5,duration=1000,prompt=const(100),output=const(10)"
        " + gamma:rate=2,cv=4,duration=1000,prompt=const(8000),output=const(20)",
        seed=2,
    )
    heavy = w.prompt_tokens == 8000
    assert set(np.unique(w.prompt_tokens)) == {100, 8000}
    assert np.all(w.output_tokens[heavy] == 20)
    assert (~heavy).sum() == pytest.approx(5000, rel=0.06)
    assert heavy.sum() == pytest.approx(2000, rel=0.3)
    assert np.all(np.diff(w.arrival_s) >= 0)


@pytest.mark.parametrize(
    ("dist", "mean", "rel"),
    [
        pytest.param("lognormal(1000,1.0)", 1000, 0.05, id="lognormal"),
        pytest.param("exp(200)", 200, 0.03, id="exp"),
        pytest.param("uniform(100,300)", 200, 0.01, id="uniform"),
        pytest.param("const(77)", 77, 0.0, id="const"),
        pytest.param("pareto(3,100)", 150, 0.05, id="pareto"),
        pytest.param("plmix(1000,0.5,2.5,2000,0.1)", 0.9 * 1000 + 0.1 * 2000 * 2.5 / 1.5, 0.06, id="plmix"),
        pytest.param("azure_conv()", 1155, 0.03, id="azure-conv-embedded"),
        pytest.param("azure_code()", 2048, 0.03, id="azure-code-embedded"),
    ],
)
def test_length_distribution_means(dist: str, mean: float, rel: float) -> None:
    w = generate(f"poisson:rate=200,duration=100,prompt={dist},output=const(1)", seed=5)
    assert w.prompt_tokens.mean() == pytest.approx(mean, rel=rel, abs=0.5)
    assert w.prompt_tokens.min() >= 1


@needs_traces
def test_empirical_lengths_resample_trace() -> None:
    w = generate(f"poisson:rate=100,duration=100,lengths=empirical({CODE})", seed=1)
    assert w.prompt_tokens.mean() == pytest.approx(2048, rel=0.05)
    src = load_trace(CODE)
    pairs = set(zip(src.prompt_tokens.tolist(), src.output_tokens.tolist(), strict=True))
    assert all(p in pairs for p in zip(w.prompt_tokens.tolist(), w.output_tokens.tolist(), strict=True))
    w2 = generate(f"poisson:rate=100,duration=100,prompt=empirical({CONV}),output=exp(10)", seed=1)
    assert w2.prompt_tokens.mean() == pytest.approx(1155, rel=0.05)


@needs_traces
def test_trace_kind_in_spec() -> None:
    w = generate(f"trace:path={CONV},rate_scale=2,window_start=0,window_end=600", seed=0)
    assert w.duration_s == 300.0
    assert len(w) == int((load_trace(CONV).arrival_s < 600).sum())


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("poisson", "KIND:key=value", id="no-colon"),
        pytest.param("weibull:rate=1,duration=10", "unknown arrival kind 'weibull'", id="unknown-kind"),
        pytest.param("poisson:rate=1", "duration", id="no-duration"),
        pytest.param("poisson:rate=x,duration=10", "rate='x' is not a number", id="bad-number"),
        pytest.param("poisson:rate=1,duration=10,colour=3", "unknown parameter 'colour'", id="unknown-key"),
        pytest.param(
            "poisson:rate=1,duration=10,prompt=lognormal(1)", "lognormal() takes 2", id="dist-arity"
        ),
        pytest.param(
            "poisson:rate=1,duration=10,prompt=zipf(1)", "unknown distribution 'zipf'", id="bad-dist"
        ),
        pytest.param("poisson:rate=1,duration=10,prompt=exp(200", "unbalanced", id="unbalanced"),
        pytest.param("gamma:rate=1,duration=10", "gamma needs cv", id="gamma-no-cv"),
        pytest.param("poisson:rate=1,duration=10 + step:rate=1,duration=5", "stream 2", id="names-stream"),
        pytest.param("poisson:rate=-1,duration=10", "rate must be", id="negative-rate"),
        pytest.param("sine:rate=1,amplitude=2,period=10,duration=10", "amplitude", id="amplitude"),
        pytest.param("poisson:rate=1,rate=2,duration=10", "given twice", id="duplicate"),
        pytest.param("poisson:rate=1,duration=10,prompt=exp(-5)", "mean must be > 0", id="negative-mean"),
    ],
)
def test_spec_errors(spec: str, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        generate(spec, seed=0)
    assert fragment in str(exc.value)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rate=st.floats(0.1, 50), cv=st.floats(0.3, 5))
def test_generation_is_seeded_and_valid(seed: int, rate: float, cv: float) -> None:
    spec = f"gamma:rate={rate},cv={cv},duration=60,prompt=lognormal(500,1.2),output=exp(50)"
    a, b = generate(spec, seed=seed), generate(spec, seed=seed)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.prompt_tokens, b.prompt_tokens)
    assert np.all(np.diff(a.arrival_s) >= 0)
    assert len(a) == 0 or (a.arrival_s[0] >= 0 and a.arrival_s[-1] < 60)
    assert len(a) == 0 or min(a.prompt_tokens.min(), a.output_tokens.min()) >= 1


def test_different_seeds_differ() -> None:
    assert not np.array_equal(
        generate("poisson:rate=5,duration=100", seed=1).arrival_s,
        generate("poisson:rate=5,duration=100", seed=2).arrival_s,
    )


# ---- built-in workloads ----


def test_default_workload_resembles_azure_conv() -> None:
    w = default_workload(0)
    s = w.summary()
    assert s["rate_per_s"] == pytest.approx(5.53, rel=0.05)
    assert s["prompt_mean"] == pytest.approx(1155, rel=0.04)
    assert s["output_mean"] == pytest.approx(211, rel=0.04)
    assert 0.95 < s["interarrival_cv"] < 1.3  # locally Poisson-like, modulated over minutes
    counts = np.bincount((w.arrival_s // 60).astype(int))[:-1]
    vmr = counts.var() / counts.mean()
    assert 3 < vmr < 80  # over-dispersed at 60 s (Azure conv: 20.6); a Poisson stream would give ~1
    np.testing.assert_array_equal(default_workload(0).arrival_s, w.arrival_s)
    assert not np.array_equal(default_workload(1).arrival_s[:10], w.arrival_s[:10])


def test_demo_workload_phases() -> None:
    w = demo_workload(0)
    assert 1200 <= w.duration_s <= 1800
    t = w.arrival_s

    def tokens_per_s(lo: float, hi: float, arr: np.ndarray) -> float:
        sel = (t >= lo) & (t < hi)
        return float(arr[sel].sum() / (hi - lo))

    base_prompt = tokens_per_s(0, 300, w.prompt_tokens)
    base_output = tokens_per_s(0, 300, w.output_tokens)
    ps, pe = DEMO_PROMPT_SURGE_S
    ds, de = DEMO_DECODE_SURGE_S
    surge_prompt = tokens_per_s(ps + 60, pe - 60, w.prompt_tokens)
    surge_output = tokens_per_s(ds + 60, de - 60, w.output_tokens)
    # Prefill at ~55k tok/s per Llama-3.1-8B H100 replica: baseline 1-2 replicas of work, surge 4-7.
    assert 50_000 < base_prompt < 110_000
    assert 200_000 < surge_prompt < 400_000
    # Decode: the generation surge multiplies the output-token rate several times, the prompt surge barely.
    assert surge_output > 5 * base_output
    assert tokens_per_s(ps + 60, pe - 60, w.output_tokens) < 1.5 * base_output


def test_merge_and_workload_validation() -> None:
    a = Workload("a", np.array([0.0, 2.0]), np.array([1, 2]), np.array([1, 1]))
    b = Workload("b", np.array([1.0]), np.array([5]), np.array([3]), horizon_s=10.0)
    m = merge([a, b])
    assert m.prompt_tokens.tolist() == [1, 5, 2]
    assert m.duration_s == 10.0
    with pytest.raises(ValueError, match="sorted"):
        Workload("x", np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="output_tokens"):
        Workload("x", np.array([0.0]), np.array([1]), np.array([0]))
    with pytest.raises(ValueError, match="lengths differ"):
        Workload("x", np.array([0.0]), np.array([1, 2]), np.array([1]))


def test_mooncake_json_roundtrip(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 3000 * i, "input_length": 10 + i, "output_length": 1 + i, "hash_ids": [i]}
        for i in range(5)
    ]
    p = _write(tmp_path, "trace.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    w = load_trace(p, rate_scale=3.0)
    np.testing.assert_allclose(w.arrival_s, [0, 1, 2, 3, 4])


def _needed_replicas(w: Workload, lo: float, hi: float) -> tuple[int, int]:
    """(prefill, decode) replicas for Llama-3.1-8B H100: M/M/c on prefill times for TTFT p99 <= 1 s, and the
    decode Little's-law fixed point with mean ITL <= 30 ms and KV <= 90% of capacity."""
    from autoscaler.core.latency import prefill_time_s
    from autoscaler.profiles import load_profile
    from sim.analytic import decode_fixed_point_model, mmc_min_servers

    profile = load_profile("llama-3.1-8b-h100-tp1")
    sel = (w.arrival_s >= lo) & (w.arrival_s < hi)
    lam = sel.sum() / (hi - lo)
    prompt, output = w.prompt_tokens[sel], w.output_tokens[sel]
    service = np.array([prefill_time_s(profile, x) for x in prompt])
    prefill = mmc_min_servers(lam, 1 / service.mean(), 0.99, 1.0 - np.percentile(service, 99))
    ctx = float(np.sum((prompt + output / 2) * output) / output.sum())  # context seen per decode step
    for decode in range(1, 30):
        try:
            op = decode_fixed_point_model(profile.step, lam / decode, output.mean(), ctx,
                                          kv_capacity_tokens=0.9 * profile.kv_capacity_tokens)
        except ValueError:
            continue
        if op.itl_s <= 0.03:
            break
    return prefill, decode


@pytest.mark.parametrize(
    ("phase", "prefill_range", "decode_range"),
    [
        pytest.param((0.0, 300.0), (2, 3), (2, 3), id="baseline"),
        pytest.param((DEMO_PROMPT_SURGE_S[0] + 60, DEMO_PROMPT_SURGE_S[1] - 60), (6, 8), (2, 3), id="prompt-surge"),
        pytest.param((DEMO_DECODE_SURGE_S[0] + 60, DEMO_DECODE_SURGE_S[1] - 60), (2, 4), (6, 8), id="decode-surge"),
    ],
)
def test_demo_workload_sized_for_8b_h100(phase: tuple[float, float], prefill_range: tuple[int, int],
                                        decode_range: tuple[int, int]) -> None:
    prefill, decode = _needed_replicas(demo_workload(0), *phase)
    assert prefill_range[0] <= prefill <= prefill_range[1]
    assert decode_range[0] <= decode <= decode_range[1]


@needs_traces
def test_arrival_stats_reproduce_published_azure_numbers() -> None:
    s = arrival_stats(load_trace(CONV))  # performance-anchors.md §4
    assert s["interarrival_cv"] == pytest.approx(1.09, abs=0.01)
    assert s["vmr_1s"] == pytest.approx(1.4, abs=0.05)
    assert s["vmr_10s"] == pytest.approx(4.0, abs=0.05)
    assert s["vmr_60s"] == pytest.approx(20.6, abs=0.1)
    assert s["peak_to_mean_60s"] == pytest.approx(1.54, abs=0.01)


def test_default_workload_burstiness_matches_azure_conv_bands() -> None:
    """An hour of the default workload, median over seeds, lands near the Azure conv statistics."""
    stats = [arrival_stats(default_workload(seed, duration_s=3600.0)) for seed in range(5)]
    med = {k: float(np.median([s[k] for s in stats])) for k in stats[0]}
    assert 1.0 < med["interarrival_cv"] < 1.2  # Azure 1.09
    assert 1.1 < med["vmr_1s"] < 1.8  # 1.4
    assert 2.5 < med["vmr_10s"] < 7.0  # 4.0
    assert 10.0 < med["vmr_60s"] < 40.0  # 20.6
    assert 1.3 < med["peak_to_mean_60s"] < 2.0  # 1.54
    poisson = arrival_stats(generate("poisson:rate=5.53,duration=3600", seed=0))
    assert poisson["vmr_60s"] < 2.0  # what a plain Poisson stream would give instead


def test_open_ended_window_keeps_finite_horizon() -> None:
    w = generate("poisson:rate=5,duration=100", seed=0).window(40.0, float("inf"))
    assert w.duration_s == pytest.approx(60.0)
    assert w.arrival_s.min() >= 0


def test_unsorted_trace_is_sorted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _write(tmp_path, "u.csv", "arrival_s,prompt_tokens,output_tokens\n5,1,1\n1,2,2\n1,3,3\n")
    with caplog.at_level("WARNING", logger="sim.workload"):
        w = load_trace(p)
    assert "not sorted" in caplog.text and "u.csv" in caplog.text
    assert w.prompt_tokens.tolist() == [2, 3, 1]  # stable: equal timestamps keep file order


def test_workload_arrays_are_private_and_read_only() -> None:
    arrival = np.array([0.0, 1.0])
    w = Workload("x", arrival, np.array([1, 2]), np.array([3, 4]))
    arrival[0] = 5.0  # the caller's array stays writable and does not alias the workload's
    assert w.arrival_s[0] == 0.0
    with pytest.raises(ValueError):
        w.arrival_s[0] = 1.0

"""autoscaler.core.latency: step models (poly, table, roofline) and the throughput helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.latency import (
    KvLink,
    LatencyProfile,
    PolyModel,
    RooflineModel,
    ScaledStepModel,
    StepModel,
    TableModel,
    causal_attention_token2,
    decode_tokens_per_s,
    kv_bytes_per_token,
    max_decode_batch,
    prefill_time_s,
    prefill_tokens_per_s,
    scale_profile,
    scale_step_model,
)

POLY = PolyModel(0.00575, 17.3e-6, 2.82e-10, 0.00575, 3.91e-8, 6.0e-6)
TABLE = TableModel(
    prefill_tokens=(128.0, 1024.0, 8192.0),
    prefill_s=(0.010, 0.030, 0.170),
    decode_batch=(1.0, 64.0, 256.0),
    decode_context_per_seq=(256.0, 4096.0),
    decode_s=((0.006, 0.0065), (0.008, 0.016), (0.014, 0.050)),
)
ROOF_H100 = RooflineModel(
    params=8.03e9, layers=32, hidden_size=4096, kv_heads=8, head_dim=128, dtype_bytes=2,
    gpu_flops_per_s=989e12, hbm_bytes_per_s=3.35e12, mfu=0.55, bw_efficiency=0.85, overhead_s=0.002,
    per_seq_s=5e-6,
)
MODELS: list[StepModel] = [POLY, TABLE, ROOF_H100]
MODEL_IDS = ["poly", "table", "roofline"]


def _profile(step: StepModel, kv_capacity: int = 411_529) -> LatencyProfile:
    return LatencyProfile("t", "test", step, 1, 131072, kv_capacity, 256, 8192)


@pytest.mark.parametrize(
    ("layers", "kv_heads", "head_dim", "dtype", "expected"),
    [
        pytest.param(32, 8, 128, 2, 131072, id="llama-3.1-8b"),
        pytest.param(80, 8, 128, 2, 327680, id="llama-3-70b"),
        pytest.param(32, 8, 128, 1, 65536, id="fp8-kv"),
    ],
)
def test_kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: int, expected: int) -> None:
    assert kv_bytes_per_token(layers, kv_heads, head_dim, dtype) == expected


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        pytest.param(lambda: POLY.prefill_step_s(8192), 0.00575 + 17.3e-6 * 8192 + 2.82e-10 * 8192**2, id="poly-prefill"),
        pytest.param(lambda: POLY.decode_step_s(64, 64 * 1024), 0.00575 + 3.91e-8 * 65536 + 6e-6 * 64, id="poly-decode"),
        pytest.param(lambda: TABLE.prefill_step_s(1024), 0.030, id="table-on-point"),
        pytest.param(lambda: TABLE.prefill_step_s(576), 0.020, id="table-midpoint"),
        pytest.param(lambda: TABLE.prefill_step_s(1), 0.010, id="table-clamped-below"),
        pytest.param(lambda: TABLE.prefill_step_s(16384), 0.170 + 0.140 / 7168 * 8192, id="table-extrapolated"),
        pytest.param(lambda: TABLE.decode_step_s(64, 64 * 4096), 0.016, id="table-decode-grid"),
        pytest.param(lambda: TABLE.decode_step_s(160, 160 * 2176), (0.012 + 0.032) / 2, id="table-bilinear"),
        pytest.param(lambda: TABLE.decode_step_s(1, 10), 0.006, id="table-decode-clamped"),
        pytest.param(lambda: TABLE.decode_step_s(512, 512 * 256), 0.014 + 0.006 / 192 * 256, id="table-decode-extrap"),
        pytest.param(lambda: TABLE.mixed_step_s(1024, 64, 64 * 4096), 0.030 + 0.016 - 0.006, id="table-mixed"),
        pytest.param(lambda: POLY.mixed_step_s(0, 8, 8000), POLY.decode_step_s(8, 8000), id="poly-mixed-no-prefill"),
    ],
)
def test_step_values(call, expected: float) -> None:  # type: ignore[no-untyped-def]
    assert call() == pytest.approx(expected, rel=1e-9)


def test_roofline_decode_floor_is_weight_read() -> None:
    """8B bf16 on H100: a decode step cannot beat 16.06 GB / 3.35 TB/s ≈ 4.8 ms (performance-anchors §1)."""
    ideal = RooflineModel(8.03e9, 32, 4096, 8, 128, 2, 989e12, 3.35e12, mfu=1.0, bw_efficiency=1.0, overhead_s=0.0)
    assert ideal.decode_step_s(1, 0) == pytest.approx(16.06e9 / 3.35e12, rel=1e-6)
    assert ideal.decode_step_s(1, 0) == pytest.approx(4.8e-3, rel=0.01)
    for b in (1, 8, 64, 256):
        assert ROOF_H100.decode_step_s(b, b * 1024) >= 16.06e9 / 3.35e12
    # ... and prefill cannot exceed ~62k tok/s at 100% MFU (2·P FLOPs per token, plus attention).
    assert 8192 / ideal.prefill_step_s(8192) < 62_000
    assert ideal.kv_bytes_per_token == 131072


def test_roofline_compute_bound_prefill_and_attention_share() -> None:
    r = RooflineModel(8.03e9, 32, 4096, 8, 128, 2, 989e12, 3.35e12, mfu=1.0, bw_efficiency=1.0, overhead_s=0.0)
    linear = 2 * 8.03e9 * 8192 / 989e12
    # Attention adds L/61k: about 13% at 8k tokens (performance-anchors §1).
    assert r.prefill_step_s(8192) / linear == pytest.approx(1 + 8192 / 61264, rel=1e-3)


def test_attention_is_per_sequence_and_causal() -> None:
    # one prompt from its start: L² (the old default); two prompts of 1024 in one step: 2·1024², not 2048²
    assert causal_attention_token2(4096) == 4096**2
    two = POLY.prefill_step_s(2048, 2 * causal_attention_token2(1024))
    assert two == pytest.approx(0.00575 + 17.3e-6 * 2048 + 2.82e-10 * 2 * 1024**2)
    assert two < POLY.prefill_step_s(2048)
    # a second chunk of a prompt attends to the first: more work than a fresh chunk of the same size
    assert causal_attention_token2(1024, 4096) == 1024 * (1024 + 2 * 4096)
    for model in (POLY, ROOF_H100):
        assert model.prefill_step_s(1024, causal_attention_token2(1024, 4096)) > model.prefill_step_s(1024)
    assert TABLE.prefill_step_s(1024, 1.0) == TABLE.prefill_step_s(1024)  # no attention term to scale


def test_roofline_sums_kernel_classes() -> None:
    r = RooflineModel(8.03e9, 32, 4096, 8, 128, 2, 989e12, 3.35e12, mfu=0.7, bw_efficiency=0.8, overhead_s=0.0)
    weights_s = 16.06e9 / (3.35e12 * 0.8)
    kv_s = 256 * 1000 * 131072 / (3.35e12 * 0.8)
    # 2048 prompt tokens + 256 decodes: the compute-bound GEMMs do not hide the decodes' KV reads
    linear_s = 2 * 8.03e9 * (2048 + 256) / (989e12 * 0.7)
    attn_s = 2 * 32 * 4096 * 2048**2 / (989e12 * 0.7)
    assert linear_s > weights_s
    assert r.mixed_step_s(2048, 256, 256 * 1000) == pytest.approx(linear_s + attn_s + kv_s)
    # a small decode batch stays weight-stream bound: weights + KV, as before
    assert r.decode_step_s(8, 8000) == pytest.approx(weights_s + 8000 * 131072 / (3.35e12 * 0.8))
    # a decode batch past the ridge is FLOP bound in its GEMMs
    assert r.decode_step_s(512, 0) == pytest.approx(2 * 8.03e9 * 512 / (989e12 * 0.7))


def test_roofline_streams_every_weight_but_the_input_embedding() -> None:
    full = RooflineModel(8.03e9, 32, 4096, 8, 128, 2, 989e12, 3.35e12, overhead_s=0.0)
    gathered = RooflineModel(8.03e9, 32, 4096, 8, 128, 2, 989e12, 3.35e12, overhead_s=0.0, vocab_size=128256)
    assert gathered.streamed_weight_bytes == pytest.approx((8.03e9 - 128256 * 4096) * 2)
    assert gathered.decode_step_s(1, 0) / full.decode_step_s(1, 0) == pytest.approx(
        gathered.streamed_weight_bytes / full.weight_bytes
    )
    with pytest.raises(ValueError, match="vocab_size"):
        RooflineModel(1e6, 1, 4096, 8, 128, 2, 1e12, 1e12, vocab_size=128256)


def test_mixed_step_shares_one_overhead() -> None:
    both = POLY.mixed_step_s(2048, 32, 32 * 1000)
    assert both == pytest.approx(POLY.prefill_step_s(2048) + POLY.decode_step_s(32, 32000) - 0.00575)
    assert max(POLY.prefill_step_s(2048), POLY.decode_step_s(32, 32000)) < both
    r = ROOF_H100.mixed_step_s(2048, 32, 32000)
    assert r < ROOF_H100.prefill_step_s(2048) + ROOF_H100.decode_step_s(32, 32000)
    assert r >= ROOF_H100.prefill_step_s(2048)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param({"prefill_tokens": (1.0, 1.0)}, "strictly increasing", id="not-increasing"),
        pytest.param({"prefill_s": (0.01,)}, "one time per", id="length-mismatch"),
        pytest.param({"decode_s": ((0.006, 0.0065), (0.008, 0.016))}, "a row per", id="rows"),
        pytest.param({"prefill_s": (0.010, -0.030, 0.170)}, "> 0", id="negative-time"),
        pytest.param({"decode_batch": ()}, "at least one", id="empty-axis"),
    ],
)
def test_table_validation(kwargs: dict, fragment: str) -> None:
    base = {
        "prefill_tokens": TABLE.prefill_tokens, "prefill_s": TABLE.prefill_s, "decode_batch": TABLE.decode_batch,
        "decode_context_per_seq": TABLE.decode_context_per_seq, "decode_s": TABLE.decode_s,
    }
    with pytest.raises(ValueError, match=fragment):
        TableModel(**{**base, **kwargs})


def test_roofline_validation() -> None:
    with pytest.raises(ValueError, match="mfu"):
        RooflineModel(8e9, 32, 4096, 8, 128, 2, 989e12, 3.35e12, mfu=1.5)
    with pytest.raises(ValueError, match="params"):
        RooflineModel(0, 32, 4096, 8, 128, 2, 989e12, 3.35e12)


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), t1=st.floats(0, 32768), dt=st.floats(0, 16384))
def test_more_tokens_never_faster(model: StepModel, t1: float, dt: float) -> None:
    assert model.prefill_step_s(t1 + dt) >= model.prefill_step_s(t1)


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), b=st.integers(1, 512), db=st.integers(0, 256), ctx=st.floats(1, 32768),
       dctx=st.floats(0, 8192))
def test_bigger_batch_or_context_never_faster(model: StepModel, b: int, db: int, ctx: float, dctx: float) -> None:
    base = model.decode_step_s(b, b * ctx)
    assert model.decode_step_s(b + db, (b + db) * ctx) >= base  # more sequences, same context each
    assert model.decode_step_s(b, b * (ctx + dctx)) >= base  # longer contexts
    assert model.mixed_step_s(1024, b, b * ctx) >= model.decode_step_s(b, b * ctx)


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_helpers(model: StepModel) -> None:
    p = _profile(model)
    assert prefill_tokens_per_s(p) == pytest.approx(8192 / model.prefill_step_s(8192))
    assert prefill_tokens_per_s(p, 2048) == pytest.approx(2048 / model.prefill_step_s(2048))
    # later chunks of one prompt attend to its earlier chunks
    chunks = [(8192, 0), (8192, 8192), (3616, 16384)]
    expected = sum(model.prefill_step_s(c, causal_attention_token2(c, done)) for c, done in chunks)
    assert prefill_time_s(p, 20000) == pytest.approx(expected)
    assert prefill_time_s(p, 0) == 0.0
    assert decode_tokens_per_s(p, 64, 1000) == pytest.approx(64 / model.decode_step_s(64, 64000))
    b = max_decode_batch(p, 1000, itl_target_s=0.012)
    assert 1 <= b <= 256
    assert model.decode_step_s(b, b * 1000) <= 0.012
    if b < 256:
        assert model.decode_step_s(b + 1, (b + 1) * 1000) > 0.012


@pytest.mark.parametrize(
    ("ctx", "itl", "expected"),
    [
        pytest.param(1000, None, 256, id="max-num-seqs-bound"),
        pytest.param(4000, None, 102, id="kv-bound"),
        pytest.param(1000, 0.001, 0, id="target-below-overhead"),
        pytest.param(500_000, None, 0, id="one-seq-does-not-fit"),
    ],
)
def test_max_decode_batch_bounds(ctx: float, itl: float | None, expected: int) -> None:
    assert max_decode_batch(_profile(POLY), ctx, itl) == expected


def test_prefill_chunk_validation() -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        prefill_tokens_per_s(_profile(POLY), 0)


class _OpaqueModel:
    """A step model scale_step_model does not know: scaled by wrapping."""

    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float:
        return 0.01 + 1e-5 * new_tokens

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        return 0.005 + 1e-4 * batch + 1e-7 * context_tokens

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float:
        return self.prefill_step_s(new_tokens) + self.decode_step_s(batch, context_tokens)


@settings(max_examples=40, deadline=None)
@given(
    model=st.sampled_from([*MODELS, _OpaqueModel()]), k=st.sampled_from([0.05, 0.5, 3.0]),
    tokens=st.floats(1, 20000), b=st.integers(1, 300), ctx=st.floats(1, 16000),
)  # fmt: skip
def test_scaled_model_multiplies_every_duration(model: StepModel, k: float, tokens: float, b: int, ctx: float) -> None:
    scaled = scale_step_model(model, k)
    assert scaled.prefill_step_s(tokens) == pytest.approx(k * model.prefill_step_s(tokens), rel=1e-12)
    assert scaled.decode_step_s(b, b * ctx) == pytest.approx(k * model.decode_step_s(b, b * ctx), rel=1e-12)
    assert scaled.mixed_step_s(tokens, b, b * ctx) == pytest.approx(
        k * model.mixed_step_s(tokens, b, b * ctx), rel=1e-12
    )


@pytest.mark.parametrize(
    ("model", "kind"),
    [(POLY, PolyModel), (TABLE, TableModel), (ROOF_H100, RooflineModel), (_OpaqueModel(), ScaledStepModel)],
    ids=["poly", "table", "roofline", "other"],
)
def test_scaling_keeps_the_model_kind(model: StepModel, kind: type) -> None:
    """A PolyModel stays a PolyModel (the simulator's closed-form fast path); scaling twice composes."""
    assert isinstance(scale_step_model(model, 0.1), kind)
    twice = scale_step_model(scale_step_model(model, 0.1), 4.0)
    assert twice.decode_step_s(8, 8000) == pytest.approx(0.4 * model.decode_step_s(8, 8000), rel=1e-12)


def test_scale_profile_keeps_limits_and_names_the_factor() -> None:
    p = _profile(POLY)
    q = scale_profile(p, 0.25)
    assert (q.kv_capacity_tokens, q.max_num_seqs, q.max_num_batched_tokens, q.kv_bytes_per_token) == (
        p.kv_capacity_tokens, p.max_num_seqs, p.max_num_batched_tokens, p.kv_bytes_per_token,
    )  # fmt: skip
    assert q.name == "t@x0.25" and "x 0.25" in q.source
    assert prefill_time_s(q, 20000) == pytest.approx(0.25 * prefill_time_s(p, 20000))


def test_kv_link_scaling_and_validation() -> None:
    link = KvLink(50e9, 0.002).scaled(0.1)
    assert (link.bytes_per_s, link.base_latency_s) == pytest.approx((500e9, 0.0002))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="time scale factor"):
            scale_profile(_profile(POLY), bad)
    with pytest.raises(ValueError, match="bandwidth"):
        KvLink(0.0)
    with pytest.raises(ValueError, match="base latency"):
        KvLink(1e9, -0.001)

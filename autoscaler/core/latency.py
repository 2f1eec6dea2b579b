"""Per-step latency models of a vLLM engine, shared by the policy, the simulator and the emulated workers.

A model answers two questions, in seconds:
  * ``prefill_step_s(new_tokens, attention_token2)``: one scheduler step that processes ``new_tokens`` prompt tokens
    (summed over the requests chunked into that step) whose causal attention work is ``attention_token2``
    (``causal_attention_token2``: Σ c·(c + 2p) over the step's chunks of c new tokens after p computed ones; the
    default, ``new_tokens²``, is one prompt's chunk from its start);
  * ``decode_step_s(batch, context_tokens)``: one decode step of ``batch`` sequences whose KV context
    sums to ``context_tokens``;
and ``mixed_step_s`` for aggregated serving, where prefill chunks ride in the same step as decodes.
Attention is per sequence: two 1024-token prompts in one step cost 2·1024² of attention, not 2048² (FlashAttention's
variable-length kernels attend within each sequence only), and a prompt's later chunks attend to its earlier ones.

Implementations: ``PolyModel`` (DistServe-style polynomials), ``TableModel`` (interpolation over profiled
points), ``RooflineModel`` (from model and GPU datasheet numbers). Profiles (files citing their sources) are
loaded by ``autoscaler.profiles``; this module is pure.

Host work outside the engine's steps is ``HostOverheads`` (BLIS's α terms, same semantics): a per-request delay
before the request reaches the engine queue, and a per-output-token delay added to what the client sees of every
token, neither of which occupies the engine.

``PolyModel`` and ``RooflineModel`` use only arithmetic, ``max`` aside, so ``PolyModel`` methods also accept numpy
arrays elementwise (vectorised use in the simulator); ``RooflineModel`` and ``TableModel`` are scalar.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol


class StepModel(Protocol):
    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float: ...

    def decode_step_s(self, batch: int, context_tokens: float) -> float: ...

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float: ...


def causal_attention_token2(chunk_tokens: float, computed_tokens: float = 0.0) -> float:
    """Causal attention work of a chunk of ``chunk_tokens`` new tokens after ``computed_tokens`` already in the KV
    cache, in token² (query-key pairs × 2): every new token attends to the computed ones and, on average, to half of
    the chunk, so c·(c + 2p); a whole prompt of L tokens alone gives L². Step models charge their quadratic prefill
    term on the sum of this over the step's chunks."""
    return chunk_tokens * (chunk_tokens + 2.0 * computed_tokens)


@dataclass(frozen=True)
class PolyModel:
    """prefill = a + b·T + c·U;  decode = a + b·Σctx + c·B  (seconds; T new tokens, U their causal attention work
    in token², T² for one prompt from its start (``causal_attention_token2``), B sequences)."""

    prefill_a_s: float
    prefill_b_s_per_token: float
    prefill_c_s_per_token2: float
    decode_a_s: float
    decode_b_s_per_context_token: float
    decode_c_s_per_seq: float

    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float:
        t = new_tokens
        u = t * t if attention_token2 is None else attention_token2
        return self.prefill_a_s + self.prefill_b_s_per_token * t + self.prefill_c_s_per_token2 * u

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        return (
            self.decode_a_s
            + self.decode_b_s_per_context_token * context_tokens
            + self.decode_c_s_per_seq * batch
        )

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float:
        """Prefill chunk and decodes share one forward pass: one fixed overhead, both variable parts."""
        if new_tokens <= 0:
            return self.decode_step_s(batch, context_tokens)
        if batch <= 0:
            return self.prefill_step_s(new_tokens, attention_token2)
        return self.prefill_step_s(new_tokens, attention_token2) + self.decode_step_s(batch, context_tokens) - min(
            self.prefill_a_s, self.decode_a_s
        )


@dataclass(frozen=True)
class HostOverheads:
    """Host (CPU) work around the engine's steps, as BLIS models it (its α coefficients), in seconds.

    * ``request_s`` + ``request_per_prompt_token_s`` × prompt (BLIS α0 + α1·L_in, ``QueueingTime``): HTTP parsing,
      tokenization and input processing between the request's arrival and its entry into the engine's waiting
      queue. It delays admission (so it is part of TTFT and can change the batch a request lands in) but holds no
      engine resource: requests overlap in it.
    * ``output_token_s`` (BLIS α2, ``OutputTokenProcessingTime``): detokenization and streaming of one output
      token. BLIS adds it to the first token's time and to every inter-token gap the client sees, and never to the
      engine clock (the next step starts when the previous one ends). A request's client-visible end is therefore
      its engine end + α0 + α1·L_in + output_tokens × α2.
    Sources: inference-sim/inference-sim ``sim/latency`` (BlackboxLatencyModel.QueueingTime,
    OutputTokenProcessingTime), ``sim/event.go`` (ArrivalEvent.Execute schedules QueuedEvent after QueueingTime),
    ``sim/simulator.go`` (executeBatchStep: ITL entry = step + α2, FirstTokenTime = now + step + α2 − arrival;
    recordRequestCompletion: E2E = TTFT + Σ ITL).
    """

    request_s: float = 0.0
    request_per_prompt_token_s: float = 0.0
    output_token_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("request_s", "request_per_prompt_token_s", "output_token_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"HostOverheads.{name} must be a finite number >= 0, got {value!r}")

    @property
    def is_zero(self) -> bool:
        return self.request_s == 0 and self.request_per_prompt_token_s == 0 and self.output_token_s == 0

    def admission_delay_s(self, prompt_tokens: float) -> float:
        """Arrival -> engine waiting queue (α0 + α1·L_in)."""
        return self.request_s + self.request_per_prompt_token_s * prompt_tokens

    def first_token_delay_s(self, prompt_tokens: float) -> float:
        """What the client's TTFT adds to the engine's (arrival -> first step end): admission delay + α2."""
        return self.admission_delay_s(prompt_tokens) + self.output_token_s

    def client_gap_s(self, engine_gap_s: float) -> float:
        """An inter-token gap as the client sees it: the engine's gap + α2."""
        return engine_gap_s + self.output_token_s


NO_HOST_OVERHEADS = HostOverheads()


@dataclass(frozen=True)
class LatencyProfile:
    """One model on one GPU arrangement (one replica), with its engine limits and where its numbers come from."""

    name: str
    source: str  # citation of the numbers
    step: StepModel
    gpus_per_replica: int
    kv_bytes_per_token: int
    kv_capacity_tokens: int  # per replica
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    host: HostOverheads = NO_HOST_OVERHEADS  # α terms (BLIS); zero for offline (LLM-class) use


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: float) -> int:
    """KV cache bytes per token: K and V (2) for every layer and KV head (GQA shares them across query heads)."""
    return int(2 * layers * kv_heads * head_dim * dtype_bytes)


def _check_axis(name: str, xs: Sequence[float]) -> None:
    if len(xs) < 1:
        raise ValueError(f"{name}: needs at least one point")
    if any(not math.isfinite(x) for x in xs):
        raise ValueError(f"{name}: values must be finite")
    if any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError(f"{name}: points must be strictly increasing")


def _interp_extrap(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear in range; clamped below the first point; extrapolated above the last with the last
    segment's slope (never negative), because beyond the profiled range cost keeps growing."""
    if x <= xs[0] or len(xs) == 1:
        return ys[0]  # one point: a constant
    i = bisect.bisect_right(xs, x) - 1
    if i >= len(xs) - 1:
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return ys[-1] + slope * (x - xs[-1])
    w = (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + w * (ys[i + 1] - ys[i])


@dataclass(frozen=True)
class TableModel:
    """Interpolation over profiled points (seconds).

    * prefill: 1-D over new tokens per step (``prefill_tokens`` -> ``prefill_s``);
    * decode: 2-D over (batch, mean context per sequence) with ``decode_s[i][j]`` the step time at
      ``decode_batch[i]`` and ``decode_context_per_seq[j]``; bilinear inside the grid.
    Outside the profiled range each axis is clamped below its first point (small steps cost the fixed overhead)
    and extrapolated linearly above its last point with the last segment's slope, floored at zero slope, so the
    model never predicts a bigger step to be faster. ``mixed_step_s`` adds both parts and removes one fixed
    overhead, estimated as the smaller of the two tables' smallest entries.
    """

    prefill_tokens: tuple[float, ...]
    prefill_s: tuple[float, ...]
    decode_batch: tuple[float, ...]
    decode_context_per_seq: tuple[float, ...]
    decode_s: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        _check_axis("prefill_tokens", self.prefill_tokens)
        _check_axis("decode_batch", self.decode_batch)
        _check_axis("decode_context_per_seq", self.decode_context_per_seq)
        if len(self.prefill_s) != len(self.prefill_tokens):
            raise ValueError("prefill_s: needs one time per prefill_tokens point")
        if len(self.decode_s) != len(self.decode_batch) or any(
            len(row) != len(self.decode_context_per_seq) for row in self.decode_s
        ):
            raise ValueError("decode_s: needs a row per decode_batch point, a column per context point")
        values = [*self.prefill_s, *(v for row in self.decode_s for v in row)]
        if any(not (v > 0 and math.isfinite(v)) for v in values):
            raise ValueError("step times must be finite and > 0")

    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float:
        """Interpolated over profiled steps of one fresh prompt; ``attention_token2`` is not used (the table holds
        no separate attention term)."""
        return _interp_extrap(self.prefill_tokens, self.prefill_s, new_tokens)

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        if batch <= 0:
            return min(row[0] for row in self.decode_s)
        per_seq = context_tokens / batch
        # Interpolate along context for each profiled batch row, then along batch.
        column = [_interp_extrap(self.decode_context_per_seq, row, per_seq) for row in self.decode_s]
        return _interp_extrap(self.decode_batch, column, float(batch))

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float:
        if new_tokens <= 0:
            return self.decode_step_s(batch, context_tokens)
        if batch <= 0:
            return self.prefill_step_s(new_tokens)
        overhead = min(self.prefill_s[0], self.decode_s[0][0])
        return self.prefill_step_s(new_tokens) + self.decode_step_s(batch, context_tokens) - overhead


@dataclass(frozen=True)
class RooflineModel:
    """Step times from model shape and GPU datasheet numbers, derated by efficiency factors.

    A step runs its kernels one after another, each bound by its own roofline, so the step is the sum over kernel
    classes (not one max over the step's total bytes and total FLOPs, which would let the memory-bound attention of
    the decodes hide under the compute-bound GEMMs of a prefill chunk):

        linear layers  max(streamed weights / (HBM B/s·bw_eff), 2·P·(T + B) / (FLOP/s·MFU))
        prefill attn   2·layers·d·U / (FLOP/s·MFU)                      U: causal attention work, token²
        decode attn    max(Σctx·kv_bytes / (HBM B/s·kv_bw_eff), 4·layers·d·Σctx / (FLOP/s·MFU))
        + overhead_s + per_seq_s·B

    (T new prompt tokens, B decoding sequences.) ``streamed weights`` are the parameters a forward pass reads in full:
    all of them but the input-embedding table (a gather of one row per token, when ``vocab_size`` is given; the
    untied output head is a GEMM and is read). ``kv_bw_efficiency`` (default: ``bw_efficiency``) is the fraction of
    HBM bandwidth the paged decode-attention kernels reach reading the KV cache, lower than dense weight GEMVs reach.
    FLOP/s and bandwidth are per GPU, multiplied by ``num_gpus`` (tensor parallel; communication belongs in
    ``overhead_s``). Formulas: performance-anchors.md §1 (roofline and memory); the per-operator sum is how Vidur
    (MLSys 2024) composes a step from profiled operators.
    """

    params: float  # parameter count
    layers: int
    hidden_size: int
    kv_heads: int
    head_dim: int
    dtype_bytes: float
    gpu_flops_per_s: float
    hbm_bytes_per_s: float
    mfu: float = 0.55
    bw_efficiency: float = 0.8
    overhead_s: float = 0.004
    per_seq_s: float = 0.0
    num_gpus: int = 1
    kv_bw_efficiency: float | None = None  # None: bw_efficiency
    vocab_size: int = 0  # input-embedding rows, not streamed per step; 0: count every parameter as streamed

    def __post_init__(self) -> None:
        for name in ("params", "layers", "hidden_size", "kv_heads", "head_dim", "dtype_bytes",
                     "gpu_flops_per_s", "hbm_bytes_per_s", "num_gpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("mfu", "bw_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        if self.kv_bw_efficiency is not None and not 0 < self.kv_bw_efficiency <= 1:
            raise ValueError("kv_bw_efficiency must be in (0, 1]")
        if self.overhead_s < 0 or self.per_seq_s < 0:
            raise ValueError("overhead_s and per_seq_s must be >= 0")
        if self.vocab_size < 0 or self.vocab_size * self.hidden_size >= self.params:
            raise ValueError("vocab_size must be >= 0 and its embedding table smaller than the model")

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def streamed_weight_bytes(self) -> float:
        """Bytes a forward pass reads in full: every weight but the input-embedding table."""
        return (self.params - self.vocab_size * self.hidden_size) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim, self.dtype_bytes)

    @property
    def _flops(self) -> float:
        return self.gpu_flops_per_s * self.mfu * self.num_gpus

    @property
    def _bw(self) -> float:
        return self.hbm_bytes_per_s * self.bw_efficiency * self.num_gpus

    @property
    def _kv_bw(self) -> float:
        eff = self.bw_efficiency if self.kv_bw_efficiency is None else self.kv_bw_efficiency
        return self.hbm_bytes_per_s * eff * self.num_gpus

    def _linear_s(self, tokens: float) -> float:
        """The linear layers (and output head) over ``tokens`` rows: weight-stream or FLOP bound."""
        return max(self.streamed_weight_bytes / self._bw, 2.0 * self.params * tokens / self._flops)

    def _decode_attention_s(self, context_tokens: float) -> float:
        ctx = max(0.0, context_tokens)
        return max(ctx * self.kv_bytes_per_token / self._kv_bw, 4.0 * self.layers * self.hidden_size * ctx / self._flops)

    def _prefill_attention_s(self, new_tokens: float, attention_token2: float | None) -> float:
        u = new_tokens * new_tokens if attention_token2 is None else max(0.0, attention_token2)
        return 2.0 * self.layers * self.hidden_size * u / self._flops

    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float:
        t = max(0.0, new_tokens)
        return self.overhead_s + self._linear_s(t) + self._prefill_attention_s(t, attention_token2)

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        b = max(0, batch)
        return self.overhead_s + self._linear_s(b) + self._decode_attention_s(context_tokens) + self.per_seq_s * b

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float:
        """One forward pass: weights streamed once for prompt and decode rows; both attentions; their sum."""
        if new_tokens <= 0:
            return self.decode_step_s(batch, context_tokens)
        if batch <= 0:
            return self.prefill_step_s(new_tokens, attention_token2)
        t, b = new_tokens, batch
        return (
            self.overhead_s + self._linear_s(t + b) + self._prefill_attention_s(t, attention_token2)
            + self._decode_attention_s(context_tokens) + self.per_seq_s * b
        )  # fmt: skip


@dataclass(frozen=True)
class KvLink:
    """The P/D KV transfer of one prompt: ``prompt × kv_bytes_per_token / bytes_per_s + base_latency_s`` seconds."""

    bytes_per_s: float = 64e9
    base_latency_s: float = 0.001

    def __post_init__(self) -> None:
        if not (self.bytes_per_s > 0 and math.isfinite(self.bytes_per_s)):
            raise ValueError(f"KV link bandwidth must be a finite number > 0 bytes/s, got {self.bytes_per_s}")
        if not (self.base_latency_s >= 0 and math.isfinite(self.base_latency_s)):
            raise ValueError(f"KV link base latency must be a finite number >= 0 s, got {self.base_latency_s}")

    def scaled(self, factor: float) -> KvLink:
        """The same link with every transfer time multiplied by ``factor`` (see ``scale_profile``)."""
        _check_factor(factor)
        return KvLink(self.bytes_per_s / factor, self.base_latency_s * factor)


@dataclass(frozen=True)
class ScaledStepModel:
    """Any step model with every step time multiplied by ``factor`` (for models ``scale_profile`` cannot rebuild)."""

    inner: StepModel
    factor: float

    def prefill_step_s(self, new_tokens: float, attention_token2: float | None = None) -> float:
        return self.inner.prefill_step_s(new_tokens, attention_token2) * self.factor

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        return self.inner.decode_step_s(batch, context_tokens) * self.factor

    def mixed_step_s(
        self, new_tokens: float, batch: int, context_tokens: float, attention_token2: float | None = None
    ) -> float:
        return self.inner.mixed_step_s(new_tokens, batch, context_tokens, attention_token2) * self.factor


def _check_factor(factor: float) -> None:
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"time scale factor must be a finite number > 0, got {factor}")


def scale_step_model(step: StepModel, factor: float) -> StepModel:
    """``step`` with every modelled duration multiplied by ``factor``, as the same kind of model where possible
    (a ``PolyModel`` stays a ``PolyModel``, so the simulator keeps its closed-form fast path)."""
    _check_factor(factor)
    k = factor
    if isinstance(step, PolyModel):
        return PolyModel(
            step.prefill_a_s * k, step.prefill_b_s_per_token * k, step.prefill_c_s_per_token2 * k,
            step.decode_a_s * k, step.decode_b_s_per_context_token * k, step.decode_c_s_per_seq * k,
        )  # fmt: skip
    if isinstance(step, TableModel):
        return replace(
            step,
            prefill_s=tuple(v * k for v in step.prefill_s),
            decode_s=tuple(tuple(v * k for v in row) for row in step.decode_s),
        )
    if isinstance(step, RooflineModel):  # both roofline terms are work / rate: slower rates, longer times
        return replace(
            step, gpu_flops_per_s=step.gpu_flops_per_s / k, hbm_bytes_per_s=step.hbm_bytes_per_s / k,
            overhead_s=step.overhead_s * k, per_seq_s=step.per_seq_s * k,
        )  # fmt: skip
    if isinstance(step, ScaledStepModel):
        return ScaledStepModel(step.inner, step.factor * k)
    return ScaledStepModel(step, k)


def scale_profile(profile: LatencyProfile, factor: float) -> LatencyProfile:
    """The profile with every modelled step duration multiplied by ``factor`` (< 1: a compressed-time live run).

    Emulated workers and the simulator given the same scaled profile run the same model, so a compressed live run
    and its simulated twin stay comparable; the host overheads (α terms) scale with the steps. Engine limits and
    KV sizes are unchanged. The P/D KV transfer time is a
    property of the link, not the profile: scale it with ``KvLink.scaled(factor)``.
    """
    return replace(
        profile,
        name=f"{profile.name}@x{factor:g}",
        source=f"{profile.source} (every step time x {factor:g})",
        step=scale_step_model(profile.step, factor),
        host=HostOverheads(
            profile.host.request_s * factor,
            profile.host.request_per_prompt_token_s * factor,
            profile.host.output_token_s * factor,
        ),  # host work is modelled time too: a compressed run compresses it with the steps
    )


# ---- helpers shared by the policy and the simulator ----


def prefill_tokens_per_s(
    profile: LatencyProfile,
    chunk_tokens: int | None = None,
    prompt_tokens: float | None = None,
    prompt_scv: float = 0.0,
) -> float:
    """Prefill throughput (tokens/s) of one replica draining a queue: back-to-back steps of up to ``chunk_tokens``
    (default: the engine's max_num_batched_tokens) packed with fresh prompts of mean length ``prompt_tokens`` and
    squared coefficient of variation ``prompt_scv`` (default: one prompt filling the chunk from its start).

    A prompt of L tokens costs L² of causal attention in total however it is chunked (Σ c·(c + 2p) over its chunks,
    ``causal_attention_token2``), so a packed step of T tokens carries T·E[L²]/E[L] = T·mean·(1 + SCV) of attention
    on average, whether the prompts are shorter than the chunk (T/L prompts of L² each) or longer (L/T chunks of one
    prompt). A step holds at most ``max_num_seqs`` prompts, so very short prompts fill less than the chunk. Exact in
    expectation for step models affine in the attention work (``PolyModel``, ``RooflineModel``)."""
    chunk = profile.max_num_batched_tokens if chunk_tokens is None else chunk_tokens
    if chunk <= 0:
        raise ValueError(f"chunk_tokens must be > 0, got {chunk}")
    if prompt_scv < 0 or not math.isfinite(prompt_scv):
        raise ValueError(f"prompt_scv must be a finite number >= 0, got {prompt_scv!r}")
    if prompt_tokens is None:
        return chunk / profile.step.prefill_step_s(chunk, causal_attention_token2(chunk))
    mean = max(prompt_tokens, 1.0)
    step_tokens = min(float(chunk), profile.max_num_seqs * mean)
    attention_per_token = mean * (1.0 + prompt_scv)  # E[L²] / E[L]
    return step_tokens / profile.step.prefill_step_s(step_tokens, step_tokens * attention_per_token)


def prefill_time_s(profile: LatencyProfile, prompt_tokens: float, chunk_tokens: int | None = None) -> float:
    """Time to prefill one prompt alone, split into chunks of at most ``chunk_tokens`` (vLLM chunked prefill); each
    chunk attends to the ones before it (``causal_attention_token2``)."""
    chunk = profile.max_num_batched_tokens if chunk_tokens is None else chunk_tokens
    if chunk <= 0:
        raise ValueError(f"chunk_tokens must be > 0, got {chunk}")
    if prompt_tokens <= 0:
        return 0.0
    step = profile.step
    full, rest = divmod(prompt_tokens, chunk)
    total = 0.0
    for k in range(int(full)):
        total += step.prefill_step_s(chunk, causal_attention_token2(chunk, k * chunk))
    if rest > 0:
        total += step.prefill_step_s(rest, causal_attention_token2(rest, full * chunk))
    return float(total)


def decode_tokens_per_s(profile: LatencyProfile, batch: int, context_per_seq_tokens: float) -> float:
    """Output tokens/s of one replica decoding ``batch`` sequences of mean context ``context_per_seq_tokens``."""
    if batch <= 0:
        return 0.0
    return batch / profile.step.decode_step_s(batch, batch * context_per_seq_tokens)


def max_decode_batch(
    profile: LatencyProfile, context_per_seq_tokens: float, itl_target_s: float | None = None
) -> int:
    """Largest batch that fits max_num_seqs and the KV capacity and, if given, keeps the step <= itl_target_s.

    Returns 0 when even one sequence does not fit. Assumes the step time is non-decreasing in the batch.
    """
    kv_limit = (
        profile.max_num_seqs
        if context_per_seq_tokens <= 0
        else int(profile.kv_capacity_tokens // context_per_seq_tokens)
    )
    hi = min(profile.max_num_seqs, kv_limit)
    if itl_target_s is None or hi <= 0:
        return max(0, hi)

    def ok(b: int) -> bool:
        return profile.step.decode_step_s(b, b * context_per_seq_tokens) <= itl_target_s

    if not ok(1):
        return 0
    lo = 1
    while lo < hi:  # binary search for the last b with ok(b)
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo

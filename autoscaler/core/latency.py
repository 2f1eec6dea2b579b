"""Per-step latency models of a vLLM engine, shared by the policy, the simulator and the emulated workers.

A model answers two questions, in seconds:
  * ``prefill_step_s(new_tokens)``: one scheduler step that processes ``new_tokens`` prompt tokens
    (summed over the requests chunked into that step);
  * ``decode_step_s(batch, context_tokens)``: one decode step of ``batch`` sequences whose KV context
    sums to ``context_tokens``;
and ``mixed_step_s`` for aggregated serving, where prefill chunks ride in the same step as decodes.

Implementations: ``PolyModel`` (DistServe-style polynomials), ``TableModel`` (interpolation over profiled
points), ``RooflineModel`` (from model and GPU datasheet numbers). Profiles (files citing their sources) are
loaded by ``autoscaler.profiles``; this module is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StepModel(Protocol):
    def prefill_step_s(self, new_tokens: float) -> float: ...

    def decode_step_s(self, batch: int, context_tokens: float) -> float: ...

    def mixed_step_s(self, new_tokens: float, batch: int, context_tokens: float) -> float: ...


@dataclass(frozen=True)
class PolyModel:
    """prefill = a + b·T + c·T²;  decode = a + b·Σctx + c·B  (seconds; T new tokens, B sequences)."""

    prefill_a_s: float
    prefill_b_s_per_token: float
    prefill_c_s_per_token2: float
    decode_a_s: float
    decode_b_s_per_context_token: float
    decode_c_s_per_seq: float

    def prefill_step_s(self, new_tokens: float) -> float:
        t = new_tokens
        return self.prefill_a_s + self.prefill_b_s_per_token * t + self.prefill_c_s_per_token2 * t * t

    def decode_step_s(self, batch: int, context_tokens: float) -> float:
        return (
            self.decode_a_s
            + self.decode_b_s_per_context_token * context_tokens
            + self.decode_c_s_per_seq * batch
        )

    def mixed_step_s(self, new_tokens: float, batch: int, context_tokens: float) -> float:
        """Prefill chunk and decodes share one forward pass: one fixed overhead, both variable parts."""
        if new_tokens <= 0:
            return self.decode_step_s(batch, context_tokens)
        if batch <= 0:
            return self.prefill_step_s(new_tokens)
        return self.prefill_step_s(new_tokens) + self.decode_step_s(batch, context_tokens) - min(
            self.prefill_a_s, self.decode_a_s
        )


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

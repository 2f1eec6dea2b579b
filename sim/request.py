"""One request's state while it lives on a vLLM instance (the scheduler's unit of work).

Kept as a plain ``__slots__`` object because the scheduler touches these fields on every step. A request moves from a
prefill instance to a decode instance (disaggregated serving) as the same object; its per-instance fields are reset
on arrival at the next instance.

Decode progress is stored lazily so that a run of identical decode steps can be committed without touching every
request: while ``decoding``, the request holds ``kv_tokens_at_base`` KV slots and had emitted ``emitted_at_base``
tokens when its instance had completed ``base_step`` steps; after the instance completes step ``n`` it holds
``kv_tokens_at_base + n - base_step`` slots. Outside the decode phase ``tokens_emitted`` is authoritative.
"""

from __future__ import annotations

import math

from mypy_extensions import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True)  # workers.realtime extends it, also when compiled (sim.native)
class Request:
    """A request on an instance: prompt, output length and where it stands (see the module docstring)."""

    __slots__ = (
        "base_step",
        "decoding",
        "emitted_at_base",
        "finish_step",
        "first_token_s",
        "heap_key",
        "index",
        "kv_reserved_tokens",
        "kv_tokens_at_base",
        "last_token_s",
        "max_itl_s",
        "output_tokens",
        "pod_arrival_s",
        "prefill_started",
        "prompt_tokens",
        "segment_index",
        "tokens_emitted",
        "tokens_to_compute",
    )  # fmt: skip

    def __init__(self, index: int, prompt_tokens: int, output_tokens: int) -> None:
        self.index = index  # position in the workload (the engine) or a submission counter (realtime)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        # tokens to compute before the next sample: the prompt, a recompute after preemption, 0 once KV is present
        self.tokens_to_compute = prompt_tokens
        self.kv_reserved_tokens = 0  # KV slots held while in the prefill phase
        self.tokens_emitted = 0  # output tokens sampled so far (authoritative outside the decode phase)
        self.decoding = False
        self.kv_tokens_at_base = 0
        self.emitted_at_base = 0
        self.base_step = 0
        self.finish_step = 0  # instance step index at whose end the last token is emitted
        self.heap_key = -1  # identifies the live entry in the instance's finish heap (older entries are stale)
        self.first_token_s = math.nan  # time of the first output token, NaN until then
        self.last_token_s = math.nan
        self.max_itl_s = -math.inf  # largest inter-token gap so far
        self.segment_index = 0  # first skipped decode segment whose longest step this request has not yet seen
        self.pod_arrival_s = 0.0  # arrival at the current instance (each role's TTFT starts here)
        self.prefill_started = False

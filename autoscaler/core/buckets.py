"""vLLM V1 histogram bucket edges (vllm/v1/metrics/buckets.py, via ../shared/reference/vllm-metrics.md §2).

The simulator's histograms use exactly these edges, so a percentile read from the simulated world is as coarse
as the one read from a real cluster."""

from __future__ import annotations

TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def buckets_1_2_5(max_value: int) -> list[int]:
    """vLLM's ``build_1_2_5_buckets``: 1, 2, 5, 10, 20, 50, ... while not above ``max_value`` (the edges of its
    token-count histograms, ``vllm:request_prompt_tokens`` among them, up to ``max_model_len``)."""
    out: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return out
            out.append(value)
        exponent += 1


SIM_MAX_MODEL_LEN_TOKENS = 131072
"""The simulated workers' ``max_model_len`` (Llama 3.1's 128k context): it sets their prompt-length buckets."""
PROMPT_TOKENS_BUCKETS: tuple[float, ...] = tuple(float(b) for b in buckets_1_2_5(SIM_MAX_MODEL_LEN_TOKENS))

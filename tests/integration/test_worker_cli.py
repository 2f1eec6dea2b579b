"""`pdscale worker` flags: bad ones exit 2 naming the problem; --time-scale stretches the modelled time."""

from __future__ import annotations

import time

import openai
import pytest

from autoscaler.cli import build_parser
from autoscaler.core.latency import prefill_time_s
from autoscaler.profiles import load_profile
from tests.helpers.workers import MODEL, start_worker
from workers.local.processes import ProcessRunner


@pytest.mark.parametrize(("args", "message"), [
    (["--time-scale", "0"], "--time-scale must be > 0"),
    (["--max-model-len", "0"], "--max-model-len must be >= 1"),
    (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
    (["--kv-transfer-config", "{oops"], "--kv-transfer-config is not valid JSON"),
    (["--role", "prefill", "--kv-transfer-config", '{"kv_role":"kv_consumer"}'], "contradicts"),
    (["--max-model-len", "999999999"], "exceeds the KV cache"),
])
def test_bad_flags_exit_2_with_the_reason(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    parsed = build_parser().parse_args(["worker", "--port", "1", *args])
    assert parsed.func(parsed) == 2
    assert message in capsys.readouterr().err


def test_time_scale_stretches_every_step(process_runner: ProcessRunner) -> None:
    """At --time-scale 8 a lone request's 30 decode steps take at least 8x the profile's step time."""
    scale, tokens = 8.0, 30
    w = start_worker(process_runner, extra_args=["--time-scale", str(scale), "--max-model-len", "4096"])
    client = openai.OpenAI(base_url=w.api_url, api_key="unused", timeout=60, max_retries=0)
    profile = load_profile("llama-3.1-8b-h100-tp1")
    model_s = prefill_time_s(profile, 100) + (tokens - 1) * profile.step.decode_step_s(1, 100)
    t0 = time.monotonic()
    out = client.completions.create(model=MODEL, prompt=[1] * 100, max_tokens=tokens)
    elapsed_s = time.monotonic() - t0
    assert out.usage is not None and out.usage.completion_tokens == tokens
    assert elapsed_s >= 0.9 * scale * model_s, (elapsed_s, model_s)

"""The emulated worker's /metrics schema against a real vLLM 0.32 capture (../shared/reference).

For every ``vllm:`` family of the capture: the emulator exposes it with the same type, HELP text, label names
and (histograms) bucket edges; and it exposes no ``vllm:`` family the capture lacks. The capture was taken with
``--max-model-len 512``, which sets the 1-2-5 token buckets, so the emulator is built with the same length.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.core.buckets import buckets_1_2_5
from workers.metrics import CacheConfig, EngineGauges, FinishedRequest, WorkerMetrics

SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "vllm-metrics-sample-0.32.txt"
# Captured from a real vLLM 0.32 NixlConnector pair on CPU (`pdscale worker --engine vllm --pd-pair`, max-model-len
# 512) after one request through both legs.
PD_CAPTURES = Path(__file__).resolve().parents[1] / "data"


def schema(text: str) -> dict[str, dict[str, object]]:
    """family name -> {type, help, labels (without le), buckets (histograms)} for the vllm: families."""
    out: dict[str, dict[str, object]] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("vllm:"):
            continue
        labels: set[str] = set()
        buckets: list[str] = []
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
            if s.name.endswith("_bucket"):
                le = s.labels["le"]
                if le not in buckets:
                    buckets.append(le)
        out[fam.name] = {"type": fam.type, "help": fam.documentation, "labels": sorted(labels), "buckets": buckets}
    return out


@pytest.fixture(scope="module")
def sample_schema() -> dict[str, dict[str, object]]:
    if not SAMPLE.is_file():
        pytest.fail(f"the real vLLM capture is missing: {SAMPLE} (it lives in the shared reference folder)")
    return schema(SAMPLE.read_text())


def emulator_text(observe: bool, kv_connector: str | None = None) -> str:
    metrics = WorkerMetrics(
        "tiny", 512,
        lambda: EngineGauges(running=1, waiting_capacity=2, waiting_deferred=1, kv_usage_frac=0.25,
                             preemptions_total=0),
        CacheConfig(block_size=16, num_gpu_blocks=4096, kv_cache_memory_bytes=134217728, max_num_seqs=8),
        kv_connector=kv_connector,
    )
    if observe:  # so every histogram prints its buckets (they print even when empty; this checks both)
        metrics.admitted(100, 0)
        metrics.first_token(0.0, 0.05, 100, 0)
        metrics.next_token(0.01)
        metrics.iteration(101)
        metrics.finished(FinishedRequest("length", 100, 2, 2, 2, 0.0, 0.001, 0.05, 0.06, 0.06, 0))
        if metrics.nixl is not None:
            metrics.nixl.transfer(0.02, 7, 16 * 4096)
    return generate_latest(metrics.registry).decode()


@pytest.mark.parametrize("observe", [False, True], ids=["fresh", "after-a-request"])
def test_every_vllm_family_of_the_capture_matches(sample_schema: dict[str, dict[str, object]], observe: bool) -> None:
    ours = schema(emulator_text(observe))
    missing = sorted(set(sample_schema) - set(ours))
    extra = sorted(set(ours) - set(sample_schema))
    assert not missing, f"families the real vLLM has and the emulator lacks: {missing}"
    assert not extra, f"families the emulator invents: {extra}"
    diffs = [
        f"{name}.{key}: vllm {sample_schema[name][key]!r} != emulator {ours[name][key]!r}"
        for name in sorted(sample_schema)
        for key in ("type", "help", "labels", "buckets")
        if sample_schema[name][key] != ours[name][key]
    ]
    assert not diffs, "\n".join(diffs)


def test_the_families_pdscale_and_the_gateway_read_are_among_them(sample_schema: dict[str, dict[str, object]]) -> None:
    read = {
        "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
        "vllm:request_time_per_output_token_seconds", "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
        "vllm:request_inference_time_seconds", "vllm:num_requests_running", "vllm:num_requests_waiting",
        "vllm:num_requests_waiting_by_reason", "vllm:kv_cache_usage_perc", "vllm:request_success",
        "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:prompt_tokens_by_source", "vllm:num_preemptions",
        "vllm:iteration_tokens_total", "vllm:cache_config_info",
    }
    assert read <= set(sample_schema)
    assert read <= set(schema(emulator_text(False)))


def test_token_buckets_follow_max_model_len() -> None:
    assert buckets_1_2_5(512) == [1, 2, 5, 10, 20, 50, 100, 200, 500]
    assert buckets_1_2_5(8192)[-1] == 5000
    assert buckets_1_2_5(1) == [1]


@pytest.mark.parametrize(("capture", "kv_connector"), [
    ("vllm-0.32-pd-prefill-metrics.txt", "kv_producer"),
    ("vllm-0.32-pd-decode-metrics.txt", "kv_consumer"),
])
@pytest.mark.parametrize("observe", [False, True], ids=["fresh", "after-a-request"])
def test_pd_roles_match_a_real_nixl_pair(capture: str, kv_connector: str, observe: bool) -> None:
    real = schema((PD_CAPTURES / capture).read_text())
    ours = schema(emulator_text(observe, kv_connector))
    assert sorted(set(real) - set(ours)) == [], "families the real P/D instance has and the emulator lacks"
    assert sorted(set(ours) - set(real)) == [], "families the emulator invents"
    diffs = [f"{n}.{k}: vllm {real[n][k]!r} != emulator {ours[n][k]!r}"
             for n in sorted(real) for k in ("type", "help", "labels", "buckets") if real[n][k] != ours[n][k]]
    assert not diffs, "\n".join(diffs)

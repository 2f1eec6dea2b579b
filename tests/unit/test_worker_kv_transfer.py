"""The P/D hand-off on the wire: the emulated prefill worker's kv_transfer_params against a real vLLM 0.32 prefill
instance's answer (tests/data/vllm-0.32-pd-prefill-response.json), and role resolution from vLLM's flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.workers import json_shape
from workers.kv_transfer import KVProducer, parse_kv_transfer_config, resolve_role, validate_remote_prefill

REAL = json.loads((Path(__file__).resolve().parents[1] / "data" / "vllm-0.32-pd-prefill-response.json").read_text())


def test_prefill_answer_has_nixl_connectors_fields() -> None:
    producer = KVProducer(host="localhost", block_size=32)
    ours = producer.params_for("req123", REAL["usage"]["prompt_tokens"])
    real = REAL["kv_transfer_params"]
    assert json_shape(ours) == json_shape(real)
    assert ours["remote_block_ids"] == [[0, 1]] and real["remote_block_ids"] == [[1, 2]]  # 36 tokens, 2 blocks
    assert ours["remote_request_id"].startswith("cmpl-req123-0-")
    assert {k: ours[k] for k in ("do_remote_prefill", "do_remote_decode", "remote_host", "remote_port", "tp_size",
                                 "remote_num_tokens", "transfer_mode")} == {
        k: real[k] for k in ("do_remote_prefill", "do_remote_decode", "remote_host", "remote_port", "tp_size",
                             "remote_num_tokens", "transfer_mode")}
    assert validate_remote_prefill(ours) is None
    assert "remote_block_ids" in (validate_remote_prefill({"do_remote_prefill": True, "remote_engine_id": "e"}) or "")
    # block ids are not reused while the worker lives
    assert producer.params_for("r2", 10)["remote_block_ids"] == [[2]]


@pytest.mark.parametrize(("role", "config", "expected"), [
    (None, None, "aggregated"),
    (None, '{"kv_connector":"NixlConnector","kv_role":"kv_producer"}', "prefill"),
    (None, '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}', "decode"),
    (None, '{"kv_connector":"NixlConnector","kv_role":"kv_both"}', "both"),
    ("decode", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}', "decode"),
    ("agg", None, "aggregated"),
])
def test_role_from_flags(role: str | None, config: str | None, expected: str) -> None:
    assert resolve_role(role, parse_kv_transfer_config(config)) == expected


@pytest.mark.parametrize(("role", "config", "message"), [
    ("prefill", '{"kv_role":"kv_consumer"}', "contradicts"),
    (None, "{not json", "not valid JSON"),
    (None, "[1]", "JSON object"),
    (None, '{"kv_role":"producer"}', "kv_role must be"),
    ("router", None, "--role must be"),
])
def test_bad_flags(role: str | None, config: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_role(role, parse_kv_transfer_config(config))

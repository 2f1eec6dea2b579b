"""The P/D hand-off on the wire: ``--kv-transfer-config`` and the ``kv_transfer_params`` NixlConnector exchanges.

A P/D proxy (vllm-router, llm-d's sidecar, pdscale's proxy) sends the prompt to a prefill worker with
``max_tokens=1`` and ``kv_transfer_params={"do_remote_decode": true, ...}``; the prefill worker answers with
top-level ``kv_transfer_params`` naming where its KV blocks are (``do_remote_prefill: true``, engine id, block
ids, side-channel host/port, tp size); the proxy passes those to a decode worker with the original request
(reference/vllm-metrics.md §5). Field names are NixlConnector's ``request_finished`` return value.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["prefill", "decode", "aggregated", "both"]
# kv_both (llm-d's default): the proxy picks the role per request, so the worker serves either leg.
KV_ROLE_TO_ROLE: dict[str, Role] = {"kv_producer": "prefill", "kv_consumer": "decode", "kv_both": "both"}
DEFAULT_SIDE_CHANNEL_PORT = 5600  # vLLM's VLLM_NIXL_SIDE_CHANNEL_PORT default


def parse_kv_transfer_config(text: str | None) -> dict[str, Any] | None:
    """``--kv-transfer-config`` JSON (as vLLM takes it); a clear ValueError for anything else."""
    if text is None or not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--kv-transfer-config is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError("--kv-transfer-config must be a JSON object, e.g. "
                         '\'{"kv_connector":"NixlConnector","kv_role":"kv_producer"}\'')
    kv_role = config.get("kv_role")
    if kv_role is not None and kv_role not in ("kv_producer", "kv_consumer", "kv_both"):
        raise ValueError(f"--kv-transfer-config kv_role must be kv_producer, kv_consumer or kv_both, got {kv_role!r}")
    return config


def resolve_role(role: str | None, kv_config: Mapping[str, Any] | None) -> Role:
    """The worker's role: ``--role`` if given, else from ``kv_role`` (producer: prefill, consumer: decode)."""
    from_kv = KV_ROLE_TO_ROLE.get(str((kv_config or {}).get("kv_role")))
    if role is None:
        return from_kv or "aggregated"
    if role in ("agg", "aggregated"):
        return "aggregated"
    if role not in ("prefill", "decode", "both"):
        raise ValueError(f"--role must be prefill, decode, both or aggregated, got {role!r}")
    if from_kv is not None and from_kv != role and from_kv != "both":
        raise ValueError(f"--role {role} contradicts --kv-transfer-config kv_role {kv_config and kv_config['kv_role']}")
    return role  # type: ignore[return-value]


@dataclass
class KVProducer:
    """What a prefill worker puts in its answer's ``kv_transfer_params`` (one engine id per worker process)."""

    host: str
    port: int = DEFAULT_SIDE_CHANNEL_PORT
    block_size: int = 16
    tp_size: int = 1
    engine_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _next_block: int = 0

    @classmethod
    def from_env(cls, host: str, block_size: int) -> KVProducer:
        """Side-channel host/port as vLLM reads them (VLLM_NIXL_SIDE_CHANNEL_HOST / _PORT)."""
        side_host = os.environ.get("VLLM_NIXL_SIDE_CHANNEL_HOST") or (host if host not in ("", "0.0.0.0") else "localhost")
        port = int(os.environ.get("VLLM_NIXL_SIDE_CHANNEL_PORT", DEFAULT_SIDE_CHANNEL_PORT))
        return cls(host=side_host, port=port, block_size=block_size)

    def params_for(self, request_id: str, prompt_tokens: int) -> dict[str, Any]:
        """The answer's ``kv_transfer_params``, field for field as a real vLLM 0.32 prefill instance returns them
        (tests/data/vllm-0.32-pd-prefill-response.json): one block-id list per KV cache group."""
        blocks = max(1, -(-prompt_tokens // self.block_size))
        first = self._next_block
        self._next_block += blocks
        return {
            "do_remote_prefill": True,
            "do_remote_decode": False,
            "remote_block_ids": [list(range(first, first + blocks))],
            "remote_engine_id": self.engine_id,
            "remote_request_id": f"cmpl-{request_id}-0-{uuid.uuid4().hex[:8]}",
            "remote_host": self.host,
            "remote_port": self.port,
            "tp_size": self.tp_size,
            "dcp_size": 1,
            "pp_size": 1,
            "remote_num_tokens": prompt_tokens,
            "remote_blocks_expiry_time": None,
            "transfer_mode": "pull",
            "remote_prefill_cached_tokens": 0,
        }


def validate_remote_prefill(params: Mapping[str, Any]) -> str | None:
    """Why a decode leg's ``kv_transfer_params`` cannot be used, or None when they name a prefill worker's KV."""
    missing = [k for k in ("remote_engine_id", "remote_block_ids") if params.get(k) is None]
    if missing:
        return f"kv_transfer_params with do_remote_prefill need {', '.join(missing)}"
    return None

"""Response bodies and SSE chunks shaped like vLLM 0.32's OpenAI server (diffed against real vLLM in tests).

Chunks are plain dicts serialised with ``json.dumps``; the text of output tokens comes from ``workers.tokens``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from workers.protocol import GenerationRequest
from workers.tokens import OUTPUT_WORDS

VLLM_VERSION = "0.32.0"  # the vLLM release whose surface the emulated worker reproduces

DONE_EVENT = b"data: [DONE]\n\n"
_ESCAPED = {w: json.dumps(w)[1:-1].encode() for w in OUTPUT_WORDS}  # the synthetic output words, JSON-ready


def system_fingerprint(model_root: str) -> str:
    """vLLM's ``vllm-<version>-<8 hex>`` (a hash of the serving config; here of the model root)."""
    return f"vllm-{VLLM_VERSION}-{hashlib.sha256(model_root.encode()).hexdigest()[:8]}"


def dumps(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON, as vLLM's pydantic models serialise."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


def response_id(req: GenerationRequest) -> str:
    return ("chatcmpl-" if req.kind == "chat" else "cmpl-") + req.request_id


def usage(prompt_tokens: int, completion_tokens: int, *, details: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if details:
        out["prompt_tokens_details"] = None
        out["completion_tokens_details"] = None
    return out


class ChunkWriter:
    """Builds the SSE chunks of one streamed request (completions or chat), field for field as vLLM 0.32."""

    def __init__(self, req: GenerationRequest, fingerprint: str) -> None:
        self.req = req
        self.fingerprint = fingerprint
        self.head = {
            "id": response_id(req),
            "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": req.model,
        }
        # Every chunk but the last differs only in its text: encode it once, splice the text in (the hot path).
        marker = "\x00"
        template = sse({**self.head, "choices": [self._choice(marker, None)]})
        self._before_text, self._after_text = template.split(json.dumps(marker).strip('"').encode(), 1)

    def role_chunk(self) -> bytes:
        """Chat only: the first chunk (delta role, empty content), sent once the first token exists (vLLM)."""
        return sse({
            **self.head,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}],
            "prompt_token_ids": None,
            "prompt_text": None,
        })

    def token_chunk(self, text: str, finish_reason: str | None, completion_tokens: int) -> bytes:
        if finish_reason is None and not self.req.continuous_usage_stats:
            escaped = _ESCAPED.get(text)
            if escaped is None:
                escaped = json.dumps(text, ensure_ascii=False)[1:-1].encode()
            return self._before_text + escaped + self._after_text
        chunk: dict[str, Any] = {**self.head, "choices": [self._choice(text, finish_reason)]}
        if self.req.continuous_usage_stats:
            chunk["usage"] = usage(self.req.prompt_tokens, completion_tokens, details=False)
        if finish_reason is not None and not self.req.include_usage:
            chunk["system_fingerprint"] = self.fingerprint
        return sse(chunk)

    def _choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        choice: dict[str, Any]
        if self.req.kind == "chat":
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
            if finish_reason is not None:
                choice["stop_reason"] = None
            choice["token_ids"] = None
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                      "stop_reason": None, "prompt_token_ids": None, "token_ids": None}
        return choice

    def usage_chunk(self, completion_tokens: int) -> bytes:
        """The final chunk with empty ``choices`` and the totals (``stream_options.include_usage``)."""
        return sse({
            **self.head,
            "choices": [],
            "usage": usage(self.req.prompt_tokens, completion_tokens, details=False),
            "system_fingerprint": self.fingerprint,
        })


def error_event(message: str, err_type: str, code: int) -> bytes:
    """An error inside an SSE stream (what vLLM sends when a stream is cut server-side)."""
    return sse({"error": {"message": message, "type": err_type, "param": None, "code": code}})


def full_body(
    req: GenerationRequest, text: str, completion_tokens: int, finish_reason: str | None,
    kv_transfer_params: Mapping[str, Any] | None, fingerprint: str,
) -> dict[str, Any]:
    """The non-streaming body of /v1/completions or /v1/chat/completions, field for field as vLLM 0.32."""
    kv = dict(kv_transfer_params) if kv_transfer_params is not None else None
    head = {"id": response_id(req), "object": "chat.completion" if req.kind == "chat" else "text_completion",
            "created": int(time.time()), "model": req.model}
    tail = {"service_tier": None, "system_fingerprint": fingerprint,
            "usage": usage(req.prompt_tokens, completion_tokens)}
    if req.kind == "chat":
        message = {"role": "assistant", "content": text, "refusal": None, "annotations": None, "audio": None,
                   "function_call": None, "reasoning": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason,
                  "stop_reason": None, "token_ids": None, "routed_experts": None}
        return {**head, "choices": [choice], **tail, "prompt_logprobs": None, "prompt_token_ids": None,
                "prompt_text": None, "kv_transfer_params": kv, "ec_transfer_params": None, "metrics": None}
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason, "stop_reason": None,
              "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None}
    return {**head, "choices": [choice], **tail, "kv_transfer_params": kv, "ec_transfer_params": None,
            "metrics": None}


def models_body(served_model_names: list[str], root: str, max_model_len: int, created_s: int) -> dict[str, Any]:
    """/v1/models: vLLM's ModelCard list (``root`` is what ``vllm bench serve`` reads for its tokenizer)."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created_s,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex[:16]}",
                        "object": "model_permission",
                        "created": created_s,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in served_model_names
        ],
    }

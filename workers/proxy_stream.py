"""OpenAI/vLLM server-sent events as the proxy relays them: splitting a byte stream into events, telling token
events from the rest, and folding a stream back into the non-streaming body a client asked for.

vLLM writes each event as ``data: <json>\\n\\n`` and ends with ``data: [DONE]`` (reference/vllm-metrics.md §7).
A token event is a chunk whose ``choices`` is non-empty, as ``vllm bench serve`` counts it; the chat stream's
first chunk (``delta.role`` = ``assistant``, no text) is sent together with the first token's chunk and is not
counted, so it adds no near-zero inter-token sample. The usage chunk has empty ``choices``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DONE = "[DONE]"


@dataclass(frozen=True)
class SseEvent:
    raw: bytes  # the event as received, without the blank line that ends it
    data: str | None  # the joined ``data:`` lines; None for an event without data (a comment)


def _parse_event(block: bytes) -> SseEvent:
    lines = block.replace(b"\r\n", b"\n").split(b"\n")
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    return SseEvent(block, b"\n".join(data).decode("utf-8", errors="replace") if data else None)


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """Events from a byte stream arriving in arbitrary pieces. A trailing event without its blank line (the
    stream was cut) is NOT yielded: a half-received event is not an event."""
    buf = b""
    async for piece in chunks:
        buf += piece
        while True:
            idx_lf = buf.find(b"\n\n")
            idx_crlf = buf.find(b"\r\n\r\n")
            if idx_lf < 0 and idx_crlf < 0:
                break
            if idx_crlf >= 0 and (idx_lf < 0 or idx_crlf < idx_lf):
                block, buf = buf[:idx_crlf], buf[idx_crlf + 4 :]
            else:
                block, buf = buf[:idx_lf], buf[idx_lf + 2 :]
            if block.strip():
                yield _parse_event(block)


def is_token_event(chunk: Mapping[str, Any]) -> bool:
    """A chunk that carries an output event (non-empty ``choices``), not the chat stream's role-only opener."""
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list):
        return False
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, Mapping) else None
        if (
            isinstance(delta, Mapping)
            and "role" in delta
            and not delta.get("content")
            and not choice.get("finish_reason")
        ):
            continue
        return True
    return False


def sse_bytes(payload: Mapping[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def error_body(message: str, status: int, err_type: str | None = None) -> dict[str, Any]:
    """vLLM's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    default_type = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}.get(
        status, "InternalServerError" if status >= 500 else "BadRequestError"
    )
    return {"error": {"message": message, "type": err_type or default_type, "param": None, "code": status}}


@dataclass
class StreamFolder:
    """Rebuilds the non-streaming response body from the chunks of a stream (text choices only)."""

    chat: bool
    id: str | None = None
    created: int | None = None
    model: str | None = None
    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, Any] = field(default_factory=dict)
    stop: dict[int, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, chunk: Mapping[str, Any]) -> None:
        self.id = self.id or chunk.get("id")
        self.created = self.created or chunk.get("created")
        self.model = self.model or chunk.get("model")
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        if chunk.get("kv_transfer_params") is not None:
            self.extra["kv_transfer_params"] = chunk["kv_transfer_params"]
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            parts = self.texts.setdefault(index, [])
            if piece:
                parts.append(piece)
            if choice.get("finish_reason") is not None:
                self.finish[index] = choice.get("finish_reason")
            if "stop_reason" in choice:
                self.stop[index] = choice.get("stop_reason")

    def body(self) -> dict[str, Any]:
        indices = sorted(self.texts) or [0]
        choices: list[dict[str, Any]] = []
        for i in indices:
            text = "".join(self.texts.get(i, []))
            if self.chat:
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text, "tool_calls": []},
                        "logprobs": None,
                        "finish_reason": self.finish.get(i),
                        "stop_reason": self.stop.get(i),
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": self.finish.get(i),
                        "stop_reason": self.stop.get(i),
                    }
                )
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
            **self.extra,
        }


# Request fields a folded (internally streamed) answer cannot reproduce: such non-streaming requests are passed
# through as they are, and give the proxy an e2e sample but no TTFT/ITL.
UNFOLDABLE_FIELDS = ("logprobs", "top_logprobs", "prompt_logprobs", "echo", "tools", "functions", "best_of")


def foldable(body: Mapping[str, Any]) -> bool:
    return not any(body.get(k) for k in UNFOLDABLE_FIELDS)

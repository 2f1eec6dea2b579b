"""OpenAI-compatible request parsing and vLLM's error bodies, for the emulated worker.

Parsing turns a JSON body into a ``GenerationRequest`` (token counts by ``workers.tokens``' rule) or raises
``APIError`` carrying vLLM's status code, error type and message, so a client sees what `vllm serve` would say.
Length rules are vLLM's: without ``max_tokens`` a request may generate up to ``max_model_len - prompt_tokens``;
a prompt that leaves no room for one output token, or a max_tokens beyond the context, is a 400.

The emulated model never emits an end-of-sequence token: every request generates exactly its max_tokens
(finish_reason ``length``), as a real model does with ``ignore_eos``. ``min_tokens`` is validated as vLLM does
(0 <= min_tokens <= max_tokens) and is then always met.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from workers.tokens import chat_prompt_tokens, count_text_tokens

RequestKind = Literal["completion", "chat"]


class APIError(Exception):
    """An error answered in vLLM's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, err_type: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type or error_type_for(status)
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, err_type=self.err_type, param=self.param)


def error_type_for(status: int) -> str:
    """vLLM's error ``type`` for a status: the OpenAI SDK's exception names (``BadRequestError`` ...)."""
    return {
        400: "BadRequestError",
        401: "AuthenticationError",
        404: "NotFoundError",
        405: "MethodNotAllowedError",
        413: "BadRequestError",
        422: "BadRequestError",
        500: "InternalServerError",
        501: "NotImplementedError",
        503: "ServiceUnavailableError",
    }.get(status, HTTPStatus(status).phrase.replace(" ", "") + "Error")


def error_body(status: int, message: str, *, err_type: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type or error_type_for(status), "param": param, "code": status}}


@dataclass(frozen=True)
class GenerationRequest:
    """One parsed generation request, with its lengths resolved against the worker's limits."""

    kind: RequestKind
    model: str
    prompt_tokens: int
    max_tokens: int  # what will be generated (the emulated model never stops early)
    max_tokens_param: int | None  # as the client sent it (None: absent)
    min_tokens: int
    stream: bool
    include_usage: bool
    continuous_usage_stats: bool
    request_id: str
    kv_transfer_params: Mapping[str, Any] | None = None

    @property
    def wants_remote_decode(self) -> bool:
        """A P/D proxy's prefill leg: the client will fetch the KV from us."""
        return bool(self.kv_transfer_params and self.kv_transfer_params.get("do_remote_decode"))

    @property
    def has_remote_prefill(self) -> bool:
        """A P/D proxy's decode leg: the prompt's KV is to be pulled from a prefill worker."""
        return bool(self.kv_transfer_params and self.kv_transfer_params.get("do_remote_prefill"))


def validation_error(loc: str, err: str, msg: str, value: Any, ctx: Mapping[str, Any] | None = None) -> APIError:
    """A request-schema error as vLLM's FastAPI layer words it: type ``Bad Request``, param ``body.<field>``."""
    detail: dict[str, Any] = {"type": err, "loc": loc, "msg": msg, "input": _describe(value)}
    if ctx:
        detail["ctx"] = dict(ctx)
    return APIError(400, f"1 validation error:\n  {detail}", err_type="Bad Request", param=loc)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"<dict of {len(value)} items>"
    if isinstance(value, list):
        return f"<list of {len(value)} items>"
    return str(value)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or vLLM's 400 for malformed JSON / a non-object."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation_error(
            "body", "json_invalid", "JSON decode error", {}, {"error": getattr(exc, "msg", str(exc))}
        ) from None
    if not isinstance(body, dict):
        raise validation_error(
            "body", "model_attributes_type", "Input should be a valid dictionary or object to extract fields from", body
        )
    return body


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation_error(
            f"body.{key}", "int_parsing", "Input should be a valid integer, unable to parse string as an integer", value
        )
    return value


def _with_param(message: str, param: str, value: Any = None) -> str:
    return f"{message} (parameter={param}" + (f", value={value})" if value is not None else ")")


def _prompt_tokens_of_completion(prompt: Any) -> int:
    """Token count of a completions ``prompt``: a string, a list of token ids, or a one-element list of either."""
    empty = APIError(400, _with_param("Either prompt or prompt_embeds must be provided and non-empty.", "prompt"),
                     param="prompt")
    if isinstance(prompt, str):
        if not prompt:
            raise empty
        return count_text_tokens(prompt)
    if not isinstance(prompt, list) or not prompt:
        raise empty
    if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        for i, t in enumerate(prompt):
            if t < 0:
                raise validation_error(f"body.prompt.{i}", "greater_than_equal",
                                       "Input should be greater than or equal to 0", t, {"ge": 0})
        return len(prompt)
    if len(prompt) == 1:
        return _prompt_tokens_of_completion(prompt[0])
    raise APIError(400, "the emulated worker serves one prompt per request (batched prompts are not supported)",
                   param="prompt")


def check_model(body: Mapping[str, Any], served_model_names: Sequence[str]) -> Any:
    """The body's ``model`` (None when absent), or vLLM's 404 when it names no served model."""
    model = body.get("model")
    if model is not None and model not in served_model_names:
        raise APIError(404, f"The model `{model}` does not exist. Valid aliases: {', '.join(served_model_names)}.",
                       err_type="NotFoundError", param="model")
    return model


def parse_generation(
    kind: RequestKind,
    body: Mapping[str, Any],
    *,
    served_model_names: Sequence[str],
    max_model_len: int,
    request_id: str | None = None,
) -> GenerationRequest:
    """Validate a /v1/completions or /v1/chat/completions body the way vLLM does."""
    model = check_model(body, served_model_names)
    if kind == "completion":
        prompt_tokens = _prompt_tokens_of_completion(body.get("prompt"))
    else:
        messages = body.get("messages")
        if messages is None:
            raise validation_error("body.messages", "missing", "Field required", body)
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise validation_error("body.messages", "list_type", "Input should be a valid list", messages)
        if not messages:
            raise APIError(400, "Cannot apply chat template to an empty conversation. Provide at least one message.")
        prompt_tokens = chat_prompt_tokens(messages, add_generation_prompt=bool(body.get("add_generation_prompt", True)))
    n = _optional_int(body, "n")
    if n is not None and n != 1:
        raise APIError(400, "the emulated worker supports n=1 only", param="n")

    max_key = "max_tokens"
    max_tokens_param = None
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        max_key = "max_completion_tokens"
        max_tokens_param = _optional_int(body, max_key)
    else:
        max_tokens_param = _optional_int(body, "max_tokens")
    min_tokens = _optional_int(body, "min_tokens") or 0
    if prompt_tokens > max_model_len:
        if kind == "chat":
            prompt_tokens = max_model_len + 1  # vLLM stops counting a chat prompt there ("at least")
        raise APIError(
            400,
            _with_param(
                f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
                f"{'at least ' if kind == 'chat' else ''}{prompt_tokens} input tokens, which exceeds this limit even "
                "without any output tokens. Please reduce the length of the input prompt.",
                "input_tokens", prompt_tokens,
            ),
            param="input_tokens",
        )
    if max_tokens_param is not None and max_tokens_param > max_model_len:
        raise APIError(
            400,
            _with_param(f"{max_key}={max_tokens_param} cannot be greater than max_model_len={max_model_len}. "
                        "Please request fewer output tokens.", max_key, max_tokens_param),
            param=max_key,
        )
    # vLLM: without max_tokens, or with more than the context leaves, generate up to the context's end.
    room = max_model_len - prompt_tokens
    max_tokens = room if max_tokens_param is None else min(max_tokens_param, room)
    if max_tokens < 1:
        shown = max_tokens if max_tokens_param is None or max_tokens_param >= 1 else max_tokens_param
        raise APIError(400, _with_param(f"max_tokens must be at least 1, got {shown}.", "max_tokens", shown),
                       param="max_tokens")
    if min_tokens < 0:
        raise APIError(400, f"min_tokens must be greater than or equal to 0, got {min_tokens}.")
    if min_tokens > max_tokens:
        raise APIError(400, f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")

    stream = bool(body.get("stream", False))
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, Mapping):
        raise validation_error("body.stream_options", "model_type", "Input should be a valid dictionary", stream_options)
    if stream_options and not stream:
        raise APIError(400, _with_param("Stream options can only be defined when `stream=True`.", "stream_options"),
                       param="stream_options")
    include_usage = bool(stream_options and stream_options.get("include_usage"))
    continuous = bool(stream_options and stream_options.get("continuous_usage_stats"))
    kv_params = body.get("kv_transfer_params")
    if kv_params is not None and not isinstance(kv_params, Mapping):
        raise validation_error("body.kv_transfer_params", "dict_type", "Input should be a valid dictionary", kv_params)
    return GenerationRequest(
        kind=kind,
        model=str(model) if model is not None else served_model_names[0],
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        min_tokens=min_tokens,
        stream=stream,
        include_usage=include_usage,
        continuous_usage_stats=continuous,
        request_id=request_id or uuid.uuid4().hex[:16],
        kv_transfer_params=kv_params,
    )

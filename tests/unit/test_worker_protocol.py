"""Request parsing of the emulated worker: token-count rules and vLLM 0.32's errors (status, type, param, message).

The expected messages are the ones a real vLLM 0.32 answered (tests/integration/test_real_vllm_diff.py diffs the
live servers; these pin the emulator's side fast).
"""

from __future__ import annotations

import pytest

from workers.protocol import APIError, parse_generation, parse_json_body
from workers.tokens import chat_prompt_tokens, count_text_tokens, output_text

MAX_LEN = 512


def parse(kind: str, body: dict, **kw: object):
    return parse_generation(kind, body, served_model_names=("tiny",), max_model_len=MAX_LEN, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("a b c", 3), ("Hello, world!", 4), ("word " * 37, 37), ("", 0), ("x" * 40, 3), ("  \n\t ", 0)],
)
def test_text_token_rule(text: str, tokens: int) -> None:
    assert count_text_tokens(text) == tokens


def test_output_text_recounts_to_completion_tokens() -> None:
    for n in (1, 7, 64, 65, 300):
        assert count_text_tokens(output_text(0, n)) == n


def test_chat_prompt_rule() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    # content 2 + 2, five template tokens per message, five for the generation prompt
    assert chat_prompt_tokens(messages) == 4 + 2 * 5 + 5


def test_token_id_prompt_is_exact_and_max_tokens_default_fills_the_context() -> None:
    req = parse("completion", {"model": "tiny", "prompt": list(range(500))})
    assert (req.prompt_tokens, req.max_tokens, req.max_tokens_param) == (500, 12, None)
    req = parse("completion", {"prompt": [[1, 2, 3]], "max_tokens": 4, "stream": True,
                               "stream_options": {"include_usage": True}})
    assert (req.prompt_tokens, req.max_tokens, req.include_usage, req.model) == (3, 4, True, "tiny")


def test_max_tokens_beyond_the_context_left_is_clamped_like_vllm() -> None:
    req = parse("completion", {"prompt": [5] * 10, "max_tokens": 505})
    assert req.max_tokens == MAX_LEN - 10


def test_chat_max_completion_tokens_wins() -> None:
    req = parse("chat", {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2,
                         "max_tokens": 9})
    assert req.max_tokens == 2


def test_kv_transfer_params_flags() -> None:
    prefill_leg = parse("completion", {"prompt": "hi", "max_tokens": 1, "kv_transfer_params": {
        "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None}})
    assert prefill_leg.wants_remote_decode and not prefill_leg.has_remote_prefill
    decode_leg = parse("completion", {"prompt": "hi", "max_tokens": 3, "kv_transfer_params": {
        "do_remote_prefill": True, "remote_engine_id": "e", "remote_block_ids": [1]}})
    assert decode_leg.has_remote_prefill and not decode_leg.wants_remote_decode


ERRORS = [
    # (name, kind, body, status, type, param, message start)
    ("unknown model", "completion", {"model": "nope", "prompt": "hi"}, 404, "NotFoundError", "model",
     "The model `nope` does not exist. Valid aliases: tiny."),
    ("negative max_tokens", "completion", {"prompt": "hi", "max_tokens": -1}, 400, "BadRequestError", "max_tokens",
     "max_tokens must be at least 1, got -1. (parameter=max_tokens, value=-1)"),
    ("zero max_tokens", "completion", {"prompt": "hi", "max_tokens": 0}, 400, "BadRequestError", "max_tokens",
     "max_tokens must be at least 1, got 0."),
    ("prompt over the context", "completion", {"prompt": [5] * 600, "max_tokens": 3}, 400, "BadRequestError",
     "input_tokens", "This model's maximum context length is 512 tokens. However, your prompt contains 600 input"),
    ("prompt fills the context", "completion", {"prompt": [5] * 512}, 400, "BadRequestError", "max_tokens",
     "max_tokens must be at least 1, got 0."),
    ("max_tokens over max_model_len", "completion", {"prompt": [5] * 10, "max_tokens": 600}, 400,
     "BadRequestError", "max_tokens", "max_tokens=600 cannot be greater than max_model_len=512."),
    ("chat max_completion_tokens over", "chat", {"messages": [{"role": "user", "content": "hi"}],
     "max_completion_tokens": 600}, 400, "BadRequestError", "max_completion_tokens",
     "max_completion_tokens=600 cannot be greater than max_model_len=512."),
    ("chat prompt over", "chat", {"messages": [{"role": "user", "content": "hi " * 600}], "max_tokens": 2}, 400,
     "BadRequestError", "input_tokens", "This model's maximum context length is 512 tokens. However, your prompt "
     "contains at least 513 input tokens"),
    ("no prompt", "completion", {"max_tokens": 3}, 400, "BadRequestError", "prompt",
     "Either prompt or prompt_embeds must be provided and non-empty."),
    ("empty prompt", "completion", {"prompt": "", "max_tokens": 3}, 400, "BadRequestError", "prompt",
     "Either prompt or prompt_embeds"),
    ("no messages", "chat", {"max_tokens": 3}, 400, "Bad Request", "body.messages", "1 validation error:"),
    ("empty messages", "chat", {"messages": []}, 400, "BadRequestError", None,
     "Cannot apply chat template to an empty conversation."),
    ("min_tokens over max", "completion", {"prompt": "hi", "max_tokens": 3, "min_tokens": 5}, 400,
     "BadRequestError", None, "min_tokens must be less than or equal to max_tokens=3, got 5."),
    ("negative min_tokens", "completion", {"prompt": "hi", "max_tokens": 3, "min_tokens": -1}, 400,
     "BadRequestError", None, "min_tokens must be greater than or equal to 0, got -1."),
    ("stream_options without stream", "completion", {"prompt": "hi", "stream_options": {"include_usage": True}},
     400, "BadRequestError", "stream_options", "Stream options can only be defined when `stream=True`."),
    ("max_tokens not an int", "completion", {"prompt": "hi", "max_tokens": "x"}, 400, "Bad Request",
     "body.max_tokens", "1 validation error:"),
    ("negative token id", "completion", {"prompt": [-1, 5], "max_tokens": 1}, 400, "Bad Request", "body.prompt.0",
     "1 validation error:"),
]


@pytest.mark.parametrize(("name", "kind", "body", "status", "err_type", "param", "message"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_errors_like_vllm(name: str, kind: str, body: dict, status: int, err_type: str, param: str | None,
                          message: str) -> None:
    with pytest.raises(APIError) as info:
        parse(kind, body)
    err = info.value.body()["error"]
    assert (info.value.status, err["type"], err["param"], err["code"]) == (status, err_type, param, status)
    assert err["message"].startswith(message), err["message"]


@pytest.mark.parametrize(("raw", "param"), [(b"{not json", "body"), (b"[1, 2]", "body"), (b"\xff\xfe", "body")])
def test_malformed_bodies(raw: bytes, param: str) -> None:
    with pytest.raises(APIError) as info:
        parse_json_body(raw)
    err = info.value.body()["error"]
    assert (info.value.status, err["type"], err["param"]) == (400, "Bad Request", param)

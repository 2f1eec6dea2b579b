"""The emulated worker's tokenizer stand-in: deterministic token COUNTS, synthetic token TEXT.

The emulator has no model vocabulary, but every count it reports (``usage``, ``vllm:prompt_tokens_total``, the
scheduler's work) must agree with what the request said, so a load generator can send prompts of known length:

* a prompt given as a list of token ids has exactly that many tokens (the exact way; ids are not checked
  against a vocabulary beyond being non-negative integers);
* a text prompt has one token per piece matched by ``TOKEN_PATTERN``: each run of at most
  ``MAX_WORD_CHARS`` letters/digits/underscores, and each other non-space character. ``"a b c"`` is 3 tokens,
  ``"Hello, world!"`` is 4, ``"word " * n`` is n;
* a chat prompt is the text ``<|role|>\\n{content}\\n`` per message plus ``<|assistant|>\\n`` (the generation
  prompt), counted by the same rule: content tokens + 5 per message with a one-word role + 5 (see ``chat_prompt_tokens``);
* generated text is one short word per output token (``" w<k>"``), so re-counting the output text with the rule
  above gives exactly ``completion_tokens``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

MAX_WORD_CHARS = 16
TOKEN_PATTERN = re.compile(r"\w{1,16}|[^\w\s]")  # 16 = MAX_WORD_CHARS
CHAT_TEMPLATE_MESSAGE = "<|{role}|>\n{content}\n"
CHAT_GENERATION_PROMPT = "<|assistant|>\n"
OUTPUT_WORDS = tuple(f" w{k}" for k in range(64))


def count_text_tokens(text: str) -> int:
    """Tokens in ``text`` by the documented rule (words of <= 16 word characters, each punctuation mark)."""
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or OpenAI's list of parts (text parts are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return str(content)


def chat_prompt_text(messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
    """The prompt a chat request becomes under the emulator's template (the one ``build_tiny_llama`` ships)."""
    text = "".join(
        CHAT_TEMPLATE_MESSAGE.format(role=str(m.get("role", "")), content=message_text(m.get("content")))
        for m in messages
    )
    return text + (CHAT_GENERATION_PROMPT if add_generation_prompt else "")


def chat_prompt_tokens(messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> int:
    """Prompt tokens of a chat request (content tokens + 5 per message with a one-word role, + 5)."""
    return count_text_tokens(chat_prompt_text(messages, add_generation_prompt=add_generation_prompt))


def synthetic_token_ids(text: str, vocab_size: int = 32000) -> list[int]:
    """Stand-in token ids for /tokenize: one per counted piece, a stable hash of the piece (no real vocabulary)."""
    return [zlib.crc32(m.group().encode()) % vocab_size for m in TOKEN_PATTERN.finditer(text)]


def detokenize(token_ids: list[int]) -> str:
    """Stand-in text for /detokenize: one word per id, so it re-counts to ``len(token_ids)``."""
    return "".join(output_token_text(t) for t in token_ids)


def output_token_text(index: int) -> str:
    """The synthetic text of output token ``index`` (0-based): one word, so it re-counts as one token."""
    return OUTPUT_WORDS[index % len(OUTPUT_WORDS)]


def output_text(start: int, stop: int) -> str:
    """The text of output tokens ``start`` .. ``stop - 1``."""
    return "".join(output_token_text(i) for i in range(start, stop))

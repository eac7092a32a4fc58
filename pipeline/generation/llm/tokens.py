"""Offline token counting with ``bpe_openai`` (bundled cl100k_base / o200k_base).

``tiktoken`` downloads its encodings at run time and fails without internet; bpe_openai
ships them inside the wheel, so counting works on an air-gapped worker. Encodings load
lazily (about 0.1 s each) and are cached per process.

Models outside the OpenAI families (Claude, Llama, local models) have their own
tokenizers; for them o200k_base is a stated approximation used for budgets and rate
limits, not for billing (billing uses the upstream ``usage`` block).
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from pipeline.errors import InvalidInput

if TYPE_CHECKING:
    from bpe_openai import Encoding

    from pipeline.generation.llm.base import ChatMessage

#: OpenAI cookbook ("How to count tokens with tiktoken") constants for chat models.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

DEFAULT_ENCODING = "o200k_base"
#: bpe_openai refuses inputs of 1M characters or 200k tokens in one call, so long texts
#: are encoded in pieces cut just before whitespace (where the pre-tokenizer cuts anyway).
_PIECE_CHARS = 100_000

_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-")


def encoding_name_for_model(model: str | None) -> str:
    """cl100k_base for GPT-4 / 3.5 and embeddings, o200k_base for everything newer or unknown."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    if name in ("cl100k_base", "o200k_base"):
        return name
    if name == "gpt-4" or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return DEFAULT_ENCODING


_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _encoding(name: str) -> Encoding:
    # bpe_openai 0.1.4 reads its bundled data with the legacy importlib.resources.open_binary,
    # which warns on Python 3.11+; that warning is theirs to fix, not a reason to fail a job.
    with _LOAD_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="open_binary is deprecated", category=DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding(name)


def _pieces(text: str) -> Iterator[str]:
    start = 0
    while len(text) - start > _PIECE_CHARS:
        end = start + _PIECE_CHARS
        cut = max(text.rfind(" ", start + 1, end), text.rfind("\n", start + 1, end))
        if cut <= start:
            cut = end
        yield text[start:cut]
        start = cut
    yield text[start:]


def encode(text: str, model: str | None = None) -> list[int]:
    """Token ids; special-token text such as ``<|endoftext|>`` is encoded as plain text."""
    enc = _encoding(encoding_name_for_model(model))
    out: list[int] = []
    for piece in _pieces(text):
        out.extend(enc.encode_ordinary(piece))
    return out


def count_tokens(text: str, model: str | None = None) -> int:
    return len(encode(text, model)) if text else 0


def _fields(message: ChatMessage | Mapping[str, object]) -> Iterable[tuple[str, str]]:
    if isinstance(message, Mapping):
        return ((str(k), str(v)) for k, v in message.items() if v is not None)
    return (("role", message.role), ("content", message.content))


def count_messages(messages: Iterable[ChatMessage | Mapping[str, object]], model: str | None = None) -> int:
    """Prompt tokens of a chat request as the cookbook counts them (3 per message + 3 to prime)."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in _fields(message):
            total += count_tokens(value, model)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def truncate_to_tokens(text: str, n: int, model: str | None = None) -> str:
    """The longest prefix of ``text`` that is at most ``n`` tokens, cut on a character boundary."""
    if n < 0:
        raise InvalidInput("truncate_to_tokens: n must be >= 0")
    if n == 0 or not text:
        return ""
    enc = _encoding(encoding_name_for_model(model))
    kept: list[int] = []
    for piece in _pieces(text):
        kept.extend(enc.encode_ordinary(piece))
        if len(kept) > n:
            break
    else:
        return text
    return enc.decode_bytes(kept[:n]).decode("utf-8", errors="ignore")

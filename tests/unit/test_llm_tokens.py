"""Offline token counting with bpe_openai."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.errors import InvalidInput
from pipeline.generation.llm.base import ChatMessage
from pipeline.generation.llm.tokens import (
    count_messages,
    count_tokens,
    encode,
    encoding_name_for_model,
    truncate_to_tokens,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("openai/gpt-3.5-turbo", "cl100k_base"),
        ("claude-3-5-haiku", "o200k_base"),
        (None, "o200k_base"),
    ],
)
def test_encoding_choice(model: str | None, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_known_counts() -> None:
    assert count_tokens("hello world", "gpt-4o") == 2
    assert count_tokens("hello world", "gpt-4") == 2
    assert count_tokens("", "gpt-4o") == 0
    assert count_tokens("<|endoftext|>", "gpt-4o") > 1  # special-token text counted as plain text


def test_message_overhead_follows_the_cookbook() -> None:
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi there")]
    expected = 3 + sum(3 + count_tokens(m.role) + count_tokens(m.content) for m in messages)
    assert count_messages(messages, "gpt-4o") == expected
    named = [{"role": "user", "name": "bob", "content": "Hi there"}]
    assert count_messages(named, "gpt-4o") == 3 + 3 + 1 + count_tokens("user") + count_tokens("bob") + 2


def test_truncate_to_tokens() -> None:
    text = "naïve café résumé " * 20
    cut = truncate_to_tokens(text, 7)
    assert text.startswith(cut) and 0 < count_tokens(cut) <= 7
    assert truncate_to_tokens("short", 100) == "short"
    assert truncate_to_tokens("anything", 0) == ""
    with pytest.raises(InvalidInput):
        truncate_to_tokens("x", -1)


def test_multibyte_cut_never_yields_a_broken_character() -> None:
    text = "日本語のテキストです。" * 5
    for n in range(1, 15):
        cut = truncate_to_tokens(text, n)
        assert "\ufffd" not in cut and text.startswith(cut)


def test_very_long_text_is_counted_in_pieces() -> None:
    text = "word " * 300_000  # over bpe_openai's one-call limits (1M chars / 200k tokens)
    assert count_tokens(text) == 300_001
    assert len(encode(text)) == 300_001
    assert count_tokens(truncate_to_tokens(text, 250_000)) == 250_000


def test_counting_needs_no_network() -> None:
    """A fresh interpreter whose sockets all fail can still load encodings and count."""
    code = textwrap.dedent(
        """
        import socket
        def refuse(*a, **k):
            raise OSError("network disabled for this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from pipeline.generation.llm.tokens import count_tokens
        print(count_tokens("hello world", "gpt-4o"), count_tokens("hello world", "gpt-4"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]

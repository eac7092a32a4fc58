"""Price table: defaults, prefix matching, unknown models flagged."""

from __future__ import annotations

import pytest

from pipeline.generation.llm.pricing import PriceTable, cost


def test_known_model_cost() -> None:
    assert cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert PriceTable().cost("gpt-4o", 2_000, 500) == pytest.approx((2_000 * 2.5 + 500 * 10) / 1e6)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("fake-model", "fake"),
        ("local/llama-3", "local"),
    ],
)
def test_prefix_matching(model: str, expected: str) -> None:
    table = PriceTable()
    assert table.price(model) == table.price(expected)


def test_unknown_model_is_zero_and_flagged() -> None:
    quote = PriceTable().quote("gpt-4oz", 100, 100)
    assert quote.usd == 0.0 and not quote.known
    assert not PriceTable().known("mystery")
    assert PriceTable().cost("mystery", 10, 10) == 0.0

"""Price table: defaults, prefix matching, overrides, unknown models flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import InvalidInput
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


def test_overrides_from_mapping_json_and_file(tmp_path: Path) -> None:
    table = PriceTable.with_overrides({"gpt-4o-mini": [1.0, 2.0], "my-model": {"input_per_1m": 3, "output_per_1m": 4}})
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == 1.0
    assert table.cost("my-model", 0, 1_000_000) == 4.0
    assert table.known("gpt-4o")  # defaults kept
    assert PriceTable.with_overrides('{"x": [1, 1]}').known("x")
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"y": [0.5, 0.5]}))
    assert PriceTable.with_overrides(path).cost("y", 2_000_000, 0) == 1.0
    assert PriceTable.with_overrides(str(path)).known("y")


@pytest.mark.parametrize("bad", ['{"x": 3}', '{"x": [1]}', '{"x": [-1, 1]}', "[1, 2]", "{not json"])
def test_bad_overrides_are_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput):
        PriceTable.with_overrides(bad)


def test_non_object_json_file_or_missing_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("[1, 2]")
    with pytest.raises(InvalidInput):
        PriceTable.with_overrides(path)
    with pytest.raises(InvalidInput):
        PriceTable.with_overrides(tmp_path / "missing.json")

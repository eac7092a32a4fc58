"""Prices: the genai-prices table (real bundled data, offline), overrides, unknown models -> None + warning."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import genai_prices
import pytest

from pipeline.generation.llm.pricing import OWN_PRICES, Price, PriceTable, add_cost, catalogue, cost, merge_models
from pipeline.settings import load_settings

PRICING_LOG = "pipeline.generation.llm.pricing"


def _unknown() -> str:
    """A model name no table knows, fresh per test (the warning is once per model per process)."""
    return f"acme-unpriced-{uuid.uuid4().hex[:8]}"


def _list_price(model: str, prompt: int, completion: int) -> float:
    """What genai-prices itself says, through its public API."""
    usage = genai_prices.Usage(input_tokens=prompt, output_tokens=completion)
    return float(genai_prices.calc_price(usage, model_ref=model).total_price)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pricing tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


# --- the genai-prices table ---------------------------------------------------------------------
def test_known_model_is_priced_from_genai_prices(no_network: None) -> None:
    quote = PriceTable().quote("gpt-4o-mini", 1_000_000, 1_000_000)
    assert quote.known and quote.usd is not None and quote.usd > 0
    assert quote.usd == pytest.approx(_list_price("gpt-4o-mini", 1_000_000, 1_000_000))
    assert quote.source == "genai-prices:openai/gpt-4o-mini"
    assert cost("gpt-4o", 2_000, 500) == pytest.approx(_list_price("gpt-4o", 2_000, 500))
    assert cost("gpt-4o", 2_000, 500) != cost("gpt-4o-mini", 2_000, 500)


def test_the_table_is_the_bundled_one_and_nothing_is_fetched(no_network: None) -> None:
    """No network at import or lookup, no background updater: the pinned package's data is the table."""
    threads = threading.active_count()
    table = PriceTable()
    table.warm_up()
    assert table.cost("claude-3-5-haiku", 1_000, 1_000)
    assert catalogue().from_auto_update is False
    assert threading.active_count() == threads
    from genai_prices.update_prices import _shared_updater

    assert _shared_updater.ref_count == 0, "UpdatePrices must never be started"


@pytest.mark.parametrize(
    ("model", "same_as"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # a dated snapshot genai-prices lists
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gpt-4o-mini-2099-01-01", "gpt-4o-mini"),  # a dated snapshot it does not know yet: its undated model
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),  # routed names
        ("GPT-4o-Mini", "gpt-4o-mini"),
    ],
)
def test_snapshots_and_routed_names(model: str, same_as: str) -> None:
    table = PriceTable()
    assert table.known(model)
    assert table.cost(model, 10_000, 1_000) == pytest.approx(table.cost(same_as, 10_000, 1_000))


def test_a_snapshot_with_its_own_price_is_not_priced_as_its_family() -> None:
    """gpt-4o-2024-05-13 cost twice today's gpt-4o: a prefix table would have under-reported it."""
    table = PriceTable()
    old, new = table.cost("gpt-4o-2024-05-13", 1_000_000, 0), table.cost("gpt-4o", 1_000_000, 0)
    assert old is not None and new is not None and old > new


def test_the_endpoint_url_selects_the_provider() -> None:
    """The same name can cost differently at different hosts; a host that does not list it is no guess."""
    assert PriceTable(api_url="https://api.openai.com/v1").source("gpt-4o-mini") == "genai-prices:openai/gpt-4o-mini"
    assert PriceTable(api_url="http://127.0.0.1:8000/v1").known("gpt-4o-mini")  # a local proxy: by model name
    assert not PriceTable(api_url="https://api.openai.com/v1").known("claude-3-5-haiku")


# --- overrides ------------------------------------------------------------------------------------
def test_our_own_models_cost_nothing() -> None:
    table = PriceTable()
    for model in ("fake", "fake-model", "local/llama-3", "local", "extractive", "extractive-v1"):
        assert table.cost(model, 1_000, 1_000) == 0.0, model
    assert set(OWN_PRICES) == {"fake", "local", "extractive"}


def test_an_override_adds_a_model_and_wins_over_the_table() -> None:
    unknown = _unknown()
    table = PriceTable({unknown: Price(1.0, 2.0), "gpt-4o": Price(1.0, 1.0)})
    assert table.cost(unknown, 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost(f"{unknown}-v2", 1_000_000, 0) == pytest.approx(1.0)  # prefix: a name the table lacks
    assert table.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(2.0)
    assert table.cost("gpt-4o-2024-08-06", 1_000_000, 1_000_000) == pytest.approx(2.0)  # the table resolves it
    assert table.source("gpt-4o-2024-08-06") == "override:gpt-4o"
    # an override of gpt-4o never prices gpt-4o-mini
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(_list_price("gpt-4o-mini", 1_000_000, 0))


def test_the_setting_overrides_prices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.wiring import Components

    monkeypatch.setenv("CONVEYOR_LLM_PRICES", '{"my-finetune": {"input_per_1m": 3, "output_per_1m": 12},'
                                              ' "fake": {"input_per_1m": 1, "output_per_1m": 1}}')
    settings = load_settings(llm_base_url="http://127.0.0.1:9/v1", data_dir=tmp_path)
    assert settings.llm_prices["my-finetune"].output_per_1m == 12
    components = Components(settings)
    try:
        generator: Any = components.generator
        table = generator.provider.price_table
        assert table.cost("my-finetune", 1_000_000, 1_000_000) == pytest.approx(15.0)
        assert table.cost("fake-model", 1_000_000, 0) == pytest.approx(1.0)  # ours can be overridden too
        assert table.api_url == "http://127.0.0.1:9/v1"
    finally:
        components.close()


def test_a_bad_price_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import SettingsError

    monkeypatch.setenv("CONVEYOR_LLM_PRICES", '{"m": {"input_per_1m": -1, "output_per_1m": 1}}')
    with pytest.raises(SettingsError, match="CONVEYOR_LLM_PRICES"):
        load_settings()


# --- unknown models ------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["gpt-4oz", "ft:gpt-4o-mini:acme::x1", "llama-3"])
def test_unknown_model_has_no_price(model: str) -> None:
    quote = PriceTable().quote(model, 100, 100)
    assert quote.usd is None and not quote.known and quote.source == ""
    assert PriceTable().cost(model, 10, 10) is None


def test_unknown_model_is_warned_about_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    unknown = _unknown()
    with caplog.at_level(logging.WARNING, logger=PRICING_LOG):
        for table in (PriceTable(), PriceTable()):
            assert table.cost(unknown, 10, 10) is None
            assert table.cost(unknown, 20, 20) is None
    warnings = [r for r in caplog.records if r.name == PRICING_LOG and unknown in r.getMessage()]
    assert len(warnings) == 1
    assert "CONVEYOR_LLM_PRICES" in warnings[0].getMessage() and "null" in warnings[0].getMessage()


def test_the_table_is_loaded_lazily() -> None:
    """Importing the LLM layer does not load the 1.6 MB table; the generator's warm-up does."""
    import subprocess

    code = ("import sys, pipeline.generation.llm, pipeline.generation.llm_generator; "
            "print('genai_prices.data' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- adding up ------------------------------------------------------------------------------------
def test_an_unknown_cost_makes_a_sum_unknown() -> None:
    assert add_cost(0.5, 0.25) == 0.75
    assert add_cost(None, 0.25) is None and add_cost(0.5, None) is None
    assert merge_models(["a"], ("b", "a"), None, ["c"]) == ["a", "b", "c"]

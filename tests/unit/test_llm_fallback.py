"""FallbackProvider over real providers and the fake server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.errors import (
    InvalidInput,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    RetryableError,
    StageTimeout,
)
from pipeline.generation.llm.base import ContextOverflow
from pipeline.generation.llm.fallback import FallbackProvider
from pipeline.generation.llm.pricing import PriceTable
from scripts.fake_openai_server import FakeOpenAIServer
from tests.llm_fixtures import ProviderFactory, request

LONG = "This clause is long. " * 80


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(context_windows={"small-model": 60}, hang_s=3.0) as srv:
        yield srv


@pytest.fixture
def make(server: FakeOpenAIServer) -> Iterator[ProviderFactory]:
    factory = ProviderFactory(server)
    yield factory
    factory.close()


def test_context_overflow_switches_to_the_bigger_model(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    provider = make()
    chain = FallbackProvider([(provider, "small-model"), (provider, "big-model")])
    response = chain.complete(request(LONG))
    assert response.model == "big-model"
    assert response.models_tried == ("small-model", "big-model")
    assert response.calls == 2
    assert server.chat_models() == ["small-model", "big-model"]


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (["malformed"] * 3, ProviderUnavailable),
        (["500"] * 3, ProviderUnavailable),
        (["429:retry_after=1"] * 3, RateLimited),
        (["timeout"] * 3, StageTimeout),
    ],
)
def test_exhausted_retryable_error_moves_to_next_model(
    server: FakeOpenAIServer,
    make: ProviderFactory,
    faults: list[str],
    error: type[RetryableError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.script(faults)
    provider = make(max_attempts=3, timeout_s=0.3)
    chain = FallbackProvider([(provider, "model-a"), (provider, "model-b")])
    response = chain.complete(request())
    assert response.model == "model-b"
    assert response.calls == 4
    assert server.chat_models() == ["model-a"] * 3 + ["model-b"]
    assert f"model model-a gave up ({error.failure_class}); falling back to model-b" in caplog.text


def test_length_is_returned_by_the_first_model(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    server.script(["length"])
    provider = make()
    response = FallbackProvider([(provider, "model-a"), (provider, "model-b")]).complete(request())
    assert response.finish_reason == "length" and response.model == "model-a"


def test_refusal_is_raised_by_default_with_chain_totals(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    server.script(["refusal"])
    provider = make()
    chain = FallbackProvider([(provider, "gpt-4o-mini"), (provider, "gpt-4o")])
    with pytest.raises(ProviderRejected) as info:
        chain.complete(request())
    assert info.value.details["refusal"]
    assert info.value.details["models_tried"] == ["gpt-4o-mini"]
    assert server.stats["chat"] == 1


def test_refusal_can_fall_back_and_cost_accumulates(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    table = PriceTable()
    server.script(["refusal", "ok"])
    provider = make(price_table=table)
    chain = FallbackProvider([(provider, "gpt-4o-mini"), (provider, "gpt-4o")], fallback_on_refusal=True)
    response = chain.complete(request())
    assert response.model == "gpt-4o" and response.calls == 2
    log = server.requests_log
    refusal_tokens = server.tokens.count("I'm sorry, but I can't help with that.")
    first = table.cost("gpt-4o-mini", response.prompt_tokens // 2, refusal_tokens)
    second = table.cost("gpt-4o", response.prompt_tokens // 2, response.completion_tokens - refusal_tokens)
    assert [entry["model"] for entry in log] == ["gpt-4o-mini", "gpt-4o"]
    assert response.cost_usd == pytest.approx(first + second)


def test_cost_and_calls_accumulate_across_retries_and_fallbacks(
    server: FakeOpenAIServer, make: ProviderFactory
) -> None:
    server.script(["500", "500", "500", "503", "ok"])
    provider = make(max_attempts=3, price_table=PriceTable())
    chain = FallbackProvider([(provider, "gpt-4o-mini"), (provider, "gpt-4o")])
    response = chain.complete(request())
    assert response.calls == 5 and response.model == "gpt-4o"
    assert response.cost_usd == pytest.approx(
        PriceTable().cost("gpt-4o", response.prompt_tokens, response.completion_tokens)
    )


def test_a_chain_through_an_unpriced_model_has_an_unknown_cost(
    server: FakeOpenAIServer, make: ProviderFactory
) -> None:
    """gpt-4o-mini's refusal is priced, the unknown model's answer is not: the total is unknown, not the part."""
    server.script(["refusal", "ok"])
    provider = make()
    chain = FallbackProvider([(provider, "gpt-4o-mini"), (provider, "acme-unpriced-chain")], fallback_on_refusal=True)
    response = chain.complete(request())
    assert response.model == "acme-unpriced-chain" and response.calls == 2
    assert response.cost_usd is None and response.unpriced_models == ("acme-unpriced-chain",)


def test_an_unpriced_model_that_gave_up_is_on_the_error_too(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    server.script(["refusal", "400"])
    provider = make()
    chain = FallbackProvider([(provider, "acme-unpriced-first"), (provider, "gpt-4o")], fallback_on_refusal=True)
    with pytest.raises(ProviderRejected) as info:
        chain.complete(request())
    assert info.value.details["cost_usd"] is None
    assert info.value.details["unpriced_models"] == ["acme-unpriced-first"]


def test_permanent_rejection_does_not_fall_back(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    server.script(["400"])
    provider = make()
    with pytest.raises(ProviderRejected) as info:
        FallbackProvider([(provider, "model-a"), (provider, "model-b")]).complete(request())
    assert not isinstance(info.value, ContextOverflow)
    assert server.stats["chat"] == 1


def test_all_models_failing_raises_the_last_error_with_totals(server: FakeOpenAIServer, make: ProviderFactory) -> None:
    server.script(["503"] * 12)
    provider = make(max_attempts=3)
    chain = FallbackProvider([(provider, "model-a"), (provider, "model-b")])
    stage_attempts = 2
    for _ in range(stage_attempts):
        with pytest.raises(ProviderUnavailable) as info:
            chain.complete(request())
        assert info.value.details["calls"] == 6
        assert info.value.details["models_tried"] == ["model-a", "model-b"]
    assert server.stats["chat"] == 3 * stage_attempts * 2  # per-call attempts x stage attempts x models


def test_empty_chain_is_invalid() -> None:
    with pytest.raises(InvalidInput):
        FallbackProvider([])

"""OpenAICompatProvider against the real fake server over loopback: every fault, end to end."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from pipeline.errors import (
    InternalError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    RetryableError,
    StageTimeout,
)
from pipeline.generation.llm.base import ContextOverflow, is_context_overflow
from pipeline.generation.llm.openai_compat import OpenAICompatProvider, chat_completions_url
from pipeline.generation.llm.pricing import PriceTable
from pipeline.generation.llm.ratelimit import LocalRateLimiter
from scripts.fake_openai_server import FakeOpenAIServer
from tests.llm_fixtures import TEST_API_KEY, FakeClock, RecordingSleep, make_provider, request


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(hang_s=3.0) as srv:
        yield srv


def test_plain_answer_quotes_first_sentence_and_reports_usage(server: FakeOpenAIServer) -> None:
    with make_provider(server) as provider:
        response = provider.complete(request("The lease runs five years. Rent is due monthly."))
    assert response.text == 'Based on the text: "The lease runs five years."'
    assert response.finish_reason == "stop"
    assert response.calls == 1
    assert response.prompt_tokens > 0 and response.completion_tokens > 0
    assert not response.usage_estimated
    assert response.model == "fake-model"
    assert response.models_tried == ("fake-model",)
    assert response.provider == "openai_compat"


def test_json_mode_returns_summary_object_citing_prompt_chunks(server: FakeOpenAIServer) -> None:
    prompt = (
        "Summarise the contract.\n[chunk:doc1-0] This Agreement is made between Acme Corp and Beta LLC, "
        'effective March 3, 2024. The "Services" are described below.\n'
        "[chunk:doc1-7] Either party may terminate for material breach."
    )
    with make_provider(server) as provider:
        response = provider.complete(request(prompt, json_mode=True))
    body = json.loads(response.text)
    assert set(body) == {"parties", "effective_date", "term", "summary", "key_terms", "risks", "citations"}
    assert body["citations"] == ["doc1-0", "doc1-7"]
    assert body["parties"] == ["Acme Corp", "Beta LLC"]
    assert body["effective_date"] == "March 3, 2024"


@pytest.mark.parametrize("base", ["root", "root/", "v1", "v1/"])
def test_base_url_with_or_without_v1(server: FakeOpenAIServer, base: str) -> None:
    url = {
        "root": server.root_url,
        "root/": server.root_url + "/",
        "v1": server.url,
        "v1/": server.url + "/",
    }[base]
    assert chat_completions_url(url) == f"{server.root_url}/v1/chat/completions"
    with OpenAICompatProvider(url, default_model="fake-model") as provider:
        assert provider.complete(request()).finish_reason == "stop"


def test_client_is_lazy_and_has_no_transport_retries(server: FakeOpenAIServer) -> None:
    provider = make_provider(server)
    assert provider._client is None
    provider.complete(request())
    client = provider._client
    assert client is not None
    transport = client._transport
    assert isinstance(transport, httpx.HTTPTransport)
    assert transport._pool._retries == 0
    provider.close()
    assert provider._client is None


def test_500_then_success_is_retried_with_jittered_backoff(server: FakeOpenAIServer) -> None:
    sleep = RecordingSleep()
    server.script(["500", "503", "ok"])
    with make_provider(server, sleep=sleep) as provider:
        response = provider.complete(request())
    assert response.calls == 3
    assert server.stats["chat"] == 3
    assert sleep.calls == [pytest.approx(0.005), pytest.approx(0.01)]  # rng 0.5 x min(max, base * 2**n)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("429:retry_after=1", 1.0), ("429:retry_after_ms=250", 0.25), ("429:retry_after=2.5", 2.5)],
)
def test_retry_after_is_honoured(server: FakeOpenAIServer, fault: str, expected: float) -> None:
    sleep = RecordingSleep()
    server.script([fault, "ok"])
    with make_provider(server, sleep=sleep) as provider:
        response = provider.complete(request())
    assert response.calls == 2
    assert sleep.calls == [pytest.approx(expected)]


def test_retry_after_http_date_is_honoured(server: FakeOpenAIServer) -> None:
    sleep = RecordingSleep()
    server.script(["429:retry_after_date=3", "ok"])
    with make_provider(server, sleep=sleep) as provider:
        provider.complete(request())
    # an HTTP-date has whole-second resolution: "3 s from now" arrives as 2..3 s.
    assert len(sleep.calls) == 1 and 0.0 < sleep.calls[0] <= 3.0


def test_retry_after_beyond_cap_is_not_slept_but_raised(server: FakeOpenAIServer) -> None:
    sleep = RecordingSleep()
    server.script(["429:retry_after=120"])
    with (
        make_provider(server, sleep=sleep, retry_after_cap_s=30) as provider,
        pytest.raises(RateLimited) as info,
    ):
        provider.complete(request())
    assert info.value.retry_after == pytest.approx(120)
    assert sleep.calls == []
    assert server.stats["chat"] == 1


def test_429_exhaustion_raises_rate_limited_after_max_attempts(server: FakeOpenAIServer) -> None:
    server.script(["429:retry_after=1"] * 5)
    with make_provider(server, max_attempts=3) as provider, pytest.raises(RateLimited) as info:
        provider.complete(request())
    assert info.value.details["calls"] == 3
    assert server.stats["chat"] == 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", ProviderUnavailable),
        ("502", ProviderUnavailable),
        ("408", StageTimeout),
        ("409", ProviderUnavailable),
        ("malformed", ProviderUnavailable),
        ("no_choices", ProviderUnavailable),
        ("disconnect", ProviderUnavailable),
    ],
)
def test_transient_faults_exhaust_their_attempts(
    server: FakeOpenAIServer, fault: str, error: type[RetryableError]
) -> None:
    server.script([fault] * 4)
    with make_provider(server, max_attempts=3) as provider, pytest.raises(error) as info:
        provider.complete(request())
    assert type(info.value) is error and info.value.retryable
    assert info.value.details["calls"] == 3
    assert server.stats["chat"] == 3


@pytest.mark.parametrize("fault", ["malformed", "no_choices", "disconnect", "502"])
def test_transient_fault_then_success(server: FakeOpenAIServer, fault: str) -> None:
    server.script([fault, "ok"])
    with make_provider(server) as provider:
        response = provider.complete(request())
    assert response.calls == 2 and response.finish_reason == "stop"


def test_timeout_is_stage_timeout_and_retried(server: FakeOpenAIServer) -> None:
    server.script(["timeout", "ok"])
    with make_provider(server, timeout_s=0.3) as provider:
        response = provider.complete(request())
    assert response.calls == 2


def test_timeouts_exhaust_to_stage_timeout(server: FakeOpenAIServer) -> None:
    server.script(["timeout", "timeout"])
    with make_provider(server, max_attempts=2) as provider, pytest.raises(StageTimeout) as info:
        provider.complete(request(timeout_s=0.2))
    assert info.value.details["calls"] == 2
    assert info.value.details["timeout_s"] == 0.2


def test_connection_refused_is_provider_unavailable() -> None:
    with FakeOpenAIServer() as srv:
        url = srv.url
    with (
        OpenAICompatProvider(url, max_attempts=2, backoff_base_s=0, sleep=RecordingSleep()) as provider,
        pytest.raises(ProviderUnavailable) as info,
    ):
        provider.complete(request())
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.details["calls"] == 2


def test_invalid_url_is_internal_error() -> None:
    with (
        OpenAICompatProvider("ftp://example.invalid", max_attempts=3, sleep=RecordingSleep()) as provider,
        pytest.raises(InternalError),
    ):
        provider.complete(request())


def test_length_is_returned_not_raised(server: FakeOpenAIServer) -> None:
    server.script(["length"])
    with make_provider(server) as provider:
        response = provider.complete(request("A long sentence to be cut somewhere in the middle of it."))
    assert response.finish_reason == "length"
    assert response.calls == 1


def test_max_tokens_overrun_finishes_with_length(server: FakeOpenAIServer) -> None:
    with make_provider(server) as provider:
        response = provider.complete(request("Summarise. [chunk:a] Text.", json_mode=True, max_tokens=5))
    assert response.finish_reason == "length"
    assert response.completion_tokens == 5


@pytest.mark.parametrize("fault", ["refusal", "content_filter"])
def test_refusal_is_provider_rejected_with_refusal_detail(server: FakeOpenAIServer, fault: str) -> None:
    server.script([fault, "ok"])
    with (
        make_provider(server, default_model="gpt-4o-mini") as provider,
        pytest.raises(ProviderRejected) as info,
    ):
        provider.complete(request())
    assert info.value.details["refusal"]
    assert info.value.details["calls"] == 1  # permanent: never retried
    assert server.stats["chat"] == 1
    if fault == "refusal":  # the refusal text was generated, hence billed
        cost = info.value.details["cost_usd"]
        assert isinstance(cost, float) and cost > 0
        assert info.value.details["unpriced_models"] == []


def test_context_overflow_is_recognised(server: FakeOpenAIServer) -> None:
    server.script(["context_overflow"])
    with make_provider(server) as provider, pytest.raises(ContextOverflow) as info:
        provider.complete(request())
    assert isinstance(info.value, ProviderRejected)
    assert is_context_overflow(info.value) and info.value.details["context_overflow"] is True
    assert info.value.details["calls"] == 1


@pytest.mark.parametrize("fault", ["400", "404", "422", "quota"])
def test_other_4xx_is_rejected_without_retry(server: FakeOpenAIServer, fault: str) -> None:
    server.script([fault, "ok"])
    with make_provider(server) as provider, pytest.raises(ProviderRejected) as info:
        provider.complete(request())
    assert not is_context_overflow(info.value)
    assert server.stats["chat"] == 1


def test_missing_usage_is_estimated_locally(server: FakeOpenAIServer) -> None:
    server.script(["no_usage"])
    with make_provider(server) as provider:
        response = provider.complete(request())
    assert response.usage_estimated
    assert response.prompt_tokens > 0 and response.completion_tokens > 0


def test_upstream_calls_equal_the_retry_budget(server: FakeOpenAIServer) -> None:
    """Stage attempts x per-call attempts: the server sees exactly the product, no more."""
    server.script(["503"] * 20)
    stage_attempts = 2
    with make_provider(server, max_attempts=3) as provider:
        for _ in range(stage_attempts):  # what the Celery stage retry would do
            with pytest.raises(ProviderUnavailable):
                provider.complete(request())
    assert server.stats["chat"] == 3 * stage_attempts


def test_cost_counts_billed_calls_only_across_retries(server: FakeOpenAIServer) -> None:
    table = PriceTable()
    server.script(["500", "malformed", "ok"])
    with make_provider(server, default_model="gpt-4o-mini", price_table=table) as provider:
        response = provider.complete(request())
    assert response.calls == 3
    assert response.cost_known
    assert response.cost_usd == pytest.approx(
        table.cost("gpt-4o-mini", response.prompt_tokens, response.completion_tokens)
    )


def test_unknown_model_has_no_cost_and_is_named(server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture) -> None:
    """No price is None, never 0; the model is named on the response and warned about once."""
    with caplog.at_level(logging.WARNING), make_provider(server, default_model="mystery-model-7") as provider:
        response = provider.complete(request())
        again = provider.complete(request("Another one."))
    assert response.cost_usd is None and not response.cost_known
    assert response.unpriced_models == ("mystery-model-7",)
    assert response.prompt_tokens > 0  # tokens are still counted
    assert again.cost_usd is None
    warned = [r for r in caplog.records if "mystery-model-7" in r.getMessage() and "no known price" in r.getMessage()]
    assert len(warned) == 1


def test_a_failed_call_to_an_unknown_model_reports_its_cost_as_unknown(server: FakeOpenAIServer) -> None:
    server.script(["refusal"])
    with make_provider(server, default_model="mystery-model-8") as provider, pytest.raises(ProviderRejected) as info:
        provider.complete(request())
    assert info.value.details["calls"] == 1
    assert info.value.details["cost_usd"] is None
    assert info.value.details["unpriced_models"] == ["mystery-model-8"]


def test_rate_limiter_is_consulted_for_every_upstream_call(server: FakeOpenAIServer) -> None:
    clock, sleep = FakeClock(), RecordingSleep()
    limiter = LocalRateLimiter(rpm=60, sleep=sleep, clock=clock)
    server.script(["500", "ok", "ok"])
    with make_provider(server, rate_limiter=limiter) as provider:
        provider.complete(request())
        provider.complete(request("Another one."))
    # three HTTP calls under a frozen clock at 1/s: reservations at +0, +1, +2 seconds.
    limiter_waits = [s for s in sleep.calls if s >= 0.5]
    assert limiter_waits == [pytest.approx(1.0), pytest.approx(2.0)]


# ---- the API key never leaks --------------------------------------------------------------


def _everything_said(exc: BaseException) -> str:
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(getattr(seen, "details", ""))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_api_key_never_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(api_key="the-right-key") as srv:
        with make_provider(srv) as wrong, pytest.raises(ProviderRejected) as info:
            wrong.complete(request())  # a 401 whose body echoes our key in full
        said = _everything_said(info.value)
        assert "***" in said
        assert TEST_API_KEY not in said
        assert TEST_API_KEY not in repr(wrong)
        srv.script(["500", "ok"])
        with make_provider(srv, api_key="the-right-key") as right:
            assert right.complete(request()).calls == 2
        assert "the-right-key" not in caplog.text
    assert TEST_API_KEY not in caplog.text
    assert caplog.records, "expected DEBUG/WARNING records to have been checked"

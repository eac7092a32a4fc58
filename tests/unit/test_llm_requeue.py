"""Backpressure is a signal: a limiter refusal leaves the provider layer as Requeue, untouched.

Before, the refusal was a RateLimited: tenacity slept and retried it, then FallbackProvider
took it for "this model is down" and asked the next one. Every layer is built with its
defaults here (three attempts per call, two models) so that any of them acting shows. An
upstream 429 is still a RateLimited, retried and fallen back on (test_llm_provider.py,
test_llm_fallback.py).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pipeline.errors import Requeue
from pipeline.generation.llm.base import LLMRequest, LLMResponse
from pipeline.generation.llm.fallback import FallbackProvider
from pipeline.generation.llm.openai_compat import OpenAICompatProvider
from pipeline.generation.llm.ratelimit import LocalRateLimiter
from pipeline.generation.llm_generator import LLMGenerator
from pipeline.state import SqliteStateStore
from schemas import ContextChunk, Intent, JobRequest, RetrievalResult
from tests.llm_fixtures import TEST_API_KEY, FakeClock, RecordingSleep, request
from workers.middleware import CountAttempts


class RecordingCache:
    """A response store that never hits and records which models the provider looked up."""

    def __init__(self) -> None:
        self.models: list[str] = []

    def get(self, request: LLMRequest, model: str) -> LLMResponse | None:
        self.models.append(model)
        return None

    def put(self, request: LLMRequest, model: str, response: LLMResponse) -> None:
        raise AssertionError("nothing was answered, nothing may be cached")


def _ok(request: httpx.Request) -> httpx.Response:
    body = {
        "model": "model-a",
        "choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    return httpx.Response(200, json=body)


def test_limiter_refusal_is_requeue_through_retries_and_fallback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sleep = RecordingSleep()
    limiter = LocalRateLimiter(rpm=60, max_wait_s=0.5, sleep=sleep, clock=FakeClock())
    assert limiter.acquire() == 0.0  # another worker took this second's slot: the next is 1 s away
    sent: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        sent.append(r)
        return _ok(r)

    cache = RecordingCache()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        provider = OpenAICompatProvider(
            "http://llm.test/v1",
            SecretStr(TEST_API_KEY),
            rate_limiter=limiter,
            cache=cache,
            client=client,
            sleep=sleep,
            rng=lambda: 0.5,
        )
        assert provider.retry_policy.max_attempts == 3
        chain = FallbackProvider([(provider, "model-a"), (provider, "model-b")])
        with pytest.raises(Requeue) as info:
            chain.complete(request())
    assert type(info.value) is Requeue and info.value.__cause__ is None
    assert sleep.calls == []  # no retry backoff, no limiter sleep
    assert sent == []  # no HTTP call
    assert cache.models == ["model-a"]  # model-b was never asked
    assert "falling back" not in caplog.text
    assert info.value.delay_s == pytest.approx(1.0)
    assert info.value.delay_s == pytest.approx(limiter.acquire(max_wait_s=math.inf))  # the wait it refused


def test_a_requeue_after_a_billed_answer_keeps_that_bill_for_the_record(tmp_path: Path) -> None:
    """The first answer is billed and needs a repair; the repair call's slot is a second away: the job
    is re-queued, and the first call's tokens reach the job's usage (then its record) all the same."""
    limiter = LocalRateLimiter(rpm=60, max_wait_s=0.5, sleep=RecordingSleep(), clock=FakeClock())

    def handler(r: httpx.Request) -> httpx.Response:
        body = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 50, "completion_tokens": 7},
                "choices": [{"message": {"role": "assistant", "content": "not JSON"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=body)

    request_ = JobRequest(job_id="j-requeued", text="Summarize this contract.", document_id="lease")
    msg = RetrievalResult(request=request_, intent=Intent.summarize, intent_confidence=1.0, intent_method="hint",
                          chunks=[ContextChunk(chunk_id="c1", doc_id="lease", text="The rent is 100 EUR a month.")])
    state = SqliteStateStore(tmp_path / "state.sqlite3")
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        provider = OpenAICompatProvider("http://llm.test/v1", SecretStr(TEST_API_KEY), rate_limiter=limiter,
                                        client=client, sleep=RecordingSleep(), rng=lambda: 0.5)
        generator = LLMGenerator(FallbackProvider([(provider, "gpt-4o-mini")]), model="gpt-4o-mini", max_tokens=200,
                                 temperature=0.0, context_token_budget=2000)
        delivery: Any = SimpleNamespace(request=request_, components=SimpleNamespace(state=state))
        with pytest.raises(Requeue) as info:
            CountAttempts()(delivery, lambda d: generator.generate(msg))  # type: ignore[arg-type,return-value]
    assert (info.value.details["calls"], info.value.details["prompt_tokens"]) == (1, 50)
    usage = state.take_usage("j-requeued")
    assert (usage["llm_calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (1, 50, 7)
    assert usage["cost_nusd"] > 0, "gpt-4o-mini has a price: the first call's cost is kept too"
    state.close()

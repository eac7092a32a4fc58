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

import httpx
import pytest
from pydantic import SecretStr

from pipeline.errors import Requeue
from pipeline.generation.llm.base import LLMRequest, LLMResponse
from pipeline.generation.llm.fallback import FallbackProvider
from pipeline.generation.llm.openai_compat import OpenAICompatProvider
from pipeline.generation.llm.ratelimit import LocalRateLimiter
from tests.llm_fixtures import TEST_API_KEY, FakeClock, RecordingSleep, request


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

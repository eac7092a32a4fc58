"""Response cache: keys, hits that cost nothing upstream, per-request disable, failure as a miss."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.generation.llm.base import LLMResponse
from pipeline.generation.llm.cache import MemoryResponseCache, ResponseCache, cache_key
from scripts.fake_openai_server import FakeOpenAIServer
from tests.llm_fixtures import FakeClock, make_provider, request


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def _response(**kwargs: object) -> LLMResponse:
    values: dict[str, object] = {
        "text": "hi",
        "model": "m",
        "finish_reason": "stop",
        "calls": 2,
        "cost_usd": 0.5,
    }
    values.update(kwargs)
    return LLMResponse.model_validate(values)


def test_key_covers_what_shapes_the_answer_only() -> None:
    base = cache_key(request("a"), "m")
    assert base == cache_key(request("a"), "m")
    assert base == cache_key(request("a", timeout_s=3, use_cache=False), "m")
    for other in (
        cache_key(request("b"), "m"),
        cache_key(request("a"), "n"),
        cache_key(request("a", prompt_version="v2"), "m"),
        cache_key(request("a", json_mode=True), "m"),
        cache_key(request("a", temperature=0.7), "m"),
        cache_key(request("a", max_tokens=10), "m"),
    ):
        assert other != base
    assert len(base) == 64


def test_memory_cache_hit_reports_no_call_and_no_cost() -> None:
    cache = MemoryResponseCache()
    cache.put(request(), "m", _response())
    hit = cache.get(request(), "m")
    assert hit is not None and hit.cached and hit.calls == 0 and hit.cost_usd == 0.0 and hit.text == "hi"
    assert cache.get(request(use_cache=False), "m") is None
    cache.put(request("unpriced"), "m", _response(cost_usd=None, unpriced_models=("m",)))
    hit = cache.get(request("unpriced"), "m")
    assert hit is not None and hit.cost_usd == 0.0 and hit.unpriced_models == (), "a hit bills nothing, priced or not"
    assert cache.get(request("other"), "m") is None


def test_memory_cache_skips_truncated_answers_and_evicts_lru_and_expires() -> None:
    clock = FakeClock()
    cache = MemoryResponseCache(max_entries=2, ttl_s=10, clock=clock)
    cache.put(request("cut"), "m", _response(finish_reason="length"))
    assert cache.get(request("cut"), "m") is None
    cache.put(request("1"), "m", _response())
    cache.put(request("2"), "m", _response())
    assert cache.get(request("1"), "m") is not None  # 1 is now most recent
    cache.put(request("3"), "m", _response())
    assert cache.get(request("2"), "m") is None and len(cache) == 2
    clock.advance(11)
    assert cache.get(request("1"), "m") is None


def test_redis_cache_round_trip_with_ttl() -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    cache = ResponseCache(client, ttl_s=60, prefix="t:llm:")
    cache.put(request(), "m", _response(prompt_tokens=3))
    key = cache.key(request(), "m")
    assert key.startswith("t:llm:") and 0 < client.ttl(key) <= 60
    hit = cache.get(request(), "m")
    assert hit is not None and hit.cached and hit.prompt_tokens == 3 and hit.calls == 0
    client.set(key, b"{garbage")
    assert cache.get(request(), "m") is None


def test_redis_cache_down_is_a_miss_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    cache = ResponseCache(client, ttl_s=60)
    assert cache.get(request(), "m") is None
    cache.put(request(), "m", _response())
    assert "cache" in caplog.text
    client.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_repeated_request_makes_zero_upstream_calls(server: FakeOpenAIServer, backend: str) -> None:
    cache = (
        MemoryResponseCache()
        if backend == "memory"
        else ResponseCache(fakeredis.FakeRedis(server=fakeredis.FakeServer()), ttl_s=60)
    )
    with make_provider(server, cache=cache, default_model="gpt-4o-mini") as provider:
        first = provider.complete(request(prompt_version="p1"))
        second = provider.complete(request(prompt_version="p1"))
        assert server.stats["chat"] == 1
        assert not first.cached and first.calls == 1 and first.cost_usd > 0
        assert second.cached and second.calls == 0 and second.cost_usd == 0.0 and second.text == first.text
        provider.complete(request(prompt_version="p1", use_cache=False))
        provider.complete(request(prompt_version="p2"))
        assert server.stats["chat"] == 3


def test_truncated_answer_is_not_cached(server: FakeOpenAIServer) -> None:
    server.script(["length"])
    with make_provider(server, cache=MemoryResponseCache()) as provider:
        assert provider.complete(request()).finish_reason == "length"
        assert provider.complete(request()).finish_reason == "stop"
    assert server.stats["chat"] == 2

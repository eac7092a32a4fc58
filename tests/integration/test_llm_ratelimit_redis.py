"""SharedRateLimiter on the real Redis: atomic across processes, Redis TIME, both budgets,
and a refusal that leaves the provider chain as Requeue.

Uses the project's ``redis_url`` fixture (tests/conftest.py): a test database, skipped
without Redis locally, a failure under CI=true.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from pipeline.errors import Requeue
from pipeline.generation.llm.fallback import FallbackProvider
from pipeline.generation.llm.openai_compat import OpenAICompatProvider
from pipeline.generation.llm.ratelimit import SharedRateLimiter
from tests.llm_fixtures import FakeClock, RecordingSleep, request

pytestmark = pytest.mark.integration

FROZEN = 1_700_000_000.0


@pytest.fixture
def store(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"conveyor-test:llm:{uuid.uuid4().hex}"
    yield client, prefix
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _reserve_many(url: str, key: str, n: int, out: multiprocessing.Queue) -> None:
    """Child process: its own client, a frozen clock, n unbounded reservations."""
    client = redis.Redis.from_url(url)
    limiter = SharedRateLimiter(
        client, key, rpm=60, burst_s=5, sleep=RecordingSleep(), clock=lambda: FROZEN, max_wait_s=float("inf")
    )
    out.put([limiter.acquire() for _ in range(n)])
    client.close()


def test_reservations_are_atomic_across_processes(store: tuple[redis.Redis, str], redis_url: str) -> None:
    _, prefix = store
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(redis_url, f"{prefix}:atomic", 10, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    delays = sorted(d for _ in procs for d in out.get(timeout=60))
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    # 5 s of burst at 1 request/s: five go at once, then one per second, no slot given twice.
    assert delays == [0.0] * 5 + [float(i) for i in range(1, 36)]


def test_redis_time_paces_calls(store: tuple[redis.Redis, str]) -> None:
    client, prefix = store
    sleep = RecordingSleep()
    limiter = SharedRateLimiter(client, f"{prefix}:time", rpm=120, sleep=sleep)
    assert limiter.acquire() == 0.0
    second = limiter.acquire()
    assert 0 < second <= 0.5  # one interval, less the time between the two calls
    assert sleep.calls == [second]
    assert 0 < client.pttl(f"{{{prefix}:time}}:rpm") <= 2_000


def test_token_budget_and_refusal(store: tuple[redis.Redis, str]) -> None:
    client, prefix = store
    clock = FakeClock(FROZEN)
    limiter = SharedRateLimiter(client, f"{prefix}:tpm", rpm=600, tpm=6_000, sleep=RecordingSleep(), clock=clock)
    assert limiter.acquire(1_000) == 0.0  # 100 tokens/s: the next call waits 10 s
    with pytest.raises(Requeue) as info:
        limiter.acquire(10, max_wait_s=5)
    assert info.value.delay_s == pytest.approx(10.0)
    clock.advance(10)
    assert limiter.acquire(10, block=False) == 0.0


def test_limiters_sharing_a_key_share_the_budget(store: tuple[redis.Redis, str]) -> None:
    client, prefix = store
    clock = FakeClock(FROZEN)
    a = SharedRateLimiter(client, f"{prefix}:shared", rpm=30, sleep=RecordingSleep(), clock=clock)
    b = SharedRateLimiter(client, f"{prefix}:shared", rpm=30, sleep=RecordingSleep(), clock=clock)
    other = SharedRateLimiter(client, f"{prefix}:other", rpm=30, sleep=RecordingSleep(), clock=clock)
    assert [a.acquire(), b.acquire(), a.acquire(), other.acquire()] == [0.0, 2.0, 4.0, 0.0]
    a.reset()
    assert b.acquire() == 0.0


def test_refusal_leaves_the_provider_chain_as_requeue(store: tuple[redis.Redis, str]) -> None:
    """Redis says "no slot within 0.5 s": no sleep, no HTTP call, no retry, no fallback."""
    client, prefix = store
    sleep = RecordingSleep()
    limiter = SharedRateLimiter(
        client, f"{prefix}:requeue", rpm=30, max_wait_s=0.5, sleep=sleep, clock=FakeClock(FROZEN)
    )
    assert limiter.acquire() == 0.0  # the next slot is 2 s away
    sent: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        sent.append(r)
        return httpx.Response(500)

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        provider = OpenAICompatProvider("http://llm.test/v1", rate_limiter=limiter, client=http, sleep=sleep)
        chain = FallbackProvider([(provider, "model-a"), (provider, "model-b")])
        with pytest.raises(Requeue) as info:
            chain.complete(request())
    assert sent == [] and sleep.calls == []
    assert info.value.delay_s == pytest.approx(2.0)

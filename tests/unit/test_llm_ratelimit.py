"""GCRA rate limiting: the pure arithmetic, the local limiter, and the Lua script on fakeredis."""

from __future__ import annotations

import random
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import InvalidInput, ProviderUnavailable, Requeue
from pipeline.generation.llm.ratelimit import LocalRateLimiter, SharedRateLimiter, gcra_plan
from tests.llm_fixtures import FakeClock, RecordingSleep


def test_plan_paces_requests_one_interval_apart() -> None:
    tat = None
    delays = []
    for _ in range(4):
        granted, delay, tat, _ = gcra_plan(100.0, tat, None, 1.0, 0.0, 0.0, -1)
        assert granted
        delays.append(delay)
    assert delays == [0.0, 1.0, 2.0, 3.0]


def test_plan_refuses_without_reserving() -> None:
    granted, delay, tat_r, _ = gcra_plan(0.0, 5.0, None, 1.0, 0.0, 0.0, 2.0)
    assert not granted and delay == 5.0 and tat_r == 5.0


def test_local_limiter_paces_and_sleeps_exactly() -> None:
    clock, sleep = FakeClock(), RecordingSleep()
    limiter = LocalRateLimiter(rpm=120, sleep=sleep, clock=clock)
    waited = [limiter.acquire() for _ in range(3)]
    assert waited == [0.0, 0.5, 1.0]
    assert sleep.calls == [0.5, 1.0]
    clock.advance(10)
    assert limiter.acquire() == 0.0  # idle time is not banked beyond the burst


def test_burst_allows_that_many_seconds_of_budget_at_once() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rpm=60, burst_s=3, sleep=RecordingSleep(), clock=clock)
    assert [limiter.acquire() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_tokens_per_minute_budget() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rpm=None, tpm=600, sleep=RecordingSleep(), clock=clock)  # 10 tokens/s
    assert limiter.acquire(100) == 0.0
    assert limiter.acquire(50) == pytest.approx(10.0)
    clock.advance(30)
    assert limiter.acquire(1000) == 0.0  # larger than any burst: allowed when idle...
    assert limiter.acquire(1, max_wait_s=200) == pytest.approx(100.0)  # ...then paid for in full


def test_both_budgets_must_allow() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rpm=60, tpm=6000, sleep=RecordingSleep(), clock=clock)  # 1 req/s, 100 tok/s
    assert limiter.acquire(500) == 0.0
    assert limiter.acquire(10) == pytest.approx(5.0)  # tokens bind, not requests
    assert limiter.acquire(0) == pytest.approx(6.0)  # requests bind: one per second after the last


def test_max_wait_and_non_blocking_raise_requeue_and_reserve_nothing() -> None:
    clock, sleep = FakeClock(), RecordingSleep()
    limiter = LocalRateLimiter(rpm=60, sleep=sleep, clock=clock, max_wait_s=0.5)
    limiter.acquire()
    with pytest.raises(Requeue) as info:
        limiter.acquire()
    assert info.value.delay_s == pytest.approx(1.0)
    with pytest.raises(Requeue):
        limiter.acquire(block=False)
    assert limiter.acquire(max_wait_s=5) == pytest.approx(1.0)
    assert sleep.calls == [1.0]


def test_local_limiter_is_thread_safe() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rpm=60, sleep=RecordingSleep(), clock=clock, max_wait_s=float("inf"))
    results: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            delay = limiter.acquire()
            with lock:
                results.append(delay)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [float(i) for i in range(80)]


@pytest.mark.parametrize("kwargs", [{"rpm": None}, {"rpm": 0, "tpm": 0}, {"rpm": -1}, {"rpm": 1, "burst_s": -1}])
def test_invalid_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        LocalRateLimiter(**kwargs)  # type: ignore[arg-type]


# ---- the Lua script (fakeredis runs it through lupa) ----------------------------------


@pytest.fixture
def fake_redis() -> redis.Redis:
    pytest.importorskip("lupa", reason="fakeredis needs lupa to run Lua scripts")
    import fakeredis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def test_shared_limiter_matches_the_local_one(fake_redis: redis.Redis) -> None:
    rng = random.Random(7)
    clock_a, clock_b = FakeClock(), FakeClock()
    shared = SharedRateLimiter(
        fake_redis, "rl:eq", rpm=90, tpm=20_000, burst_s=2, sleep=RecordingSleep(), clock=clock_a
    )
    local = LocalRateLimiter(rpm=90, tpm=20_000, burst_s=2, sleep=RecordingSleep(), clock=clock_b)
    for _ in range(200):
        step, tokens = rng.choice([0.0, 0.1, 0.7, 3.0]), rng.randint(0, 900)
        clock_a.advance(step)
        clock_b.advance(step)
        assert shared.acquire(tokens, max_wait_s=float("inf")) == pytest.approx(
            local.acquire(tokens, max_wait_s=float("inf")), abs=2e-6
        )


def test_shared_limiter_refusal_is_requeue_with_the_needed_wait(fake_redis: redis.Redis) -> None:
    clock = FakeClock()
    limiter = SharedRateLimiter(fake_redis, "rl:refuse", rpm=30, sleep=RecordingSleep(), clock=clock)
    assert limiter.acquire(block=False) == 0.0
    with pytest.raises(Requeue) as info:
        limiter.acquire(block=False)
    assert info.value.delay_s == pytest.approx(2.0)


def test_shared_limiter_uses_redis_time_by_default(fake_redis: redis.Redis) -> None:
    sleep = RecordingSleep()
    limiter = SharedRateLimiter(fake_redis, "rl:time", rpm=60, sleep=sleep)
    assert limiter.acquire() == 0.0
    second = limiter.acquire()
    assert 0 < second <= 1.0  # one interval, less the time between the two calls
    assert sleep.calls == [second]
    assert 0 < fake_redis.pttl("{rl:time}:rpm") <= 4_000
    limiter.reset()
    assert not fake_redis.exists("{rl:time}:rpm")


def test_shared_limiter_store_down_is_provider_unavailable() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    limiter = SharedRateLimiter(client, "rl:down", rpm=60)
    with pytest.raises(ProviderUnavailable):
        limiter.acquire()
    client.close()

"""The per-call retry policy: what is retried, how long it waits, how many calls it makes."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidInput, ProviderRejected, ProviderUnavailable, RateLimited, Requeue, StageTimeout
from pipeline.generation.llm.retry import RetryPolicy, call_with_retry
from tests.llm_fixtures import RecordingSleep


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retries_retryable_until_success() -> None:
    fn, sleep = Flaky(ProviderUnavailable("a"), StageTimeout("b")), RecordingSleep()
    assert call_with_retry(fn, RetryPolicy(max_attempts=3), sleep=sleep, rng=lambda: 1.0) == "ok"
    assert fn.calls == 3
    assert sleep.calls == [0.5, 1.0]  # full jitter upper bounds with rng=1: base, 2*base


def test_permanent_error_is_not_retried() -> None:
    fn, sleep = Flaky(ProviderRejected("no")), RecordingSleep()
    with pytest.raises(ProviderRejected):
        call_with_retry(fn, RetryPolicy(max_attempts=5), sleep=sleep)
    assert fn.calls == 1 and sleep.calls == []


def test_foreign_exception_is_not_retried() -> None:
    fn = Flaky(ValueError("bug"))
    with pytest.raises(ValueError):
        call_with_retry(fn, RetryPolicy(max_attempts=5), sleep=RecordingSleep())
    assert fn.calls == 1


def test_exhaustion_reraises_the_last_error_itself() -> None:
    last = ProviderUnavailable("third")
    fn = Flaky(ProviderUnavailable("1"), ProviderUnavailable("2"), last)
    with pytest.raises(ProviderUnavailable) as info:
        call_with_retry(fn, RetryPolicy(max_attempts=3), sleep=RecordingSleep())
    assert info.value is last and fn.calls == 3


@pytest.mark.parametrize("rng_value", [0.0, 0.3, 1.0])
def test_backoff_is_capped_full_jitter(rng_value: float) -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_s=0.5, backoff_max_s=4.0)
    waits = [policy.wait_s(n, None, lambda: rng_value) for n in range(1, 10)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert waits == pytest.approx([rng_value * c for c in ceilings])


def test_retry_after_is_a_floor_and_the_cap_a_ceiling() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0, retry_after_cap_s=10.0)
    assert policy.wait_s(1, 3.0, lambda: 0.1) == 3.0  # server asked for more than the jitter
    assert policy.wait_s(3, 0.5, lambda: 1.0) == 4.0  # jitter larger than the ask
    assert policy.wait_s(1, 10.0, lambda: 0.0) == 10.0


def test_retry_after_above_cap_stops_retrying() -> None:
    fn, sleep = Flaky(RateLimited("slow down", retry_after=90)), RecordingSleep()
    with pytest.raises(RateLimited):
        call_with_retry(fn, RetryPolicy(max_attempts=5, retry_after_cap_s=30), sleep=sleep)
    assert fn.calls == 1 and sleep.calls == []


def test_requeue_is_a_signal_not_retried_nor_slept_on() -> None:
    signal = Requeue(delay_s=4.0, reason="no slot")
    fn, sleep = Flaky(signal), RecordingSleep()
    with pytest.raises(Requeue) as info:
        call_with_retry(fn, RetryPolicy(max_attempts=5), sleep=sleep)
    assert info.value is signal and fn.calls == 1 and sleep.calls == []


def test_policy_validation() -> None:
    with pytest.raises(InvalidInput):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidInput):
        RetryPolicy(backoff_base_s=-1)

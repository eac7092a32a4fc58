from __future__ import annotations

import random

import pytest

from pipeline.backoff import backoff_delay


@pytest.mark.parametrize("attempt", range(8))
def test_full_jitter_stays_under_the_exponential_ceiling_and_the_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    for _ in range(200):
        delay = backoff_delay(attempt, base_s=1.0, cap_s=20.0, rand=rng.random)
        assert 0.0 <= delay <= min(20.0, 2**attempt)


def test_retry_after_is_a_floor_and_the_cap_a_ceiling() -> None:
    rng = random.Random(1)
    assert all(backoff_delay(0, base_s=0.1, cap_s=60, retry_after_s=7, rand=rng.random) >= 7 for _ in range(50))
    assert backoff_delay(0, base_s=0.1, cap_s=5, retry_after_s=120, rand=rng.random) == 5


def test_jitter_spreads_simultaneous_failures() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(5, base_s=1, cap_s=60, rand=rng.random), 3) for _ in range(50)}
    assert len(delays) > 40

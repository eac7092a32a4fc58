"""Capped exponential backoff with full jitter, honouring an upstream's Retry-After.

Shared by both retry owners (the per-HTTP-call tenacity policy and the stage-level Celery
retry) so the two layers wait the same way.
"""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (attempt counts from 0).

    Full jitter (uniform in [0, min(cap, base * 2**attempt)]) spreads a burst of failing
    workers apart; a Retry-After from the server is a floor, the cap is a ceiling.
    """
    ceiling = min(cap_s, base_s * (2 ** max(attempt, 0)))
    jittered = (rng or random).uniform(0.0, ceiling)
    if retry_after_s is not None:
        jittered = max(jittered, retry_after_s)
    return min(jittered, cap_s)

"""Capped exponential backoff with full jitter, honouring an upstream's Retry-After.

Shared by both retry owners (the per-HTTP-call tenacity policy in ``pipeline/generation/llm/retry.py``
and the stage-level Celery retry in ``workers/middleware.py``) so the two layers wait the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    wait_cap_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (attempt counts from 0).

    Full jitter (uniform in [0, min(cap_s, base_s * 2**attempt)]) spreads a burst of failing
    workers apart; a Retry-After from the server is a floor; the result never exceeds
    ``wait_cap_s`` (default ``cap_s``).
    """
    ceiling = min(cap_s, base_s * (2 ** max(attempt, 0)))
    wait = rand() * ceiling
    if retry_after_s is not None:
        wait = max(wait, retry_after_s)
    return min(wait, cap_s if wait_cap_s is None else wait_cap_s)
